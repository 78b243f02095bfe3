// Native tests of the canary guest with the SDK's proxytest emulator. Notes:
// the emulator always accepts proxy_set_property, so the
// "set_property: <error>" answer is not exercised here.

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

func TestRoutes(t *testing.T) {
	for _, c := range []struct {
		name    string
		headers [][2]string
		want    string
	}{
		{"plain", [][2]string{{":path", "/"}}, "stable"},
		{"header", [][2]string{{":path", "/"}, {"x-canary", "1"}}, "canary"},
		{"header not 1", [][2]string{{":path", "/"}, {"x-canary", "0"}}, "stable"},
		{"cookie", [][2]string{{":path", "/"}, {"cookie", "a=b; canary=1; c=d"}}, "canary"},
		{"other cookie", [][2]string{{":path", "/"}, {"cookie", "canary=0"}}, "stable"},
		{"path", [][2]string{{":path", "/try/canary/x"}}, "canary"},
		{"query", [][2]string{{":path", "/x?canary"}}, "canary"},
	} {
		t.Run(c.name, func(t *testing.T) {
			host, reset := proxytest.NewHostEmulator(proxytest.NewEmulatorOption().WithVMContext(&vm{}))
			defer reset()
			id := host.InitializeHttpContext()
			if a := host.CallOnRequestHeaders(id, c.headers, true); a != types.ActionContinue {
				t.Fatalf("request headers: %v, want Continue (local response %+v)", a, host.GetSentLocalResponse(id))
			}
			if got := header(host.GetCurrentRequestHeaders(id), "x-route"); got != c.want {
				t.Errorf("x-route %q, want %q", got, c.want)
			}
			if got, err := host.GetProperty([]string{"route"}); err != nil || string(got) != c.want {
				t.Errorf("route property %q, %v; want %q", got, err, c.want)
			}
		})
	}
}
