package filters

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/sluice-edge/sluice/abi"
	"github.com/sluice-edge/sluice/tests/guestbuild"
)

// streamCallbacks lists each callback the host drives for a request, with
// how to drive it on an HTTP context.
var streamCallbacks = []struct {
	cb  abi.Callback
	sig string // parameters and result in WebAssembly text
	run func(context.Context, *HTTPContext) error
}{
	{abi.OnRequestHeaders, "(param i32 i32 i32) (result i32)", func(ctx context.Context, hc *HTTPContext) error {
		_, err := hc.RequestHeaders(1, false)
		return err
	}},
	{abi.OnRequestBody, "(param i32 i32 i32) (result i32)", func(ctx context.Context, hc *HTTPContext) error {
		_, err := hc.RequestBody([]byte("chunk"), true)
		return err
	}},
	{abi.OnRequestTrailers, "(param i32 i32) (result i32)", func(ctx context.Context, hc *HTTPContext) error {
		_, err := hc.RequestTrailers(1)
		return err
	}},
	{abi.OnResponseHeaders, "(param i32 i32 i32) (result i32)", func(ctx context.Context, hc *HTTPContext) error {
		_, err := hc.ResponseHeaders(1, false)
		return err
	}},
	{abi.OnResponseBody, "(param i32 i32 i32) (result i32)", func(ctx context.Context, hc *HTTPContext) error {
		_, err := hc.ResponseBody([]byte("chunk"), true)
		return err
	}},
	{abi.OnResponseTrailers, "(param i32 i32) (result i32)", func(ctx context.Context, hc *HTTPContext) error {
		_, err := hc.ResponseTrailers(1)
		return err
	}},
	{abi.OnDone, "(param i32) (result i32)", func(ctx context.Context, hc *HTTPContext) error { return hc.Finish() }},
	{abi.OnLog, "(param i32)", func(ctx context.Context, hc *HTTPContext) error { return hc.Finish() }},
	{abi.OnDelete, "(param i32)", func(ctx context.Context, hc *HTTPContext) error { return hc.Finish() }},
}

// failingIn returns a guest whose callback cb runs code and whose other
// callbacks do nothing.
func failingIn(cb abi.Callback, code string) string {
	var b strings.Builder
	for _, c := range streamCallbacks {
		body := ""
		if strings.Contains(c.sig, "result") {
			body = "(i32.const 0)"
			if c.cb == abi.OnDone {
				body = "(i32.const 1)"
			}
		}
		if c.cb == cb {
			body = code + " " + body
		}
		fmt.Fprintf(&b, "  (func (export %q) %s %s)\n", c.cb, c.sig, body)
	}
	return b.String()
}

// wantUnusable checks that an instance which failed with err keeps
// returning that same error, without calling the guest.
func wantUnusable(t *testing.T, inst *Instance, hc *HTTPContext, err error) {
	t.Helper()
	ctx := context.Background()
	if got := inst.Err(); got != err {
		t.Errorf("Err() = %v, want the failure %v", got, err)
	}
	if _, got := hc.RequestHeaders(0, true); got != err {
		t.Errorf("RequestHeaders after the failure = %v, want %v", got, err)
	}
	if _, got := hc.ResponseBody(nil, true); got != err {
		t.Errorf("ResponseBody after the failure = %v, want %v", got, err)
	}
	if got := hc.Finish(); got != err {
		t.Errorf("Finish after the failure = %v, want %v", got, err)
	}
	if _, got := inst.NewHTTPContext(ctx, newExchange()); got != err {
		t.Errorf("NewHTTPContext after the failure = %v, want %v", got, err)
	}
	if got := inst.Violation(errors.New("late")); got != err {
		t.Errorf("Violation after the failure = %v, want %v", got, err)
	}
}

