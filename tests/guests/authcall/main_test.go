// Native tests of the authcall guest with the SDK's proxytest emulator. Notes:
// the emulator dispatches every call, so the "dispatch: <error>" answer is
// exercised by swapping dispatchHttpCall.

package main

import (
	"reflect"
	"testing"

	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm/proxytest"
	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm/types"
)

func header(hs [][2]string, name string) (string, bool) {
	for _, h := range hs {
		if h[0] == name {
			return h[1], true
		}
	}
	return "", false
}

// start runs a request's headers through the filter and returns its
// context id and the call it dispatched.
func start(t *testing.T, reqHeaders [][2]string) (proxytest.HostEmulator, uint32, proxytest.HttpCalloutAttribute) {
	t.Helper()
	host, reset := proxytest.NewHostEmulator(proxytest.NewEmulatorOption().WithVMContext(&vm{}))
	t.Cleanup(reset)
	host.StartPlugin()
	id := host.InitializeHttpContext()
	if a := host.CallOnRequestHeaders(id, reqHeaders, true); a != types.ActionPause {
		t.Fatalf("request headers: %v, want Pause", a)
	}
	calls := host.GetCalloutAttributesFromContext(id)
	if len(calls) != 1 {
		t.Fatalf("%d calls dispatched, want 1", len(calls))
	}
	return host, id, calls[0]
}

func TestCall(t *testing.T) {
	_, _, call := start(t, [][2]string{{":path", "/x"}, {"authorization", "Bearer good"}})
	if call.Upstream != "auth" {
		t.Errorf("upstream %q", call.Upstream)
	}
	want := [][2]string{{":method", "GET"}, {":path", "/check"}, {":authority", "auth.internal"}, {"authorization", "Bearer good"}}
	if !reflect.DeepEqual(call.Headers, want) {
		t.Errorf("headers %q, want %q", call.Headers, want)
	}
	if len(call.Body) != 0 || len(call.Trailers) != 0 {
		t.Errorf("body %q, trailers %q", call.Body, call.Trailers)
	}
}

func TestNoAuthorization(t *testing.T) {
	_, _, call := start(t, [][2]string{{":path", "/x"}})
	if v, ok := header(call.Headers, "authorization"); !ok || v != "" {
		t.Errorf("authorization %q (present %v), want present and empty", v, ok)
	}
}

func TestAllowed(t *testing.T) {
	host, id, call := start(t, [][2]string{{":path", "/x"}, {"authorization", "Bearer good"}})
	host.CallOnHttpCallResponse(call.CalloutID, [][2]string{{":status", "200"}, {"x-user", "alice"}}, nil, nil)
	if r := host.GetSentLocalResponse(id); r != nil {
		t.Fatalf("local response %+v", r)
	}
	if a := host.GetCurrentHttpStreamAction(id); a != types.ActionContinue {
		t.Errorf("stream action %v, want Continue (resumed)", a)
	}
	if got, _ := header(host.GetCurrentRequestHeaders(id), "x-auth-user"); got != "alice" {
		t.Errorf("x-auth-user %q", got)
	}
}

func TestDenied(t *testing.T) {
	host, id, call := start(t, [][2]string{{":path", "/x"}, {"authorization", "Bearer bad"}})
	host.CallOnHttpCallResponse(call.CalloutID, [][2]string{{":status", "401"}}, nil, []byte("bad token"))
	r := host.GetSentLocalResponse(id)
	if r == nil || r.StatusCode != 403 || string(r.Data) != "bad token" {
		t.Fatalf("local response %+v, want 403 bad token", r)
	}
	if got, _ := header(r.Headers, "x-auth-status"); got != "401" {
		t.Errorf("x-auth-status %q", got)
	}
	if a := host.GetCurrentHttpStreamAction(id); a != types.ActionPause {
		t.Errorf("stream action %v, want Pause", a)
	}
}

func TestDeniedWithoutBody(t *testing.T) {
	host, id, call := start(t, [][2]string{{":path", "/x"}})
	host.CallOnHttpCallResponse(call.CalloutID, [][2]string{{":status", "403"}}, nil, nil)
	r := host.GetSentLocalResponse(id)
	if r == nil || r.StatusCode != 403 || len(r.Data) != 0 {
		t.Fatalf("local response %+v, want an empty 403", r)
	}
}

func TestCallFailed(t *testing.T) {
	host, id, call := start(t, [][2]string{{":path", "/x"}})
	host.CallOnHttpCallResponse(call.CalloutID, nil, nil, nil)
	r := host.GetSentLocalResponse(id)
	if r == nil || r.StatusCode != 503 || string(r.Data) != "auth unavailable" {
		t.Fatalf("local response %+v, want 503 auth unavailable", r)
	}
}

func TestDispatchFails(t *testing.T) {
	orig := dispatchHttpCall
	t.Cleanup(func() { dispatchHttpCall = orig })
	dispatchHttpCall = func(string, [][2]string, []byte, [][2]string, uint32, func(int, int, int)) (uint32, error) {
		return 0, types.ErrorStatusBadArgument
	}
	host, reset := proxytest.NewHostEmulator(proxytest.NewEmulatorOption().WithVMContext(&vm{}))
	defer reset()
	host.StartPlugin()
	id := host.InitializeHttpContext()
	if a := host.CallOnRequestHeaders(id, [][2]string{{":path", "/x"}}, true); a != types.ActionPause {
		t.Fatalf("request headers: %v, want Pause", a)
	}
	r := host.GetSentLocalResponse(id)
	if r == nil || r.StatusCode != 502 || string(r.Data) != "dispatch: "+types.ErrorStatusBadArgument.Error() {
		t.Fatalf("local response %+v", r)
	}
}
