// Native tests of the metrics guest with the SDK's proxytest emulator. Notes:
// the emulator's histogram keeps only the last recorded value.

package main

import (
	"testing"

	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm/proxytest"
	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm/types"
)

func header(hs [][2]string, name string) string {
	for _, h := range hs {
		if h[0] == name {
			return h[1]
		}
	}
	return "<absent>"
}

func TestMetrics(t *testing.T) {
	host, reset := proxytest.NewHostEmulator(proxytest.NewEmulatorOption().WithVMContext(&vm{}))
	defer reset()
	if st := host.StartPlugin(); st != types.OnPluginStartStatusOK {
		t.Fatalf("StartPlugin: %v", st)
	}

	// Two requests in flight at once, then a third alone.
	a, b := host.InitializeHttpContext(), host.InitializeHttpContext()
	host.CallOnRequestHeaders(a, [][2]string{{":path", "/a"}}, true)
	host.CallOnRequestHeaders(b, [][2]string{{":path", "/bbbbbb"}}, true)
	if v, err := host.GetGaugeMetric("inflight"); err != nil || v != 2 {
		t.Errorf("inflight %d, %v; want 2", v, err)
	}
	if v, err := host.GetHistogramMetric("path_length"); err != nil || v != 7 {
		t.Errorf("path_length (the emulator keeps the last value) %d, %v; want 7", v, err)
	}
	host.CallOnResponseHeaders(a, [][2]string{{":status", "200"}}, false)
	host.CallOnResponseHeaders(b, [][2]string{{":status", "200"}}, false)
	for id, want := range map[uint32][2]string{a: {"2", "2"}, b: {"2", "1"}} {
		hs := host.GetCurrentResponseHeaders(id)
		if got := [2]string{header(hs, "x-requests-total"), header(hs, "x-inflight")}; got != want {
			t.Errorf("context %d: x-requests-total, x-inflight = %q, want %q", id, got, want)
		}
	}

	c := host.InitializeHttpContext()
	host.CallOnRequestHeaders(c, [][2]string{{":path", "/"}}, true)
	host.CallOnResponseHeaders(c, [][2]string{{":status", "200"}}, false)
	hs := host.GetCurrentResponseHeaders(c)
	if got := [2]string{header(hs, "x-requests-total"), header(hs, "x-inflight")}; got != [2]string{"3", "1"} {
		t.Errorf("third request: %q, want [3 1]", got)
	}
	if v, err := host.GetCounterMetric("requests_total"); err != nil || v != 3 {
		t.Errorf("requests_total %d, %v; want 3", v, err)
	}
	if v, err := host.GetGaugeMetric("inflight"); err != nil || v != 0 {
		t.Errorf("inflight %d, %v; want 0", v, err)
	}
	if v, err := host.GetHistogramMetric("path_length"); err != nil || v != 1 {
		t.Errorf("path_length %d, %v; want 1", v, err)
	}
	if logs := host.GetErrorLogs(); len(logs) > 0 {
		t.Errorf("error logs %q", logs)
	}
}

// A metric the host does not know makes the SDK panic: the filter logs it
// and lets the request through.
func TestHostError(t *testing.T) {
	host, reset := proxytest.NewHostEmulator(proxytest.NewEmulatorOption().WithHttpContext(
		func(uint32) types.HttpContext { return &filter{m: metrics{requests: 99, inflight: 99, pathLength: 99}} }))
	defer reset()
	id := host.InitializeHttpContext()
	if a := host.CallOnRequestHeaders(id, [][2]string{{":path", "/"}}, true); a != types.ActionContinue {
		t.Errorf("request headers: %v, want Continue", a)
	}
	if a := host.CallOnResponseHeaders(id, [][2]string{{":status", "200"}}, false); a != types.ActionContinue {
		t.Errorf("response headers: %v, want Continue", a)
	}
	if logs := host.GetErrorLogs(); len(logs) != 2 {
		t.Errorf("error logs %q, want one per phase", logs)
	}
}
