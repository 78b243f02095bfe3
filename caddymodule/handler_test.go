package caddymodule

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/textproto"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
	"golang.org/x/time/rate"

	"github.com/sluice-edge/sluice/filters"
	"github.com/sluice-edge/sluice/tests/guestbuild"
)

// The map and buffer ids of the ABI, for the WAT below.
const (
	reqHeaders  = "(i32.const 0)"
	respHeaders = "(i32.const 2)"
	reqBody     = "(i32.const 0)"
	respBody    = "(i32.const 1)"
)

// onDoneLogs makes the guest log "done" from proxy_on_done, so a test can
// see that the instance was finished.
func (g *guest) onDoneLogs() *guest {
	return g.fn(`(func (export "proxy_on_done") (param i32) (result i32)
    (drop (call $log (i32.const 2) ` + g.str("done") + `))
    (i32.const 1))`)
}

// continueGuest adds "x-wat: hello" to responses and does nothing else.
func continueGuest() *guest {
	g := newGuest()
	return g.fn(`(func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32)
    (drop (call $add_header ` + respHeaders + " " + g.str("x-wat") + " " + g.str("hello") + `))
    (i32.const 0))`).onDoneLogs()
}

func TestGoSDKFilterChangesHeadersInBothDirections(t *testing.T) {
	h := provision(t, guestbuild.Go(t, "headers"), "")
	for i := range 2 { // a second request sees a fresh instance: x-count stays 1
		next := &nextHandler{serve: func(w http.ResponseWriter, r *http.Request) error {
			w.Header().Set("X-Upstream-Secret", "s3cret")
			w.Header().Set("X-Count", "upstream")
			_, err := w.Write([]byte("hello"))
			return err
		}}
		r := newRequest(http.MethodGet, "/", "")
		r.Header.Set("X-Replaced", "old")
		r.Header.Set("X-Removed", "gone")
		rec, err, p := h.serve(r, next)
		if err != nil || p != nil {
			t.Fatalf("request %d: err %v, panic %v", i, err, p)
		}
		wantValues(t, next.header, "X-Added", "req")
		wantValues(t, next.header, "X-Replaced", "new")
		wantValues(t, next.header, "X-Removed")
		wantValues(t, rec.Header(), "X-Added", "resp")
		wantValues(t, rec.Header(), "X-Count", "1")
		wantValues(t, rec.Header(), "X-Upstream-Secret")
		if rec.Code != 200 || rec.Body.String() != "hello" {
			t.Errorf("request %d: %d %q", i, rec.Code, rec.Body)
		}
	}
}

// localResponseGuest answers 403 from the request headers.
func localResponseGuest(status int) *guest {
	g := newGuest()
	return g.fn(`(func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (drop (call $send_local (i32.const ` + strconv.Itoa(status) + `) ` + g.str("denied by test") + " " + g.str("denied") + " " +
		g.headers([2]string{"x-denied", "yes"}, [2]string{"content-type", "text/plain"}) + ` (i32.const -1)))
    (i32.const 1))`)
}

func TestLocalResponseFromRequestHeadersSkipsNext(t *testing.T) {
	h := provisionGuest(t, localResponseGuest(403), "")
	for _, method := range []string{http.MethodGet, http.MethodHead} {
		t.Run(method, func(t *testing.T) {
			next := &nextHandler{}
			rec, err, p := h.serve(newRequest(method, "/", ""), next)
			if err != nil || p != nil {
				t.Fatalf("err %v, panic %v", err, p)
			}
			if n := next.calls.Load(); n != 0 {
				t.Errorf("next ran %d times", n)
			}
			if rec.Code != http.StatusForbidden {
				t.Errorf("status %d", rec.Code)
			}
			wantValues(t, rec.Header(), "X-Denied", "yes")
			wantValues(t, rec.Header(), "Content-Type", "text/plain")
			wantValues(t, rec.Header(), "Content-Length", "6")
			wantBody := "denied"
			if method == http.MethodHead {
				wantBody = ""
			}
			if rec.Body.String() != wantBody {
				t.Errorf("body %q, want %q", rec.Body, wantBody)
			}
		})
	}
}

// chunkReader hands out its chunks one Read at a time, like a client
// sending the body in pieces.
type chunkReader struct{ chunks []string }

func (c *chunkReader) Read(p []byte) (int, error) {
	if len(c.chunks) == 0 {
		return 0, io.EOF
	}
	n := copy(p, c.chunks[0])
	c.chunks[0] = c.chunks[0][n:]
	if c.chunks[0] == "" {
		c.chunks = c.chunks[1:]
	}
	return n, nil
}

func (c *chunkReader) Close() error { return nil }

// bodyRequest is a POST whose body arrives in chunks; chunked requests
// have no Content-Length, as Go's server hands them over.
func bodyRequest(chunked bool, chunks ...string) *http.Request {
	r := newRequest(http.MethodPost, "/upload", "")
	r.Body = &chunkReader{chunks: chunks}
	total := len(strings.Join(chunks, ""))
	if chunked {
		r.ContentLength = -1
		r.TransferEncoding = []string{"chunked"}
	} else {
		r.ContentLength = int64(total)
		r.Header.Set("Content-Length", strconv.Itoa(total))
	}
	return r
}

// bufferRequestGuest pauses the request until the end of its body, copies
// the whole body into the x-seen-body request header and replaces it with
// "REPLACED".
func bufferRequestGuest() *guest {
	g := newGuest()
	return g.fn(`(func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_request_body") (param $ctx i32) (param $size i32) (param $eos i32) (result i32)
    (if (i32.eqz (local.get $eos)) (then (return (i32.const 1))))
    (drop (call $get_buffer ` + reqBody + ` (i32.const 0) (local.get $size) (i32.const 8192) (i32.const 8196)))
    (drop (call $add_header ` + reqHeaders + " " + g.str("x-seen-body") + ` (call $ret_ptr) (call $ret_len)))
    (drop (call $set_buffer ` + reqBody + ` (i32.const 0) (local.get $size) ` + g.str("REPLACED") + `))
    (i32.const 0))`)
}

