// Native tests of the queuereceiver guest with the SDK's proxytest emulator. Notes:
// the tests play the sender by enqueueing directly; the emulator calls
// OnQueueReady synchronously on every enqueue.

package main

import (
	"testing"

	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm"
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

// inspect runs one request and returns the filter's local response.
func inspect(t *testing.T, host proxytest.HostEmulator) *proxytest.LocalHttpResponse {
	t.Helper()
	id := host.InitializeHttpContext()
	if a := host.CallOnRequestHeaders(id, [][2]string{{":path", "/inspect"}}, true); a != types.ActionPause {
		t.Fatalf("request headers: %v, want Pause", a)
	}
	r := host.GetSentLocalResponse(id)
	if r == nil || r.StatusCode != 200 {
		t.Fatalf("local response %+v, want 200", r)
	}
	return r
}

func TestDrains(t *testing.T) {
	// Another queue first, so that the receiver's id is not 0.
	host := newHost(t, "paths")
	if _, err := proxywasm.RegisterSharedQueue("other"); err != nil {
		t.Fatal(err)
	}
	if st := host.StartPlugin(); st != types.OnPluginStartStatusOK {
		t.Fatalf("StartPlugin: %v", st)
	}

	r := inspect(t, host)
	if string(r.Data) != "received=0 last=" {
		t.Errorf("before anything was sent: %q", r.Data)
	}
	if len(r.Headers) != 1 || r.Headers[0] != [2]string{"x-queue-id", "1"} {
		t.Errorf("headers %q, want x-queue-id: 1", r.Headers)
	}

	// Play the sender. The emulator calls OnQueueReady on every enqueue.
	// (The emulator's proxy_resolve_shared_queue is a stub: use the id.)
	const qid = 1
	for _, p := range []string{"/one", "/two", "/three"} {
		if err := proxywasm.EnqueueSharedQueue(qid, []byte(p)); err != nil {
			t.Fatal(err)
		}
	}
	if n := host.GetQueueSize(qid); n != 0 {
		t.Errorf("%d items left on the queue", n)
	}
	if r := inspect(t, host); string(r.Data) != "received=3 last=/three" {
		t.Errorf("after three items: %q", r.Data)
	}
	if logs := host.GetErrorLogs(); len(logs) > 0 {
		t.Errorf("error logs: %q", logs)
	}
}

func TestNeedsConfiguration(t *testing.T) {
	host := newHost(t, "")
	if st := host.StartPlugin(); st != types.OnPluginStartStatusFailed {
		t.Fatalf("StartPlugin without a queue name: %v, want Failed", st)
	}
}
