package sdktest

import (
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/sluice-edge/sluice/sdk"
	"github.com/sluice-edge/sluice/sdk/internal/abi"
)

// waiter is a filter whose request blocks until release is closed.
type waiter struct {
	started chan<- struct{}
	release <-chan struct{}
}

func (w waiter) OnRequestHeaders(s *sdk.Stream, _ bool) sdk.Action {
	w.started <- struct{}{}
	<-w.release
	return sdk.Continue
}

// Two suites run at the same time, each over its own emulated host: each
// one's request waits until the other's has started, which would deadlock
// if sdktest ran them one at a time.
func TestSuitesRunInParallel(t *testing.T) {
	aStarted, bStarted := make(chan struct{}, 1), make(chan struct{}, 1)
	suite := func(started chan<- struct{}, other <-chan struct{}) Suite {
		release := make(chan struct{})
		go func() {
			select {
			case <-other:
			case <-time.After(10 * time.Second):
			}
			close(release)
		}()
		return Suite{
			Configure: func(*sdk.Plugin) (sdk.NewFilter, error) {
				return func() sdk.Filter { return waiter{started, release} }, nil
			},
			Cases: []Case{{Name: "waits", Check: func(t *testing.T, r *Result) {
				if r.Upstream == nil {
					t.Error("no upstream request")
				}
			}}},
		}
	}
	begin := time.Now()
	t.Run("group", func(t *testing.T) {
		t.Run("a", func(t *testing.T) { t.Parallel(); Run(t, suite(aStarted, bStarted)) })
		t.Run("b", func(t *testing.T) { t.Parallel(); Run(t, suite(bStarted, aStarted)) })
	})
	if elapsed := time.Since(begin); elapsed > 5*time.Second {
		t.Errorf("the suites took %v: they did not run at the same time", elapsed)
	}
}

// pauser pauses the request headers of a bodiless request and never
// resumes.
type pauser struct{}

func (pauser) OnRequestHeaders(*sdk.Stream, bool) sdk.Action { return sdk.Pause }

