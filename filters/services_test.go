package filters

import (
	"bytes"
	"compress/zlib"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluice-edge/sluice/abi"
	"github.com/sluice-edge/sluice/filters/internal/state"
)

// Tests of the host beyond one request: shared data, queues, the background
// instance (timers, queue notifications, its calls), outbound calls,
// metrics and foreign functions.

func withState(s *SharedState) func(*Config) { return func(c *Config) { c.SharedState = s } }

func withVMID(id string) func(*Config) { return func(c *Config) { c.VMID = id } }

func withName(name string) func(*Config) { return func(c *Config) { c.Name = name } }

// withBackground sends the background instance's logs to log and its
// events to ev.
func withBackground(log *fakeExchange, ev *fakeEvents) func(*Config) {
	return func(c *Config) { c.BackgroundLog, c.Events = log, ev }
}

// fakeEvents records a plugin's Events.
type fakeEvents struct {
	mu                sync.Mutex
	background, calls []error
}

func (e *fakeEvents) BackgroundFailed(err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.background = append(e.background, err)
}

func (e *fakeEvents) CallFailed(err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.calls = append(e.calls, err)
}

func (e *fakeEvents) backgroundFailures() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.background)
}

// waitForLog waits until done is true of everything the guest logged so
// far, and returns those messages.
func waitForLog(t *testing.T, ex *fakeExchange, what string, done func(msgs []string) bool) []string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		msgs := ex.messages()
		if done(msgs) {
			return msgs
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s logged; the guest logged %q", what, msgs)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func count(msgs []string, msg string) int {
	n := 0
	for _, m := range msgs {
		if m == msg {
			n++
		}
	}
	return n
}

// dataAt places b in the guest's memory at 4096 (the tests' own area).
func dataAt(b []byte) string { return fmt.Sprintf(`(data (i32.const 4096) "%s")`, watBytes(b)) }

// sharedDataGuest reads "k", sets it with the CAS value it read, then tries
// a stale CAS value.
const sharedDataGuest = `
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (local $st i32)
    (local.set $st (call $proxy_get_shared_data $"k" (i32.const 16) (i32.const 20) (i32.const 24)))
    (call $logkv $"get" (local.get $st))
    (if (i32.eqz (local.get $st)) (then (call $logkvs $"value")))
    (call $logkv $"set" (call $proxy_set_shared_data $"k" $"v" (i32.load (i32.const 24))))
    (call $logkv $"stale" (call $proxy_set_shared_data $"k" $"w" (i32.const 123456)))
    (i32.const 0))`

// Shared data outlives the request that set it, with compare-and-swap,
// within a namespace (vm_id) only, and across a reload of the filter.
func TestSharedDataAcrossRequestsAndNamespaces(t *testing.T) {
	for _, mode := range benchModes {
		t.Run(mode.name, func(t *testing.T) {
			st := NewSharedState(StateLimits{})
			module := guest(t, sharedDataGuest)
			a := mustLoad(t, module, withState(st), withVMID("tenant-a"), mode.opt)
			run := func(p *Plugin, want ...string) {
				t.Helper()
				ex := newExchange()
				if err := lifecycle(context.Background(), p, ex, 0); err != nil {
					t.Fatal(err)
				}
				ex.wantLogs(t, want...)
			}
			run(a, "get=1", "set=0", "stale=8")
			run(a, "get=0", "value=v", "set=0", "stale=8")

			b := mustLoad(t, module, withState(st), withVMID("tenant-b"), mode.opt)
			run(b, "get=1", "set=0", "stale=8")

			// A reload (the filter closed and loaded again) keeps the data.
			_ = a.Close(context.Background())
			again := mustLoad(t, module, withState(st), withVMID("tenant-a"), mode.opt)
			run(again, "get=0", "value=v", "set=0", "stale=8")
		})
	}
}