// H1: an infinite loop in any callback is stopped at the time budget, and
// the instance is unusable afterwards.
func TestLoopingCallbacksTimeOut(t *testing.T) {
	const budget = 50 * time.Millisecond
	for _, c := range streamCallbacks {
		t.Run(string(c.cb), func(t *testing.T) {
			p := mustLoad(t, guest(t, failingIn(c.cb, "(call $spin)")), withTimeout(budget))
			inst, hc, _ := newHTTP(t, p)
			start := time.Now()
			err := c.run(context.Background(), hc)
			elapsed := time.Since(start)
			ge := wantGuestError(t, err, ErrTimeout)
			if ge.Callback != string(c.cb) {
				t.Errorf("failed callback %q, want %q", ge.Callback, c.cb)
			}
			if ge.Plugin != "test-filter" || ge.Reason() != "timeout" {
				t.Errorf("GuestError names plugin %q, reason %q", ge.Plugin, ge.Reason())
			}
			if elapsed < budget || elapsed > 3*time.Second {
				t.Errorf("the call returned after %v with a %v budget", elapsed, budget)
			}
			wantUnusable(t, inst, hc, err)
		})
	}
}

// The budget is per call, not per request: many calls that each use a good
// part of it all succeed, though together they run past it.
func TestTimeoutIsPerCall(t *testing.T) {
	const budget = 500 * time.Millisecond
	p := mustLoad(t, guest(t, `
  (func (export "proxy_on_response_body") (param i32 i32 i32) (result i32)
    ;; Sleep 80ms with poll_oneoff: a relative monotonic clock subscription.
    (i32.store (i32.const 4112) (i32.const 1))
    (i64.store (i32.const 4120) (i64.const 80000000))
    (drop (call $poll_oneoff (i32.const 4096) (i32.const 4200) (i32.const 1) (i32.const 4300)))
    (i32.const 0))`), withTimeout(budget))
	_, hc, _ := newHTTP(t, p)
	start := time.Now()
	for i := range 8 {
		if _, err := hc.ResponseBody([]byte("x"), i == 7); err != nil {
			t.Fatalf("chunk %d: %v", i, err)
		}
		hc.TakeResponseBody()
	}
	if elapsed := time.Since(start); elapsed < budget {
		t.Errorf("eight 80ms sleeps took %v: the guest did not sleep, the test proves nothing", elapsed)
	}
}

// H5: memory.grow fails inside the guest at memory_limit (rounded down to
// whole pages), and the out-of-bounds store that follows is reported as the
// memory limit.
func TestMemoryLimit(t *testing.T) {
	module := guest(t, `
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (call $logkv $"grow1" (memory.grow (i32.const 1)))
    (call $logkv $"grow2" (memory.grow (i32.const 1)))
    (call $logkv $"grow100" (memory.grow (i32.const 100)))
    (call $logkv $"pages" (memory.size))
    (i32.store (i32.const 131072) (i32.const 1))
    (call $log $"stored past the limit")
    (i32.const 0))`)
	for _, limit := range []uint64{2 << 16, 2<<16 + 40000} {
		t.Run(fmt.Sprint(limit), func(t *testing.T) {
			p := mustLoad(t, module, func(c *Config) { c.Limits.MemoryLimit = limit })
			inst, hc, ex := newHTTP(t, p)
			_, err := hc.RequestHeaders(0, true)
			ge := wantGuestError(t, err, ErrMemoryLimit)
			if ge.Reason() != "memory_limit" {
				t.Errorf("Reason() = %q", ge.Reason())
			}
			ex.wantLogs(t, "grow1=1", "grow2=4294967295", "grow100=4294967295", "pages=2")
			if size := inst.guest.Memory().Size(); size != 2<<16 {
				t.Errorf("guest memory is %d bytes, limit %d", size, limit)
			}
			wantUnusable(t, inst, hc, err)
		})
	}
}