func TestPauseWithNothingToResumeIsAnError(t *testing.T) {
	e, err := configured(Suite{Configure: func(*sdk.Plugin) (sdk.NewFilter, error) {
		return func() sdk.Filter { return pauser{} }, nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []Case{
		{Name: "no body"},
		// The filter has no body method: the SDK must keep the request
		// held through the body, not let it through.
		{Name: "body", Request: Request{Method: "POST", Body: []byte("data"), ChunkSize: 2}},
	} {
		r, err := e.request(c)
		if err == nil || !strings.Contains(err.Error(), "nothing resumed it") {
			t.Errorf("%s: got %v (upstream reached: %v)", c.Name, err, r != nil && r.Upstream != nil)
		}
	}
}

func TestSharedDataCompareAndSwap(t *testing.T) {
	h := newHost(&store{data: map[string]sharedValue{}}, nil)
	if _, _, st := h.GetSharedData("k"); st != 1 {
		t.Errorf("missing key: status %d", st)
	}
	if st := h.SetSharedData("k", []byte("a"), 0); st != 0 {
		t.Fatalf("unconditional write: %d", st)
	}
	v, cas, _ := h.GetSharedData("k")
	if string(v) != "a" {
		t.Errorf("read %q", v)
	}
	if st := h.SetSharedData("k", []byte("b"), cas); st != 0 {
		t.Errorf("write at the current version: %d", st)
	}
	if st := h.SetSharedData("k", []byte("c"), cas); st != 8 {
		t.Errorf("write at a stale version: %d, want CAS_MISMATCH", st)
	}
	if v, _, _ := h.GetSharedData("k"); string(v) != "b" {
		t.Errorf("after the refused write: %q", v)
	}
	if st := h.SetSharedData("new", []byte("x"), 12345); st != 0 {
		t.Errorf("a new key with a cas: %d; Sluice writes it", st)
	}
}

// bodyCounter counts response body callbacks and appends to the body,
// holding the headers if hold is set.
type bodyCounter struct {
	hold  bool
	calls *int
}

func (b bodyCounter) OnResponseHeaders(*sdk.Stream, bool) sdk.Action {
	if b.hold {
		return sdk.Pause
	}
	return sdk.Continue
}

func (b bodyCounter) OnResponseBody(s *sdk.Stream, body sdk.Body, end bool) sdk.Action {
	*b.calls++
	if !end {
		return sdk.Pause
	}
	data, _ := body.Bytes()
	_ = body.Replace(append(data, "!"...))
	return sdk.Continue
}

func bodySuite(hold bool, calls *int, check func(*testing.T, *Result)) Suite {
	return Suite{
		Configure: func(*sdk.Plugin) (sdk.NewFilter, error) {
			return func() sdk.Filter { return bodyCounter{hold, calls} }, nil
		},
		Cases: []Case{{
			Name: "three writes",
			Upstream: func(w http.ResponseWriter, _ *http.Request) {
				for _, part := range []string{"a", "b", "c"} {
					_, _ = io.WriteString(w, part)
				}
			},
			Check: check,
		}},
	}
}

// Each write of the upstream reaches the filter as a chunk; headers held
// until the body's end get its real content-length.
func TestResponseChunksAndHeldContentLength(t *testing.T) {
	calls := 0
	Run(t, bodySuite(true, &calls, func(t *testing.T, r *Result) {
		if string(r.Response.Body) != "abc!" || r.Response.Header.Get("Content-Length") != "4" {
			t.Errorf("body %q, content-length %q", r.Response.Body, r.Response.Header.Get("Content-Length"))
		}
	}))
	if calls != 3 {
		t.Errorf("%d body callbacks, want one per write (3)", calls)
	}
}

// Headers that went out before the body changed length are an error, as
// Sluice aborts such a stream.
func TestStaleContentLengthIsAnError(t *testing.T) {
	calls := 0
	s := bodySuite(false, &calls, nil)
	e, err := configured(s)
	if err != nil {
		t.Fatal(err)
	}
	_, err = e.request(s.Cases[0])
	if err == nil || !strings.Contains(err.Error(), "content-length 3") {
		t.Errorf("got %v", err)
	}
}

// counting counts requests in a metric.
type counting struct{ c sdk.Counter }

func (f counting) OnRequestHeaders(*sdk.Stream, bool) sdk.Action {
	_ = f.c.Add(1)
	return sdk.Continue
}

func TestResultsCarryMetrics(t *testing.T) {
	check := func(want uint64) func(*testing.T, *Result) {
		return func(t *testing.T, r *Result) {
			if got := r.Metrics["requests"]; got != want {
				t.Errorf("requests = %d, want %d", got, want)
			}
		}
	}
	Run(t, Suite{
		Configure: func(p *sdk.Plugin) (sdk.NewFilter, error) {
			c, err := p.Counter("requests")
			return func() sdk.Filter { return counting{c} }, err
		},
		Cases: []Case{{Name: "first", Check: check(1)}, {Name: "second", Check: check(2)}},
	})
}

// late changes the request headers after they went on, and answers
// locally after the response started.
type late struct{ errs *[]string }

func (l late) OnRequestHeaders(*sdk.Stream, bool) sdk.Action { return sdk.Continue }

func (l late) OnRequestBody(s *sdk.Stream, _ sdk.Body, end bool) sdk.Action {
	*l.errs = append(*l.errs, "set request header: "+errString(s.RequestHeaders().Set("x-late", "1")))
	return sdk.Continue
}

func (l late) OnResponseBody(s *sdk.Stream, _ sdk.Body, end bool) sdk.Action {
	s.Respond(403, nil, []byte("too late"))
	return sdk.Continue
}

func errString(err error) string {
	if err == nil {
		return "<nil>"
	}
	return err.Error()
}

// Headers that went on are read-only, and a local response after the
// response started is refused, as in Sluice: a native test must not pass
// what Sluice refuses.
func TestSentHeadersAndStartedResponses(t *testing.T) {
	var errs []string
	Run(t, Suite{
		Configure: func(*sdk.Plugin) (sdk.NewFilter, error) {
			return func() sdk.Filter { return late{&errs} }, nil
		},
		Cases: []Case{{
			Name:    "late",
			Request: Request{Method: "POST", Body: []byte("body")},
			Check: func(t *testing.T, r *Result) {
				if r.Upstream.Header.Get("X-Late") != "" {
					t.Error("a header set after the request went on reached the upstream")
				}
				if r.Response.Status != 200 || string(r.Response.Body) != "upstream" {
					t.Errorf("response %d %q: the late local response replaced it", r.Response.Status, r.Response.Body)
				}
				if !strings.Contains(strings.Join(r.Logs, "\n"), "sending a local response: sluice: bad argument") {
					t.Errorf("logs %q", r.Logs)
				}
			},
		}},
	})
	if len(errs) != 1 || errs[0] != "set request header: sluice: bad argument" {
		t.Errorf("errors %q", errs)
	}
}

func TestValidPairs(t *testing.T) {
	for pairs, want := range map[[2]string]bool{
		{"x-ok", "a value\twith tab"}: true,
		{":status", "200"}:            true,
		{"", "v"}:                     false,
		{"bad name", "v"}:             false,
		{"x", "line\nbreak"}:          false,
		{"x", "nul\x00"}:              false,
	} {
		if got := validPairs([][2]string{pairs}); got != want {
			t.Errorf("%q: %v, want %v", pairs, got, want)
		}
	}
}

// A host that carries on after the filter refused its configuration (Envoy
// may) gets a 500 for every request, not the request let through.
func TestUnconfiguredFilterFailsClosed(t *testing.T) {
	h := newHost(&store{data: map[string]sharedValue{}}, nil)
	vm := abi.NewVM(h, sdk.Configure(func(*sdk.Plugin) (sdk.NewFilter, error) {
		return nil, errors.New("no")
	}))
	vm.ContextCreate(rootID, 0)
	if vm.Configure(rootID, 0) {
		t.Fatal("the configuration was taken")
	}
	vm.ContextCreate(2, rootID)
	h.maps[abi.RequestHeaders] = [][2]string{{":path", "/"}}
	if a := vm.RequestHeaders(2, 1, true); a != abi.Pause || h.local == nil || h.local.Status != 500 {
		t.Errorf("action %d, local response %+v; want a 500", a, h.local)
	}
}

// Configure makes a probe stream (sdk's vm.probe) and drops it, leaving no
// trace; a host whose context ids reached the probe's (Envoy's counter
// wraps) and configures again keeps its live root and stream intact.
func TestConfigureProbeLeavesLiveContextsAlone(t *testing.T) {
	const probe = ^uint32(0)
	deny := sdk.Configure(func(*sdk.Plugin) (sdk.NewFilter, error) {
		return func() sdk.Filter { return denyFilter{} }, nil
	})
	denied := func(t *testing.T, h *host, vm abi.VM, stream uint32) {
		t.Helper()
		h.local = nil
		h.maps[abi.RequestHeaders] = [][2]string{{":path", "/"}}
		if a := vm.RequestHeaders(stream, 1, true); a != abi.Pause || h.local == nil || h.local.Status != 403 {
			t.Errorf("stream %#x: action %d, local response %+v; want the filter's 403", stream, a, h.local)
		}
	}
	t.Run("live stream", func(t *testing.T) {
		h := newHost(&store{data: map[string]sharedValue{}}, nil)
		vm := abi.NewVM(h, deny)
		vm.ContextCreate(rootID, 0)
		if !vm.Configure(rootID, 0) {
			t.Fatal("configure failed")
		}
		vm.ContextCreate(probe, rootID)
		if !vm.Configure(rootID, 0) { // Envoy reconfigures a live root
			t.Fatal("configure failed")
		}
		denied(t, h, vm, probe)
	})
	t.Run("live root", func(t *testing.T) {
		h := newHost(&store{data: map[string]sharedValue{}}, nil)
		vm := abi.NewVM(h, deny)
		vm.ContextCreate(probe, 0)
		if !vm.Configure(probe, 0) {
			t.Fatal("configure failed")
		}
		vm.ContextCreate(2, probe)
		denied(t, h, vm, 2)
	})
}

type denyFilter struct{}

func (denyFilter) OnRequestHeaders(s *sdk.Stream, _ bool) sdk.Action {
	return s.Respond(403, nil, nil)
}

// A Filter with no phase method is accepted with a warning, given once at
// configure.
func TestFilterWithoutPhasesIsWarnedOnce(t *testing.T) {
	h := newHost(&store{data: map[string]sharedValue{}}, nil)
	vm := abi.NewVM(h, sdk.Configure(func(*sdk.Plugin) (sdk.NewFilter, error) {
		return func() sdk.Filter { return struct{}{} }, nil
	}))
	vm.ContextCreate(rootID, 0)
	if !vm.Configure(rootID, 0) {
		t.Fatal("configure failed")
	}
	vm.ContextCreate(2, rootID)
	if a := vm.RequestHeaders(2, 0, true); a != abi.Continue {
		t.Errorf("action %d, want continue", a)
	}
	var warned int
	for _, l := range h.logs {
		if strings.Contains(l, "has no On... method") {
			warned++
		}
	}
	if warned != 1 {
		t.Errorf("logs %q: want the warning once", h.logs)
	}
}