// Without a vm_id, a filter's namespace is its name.
func TestSharedDataNamespaceDefaultsToTheName(t *testing.T) {
	st := NewSharedState(StateLimits{})
	module := guest(t, sharedDataGuest)
	first := mustLoad(t, module, withState(st), withName("one"), withVMID(""))
	ex := newExchange()
	if err := lifecycle(context.Background(), first, ex, 0); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{"one": "get=0", "two": "get=1"} {
		p := mustLoad(t, module, withState(st), withName(name), withVMID(""))
		ex := newExchange()
		if err := lifecycle(context.Background(), p, ex, 0); err != nil {
			t.Fatal(err)
		}
		if got := ex.messages()[0]; got != want {
			t.Errorf("filter %q: %s, want %s", name, got, want)
		}
	}
}

// queueReceiver registers "jobs" while it configures, and drains it in
// proxy_on_queue_ready, logging each item.
const queueReceiver = `
  (global $q (mut i32) (i32.const 0))
  (func (export "proxy_on_configure") (param i32 i32) (result i32)
    (drop (call $proxy_register_shared_queue $"jobs" (i32.const 28)))
    (global.set $q (i32.load (i32.const 28)))
    (i32.const 1))
  (func (export "proxy_on_queue_ready") (param $root i32) (param $id i32)
    (local $st i32)
    (call $logkv $"mine" (i32.eq (local.get $id) (global.get $q)))
    (block $done (loop $more
      (local.set $st (call $proxy_dequeue_shared_queue (local.get $id) (i32.const 16) (i32.const 20)))
      (br_if $done (local.get $st))
      (call $logkvs $"item")
      (br $more)))
    (call $logkv $"last" (local.get $st)))`

// queueSender resolves "jobs" of its own VM and enqueues "hello"; it also
// tries another VM's queue by name, and by the id it resolved.
const queueSender = `
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (call $logkv $"resolve" (call $proxy_resolve_shared_queue $"" $"jobs" (i32.const 28)))
    (call $logkv $"enqueue" (call $proxy_enqueue_shared_queue (i32.load (i32.const 28)) $"hello"))
    (call $logkv $"other_vm" (call $proxy_resolve_shared_queue $"intruder" $"jobs" (i32.const 32)))
    (i32.const 0))`

// An item enqueued by a request reaches the background instance of the
// filter that registered the queue, in the same namespace only.
func TestQueueItemsReachTheRegisteringFilter(t *testing.T) {
	for _, mode := range benchModes {
		t.Run(mode.name, func(t *testing.T) {
			st := NewSharedState(StateLimits{})
			bgLog := newExchange()
			mustLoad(t, guest(t, queueReceiver), withState(st), withVMID("tenant"), withName("receiver"),
				withBackground(bgLog, &fakeEvents{}), mode.opt)
			sender := mustLoad(t, guest(t, queueSender), withState(st), withVMID("tenant"), withName("sender"), mode.opt)

			for range 2 {
				ex := newExchange()
				if err := lifecycle(context.Background(), sender, ex, 0); err != nil {
					t.Fatal(err)
				}
				ex.wantLogs(t, "resolve=0", "enqueue=0", "other_vm=1")
			}
			// Both items drained, and the drain that took the second one
			// finished (it logs last= after its final item).
			drained := func(msgs []string) bool {
				return count(msgs, "item=hello") == 2 && msgs[len(msgs)-1] == "last=7"
			}
			msgs := waitForLog(t, bgLog, "both items", drained)
			if !slices.Contains(msgs, "mine=1") || !slices.Contains(msgs, "last=7") {
				t.Errorf("background logged %q", msgs)
			}

			// Another tenant's filter finds no queue by that name.
			outsider := mustLoad(t, guest(t, queueSender), withState(st), withVMID("other"), withName("sender"), mode.opt)
			ex := newExchange()
			if err := lifecycle(context.Background(), outsider, ex, 0); err != nil {
				t.Fatal(err)
			}
			ex.wantLogs(t, "resolve=1", "enqueue=1", "other_vm=1")
		})
	}
}

