// Native tests of the shareddata guest with the SDK's proxytest emulator. Notes:
// the emulator never makes a write lose a race, so the retry and exhaustion
// paths swap setSharedData to inject CAS mismatches.

package main

import (
	"testing"

	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm"
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

func newHost(t *testing.T) proxytest.HostEmulator {
	t.Helper()
	host, reset := proxytest.NewHostEmulator(proxytest.NewEmulatorOption().WithVMContext(&vm{}))
	t.Cleanup(reset)
	if st := host.StartPlugin(); st != types.OnPluginStartStatusOK {
		t.Fatalf("StartPlugin: %v", st)
	}
	return host
}

// request runs one request through headers in both directions and returns
// its context id.
func request(t *testing.T, host proxytest.HostEmulator) uint32 {
	t.Helper()
	id := host.InitializeHttpContext()
	if a := host.CallOnRequestHeaders(id, [][2]string{{":path", "/"}}, true); a != types.ActionContinue {
		t.Fatalf("request headers: %v, want Continue (local response %+v)", a, host.GetSentLocalResponse(id))
	}
	host.CallOnResponseHeaders(id, [][2]string{{":status", "200"}}, false)
	return id
}

func TestCounts(t *testing.T) {
	host := newHost(t)
	for want := 1; want <= 3; want++ {
		id := request(t, host)
		hs := host.GetCurrentResponseHeaders(id)
		if got, _ := header(hs, "x-count"); got != string(rune('0'+want)) {
			t.Errorf("request %d: x-count %q", want, got)
		}
		if got, _ := header(hs, "x-cas-retries"); got != "0" {
			t.Errorf("request %d: x-cas-retries %q, want 0", want, got)
		}
	}
	v, _, err := proxywasm.GetSharedData("counter")
	if err != nil || string(v) != "3" {
		t.Errorf("counter = %q, %v; want 3", v, err)
	}
}

// losing makes the next n writes fail with a CAS mismatch, as if another
// instance had written first.
func losing(t *testing.T, n int) {
	orig := setSharedData
	t.Cleanup(func() { setSharedData = orig })
	setSharedData = func(key string, data []byte, cas uint32) error {
		if n > 0 {
			n--
			return types.ErrorStatusCasMismatch
		}
		return orig(key, data, cas)
	}
}

func TestRetries(t *testing.T) {
	host := newHost(t)
	request(t, host)
	losing(t, 5)
	id := request(t, host)
	hs := host.GetCurrentResponseHeaders(id)
	if got, _ := header(hs, "x-count"); got != "2" {
		t.Errorf("x-count %q, want 2", got)
	}
	if got, _ := header(hs, "x-cas-retries"); got != "5" {
		t.Errorf("x-cas-retries %q, want 5", got)
	}
}

func TestExhausted(t *testing.T) {
	host := newHost(t)
	losing(t, maxAttempts)
	id := host.InitializeHttpContext()
	if a := host.CallOnRequestHeaders(id, [][2]string{{":path", "/"}}, true); a != types.ActionPause {
		t.Fatalf("request headers: %v, want Pause", a)
	}
	r := host.GetSentLocalResponse(id)
	if r == nil || r.StatusCode != 503 || string(r.Data) != "cas retries exhausted" {
		t.Fatalf("local response %+v, want 503 cas retries exhausted", r)
	}
	// Our own local reply passes through the response phase without headers.
	host.CallOnResponseHeaders(id, [][2]string{{":status", "503"}}, false)
	if _, ok := header(host.GetCurrentResponseHeaders(id), "x-count"); ok {
		t.Error("x-count on the local reply")
	}
	// The 65th attempt would have succeeded: 64 is the bound.
	id = request(t, host)
	if got, _ := header(host.GetCurrentResponseHeaders(id), "x-count"); got != "1" {
		t.Errorf("next request: x-count %q, want 1", got)
	}
}

func TestNotADecimal(t *testing.T) {
	host := newHost(t)
	if err := proxywasm.SetSharedData("counter", []byte("garbage"), 0); err != nil {
		t.Fatal(err)
	}
	id := request(t, host)
	if got, _ := header(host.GetCurrentResponseHeaders(id), "x-count"); got != "1" {
		t.Errorf("x-count %q, want 1", got)
	}
	if len(host.GetErrorLogs()) == 0 {
		t.Error("no error logged for the bad value")
	}
}
