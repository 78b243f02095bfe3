package filters

import (
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/sluice-edge/sluice/abi"
)

// bodyGuest echoes what it sees of a body buffer (bufID) and pauses until
// the end of the stream, when it replaces the whole body.
func bodyGuest(cb abi.Callback, bufID int) string {
	return fmt.Sprintf(`
  (func (export %q) (param $id i32) (param $size i32) (param $eos i32) (result i32)
    (call $logkv $"size" (local.get $size))
    (call $logkv $"get" (call $proxy_get_buffer_bytes (i32.const %[2]d) (i32.const 0) (local.get $size) (i32.const 16) (i32.const 20)))
    (call $logkvs $"body")
    (if (local.get $eos) (then
      (call $logkv $"set" (call $proxy_set_buffer_bytes (i32.const %[2]d) (i32.const 0) (local.get $size) $"REDACTED"))))
    (i32.xor (local.get $eos) (i32.const 1)))`, cb, bufID)
}

// A body is buffered while the filter pauses: each call sees everything
// buffered so far, and the filter's edit is what the embedder takes.
func TestBodyIsBufferedWhilePaused(t *testing.T) {
	for _, dir := range []struct {
		name  string
		cb    abi.Callback
		buf   int
		chunk func(*HTTPContext, []byte, bool) (Outcome, error)
		take  func(*HTTPContext) []byte
	}{
		{"request", abi.OnRequestBody, 0, (*HTTPContext).RequestBody, (*HTTPContext).TakeRequestBody},
		{"response", abi.OnResponseBody, 1, (*HTTPContext).ResponseBody, (*HTTPContext).TakeResponseBody},
	} {
		t.Run(dir.name, func(t *testing.T) {
			p := mustLoad(t, guest(t, bodyGuest(dir.cb, dir.buf)))
			_, hc, ex := newHTTP(t, p)
			for _, step := range []struct {
				chunk string
				eos   bool
				want  Outcome
				logs  []string
			}{
				{"abc", false, Pause, []string{"size=3", "get=0", "body=abc"}},
				{"defg", false, Pause, []string{"size=7", "get=0", "body=abcdefg"}},
				{"hi", true, Continue, []string{"size=9", "get=0", "body=abcdefghi", "set=0"}},
			} {
				ex.reset()
				out, err := dir.chunk(hc, []byte(step.chunk), step.eos)
				if err != nil || out != step.want {
					t.Fatalf("chunk %q: %v, %v; want %v", step.chunk, out, err, step.want)
				}
				ex.wantLogs(t, step.logs...)
				if dir.name == "response" && step.want == Pause && hc.BufferedResponseBody() == 0 {
					t.Error("BufferedResponseBody() is 0 while paused")
				}
			}
			if got := string(dir.take(hc)); got != "REDACTED" {
				t.Errorf("took %q, want the filter's REDACTED", got)
			}
			if got := dir.take(hc); len(got) != 0 {
				t.Errorf("second take returned %q, want nothing", got)
			}
			// After a take, the next chunk starts a fresh buffer.
			ex.reset()
			if _, err := dir.chunk(hc, []byte("z"), false); err != nil {
				t.Fatal(err)
			}
			ex.wantLogs(t, "size=1", "get=0", "body=z")
		})
	}
}

// A filter that leaves the body alone passes it through as it came.
func TestUnreadBodyPassesThroughUnchanged(t *testing.T) {
	p := mustLoad(t, guest(t, ""))
	_, hc, _ := newHTTP(t, p)
	body := []byte("\x00\xffbinary\r\n")
	if out, err := hc.RequestBody(body, true); err != nil || out != Continue {
		t.Fatalf("RequestBody = %v, %v", out, err)
	}
	if got := hc.TakeRequestBody(); string(got) != string(body) {
		t.Errorf("took %q, want %q", got, body)
	}
}

// H21: a chunk that would grow a buffered body past max_body_size fails with
// ErrBodyTooLarge without calling the filter; the instance stays usable.
func TestBodyLargerThanMaxBodySize(t *testing.T) {
	for _, dir := range []struct {
		name  string
		cb    abi.Callback
		chunk func(*HTTPContext, []byte, bool) (Outcome, error)
		take  func(*HTTPContext) []byte
	}{
		{"request", abi.OnRequestBody, (*HTTPContext).RequestBody, (*HTTPContext).TakeRequestBody},
		{"response", abi.OnResponseBody, (*HTTPContext).ResponseBody, (*HTTPContext).TakeResponseBody},
	} {
		t.Run(dir.name, func(t *testing.T) {
			p := mustLoad(t, guest(t, fmt.Sprintf(`
  (func (export %q) (param i32) (param $size i32) (param i32) (result i32)
    (call $logkv $"size" (local.get $size))
    (i32.const 1))`, dir.cb)), func(c *Config) { c.Limits.MaxBodySize = 8 })
			inst, hc, ex := newHTTP(t, p)
			if _, err := dir.chunk(hc, []byte("12345"), false); err != nil {
				t.Fatal(err)
			}
			_, err := dir.chunk(hc, []byte("6789"), false)
			if !errors.Is(err, ErrBodyTooLarge) {
				t.Fatalf("9 bytes with max_body_size 8: %v, want ErrBodyTooLarge", err)
			}
			ex.wantLogs(t, "size=5") // no call for the refused chunk
			if inst.Err() != nil {
				t.Errorf("the refusal made the instance unusable: %v", inst.Err())
			}
			if got := string(dir.take(hc)); got != "12345" {
				t.Errorf("took %q, want the chunk before the refusal", got)
			}
			if _, err := dir.chunk(hc, []byte("12345678"), true); err != nil {
				t.Errorf("a body of exactly max_body_size: %v", err)
			}
		})
	}
}