// A tenant that guesses another tenant's queue id gets NOT_FOUND.
func TestQueueIDsDoNotCrossNamespaces(t *testing.T) {
	st := NewSharedState(StateLimits{})
	id, err := st.store.RegisterQueue("victim", "jobs", nil)
	if err != nil {
		t.Fatal(err)
	}
	p := mustLoad(t, guest(t, fmt.Sprintf(`
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (call $logkv $"enqueue" (call $proxy_enqueue_shared_queue (i32.const %d) $"x"))
    (call $logkv $"dequeue" (call $proxy_dequeue_shared_queue (i32.const %d) (i32.const 16) (i32.const 20)))
    (i32.const 0))`, id, id)), withState(st), withVMID("attacker"))
	ex := newExchange()
	if err := lifecycle(context.Background(), p, ex, 0); err != nil {
		t.Fatal(err)
	}
	ex.wantLogs(t, "enqueue=1", "dequeue=1")
}

// tickGuest sets a 20 ms timer while it configures and counts its ticks.
const tickGuest = `
  (global $ticks (mut i32) (i32.const 0))
  (func (export "proxy_on_configure") (param i32 i32) (result i32)
    (drop (call $proxy_set_tick_period_milliseconds (i32.const 20)))
    (i32.const 1))
  (func (export "proxy_on_tick") (param i32)
    (global.set $ticks (i32.add (global.get $ticks) (i32.const 1)))
    (call $logkv $"tick" (global.get $ticks)))`

// A timer set while the filter loads ticks in one background instance,
// whose state carries from tick to tick, until the plugin closes.
func TestTicksRunInTheBackgroundInstance(t *testing.T) {
	for _, mode := range benchModes {
		t.Run(mode.name, func(t *testing.T) {
			bgLog := newExchange()
			p := mustLoad(t, guest(t, tickGuest), withBackground(bgLog, &fakeEvents{}), mode.opt)
			waitForLog(t, bgLog, "a third tick", func(msgs []string) bool { return slices.Contains(msgs, "tick=3") })
			if err := p.Close(context.Background()); err != nil {
				t.Fatal(err)
			}
			n := len(bgLog.messages())
			time.Sleep(100 * time.Millisecond)
			if after := len(bgLog.messages()); after != n {
				t.Errorf("%d ticks after the plugin closed", after-n)
			}
		})
	}
}

// A filter that sets no timer and registers no queue has no background
// instance; nor does a request's instance that sets a timer.
func TestNoBackgroundInstanceUnlessAsked(t *testing.T) {
	p := mustLoad(t, guest(t, `
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (call $logkv $"tick" (call $proxy_set_tick_period_milliseconds (i32.const 10)))
    (i32.const 0))
  (func (export "proxy_on_tick") (param i32) (unreachable))`), freshStart)
	ex := newExchange()
	if err := lifecycle(context.Background(), p, ex, 0); err != nil {
		t.Fatal(err)
	}
	ex.wantLogs(t, "tick=0")
	p.bgMu.Lock()
	defer p.bgMu.Unlock()
	if p.bg != nil {
		t.Error("a background instance started")
	}
}

// A background instance that fails is reported and replaced by a new one,
// which starts from the filter's configured state again.
func TestFailingBackgroundInstanceIsReplaced(t *testing.T) {
	bgLog, ev := newExchange(), &fakeEvents{}
	mustLoad(t, guest(t, `
  (global $ticks (mut i32) (i32.const 0))
  (func (export "proxy_on_configure") (param i32 i32) (result i32)
    (drop (call $proxy_set_tick_period_milliseconds (i32.const 10)))
    (i32.const 1))
  (func (export "proxy_on_tick") (param i32)
    (global.set $ticks (i32.add (global.get $ticks) (i32.const 1)))
    (call $logkv $"tick" (global.get $ticks))
    (if (i32.eq (global.get $ticks) (i32.const 2)) (then (unreachable))))`), withBackground(bgLog, ev))
	waitForLog(t, bgLog, "ticks of a second instance", func(msgs []string) bool { return count(msgs, "tick=2") >= 2 })
	if n := ev.backgroundFailures(); n < 1 {
		t.Fatal("no failure reported")
	}
	ev.mu.Lock()
	defer ev.mu.Unlock()
	wantGuestError(t, ev.background[0], ErrTrap)
	if !strings.Contains(ev.background[0].Error(), "background instance") {
		t.Errorf("failure %q does not say where", ev.background[0])
	}
}

