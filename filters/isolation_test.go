package filters

import (
	"context"
	"fmt"
	"testing"

	"github.com/sluice-edge/sluice/abi"
)

// counterGuest counts requests in a mutable global and probes memory: it
// logs the counter, the word at 6000 (initialized by a data segment to 1)
// and the word at 6100 (zero), then overwrites both.
const counterGuest = `
  (global $count (mut i32) (i32.const 0))
  (data (i32.const 6000) "\01\00\00\00")
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (global.set $count (i32.add (global.get $count) (i32.const 1)))
    (call $logkv $"count" (global.get $count))
    (call $logkv $"mem" (i32.load (i32.const 6000)))
    (call $logkv $"zero" (i32.load (i32.const 6100)))
    (i32.store (i32.const 6000) (i32.const 57005))
    (i32.store (i32.const 6100) (i32.const 48879))
    (i32.const 0))`

// The core promise: nothing one request's instance writes, in globals or in
// memory, is seen by the next request's instance.
func TestFreshInstancePerRequestSharesNothing(t *testing.T) {
	p := mustLoad(t, guest(t, counterGuest))
	ctx := context.Background()
	for i := range 5 {
		t.Run(fmt.Sprint("request ", i), func(t *testing.T) {
			_, hc, ex := newHTTP(t, p)
			if _, err := hc.RequestHeaders(0, true); err != nil {
				t.Fatal(err)
			}
			ex.wantLogs(t, "count=1", "mem=1", "zero=0")
		})
	}

	// The probe does see state that is shared: two contexts in one instance.
	t.Run("control: one instance, two contexts", func(t *testing.T) {
		inst, hc, ex := newHTTP(t, p)
		if _, err := hc.RequestHeaders(0, true); err != nil {
			t.Fatal(err)
		}
		hc2, err := inst.NewHTTPContext(ctx, ex)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := hc2.RequestHeaders(0, true); err != nil {
			t.Fatal(err)
		}
		ex.wantLogs(t, "count=1", "mem=1", "zero=0", "count=2", "mem=57005", "zero=48879")
		if hc2.id == hc.id {
			t.Errorf("two contexts of one instance share id %d", hc.id)
		}
	})
}

// Instances of one plugin are independent while they coexist, too.
func TestConcurrentInstancesAreIndependent(t *testing.T) {
	p := mustLoad(t, guest(t, counterGuest))
	type pair struct {
		hc *HTTPContext
		ex *fakeExchange
	}
	var live []pair
	for range 4 {
		_, hc, ex := newHTTP(t, p)
		live = append(live, pair{hc, ex})
	}
	for round := range 2 {
		for _, l := range live {
			if _, err := l.hc.RequestHeaders(0, true); err != nil {
				t.Fatal(err)
			}
			if round == 0 {
				l.ex.wantLogs(t, "count=1", "mem=1", "zero=0")
			}
		}
	}
	for _, l := range live {
		l.ex.wantLogs(t, "count=1", "mem=1", "zero=0", "count=2", "mem=57005", "zero=48879")
	}
}

// The same promise with a filter built by stock Go and the official SDK: its
// request counter (a Go package variable) reads 1 in every instance.
func TestGoSDKFilterPerRequestIsolation(t *testing.T) {
	p := mustLoad(t, goHeadersModule(t))
	if p.ABIVersion() != "0.2.0" {
		t.Errorf("the Go SDK filter advertises ABI %q, want 0.2.0", p.ABIVersion())
	}
	ctx := context.Background()
	run := func(hc *HTTPContext, ex *fakeExchange) {
		t.Helper()
		req := ex.maps[abi.MapRequestHeaders]
		req.pairs = append(req.pairs, [2]string{"x-replaced", "old"}, [2]string{"x-removed", "yes"})
		if out, err := hc.RequestHeaders(len(req.pairs), false); err != nil || out != Continue {
			t.Fatalf("RequestHeaders = %v, %v", out, err)
		}
		resp := ex.maps[abi.MapResponseHeaders]
		resp.pairs = append(resp.pairs, [2]string{"x-upstream-secret", "s3cr3t"})
		if out, err := hc.ResponseHeaders(len(resp.pairs), false); err != nil || out != Continue {
			t.Fatalf("ResponseHeaders = %v, %v", out, err)
		}
	}
	for i := range 3 {
		inst, hc, ex := newHTTP(t, p)
		run(hc, ex)
		req, resp := ex.maps[abi.MapRequestHeaders], ex.maps[abi.MapResponseHeaders]
		if got := resp.get("x-count"); got != "1" {
			t.Errorf("instance %d: x-count %q, want 1", i, got)
		}
		if req.get("x-added") != "req" || req.get("x-replaced") != "new" || req.get("x-removed") != "" {
			t.Errorf("instance %d: request headers %q", i, req.pairs)
		}
		if resp.get("x-added") != "resp" || resp.get("x-upstream-secret") != "" {
			t.Errorf("instance %d: response headers %q", i, resp.pairs)
		}
		if err := hc.Finish(); err != nil {
			t.Fatal(err)
		}
		inst.Close(ctx)
	}

	// Control: a second request in the same instance counts 2.
	inst, hc, ex := newHTTP(t, p)
	run(hc, ex)
	ex2 := newExchange()
	hc2, err := inst.NewHTTPContext(ctx, ex2)
	if err != nil {
		t.Fatal(err)
	}
	run(hc2, ex2)
	if got := ex2.maps[abi.MapResponseHeaders].get("x-count"); got != "2" {
		t.Errorf("second request in one instance: x-count %q, want 2", got)
	}
}