// The filter cannot grow a body past max_body_size by editing it either.
func TestFilterCannotGrowBodyPastMaxBodySize(t *testing.T) {
	p := mustLoad(t, guest(t, `
  (func (export "proxy_on_request_body") (param i32 i32 i32) (result i32)
    (call $logkv $"set" (call $proxy_set_buffer_bytes (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 2000)))
    (i32.const 0))`))
	_, hc, ex := newHTTP(t, p)
	if _, err := hc.RequestBody([]byte("small"), true); err != nil {
		t.Fatal(err)
	}
	ex.wantLogs(t, "set=2")
	if got := string(hc.TakeRequestBody()); got != "small" {
		t.Errorf("body %q after a refused edit", got)
	}
}

// localResponseGuest sends a local response with the status given as the
// header count, logging the result; a second one when end_of_stream is set.
func localResponseGuest(t *testing.T) []byte {
	headers := abi.AppendHeaderMap(nil, [][2]string{{"x-from", "filter"}, {"content-type", "text/plain"}})
	bad := abi.AppendHeaderMap(nil, [][2]string{{"x-bad", "header"}})
	return guest(t, fmt.Sprintf(`
  (data (i32.const 4096) "%s")
  (data (i32.const 4400) "%s")
  (data (i32.const 4600) "access denied")
  (func $send (param $status i32) (param $headers i32) (param $size i32) (result i32)
    (call $proxy_send_local_response (local.get $status) $"denied by test"
      (i32.const 4600) (i32.const 13) (local.get $headers) (local.get $size) (i32.const -1)))
  (func (export "proxy_on_context_create") (param i32 i32)
    (call $logkv $"create" (call $send (i32.const 403) (i32.const 4096) (i32.const %d))))
  (func (export "proxy_on_request_headers") (param $id i32) (param $status i32) (param $eos i32) (result i32)
    (call $logkv $"first" (call $send (local.get $status) (i32.const 4096) (i32.const %[3]d)))
    (if (local.get $eos) (then
      (call $logkv $"second" (call $send (i32.const 503) (i32.const 4096) (i32.const %[3]d)))))
    (i32.const 1))
  (func (export "proxy_on_request_body") (param i32 i32 i32) (result i32)
    (call $logkv $"bad_header" (call $send (i32.const 403) (i32.const 4400) (i32.const %d)))
    (call $logkv $"big_body" (call $proxy_send_local_response (i32.const 403) $"big"
      (i32.const 0) (i32.const 2000) (i32.const 4096) (i32.const %[3]d) (i32.const -1)))
    (call $logkv $"bad_map" (call $send (i32.const 403) (i32.const 4096) (i32.const 5)))
    (i32.const 0))
  (func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32)
    ;; Scribble over the body the first response came from.
    (memory.fill (i32.const 4600) (i32.const 88) (i32.const 13))
    (call $logkv $"response" (call $send (i32.const 502) (i32.const 4096) (i32.const %[3]d)))
    (i32.const 0))
  (func (export "proxy_on_log") (param i32)
    (call $logkv $"log" (call $send (i32.const 403) (i32.const 4096) (i32.const %[3]d))))`,
		watBytes(headers), watBytes(bad), len(headers), len(bad)))
}