// callUpstream is an upstream for the outbound call tests: it answers
// /check with 200, header x-user: alice and body "ok-body", records what
// it was asked, and blocks on /slow until the request is canceled.
type callUpstream struct {
	*httptest.Server
	mu       sync.Mutex
	seen     []*http.Request
	slow     chan struct{} // a /slow request arrived
	canceled chan struct{} // a /slow request was canceled
}

func newCallUpstream(t *testing.T) *callUpstream {
	u := &callUpstream{slow: make(chan struct{}, 16), canceled: make(chan struct{}, 16)}
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.mu.Lock()
		u.seen = append(u.seen, r)
		u.mu.Unlock()
		if r.URL.Path == "/slow" {
			u.slow <- struct{}{}
			<-r.Context().Done()
			u.canceled <- struct{}{}
			return
		}
		w.Header().Set("X-User", "alice")
		_, _ = io.WriteString(w, "ok-body")
	}))
	t.Cleanup(u.Close)
	return u
}

func withUpstream(name, url string) func(*Config) {
	return func(c *Config) {
		if c.Upstreams == nil {
			c.Upstreams = map[string]string{}
		}
		c.Upstreams[name] = url
	}
}

// callHeaders places the serialized request headers of a call at 4096 and
// returns the data segment and their size.
func callHeaders(path string) (string, int) {
	b := abi.AppendHeaderMap(nil, [][2]string{{":method", "GET"}, {":path", path}, {":authority", "auth.internal"}})
	return dataAt(b), len(b)
}

// callGuest calls upstream "up" from its request headers and pauses; its
// call response callback logs what it got, then does what respond says.
func callGuest(path, onResponse string) string {
	data, size := callHeaders(path)
	return fmt.Sprintf(`
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (call $logkv $"call" (call $proxy_http_call $"up" (i32.const 4096) (i32.const %d)
      (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 1000) (i32.const 28)))
    (call $logkv $"id" (i32.load (i32.const 28)))
    (i32.const 1))
  (func (export "proxy_on_http_call_response") (param $root i32) (param $id i32) (param $nh i32) (param $body i32) (param $nt i32)
    (call $logkv $"root" (local.get $root))
    (call $logkv $"token" (local.get $id))
    (call $logkv $"has_headers" (i32.gt_u (local.get $nh) (i32.const 0)))
    (call $logkv $"body_size" (local.get $body))
    (if (local.get $nh) (then
      (drop (call $proxy_get_header_map_value (i32.const 6) $":status" (i32.const 16) (i32.const 20)))
      (call $logkvs $"status")
      (drop (call $proxy_get_header_map_value (i32.const 6) $"x-user" (i32.const 16) (i32.const 20)))
      (call $logkvs $"user")
      (drop (call $proxy_get_buffer_bytes (i32.const 4) (i32.const 0) (local.get $body) (i32.const 16) (i32.const 20)))
      (call $logkvs $"body")))
    (call $logkv $"effective" (call $proxy_set_effective_context (i32.const 2)))
    %s)
  %s`, size, onResponse, data)
}

// A request's call to a declared upstream pauses it; the answer reaches
// proxy_on_http_call_response (root context id, the call's id, the
// response's maps and body), and the guest resumes or answers the request
// from there.
func TestHTTPCallFromARequest(t *testing.T) {
	up := newCallUpstream(t)
	for _, tc := range []struct {
		name, onResponse string
		want             Outcome
		last             string
	}{
		{"resume", `(call $logkv $"continue" (call $proxy_continue_stream (i32.const 0)))`, Continue, "continue=0"},
		{"local response", `(call $logkv $"local" (call $proxy_send_local_response (i32.const 403)
      (i32.const 0) (i32.const 0) $"denied" (i32.const 0) (i32.const 0) (i32.const -1)))`, Respond, "local=0"},
		{"neither", ``, Pause, ""},
	} {
		for _, mode := range benchModes {
			t.Run(tc.name+"/"+mode.name, func(t *testing.T) {
				p := mustLoad(t, guest(t, callGuest("/check?x=1", tc.onResponse)), withUpstream("up", up.URL), mode.opt)
				_, hc, ex := newHTTP(t, p)
				out, err := hc.RequestHeaders(0, false)
				if err != nil || out != tc.want {
					t.Fatalf("RequestHeaders = %v, %v; want %v", out, err, tc.want)
				}
				want := []string{"call=0", "id=1", "root=1", "token=1", "has_headers=1", "body_size=7",
					"status=200", "user=alice", "body=ok-body", "effective=0"}
				if tc.last != "" {
					want = append(want, tc.last)
				}
				ex.wantLogs(t, want...)
				if tc.want == Respond && string(hc.LocalResponse().Body) != "denied" {
					t.Errorf("local response %+v", hc.LocalResponse())
				}
				up.mu.Lock()
				last := up.seen[len(up.seen)-1]
				up.mu.Unlock()
				if last.URL.RequestURI() != "/check?x=1" || last.Host != "auth.internal" {
					t.Errorf("upstream got %s %s (Host %s)", last.Method, last.URL, last.Host)
				}
			})
		}
	}
}

