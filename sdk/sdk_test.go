package sdk_test

import (
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluice-edge/sluice/sdk"
	"github.com/sluice-edge/sluice/sdk/internal/conformance"
	"github.com/sluice-edge/sluice/sdk/sdktest"
)

// The conformance filter's cases. They run natively and against the built
// module in a real Caddy: the SDK's Wasm glue, Sluice and sdktest's
// emulator must all agree.
var suite = sdktest.Suite{
	Config:     "conformance",
	Configure:  conformance.Configure,
	Properties: []string{"route"},
	Upstreams: map[string]http.Handler{
		"auth": http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != "/check" {
				http.Error(w, "wrong path "+r.URL.Path, http.StatusNotFound)
				return
			}
			_, _ = io.WriteString(w, "ok-from-auth")
		}),
	},
	Cases: []sdktest.Case{{
		Name: "headers are added, set and removed",
		Request: sdktest.Request{Path: "/headers", Header: http.Header{
			"X-Added": {"client"}, "X-Set": {"client"}, "X-Del": {"client"},
		}},
		Check: func(t *testing.T, r *sdktest.Result) {
			h := r.Upstream.Header
			if got := h.Values("X-Added"); strings.Join(got, ",") != "client,a" {
				t.Errorf("x-added %q", got)
			}
			if got := h.Values("X-Set"); strings.Join(got, ",") != "s" {
				t.Errorf("x-set %q", got)
			}
			if h.Get("X-Del") != "" || h.Get("X-Lookup") != "" {
				t.Errorf("x-del %q, x-lookup %q", h.Get("X-Del"), h.Get("X-Lookup"))
			}
			if r.Response.Header.Get("X-Saw-Path") != "/headers" || r.Response.Header.Get("X-Phases") != "2" {
				t.Errorf("per-request state: x-saw-path %q x-phases %q",
					r.Response.Header.Get("X-Saw-Path"), r.Response.Header.Get("X-Phases"))
			}
		},
	}, {
		Name:    "a second request starts with new per-request state",
		Request: sdktest.Request{Path: "/other"},
		Check: func(t *testing.T, r *sdktest.Result) {
			if got := r.Response.Header.Get("X-Phases"); got != "2" {
				t.Errorf("x-phases %q: a Filter was reused across requests", got)
			}
		},
	}, {
		Name:    "a request without a body ends with its headers",
		Request: sdktest.Request{Path: "/end"},
		Check:   wantUpstreamHeader("X-End", "true"),
	}, {
		Name:    "a request with a body does not end with its headers",
		Request: sdktest.Request{Method: "POST", Path: "/end", Body: []byte("x")},
		Check:   wantUpstreamHeader("X-End", "false"),
	}, {
		Name:    "randomness and the clock are the host's",
		Request: sdktest.Request{Path: "/random"},
		Check:   checkRandomAndNow,
	}, {
		Name:    "randomness differs between requests",
		Request: sdktest.Request{Path: "/random"},
		Check:   checkRandomAndNow,
	}, {
		Name:    "the whole map is read and replaced",
		Request: sdktest.Request{Path: "/setall", Header: http.Header{"X-Drop": {"1"}, "X-Keep": {"1"}}},
		Check: func(t *testing.T, r *sdktest.Result) {
			h := r.Upstream.Header
			if h.Get("X-Drop") != "" || h.Get("X-Keep") != "1" || h.Get("X-Count") == "" {
				t.Errorf("upstream saw %v", h)
			}
			if r.Upstream.URL.Path != "/setall" {
				t.Errorf("path %q after SetAll", r.Upstream.URL.Path)
			}
		},
	}, {
		Name:    "a local response skips the upstream",
		Request: sdktest.Request{Path: "/respond"},
		Check: func(t *testing.T, r *sdktest.Result) {
			if r.Upstream != nil {
				t.Error("the upstream was reached")
			}
			if r.Response.Status != 418 || r.Response.Header.Get("X-Why") != "teapot" || string(r.Response.Body) != "short and stout" {
				t.Errorf("response %d %v %q", r.Response.Status, r.Response.Header, r.Response.Body)
			}
		},
	}, {
		Name:    "properties are read and set; host properties are not writable",
		Request: sdktest.Request{Path: "/property"},
		Check: func(t *testing.T, r *sdktest.Result) {
			h := r.Upstream.Header
			if h.Get("X-Property-Path") != "/property" || h.Get("X-Missing-Found") != "" {
				t.Errorf("x-property-path %q, x-missing-found %q", h.Get("X-Property-Path"), h.Get("X-Missing-Found"))
			}
			if got := h.Get("X-Host-Property"); got != sdk.ErrBadArgument.Error() {
				t.Errorf("setting request.path: %q", got)
			}
			if r.Properties["route"] != "blue" {
				t.Errorf("route %q", r.Properties["route"])
			}
		},
	}, {
		Name:    "shared data starts empty",
		Request: sdktest.Request{Path: "/shared"},
		Check:   wantUpstreamHeader("X-N", "1"),
	}, {
		Name:    "shared data outlives the request",
		Request: sdktest.Request{Path: "/shared"},
		Check:   wantUpstreamHeader("X-N", "2"),
	}, {
		Name:    "an outbound call pauses the request until its answer",
		Request: sdktest.Request{Path: "/call"},
		Check: func(t *testing.T, r *sdktest.Result) {
			if r.Upstream == nil {
				t.Fatalf("no upstream request; response %d %q", r.Response.Status, r.Response.Body)
			}
			if got := r.Upstream.Header.Get("X-Auth"); got != "ok-from-auth" {
				t.Errorf("x-auth %q", got)
			}
			if r.Response.Header.Get("X-Resumed") != "true" {
				t.Error("the call's callback did not run in the request's filter")
			}
		},
	}, {
		Name:    "a call to an undeclared upstream is refused",
		Request: sdktest.Request{Path: "/call-undeclared"},
		Check:   wantUpstreamHeader("X-Error", sdk.ErrBadArgument.Error()),
	}, {
		Name:    "metrics count across requests",
		Request: sdktest.Request{Path: "/metrics"},
		Check:   wantMetrics("2"),
	}, {
		Name:    "metrics count across requests, again",
		Request: sdktest.Request{Path: "/metrics"},
		Check:   wantMetrics("4"),
	}, {
		Name:    "a paused request body is buffered whole and replaced",
		Request: sdktest.Request{Method: "POST", Path: "/body", Body: []byte(strings.Repeat("abc-", 5000)), ChunkSize: 4096},
		Check: func(t *testing.T, r *sdktest.Result) {
			if got, want := string(r.UpstreamBody), strings.Repeat("ABC-", 5000); got != want {
				t.Errorf("upstream body: %d bytes %.20q..., want %d bytes of ABC-", len(got), got, len(want))
			}
		},
	}, {
		Name:    "a paused response body is buffered whole and replaced",
		Request: sdktest.Request{Path: "/respbody"},
		Upstream: func(w http.ResponseWriter, _ *http.Request) {
			_, _ = io.WriteString(w, strings.Repeat("x", 3000))
		},
		Check: func(t *testing.T, r *sdktest.Result) {
			if got, want := string(r.Response.Body), strings.Repeat("x", 3000)+"!"; got != want {
				t.Errorf("response body %d bytes, ends %q", len(got), got[max(0, len(got)-3):])
			}
		},
	}},
}

