package state

import (
	"fmt"
	"math"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"unsafe"
)

func define(t *testing.T, s *Store, owner string, typ MetricType, name string) uint32 {
	t.Helper()
	id, err := s.DefineMetric(owner, typ, name)
	if err != nil {
		t.Fatalf("DefineMetric(%q, %v, %q): %v", owner, typ, name, err)
	}
	return id
}

func TestDefineMetric(t *testing.T) {
	s := NewStore(Limits{MaxMetricName: 8, MaxMetrics: 3})
	c := define(t, s, "o", Counter, "c")
	g := define(t, s, "o", Gauge, "g")
	if c != 1 || g != 2 {
		t.Fatalf("ids %d, %d; want 1, 2", c, g)
	}
	if again := define(t, s, "o", Counter, "c"); again != c {
		t.Fatalf("defining again gave %d, want %d", again, c)
	}
	other := define(t, s, "p", Counter, "c")
	if other == c {
		t.Fatal("two owners' metrics c have the same id")
	}
	tests := []struct {
		name    string
		typ     MetricType
		metric  string
		wantErr error
	}{
		{"same name, other type", Gauge, "c", ErrBadArgument},
		{"unknown type", 3, "x", ErrBadArgument},
		{"empty name", Counter, "", ErrBadArgument},
		{"NUL in the name", Counter, "a\x00b", ErrBadArgument},
		{"newline in the name", Counter, "a\nb", ErrBadArgument},
		{"0x1f in the name", Counter, "\x1f", ErrBadArgument},
		{"DEL in the name", Counter, "a\x7f", ErrBadArgument},
		{"invalid UTF-8 in the name", Counter, "a\xff", ErrBadArgument},
		{"name over MaxMetricName", Counter, "123456789", ErrTooLarge},
		{"name at MaxMetricName", Histogram, "12345678", nil},
		{"past MaxMetrics", Counter, "d", ErrQuota},
		{"an existing name at MaxMetrics", Gauge, "g", nil},
	}
	for _, tt := range tests {
		_, err := s.DefineMetric("o", tt.typ, tt.metric)
		if err != tt.wantErr {
			t.Errorf("%s: err %v, want %v", tt.name, err, tt.wantErr)
		}
	}
	if got := len(s.Metrics()); got != 4 {
		t.Fatalf("%d metrics after the refusals, want 4", got)
	}
	if id := define(t, s, "p", Counter, "név·µ"); id != 5 {
		t.Fatalf("a refused definition used an id: the next is %d, want 5", id)
	}
}

func TestMetricNamesMayAliasTheCallersMemory(t *testing.T) {
	s := NewStore(Limits{})
	buf := []byte("ownername")
	owner, name := unsafe.String(&buf[0], 5), unsafe.String(&buf[5], 4)
	id := define(t, s, owner, Counter, name)
	copy(buf, "XXXXXXXXX")
	if got := define(t, s, "owner", Counter, "name"); got != id {
		t.Fatalf("after the caller's memory changed, defining gave %d, want %d", got, id)
	}
	if ms := s.Metrics(); len(ms) != 1 || ms[0].Owner != "owner" || ms[0].Name != "name" {
		t.Fatalf("Metrics() = %+v", ms)
	}
}

func TestMetricIdsOfAnotherOwnerAreNotFound(t *testing.T) {
	s := NewStore(Limits{})
	c := define(t, s, "a", Counter, "c")
	g := define(t, s, "a", Gauge, "g")
	h := define(t, s, "a", Histogram, "h")
	if err := s.IncrementMetric("a", c, 5); err != nil {
		t.Fatal(err)
	}
	for _, id := range []uint32{c, g, h, 0, 4, math.MaxUint32} {
		if err := s.IncrementMetric("b", id, 1); err != ErrNotFound {
			t.Errorf("IncrementMetric from b on %d: err %v, want ErrNotFound", id, err)
		}
		if err := s.RecordMetric("b", id, 1); err != ErrNotFound {
			t.Errorf("RecordMetric from b on %d: err %v, want ErrNotFound", id, err)
		}
		if v, err := s.GetMetric("b", id); err != ErrNotFound {
			t.Errorf("GetMetric from b on %d: %d, err %v; want ErrNotFound", id, v, err)
		}
	}
	if v, _ := s.GetMetric("a", c); v != 5 {
		t.Fatalf("a's counter is %d, want 5", v)
	}
}