func TestRequestPausedUntilEndOfBodySeesWholeBody(t *testing.T) {
	h := provisionGuest(t, bufferRequestGuest(), "")
	for _, chunked := range []bool{false, true} {
		name := map[bool]string{false: "content-length", true: "chunked"}[chunked]
		t.Run(name, func(t *testing.T) {
			var te []string
			next := &nextHandler{serve: func(w http.ResponseWriter, r *http.Request) error {
				te = r.TransferEncoding
				return nil
			}}
			r := bodyRequest(chunked, "hello ", "wor", "ld")
			_, err, p := h.serve(r, next)
			if err != nil || p != nil {
				t.Fatalf("err %v, panic %v", err, p)
			}
			wantValues(t, next.header, "X-Seen-Body", "hello world")
			if next.body != "REPLACED" || next.bodyCL != 8 {
				t.Errorf("next got body %q with ContentLength %d, want \"REPLACED\" and 8", next.body, next.bodyCL)
			}
			if !chunked {
				wantValues(t, next.header, "Content-Length", "8")
			}
			if te != nil {
				t.Errorf("TransferEncoding %v after the whole body was held", te)
			}
		})
	}
}

// A filter that does not pause sees the body chunk by chunk, as the next
// handler reads it; this one appends "|" to each chunk.
func TestRequestBodyStreamsThroughTheFilterChunkByChunk(t *testing.T) {
	g := newGuest()
	g.fn(`(func (export "proxy_on_request_body") (param $ctx i32) (param $size i32) (param $eos i32) (result i32)
    (drop (call $set_buffer ` + reqBody + ` (local.get $size) (i32.const 0) ` + g.str("|") + `))
    (i32.const 0))`)
	h := provisionGuest(t, g, "")
	next := &nextHandler{}
	_, err, p := h.serve(bodyRequest(true, "ab", "cd"), next)
	if err != nil || p != nil {
		t.Fatalf("err %v, panic %v", err, p)
	}
	if next.body != "ab|cd||" {
		t.Errorf("next read %q, want \"ab|cd||\" (each chunk, then the end of stream)", next.body)
	}
}

// Two filters in a route: the first holds the request body to its end and
// replaces it; the second, streaming, still sees the body the first one
// let through.
func TestChainedFiltersBothSeeTheRequestBody(t *testing.T) {
	first := provisionGuest(t, bufferRequestGuest(), "")
	g := newGuest()
	g.fn(`(func (export "proxy_on_request_body") (param $ctx i32) (param $size i32) (param $eos i32) (result i32)
    (drop (call $set_buffer ` + reqBody + ` (local.get $size) (i32.const 0) ` + g.str("|") + `))
    (i32.const 0))`)
	second := provisionGuest(t, g, `"name": "second"`)
	next := &nextHandler{}
	chain := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		return second.ServeHTTP(w, r, next)
	})
	if _, err, p := first.serve(bodyRequest(false, "ab", "cd"), chain); err != nil || p != nil {
		t.Fatalf("err %v, panic %v", err, p)
	}
	if next.body != "REPLACED||" {
		t.Errorf("next read %q, want \"REPLACED||\" (the first filter's body, through the second)", next.body)
	}
}

// pauseBodyGuest holds every body until its end, in the direction given,
// and optionally pauses the request headers too.
func pauseBodyGuest(callback string, pauseHeaders bool) *guest {
	g := newGuest()
	if pauseHeaders {
		g.fn(`(func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) (i32.const 1))`)
	}
	return g.fn(`(func (export "` + callback + `") (param $ctx i32) (param $size i32) (param $eos i32) (result i32)
    (i32.eqz (local.get $eos)))`)
}

func TestRequestBodyOverMaxBodySizeGets413(t *testing.T) {
	body := strings.Repeat("x", 4096)
	for _, tt := range []struct {
		name   string
		g      *guest
		policy string
	}{
		{"held with the headers", pauseBodyGuest("proxy_on_request_body", true), FailClosed},
		{"held with the headers, fail_open", pauseBodyGuest("proxy_on_request_body", true), FailOpen},
		{"buffered while streaming", pauseBodyGuest("proxy_on_request_body", false), FailClosed},
		{"buffered while streaming, fail_open", pauseBodyGuest("proxy_on_request_body", false), FailOpen},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := provisionGuest(t, tt.g, `"max_body_size": 1024, "failure_policy": "`+tt.policy+`"`)
			next := &nextHandler{}
			rec, err, p := h.serve(bodyRequest(false, body[:1000], body[1000:2000], body[2000:]), next)
			if p != nil {
				t.Fatalf("panic %v", p)
			}
			if statusOf(err) != http.StatusRequestEntityTooLarge {
				t.Fatalf("err %v, want a 413 HandlerError", err)
			}
			if !errors.Is(err, filters.ErrBodyTooLarge) {
				t.Errorf("err %v does not wrap filters.ErrBodyTooLarge", err)
			}
			if rec.Body.Len() != 0 {
				t.Errorf("something was written: %q", rec.Body)
			}
		})
	}
}

// loopGuest changes the request, then loops in proxy_on_request_headers.
func loopGuest() *guest {
	g := newGuest()
	return g.fn(`(func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (drop (call $add_header ` + reqHeaders + " " + g.str("x-before-loop") + " " + g.str("1") + `))
    (drop (call $replace_header ` + reqHeaders + " " + g.str(":path") + " " + g.str("/changed") + `))
    (drop (call $replace_header ` + reqHeaders + " " + g.str(":method") + " " + g.str("DELETE") + `))
    (drop (call $remove_header ` + reqHeaders + " " + g.str("x-client") + `))
    (loop $forever (br $forever))
    (i32.const 0))`).onDoneLogs()
}

func TestLoopingFilterIsStoppedAndThePolicyApplies(t *testing.T) {
	t.Run("fail_closed answers 500 without next", func(t *testing.T) {
		h := provisionGuest(t, loopGuest(), `"timeout": "50ms"`)
		next := &nextHandler{}
		start := time.Now()
		_, err, p := h.serve(newRequest(http.MethodGet, "/orig?x=1", ""), next)
		if p != nil {
			t.Fatalf("panic %v", p)
		}
		if elapsed := time.Since(start); elapsed > 5*time.Second {
			t.Errorf("took %v with a 50ms budget", elapsed)
		}
		if statusOf(err) != http.StatusInternalServerError {
			t.Fatalf("err %v, want a 500 HandlerError", err)
		}
		if next.calls.Load() != 0 {
			t.Error("next ran under fail_closed")
		}
		wantFailureLogged(t, h, "timeout", "fail_closed")
	})
	t.Run("fail_open serves the request as the client sent it", func(t *testing.T) {
		h := provisionGuest(t, loopGuest(), `"timeout": "50ms", "failure_policy": "fail_open"`)
		next := &nextHandler{}
		r := newRequest(http.MethodGet, "/orig?x=1", "")
		r.Header.Set("X-Client", "kept")
		rec, err, p := h.serve(r, next)
		if err != nil || p != nil {
			t.Fatalf("err %v, panic %v", err, p)
		}
		if next.calls.Load() != 1 {
			t.Fatalf("next ran %d times", next.calls.Load())
		}
		wantValues(t, next.header, "X-Before-Loop")
		wantValues(t, next.header, "X-Client", "kept")
		if next.uri != "/orig?x=1" || next.method != http.MethodGet {
			t.Errorf("next saw %s %s, want GET /orig?x=1", next.method, next.uri)
		}
		if rec.Body.String() != "from next" {
			t.Errorf("body %q", rec.Body)
		}
		wantFailureLogged(t, h, "timeout", "fail_open")
	})
}