// A call to an undeclared name, or with no upstream declared at all, is
// refused with BAD_ARGUMENT; nothing is dialed.
func TestHTTPCallToUndeclaredUpstreams(t *testing.T) {
	up := newCallUpstream(t)
	data, size := callHeaders("/check")
	body := fmt.Sprintf(`
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (call $logkv $"name" (call $proxy_http_call $"nope" (i32.const 4096) (i32.const %[1]d)
      (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 1000) (i32.const 28)))
    (call $logkv $"address" (call $proxy_http_call $"%[2]s" (i32.const 4096) (i32.const %[1]d)
      (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 1000) (i32.const 28)))
    (i32.const 0))
  %[3]s`, size, up.Listener.Addr(), data)
	for name, opts := range map[string][]func(*Config){
		"other upstreams declared": {withUpstream("up", up.URL)},
		"none declared":            nil,
	} {
		t.Run(name, func(t *testing.T) {
			p := mustLoad(t, guest(t, body), opts...)
			ex := newExchange()
			if err := lifecycle(context.Background(), p, ex, 0); err != nil {
				t.Fatal(err)
			}
			ex.wantLogs(t, "name=2", "address=2")
		})
	}
	up.mu.Lock()
	defer up.mu.Unlock()
	if len(up.seen) != 0 {
		t.Errorf("the upstream got %d requests", len(up.seen))
	}
}

// A call that fails (nothing listens) is answered with no headers and no
// body; the failure is reported to the embedder.
func TestHTTPCallFailureIsAnEmptyAnswer(t *testing.T) {
	dead := httptest.NewServer(http.NotFoundHandler())
	dead.Close()
	ev := &fakeEvents{}
	p := mustLoad(t, guest(t, callGuest("/check", `(drop (call $proxy_continue_stream (i32.const 0)))`)),
		withUpstream("up", dead.URL), func(c *Config) { c.Events = ev })
	_, hc, ex := newHTTP(t, p)
	if out, err := hc.RequestHeaders(0, false); err != nil || out != Continue {
		t.Fatalf("RequestHeaders = %v, %v", out, err)
	}
	ex.wantLogs(t, "call=0", "id=1", "root=1", "token=1", "has_headers=0", "body_size=0", "effective=0")
	ev.mu.Lock()
	defer ev.mu.Unlock()
	if len(ev.calls) != 1 {
		t.Errorf("failures reported: %v", ev.calls)
	}
}

// A request makes at most MaxPerRequest calls; the next gets
// INTERNAL_FAILURE.
func TestHTTPCallsPerRequestAreCapped(t *testing.T) {
	up := newCallUpstream(t)
	data, size := callHeaders("/check")
	call := fmt.Sprintf(`(call $logkv $"call" (call $proxy_http_call $"up" (i32.const 4096) (i32.const %d)
      (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 1000) (i32.const 28)))`, size)
	p := mustLoad(t, guest(t, `
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    `+call+call+call+`
    (i32.const 0))
  `+data), withUpstream("up", up.URL), func(c *Config) { c.HTTPCalls.MaxPerRequest = 2 })
	ex := newExchange()
	if err := lifecycle(context.Background(), p, ex, 0); err != nil {
		t.Fatal(err)
	}
	ex.wantLogs(t, "call=0", "call=0", "call=10")
}

