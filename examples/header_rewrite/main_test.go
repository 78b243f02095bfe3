package main

import (
	"testing"

	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm/proxytest"
	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm/types"
)

// The filter's logic, tested natively with the SDK's emulator: no Wasm.
func TestHeaderRewrite(t *testing.T) {
	host, reset := proxytest.NewHostEmulator(proxytest.NewEmulatorOption().
		WithVMContext(&vm{}).
		WithPluginConfiguration([]byte("x-served-by: sluice\n")))
	defer reset()
	if st := host.StartPlugin(); st != types.OnPluginStartStatusOK {
		t.Fatalf("plugin start: %v", st)
	}

	id := host.InitializeHttpContext()
	host.CallOnRequestHeaders(id, [][2]string{{":path", "/"}}, true)
	if got := header(host.GetCurrentRequestHeaders(id), "x-served-by"); got != "sluice" {
		t.Errorf("request x-served-by = %q", got)
	}

	host.CallOnResponseHeaders(id, [][2]string{{":status", "200"}, {"server", "upstream/1.0"}, {"x-frame-options", "ALLOW"}}, true)
	resp := host.GetCurrentResponseHeaders(id)
	if got := header(resp, "x-frame-options"); got != "DENY" {
		t.Errorf("x-frame-options = %q, want DENY", got)
	}
	if got := header(resp, "server"); got != "" {
		t.Errorf("server header kept: %q", got)
	}
}

func TestBadConfigurationIsRejected(t *testing.T) {
	host, reset := proxytest.NewHostEmulator(proxytest.NewEmulatorOption().
		WithVMContext(&vm{}).
		WithPluginConfiguration([]byte("no colon here")))
	defer reset()
	if st := host.StartPlugin(); st != types.OnPluginStartStatusFailed {
		t.Errorf("plugin start: %v, want failed", st)
	}
}

func header(pairs [][2]string, name string) string {
	for _, p := range pairs {
		if p[0] == name {
			return p[1]
		}
	}
	return ""
}