// H18: one local response per request, from a request or response
// callback, before the response started, with a final status, a body within
// max_body_size and headers the embedder accepts; anything else is
// BAD_ARGUMENT and changes nothing.
func TestLocalResponse(t *testing.T) {
	module := localResponseGuest(t)
	p := mustLoad(t, module, freshStart)

	t.Run("from request headers, then a second one", func(t *testing.T) {
		_, hc, ex := newHTTP(t, p)
		out, err := hc.RequestHeaders(403, true)
		if err != nil || out != Respond {
			t.Fatalf("RequestHeaders = %v, %v; want respond", out, err)
		}
		// The root and the HTTP context could not respond from
		// proxy_on_context_create.
		ex.wantLogs(t, "create=2", "create=2", "first=0", "second=2")
		lr := hc.LocalResponse()
		if lr == nil || lr.StatusCode != 403 || string(lr.Body) != "access denied" ||
			lr.Details != "denied by test" || lr.GRPCStatus != -1 ||
			!slices.Equal(lr.Headers, [][2]string{{"x-from", "filter"}, {"content-type", "text/plain"}}) {
			t.Fatalf("LocalResponse() = %+v", lr)
		}
		// The response is reported once; later callbacks go by their action.
		if out, err := hc.RequestHeaders(403, false); err != nil || out != Pause {
			t.Errorf("after the local response: %v, %v; want pause", out, err)
		}
		// The body was copied out of guest memory.
		if _, err := hc.ResponseHeaders(0, true); err != nil {
			t.Fatal(err)
		}
		if string(hc.LocalResponse().Body) != "access denied" {
			t.Errorf("local response body changed with guest memory: %q", hc.LocalResponse().Body)
		}
	})

	for _, status := range []int{0, 99, 199, 600, 1000, 0xffffffff} {
		t.Run(fmt.Sprint("invalid status ", status), func(t *testing.T) {
			_, hc, ex := newHTTP(t, p)
			out, err := hc.RequestHeaders(status, false)
			if err != nil || out != Pause {
				t.Fatalf("RequestHeaders = %v, %v; want pause", out, err)
			}
			ex.wantLogs(t, "create=2", "create=2", "first=2")
			if hc.LocalResponse() != nil {
				t.Errorf("a refused local response was recorded: %+v", hc.LocalResponse())
			}
		})
	}

	for _, status := range []int{200, 204, 599} {
		t.Run(fmt.Sprint("valid status ", status), func(t *testing.T) {
			_, hc, _ := newHTTP(t, p)
			if out, err := hc.RequestHeaders(status, false); err != nil || out != Respond {
				t.Fatalf("RequestHeaders = %v, %v; want respond", out, err)
			}
			if got := hc.LocalResponse().StatusCode; got != uint32(status) {
				t.Errorf("status %d, want %d", got, status)
			}
		})
	}

	t.Run("refused headers, oversize body, malformed map", func(t *testing.T) {
		_, hc, ex := newHTTP(t, p)
		if out, err := hc.RequestBody(nil, true); err != nil || out != Continue {
			t.Fatalf("RequestBody = %v, %v; want continue", out, err)
		}
		ex.wantLogs(t, "create=2", "create=2", "bad_header=2", "big_body=2", "bad_map=2")
		if hc.LocalResponse() != nil {
			t.Errorf("a refused local response was recorded: %+v", hc.LocalResponse())
		}
	})

	t.Run("from response headers, before and after the response started", func(t *testing.T) {
		_, hc, ex := newHTTP(t, p)
		if out, err := hc.ResponseHeaders(0, false); err != nil || out != Respond {
			t.Fatalf("before: %v, %v; want respond", out, err)
		}
		_, hc, ex = newHTTP(t, p)
		hc.ResponseStarted()
		ex.reset()
		if out, err := hc.ResponseHeaders(0, false); err != nil || out != Continue {
			t.Fatalf("after: %v, %v; want continue", out, err)
		}
		// proxy_on_context_create runs at the start of the first call into
		// the guest, and cannot respond either.
		ex.wantLogs(t, "create=2", "response=2")
	})

	t.Run("from proxy_on_log", func(t *testing.T) {
		_, hc, ex := newHTTP(t, p)
		ex.reset()
		if err := hc.Finish(); err != nil {
			t.Fatal(err)
		}
		ex.wantLogs(t, "create=2", "log=2")
		if hc.LocalResponse() != nil {
			t.Error("a local response from proxy_on_log was recorded")
		}
	})
}

// proxy_close_stream resets the request from any stream callback, whatever
// the callback returns; it is refused for other streams and once the
// stream is done.
func TestCloseStream(t *testing.T) {
	p := mustLoad(t, guest(t, `
  (func (export "proxy_on_request_headers") (param i32) (param $stream i32) (param i32) (result i32)
    (call $logkv $"close" (call $proxy_close_stream (local.get $stream)))
    (i32.const 1))
  (func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32)
    (call $logkv $"close" (call $proxy_close_stream (i32.const 1)))
    (i32.const 0))
  (func (export "proxy_on_log") (param i32)
    (call $logkv $"log_close" (call $proxy_close_stream (i32.const 0))))`))
	for _, tc := range []struct {
		stream int
		status string
		want   Outcome
	}{
		{0, "close=0", Reset},
		{2, "close=2", Pause}, // a TCP stream: not in an HTTP filter
		{9, "close=2", Pause}, // no such stream type
	} {
		t.Run(fmt.Sprint("stream ", tc.stream), func(t *testing.T) {
			_, hc, ex := newHTTP(t, p)
			if out, err := hc.RequestHeaders(tc.stream, false); err != nil || out != tc.want {
				t.Fatalf("RequestHeaders = %v, %v; want %v", out, err, tc.want)
			}
			ex.wantLogs(t, tc.status)
		})
	}
	t.Run("response stream", func(t *testing.T) {
		_, hc, ex := newHTTP(t, p)
		if out, err := hc.ResponseHeaders(0, false); err != nil || out != Reset {
			t.Fatalf("ResponseHeaders = %v, %v; want reset", out, err)
		}
		if err := hc.Finish(); err != nil {
			t.Fatal(err)
		}
		ex.wantLogs(t, "close=0", "log_close=2")
	})
}