// wantFailureLogged checks the "filter failed" log line names the filter,
// the reason and the action.
func wantFailureLogged(t *testing.T, h testHandler, reason, action string) {
	t.Helper()
	entries := h.logged("filter failed")
	if len(entries) != 1 {
		t.Fatalf("%d \"filter failed\" log lines, want 1: %v", len(entries), h.logs.All())
	}
	fields := entries[0].ContextMap()
	if fields["filter"] != "test" || fields["reason"] != reason ||
		!strings.Contains(fields["action"].(string), action) {
		t.Errorf("log fields %v, want filter test, reason %s, action %s", fields, reason, action)
	}
}

// upstream is a next handler answering 201 with a header and a body in two
// writes.
func upstream() *nextHandler {
	return &nextHandler{serve: func(w http.ResponseWriter, r *http.Request) error {
		w.Header().Set("X-Up", "1")
		w.Header().Set("Set-Cookie", "session=upstream")
		w.WriteHeader(http.StatusCreated)
		if _, err := w.Write([]byte("hello")); err != nil {
			return err
		}
		_, err := w.Write([]byte("world"))
		return err
	}}
}

func TestTrapInResponseHeadersAppliesThePolicy(t *testing.T) {
	g := newGuest()
	g.fn(`(func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32)
    (drop (call $add_header ` + respHeaders + " " + g.str("x-filter") + " " + g.str("1") + `))
    unreachable)`).onDoneLogs()
	module := g.wasm(t)

	t.Run("fail_closed", func(t *testing.T) {
		h := provision(t, module, "")
		rec, err, p := h.serve(newRequest(http.MethodGet, "/", ""), upstream())
		if p != nil {
			t.Fatalf("panic %v", p)
		}
		if statusOf(err) != http.StatusInternalServerError {
			t.Fatalf("err %v, want 500", err)
		}
		if rec.Body.Len() != 0 {
			t.Errorf("body %q reached the client", rec.Body)
		}
		for _, k := range []string{"X-Up", "Set-Cookie", "X-Filter"} {
			wantValues(t, rec.Header(), k) // nothing of the failed response goes with the error
		}
		wantFailureLogged(t, h, "trap", "fail_closed")
	})
	t.Run("fail_open sends the original response", func(t *testing.T) {
		h := provision(t, module, `"failure_policy": "fail_open"`)
		rec, err, p := h.serve(newRequest(http.MethodGet, "/", ""), upstream())
		if err != nil || p != nil {
			t.Fatalf("err %v, panic %v", err, p)
		}
		if rec.Code != http.StatusCreated || rec.Body.String() != "helloworld" {
			t.Errorf("got %d %q, want 201 \"helloworld\"", rec.Code, rec.Body)
		}
		wantValues(t, rec.Header(), "X-Up", "1")
		wantValues(t, rec.Header(), "X-Filter")
		wantFailureLogged(t, h, "trap", "fail_open")
	})
}

// trapSecondBodyGuest passes the first response body chunk and traps on
// the second.
func trapSecondBodyGuest() *guest {
	return newGuest().fn(`(global $calls (mut i32) (i32.const 0))
  (func (export "proxy_on_response_body") (param i32 i32 i32) (result i32)
    (global.set $calls (i32.add (global.get $calls) (i32.const 1)))
    (if (i32.ge_u (global.get $calls) (i32.const 2)) (then unreachable))
    (i32.const 0))`)
}

// flushingUpstream writes a chunk, flushes it to the client, then writes
// another.
func flushingUpstream() *nextHandler {
	return &nextHandler{serve: func(w http.ResponseWriter, r *http.Request) error {
		if _, err := w.Write([]byte("first chunk\n")); err != nil {
			return err
		}
		if err := http.NewResponseController(w).Flush(); err != nil {
			return err
		}
		_, err := w.Write([]byte("second chunk\n"))
		return err
	}}
}

// A failure after the headers went out cannot be answered any more: the
// response is aborted so the client cannot take it for complete (H4).
func TestTrapInResponseBodyAfterFlushAbortsTheResponse(t *testing.T) {
	module := trapSecondBodyGuest().wasm(t)
	for _, policy := range []string{FailClosed, FailOpen} {
		t.Run(policy, func(t *testing.T) {
			h := provision(t, module, `"failure_policy": "`+policy+`"`)
			rec, _, p := h.serve(newRequest(http.MethodGet, "/", ""), flushingUpstream())
			if p != http.ErrAbortHandler { //nolint:errorlint // the panic value itself
				t.Fatalf("panic %v, want http.ErrAbortHandler", p)
			}
			if rec.Body.String() != "first chunk\n" {
				t.Errorf("body %q", rec.Body)
			}
			wantFailureLogged(t, h, "trap", "abort")

			srv := httpServer(t, h, flushingUpstream())
			resp, err := srv.Client().Get(srv.URL)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			if err == nil {
				t.Errorf("client read a complete response %q; want it aborted", body)
			}
			if string(body) != "first chunk\n" {
				t.Errorf("client got %q before the abort", body)
			}
		})
	}
}

// Over HTTP/2 the abort resets the stream: the client sees a stream error,
// not an end of body.
func TestTrapAfterFlushResetsTheHTTP2Stream(t *testing.T) {
	h := provision(t, trapSecondBodyGuest().wasm(t), "")
	srv := http2Server(t, h, flushingUpstream())
	resp, err := srv.Client().Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if resp.ProtoMajor != 2 || string(body) != "first chunk\n" {
		t.Fatalf("HTTP/%d, body %q", resp.ProtoMajor, body)
	}
	if err == nil || !strings.Contains(err.Error(), "stream error") {
		t.Errorf("reading the body: %v, want a stream reset", err)
	}
}