// An out-of-bounds access with memory far from the limit is a plain trap.
func TestOutOfBoundsBelowTheLimitIsATrap(t *testing.T) {
	p := mustLoad(t, guest(t, `
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (i32.store (i32.const 65536) (i32.const 1))
    (i32.const 0))`))
	_, hc, _ := newHTTP(t, p)
	_, err := hc.RequestHeaders(0, true)
	wantGuestError(t, err, ErrTrap)
	wantErrorContaining(t, err, "out of bounds memory access")
}

// H4: unreachable in any callback is a trap.
func TestTrapsInCallbacks(t *testing.T) {
	for _, c := range streamCallbacks {
		t.Run(string(c.cb), func(t *testing.T) {
			p := mustLoad(t, guest(t, failingIn(c.cb, "(unreachable)")))
			inst, hc, _ := newHTTP(t, p)
			err := c.run(context.Background(), hc)
			ge := wantGuestError(t, err, ErrTrap)
			if ge.Callback != string(c.cb) || ge.Reason() != "trap" {
				t.Errorf("GuestError callback %q reason %q", ge.Callback, ge.Reason())
			}
			wantErrorContaining(t, err, "unreachable")
			wantUnusable(t, inst, hc, err)
		})
	}
}

// H7: unbounded recursion is a stack-overflow trap, and the host does not
// spend memory without bound on the guest's stack.
func TestUnboundedRecursionTraps(t *testing.T) {
	p := mustLoad(t, guest(t, `
  (func $recurse (param $n i64) (result i64)
    (local i64 i64 i64 i64 i64 i64 i64 i64)
    (i64.add (call $recurse (i64.add (local.get $n) (i64.const 1))) (i64.const 1)))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (drop (call $recurse (i64.const 0)))
    (i32.const 0))`), withTimeout(time.Minute)) // growing the stack takes ~2s under -race
	_, hc, _ := newHTTP(t, p)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	start := time.Now()
	_, err := hc.RequestHeaders(0, true)
	runtime.ReadMemStats(&after)
	wantGuestError(t, err, ErrTrap)
	wantErrorContaining(t, err, "stack overflow")
	t.Logf("stack overflow after %v, %d MiB allocated", time.Since(start), (after.TotalAlloc-before.TotalAlloc)>>20)
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 256<<20 {
		t.Errorf("the recursion cost the host %d MiB", alloc>>20)
	}
}

// H27: proc_exit with any code, the runtime's reserved ones included, is
// the guest exiting, never a timeout.
func TestProcExitIsAnExitWhateverTheCode(t *testing.T) {
	p := mustLoad(t, guest(t, `
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (call $proc_exit (local.get 1))
    (i32.const 0))`), withTimeout(10*time.Second))
	for _, code := range []uint32{0, 1, 0xefffffff, 0xffffffff} {
		t.Run(fmt.Sprintf("%#x", code), func(t *testing.T) {
			inst, hc, _ := newHTTP(t, p)
			start := time.Now()
			_, err := hc.RequestHeaders(int(code), true)
			ge := wantGuestError(t, err, ErrExit)
			if errors.Is(err, ErrTimeout) || errors.Is(err, ErrCanceled) {
				t.Errorf("exit %#x passes for a timeout or cancellation: %v", code, err)
			}
			var exit *abi.ExitError
			if !errors.As(err, &exit) || exit.Code != code {
				t.Errorf("error %v does not carry exit code %#x", err, code)
			}
			if ge.Reason() != "exit" {
				t.Errorf("Reason() = %q", ge.Reason())
			}
			if elapsed := time.Since(start); elapsed > time.Second {
				t.Errorf("exiting took %v", elapsed)
			}
			wantUnusable(t, inst, hc, err)
		})
	}
}