// proxy_continue_stream during a callback turns its pause into a continue,
// for the stream it names, in that callback only.
func TestContinueStreamDuringACallback(t *testing.T) {
	p := mustLoad(t, guest(t, `
  (func (export "proxy_on_request_headers") (param i32) (param $stream i32) (param i32) (result i32)
    (call $logkv $"continue" (call $proxy_continue_stream (local.get $stream)))
    (i32.const 1))
  (func (export "proxy_on_request_body") (param i32 i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_response_headers") (param i32) (param $stream i32) (param i32) (result i32)
    (call $logkv $"continue" (call $proxy_continue_stream (local.get $stream)))
    (i32.const 1))`))
	for _, tc := range []struct {
		name     string
		response bool
		stream   int
		status   string
		want     Outcome
	}{
		{"request stream in request headers", false, 0, "continue=0", Continue},
		{"response stream in request headers", false, 1, "continue=0", Pause},
		{"response stream in response headers", true, 1, "continue=0", Continue},
		{"request stream in response headers", true, 0, "continue=0", Pause},
		{"downstream TCP stream", false, 2, "continue=12", Pause},
		{"no such stream", false, 9, "continue=2", Pause},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, hc, ex := newHTTP(t, p)
			call := hc.RequestHeaders
			if tc.response {
				call = hc.ResponseHeaders
			}
			if out, err := call(tc.stream, false); err != nil || out != tc.want {
				t.Fatalf("got %v, %v; want %v", out, err, tc.want)
			}
			ex.wantLogs(t, tc.status)
			// The next callback's pause stands.
			if out, err := hc.RequestBody(nil, false); err != nil || out != Pause {
				t.Errorf("the next callback: %v, %v; want pause", out, err)
			}
		})
	}
}

// proxy_continue_stream in proxy_on_context_create has nothing to resume:
// the pause of the callback after it stands, although the two may run in
// one call into the guest.
func TestContinueStreamWhileCreatingDoesNothing(t *testing.T) {
	p := mustLoad(t, guest(t, `
  (func (export "proxy_on_context_create") (param i32 i32)
    (call $logkv $"continue" (call $proxy_continue_stream (i32.const 0))))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) (i32.const 1))`))
	if !p.createsFirst() {
		t.Fatal("the plugin does not run proxy_on_context_create with the next callback: the case is not tested")
	}
	_, hc, ex := newHTTP(t, p)
	if out, err := hc.RequestHeaders(0, false); err != nil || out != Pause {
		t.Errorf("RequestHeaders = %v, %v; want pause", out, err)
	}
	ex.wantLogs(t, "continue=0")
}

// mapsGuest tries, in every callback, to read and write each header map,
// logging "<callback>.<map>=<status>".
func mapsGuest(t *testing.T) []byte {
	probe := func(prefix string) string {
		return fmt.Sprintf(`
    (call $logkv $"%[1]s.req" (call $proxy_add_header_map_value (i32.const 0) $"x-test" $"%[1]s"))
    (call $logkv $"%[1]s.reqtr" (call $proxy_add_header_map_value (i32.const 1) $"x-test" $"%[1]s"))
    (call $logkv $"%[1]s.resp" (call $proxy_add_header_map_value (i32.const 2) $"x-test" $"%[1]s"))
    (call $logkv $"%[1]s.resptr" (call $proxy_add_header_map_value (i32.const 3) $"x-test" $"%[1]s"))
    (call $logkv $"%[1]s.get_req" (call $proxy_get_header_map_pairs (i32.const 0) (i32.const 16) (i32.const 20)))
    (call $logkv $"%[1]s.get_resp" (call $proxy_get_header_map_pairs (i32.const 2) (i32.const 16) (i32.const 20)))
    (call $logkv $"%[1]s.get_grpc" (call $proxy_get_header_map_pairs (i32.const 4) (i32.const 16) (i32.const 20)))
    (call $logkv $"%[1]s.bad_map" (call $proxy_get_header_map_pairs (i32.const 8) (i32.const 16) (i32.const 20)))`, prefix)
	}
	var body string
	for _, cb := range []struct {
		name abi.Callback
		sig  string
		tag  string
	}{
		{abi.OnRequestHeaders, "(param i32 i32 i32) (result i32)", "rh"},
		{abi.OnRequestBody, "(param i32 i32 i32) (result i32)", "rb"},
		{abi.OnRequestTrailers, "(param i32 i32) (result i32)", "rt"},
		{abi.OnResponseHeaders, "(param i32 i32 i32) (result i32)", "sh"},
		{abi.OnResponseBody, "(param i32 i32 i32) (result i32)", "sb"},
		{abi.OnResponseTrailers, "(param i32 i32) (result i32)", "st"},
		{abi.OnLog, "(param i32)", "log"},
	} {
		ret := "(i32.const 0)"
		if cb.name == abi.OnLog {
			ret = ""
		}
		body += fmt.Sprintf("\n  (func (export %q) %s %s %s)", cb.name, cb.sig, probe(cb.tag), ret)
	}
	return guest(t, body)
}