// rewriteBodyGuest holds the response body until its end and replaces it
// with "rewritten!"; with pauseHeaders, the headers wait too.
func rewriteBodyGuest(pauseHeaders bool) *guest {
	g := newGuest()
	if pauseHeaders {
		g.fn(`(func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32) (i32.const 1))`)
	}
	return g.fn(`(func (export "proxy_on_response_body") (param $ctx i32) (param $size i32) (param $eos i32) (result i32)
    (if (i32.eqz (local.get $eos)) (then (return (i32.const 1))))
    (drop (call $set_buffer ` + respBody + ` (i32.const 0) (local.get $size) ` + g.str("rewritten!") + `))
    (i32.const 0))`)
}

// bodyUpstream answers "original body" in two writes, with or without a
// Content-Length.
func bodyUpstream(contentLength bool) *nextHandler {
	return &nextHandler{serve: func(w http.ResponseWriter, r *http.Request) error {
		if contentLength {
			w.Header().Set("Content-Length", "13")
		}
		if _, err := w.Write([]byte("original")); err != nil {
			return err
		}
		_, err := w.Write([]byte(" body"))
		return err
	}}
}

func TestResponseBodyRewriteWithHeldHeadersGetsTheNewContentLength(t *testing.T) {
	h := provisionGuest(t, rewriteBodyGuest(true), "")
	for _, cl := range []bool{true, false} {
		rec, err, p := h.serve(newRequest(http.MethodGet, "/", ""), bodyUpstream(cl))
		if err != nil || p != nil {
			t.Fatalf("err %v, panic %v", err, p)
		}
		if rec.Body.String() != "rewritten!" {
			t.Errorf("body %q", rec.Body)
		}
		wantValues(t, rec.Header(), "Content-Length", "10")
	}
	// And on the wire: the client reads a complete, correctly framed body.
	srv := httpServer(t, h, bodyUpstream(true))
	resp, err := srv.Client().Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || string(body) != "rewritten!" || resp.ContentLength != 10 {
		t.Errorf("client got %q (Content-Length %d), err %v", body, resp.ContentLength, err)
	}
}

func TestResponseBodyLengthChangeAfterContentLengthWasSentAborts(t *testing.T) {
	h := provisionGuest(t, rewriteBodyGuest(false), "")
	t.Run("with Content-Length", func(t *testing.T) {
		_, _, p := h.serve(newRequest(http.MethodGet, "/", ""), bodyUpstream(true))
		if p != http.ErrAbortHandler { //nolint:errorlint // the panic value itself
			t.Fatalf("panic %v, want http.ErrAbortHandler", p)
		}
		if len(h.logged("filter changed the response body length without updating content-length")) != 1 {
			t.Errorf("no log line for the abort: %v", h.logs.All())
		}
		// The headers may still sit in the server's buffer when the
		// connection closes: the client sees no response, or a cut one.
		srv := httpServer(t, h, bodyUpstream(true))
		resp, err := srv.Client().Get(srv.URL)
		if err == nil {
			defer resp.Body.Close()
			if body, err := io.ReadAll(resp.Body); err == nil {
				t.Errorf("client read %q as complete", body)
			}
		}
	})
	t.Run("without Content-Length the rewrite streams", func(t *testing.T) {
		rec, err, p := h.serve(newRequest(http.MethodGet, "/", ""), bodyUpstream(false))
		if err != nil || p != nil {
			t.Fatalf("err %v, panic %v", err, p)
		}
		if rec.Body.String() != "rewritten!" {
			t.Errorf("body %q", rec.Body)
		}
	})
}

func TestResponseBodyOverMaxBodySizeFailsTheFilter(t *testing.T) {
	g := pauseBodyGuest("proxy_on_response_body", false)
	g.fn(`(func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32) (i32.const 1))`)
	module := g.wasm(t)
	big := strings.Repeat("y", 3000)
	up := func() *nextHandler {
		return &nextHandler{serve: func(w http.ResponseWriter, r *http.Request) error {
			w.Header().Set("X-Up", "1")
			for i := 0; i < 3; i++ {
				if _, err := w.Write([]byte(big[i*1000 : (i+1)*1000])); err != nil {
					return err
				}
			}
			return nil
		}}
	}
	t.Run("fail_closed", func(t *testing.T) {
		h := provision(t, module, `"max_body_size": 1500`)
		rec, err, p := h.serve(newRequest(http.MethodGet, "/", ""), up())
		if p != nil || statusOf(err) != http.StatusInternalServerError {
			t.Fatalf("err %v, panic %v; want a 500", err, p)
		}
		if rec.Body.Len() != 0 {
			t.Errorf("body reached the client: %d bytes", rec.Body.Len())
		}
	})
	t.Run("fail_open sends the whole original", func(t *testing.T) {
		h := provision(t, module, `"max_body_size": 1500, "failure_policy": "fail_open"`)
		rec, err, p := h.serve(newRequest(http.MethodGet, "/", ""), up())
		if err != nil || p != nil {
			t.Fatalf("err %v, panic %v", err, p)
		}
		if rec.Body.String() != big {
			t.Errorf("body of %d bytes, want the original %d", rec.Body.Len(), len(big))
		}
		wantValues(t, rec.Header(), "X-Up", "1")
	})
}

func TestLocalResponseFromResponseHeadersReplacesTheUpstreamResponse(t *testing.T) {
	g := newGuest()
	g.fn(`(func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32)
    (drop (call $send_local (i32.const 502) ` + g.str("replaced") + " " + g.str("replaced") + " " +
		g.headers([2]string{"x-local", "1"}) + ` (i32.const -1)))
    (i32.const 0))`)
	h := provisionGuest(t, g, "")
	rec, err, p := h.serve(newRequest(http.MethodGet, "/", ""), upstream())
	if err != nil || p != nil {
		t.Fatalf("err %v, panic %v", err, p)
	}
	if rec.Code != http.StatusBadGateway || rec.Body.String() != "replaced" {
		t.Errorf("got %d %q", rec.Code, rec.Body)
	}
	wantValues(t, rec.Header(), "X-Local", "1")
	wantValues(t, rec.Header(), "Content-Length", "8")
	wantValues(t, rec.Header(), "X-Up")
	wantValues(t, rec.Header(), "Set-Cookie")
}

func TestResetFromRequestHeadersAbortsWithoutNext(t *testing.T) {
	g := newGuest().fn(`(func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (drop (call $close_stream (i32.const 0)))
    (i32.const 0))`)
	h := provisionGuest(t, g, "")
	next := &nextHandler{}
	_, _, p := h.serve(newRequest(http.MethodGet, "/", ""), next)
	if p != http.ErrAbortHandler { //nolint:errorlint // the panic value itself
		t.Errorf("panic %v, want http.ErrAbortHandler", p)
	}
	if next.calls.Load() != 0 {
		t.Error("next ran after a reset")
	}
}

