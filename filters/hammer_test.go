package filters

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluice-edge/sluice/abi"
)

// hammerGuest counts requests, and loops in request headers when told to
// (a header count of 7).
const hammerGuest = `
  (global $count (mut i32) (i32.const 0))
  (func (export "proxy_on_request_headers") (param i32) (param $n i32) (param i32) (result i32)
    (if (i32.eq (local.get $n) (i32.const 7)) (then (call $spin)))
    (global.set $count (i32.add (global.get $count) (i32.const 1)))
    (call $logkv $"count" (global.get $count))
    (i32.const 0))`

// H38: many goroutines compiling, instantiating and closing across several
// modules with one compilation cache: no panic, no race, no leak, and every
// request still sees a fresh instance.
func TestHammerConcurrentLifecyclesWithSharedCache(t *testing.T) {
	const (
		workers    = 32
		iterations = 12
	)
	goModule := goHeadersModule(t)
	modules := map[string][]byte{
		"go-sdk":     goModule,
		"add-header": addHeaderModule(t),
		"counting":   guest(t, hammerGuest),
		"spinning":   guest(t, hammerGuest), // the same module, with a short budget
	}
	// Small distinct modules compiled while the others run: a custom
	// section makes each one new to the cache.
	base := guest(t, hammerGuest)
	nonce := time.Now().UnixNano() // new to the on-disk cache, too

	runtime.GC()
	goroutinesBefore := runtime.NumGoroutine()
	ctx := context.Background()
	cache := testCache // shared with the rest of the tests: the Go SDK guest is compiled once

	// Load the three plugins concurrently.
	loadStart := time.Now()
	plugins := map[string]*Plugin{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for name, module := range modules {
		wg.Go(func() {
			limits := Limits{Timeout: 2 * time.Second, MemoryLimit: 16 << 20}
			if name == "spinning" {
				// Its loops get cut quickly. So may anything else under
				// load; every failure there must be a timeout.
				limits.Timeout = 30 * time.Millisecond
			}
			// Instances restored ahead of time are taken, refilled and
			// closed concurrently with everything else; one plugin starts
			// every instance fresh.
			cfg := Config{Name: name, Module: module, CompilationCache: cache, Limits: limits, Prewarm: DefaultPrewarm}
			if name == "add-header" {
				cfg.DisableSnapshot = true
			}
			p, err := Load(ctx, cfg)
			if err != nil {
				t.Errorf("Load %s: %v", name, err)
				return
			}
			mu.Lock()
			plugins[name] = p
			mu.Unlock()
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	t.Logf("loaded in %v", time.Since(loadStart))
	workStart := time.Now()

	var runs, timeouts, compiles atomic.Int64
	names := []string{"go-sdk", "add-header", "counting"}
	for w := range workers {
		wg.Go(func() {
			for i := range iterations {
				name := names[(w+i)%len(names)]
				ex := newExchange()
				n := 0
				if name == "counting" && (w+i)%4 == 0 {
					name, n = "spinning", 7
				}
				err := lifecycle(ctx, plugins[name], ex, n)
				runs.Add(1)
				switch {
				case n == 7:
					if !errors.Is(err, ErrTimeout) {
						t.Errorf("worker %d: spinning request: %v, want a timeout", w, err)
					}
					timeouts.Add(1)
				case err != nil:
					t.Errorf("worker %d: %s: %v", w, name, err)
				default:
					checkHammerRequest(t, name, ex)
				}

				// Every fourth worker also compiles and discards a new module.
				if w%4 == 0 && i%3 == 0 {
					module := append(slices.Clone(base), section(0, []byte(fmt.Sprintf("\x04uniq%d-%d-%d", w, i, nonce)))...)
					p, err := Load(ctx, Config{Name: "transient", Module: module, CompilationCache: cache})
					if err != nil {
						t.Errorf("worker %d: Load transient: %v", w, err)
						continue
					}
					compiles.Add(1)
					if err := lifecycle(ctx, p, newExchange(), 0); err != nil {
						t.Errorf("worker %d: transient: %v", w, err)
					}
					if err := p.Close(ctx); err != nil {
						t.Errorf("worker %d: Close transient: %v", w, err)
					}
				}
			}
		})
	}
	wg.Wait()
	t.Logf("%d lifecycles, %d timeouts, %d extra compilations in %v",
		runs.Load(), timeouts.Load(), compiles.Load(), time.Since(workStart))

	// Close a plugin while requests are in flight in it: each fails, as
	// the host's doing, promptly, and nothing panics.
	victim, err := Load(ctx, config(modules["counting"], withTimeout(time.Minute), func(c *Config) { c.CompilationCache = cache }))
	if err != nil {
		t.Fatal(err)
	}
	started := make(chan struct{}, 8)
	for range 8 {
		wg.Go(func() {
			inst, err := victim.NewInstance(ctx, newExchange())
			if err != nil {
				t.Errorf("victim instance: %v", err)
				started <- struct{}{}
				return
			}
			defer inst.Close(ctx)
			hc, err := inst.NewHTTPContext(ctx, newExchange())
			if err != nil {
				t.Errorf("victim context: %v", err)
				started <- struct{}{}
				return
			}
			started <- struct{}{}
			begin := time.Now()
			if _, err := hc.RequestHeaders(7, true); !errors.Is(err, ErrCanceled) {
				t.Errorf("a request in a closed plugin: %v, want ErrCanceled", err)
			}
			if d := time.Since(begin); d > 5*time.Second {
				t.Errorf("a request in a closed plugin ran on for %v", d)
			}
		})
	}
	for range 8 {
		<-started
	}
	time.Sleep(20 * time.Millisecond)
	if err := victim.Close(ctx); err != nil {
		t.Errorf("Close victim: %v", err)
	}
	wg.Wait()

	// Close the three plugins concurrently.
	for _, p := range plugins {
		wg.Go(func() {
			if err := p.Close(ctx); err != nil {
				t.Errorf("Close %s: %v", p.Name(), err)
			}
		})
	}
	wg.Wait()

	// No goroutine outlives the plugins (wazero's per-call watchers end
	// with their calls).
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > goroutinesBefore && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if after := runtime.NumGoroutine(); after > goroutinesBefore {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		t.Errorf("%d goroutines before, %d after:\n%s", goroutinesBefore, after, buf)
	}
}

// checkHammerRequest checks that a request went through a fresh instance of
// the plugin it names.
func checkHammerRequest(t *testing.T, name string, ex *fakeExchange) {
	resp := ex.maps[abi.MapResponseHeaders]
	switch name {
	case "go-sdk":
		if got := resp.get("x-count"); got != "1" {
			t.Errorf("go-sdk: x-count %q, want 1", got)
		}
	case "add-header":
		if got := resp.get("x-wat"); got != "hello" {
			t.Errorf("add-header: x-wat %q, want hello", got)
		}
	case "counting":
		if got := strings.Join(ex.messages(), ","); got != "count=1" {
			t.Errorf("counting: logged %q, want count=1", got)
		}
	}
}