// Which header maps exist, and which may change, in each phase: a map can
// be read from its phase on, and written only while the change can reach
// the wire.
func TestHeaderMapsByPhase(t *testing.T) {
	p := mustLoad(t, mapsGuest(t))
	_, hc, ex := newHTTP(t, p)
	check := func(step string, run func() error, tag string, want map[string]int) {
		t.Helper()
		ex.reset()
		if err := run(); err != nil {
			t.Fatalf("%s: %v", step, err)
		}
		var logs []string
		for _, m := range []string{"req", "reqtr", "resp", "resptr", "get_req", "get_resp", "get_grpc", "bad_map"} {
			logs = append(logs, fmt.Sprintf("%s.%s=%d", tag, m, want[m]))
		}
		t.Run(step, func(t *testing.T) { ex.wantLogs(t, logs...) })
	}
	outcome := func(f func() (Outcome, error)) func() error {
		return func() error { _, err := f(); return err }
	}
	const ok, bad = 0, 2
	check("request headers", outcome(func() (Outcome, error) { return hc.RequestHeaders(3, false) }), "rh",
		map[string]int{"req": ok, "reqtr": bad, "resp": bad, "resptr": bad, "get_resp": bad, "get_grpc": bad, "bad_map": bad})
	check("request body", outcome(func() (Outcome, error) { return hc.RequestBody([]byte("b"), false) }), "rb",
		map[string]int{"req": ok, "reqtr": bad, "resp": bad, "resptr": bad, "get_resp": bad, "get_grpc": bad, "bad_map": bad})
	check("request trailers", outcome(func() (Outcome, error) { return hc.RequestTrailers(0) }), "rt",
		map[string]int{"req": ok, "reqtr": ok, "resp": bad, "resptr": bad, "get_resp": bad, "get_grpc": bad, "bad_map": bad})
	hc.RequestForwarded()
	check("request body after forwarding", outcome(func() (Outcome, error) { return hc.RequestBody([]byte("b"), true) }), "rb",
		map[string]int{"req": bad, "reqtr": bad, "resp": bad, "resptr": bad, "get_resp": bad, "get_grpc": bad, "bad_map": bad})
	check("response headers", outcome(func() (Outcome, error) { return hc.ResponseHeaders(1, false) }), "sh",
		map[string]int{"req": bad, "reqtr": bad, "resp": ok, "resptr": bad, "get_grpc": bad, "bad_map": bad})
	check("response body", outcome(func() (Outcome, error) { return hc.ResponseBody([]byte("b"), false) }), "sb",
		map[string]int{"req": bad, "reqtr": bad, "resp": ok, "resptr": bad, "get_grpc": bad, "bad_map": bad})
	hc.ResponseStarted()
	check("response body after the response started", outcome(func() (Outcome, error) { return hc.ResponseBody([]byte("b"), true) }), "sb",
		map[string]int{"req": bad, "reqtr": bad, "resp": bad, "resptr": bad, "get_grpc": bad, "bad_map": bad})
	check("response trailers", outcome(func() (Outcome, error) { return hc.ResponseTrailers(0) }), "st",
		map[string]int{"req": bad, "reqtr": bad, "resp": bad, "resptr": ok, "get_grpc": bad, "bad_map": bad})
	check("proxy_on_log", func() error { return hc.Finish() }, "log",
		map[string]int{"req": bad, "reqtr": bad, "resp": bad, "resptr": bad, "get_grpc": bad, "bad_map": bad})

	// Exactly the writes that were allowed reached the maps.
	count := func(t abi.MapType) (values []string) {
		for _, p := range ex.maps[t].pairs {
			if p[0] == "x-test" {
				values = append(values, p[1])
			}
		}
		return values
	}
	for m, want := range map[abi.MapType][]string{
		abi.MapRequestHeaders:   {"rh", "rb", "rt"},
		abi.MapRequestTrailers:  {"rt"},
		abi.MapResponseHeaders:  {"sh", "sb"},
		abi.MapResponseTrailers: {"st"},
	} {
		if got := count(m); !slices.Equal(got, want) {
			t.Errorf("map %d got x-test values %q, want %q", m, got, want)
		}
	}
}

// A map the embedder does not have (no trailers came) is BAD_ARGUMENT even
// in its phase.
func TestHeaderMapMissingFromTheExchange(t *testing.T) {
	p := mustLoad(t, mapsGuest(t))
	_, hc, ex := newHTTP(t, p)
	delete(ex.maps, abi.MapRequestTrailers)
	ex.reset()
	if _, err := hc.RequestTrailers(0); err != nil {
		t.Fatal(err)
	}
	if logs := ex.messages(); !slices.Contains(logs, "rt.reqtr=2") || !slices.Contains(logs, "rt.req=0") {
		t.Errorf("logs %q: want rt.reqtr=2 and rt.req=0", logs)
	}
}