func TestInformationalResponsesPassThrough(t *testing.T) {
	h := provisionGuest(t, continueGuest(), "")
	next := &nextHandler{serve: func(w http.ResponseWriter, r *http.Request) error {
		w.Header().Set("Link", "</style.css>; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
		w.Header().Del("Link")
		_, err := w.Write([]byte("ok"))
		return err
	}}
	srv := httpServer(t, h, next)
	var mu sync.Mutex
	var got []int
	var link string
	trace := &httptrace.ClientTrace{Got1xxResponse: func(code int, header textproto.MIMEHeader) error {
		mu.Lock()
		defer mu.Unlock()
		got = append(got, code)
		link = header.Get("Link")
		return nil
	}}
	req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(t.Context(), trace), http.MethodGet, srv.URL, nil)
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 1 || got[0] != http.StatusEarlyHints || link != "</style.css>; rel=preload" {
		t.Errorf("informational responses %v (Link %q), want one 103 with the Link", got, link)
	}
	if resp.StatusCode != 200 || string(body) != "ok" || resp.Header.Get("X-Wat") != "hello" {
		t.Errorf("final response %d %q x-wat %q", resp.StatusCode, body, resp.Header.Get("X-Wat"))
	}
}

// headUpstream answers a HEAD as a file server does: the length of the
// body a GET would get, and no body.
func headUpstream() *nextHandler {
	return &nextHandler{serve: func(w http.ResponseWriter, r *http.Request) error {
		w.Header().Set("Content-Length", "100")
		w.WriteHeader(http.StatusOK)
		return nil
	}}
}

// A HEAD response declares the length of the body it does not carry: that
// is no reason to abort it.
func TestHeadResponseKeepsItsContentLength(t *testing.T) {
	h := provisionGuest(t, continueGuest(), "")
	rec, err, p := h.serve(newRequest(http.MethodHead, "/", ""), headUpstream())
	if err != nil || p != nil {
		t.Fatalf("err %v, panic %v", err, p)
	}
	if rec.Code != 200 || rec.Body.Len() != 0 || rec.Header().Get("X-Wat") != "hello" {
		t.Errorf("got %d %q x-wat %q", rec.Code, rec.Body, rec.Header().Get("X-Wat"))
	}
	wantValues(t, rec.Header(), "Content-Length", "100")
}

// A filter pausing the headers of a response that has no body (a HEAD) has
// nothing left that could resume it: that is the filter's fault.
func TestPausingHeadersOfABodylessResponseFailsTheFilter(t *testing.T) {
	h := provisionGuest(t, rewriteBodyGuest(true), "")
	_, err, p := h.serve(newRequest(http.MethodHead, "/", ""), headUpstream())
	if p != nil || statusOf(err) != http.StatusInternalServerError {
		t.Fatalf("err %v, panic %v; want 500", err, p)
	}
	wantFailureLogged(t, h, "abi_violation", "fail_closed")
}

type testPanic struct{ msg string }

// A panic raised by the next handler is not Sluice's: it goes on unchanged,
// after the instance has been finished.
func TestPanicInNextPropagatesUnchanged(t *testing.T) {
	trapping := newGuest().fn(`(func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) unreachable)`)
	value := &testPanic{"boom"}
	for _, tt := range []struct {
		name  string
		g     *guest
		extra string
		value any
	}{
		{"after the filter continued", continueGuest(), "", value},
		{"http.ErrAbortHandler from next", continueGuest(), "", http.ErrAbortHandler},
		{"after the filter wrote part of the response", continueGuest(), "", value},
		{"when fail_open serves without the filter", trapping, `"failure_policy": "fail_open"`, value},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := provisionGuest(t, tt.g, tt.extra)
			next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
				if strings.Contains(tt.name, "part") {
					_, _ = w.Write([]byte("partial"))
				}
				panic(tt.value)
			})
			_, err, p := h.serve(newRequest(http.MethodGet, "/", ""), next)
			if p != tt.value {
				t.Fatalf("panic %v (err %v), want %v", p, err, tt.value)
			}
			if len(h.logged("recovered from a panic in sluice")) != 0 {
				t.Error("the next handler's panic was taken for Sluice's own")
			}
			if !strings.Contains(tt.name, "fail_open") && len(h.logged("done")) != 1 {
				t.Error("proxy_on_done did not run before the panic went on")
			}
		})
	}
}

// heldRequestFailureGuest holds the request until the end of its body, then
// misbehaves at the end: traps, or stays paused with nothing to resume it.
func heldRequestFailureGuest(atEnd string) *guest {
	return newGuest().fn(`(func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_request_body") (param $ctx i32) (param $size i32) (param $eos i32) (result i32)
    (if (i32.eqz (local.get $eos)) (then (return (i32.const 1))))
    ` + atEnd + `)`)
}

// fail_open serves the request as the client sent it, body included, even
// when the filter failed after consuming the body.
func TestFailOpenAfterHeldRequestBodyForwardsTheOriginalBody(t *testing.T) {
	for _, tt := range []struct{ name, atEnd, reason string }{
		{"trap at end of body", "unreachable", "trap"},
		{"pause at end of body", "(i32.const 1)", "abi_violation"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := provisionGuest(t, heldRequestFailureGuest(tt.atEnd), `"failure_policy": "fail_open"`)
			next := &nextHandler{}
			r := bodyRequest(false, "client ", "body")
			_, err, p := h.serve(r, next)
			if err != nil || p != nil {
				t.Fatalf("err %v, panic %v", err, p)
			}
			if next.body != "client body" || next.bodyCL != 11 {
				t.Errorf("next got %q (ContentLength %d), want the client's \"client body\" (11)", next.body, next.bodyCL)
			}
			wantFailureLogged(t, h, tt.reason, "fail_open")
		})
	}
}

// Binary header bytes from a client reach the filter and come back out
// unchanged, over a real connection (H17).
func TestBinaryHeaderValuesPassThroughUnchanged(t *testing.T) {
	g := newGuest()
	g.fn(`(func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32)
    (if (call $get_header ` + reqHeaders + " " + g.str("x-bin") + ` (i32.const 8192) (i32.const 8196))
      (then (return (i32.const 0))))
    (drop (call $add_header ` + respHeaders + " " + g.str("x-bin-echo") + ` (call $ret_ptr) (call $ret_len)))
    (i32.const 0))`)
	h := provisionGuest(t, g, "")
	srv := httpServer(t, h, &nextHandler{})
	bin := "caf\xe9 \x80\xfe\xff"
	req, _ := http.NewRequest(http.MethodGet, srv.URL, nil)
	req.Header["X-Bin"] = []string{bin}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if got := resp.Header["X-Bin-Echo"]; len(got) != 1 || got[0] != bin {
		t.Errorf("echoed %q, want %q", got, bin)
	}
}

