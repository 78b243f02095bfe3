package filters

import (
	"context"
	"errors"
	"testing"

	"github.com/sluice-edge/sluice/filters/internal/cowmem"
)

// withBudget gives a test's plugin its own memory budget of pages pages.
func withBudget(b *MemoryBudget) func(*Config) {
	return func(c *Config) { c.MemoryBudget = b }
}

// H24: instances are charged their memory; one that does not fit the
// budget is refused before it exists, as overload (not a filter failure),
// and closing an instance gives its memory back.
func TestMemoryBudgetRefusesInstancesThatDoNotFit(t *testing.T) {
	for _, mode := range benchModes {
		t.Run(mode.name, func(t *testing.T) {
			budget := NewMemoryBudget(3 * wasmPageSize)
			p := mustLoad(t, guest(t, ""), withBudget(budget), mode.opt)
			ctx := context.Background()
			var held []*Instance
			for range 3 {
				inst, err := p.NewInstance(ctx, newExchange())
				if err != nil {
					t.Fatalf("instance %d: %v", len(held)+1, err)
				}
				held = append(held, inst)
			}
			if used := budget.Used(); used != 3*wasmPageSize {
				t.Errorf("3 one-page instances hold %d bytes, want %d", used, 3*wasmPageSize)
			}
			_, err := p.NewInstance(ctx, newExchange())
			var ge *GuestError
			if !errors.Is(err, ErrOverloaded) || errors.As(err, &ge) {
				t.Fatalf("a fourth instance: %v, want ErrOverloaded and no guest error", err)
			}
			held[0].Close(ctx)
			inst, err := p.NewInstance(ctx, newExchange())
			if err != nil {
				t.Fatalf("after a close: %v", err)
			}
			held[0] = inst
			for _, inst := range held {
				inst.Close(ctx)
			}
			if used := budget.Used(); used != 0 {
				t.Errorf("%d bytes still charged after every instance closed", used)
			}
		})
	}
}

// memory.grow past the budget fails inside the guest, as at memory_limit,
// and a guest that then writes out of bounds fails with ErrMemoryLimit
// although its own limit is far away.
func TestMemoryBudgetRefusesGrowth(t *testing.T) {
	budget := NewMemoryBudget(3 * wasmPageSize)
	p := mustLoad(t, guest(t, `
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (call $logkv $"grow" (i32.add (memory.grow (i32.const 1)) (i32.const 1)))
    (call $logkv $"grow" (i32.add (memory.grow (i32.const 5)) (i32.const 1)))
    (i32.const 0))
  (func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32)
    (i32.store (i32.mul (memory.size) (i32.const 65536)) (i32.const 1))
    (i32.const 0))`), withBudget(budget))
	inst, hc, ex := newHTTP(t, p)
	if _, err := hc.RequestHeaders(0, true); err != nil {
		t.Fatal(err)
	}
	// grow+1: the old size in pages plus one (2), then 0 for -1.
	ex.wantLogs(t, "grow=2", "grow=0")
	if used := budget.Used(); used != 2*wasmPageSize {
		t.Errorf("budget holds %d bytes, want the instance's two pages", used)
	}
	_, err := hc.ResponseHeaders(0, true)
	wantGuestError(t, err, ErrMemoryLimit)
	inst.Close(context.Background())
	if used := budget.Used(); used != 0 {
		t.Errorf("%d bytes still charged after the instance closed", used)
	}
}

// A full budget does not stop a filter from loading: the instance Load
// starts belongs to the operator, not to a request.
func TestFullBudgetDoesNotFailALoad(t *testing.T) {
	budget := NewMemoryBudget(0)
	p := mustLoad(t, guest(t, ""), withBudget(budget))
	if _, err := p.NewInstance(context.Background(), newExchange()); !errors.Is(err, ErrOverloaded) {
		t.Errorf("a request's instance with an empty budget: %v, want ErrOverloaded", err)
	}
	if used := budget.Used(); used != 0 {
		t.Errorf("%d bytes charged", used)
	}
}

// Past the process's limit on mapped memories (a quarter of the kernel's
// vm.max_map_count), a new instance is refused as overload, whatever the
// budget says, and one closing makes room.
func TestMappingLimitRefusesInstances(t *testing.T) {
	for _, mode := range benchModes {
		t.Run(mode.name, func(t *testing.T) {
			p := mustLoad(t, guest(t, ""), mode.opt)
			ctx := context.Background()
			// Room for one more mapping: the first instance takes it, or
			// the memory the pool kept from Load's instance, then the next.
			defer cowmem.SetMappedLimit(cowmem.SetMappedLimit(cowmem.Mapped() + 1))
			var (
				held []*Instance
				err  error
			)
			for len(held) < 3 && err == nil {
				var inst *Instance
				if inst, err = p.NewInstance(ctx, newExchange()); err == nil {
					held = append(held, inst)
				}
			}
			var ge *GuestError
			if !errors.Is(err, ErrOverloaded) || !errors.Is(err, cowmem.ErrTooManyMemories) || errors.As(err, &ge) {
				t.Fatalf("instance %d, past the mapping limit: %v, want ErrOverloaded", len(held)+1, err)
			}
			held[0].Close(ctx) // kept idle by its pool: the next instance reuses it
			if held[0], err = p.NewInstance(ctx, newExchange()); err != nil {
				t.Fatalf("after a close: %v", err)
			}
			for _, inst := range held {
				inst.Close(ctx)
			}
		})
	}
}