// A body buffer exists only in its own callback.
func TestBodyBuffersOnlyInTheirCallback(t *testing.T) {
	probe := func(tag string) string {
		return fmt.Sprintf(`
    (call $logkv $"%[1]s.req" (call $proxy_get_buffer_status (i32.const 0) (i32.const 16) (i32.const 20)))
    (call $logkv $"%[1]s.resp" (call $proxy_get_buffer_status (i32.const 1) (i32.const 16) (i32.const 20)))
    (call $logkv $"%[1]s.plugin_config" (call $proxy_get_buffer_status (i32.const 7) (i32.const 16) (i32.const 20)))
    (call $logkv $"%[1]s.bad_type" (call $proxy_get_buffer_status (i32.const 99) (i32.const 16) (i32.const 20)))
    (call $logkv $"%[1]s.write_resp" (call $proxy_set_buffer_bytes (i32.const 1) (i32.const 0) (i32.const 0) $"w"))`, tag)
	}
	p := mustLoad(t, guest(t, `
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) `+probe("rh")+` (i32.const 0))
  (func (export "proxy_on_request_body") (param i32 i32 i32) (result i32) `+probe("rb")+` (i32.const 0))
  (func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32) `+probe("sh")+` (i32.const 0))
  (func (export "proxy_on_response_body") (param i32 i32 i32) (result i32) `+probe("sb")+` (i32.const 0))
  (func (export "proxy_on_log") (param i32) `+probe("log")+`)`))
	_, hc, ex := newHTTP(t, p)
	_, _ = hc.RequestHeaders(0, false)
	_, _ = hc.RequestBody([]byte("req"), true)
	_, _ = hc.ResponseHeaders(0, false)
	_, _ = hc.ResponseBody([]byte("resp"), true)
	if err := hc.Finish(); err != nil {
		t.Fatal(err)
	}
	ex.wantLogs(t,
		"rh.req=1", "rh.resp=1", "rh.plugin_config=1", "rh.bad_type=2", "rh.write_resp=1",
		"rb.req=0", "rb.resp=1", "rb.plugin_config=1", "rb.bad_type=2", "rb.write_resp=1",
		"sh.req=1", "sh.resp=1", "sh.plugin_config=1", "sh.bad_type=2", "sh.write_resp=1",
		"sb.req=1", "sb.resp=0", "sb.plugin_config=1", "sb.bad_type=2", "sb.write_resp=0",
		"log.req=1", "log.resp=1", "log.plugin_config=1", "log.bad_type=2", "log.write_resp=1")
	if got := string(hc.TakeResponseBody()); got != "wresp" {
		t.Errorf("response body %q, want the filter's prepended w", got)
	}
}

// Finish runs proxy_on_done, proxy_on_log and proxy_on_delete, in that
// order; a filter exporting none of them finishes too.
func TestFinishOrder(t *testing.T) {
	p := mustLoad(t, guest(t, `
  (func (export "proxy_on_delete") (param $id i32) (call $logkv $"delete" (local.get $id)))
  (func (export "proxy_on_log") (param $id i32) (call $logkv $"log" (local.get $id)))
  (func (export "proxy_on_done") (param $id i32) (result i32) (call $logkv $"done" (local.get $id)) (i32.const 1))`))
	_, hc, ex := newHTTP(t, p)
	if err := hc.Finish(); err != nil {
		t.Fatal(err)
	}
	ex.wantLogs(t, "done=2", "log=2", "delete=2")

	_, hc, _ = newHTTP(t, mustLoad(t, guest(t, "")))
	if err := hc.Finish(); err != nil {
		t.Errorf("Finish without the callbacks: %v", err)
	}
}

// H30: proxy_done answers OK once after proxy_on_done returned false (the
// filter asked to finish later), NOT_FOUND otherwise; Finish does not wait
// for it.
func TestProxyDone(t *testing.T) {
	p := mustLoad(t, guest(t, `
  (global $keep (mut i32) (i32.const 0))
  (func (export "proxy_on_request_headers") (param i32) (param $keep i32) (param i32) (result i32)
    (global.set $keep (local.get $keep))
    (call $logkv $"headers" (call $proxy_done))
    (i32.const 0))
  (func (export "proxy_on_done") (param i32) (result i32)
    (call $logkv $"in_done" (call $proxy_done))
    (i32.eqz (global.get $keep)))
  (func (export "proxy_on_log") (param i32)
    (call $logkv $"log1" (call $proxy_done))
    (call $logkv $"log2" (call $proxy_done)))`))
	for _, tc := range []struct {
		keep int
		logs []string
	}{
		{1, []string{"headers=1", "in_done=1", "log1=0", "log2=1"}},
		{0, []string{"headers=1", "in_done=1", "log1=1", "log2=1"}},
	} {
		t.Run(fmt.Sprint("on_done returns ", 1-tc.keep), func(t *testing.T) {
			_, hc, ex := newHTTP(t, p)
			if _, err := hc.RequestHeaders(tc.keep, true); err != nil {
				t.Fatal(err)
			}
			if err := hc.Finish(); err != nil {
				t.Fatal(err)
			}
			ex.wantLogs(t, tc.logs...)
		})
	}
}

