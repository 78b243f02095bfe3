package state

import (
	"math"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"unicode/utf8"
)

// MetricType is the type of a guest-defined metric, numbered as in the
// Proxy-Wasm ABI.
type MetricType uint32

// The metric types of the Proxy-Wasm ABI.
const (
	Counter   MetricType = 0 // a value that only goes up
	Gauge     MetricType = 1 // a value that goes up and down, maybe below zero
	Histogram MetricType = 2 // a distribution of observed values
)

// String returns the type's name as Prometheus spells it.
func (t MetricType) String() string {
	switch t {
	case Counter:
		return "counter"
	case Gauge:
		return "gauge"
	case Histogram:
		return "histogram"
	}
	return "unknown"
}

// histogramBounds are the upper bounds of every histogram's buckets (a last
// bucket, +Inf, is implicit). Guests observe integers whose unit we do not
// know: microseconds to seconds of latency, bytes of bodies, counts. A 1-2-5
// series from 1 to 1e9 covers all of those, 1µs to 1000s or 1 B to 1 GB,
// with three buckets a decade (each bound at most 2.5 times the previous),
// in 28 buckets: fixed, so an observation is a binary search and two atomic
// operations, and every histogram of every guest exports alike.
var histogramBounds = [...]uint64{
	1, 2, 5,
	10, 20, 50,
	100, 200, 500,
	1e3, 2e3, 5e3,
	1e4, 2e4, 5e4,
	1e5, 2e5, 5e5,
	1e6, 2e6, 5e6,
	1e7, 2e7, 5e7,
	1e8, 2e8, 5e8,
	1e9,
}

// metric is a guest-defined metric. Its value is updated atomically, so
// hot updates take no lock.
type metric struct {
	id    uint32
	owner string
	name  string
	typ   MetricType
	value atomic.Int64 // counter (never negative) and gauge
	hist  *histogram   // histogram only
}

// histogram counts observations per bucket and sums them.
type histogram struct {
	counts [len(histogramBounds) + 1]atomic.Uint64 // per bucket, not cumulative; the last is +Inf
	sum    atomic.Uint64                           // float64 bits
}

func (h *histogram) observe(v uint64) {
	i, j := 0, len(histogramBounds)
	for i < j { // the first bucket whose bound is >= v
		m := int(uint(i+j) >> 1)
		if histogramBounds[m] < v {
			i = m + 1
		} else {
			j = m
		}
	}
	h.counts[i].Add(1)
	for {
		old := h.sum.Load()
		sum := math.Float64bits(math.Float64frombits(old) + float64(v))
		if h.sum.CompareAndSwap(old, sum) {
			return
		}
	}
}

// metricOwner holds one owner's metric definitions.
type metricOwner struct {
	name string

	mu     sync.Mutex
	byName map[string]*metric
}

func newMetricOwner(name string) *metricOwner {
	return &metricOwner{name: name, byName: make(map[string]*metric)}
}

// DefineMetric defines the metric name of type t for owner, or finds the one
// defined, and returns its id. An unknown type, an empty name, a name with
// control characters or invalid UTF-8, or a name defined with another type
// is ErrBadArgument;
// a name over MaxMetricName is ErrTooLarge; a definition past MaxMetrics is
// ErrQuota.
func (s *Store) DefineMetric(owner string, t MetricType, name string) (uint32, error) {
	if t > Histogram || name == "" {
		return 0, ErrBadArgument
	}
	if len(name) > s.limits.MaxMetricName {
		return 0, ErrTooLarge
	}
	if !utf8.ValidString(name) { // exported as a label value, which must be UTF-8
		return 0, ErrBadArgument
	}
	for i := range len(name) {
		if c := name[i]; c < 0x20 || c == 0x7f {
			return 0, ErrBadArgument
		}
	}
	o := s.owners.getOrAdd(owner, newMetricOwner)
	o.mu.Lock()
	defer o.mu.Unlock()
	if m := o.byName[name]; m != nil {
		if m.typ != t {
			return 0, ErrBadArgument
		}
		return m.id, nil
	}
	if len(o.byName) >= s.limits.MaxMetrics {
		return 0, ErrQuota
	}
	name = strings.Clone(name)
	m, ok := s.metrics.add(func(id uint32) *metric {
		m := &metric{id: id, owner: o.name, name: name, typ: t}
		if t == Histogram {
			m.hist = new(histogram)
		}
		return m
	})
	if !ok {
		return 0, ErrQuota
	}
	o.byName[name] = m
	return m.id, nil
}

// metric returns metric id if owner defined it, or nil: another owner's
// metric must look exactly like one that does not exist.
func (s *Store) metric(owner string, id uint32) *metric {
	m := s.metrics.get(id)
	if m == nil || m.owner != owner {
		return nil
	}
	return m
}

