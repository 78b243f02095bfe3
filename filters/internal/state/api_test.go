package state

import "testing"

// The API the host's wiring is written against: changing a signature breaks
// this file's build.
var (
	_ func(Limits) *Store                                      = NewStore
	_ func(*Store) Limits                                      = (*Store).Limits
	_ func(*Store, string, string) ([]byte, uint32, error)     = (*Store).GetData
	_ func(*Store, string, string, []byte, uint32) error       = (*Store).SetData
	_ func(*Store, string, string, Listener) (uint32, error)   = (*Store).RegisterQueue
	_ func(*Store, string, string) (uint32, error)             = (*Store).ResolveQueue
	_ func(*Store, string, uint32, []byte) error               = (*Store).Enqueue
	_ func(*Store, string, uint32) ([]byte, error)             = (*Store).Dequeue
	_ func(*Store, Listener)                                   = (*Store).RemoveListener
	_ func(*Store, string, MetricType, string) (uint32, error) = (*Store).DefineMetric
	_ func(*Store, string, uint32, int64) error                = (*Store).IncrementMetric
	_ func(*Store, string, uint32, uint64) error               = (*Store).RecordMetric
	_ func(*Store, string, uint32) (uint64, error)             = (*Store).GetMetric
	_ func(*Store) []MetricSnapshot                            = (*Store).Metrics
	_ interface{ QueueReady(uint32) }                          = Listener(nil)
)

var _ = MetricSnapshot{
	Owner: "", Name: "", Type: MetricType(0), Value: int64(0),
	Bounds: []float64(nil), Counts: []uint64(nil), Count: uint64(0), Sum: float64(0),
}

var _ = Limits{
	MaxKeySize: int(0), MaxValueSize: int(0), MaxKeys: int(0), MaxBytes: int64(0),
	MaxQueues: int(0), MaxQueueItems: int(0), MaxQueueName: int(0),
	MaxMetrics: int(0), MaxMetricName: int(0),
}

// The metric types are the ABI's numbers, and the errors are distinct.
func TestAPIConstants(t *testing.T) {
	if Counter != 0 || Gauge != 1 || Histogram != 2 {
		t.Fatalf("metric types %d %d %d, want 0 1 2", Counter, Gauge, Histogram)
	}
	errs := []error{ErrNotFound, ErrEmpty, ErrCASMismatch, ErrTooLarge, ErrQuota, ErrBadArgument}
	for i := range errs {
		for j := range i {
			if errs[i] == errs[j] || errs[i].Error() == errs[j].Error() {
				t.Fatalf("errors %d and %d are alike: %v", i, j, errs[i])
			}
		}
	}
	want := Limits{4 << 10, 1 << 20, 10_000, 64 << 20, 100, 10_000, 1 << 10, 1_000, 256}
	if DefaultLimits != want {
		t.Fatalf("DefaultLimits = %+v, want %+v", DefaultLimits, want)
	}
}