// The plugin_* properties are the plugin's, in every context; the rest are
// the request's, from the Exchange, and the root context has no request.
func TestProperties(t *testing.T) {
	get := func(tag, path string) string {
		return fmt.Sprintf(`
    (i64.store (i32.const 16) (i64.const 0))
    (call $logkv $"%[1]s.status" (call $proxy_get_property %[2]s (i32.const 16) (i32.const 20)))
    (call $logkvs $"%[1]s")`, tag, path)
	}
	p := mustLoad(t, guest(t, `
  (data (i32.const 4096) "request\00path")
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32)`+
		get("root.plugin_root_id", `$"plugin_root_id"`)+
		get("root.request_path", `$"request.path"`)+`
    (call $logkv $"root.set" (call $proxy_set_property $"a.b" $"v"))
    (i32.const 1))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)`+
		get("plugin_name", `$"plugin_name"`)+
		get("plugin_root_id", `$"plugin_root_id"`)+
		get("plugin_vm_id", `$"plugin_vm_id"`)+
		get("request.path", `$"request.path"`)+
		get("nul_path", `(i32.const 4096) (i32.const 12)`)+
		get("unknown", `$"no.such.property"`)+
		get("plugin_name_sub", `$"plugin_name.sub"`)+`
    (call $logkv $"set" (call $proxy_set_property $"filter.tag" $"blue"))
    (i32.const 0))`), freshStart, func(c *Config) { c.Name, c.RootID, c.VMID = "tenant-a", "root-x", "vm-y" })
	_, hc, ex := newHTTP(t, p)
	if _, err := hc.RequestHeaders(0, true); err != nil {
		t.Fatal(err)
	}
	ex.wantLogs(t,
		"root.plugin_root_id.status=0", "root.plugin_root_id=root-x",
		"root.request_path.status=1", "root.request_path=",
		"root.set=1",
		"plugin_name.status=0", "plugin_name=tenant-a",
		"plugin_root_id.status=0", "plugin_root_id=root-x",
		"plugin_vm_id.status=0", "plugin_vm_id=vm-y",
		"request.path.status=0", "request.path=/a/b?c",
		"nul_path.status=0", "nul_path=/a/b?c",
		"unknown.status=1", "unknown=",
		"plugin_name_sub.status=1", "plugin_name_sub=",
		"set=0")
	if got := ex.setProps["filter.tag"]; got != "blue" {
		t.Errorf("the Exchange got property filter.tag=%q, want blue", got)
	}
}

// proxy_set_effective_context accepts the root and the current context.
func TestSetEffectiveContext(t *testing.T) {
	p := mustLoad(t, guest(t, `
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32)
    (call $logkv $"root.root" (call $proxy_set_effective_context (i32.const 1)))
    (call $logkv $"root.other" (call $proxy_set_effective_context (i32.const 2)))
    (i32.const 1))
  (func (export "proxy_on_request_headers") (param $id i32) (param i32 i32) (result i32)
    (call $logkv $"self" (call $proxy_set_effective_context (local.get $id)))
    (call $logkv $"root" (call $proxy_set_effective_context (i32.const 1)))
    (call $logkv $"other" (call $proxy_set_effective_context (i32.add (local.get $id) (i32.const 1))))
    (i32.const 0))`), freshStart)
	_, hc, ex := newHTTP(t, p)
	if _, err := hc.RequestHeaders(0, true); err != nil {
		t.Fatal(err)
	}
	ex.wantLogs(t, "root.root=0", "root.other=2", "self=0", "root=0", "other=2")
}

// What the guest writes to stdout and stderr reaches the log sink; while
// starting, what it writes to stderr explains a rejection.
func TestGuestOutput(t *testing.T) {
	const data = `
  (data (i32.const 4096) "\68\10\00\00\0b\00\00\00") ;; one iovec: 11 bytes at 4200
  (data (i32.const 4200) "fatal: oops")
  (func $write (param $fd i32) (result i32)
    (call $fd_write (local.get $fd) (i32.const 4096) (i32.const 1) (i32.const 4300)))`
	p := mustLoad(t, guest(t, data+`
  (func (export "proxy_on_configure") (param i32 i32) (result i32)
    (drop (call $write (i32.const 2)))
    (i32.const 1))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (call $logkv $"stdout" (call $write (i32.const 1)))
    (call $logkv $"written" (i32.load (i32.const 4300)))
    (call $logkv $"stderr" (call $write (i32.const 2)))
    (call $logkv $"fd3" (call $write (i32.const 3)))
    (i32.const 0))`), freshStart)
	_, hc, ex := newHTTP(t, p)
	if _, err := hc.RequestHeaders(0, true); err != nil {
		t.Fatal(err)
	}
	ex.wantLogs(t, "stdout=0", "written=11", "stderr=0", "fd3=8")
	if want := []string{"2:fatal: oops", "1:fatal: oops", "2:fatal: oops"}; !slices.Equal(ex.output, want) {
		t.Errorf("output %q, want %q", ex.output, want)
	}

	err := loadErr(t, guest(t, data+`
  (func (export "proxy_on_configure") (param i32 i32) (result i32)
    (drop (call $write (i32.const 2)))
    (i32.const 0))`), freshStart)
	wantGuestError(t, err, ErrRejected)
	wantErrorContaining(t, err, "fatal: oops")
}