// A request that ends while its filter waits for a call stops waiting at
// once, and the call is canceled.
func TestCanceledRequestCancelsItsCalls(t *testing.T) {
	up := newCallUpstream(t)
	p := mustLoad(t, guest(t, callGuest("/slow", "")), withUpstream("up", up.URL))
	ctx, cancel := context.WithCancel(context.Background())
	_, hc, _ := newHTTPFor(t, p, ctx)
	go func() {
		<-up.slow // the call is on its way: the request ends now
		cancel()
	}()
	start := time.Now()
	_, err := hc.RequestHeaders(0, false)
	wantGuestError(t, err, ErrCanceled)
	if elapsed := time.Since(start); elapsed > 3*time.Second {
		t.Errorf("waited %v after the request ended", elapsed)
	}
	select {
	case <-up.canceled:
	case <-time.After(5 * time.Second):
		t.Error("the upstream call was not canceled")
	}
}

// Calls a request did not wait for are answered before its next callback
// if they are done by then, and canceled when the request ends.
func TestCallsTheRequestDidNotWaitFor(t *testing.T) {
	up := newCallUpstream(t)
	data, size := callHeaders("/check")
	slowData := abi.AppendHeaderMap(nil, [][2]string{{":method", "GET"}, {":path", "/slow"}, {":authority", "x"}})
	p := mustLoad(t, guest(t, fmt.Sprintf(`
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (drop (call $proxy_http_call $"up" (i32.const 4096) (i32.const %d)
      (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 1000) (i32.const 28)))
    (drop (call $proxy_http_call $"up" (i32.const 5120) (i32.const %d)
      (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 5000) (i32.const 28)))
    (i32.const 0))
  (func (export "proxy_on_http_call_response") (param i32) (param $id i32) (param i32 i32 i32)
    (call $logkv $"answer" (local.get $id)))
  (func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32)
    (call $log $"response headers")
    (i32.const 0))
  %s
  (data (i32.const 5120) "%s")`, size, len(slowData), data, watBytes(slowData))), withUpstream("up", up.URL))
	_, hc, ex := newHTTP(t, p)
	if out, err := hc.RequestHeaders(0, false); err != nil || out != Continue {
		t.Fatalf("RequestHeaders = %v, %v", out, err)
	}
	// The first call's answer comes while the request goes on.
	deadline := time.Now().Add(5 * time.Second)
	for len(hc.calls.results) == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if _, err := hc.ResponseHeaders(1, true); err != nil {
		t.Fatal(err)
	}
	ex.wantLogs(t, "answer=1", "response headers")
	select {
	case <-up.slow:
	case <-time.After(5 * time.Second):
		t.Fatal("the slow call never reached the upstream")
	}
	if err := hc.Finish(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-up.canceled:
	case <-time.After(5 * time.Second):
		t.Error("the call in flight at the end of the request was not canceled")
	}
}

// The background instance makes calls too (from its timer), and gets their
// answers; the root context of a request's instance cannot.
func TestHTTPCallFromTheBackground(t *testing.T) {
	up := newCallUpstream(t)
	data, size := callHeaders("/check")
	call := fmt.Sprintf(`(call $proxy_http_call $"up" (i32.const 4096) (i32.const %d)
      (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 1000) (i32.const 28))`, size)
	bgLog, loadLog := newExchange(), newExchange()
	mustLoad(t, guest(t, `
  (global $calls (mut i32) (i32.const 0))
  (func (export "proxy_on_configure") (param i32 i32) (result i32)
    (call $logkv $"configure_call" `+call+`)
    (drop (call $proxy_set_tick_period_milliseconds (i32.const 20)))
    (i32.const 1))
  (func (export "proxy_on_tick") (param i32)
    (if (i32.eqz (global.get $calls)) (then
      (global.set $calls (i32.const 1))
      (call $logkv $"tick_call" `+call+`))))
  (func (export "proxy_on_http_call_response") (param $root i32) (param $id i32) (param i32) (param $body i32) (param i32)
    (call $logkv $"root" (local.get $root))
    (drop (call $proxy_get_buffer_bytes (i32.const 4) (i32.const 0) (local.get $body) (i32.const 16) (i32.const 20)))
    (call $logkvs $"body"))
  `+data), withUpstream("up", up.URL), withBackground(bgLog, &fakeEvents{}), func(c *Config) {
		c.LoadLog = loadLog
	})
	loadLog.wantLogs(t, "configure_call=10")
	msgs := waitForLog(t, bgLog, "the call's answer", func(msgs []string) bool { return slices.Contains(msgs, "body=ok-body") })
	if !slices.Contains(msgs, "tick_call=0") || !slices.Contains(msgs, "root=1") {
		t.Errorf("background logged %q", msgs)
	}
}

