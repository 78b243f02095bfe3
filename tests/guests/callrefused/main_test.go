// Native tests of the callrefused guest with the SDK's proxytest emulator. Notes:
// the emulator dispatches every call, so the refusal Sluice must give is
// simulated by swapping dispatchHttpCall; the "reached" path runs as is.

package main

import (
	"reflect"
	"testing"

	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm/proxytest"
	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm/types"
)

func newHost(t *testing.T, config string) proxytest.HostEmulator {
	t.Helper()
	host, reset := proxytest.NewHostEmulator(proxytest.NewEmulatorOption().
		WithVMContext(&vm{}).WithPluginConfiguration([]byte(config)))
	t.Cleanup(reset)
	return host
}

func TestRefused(t *testing.T) {
	orig := dispatchHttpCall
	t.Cleanup(func() { dispatchHttpCall = orig })
	var upstream string
	dispatchHttpCall = func(u string, _ [][2]string, _ []byte, _ [][2]string, _ uint32, _ func(int, int, int)) (uint32, error) {
		upstream = u
		return 0, types.ErrorStatusBadArgument
	}
	host := newHost(t, "127.0.0.1:2019")
	if st := host.StartPlugin(); st != types.OnPluginStartStatusOK {
		t.Fatalf("StartPlugin: %v", st)
	}
	id := host.InitializeHttpContext()
	if a := host.CallOnRequestHeaders(id, [][2]string{{":path", "/"}}, true); a != types.ActionPause {
		t.Fatalf("request headers: %v, want Pause", a)
	}
	if upstream != "127.0.0.1:2019" {
		t.Errorf("called %q", upstream)
	}
	r := host.GetSentLocalResponse(id)
	if r == nil || r.StatusCode != 502 || string(r.Data) != "refused: error status returned by host: bad argument" {
		t.Fatalf("local response %+v", r)
	}
}

// The emulator dispatches any call: the filter then tells it was reached.
func TestReached(t *testing.T) {
	host := newHost(t, "admin")
	host.StartPlugin()
	id := host.InitializeHttpContext()
	if a := host.CallOnRequestHeaders(id, [][2]string{{":path", "/"}}, true); a != types.ActionPause {
		t.Fatalf("request headers: %v, want Pause", a)
	}
	calls := host.GetCalloutAttributesFromContext(id)
	if len(calls) != 1 || calls[0].Upstream != "admin" {
		t.Fatalf("calls %+v, want one to admin", calls)
	}
	want := [][2]string{{":method", "GET"}, {":path", "/config/"}, {":authority", "localhost"}}
	if !reflect.DeepEqual(calls[0].Headers, want) {
		t.Errorf("headers %q, want %q", calls[0].Headers, want)
	}
	if r := host.GetSentLocalResponse(id); r != nil {
		t.Fatalf("answered before the call returned: %+v", r)
	}
	host.CallOnHttpCallResponse(calls[0].CalloutID, [][2]string{{":status", "200"}}, nil, []byte("{}"))
	r := host.GetSentLocalResponse(id)
	if r == nil || r.StatusCode != 200 || string(r.Data) != "reached" {
		t.Fatalf("local response %+v, want 200 reached", r)
	}
}

func TestNeedsConfiguration(t *testing.T) {
	host := newHost(t, "")
	if st := host.StartPlugin(); st != types.OnPluginStartStatusFailed {
		t.Fatalf("StartPlugin without an upstream: %v, want Failed", st)
	}
}