// Every case also checks that its request had a Filter of its own: the
// conformance filter counts the phases it saw in x-phases.
func init() {
	for i := range suite.Cases {
		check := suite.Cases[i].Check
		suite.Cases[i].Check = func(t *testing.T, r *sdktest.Result) {
			check(t, r)
			if got := r.Response.Header.Get("X-Phases"); r.Upstream != nil && got != "2" {
				t.Errorf("x-phases %q, want 2: the request shared its Filter", got)
			}
		}
	}
}

// wantMetrics checks /metrics's answer: the counter at hits, a gauge set
// and moved, a histogram recorded, and OnDone having counted the requests
// before (at least the one just before the previous one has ended).
func wantMetrics(hits string) func(*testing.T, *sdktest.Result) {
	return func(t *testing.T, r *sdktest.Result) {
		t.Helper()
		wantUpstreamHeader("X-Hits", hits)(t, r)
		h := r.Upstream.Header
		if h.Get("X-Gauge") != "5" || h.Get("X-Histogram") != "<nil>" {
			t.Errorf("gauge %q, histogram %q; want 5, <nil>", h.Get("X-Gauge"), h.Get("X-Histogram"))
		}
		if done, _ := strconv.Atoi(h.Get("X-Done")); done < 1 {
			t.Errorf("x-done %q: OnDone did not run", h.Get("X-Done"))
		}
	}
}