// The type rules, one operation at a time on a fresh metric.
func TestMetricTypeRules(t *testing.T) {
	const (
		inc = iota
		rec
	)
	type op struct {
		kind    int
		arg     int64 // delta, or value's bits
		wantErr error
		want    uint64 // GetMetric after the op, for counters and gauges
	}
	u := func(v int64) uint64 { return uint64(v) }
	tests := []struct {
		name string
		typ  MetricType
		ops  []op
	}{
		{"counter increments", Counter, []op{{inc, 3, nil, 3}, {inc, 0, nil, 3}, {inc, 4, nil, 7}}},
		{"counter refuses a negative delta", Counter, []op{{inc, 3, nil, 3}, {inc, -1, ErrBadArgument, 3}}},
		{"counter records up or level", Counter, []op{{rec, 10, nil, 10}, {rec, 10, nil, 10}, {rec, 11, nil, 11}}},
		{"counter refuses to go down", Counter, []op{{rec, 10, nil, 10}, {rec, 9, ErrBadArgument, 10}}},
		{"counter refuses a value past int64", Counter, []op{{rec, math.MinInt64, ErrBadArgument, 0}, {rec, -1, ErrBadArgument, 0}}},
		{"counter refuses to overflow", Counter, []op{{rec, math.MaxInt64 - 1, nil, math.MaxInt64 - 1}, {inc, 2, ErrBadArgument, math.MaxInt64 - 1}, {inc, 1, nil, math.MaxInt64}}},
		{"gauge adds and goes negative", Gauge, []op{{inc, 3, nil, 3}, {inc, -5, nil, u(-2)}, {inc, 2, nil, 0}}},
		{"gauge records any bits", Gauge, []op{{rec, 7, nil, 7}, {rec, -7, nil, u(-7)}, {rec, 1, nil, 1}}},
		{"gauge refuses to overflow", Gauge, []op{{rec, math.MaxInt64, nil, math.MaxInt64}, {inc, 1, ErrBadArgument, math.MaxInt64}, {rec, math.MinInt64, nil, u(math.MinInt64)}, {inc, -1, ErrBadArgument, u(math.MinInt64)}}},
		{"histogram refuses increments", Histogram, []op{{inc, 1, ErrBadArgument, 0}, {inc, 0, ErrBadArgument, 0}}},
		{"histogram records", Histogram, []op{{rec, 1, nil, 0}, {rec, -1, nil, 0}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := NewStore(Limits{})
			id := define(t, s, "o", tt.typ, "m")
			for i, o := range tt.ops {
				var err error
				if o.kind == inc {
					err = s.IncrementMetric("o", id, o.arg)
				} else {
					err = s.RecordMetric("o", id, uint64(o.arg))
				}
				if err != o.wantErr {
					t.Fatalf("op %d: err %v, want %v", i, err, o.wantErr)
				}
				got, err := s.GetMetric("o", id)
				if tt.typ == Histogram {
					if err != ErrBadArgument {
						t.Fatalf("op %d: GetMetric of a histogram: err %v, want ErrBadArgument", i, err)
					}
					continue
				}
				if err != nil || got != o.want {
					t.Fatalf("op %d: GetMetric = %d, %v; want %d", i, got, err, o.want)
				}
			}
		})
	}
}

func TestHistogramBoundsAreA125Series(t *testing.T) {
	var want []uint64
	for p := uint64(1); p < 1e9; p *= 10 {
		want = append(want, p, 2*p, 5*p)
	}
	want = append(want, 1e9)
	if !slices.Equal(histogramBounds[:], want) {
		t.Fatalf("bounds %v, want %v", histogramBounds, want)
	}
}

func TestMetricsSnapshot(t *testing.T) {
	s := NewStore(Limits{})
	// Defined out of order: the snapshot sorts by owner, then name.
	h := define(t, s, "b", Histogram, "latency")
	g := define(t, s, "b", Gauge, "inflight")
	c := define(t, s, "a", Counter, "requests")
	define(t, s, "a", Histogram, "empty")
	s.IncrementMetric("a", c, 42)
	s.IncrementMetric("b", g, -3)
	observations := []uint64{0, 1, 2, 3, 5, 6, 999, 1000, 1001, 1e9, 1e9 + 1, math.MaxUint32}
	var sum float64
	for _, v := range observations {
		if err := s.RecordMetric("b", h, v); err != nil {
			t.Fatal(err)
		}
		sum += float64(v)
	}

	ms := s.Metrics()
	var order []string
	for _, m := range ms {
		order = append(order, m.Owner+"/"+m.Name)
	}
	if want := []string{"a/empty", "a/requests", "b/inflight", "b/latency"}; !slices.Equal(order, want) {
		t.Fatalf("order %v, want %v", order, want)
	}
	if m := ms[1]; m.Type != Counter || m.Value != 42 || m.Bounds != nil || m.Counts != nil {
		t.Errorf("counter snapshot %+v", m)
	}
	if m := ms[2]; m.Type != Gauge || m.Value != -3 {
		t.Errorf("gauge snapshot %+v", m)
	}
	e := ms[0]
	if e.Type != Histogram || e.Count != 0 || e.Sum != 0 || len(e.Counts) != len(e.Bounds) || slices.ContainsFunc(e.Counts, func(n uint64) bool { return n != 0 }) {
		t.Errorf("empty histogram snapshot %+v", e)
	}

	m := ms[3]
	if m.Type != Histogram || m.Count != uint64(len(observations)) || m.Sum != sum {
		t.Fatalf("histogram: type %v, count %d, sum %v; want %d, %v", m.Type, m.Count, m.Sum, len(observations), sum)
	}
	if len(m.Bounds) != len(histogramBounds) || len(m.Counts) != len(m.Bounds) {
		t.Fatalf("%d bounds, %d counts; want %d of each", len(m.Bounds), len(m.Counts), len(histogramBounds))
	}
	for i, b := range m.Bounds {
		if i > 0 && b <= m.Bounds[i-1] {
			t.Fatalf("bounds not ascending: %v", m.Bounds)
		}
		var want uint64 // observations <= b: cumulative
		for _, v := range observations {
			if float64(v) <= b {
				want++
			}
		}
		if m.Counts[i] != want {
			t.Errorf("Counts[%d] (<= %v) = %d, want %d", i, b, m.Counts[i], want)
		}
	}
	spot := map[float64]uint64{1: 2, 2: 3, 5: 5, 10: 6, 1000: 8, 2000: 9, 1e9: 10}
	for i, b := range m.Bounds {
		if want, ok := spot[b]; ok && m.Counts[i] != want {
			t.Errorf("Counts for <= %v: %d, want %d", b, m.Counts[i], want)
		}
	}

	// A snapshot is the caller's: changing it changes nothing.
	m.Bounds[0], m.Counts[0] = 99, 99
	if again := s.Metrics()[3]; again.Bounds[0] != 1 || again.Counts[0] != 2 {
		t.Fatalf("changing a snapshot changed the next: %v %v", again.Bounds[:1], again.Counts[:1])
	}
	if !reflect.DeepEqual(s.Metrics()[:3], ms[:3]) {
		t.Fatal("a second snapshot differs")
	}
}