// H39: the request's context ending stops the call, whatever the budget.
func TestCanceledRequestStopsTheCall(t *testing.T) {
	p := mustLoad(t, guest(t, failingIn(abi.OnRequestHeaders, "(call $spin)")), withTimeout(time.Minute))
	// The HTTP context lives in the request's context; each case ends that
	// context at a different time.
	for _, tc := range []struct {
		name string
		end  func(cancel context.CancelFunc)
	}{
		{"canceled during the call", func(cancel context.CancelFunc) { time.AfterFunc(30*time.Millisecond, cancel) }},
		{"canceled before the call", func(cancel context.CancelFunc) { cancel() }},
		{"request deadline", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			if tc.end == nil {
				ctx, cancel = context.WithTimeout(context.Background(), 100*time.Millisecond)
			}
			defer cancel()
			inst, hc, _ := newHTTPFor(t, p, ctx)
			if tc.end != nil {
				tc.end(cancel)
			}
			start := time.Now()
			_, err := hc.RequestHeaders(0, true)
			ge := wantGuestError(t, err, ErrCanceled)
			if errors.Is(err, ErrTimeout) || ge.Reason() != "canceled" {
				t.Errorf("cancellation reported as %v (%s)", err, ge.Reason())
			}
			if elapsed := time.Since(start); elapsed > 3*time.Second {
				t.Errorf("the call ran %v after its request ended", elapsed)
			}
			wantUnusable(t, inst, hc, err)
		})
	}
}

// A call that fails before the guest runs is traced to the callback it was
// for, not to the one the instance ran before it.
func TestCanceledCallNamesItsOwnCallback(t *testing.T) {
	p := mustLoad(t, guest(t, `
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) (i32.const 0))
  (func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32) (i32.const 0))`))
	for range 20 {
		ctx, cancel := context.WithCancel(context.Background())
		_, hc, _ := newHTTPFor(t, p, ctx)
		if _, err := hc.RequestHeaders(0, false); err != nil {
			t.Fatal(err)
		}
		cancel()
		_, err := hc.ResponseHeaders(0, true)
		if ge := wantGuestError(t, err, ErrCanceled); ge.Callback != string(abi.OnResponseHeaders) {
			t.Fatalf("failure traced to %q, want proxy_on_response_headers", ge.Callback)
		}
	}
}

// cancelOnGuestLog ends a context when the guest first logs, so a test
// knows the guest is running when its context ends.
type cancelOnGuestLog struct{ cancel context.CancelFunc }

func (c cancelOnGuestLog) GuestLog(abi.LogLevel, []byte) { c.cancel() }
func (cancelOnGuestLog) GuestOutput(uint32, []byte)      {}
func (cancelOnGuestLog) LogLevel() abi.LogLevel          { return abi.LogTrace }

// A canceled context also stops a filter from starting: Load returns
// rather than wait out the (long) budget. The context ends once
// proxy_on_configure runs, not after a fixed time, which a loaded machine
// could spend compiling.
func TestCanceledContextStopsStartUp(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cfg := config(guest(t, `
  (func (export "proxy_on_configure") (param i32 i32) (result i32)
    (call $log $"configuring") (call $spin) (i32.const 1))`), withTimeout(time.Minute),
		func(c *Config) { c.LoadLog = cancelOnGuestLog{cancel} })
	start := time.Now()
	p, err := Load(ctx, cfg)
	if err == nil {
		_ = p.Close(context.Background())
	}
	ge := wantGuestError(t, err, ErrCanceled)
	if ge.Callback != string(abi.OnConfigure) {
		t.Errorf("failed callback %q, want proxy_on_configure", ge.Callback)
	}
	if elapsed := time.Since(start); elapsed > 3*time.Second {
		t.Errorf("Load ran %v after its context ended", elapsed)
	}
}