// The background instance has at most MaxPerRequest calls in flight: one
// more is refused (INTERNAL_FAILURE) while they run, and allowed once
// their answers are in.
func TestBackgroundCallsInFlightAreCapped(t *testing.T) {
	up := newCallUpstream(t)
	data, size := callHeaders("/slow") // answered when the 200 ms timeout ends it
	call := fmt.Sprintf(`(call $proxy_http_call $"up" (i32.const 4096) (i32.const %d)
      (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 200) (i32.const 28))`, size)
	bgLog := newExchange()
	mustLoad(t, guest(t, `
  (global $ticks (mut i32) (i32.const 0))
  (global $answers (mut i32) (i32.const 0))
  (func (export "proxy_on_configure") (param i32 i32) (result i32)
    (drop (call $proxy_set_tick_period_milliseconds (i32.const 20)))
    (i32.const 1))
  (func (export "proxy_on_tick") (param i32)
    (global.set $ticks (i32.add (global.get $ticks) (i32.const 1)))
    (if (i32.eq (global.get $ticks) (i32.const 1)) (then
      (call $logkv $"call" `+call+`)
      (call $logkv $"call" `+call+`)
      (call $logkv $"call" `+call+`)))
    (if (i32.eq (global.get $answers) (i32.const 2)) (then
      (global.set $answers (i32.const 3))
      (call $logkv $"later" `+call+`))))
  (func (export "proxy_on_http_call_response") (param i32 i32 i32 i32 i32)
    (global.set $answers (i32.add (global.get $answers) (i32.const 1))))
  `+data), withUpstream("up", up.URL), withBackground(bgLog, &fakeEvents{}), func(c *Config) {
		c.HTTPCalls.MaxPerRequest = 2
	})
	msgs := waitForLog(t, bgLog, "a call after the first two were answered", func(msgs []string) bool {
		return slices.ContainsFunc(msgs, func(m string) bool { return strings.HasPrefix(m, "later=") })
	})
	if want := []string{"call=0", "call=0", "call=10", "later=0"}; !slices.Equal(msgs[:min(4, len(msgs))], want) {
		t.Errorf("background logged %q, want %q", msgs, want)
	}
}

// A metric a filter defines outlives every instance; its operations follow
// the metric's type.
func TestMetricsAccumulateAcrossRequests(t *testing.T) {
	st := NewSharedState(StateLimits{})
	module := guest(t, `
  (global $m (mut i32) (i32.const 0))
  (func (export "proxy_on_configure") (param i32 i32) (result i32)
    (drop (call $proxy_define_metric (i32.const 0) $"requests" (i32.const 28)))
    (global.set $m (i32.load (i32.const 28)))
    (i32.const 1))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (call $logkv $"inc" (call $proxy_increment_metric (global.get $m) (i64.const 1)))
    (call $logkv $"down" (call $proxy_increment_metric (global.get $m) (i64.const -1)))
    (call $logkv $"get" (call $proxy_get_metric (global.get $m) (i32.const 32)))
    (call $logkv $"value" (i32.load (i32.const 32)))
    (call $logkv $"bad_type" (call $proxy_define_metric (i32.const 3) $"x" (i32.const 28)))
    (call $logkv $"unknown" (call $proxy_get_metric (i32.const 99999) (i32.const 32)))
    (i32.const 0))`)
	for _, mode := range benchModes {
		p := mustLoad(t, module, withState(st), withName("counter-"+mode.name), mode.opt)
		for i := 1; i <= 3; i++ {
			ex := newExchange()
			if err := lifecycle(context.Background(), p, ex, 0); err != nil {
				t.Fatal(err)
			}
			ex.wantLogs(t, "inc=0", "down=2", "get=0", fmt.Sprintf("value=%d", i), "bad_type=2", "unknown=1")
		}
	}
	got := map[string]int64{}
	for _, m := range st.Metrics() {
		got[m.Owner+"/"+m.Name] = m.Value
	}
	for _, mode := range benchModes {
		if v := got[MetricOwner(config(nil).VMID, "counter-"+mode.name)+"/requests"]; v != 3 {
			t.Errorf("%s: exported value %d, want 3 (all: %v)", mode.name, v, got)
		}
	}
}

