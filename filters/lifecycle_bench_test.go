package filters

import (
	"context"
	"os"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tetratelabs/wazero"

	"github.com/sluice-edge/sluice/abi"
	"github.com/sluice-edge/sluice/tests/guestbuild"
)

// The filters the benchmarks compare: the same job (add response headers)
// written four ways: WebAssembly text, C, and stock Go with the official
// Proxy-Wasm Go SDK (go-sdk) and with Sluice's own SDK (sluice-sdk).
var benchFilters = []struct {
	name   string
	module func(testing.TB) []byte
	header string // a response header the filter sets
	value  string
}{
	{"wat", addHeaderModule, "x-wat", "hello"},
	{"c", cAddHeaderModule, "x-c-filter", "hello"},
	{"go-sdk", goHeadersModule, "x-count", "1"},
	{"sluice-sdk", sluiceSDKHeadersModule, "x-count", "1"},
}

// sluiceSDKHeadersModule returns tests/guests/sdkheaders: tests/guests/headers
// written with Sluice's SDK.
func sluiceSDKHeadersModule(t testing.TB) []byte {
	t.Helper()
	b, err := os.ReadFile(guestbuild.Go(t, "sdkheaders"))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func cAddHeaderModule(t testing.TB) []byte {
	t.Helper()
	b, err := os.ReadFile(guestbuild.C(t, "add_header"))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The ways instances start (see snapshot.go): restored from a snapshot
// into a recycled isolate (the default), restored into a new wazero module
// each time, or fresh, running the start-up lifecycle each time.
var benchModes = []struct {
	name string
	opt  func(*Config)
}{
	{"snapshot", func(*Config) {}},
	{"snapshot-new", func(c *Config) { c.DisableRecycling = true }},
	{"fresh", freshStart},
}

// BenchmarkIsolateLifecycle measures what one request costs a filter when
// requests come back to back: a fresh instance, an HTTP context, request and
// response headers, proxy_on_done/log/delete, and discarding the instance.
// No instances are prepared ahead, so this is the whole CPU cost. Besides
// the mean it reports the median and 99th percentile of single iterations,
// where host GC shows. "shared" is IsolationShared for comparison: no
// instance per request, an HTTP context in a long-lived one.
func BenchmarkIsolateLifecycle(b *testing.B) {
	modes := append(slices.Clone(benchModes), struct {
		name string
		opt  func(*Config)
	}{"shared", func(c *Config) { c.Isolation = IsolationShared }})
	for _, mode := range modes {
		for _, f := range benchFilters {
			b.Run(mode.name+"/"+f.name, func(b *testing.B) {
				p := mustLoad(b, f.module(b), func(c *Config) { c.Limits = Limits{} }, mode.opt)
				value := f.value
				if mode.name == "shared" && strings.HasSuffix(f.name, "-sdk") {
					value = "" // its request counter counts on in a shared instance
				}
				runLifecycles(b, p, f.header, value, 0)
			})
		}
	}
}

// BenchmarkIsolateLatency measures the same lifecycle as a request sees it
// when requests arrive at a moderate rate (one every pace), with the default
// number of instances restored ahead of time (Config.Prewarm), against none.
func BenchmarkIsolateLatency(b *testing.B) {
	const pace = 2 * time.Millisecond
	for _, prewarm := range []int{0, DefaultPrewarm} {
		for _, f := range benchFilters {
			b.Run("prewarm-"+strconv.Itoa(prewarm)+"/"+f.name, func(b *testing.B) {
				p := mustLoad(b, f.module(b), func(c *Config) { c.Limits, c.Prewarm = Limits{}, prewarm })
				runLifecycles(b, p, f.header, f.value, pace)
			})
		}
	}
}

// runLifecycles runs b.N lifecycles of p, pace apart (pace 0: back to back),
// and reports the distribution of their durations.
func runLifecycles(b *testing.B, p *Plugin, header, value string, pace time.Duration) {
	ctx := context.Background()
	durations := make([]time.Duration, 0, 1024)
	var ex *fakeExchange
	b.ReportAllocs()
	for b.Loop() {
		if pace > 0 {
			b.StopTimer()
			time.Sleep(pace)
			b.StartTimer()
		}
		start := time.Now()
		ex = newExchange()
		if err := lifecycle(ctx, p, ex, 3); err != nil {
			b.Fatal(err)
		}
		durations = append(durations, time.Since(start))
	}
	if got := ex.maps[abi.MapResponseHeaders].get(header); value != "" && got != value {
		b.Fatalf("the filter set %s: %q, want %q", header, got, value)
	}
	slices.Sort(durations)
	at := func(q float64) float64 { return float64(durations[int(q*float64(len(durations)-1))]) }
	b.ReportMetric(at(0.50), "p50-ns")
	b.ReportMetric(at(0.99), "p99-ns")
}

// BenchmarkResidentPerInstance measures the resident memory each in-flight
// instance adds: it holds many instances at once, each having served its
// request and response headers (so the guest's writes are in), and reports
// the growth of the process's private dirty memory per instance: the pages
// instances wrote (copy-on-write copies), their own anonymous pages, and the
// Go heap wazero's and Sluice's structures live in. The shared image is a
// file mapping, resident once for all instances, and not counted.
func BenchmarkResidentPerInstance(b *testing.B) {
	const inFlight = 1000
	for _, mode := range benchModes {
		for _, f := range benchFilters {
			b.Run(mode.name+"/"+f.name, func(b *testing.B) {
				p := mustLoad(b, f.module(b), func(c *Config) { c.Limits = Limits{} }, mode.opt)
				ctx := context.Background()
				var perInstance float64
				for b.Loop() {
					debug.FreeOSMemory()
					before := privateDirty(b)
					held := make([]*Instance, 0, inFlight)
					for range inFlight {
						ex := newExchange()
						inst, err := p.NewInstance(ctx, ex)
						if err != nil {
							b.Fatal(err)
						}
						hc, err := inst.NewHTTPContext(ctx, ex)
						if err != nil {
							b.Fatal(err)
						}
						if _, err := hc.RequestHeaders(3, true); err != nil {
							b.Fatal(err)
						}
						hc.RequestForwarded()
						if _, err := hc.ResponseHeaders(1, true); err != nil {
							b.Fatal(err)
						}
						held = append(held, inst)
					}
					debug.FreeOSMemory()
					perInstance = float64(privateDirty(b)-before) / inFlight
					for _, inst := range held {
						inst.Close(ctx)
					}
				}
				b.ReportMetric(perInstance/1024, "KiB/instance")
			})
		}
	}
}

// privateDirty reads the process's private dirty memory, in bytes.
func privateDirty(b *testing.B) int64 {
	rollup, err := os.ReadFile("/proc/self/smaps_rollup")
	if err != nil {
		b.Fatalf("resident memory is read from /proc (Linux): %v", err)
	}
	for _, line := range strings.Split(string(rollup), "\n") {
		if v, ok := strings.CutPrefix(line, "Private_Dirty:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	b.Fatal("no Private_Dirty in /proc/self/smaps_rollup")
	return 0
}

// BenchmarkLoadWarmCache measures loading a filter whose compiled code is
// in the on-disk compilation cache (a restart, or a reload that changes the
// filter's configuration): summarize, prepare, compile from the cache,
// start one instance, take its snapshot.
func BenchmarkLoadWarmCache(b *testing.B) {
	for _, f := range benchFilters {
		b.Run(f.name, func(b *testing.B) {
			cache, err := wazero.NewCompilationCacheWithDir(b.TempDir())
			if err != nil {
				b.Fatal(err)
			}
			module := f.module(b)
			load := func() {
				p, err := Load(context.Background(), Config{Name: "bench", Module: module, CompilationCache: cache})
				if err != nil {
					b.Fatal(err)
				}
				_ = p.Close(context.Background())
			}
			load() // warms the cache
			b.ReportAllocs()
			for b.Loop() {
				load()
			}
		})
	}
}