// H19: a stream callback's return value must be an action; the pause
// values of Envoy's SDKs (1 to 4) pause, anything else is an ABI violation.
func TestActionValues(t *testing.T) {
	p := mustLoad(t, guest(t, `
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) (local.get 1))`))
	for _, tc := range []struct {
		raw  uint32
		want Outcome
		err  error
	}{
		{0, Continue, nil},
		{1, Pause, nil},
		{2, Pause, nil},
		{3, Pause, nil},
		{4, Pause, nil},
		{5, 0, ErrABIViolation},
		{7, 0, ErrABIViolation},
		{0xffffffff, 0, ErrABIViolation},
	} {
		t.Run(fmt.Sprint(tc.raw), func(t *testing.T) {
			inst, hc, _ := newHTTP(t, p)
			out, err := hc.RequestHeaders(int(tc.raw), true)
			if tc.err == nil {
				if err != nil || out != tc.want {
					t.Fatalf("RequestHeaders = %v, %v; want %v", out, err, tc.want)
				}
				return
			}
			wantGuestError(t, err, tc.err)
			wantErrorContaining(t, err, fmt.Sprintf("returned %d, which is no Proxy-Wasm action", tc.raw))
			wantUnusable(t, inst, hc, err)
		})
	}
}

// H26: a guest asking poll_oneoff for an hour's sleep is stopped at its
// time budget, and the call still counts as a timeout.
func TestPollOneoffSleepIsCutAtTheBudget(t *testing.T) {
	const budget = 100 * time.Millisecond
	for _, tc := range []struct{ name, after string }{
		{"returning after the sleep", ""},
		{"sleeping again and again", "(br $again)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := mustLoad(t, guest(t, `
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    ;; One subscription: a relative monotonic clock, one hour.
    (i64.store (i32.const 4096) (i64.const 42))
    (i32.store8 (i32.const 4104) (i32.const 0))
    (i32.store (i32.const 4112) (i32.const 1))
    (i64.store (i32.const 4120) (i64.const 3600000000000))
    (i64.store (i32.const 4128) (i64.const 0))
    (i32.store16 (i32.const 4136) (i32.const 0))
    (loop $again
      (call $logkv $"poll" (call $poll_oneoff (i32.const 4096) (i32.const 4200) (i32.const 1) (i32.const 4300)))
      `+tc.after+`)
    (i32.const 0))`), withTimeout(budget))
			_, hc, _ := newHTTP(t, p)
			start := time.Now()
			_, err := hc.RequestHeaders(0, true)
			elapsed := time.Since(start)
			wantGuestError(t, err, ErrTimeout)
			if elapsed < budget || elapsed > 3*time.Second {
				t.Errorf("the call returned after %v with a %v budget", elapsed, budget)
			}
		})
	}
}

// The same holds while an instance starts: a start function that sleeps
// through its budget and returns fails the load.
func TestPollOneoffInStartFunctionTimesOut(t *testing.T) {
	start := time.Now()
	err := loadErr(t, guest(t, `
  (start $sleep)
  (func $sleep
    (i32.store (i32.const 4112) (i32.const 1))
    (i64.store (i32.const 4120) (i64.const 3600000000000))
    (drop (call $poll_oneoff (i32.const 4096) (i32.const 4200) (i32.const 1) (i32.const 4300))))`),
		withTimeout(100*time.Millisecond))
	wantGuestError(t, err, ErrTimeout)
	if elapsed := time.Since(start); elapsed > 3*time.Second {
		t.Errorf("Load returned after %v with a 100ms budget", elapsed)
	}
}

// H12, H11: an allocator that calls back into the host breaks the ABI; one
// that traps fails the call it allocates for; one that returns 0 makes the
// host call fail with INVALID_MEMORY_ACCESS and nothing worse.
func TestMisbehavingAllocators(t *testing.T) {
	module := func(alloc string) string {
		src := guestSrc("0_2_1", `
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (call $logkv $"status" (call $proxy_get_property $"plugin_name" (i32.const 16) (i32.const 20)))
    (i32.const 0))`)
		// Swap the prelude's allocator for alloc.
		src = strings.Replace(src, `(func (export "proxy_on_memory_allocate")`, `(func $unused_allocator`, 1)
		return strings.Replace(src, "(func $spin", alloc+"\n  (func $spin", 1)
	}
	for _, tc := range []struct {
		name, alloc string
		kind        error
		logs        []string
	}{{
		name: "re-enters the host",
		alloc: `(func (export "proxy_on_memory_allocate") (param i32) (result i32)
    (drop (call $proxy_log (i32.const 2) (i32.const 0) (i32.const 0)))
    (i32.const 20000))`,
		kind: ErrABIViolation,
	}, {
		name:  "traps",
		alloc: `(func (export "proxy_on_memory_allocate") (param i32) (result i32) (unreachable))`,
		kind:  ErrABIViolation,
	}, {
		name:  "returns 0",
		alloc: `(func (export "proxy_on_memory_allocate") (param i32) (result i32) (i32.const 0))`,
		logs:  []string{"status=6"},
	}, {
		name:  "returns memory out of bounds",
		alloc: `(func (export "proxy_on_memory_allocate") (param i32) (result i32) (i32.const 65533))`,
		logs:  []string{"status=6"},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			p := mustLoad(t, guestbuild.WATText(t, module(tc.alloc)))
			_, hc, ex := newHTTP(t, p)
			_, err := hc.RequestHeaders(0, true)
			if tc.kind == nil {
				if err != nil {
					t.Fatal(err)
				}
				ex.wantLogs(t, tc.logs...)
				return
			}
			wantGuestError(t, err, tc.kind)
			wantErrorContaining(t, err, "memory allocator")
		})
	}
}

// H23: a panic in the host (here, the embedder's Exchange) is recovered and
// reported as the host's fault, not the guest's.
func TestHostPanicIsRecovered(t *testing.T) {
	p := mustLoad(t, guest(t, `
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (drop (call $proxy_get_property $"request.path" (i32.const 16) (i32.const 20)))
    (i32.const 0))`))
	inst, hc, ex := newHTTP(t, p)
	ex.panicOn = "request.path"
	_, err := hc.RequestHeaders(0, true)
	ge := wantGuestError(t, err, ErrHostPanic)
	if ge.Reason() != "host_panic" {
		t.Errorf("Reason() = %q", ge.Reason())
	}
	wantErrorContaining(t, err, "proxy_get_property", "simulated host bug")
	var hp *abi.HostPanic
	if !errors.As(err, &hp) || len(hp.Stack) == 0 {
		t.Errorf("error %v does not carry the host's stack", err)
	}
	wantUnusable(t, inst, hc, err)
}

// The embedder can end an instance for an ABI violation it detected; the
// error names the callback that ran last.
func TestViolationFromTheEmbedder(t *testing.T) {
	p := mustLoad(t, guest(t, `
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) (i32.const 1))`))
	inst, hc, _ := newHTTP(t, p)
	if out, err := hc.RequestHeaders(0, true); err != nil || out != Pause {
		t.Fatalf("RequestHeaders = %v, %v; want pause", out, err)
	}
	cause := errors.New("paused with nothing pending")
	err := inst.Violation(cause)
	ge := wantGuestError(t, err, ErrABIViolation)
	if !errors.Is(err, cause) || ge.Callback != string(abi.OnRequestHeaders) {
		t.Errorf("violation %v: want cause %v in proxy_on_request_headers", err, cause)
	}
	wantUnusable(t, inst, hc, err)
}

// A closed instance fails its next call instead of running the guest: a
// guest running on a closed instance could still edit the request.
func TestCallsOnAClosedInstanceDoNotRunTheGuest(t *testing.T) {
	p := mustLoad(t, guest(t, `
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) (call $log $"ran") (i32.const 0))`))
	inst, hc, ex := newHTTP(t, p)
	inst.Close(context.Background())
	inst.Close(context.Background()) // twice is fine
	_, err := hc.RequestHeaders(0, true)
	wantGuestError(t, err, ErrCanceled)
	ex.wantLogs(t)
	wantUnusable(t, inst, hc, err)
}

// Closing an instance, or its whole plugin, while a call runs stops that
// call; it is reported as the host's doing, not a guest trap.
func TestClosingDuringACallStopsIt(t *testing.T) {
	for _, tc := range []struct {
		name  string
		close func(*Plugin, *Instance)
	}{
		{"instance", func(_ *Plugin, inst *Instance) { inst.Close(context.Background()) }},
		{"plugin", func(p *Plugin, _ *Instance) { _ = p.Close(context.Background()) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := mustLoad(t, guest(t, failingIn(abi.OnRequestHeaders, "(call $spin)")), withTimeout(time.Minute))
			inst, hc, _ := newHTTP(t, p)
			time.AfterFunc(30*time.Millisecond, func() { tc.close(p, inst) })
			start := time.Now()
			_, err := hc.RequestHeaders(0, true)
			wantGuestError(t, err, ErrCanceled)
			if elapsed := time.Since(start); elapsed > 3*time.Second {
				t.Errorf("the call ran %v after the close", elapsed)
			}
			if _, err := p.NewInstance(context.Background(), newExchange()); tc.name == "plugin" && err == nil {
				t.Error("a closed plugin made a new instance")
			}
		})
	}
}

func TestGuestErrorFormatting(t *testing.T) {
	cause := errors.New("wasm stack trace")
	for _, tc := range []struct {
		err    *GuestError
		text   string
		reason string
	}{
		{&GuestError{Plugin: "p", Callback: "cb", Kind: ErrTimeout, Err: cause},
			`wasm filter "p": cb: time budget exceeded: wasm stack trace`, "timeout"},
		{&GuestError{Plugin: "p", Callback: "cb", Kind: ErrRejected},
			`wasm filter "p": cb: filter rejected its configuration`, "rejected"},
		{&GuestError{Kind: ErrMemoryLimit}, "", "memory_limit"},
		{&GuestError{Kind: ErrTrap}, "", "trap"},
		{&GuestError{Kind: ErrExit}, "", "exit"},
		{&GuestError{Kind: ErrABIViolation}, "", "abi_violation"},
		{&GuestError{Kind: ErrCanceled}, "", "canceled"},
		{&GuestError{Kind: ErrHostPanic}, "", "host_panic"},
		{&GuestError{Kind: ErrBodyTooLarge}, "", "body_too_large"},
		{&GuestError{Kind: ErrInstantiate}, "", "instantiate"},
		{&GuestError{Kind: errors.New("other")}, "", "error"},
	} {
		if tc.text != "" && tc.err.Error() != tc.text {
			t.Errorf("Error() = %q, want %q", tc.err.Error(), tc.text)
		}
		if got := tc.err.Reason(); got != tc.reason {
			t.Errorf("Reason() of %v = %q, want %q", tc.err.Kind, got, tc.reason)
		}
	}
	err := error(&GuestError{Kind: ErrTrap, Err: cause})
	if !errors.Is(err, ErrTrap) || !errors.Is(err, cause) || errors.Is(err, ErrTimeout) {
		t.Error("errors.Is does not match exactly the kind and the cause")
	}
}

// A budget timer that fires just as its call returns (its function runs
// after the call disarmed it) does not end the scope: the next call would
// fail for the previous one's budget.
func TestLateBudgetTimerSparesTheNextCall(t *testing.T) {
	s := newCallScope(context.Background(), nil, nil)
	defer s.end()
	s.arm(time.Hour)
	s.disarm()
	s.expire() // the late timer
	if s.ctx.Err() != nil || s.expired.Load() {
		t.Fatal("a timer firing after its call ended the scope")
	}
	s.arm(time.Hour)
	s.expire() // on time
	if s.ctx.Err() == nil || !s.expired.Load() {
		t.Fatal("a timer firing during its call did not end the scope")
	}
}
