// Native tests of the queuesender guest with the SDK's proxytest emulator. Notes:
// the emulator's proxy_resolve_shared_queue is a stub (OK, id 0), so the
// tests register the queue themselves, as the receiver would, and cannot
// exercise the "resolve: <error>" answer.

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

func newHost(t *testing.T, opt *proxytest.EmulatorOption) proxytest.HostEmulator {
	t.Helper()
	host, reset := proxytest.NewHostEmulator(opt.WithVMContext(&vm{}))
	t.Cleanup(reset)
	return host
}

func TestEnqueues(t *testing.T) {
	host := newHost(t, proxytest.NewEmulatorOption().
		WithPluginConfiguration([]byte("paths")).
		WithProperty([]string{"plugin_vm_id"}, []byte("vm")))
	if st := host.StartPlugin(); st != types.OnPluginStartStatusOK {
		t.Fatalf("StartPlugin: %v", st)
	}
	// Play the receiver: register the queue. (The emulator does not implement
	// proxy_resolve_shared_queue: it answers OK with id 0, the first queue.)
	qid, err := proxywasm.RegisterSharedQueue("paths")
	if err != nil {
		t.Fatal(err)
	}

	for _, path := range []string{"/a", "/b?x=1"} {
		id := host.InitializeHttpContext()
		if a := host.CallOnRequestHeaders(id, [][2]string{{":path", path}}, true); a != types.ActionContinue {
			t.Fatalf("%s: %v, want Continue (local response %+v)", path, a, host.GetSentLocalResponse(id))
		}
		host.CallOnResponseHeaders(id, [][2]string{{":status", "200"}}, false)
		if got, _ := header(host.GetCurrentResponseHeaders(id), "x-enqueued"); got != "0" {
			t.Errorf("%s: x-enqueued %q, want 0", path, got)
		}
	}
	if n := host.GetQueueSize(qid); n != 2 {
		t.Fatalf("queue holds %d items, want 2", n)
	}
	for _, want := range []string{"/a", "/b?x=1"} {
		got, err := proxywasm.DequeueSharedQueue(qid)
		if err != nil || string(got) != want {
			t.Errorf("dequeued %q, %v; want %q", got, err, want)
		}
	}
}

func TestEnqueueFails(t *testing.T) {
	// No receiver registered the queue: enqueueing on it fails. Without the
	// plugin_vm_id property the empty vm id is used and the error logged.
	host := newHost(t, proxytest.NewEmulatorOption().WithPluginConfiguration([]byte("paths")))
	host.StartPlugin()
	id := host.InitializeHttpContext()
	if a := host.CallOnRequestHeaders(id, [][2]string{{":path", "/a"}}, true); a != types.ActionPause {
		t.Fatalf("%v, want Pause", a)
	}
	r := host.GetSentLocalResponse(id)
	if r == nil || r.StatusCode != 500 || string(r.Data) != "enqueue: "+types.ErrorStatusNotFound.Error() {
		t.Fatalf("local response %+v", r)
	}
	host.CallOnResponseHeaders(id, [][2]string{{":status", "500"}}, false)
	if _, ok := header(host.GetCurrentResponseHeaders(id), "x-enqueued"); ok {
		t.Error("x-enqueued on the local reply")
	}
	if len(host.GetErrorLogs()) < 2 {
		t.Errorf("error logs %q, want the vm id and the enqueue errors", host.GetErrorLogs())
	}
}

func TestNeedsConfiguration(t *testing.T) {
	host := newHost(t, proxytest.NewEmulatorOption())
	if st := host.StartPlugin(); st != types.OnPluginStartStatusFailed {
		t.Fatalf("StartPlugin without a queue name: %v, want Failed", st)
	}
}