// IncrementMetric adds delta to a counter (delta must not be negative) or a
// gauge. A histogram, a negative counter delta, or a sum past the int64
// range is ErrBadArgument, changing nothing; an unknown id (or another
// owner's) ErrNotFound.
func (s *Store) IncrementMetric(owner string, id uint32, delta int64) error {
	m := s.metric(owner, id)
	switch {
	case m == nil:
		return ErrNotFound
	case m.typ == Histogram, m.typ == Counter && delta < 0:
		return ErrBadArgument
	}
	if delta == 0 {
		return nil
	}
	for {
		old := m.value.Load()
		v := old + delta
		if (v > old) != (delta > 0) {
			return ErrBadArgument // overflow
		}
		if m.value.CompareAndSwap(old, v) {
			return nil
		}
	}
}

// RecordMetric sets a counter to value (which must not be below its current
// value nor above the int64 range: counters never go down), sets a gauge to
// value's bits as an int64, or observes value in a histogram. A refused
// value is ErrBadArgument; an unknown id (or another owner's) ErrNotFound.
func (s *Store) RecordMetric(owner string, id uint32, value uint64) error {
	m := s.metric(owner, id)
	if m == nil {
		return ErrNotFound
	}
	switch m.typ {
	case Counter:
		if value > math.MaxInt64 {
			return ErrBadArgument
		}
		for {
			old := m.value.Load()
			if int64(value) < old {
				return ErrBadArgument
			}
			if m.value.CompareAndSwap(old, int64(value)) {
				return nil
			}
		}
	case Gauge:
		m.value.Store(int64(value))
	default:
		m.hist.observe(value)
	}
	return nil
}

// GetMetric returns a counter's value or a gauge's (as the bits of its
// int64). A histogram is ErrBadArgument; an unknown id (or another
// owner's) ErrNotFound.
func (s *Store) GetMetric(owner string, id uint32) (uint64, error) {
	m := s.metric(owner, id)
	if m == nil {
		return 0, ErrNotFound
	}
	if m.typ == Histogram {
		return 0, ErrBadArgument
	}
	return uint64(m.value.Load()), nil
}

// MetricSnapshot is a metric's state at one moment, for export.
type MetricSnapshot struct {
	Owner, Name string
	Type        MetricType
	Value       int64 // counter and gauge

	// Histogram: Bounds are the upper bounds of the buckets (ascending, the
	// last bucket +Inf is implicit), Counts[i] the number of observations
	// <= Bounds[i] (cumulative, Prometheus style, len(Counts) ==
	// len(Bounds)), Count and Sum over all observations. Count is
	// consistent with Counts; Sum, read separately, may miss or include an
	// observation made while the snapshot was taken.
	Bounds []float64
	Counts []uint64
	Count  uint64
	Sum    float64
}

// Metrics returns every metric of every owner, ordered by owner, then
// name. It allocates; it is meant for export, not for the request path.
func (s *Store) Metrics() []MetricSnapshot {
	var ms []*metric
	for _, o := range s.owners.all() {
		o.mu.Lock()
		for _, m := range o.byName {
			ms = append(ms, m)
		}
		o.mu.Unlock()
	}
	slices.SortFunc(ms, func(a, b *metric) int {
		if c := strings.Compare(a.owner, b.owner); c != 0 {
			return c
		}
		return strings.Compare(a.name, b.name)
	})
	// The histograms' bounds and counts are cut from two arrays, not
	// allocated one by one; each slice is capped at its own length, so an
	// append to one cannot overwrite the next.
	const nb = len(histogramBounds)
	var hists int
	for _, m := range ms {
		if m.typ == Histogram {
			hists++
		}
	}
	allBounds := make([]float64, hists*nb)
	allCounts := make([]uint64, hists*nb)
	out := make([]MetricSnapshot, len(ms))
	for i, m := range ms {
		out[i] = MetricSnapshot{Owner: m.owner, Name: m.name, Type: m.typ}
		if m.typ != Histogram {
			out[i].Value = m.value.Load()
			continue
		}
		h := m.hist
		bounds, counts := allBounds[:nb:nb], allCounts[:nb:nb]
		allBounds, allCounts = allBounds[nb:], allCounts[nb:]
		var total uint64
		for j, b := range histogramBounds {
			bounds[j] = float64(b)
			total += h.counts[j].Load()
			counts[j] = total
		}
		total += h.counts[len(histogramBounds)].Load()
		out[i].Bounds, out[i].Counts, out[i].Count = bounds, counts, total
		out[i].Sum = math.Float64frombits(h.sum.Load())
	}
	return out
}