// The handler writes nothing itself on the next handler's behalf: a
// response with neither headers nor body written gets 200 and an empty body.
func TestEmptyResponseFromNextRunsResponseCallbacks(t *testing.T) {
	h := provisionGuest(t, continueGuest(), "")
	rec, err, p := h.serve(newRequest(http.MethodGet, "/", ""), caddyhttp.HandlerFunc(
		func(http.ResponseWriter, *http.Request) error { return nil }))
	if err != nil || p != nil {
		t.Fatalf("err %v, panic %v", err, p)
	}
	if rec.Code != 200 || rec.Body.Len() != 0 || rec.Header().Get("X-Wat") != "hello" {
		t.Errorf("got %d %q x-wat %q", rec.Code, rec.Body, rec.Header().Get("X-Wat"))
	}
}

// An error from next before it wrote anything is left to Caddy's error
// handling, untouched by the response callbacks.
func TestErrorFromNextIsReturnedUnchanged(t *testing.T) {
	h := provisionGuest(t, continueGuest(), "")
	want := caddyhttp.Error(http.StatusBadGateway, errors.New("upstream down"))
	rec, err, p := h.serve(newRequest(http.MethodGet, "/", ""), caddyhttp.HandlerFunc(
		func(http.ResponseWriter, *http.Request) error { return want }))
	if p != nil || !errors.Is(err, want.Err) || statusOf(err) != http.StatusBadGateway {
		t.Fatalf("err %v, panic %v; want the next handler's 502", err, p)
	}
	if rec.Header().Get("X-Wat") != "" || !bytes.Equal(rec.Body.Bytes(), nil) {
		t.Errorf("the filter answered on an error: %v %q", rec.Header(), rec.Body)
	}
}

// passFirstBodyChunkGuest releases the first request body chunk and traps
// on the second.
func passFirstBodyChunkGuest() *guest {
	return newGuest().fn(`(global $calls (mut i32) (i32.const 0))
  (func (export "proxy_on_request_body") (param i32 i32 i32) (result i32)
    (global.set $calls (i32.add (global.get $calls) (i32.const 1)))
    (if (i32.ge_u (global.get $calls) (i32.const 2)) (then unreachable))
    (i32.const 0))`)
}

func TestRequestBodyFailureWhileStreaming(t *testing.T) {
	module := passFirstBodyChunkGuest().wasm(t)
	t.Run("fail_open forwards the rest as the client sent it", func(t *testing.T) {
		h := provision(t, module, `"failure_policy": "fail_open"`)
		next := &nextHandler{}
		rec, err, p := h.serve(bodyRequest(true, "ab", "cd", "ef"), next)
		if err != nil || p != nil {
			t.Fatalf("err %v, panic %v", err, p)
		}
		if next.body != "abcdef" {
			t.Errorf("next read %q, want the whole body \"abcdef\"", next.body)
		}
		if rec.Body.String() != "from next" {
			t.Errorf("response %q", rec.Body)
		}
		wantFailureLogged(t, h, "trap", "fail_open")
	})
	t.Run("fail_closed answers 500 instead of the next handler", func(t *testing.T) {
		h := provision(t, module, "")
		next := &nextHandler{}
		rec, err, p := h.serve(bodyRequest(true, "ab", "cd", "ef"), next)
		if p != nil || statusOf(err) != http.StatusInternalServerError {
			t.Fatalf("err %v, panic %v; want 500", err, p)
		}
		if next.body != "ab" {
			t.Errorf("next read %q before the failure, want \"ab\"", next.body)
		}
		if rec.Body.Len() != 0 {
			t.Errorf("response body %q", rec.Body)
		}
	})
}

// A filter may answer from the request body while the next handler reads
// it: the next handler's read fails and the local response replaces
// whatever it meant to send.
func TestLocalResponseFromStreamingRequestBody(t *testing.T) {
	g := newGuest()
	g.fn(`(func (export "proxy_on_request_body") (param i32 i32 i32) (result i32)
    (drop (call $send_local (i32.const 429) ` + g.str("slow down") + " " + g.str("slow down") + ` (i32.const 0) (i32.const 0) (i32.const -1)))
    (i32.const 1))`)
	h := provisionGuest(t, g, "")
	next := &nextHandler{serve: func(w http.ResponseWriter, r *http.Request) error {
		w.Header().Set("X-Up", "1")
		return caddyhttp.Error(http.StatusBadRequest, errors.New("body read failed"))
	}}
	rec, err, p := h.serve(bodyRequest(true, "ab"), next)
	if err != nil || p != nil {
		t.Fatalf("err %v, panic %v", err, p)
	}
	if rec.Code != http.StatusTooManyRequests || rec.Body.String() != "slow down" {
		t.Errorf("got %d %q", rec.Code, rec.Body)
	}
	wantValues(t, rec.Header(), "X-Up")
}

func TestLocalResponseCarriesGRPCStatus(t *testing.T) {
	g := newGuest()
	g.fn(`(func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (drop (call $send_local (i32.const 200) ` + g.str("grpc") + ` (i32.const 0) (i32.const 0) ` +
		g.headers([2]string{"content-type", "application/grpc"}) + ` (i32.const 7)))
    (i32.const 1))`)
	h := provisionGuest(t, g, "")
	rec, err, p := h.serve(newRequest(http.MethodPost, "/svc/Method", ""), &nextHandler{})
	if err != nil || p != nil {
		t.Fatalf("err %v, panic %v", err, p)
	}
	wantValues(t, rec.Header(), "Grpc-Status", "7")
	wantValues(t, rec.Header(), "Content-Length", "0")
}

