package state

import (
	"fmt"
	"sync/atomic"
	"testing"
)

// A store with some tenants, so lookups are not in a one-entry map.
func benchStore(b *testing.B) *Store {
	b.Helper()
	s := NewStore(Limits{})
	for i := range 100 {
		ns := fmt.Sprint("tenant-", i)
		for k := range 100 {
			if err := s.SetData(ns, fmt.Sprint("key-", k), []byte("value"), 0); err != nil {
				b.Fatal(err)
			}
		}
	}
	return s
}

func BenchmarkGetData(b *testing.B) {
	s := benchStore(b)
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := s.GetData("tenant-50", "key-50"); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkGetDataParallel(b *testing.B) {
	s := benchStore(b)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, _, err := s.GetData("tenant-50", "key-50"); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkSetData(b *testing.B) {
	s := benchStore(b)
	value := []byte("a value of some 32 bytes, say...")
	b.ReportAllocs()
	for b.Loop() {
		if err := s.SetData("tenant-50", "key-50", value, 0); err != nil {
			b.Fatal(err)
		}
	}
}

// Every goroutine sets the same key: the worst contention one namespace
// sees.
func BenchmarkSetDataParallelOneKey(b *testing.B) {
	s := benchStore(b)
	value := []byte("a value of some 32 bytes, say...")
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := s.SetData("tenant-50", "key-50", value, 0); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// Each goroutine in a namespace of its own: namespaces do not contend.
func BenchmarkSetDataParallelNamespaces(b *testing.B) {
	s := benchStore(b)
	value := []byte("a value of some 32 bytes, say...")
	var next atomic.Int64
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		ns := fmt.Sprint("tenant-", next.Add(1))
		for pb.Next() {
			if err := s.SetData(ns, "key-50", value, 0); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// A rate limiter's step: read a counter, write it back with its cas,
// retrying on a mismatch, every goroutine on one key.
func BenchmarkCASIncrementParallel(b *testing.B) {
	s := benchStore(b)
	if err := s.SetData("tenant-50", "tokens", encode(0), 0); err != nil {
		b.Fatal(err)
	}
	var retries atomic.Int64
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			for {
				v, cas, err := s.GetData("tenant-50", "tokens")
				if err != nil {
					b.Fatal(err)
				}
				if err = s.SetData("tenant-50", "tokens", encode(decode(v)+1), cas); err == nil {
					break
				}
				retries.Add(1)
			}
		}
	})
	b.ReportMetric(float64(retries.Load())/float64(b.N), "retries/op")
}

func BenchmarkEnqueueDequeue(b *testing.B) {
	s := benchStore(b)
	id, err := s.RegisterQueue("tenant-50", "q", newRecorder())
	if err != nil {
		b.Fatal(err)
	}
	item := []byte("a queue item of some 32 bytes...")
	b.ReportAllocs()
	for b.Loop() {
		if err := s.Enqueue("tenant-50", id, item); err != nil {
			b.Fatal(err)
		}
		if _, err := s.Dequeue("tenant-50", id); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkEnqueueDequeueParallel(b *testing.B) {
	s := benchStore(b)
	id, err := s.RegisterQueue("tenant-50", "q", newRecorder())
	if err != nil {
		b.Fatal(err)
	}
	item := []byte("a queue item of some 32 bytes...")
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := s.Enqueue("tenant-50", id, item); err != nil {
				b.Fatal(err)
			}
			if _, err := s.Dequeue("tenant-50", id); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// benchMetrics defines metrics for 100 owners and returns one owner's.
func benchMetrics(b *testing.B, typ MetricType) (*Store, string, uint32) {
	b.Helper()
	s := NewStore(Limits{})
	var id uint32
	for o := range 100 {
		for m := range 10 {
			got, err := s.DefineMetric(fmt.Sprint("tenant-", o, "\x00filter"), typ, fmt.Sprint("metric_", m))
			if err != nil {
				b.Fatal(err)
			}
			if o == 50 && m == 5 {
				id = got
			}
		}
	}
	return s, "tenant-50\x00filter", id
}

func BenchmarkIncrementMetric(b *testing.B) {
	s, owner, id := benchMetrics(b, Counter)
	b.ReportAllocs()
	for b.Loop() {
		if err := s.IncrementMetric(owner, id, 1); err != nil {
			b.Fatal(err)
		}
	}
}

// Every goroutine on one counter: the worst contention.
func BenchmarkIncrementMetricParallel(b *testing.B) {
	s, owner, id := benchMetrics(b, Counter)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := s.IncrementMetric(owner, id, 1); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkRecordHistogramParallel(b *testing.B) {
	s, owner, id := benchMetrics(b, Histogram)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		v := uint64(0)
		for pb.Next() {
			v = (v + 7919) % 1e6
			if err := s.RecordMetric(owner, id, v); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// Defining a metric that exists, as a filter that defines its metrics on
// every request would.
func BenchmarkDefineExistingMetric(b *testing.B) {
	s, owner, _ := benchMetrics(b, Counter)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.DefineMetric(owner, Counter, "metric_5"); err != nil {
			b.Fatal(err)
		}
	}
}

// The export of 20 histograms and 20 counters (kept small: the benchmark
// runs with a fixed, large iteration count).
func BenchmarkMetricsSnapshot(b *testing.B) {
	s := NewStore(Limits{})
	for o := range 4 {
		for m := range 5 {
			owner, name := fmt.Sprint("tenant-", o, "\x00filter"), fmt.Sprint("metric_", m)
			if _, err := s.DefineMetric(owner, Histogram, name+"_seconds"); err != nil {
				b.Fatal(err)
			}
			if _, err := s.DefineMetric(owner, Counter, name+"_total"); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportAllocs()
	for b.Loop() {
		s.Metrics()
	}
}
