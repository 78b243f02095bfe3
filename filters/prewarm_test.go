package filters

import (
	"context"
	"testing"
	"time"
)

// waitReady waits until p's warm pool holds n instances.
func waitReady(t *testing.T, p *Plugin, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for len(p.warm.ready) != n {
		if time.Now().After(deadline) {
			t.Fatalf("the warm pool holds %d instances, want %d", len(p.warm.ready), n)
		}
		time.Sleep(time.Millisecond)
	}
}

// A plugin keeps Prewarm instances ready; each request takes one that has
// never run a callback (its guest state is the snapshot's), and the pool
// refills behind it. The ready instances hold budget, which closing the
// plugin, twice even, gives back. Recycling is off: a request would take
// the isolate the previous one left instead (see recycle_test.go).
func TestPrewarmedInstancesAreFreshAndRefilled(t *testing.T) {
	budget := NewMemoryBudget(1 << 30)
	p := mustLoad(t, guest(t, `
  (global $calls (mut i32) (i32.const 0))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (global.set $calls (i32.add (global.get $calls) (i32.const 1)))
    (call $logkv $"calls" (global.get $calls))
    (i32.const 0))`), withBudget(budget), func(c *Config) { c.Prewarm, c.DisableRecycling = 2, true })
	if p.warm == nil {
		t.Fatalf("no warm pool (start mode %q)", p.StartMode())
	}
	waitReady(t, p, 2)
	if used := budget.Used(); used != 2*wasmPageSize {
		t.Errorf("two ready one-page instances hold %d bytes of budget", used)
	}
	for range 5 {
		inst, hc, ex := newHTTP(t, p)
		if inst.Origin() != OriginPrewarmed {
			t.Errorf("origin %q with two instances ready, want %q", inst.Origin(), OriginPrewarmed)
		}
		if _, err := hc.RequestHeaders(0, true); err != nil {
			t.Fatal(err)
		}
		ex.wantLogs(t, "calls=1")
		inst.Close(context.Background())
		waitReady(t, p, 2)
	}

	if err := p.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if used := budget.Used(); used != 0 {
		t.Errorf("%d bytes of budget held after the plugin closed", used)
	}
}