// Trailers in both directions go through the filter, over a real
// connection: chunked request trailers, and declared response trailers.
func TestTrailersPassThroughTheFilter(t *testing.T) {
	g := newGuest()
	g.fn(`(func (export "proxy_on_request_body") (param i32 i32 i32) (result i32) (i32.const 0))
  (func (export "proxy_on_request_trailers") (param i32 i32) (result i32)
    (drop (call $replace_header (i32.const 1) ` + g.str("x-sum") + " " + g.str("req-filtered") + `))
    (i32.const 0))
  (func (export "proxy_on_response_trailers") (param i32 i32) (result i32)
    (drop (call $replace_header (i32.const 3) ` + g.str("x-sum") + " " + g.str("resp-filtered") + `))
    (i32.const 0))`)
	h := provisionGuest(t, g, "")
	var reqTrailer string
	next := &nextHandler{serve: func(w http.ResponseWriter, r *http.Request) error {
		reqTrailer = r.Trailer.Get("X-Sum")
		w.Header().Set("Trailer", "X-Sum")
		if _, err := w.Write([]byte("body")); err != nil {
			return err
		}
		w.Header().Set("X-Sum", "upstream")
		return nil
	}}
	srv := httpServer(t, h, next)
	req, _ := http.NewRequest(http.MethodPost, srv.URL, io.MultiReader(strings.NewReader("payload")))
	req.Trailer = http.Header{"X-Sum": {"client"}}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || string(body) != "body" {
		t.Fatalf("body %q, err %v", body, err)
	}
	if reqTrailer != "req-filtered" {
		t.Errorf("next saw request trailer %q, want req-filtered", reqTrailer)
	}
	if got := resp.Trailer.Get("X-Sum"); got != "resp-filtered" {
		t.Errorf("client saw response trailer %q, want resp-filtered", got)
	}
}

// A streaming filter does not hold flushed chunks back: the client reads
// the first chunk while the next handler is still running.
func TestFlushedChunksReachTheClientWhileNextRuns(t *testing.T) {
	g := continueGuest().fn(`(func (export "proxy_on_response_body") (param i32 i32 i32) (result i32) (i32.const 0))`)
	h := provisionGuest(t, g, "")
	release := make(chan struct{})
	next := &nextHandler{serve: func(w http.ResponseWriter, r *http.Request) error {
		if _, err := w.Write([]byte("event 1\n")); err != nil {
			return err
		}
		if err := http.NewResponseController(w).Flush(); err != nil {
			return err
		}
		select {
		case <-release:
		case <-time.After(10 * time.Second):
			return errors.New("the client never saw the first chunk")
		}
		_, err := w.Write([]byte("event 2\n"))
		return err
	}}
	srv := httpServer(t, h, next)
	resp, err := srv.Client().Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	first := make([]byte, len("event 1\n"))
	if _, err := io.ReadFull(resp.Body, first); err != nil || string(first) != "event 1\n" {
		t.Fatalf("first chunk %q, err %v", first, err)
	}
	close(release)
	rest, err := io.ReadAll(resp.Body)
	if err != nil || string(rest) != "event 2\n" {
		t.Errorf("rest %q, err %v", rest, err)
	}
	if resp.Header.Get("X-Wat") != "hello" {
		t.Errorf("x-wat %q", resp.Header.Get("X-Wat"))
	}
}

