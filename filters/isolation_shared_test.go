package filters

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"
)

func withShared(n int) func(*Config) {
	return func(c *Config) { c.Isolation, c.SharedInstances = IsolationShared, n }
}

// countingGuest counts requests in a global and traps on the request whose
// count is trapAt (0: never).
func countingGuest(trapAt int) string {
	return fmt.Sprintf(`
  (global $n (mut i32) (i32.const 0))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (global.set $n (i32.add (global.get $n) (i32.const 1)))
    (call $logkv $"n" (global.get $n))
    (if (i32.eq (global.get $n) (i32.const %d)) (then (unreachable)))
    (i32.const 0))
  (func (export "proxy_on_delete") (param i32) (call $log $"deleted"))`, trapAt)
}

// sharedRequest runs one request through p's shared instances.
func sharedRequest(ctx context.Context, p *Plugin) (*fakeExchange, error) {
	ex := newExchange()
	inst, err := p.Acquire(ctx, ex)
	if err != nil {
		return ex, err
	}
	defer inst.Release()
	hc, err := inst.NewHTTPContext(ctx, ex)
	if err != nil {
		return ex, err
	}
	if _, err := hc.RequestHeaders(0, true); err != nil {
		_ = hc.Finish()
		return ex, err
	}
	return ex, hc.Finish()
}

// In shared isolation, requests share an instance's memory: the guest's
// counter keeps counting, and each context is deleted when its request
// ends.
func TestSharedIsolationKeepsState(t *testing.T) {
	for _, mode := range benchModes {
		t.Run(mode.name, func(t *testing.T) {
			p := mustLoad(t, guest(t, countingGuest(0)), withShared(1), mode.opt)
			for i := 1; i <= 3; i++ {
				ex, err := sharedRequest(context.Background(), p)
				if err != nil {
					t.Fatal(err)
				}
				ex.wantLogs(t, fmt.Sprintf("n=%d", i), "deleted")
			}
		})
	}
}

// A failure ends the shared instance; the next request gets a new one,
// which starts from the configured state.
func TestSharedInstanceIsReplacedAfterAFailure(t *testing.T) {
	p := mustLoad(t, guest(t, countingGuest(2)), withShared(1))
	if _, err := sharedRequest(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	_, err := sharedRequest(context.Background(), p)
	wantGuestError(t, err, ErrTrap)
	ex, err := sharedRequest(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	ex.wantLogs(t, "n=1", "deleted")
}

// A request that ended fails alone: the instance, and the requests after
// it, carry on.
func TestCanceledRequestDoesNotEndTheSharedInstance(t *testing.T) {
	p := mustLoad(t, guest(t, countingGuest(0)), withShared(1))
	if _, err := sharedRequest(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := sharedRequest(ctx, p)
	wantGuestError(t, err, ErrCanceled)
	ex, err := sharedRequest(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	ex.wantLogs(t, "n=2", "deleted")
}

// Many goroutines share two instances; every request is counted once.
func TestSharedInstancesUnderConcurrency(t *testing.T) {
	p := mustLoad(t, guest(t, countingGuest(0)), withShared(2))
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 25 {
				if _, err := sharedRequest(context.Background(), p); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	total := 0
	p.shared.mu.Lock()
	for _, s := range p.shared.slots {
		if s != nil {
			s.inst.mu.Lock()
			n := s.inst.nextContextID - rootContextID - 1
			s.inst.mu.Unlock()
			total += int(n)
		}
	}
	p.shared.mu.Unlock()
	if total != 200 {
		t.Errorf("the instances served %d requests, want 200", total)
	}
}

// A command module whose _start ends with proc_exit(0) has started well: in
// shared isolation its instance serves request after request, not one each.
func TestSharedCommandModuleKeepsItsInstance(t *testing.T) {
	for _, mode := range benchModes {
		t.Run(mode.name, func(t *testing.T) {
			body := countingGuest(0) + `(func (export "_start") (call $proc_exit (i32.const 0)))`
			p := mustLoad(t, guest(t, body), withShared(1), mode.opt)
			for i := 1; i <= 3; i++ {
				ex, err := sharedRequest(context.Background(), p)
				if err != nil {
					t.Fatal(err)
				}
				ex.wantLogs(t, fmt.Sprintf("n=%d", i), "deleted")
			}
		})
	}
}

// Shared isolation keeps one instance per core by default.
func TestSharedPoolHasOneSlotPerCore(t *testing.T) {
	if got, want := len(newSharedPool(nil, 0).slots), runtime.GOMAXPROCS(0); got != want {
		t.Errorf("%d slots, want one per core (%d)", got, want)
	}
}

// The defaults the README's directive table promises, as numbers: a
// changed constant must change the table too.
func TestDefaultsAreTheDocumentedOnes(t *testing.T) {
	for name, c := range map[string]struct{ got, want any }{
		"timeout":           {DefaultTimeout, 500 * time.Millisecond},
		"start factor":      {StartTimeoutFactor, 10},
		"memory_limit":      {DefaultMemoryLimit, 64 << 20},
		"max_body_size":     {DefaultMaxBodySize, 10 << 20},
		"prewarm":           {DefaultPrewarm, 4},
		"max_http_calls":    {DefaultMaxHTTPCalls, 16},
		"http_call_timeout": {DefaultHTTPCallTimeout, 5 * time.Second},
	} {
		if c.got != c.want {
			t.Errorf("%s: %v, the README says %v", name, c.got, c.want)
		}
	}
}