// checkRandomAndNow checks /random's answer: 16 random bytes unlike the
// previous request's (a snapshot must not freeze them), and the real time.
func checkRandomAndNow(t *testing.T, r *sdktest.Result) {
	t.Helper()
	random := r.Upstream.Header.Get("X-Random")
	if len(random) != 32 || random == strings.Repeat("0", 32) {
		t.Errorf("x-random %q", random)
	}
	run, _, _ := strings.Cut(t.Name(), "/")
	if previous, _ := lastRandom.Swap(run, random); previous == random {
		t.Errorf("x-random %q again", random)
	}
	now, _ := strconv.ParseInt(r.Upstream.Header.Get("X-Now"), 10, 64)
	if d := time.Since(time.Unix(now, 0)); d < -time.Minute || d > time.Minute {
		t.Errorf("x-now is %v off", d)
	}
}

// lastRandom is the x-random the previous /random request of each test
// (they run in parallel) got.
var lastRandom sync.Map

func wantUpstreamHeader(name, want string) func(*testing.T, *sdktest.Result) {
	return func(t *testing.T, r *sdktest.Result) {
		t.Helper()
		if r.Upstream == nil {
			t.Fatalf("no upstream request; response %d %q", r.Response.Status, r.Response.Body)
		}
		if got := r.Upstream.Header.Get(name); got != want {
			t.Errorf("%s = %q, want %q", name, got, want)
		}
	}
}

func TestConformanceNative(t *testing.T) {
	t.Parallel()
	sdktest.Run(t, suite)
}

func TestConformanceInCaddy(t *testing.T) {
	t.Parallel()
	sdktest.RunCaddy(t, sdktest.Build(t, "internal/conformance/cmd"), suite)
}

func TestLogsReachTheHost(t *testing.T) {
	t.Parallel()
	s := suite
	s.Cases = []sdktest.Case{{
		Name:    "log",
		Request: sdktest.Request{Path: "/log"},
		Check: func(t *testing.T, r *sdktest.Result) {
			if len(r.Logs) != 1 || r.Logs[0] != "warn: conformance says hello" {
				t.Errorf("logs %q", r.Logs)
			}
		},
	}}
	sdktest.Run(t, s)
}

func TestConfigurationErrorsRefuseTheFilter(t *testing.T) {
	err := sdktest.ConfigError("something else", suite)
	if err == nil || !strings.Contains(err.Error(), `want the configuration "conformance"`) {
		t.Errorf("got %v", err)
	}
	if err := sdktest.ConfigError("conformance", suite); err != nil {
		t.Errorf("the good configuration: %v", err)
	}
	noFilter := suite
	noFilter.Configure = func(*sdk.Plugin) (sdk.NewFilter, error) { return nil, nil }
	if err := sdktest.ConfigError("", noFilter); err == nil || !strings.Contains(err.Error(), "no NewFilter") {
		t.Errorf("a configure returning no NewFilter: %v", err)
	}
}

func TestErrorsCompareWithErrorsIs(t *testing.T) {
	var err error = sdk.ErrCASMismatch
	if !errors.Is(err, sdk.ErrCASMismatch) || errors.Is(err, sdk.ErrNotFound) {
		t.Error("errors.Is does not tell statuses apart")
	}
	if got := sdk.Error(99).Error(); got != "sluice: host status 99" {
		t.Errorf("unknown status: %q", got)
	}
}

// In shared isolation one long-lived instance serves many requests, as in
// Envoy: the SDK's dispatcher must keep each request's Filter apart.
func TestConformanceInCaddySharedIsolation(t *testing.T) {
	t.Parallel()
	s := suite
	s.Options = "isolation shared"
	sdktest.RunCaddy(t, sdktest.Build(t, "internal/conformance/cmd"), s)
}

// The SDK stays lean: built for Wasm it brings none of the packages that
// grow a filter's module (see BENCHMARKS.md).
func TestNoHeavyDependencies(t *testing.T) {
	cmd := exec.Command("go", "list", "-deps", ".")
	cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, dep := range strings.Fields(string(out)) {
		switch dep {
		case "fmt", "reflect", "strings", "strconv", "time", "encoding/binary", "encoding/json", "crypto/rand":
			t.Errorf("the SDK depends on %s", dep)
		}
	}
}
