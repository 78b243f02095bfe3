// Native tests of the refresher guest with the SDK's proxytest emulator. Notes:
// ticks and the keys call's answers are driven by hand. Each emulator must
// be released before the next is made (it holds a global lock), hence one
// subtest per configuration.

package main

import (
	"reflect"
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

func newHost(t *testing.T, config string) proxytest.HostEmulator {
	t.Helper()
	host, reset := proxytest.NewHostEmulator(proxytest.NewEmulatorOption().
		WithVMContext(&vm{}).WithPluginConfiguration([]byte(config)))
	t.Cleanup(reset)
	if st := host.StartPlugin(); st != types.OnPluginStartStatusOK {
		t.Fatalf("StartPlugin: %v", st)
	}
	return host
}

// request runs one request and returns its x-keys request header and its
// x-keys and x-ticks response headers.
func request(t *testing.T, host proxytest.HostEmulator) (reqKeys, keys, ticks string) {
	t.Helper()
	id := host.InitializeHttpContext()
	if a := host.CallOnRequestHeaders(id, [][2]string{{":path", "/"}}, true); a != types.ActionContinue {
		t.Fatalf("request headers: %v, want Continue", a)
	}
	host.CallOnResponseHeaders(id, [][2]string{{":status", "200"}}, false)
	rh := host.GetCurrentResponseHeaders(id)
	return header(host.GetCurrentRequestHeaders(id), "x-keys"), header(rh, "x-keys"), header(rh, "x-ticks")
}

func TestPeriod(t *testing.T) {
	for config, want := range map[string]uint32{"": 100, "250": 250, "soon": 100, "0": 100, "-5": 100} {
		// A subtest each: the emulator is released in the subtest's cleanup.
		t.Run(config, func(t *testing.T) {
			if got := newHost(t, config).GetTickPeriod(); got != want {
				t.Errorf("config %q: period %d, want %d", config, got, want)
			}
		})
	}
}

func TestRefreshes(t *testing.T) {
	host := newHost(t, "")
	if rk, k, n := request(t, host); rk != "none" || k != "none" || n != "0" {
		t.Errorf("before any tick: %q %q %q, want none none 0", rk, k, n)
	}

	host.Tick()
	calls := host.GetCalloutAttributesFromContext(proxytest.PluginContextID)
	if len(calls) != 1 {
		t.Fatalf("%d calls after a tick, want 1", len(calls))
	}
	if calls[0].Upstream != "keys" {
		t.Errorf("upstream %q", calls[0].Upstream)
	}
	want := [][2]string{{":method", "GET"}, {":path", "/keys"}, {":authority", "keys.internal"}}
	if !reflect.DeepEqual(calls[0].Headers, want) {
		t.Errorf("headers %q, want %q", calls[0].Headers, want)
	}
	// Counted, but no keys yet: the call has not returned.
	if rk, k, n := request(t, host); rk != "none" || k != "none" || n != "1" {
		t.Errorf("after a tick: %q %q %q, want none none 1", rk, k, n)
	}
	host.CallOnHttpCallResponse(calls[0].CalloutID, [][2]string{{":status", "200"}}, nil, []byte("k1,k2"))
	if rk, k, n := request(t, host); rk != "k1,k2" || k != "k1,k2" || n != "1" {
		t.Errorf("after the keys came: %q %q %q, want k1,k2 k1,k2 1", rk, k, n)
	}

	// A failed call, then a bad answer: the keys stay. A good one replaces them.
	host.Tick()
	host.Tick()
	host.Tick()
	calls = host.GetCalloutAttributesFromContext(proxytest.PluginContextID)
	if len(calls) != 4 {
		t.Fatalf("%d calls after four ticks, want 4", len(calls))
	}
	host.CallOnHttpCallResponse(calls[1].CalloutID, nil, nil, nil)
	host.CallOnHttpCallResponse(calls[2].CalloutID, [][2]string{{":status", "500"}}, nil, []byte("oops"))
	if _, k, n := request(t, host); k != "k1,k2" || n != "4" {
		t.Errorf("after failures: %q %q, want k1,k2 4", k, n)
	}
	host.CallOnHttpCallResponse(calls[3].CalloutID, [][2]string{{":status", "200"}}, nil, []byte("k3"))
	if _, k, _ := request(t, host); k != "k3" {
		t.Errorf("after a second refresh: %q, want k3", k)
	}
}