// The root context, which starts the instance, has no request: no header
// maps, no stream to continue or close, no local response, nothing pending,
// no outbound call; its configuration buffers are read-only.
func TestRootContextHasNoRequest(t *testing.T) {
	sink := newExchange()
	mustLoad(t, guest(t, `
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32)
    (call $logkv $"map" (call $proxy_get_header_map_pairs (i32.const 0) (i32.const 16) (i32.const 20)))
    (call $logkv $"add" (call $proxy_add_header_map_value (i32.const 0) $"k" $"v"))
    (call $logkv $"continue" (call $proxy_continue_stream (i32.const 0)))
    (call $logkv $"close" (call $proxy_close_stream (i32.const 0)))
    (call $logkv $"local" (call $proxy_send_local_response (i32.const 403) (i32.const 0) (i32.const 0)
      (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const -1)))
    (call $logkv $"done" (call $proxy_done))
    (call $logkv $"status" (call $proxy_get_status (i32.const 24) (i32.const 16) (i32.const 20)))
    (call $logkv $"write_config" (call $proxy_set_buffer_bytes (i32.const 6) (i32.const 0) (i32.const 0) $"x"))
    (call $logkv $"request_body" (call $proxy_get_buffer_status (i32.const 0) (i32.const 16) (i32.const 20)))
    (call $logkv $"level" (call $proxy_get_log_level (i32.const 24)))
    (call $logkv $"level_value" (i32.load (i32.const 24)))
    (i32.const 1))`), func(c *Config) { c.LoadLog = sink; sink.level = abi.LogWarn })
	sink.wantLogs(t, "map=2", "add=2", "continue=2", "close=2", "local=2", "done=1", "status=1",
		"write_config=1", "request_body=1", "level=0", "level_value=3")
}

// proxy_get_log_level reports the sink's level; while Load starts the
// filter, at least errors are always wanted (they explain a rejection).
func TestLogLevel(t *testing.T) {
	module := guest(t, `
  (func (export "proxy_on_configure") (param i32 i32) (result i32)
    (drop (call $proxy_get_log_level (i32.const 24)))
    (global.set $level (i32.const 4))
    (call $logkv $"configure_level" (i32.load (i32.const 24)))
    (global.set $level (i32.const 2))
    (i32.const 1))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (call $logkv $"status" (call $proxy_get_log_level (i32.const 24)))
    (call $logkv $"level" (i32.load (i32.const 24)))
    (call $logkv $"out_of_bounds" (call $proxy_get_log_level (i32.const 70000)))
    (i32.const 0))`)
	for _, tc := range []struct {
		name  string
		sink  *fakeExchange
		level abi.LogLevel
	}{
		{"sink at debug", &fakeExchange{level: abi.LogDebug}, abi.LogDebug},
		{"sink at critical", &fakeExchange{level: abi.LogCritical}, abi.LogError},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mustLoad(t, module, func(c *Config) { c.LoadLog = tc.sink })
			tc.sink.wantLogs(t, fmt.Sprintf("configure_level=%d", tc.level))
		})
	}
	t.Run("without a load log", func(t *testing.T) {
		mustLoad(t, module) // logs at error level; nothing to see but it must not fail
	})
	t.Run("request", func(t *testing.T) {
		p := mustLoad(t, module)
		_, hc, ex := newHTTP(t, p)
		ex.level = abi.LogWarn
		ex.reset()
		if _, err := hc.RequestHeaders(0, true); err != nil {
			t.Fatal(err)
		}
		ex.wantLogs(t, "status=0", "level=3", "out_of_bounds=6")
	})
}

// There are no outbound calls (yet): proxy_get_status has nothing to say.
func TestProxyGetStatusInARequest(t *testing.T) {
	p := mustLoad(t, guest(t, `
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (call $logkv $"status" (call $proxy_get_status (i32.const 24) (i32.const 16) (i32.const 20)))
    (i32.const 0))`))
	_, hc, ex := newHTTP(t, p)
	if _, err := hc.RequestHeaders(0, true); err != nil {
		t.Fatal(err)
	}
	ex.wantLogs(t, "status=1")
}

func TestOutcomeString(t *testing.T) {
	for o, want := range map[Outcome]string{Continue: "continue", Pause: "pause", Respond: "respond", Reset: "reset"} {
		if o.String() != want {
			t.Errorf("%d.String() = %q, want %q", int(o), o.String(), want)
		}
	}
}