// Envoy's compress and uncompress foreign functions round-trip; unknown
// functions, corrupt input and output past max_body_size are refused.
func TestForeignFunctions(t *testing.T) {
	var bomb bytes.Buffer
	w := zlib.NewWriter(&bomb)
	_, _ = w.Write(make([]byte, 4*testLimits.MaxBodySize))
	_ = w.Close()
	p := mustLoad(t, guest(t, fmt.Sprintf(`
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (call $logkv $"compress" (call $proxy_call_foreign_function $"compress" $"hello hello hello hello" (i32.const 16) (i32.const 20)))
    (call $logkv $"uncompress" (call $proxy_call_foreign_function $"uncompress"
      (i32.load (i32.const 16)) (i32.load (i32.const 20)) (i32.const 16) (i32.const 20)))
    (call $logkvs $"out")
    (call $logkv $"missing" (call $proxy_call_foreign_function $"nope" $"x" (i32.const 16) (i32.const 20)))
    (call $logkv $"corrupt" (call $proxy_call_foreign_function $"uncompress" $"garbage" (i32.const 16) (i32.const 20)))
    (call $logkv $"bomb" (call $proxy_call_foreign_function $"uncompress" (i32.const 4096) (i32.const %d) (i32.const 16) (i32.const 20)))
    (i32.const 0))
  %s`, bomb.Len(), dataAt(bomb.Bytes()))))
	ex := newExchange()
	if err := lifecycle(context.Background(), p, ex, 0); err != nil {
		t.Fatal(err)
	}
	ex.wantLogs(t, "compress=0", "uncompress=0", "out=hello hello hello hello", "missing=1", "corrupt=3", "bomb=2")
}

// A request that is ending (proxy_on_log) makes no calls: nothing would be
// left to receive the answer.
func TestNoHTTPCallsFromAnEndingRequest(t *testing.T) {
	up := newCallUpstream(t)
	data, size := callHeaders("/check")
	p := mustLoad(t, guest(t, fmt.Sprintf(`
  (func (export "proxy_on_log") (param i32)
    (call $logkv $"call" (call $proxy_http_call $"up" (i32.const 4096) (i32.const %d)
      (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 1000) (i32.const 28))))
  %s`, size, data)), withUpstream("up", up.URL))
	ex := newExchange()
	if err := lifecycle(context.Background(), p, ex, 0); err != nil {
		t.Fatal(err)
	}
	ex.wantLogs(t, "call=10")
}

// The store's errors reach the guest as the statuses SDKs expect: missing
// and empty are normal outcomes, a lost race is CAS_MISMATCH, and sizes
// and quotas (which have no status of their own) are BAD_ARGUMENT.
func TestStateErrorsMapToProxyWasmStatuses(t *testing.T) {
	for err, want := range map[error]abi.Status{
		nil:                  abi.StatusOK,
		state.ErrNotFound:    abi.StatusNotFound,
		state.ErrEmpty:       abi.StatusEmpty,
		state.ErrCASMismatch: abi.StatusCASMismatch,
		state.ErrTooLarge:    abi.StatusBadArgument,
		state.ErrQuota:       abi.StatusBadArgument,
		state.ErrBadArgument: abi.StatusBadArgument,
		fmt.Errorf("key %q: %w", "k", state.ErrQuota): abi.StatusBadArgument,
	} {
		if got := stateStatus(err); got != want {
			t.Errorf("stateStatus(%v) = %v, want %v", err, got, want)
		}
	}
}
