package filters

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/sluice-edge/sluice/abi"
	"github.com/sluice-edge/sluice/filters/internal/cowmem"
)

// recycleGuest is counterGuest that also reports its memory's size in
// pages, and grows it by a page when the request has a header.
const recycleGuest = `
  (global $count (mut i32) (i32.const 0))
  (global $wide (mut i64) (i64.const 7))
  (data (i32.const 6000) "\01\00\00\00")
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (global.set $count (i32.add (global.get $count) (i32.const 1)))
    (call $logkv $"count" (global.get $count))
    (call $logkv $"wide" (i32.wrap_i64 (global.get $wide)))
    (call $logkv $"mem" (i32.load (i32.const 6000)))
    (call $logkv $"zero" (i32.load (i32.const 6100)))
    (call $logkv $"pages" (memory.size))
    (global.set $wide (i64.const 99))
    (i32.store (i32.const 6000) (i32.const 57005))
    (i32.store (i32.const 6100) (i32.const 48879))
    (if (local.get 1) (then (drop (memory.grow (i32.const 1)))))
    (i32.const 0))`

// requestOnce runs one request's headers through a new instance of p with
// numHeaders request headers, checks what the guest logged, closes the
// instance and returns how it was made and what the call returned.
func requestOnce(t *testing.T, p *Plugin, numHeaders int, logs ...string) (Origin, error) {
	t.Helper()
	ex := newExchange()
	inst, err := p.NewInstance(context.Background(), ex)
	if err != nil {
		t.Fatalf("NewInstance: %v", err)
	}
	defer inst.Close(context.Background())
	hc, err := inst.NewHTTPContext(context.Background(), ex)
	if err != nil {
		t.Fatalf("NewHTTPContext: %v", err)
	}
	_, err = hc.RequestHeaders(numHeaders, true)
	if logs != nil {
		ex.wantLogs(t, logs...)
	}
	if err == nil {
		err = hc.Finish()
	}
	return inst.Origin(), err
}

var snapshotState = []string{"count=1", "wide=7", "mem=1", "zero=0", "pages=1"}

// A request's isolate serves the next request once reset: that request
// sees the snapshot's globals and memory, exactly as in a new instance.
func TestRecycledIsolateStartsFromTheSnapshot(t *testing.T) {
	p := mustLoad(t, guest(t, recycleGuest))
	for i := range 5 {
		origin, err := requestOnce(t, p, 0, snapshotState...)
		if err != nil {
			t.Fatal(err)
		}
		if want := map[bool]Origin{true: OriginRestored, false: OriginRecycled}[i == 0]; origin != want {
			t.Errorf("request %d: origin %q, want %q", i, origin, want)
		}
	}
}

// The same with a stock-Go filter: its request counter (a Go package
// variable) and everything its runtime wrote are back as the snapshot had
// them.
func TestRecycledGoSDKIsolate(t *testing.T) {
	p := mustLoad(t, goHeadersModule(t))
	for i := range 4 {
		inst, hc, ex := newHTTP(t, p)
		if i > 0 && inst.Origin() != OriginRecycled {
			t.Errorf("request %d: origin %q, want recycle", i, inst.Origin())
		}
		if _, err := hc.RequestHeaders(0, false); err != nil {
			t.Fatal(err)
		}
		if _, err := hc.ResponseHeaders(0, false); err != nil {
			t.Fatal(err)
		}
		if got := ex.maps[abi.MapResponseHeaders].get("x-count"); got != "1" {
			t.Errorf("request %d: x-count %q, want 1", i, got)
		}
		if err := hc.Finish(); err != nil {
			t.Fatal(err)
		}
		inst.Close(context.Background())
	}
}