func TestMetricsSnapshotOfAnEmptyStore(t *testing.T) {
	if ms := NewStore(Limits{}).Metrics(); len(ms) != 0 {
		t.Fatalf("Metrics() = %v", ms)
	}
}

// Concurrent updates lose nothing, and definitions racing on one name agree.
func TestConcurrentMetricUpdatesAreExact(t *testing.T) {
	const goroutines, n = 8, 1000
	s := NewStore(Limits{})
	ids := make([][3]uint32, goroutines)
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for i, typ := range []MetricType{Counter, Gauge, Histogram} {
				id, err := s.DefineMetric("o", typ, strings.Repeat("m", i+1))
				if err != nil {
					t.Error(err)
					return
				}
				ids[g][i] = id
			}
			c, ga, h := ids[g][0], ids[g][1], ids[g][2]
			for i := range n {
				s.IncrementMetric("o", c, 2)
				s.IncrementMetric("o", ga, int64(i%2*2-1)) // -1, +1, ...
				s.RecordMetric("o", h, uint64(i))
			}
		})
	}
	wg.Wait()
	for g := range ids {
		if ids[g] != ids[0] {
			t.Fatalf("goroutines got different ids: %v", ids)
		}
	}
	if v, _ := s.GetMetric("o", ids[0][0]); v != 2*goroutines*n {
		t.Errorf("counter %d, want %d", v, 2*goroutines*n)
	}
	if v, _ := s.GetMetric("o", ids[0][1]); v != 0 {
		t.Errorf("gauge %d, want 0", int64(v))
	}
	h := s.Metrics()[2]
	if h.Count != goroutines*n || h.Sum != goroutines*float64(n*(n-1)/2) {
		t.Errorf("histogram count %d, sum %v; want %d, %v", h.Count, h.Sum, goroutines*n, goroutines*float64(n*(n-1)/2))
	}
}

// Metric updates allocate nothing.
func TestMetricAllocations(t *testing.T) {
	s := NewStore(Limits{})
	c := define(t, s, "o", Counter, "c")
	h := define(t, s, "o", Histogram, "h")
	if n := testing.AllocsPerRun(100, func() {
		s.IncrementMetric("o", c, 1)
		s.RecordMetric("o", h, 1234)
		s.GetMetric("o", c)
		s.DefineMetric("o", Counter, "c")
	}); n != 0 {
		t.Errorf("%v allocations, want 0", n)
	}
}

// Ids stay found as the id table grows past its first chunks.
func TestMetricIdsAcrossChunks(t *testing.T) {
	s := NewStore(Limits{MaxMetrics: 3 * idChunk})
	var ids []uint32
	for i := range 3*idChunk - 1 {
		ids = append(ids, define(t, s, "o", Gauge, fmt.Sprint("m", i)))
	}
	for i, id := range ids {
		if id != uint32(i+1) {
			t.Fatalf("metric %d has id %d", i, id)
		}
		if err := s.RecordMetric("o", id, uint64(i)); err != nil {
			t.Fatal(err)
		}
	}
	for i, id := range ids {
		if v, err := s.GetMetric("o", id); err != nil || v != uint64(i) {
			t.Fatalf("metric %d: %d, %v", id, v, err)
		}
	}
	if _, err := s.GetMetric("o", uint32(len(ids)+1)); err != ErrNotFound {
		t.Fatalf("the id after the last: err %v, want ErrNotFound", err)
	}
}
