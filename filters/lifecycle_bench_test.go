package filters

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/sluice-edge/sluice/abi"
)

// BenchmarkIsolateLifecycle measures what one request costs a filter: a
// fresh instance (_initialize, proxy_on_vm_start, root context,
// proxy_on_configure), an HTTP context, request and response headers,
// Finish and Close. Besides the mean it reports the median and the 99th
// percentile of single iterations, where host GC shows.
func BenchmarkIsolateLifecycle(b *testing.B) {
	for _, tc := range []struct {
		name   string
		module func(testing.TB) []byte
		header string // a response header the filter sets
		value  string
	}{
		{"wat", addHeaderModule, "x-wat", "hello"},
		{"go-sdk", goHeadersModule, "x-count", "1"},
	} {
		b.Run(tc.name, func(b *testing.B) {
			p := mustLoad(b, tc.module(b), func(c *Config) { c.Limits = Limits{} }) // production defaults
			ctx := context.Background()
			durations := make([]time.Duration, 0, 1024)
			var ex *fakeExchange
			b.ReportAllocs()
			for b.Loop() {
				start := time.Now()
				ex = newExchange()
				if err := lifecycle(ctx, p, ex, 3); err != nil {
					b.Fatal(err)
				}
				durations = append(durations, time.Since(start))
			}
			if got := ex.maps[abi.MapResponseHeaders].get(tc.header); got != tc.value {
				b.Fatalf("the filter set %s: %q, want %q", tc.header, got, tc.value)
			}
			slices.Sort(durations)
			at := func(q float64) float64 { return float64(durations[int(q*float64(len(durations)-1))]) }
			b.ReportMetric(at(0.50), "p50-ns")
			b.ReportMetric(at(0.99), "p99-ns")
		})
	}
}