// What a reset cannot undo is not recycled: the next request gets a new
// isolate, and still the snapshot's state.
func TestIsolatesThatCannotBeResetAreDiscarded(t *testing.T) {
	trapping := guest(t, recycleGuest+`
  (func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32) unreachable)`)
	for _, tc := range []struct {
		name    string
		module  []byte
		request func(t *testing.T, p *Plugin)
	}{
		{"memory grew", guest(t, recycleGuest), func(t *testing.T, p *Plugin) {
			if _, err := requestOnce(t, p, 1, snapshotState...); err != nil {
				t.Fatal(err)
			}
		}},
		{"trapped", trapping, func(t *testing.T, p *Plugin) {
			inst, hc, _ := newHTTP(t, p)
			if _, err := hc.RequestHeaders(0, false); err != nil {
				t.Fatal(err)
			}
			_, err := hc.ResponseHeaders(0, true)
			wantGuestError(t, err, ErrTrap)
			inst.Close(context.Background())
		}},
		{"request canceled", guest(t, recycleGuest), func(t *testing.T, p *Plugin) {
			ctx, cancel := context.WithCancel(context.Background())
			inst, hc, _ := newHTTPFor(t, p, ctx)
			cancel()
			_, err := hc.RequestHeaders(0, true)
			wantGuestError(t, err, ErrCanceled)
			inst.Close(context.Background())
		}},
		{"closed during a call", guest(t, failingIn(abi.OnRequestHeaders, `(call $log $"spinning") (call $spin)`)), func(t *testing.T, p *Plugin) {
			inst, ex, done := blockedRequest(t, p) // the guest is in the call
			close(ex.release)
			inst.Close(context.Background())
			wantGuestError(t, <-done, ErrCanceled)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := mustLoad(t, tc.module, withTimeout(time.Minute))
			tc.request(t, p)
			if len(p.spares.list) != 0 {
				t.Fatalf("%d isolates kept", len(p.spares.list))
			}
			inst, err := p.NewInstance(context.Background(), newExchange())
			if err != nil {
				t.Fatal(err)
			}
			defer inst.Close(context.Background())
			if inst.Origin() != OriginRestored {
				t.Errorf("origin %q, want restore", inst.Origin())
			}
		})
	}
}

// A closed instance whose isolate went to another request fails its calls
// as a closed instance does, and closing it again changes nothing.
func TestRecycledInstanceIsClosed(t *testing.T) {
	p := mustLoad(t, guest(t, recycleGuest))
	inst, hc, _ := newHTTP(t, p)
	inst.Close(context.Background())
	next, hc2, ex2 := newHTTP(t, p)
	if next.Origin() != OriginRecycled {
		t.Fatalf("origin %q, want recycle", next.Origin())
	}
	_, err := hc.RequestHeaders(0, true)
	if ge := wantGuestError(t, err, ErrCanceled); !errors.Is(ge.Err, errInstanceClosed) {
		t.Errorf("a call into the closed instance: %v", err)
	}
	inst.Close(context.Background())
	if _, err := hc2.RequestHeaders(0, true); err != nil {
		t.Fatal(err)
	}
	ex2.wantLogs(t, snapshotState...)
}

// With recycling disabled, every request gets a new isolate, and the
// plugin says so.
func TestRecyclingDisabled(t *testing.T) {
	p := mustLoad(t, guest(t, recycleGuest), func(c *Config) { c.DisableRecycling = true })
	if mode := p.StartMode(); mode != "snapshot, not recycled: recycling disabled" {
		t.Errorf("start mode %q", mode)
	}
	for range 3 {
		origin, err := requestOnce(t, p, 0, snapshotState...)
		if err != nil {
			t.Fatal(err)
		}
		if origin != OriginRestored {
			t.Errorf("origin %q, want restore", origin)
		}
	}
}