// One handler serves many requests at once, each in its own instance.
func TestConcurrentRequestsThroughOneHandler(t *testing.T) {
	h := provisionGuest(t, bufferRequestGuest(), "")
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 10 {
				body := strings.Repeat(strconv.Itoa(w), i+1)
				next := &nextHandler{}
				_, err, p := h.serve(bodyRequest(false, body), next)
				switch {
				case err != nil || p != nil:
					errs <- errors.Join(err, errors.New("request failed"))
				case next.header.Get("X-Seen-Body") != body || next.body != "REPLACED":
					errs <- errors.New("request " + body + " saw " + next.header.Get("X-Seen-Body"))
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// The body decides the Content-Length of a local response, whatever the
// filter put in its headers.
func TestLocalResponseContentLengthIsTheBodyLength(t *testing.T) {
	g := newGuest()
	g.fn(`(func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (drop (call $send_local (i32.const 401) ` + g.str("no") + " " + g.str("who are you?") + " " +
		g.headers([2]string{"content-length", "999"}, [2]string{"www-authenticate", "Basic"}) + ` (i32.const -1)))
    (i32.const 1))`)
	h := provisionGuest(t, g, "")
	rec, err, p := h.serve(newRequest(http.MethodGet, "/", ""), &nextHandler{})
	if err != nil || p != nil {
		t.Fatalf("err %v, panic %v", err, p)
	}
	wantValues(t, rec.Header(), "Content-Length", "12")
	wantValues(t, rec.Header(), "Www-Authenticate", "Basic")
	if rec.Code != 401 || rec.Body.String() != "who are you?" {
		t.Errorf("got %d %q", rec.Code, rec.Body)
	}
}

// A filter that starts fine at load but fails to create a request's HTTP
// context fails that request under its policy.
func TestFailureCreatingTheHTTPContextAppliesThePolicy(t *testing.T) {
	// The prelude's proxy_on_context_create, trapping for HTTP contexts
	// (those with a root context id) only. It runs in the same call as the
	// filter's first callback, here proxy_on_request_headers: before the
	// request goes anywhere.
	text := strings.Replace(guestPrelude, `(func (export "proxy_on_context_create") (param i32 i32))`,
		`(func (export "proxy_on_context_create") (param $id i32) (param $root i32)
    (if (local.get $root) (then unreachable)))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) (i32.const 0))`, 1)
	path := writeModule(t, "(module\n"+text+")")
	t.Run("fail_closed", func(t *testing.T) {
		h := provision(t, path, "")
		next := &nextHandler{}
		_, err, p := h.serve(newRequest(http.MethodGet, "/", ""), next)
		if p != nil || statusOf(err) != http.StatusInternalServerError || next.calls.Load() != 0 {
			t.Errorf("err %v, panic %v, next ran %d times; want 500 without next", err, p, next.calls.Load())
		}
		wantFailureLogged(t, h, "trap", "fail_closed")
	})
	t.Run("fail_open", func(t *testing.T) {
		h := provision(t, path, `"failure_policy": "fail_open"`)
		next := &nextHandler{}
		rec, err, p := h.serve(newRequest(http.MethodGet, "/", ""), next)
		if err != nil || p != nil || rec.Body.String() != "from next" {
			t.Errorf("err %v, panic %v, body %q; want next's response", err, p, rec.Body)
		}
	})
}

// A filter with no request callbacks has no say on the request: its
// proxy_on_context_create runs with its first callback, here the response
// headers, and a trap there still fails the response before it starts.
func TestFailureCreatingTheContextOfAResponseFilter(t *testing.T) {
	text := strings.Replace(guestPrelude, `(func (export "proxy_on_context_create") (param i32 i32))`,
		`(func (export "proxy_on_context_create") (param $id i32) (param $root i32)
    (if (local.get $root) (then unreachable)))
  (func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32) (i32.const 0))`, 1)
	h := provision(t, writeModule(t, "(module\n"+text+")"), "")
	next := &nextHandler{}
	_, err, p := h.serve(newRequest(http.MethodGet, "/", ""), next)
	if p != nil || statusOf(err) != http.StatusInternalServerError || next.calls.Load() != 1 {
		t.Errorf("err %v, panic %v, next ran %d times; want 500 after next", err, p, next.calls.Load())
	}
	wantFailureLogged(t, h, "trap", "fail_closed")
}

// A filter growing its memory past memory_limit fails with reason
// memory_limit, and the request gets its policy (H5).
func TestMemoryLimitStopsAGrowingFilter(t *testing.T) {
	g := newGuest().fn(`(func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (loop $grow
      (if (i32.lt_s (memory.grow (i32.const 1)) (i32.const 0)) (then unreachable))
      (br $grow))
    (i32.const 0))`)
	h := provisionGuest(t, g, `"memory_limit": 1048576`)
	_, err, p := h.serve(newRequest(http.MethodGet, "/", ""), &nextHandler{})
	if p != nil || statusOf(err) != http.StatusInternalServerError {
		t.Fatalf("err %v, panic %v; want 500", err, p)
	}
	wantFailureLogged(t, h, "memory_limit", "fail_closed")
}

// Caddy's reverse proxy panics with http.ErrAbortHandler when a response
// write fails. When the write failed because the filter answered itself,
// that panic is ours to settle: the local response goes out.
func TestNextAbortingOnOurWriteErrorStillSendsTheLocalResponse(t *testing.T) {
	g := newGuest()
	g.fn(`(func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32)
    (drop (call $send_local (i32.const 503) ` + g.str("busy") + " " + g.str("busy") + ` (i32.const 0) (i32.const 0) (i32.const -1)))
    (i32.const 0))`)
	h := provisionGuest(t, g, "")
	next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		if _, err := w.Write([]byte("upstream")); err != nil {
			panic(http.ErrAbortHandler)
		}
		return nil
	})
	rec, err, p := h.serve(newRequest(http.MethodGet, "/", ""), next)
	if err != nil || p != nil {
		t.Fatalf("err %v, panic %v", err, p)
	}
	if rec.Code != http.StatusServiceUnavailable || rec.Body.String() != "busy" {
		t.Errorf("got %d %q", rec.Code, rec.Body)
	}
}

// H24: when the guest memory budget is full, requests are shed with 503
// and Retry-After, whatever the failure policy, and never reach next. Each
// is counted; the log says so once a second, not once a request.
func TestFullMemoryBudgetShedsRequests(t *testing.T) {
	path := newGuest().wasm(t)
	for _, policy := range []string{FailClosed, FailOpen} {
		t.Run(policy, func(t *testing.T) {
			var h Handler
			h.Path, h.Name, h.FailurePolicy = path, "shed-"+policy, policy
			zero := 0
			h.Prewarm = &zero
			h.budget = filters.NewMemoryBudget(0)
			ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
			defer cancel()
			if err := h.Provision(ctx); err != nil {
				t.Fatal(err)
			}
			defer h.Cleanup()
			core, logs := observer.New(zapcore.WarnLevel)
			h.logger = zap.New(core)
			// The log's limit, one line a second, with no refill during the
			// test however slow the machine.
			h.sheds = rate.NewLimiter(rate.Every(time.Hour), 1)
			next := &nextHandler{}
			const requests = 5
			for range requests {
				rec := httptest.NewRecorder()
				err := h.ServeHTTP(rec, caddyRequest(httptest.NewRequest(http.MethodGet, "/", nil), rec), next)
				if statusOf(err) != http.StatusServiceUnavailable || rec.Header().Get("Retry-After") != "1" {
					t.Errorf("err %v, Retry-After %q; want 503 and 1", err, rec.Header().Get("Retry-After"))
				}
			}
			if next.calls.Load() != 0 {
				t.Error("a shed request reached the next handler")
			}
			shed := metricValue(t, ctx.GetMetricsRegistry(), "caddy_wasm_filter_requests_total",
				map[string]string{"filter": h.Name, "outcome": "shed"})
			if shed != requests {
				t.Errorf("%v requests counted shed, want %d", shed, requests)
			}
			if n := logs.FilterMessage("request shed: the guest memory budget is full").Len(); n != 1 {
				t.Errorf("%d log lines for %d shed requests, want 1", n, requests)
			}
		})
	}
}

// A request's end of stream is known without its body: Caddy wraps even an
// empty body, so the body being http.NoBody is not enough.
func TestBodyless(t *testing.T) {
	wrapped := io.NopCloser(strings.NewReader(""))
	for _, tc := range []struct {
		name string
		r    *http.Request
		want bool
	}{
		{"no body", &http.Request{Body: http.NoBody}, true},
		{"wrapped empty body, no length", &http.Request{Body: wrapped}, true},
		{"length", &http.Request{Body: wrapped, ContentLength: 5}, false},
		{"unknown length", &http.Request{Body: wrapped, ContentLength: -1}, false},
		{"chunked", &http.Request{Body: wrapped, TransferEncoding: []string{"chunked"}}, false},
	} {
		if got := bodyless(tc.r); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}

// A filter that lowers content-length does not shrink the buffer the body
// is read with: the body still reaches it in a few large chunks, not in
// thousands of two-byte ones.
func TestBodyChunksFollowTheClientsLength(t *testing.T) {
	g := newGuest()
	g.fn(`(func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (drop (call $replace_header ` + reqHeaders + ` ` + g.str("content-length") + ` ` + g.str("1") + `))
    (i32.const 0))
  (func (export "proxy_on_request_body") (param i32 i32 i32) (result i32) (i32.const 0))`)
	name := "chunks-" + t.Name()
	h := provisionGuest(t, g, `"name": "`+name+`"`)
	body := strings.Repeat("x", 20000)
	if _, err, _ := h.serve(newRequest(http.MethodPost, "/", body), &nextHandler{serve: func(w http.ResponseWriter, r *http.Request) error {
		_, err := io.Copy(io.Discard, r.Body)
		return err
	}}); err != nil {
		t.Fatal(err)
	}
	calls := metricValue(t, h.registry, "caddy_wasm_filter_guest_seconds", map[string]string{"filter": name, "phase": "request_body"})
	if calls < 1 || calls > 3 {
		t.Errorf("%v request body callbacks for 20,000 bytes, want 1 to 3", calls)
	}
}