// Spare isolates hold no budget; one taken is charged again, and refused
// when the budget is full. Closing the plugin unmaps them all, and an
// instance closed after its plugin is not kept.
func TestSpareIsolatesBudgetAndClose(t *testing.T) {
	mappedBefore := cowmem.Mapped()
	budget := NewMemoryBudget(2 * wasmPageSize)
	p, err := Load(context.Background(), config(guest(t, recycleGuest), withBudget(budget)))
	if err != nil {
		t.Fatal(err)
	}
	a, _ := p.NewInstance(context.Background(), newExchange())
	b, _ := p.NewInstance(context.Background(), newExchange())
	a.Close(context.Background())
	b.Close(context.Background())
	if used, spares := budget.Used(), len(p.spares.list); used != 0 || spares != 2 {
		t.Fatalf("two spare isolates: %d bytes of budget used, %d kept", used, spares)
	}
	held := budget.Charge(wasmPageSize * 2)
	if !held {
		t.Fatal("the budget refused what the spares should have given back")
	}
	if _, err := p.NewInstance(context.Background(), newExchange()); !errors.Is(err, ErrOverloaded) {
		t.Fatalf("an instance over budget: %v, want ErrOverloaded", err)
	}
	budget.Refund(wasmPageSize * 2)
	c, err := p.NewInstance(context.Background(), newExchange())
	if err != nil || c.Origin() != OriginRecycled || len(p.spares.list) != 1 {
		t.Fatalf("after the refusal: %v, origin %q, %d spares", err, c.Origin(), len(p.spares.list))
	}
	if used := budget.Used(); used != wasmPageSize {
		t.Errorf("a recycled one-page instance holds %d bytes", used)
	}
	if err := p.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	c.Close(context.Background())
	if used := budget.Used(); used != 0 {
		t.Errorf("%d bytes of budget held after the plugin closed", used)
	}
	if mapped := cowmem.Mapped(); mapped != mappedBefore {
		t.Errorf("%d memories mapped after the plugin closed, %d before", mapped, mappedBefore)
	}
}

// Closes of one instance at once: the first recycles it, the others must
// not touch the isolate it handed on.
func TestConcurrentClosesLeaveTheSpareAlone(t *testing.T) {
	p := mustLoad(t, guest(t, recycleGuest))
	for range 100 {
		inst, hc, _ := newHTTP(t, p)
		if _, err := hc.RequestHeaders(0, true); err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		for range 3 {
			wg.Go(func() { inst.Close(context.Background()) })
		}
		wg.Wait()
		p.spares.mu.Lock()
		for _, iso := range p.spares.list {
			if iso.mod.IsClosed() {
				t.Error("a spare isolate's module is closed")
			}
		}
		p.spares.mu.Unlock()
	}
}

// An instance that outlives its plugin (a request running through a
// reload) is discarded when it ends, its memory unmapped.
func TestInstanceClosedAfterItsPlugin(t *testing.T) {
	mappedBefore := cowmem.Mapped()
	p, err := Load(context.Background(), config(guest(t, recycleGuest)))
	if err != nil {
		t.Fatal(err)
	}
	inst, hc, ex := newHTTP(t, p)
	if _, err := hc.RequestHeaders(0, true); err != nil {
		t.Fatal(err)
	}
	ex.wantLogs(t, snapshotState...)
	if err := p.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	inst.Close(context.Background())
	if mapped := cowmem.Mapped(); mapped != mappedBefore {
		t.Errorf("%d memories mapped, %d before the plugin", mapped, mappedBefore)
	}
}

// With recycling on, pre-warming restores its instances at load and keeps
// them as spares, holding no budget; no goroutine refills them.
func TestPrewarmSeedsSpares(t *testing.T) {
	budget := NewMemoryBudget(1 << 30)
	p := mustLoad(t, guest(t, recycleGuest), withBudget(budget), func(c *Config) { c.Prewarm = 3 })
	if p.warm != nil || len(p.spares.list) != 3 {
		t.Fatalf("warm pool %v, %d spares; want none and 3", p.warm != nil, len(p.spares.list))
	}
	if used := budget.Used(); used != 0 {
		t.Errorf("spares hold %d bytes of budget", used)
	}
	origin, err := requestOnce(t, p, 0, snapshotState...)
	if err != nil || origin != OriginRecycled {
		t.Errorf("first request: origin %q, %v; want recycle", origin, err)
	}
}
