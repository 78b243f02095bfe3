// Package state keeps the state Proxy-Wasm filters share: shared data
// (key/value with compare-and-swap), shared queues and guest-defined
// metrics. Sluice runs every request in a fresh, short-lived instance, so
// nothing shared can live in a guest; the host keeps it here, in one Store.
//
// Filters belong to tenants, and tenants must neither see nor starve each
// other. Shared data and queues live in namespaces (a filter's vm_id),
// metrics belong to owners; an id of another namespace or owner behaves
// exactly as an unknown id, so guessing ids reveals nothing. Limits bound
// what each namespace and owner may keep.
//
// Keys and names given to the store may alias memory the caller reuses
// (such as a guest's linear memory): the store copies whatever it keeps.
package state

import (
	"errors"
	"math"
	"strings"
	"sync"
	"sync/atomic"
)

// Errors of the store's operations, one for each Proxy-Wasm status a host
// function may return, so the host maps them with a switch.
var (
	// ErrNotFound: an unknown key, queue or metric, or one of another
	// namespace or owner.
	ErrNotFound = errors.New("state: not found")
	// ErrEmpty: a dequeue from an empty queue.
	ErrEmpty = errors.New("state: queue empty")
	// ErrCASMismatch: a set whose cas is not the key's current one.
	ErrCASMismatch = errors.New("state: cas mismatch")
	// ErrTooLarge: a key, value, item or name over its size limit.
	ErrTooLarge = errors.New("state: too large")
	// ErrQuota: a namespace or owner out of keys, bytes, queues, items or
	// metrics (or the store out of ids).
	ErrQuota = errors.New("state: quota exceeded")
	// ErrBadArgument: the wrong metric type for an operation, a bad name or
	// type, a negative counter delta, or a metric value out of range.
	ErrBadArgument = errors.New("state: bad argument")
)

// Limits bound what one tenant may keep, so a hostile one cannot exhaust the
// host. A zero (or negative) field means its value in DefaultLimits.
type Limits struct {
	MaxKeySize    int   // bytes of a shared-data key
	MaxValueSize  int   // bytes of a shared-data value or of a queue item
	MaxKeys       int   // keys per namespace
	MaxBytes      int64 // per namespace: len(key)+len(value) over its keys, plus the bytes of its queued items
	MaxQueues     int   // queues per namespace
	MaxQueueItems int   // items per queue
	MaxQueueName  int   // bytes of a queue name
	MaxMetrics    int   // metric definitions per owner
	MaxMetricName int   // bytes of a metric name
}

// DefaultLimits are the limits of a Store made with a zero Limits.
var DefaultLimits = Limits{
	MaxKeySize:    4 << 10,
	MaxValueSize:  1 << 20,
	MaxKeys:       10_000,
	MaxBytes:      64 << 20,
	MaxQueues:     100,
	MaxQueueItems: 10_000,
	MaxQueueName:  1 << 10,
	MaxMetrics:    1_000,
	MaxMetricName: 256,
}

// withDefaults fills l's unset fields from DefaultLimits.
func (l Limits) withDefaults() Limits {
	d := DefaultLimits
	orDefault := func(v *int, def int) {
		if *v <= 0 {
			*v = def
		}
	}
	orDefault(&l.MaxKeySize, d.MaxKeySize)
	orDefault(&l.MaxValueSize, d.MaxValueSize)
	orDefault(&l.MaxKeys, d.MaxKeys)
	if l.MaxBytes <= 0 {
		l.MaxBytes = d.MaxBytes
	}
	orDefault(&l.MaxQueues, d.MaxQueues)
	orDefault(&l.MaxQueueItems, d.MaxQueueItems)
	orDefault(&l.MaxQueueName, d.MaxQueueName)
	orDefault(&l.MaxMetrics, d.MaxMetrics)
	orDefault(&l.MaxMetricName, d.MaxMetricName)
	return l
}

// Store keeps shared data, queues and metrics. It is safe for concurrent
// use by many goroutines. The hot operations (GetData, SetData, metric
// updates) take no store-wide lock: a namespace has its own mutex, and a
// metric is found by id without any lock and updated atomically.
//
// Queue ids and metric ids count from 1 (0 is never an id) and are never
// reused; they are unique within the store, so process-unique as long as
// the process keeps one Store.
type Store struct {
	limits Limits

	namespaces registry[namespace]
	queues     idTable[queue]

	owners  registry[metricOwner]
	metrics idTable[metric]
}

// NewStore returns an empty store with limits l (zero fields taking their
// defaults).
func NewStore(l Limits) *Store {
	return &Store{limits: l.withDefaults()}
}

// Limits returns the store's effective limits, defaults filled in.
func (s *Store) Limits() Limits { return s.limits }

// namespace holds one namespace's shared data and queues. Data and queued
// items share the byte quota, so one mutex guards both.
type namespace struct {
	name string

	mu     sync.RWMutex
	data   map[string]*entry
	queues map[string]*queue
	bytes  int64  // len(key)+len(value) over data, plus queued items
	cas    uint32 // the last cas given to a key of this namespace
}

func newNamespace(name string) *namespace {
	return &namespace{
		name:   name,
		data:   make(map[string]*entry),
		queues: make(map[string]*queue),
	}
}

// nextCAS returns a new cas for a key being set, never 0 (0 is "no cas").
// The counter is per namespace, not per store: a store-wide one would let a
// tenant count the sets of every other tenant between two of its own, and
// would be one more cache line every set in the process contends on.
// Called with n.mu held for writing.
func (n *namespace) nextCAS() uint32 {
	n.cas++
	if n.cas == 0 {
		n.cas = 1
	}
	return n.cas
}

// registry maps names (namespaces, metric owners) to their state. Names are
// configured by the host, not chosen by guests, so there are few and they
// are added rarely: lookups read an immutable map without locking or
// allocating, and adding one copies the map.
type registry[V any] struct {
	mu sync.Mutex // serializes additions
	m  atomic.Pointer[map[string]*V]
}

// get returns name's value, or nil.
func (r *registry[V]) get(name string) *V {
	if m := r.m.Load(); m != nil {
		return (*m)[name]
	}
	return nil
}

// getOrAdd returns name's value, adding newV(name) if there is none. The
// name passed to newV is the store's own copy.
func (r *registry[V]) getOrAdd(name string, newV func(name string) *V) *V {
	if v := r.get(name); v != nil {
		return v
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	old := r.m.Load()
	var m map[string]*V
	if old != nil {
		if v := (*old)[name]; v != nil {
			return v
		}
		m = make(map[string]*V, len(*old)+1)
		for k, v := range *old {
			m[k] = v
		}
	} else {
		m = make(map[string]*V, 1)
	}
	name = strings.Clone(name)
	v := newV(name)
	m[name] = v
	r.m.Store(&m)
	return v
}

// all returns every value, in no particular order.
func (r *registry[V]) all() []*V {
	m := r.m.Load()
	if m == nil {
		return nil
	}
	vs := make([]*V, 0, len(*m))
	for _, v := range *m {
		vs = append(vs, v)
	}
	return vs
}

// idChunk is a fixed block of an idTable; a block never moves, so a reader
// that found it may use it while the table grows.
const idChunk = 256

// idTable gives out ids 1, 2, 3, ... and finds the value of an id without
// locking: the ids are dense, so the table is a growing list of fixed
// chunks, and a lookup is two loads and an index.
type idTable[T any] struct {
	mu     sync.Mutex // serializes additions
	last   uint32     // the last id given; guarded by mu
	chunks atomic.Pointer[[]*[idChunk]atomic.Pointer[T]]

	// maxID, if not 0, replaces math.MaxUint32 as the last id, for tests
	// of running out of ids.
	maxID uint32
}

// add gives the next id to newT(id) and returns that value. It returns
// false, adding nothing, when the ids are exhausted (never reusing one: an
// old id still held by a guest would reach another's value).
func (t *idTable[T]) add(newT func(id uint32) *T) (*T, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.last == math.MaxUint32 || (t.maxID != 0 && t.last >= t.maxID) {
		return nil, false
	}
	id := t.last + 1
	i := id - 1
	var chunks []*[idChunk]atomic.Pointer[T]
	if p := t.chunks.Load(); p != nil {
		chunks = *p
	}
	for uint32(len(chunks)) <= i/idChunk {
		// A new list, so readers of the old one are undisturbed.
		grown := make([]*[idChunk]atomic.Pointer[T], len(chunks)+1)
		copy(grown, chunks)
		grown[len(chunks)] = new([idChunk]atomic.Pointer[T])
		chunks = grown
		t.chunks.Store(&grown)
	}
	v := newT(id)
	chunks[i/idChunk][i%idChunk].Store(v)
	t.last = id
	return v, true
}

// get returns id's value, or nil.
func (t *idTable[T]) get(id uint32) *T {
	p := t.chunks.Load()
	if id == 0 || p == nil {
		return nil
	}
	i := id - 1
	chunks := *p
	if c := i / idChunk; c < uint32(len(chunks)) {
		return chunks[c][i%idChunk].Load()
	}
	return nil
}

// each calls f on every value, in id order, with no lock held.
func (t *idTable[T]) each(f func(*T)) {
	p := t.chunks.Load()
	if p == nil {
		return
	}
	for _, c := range *p {
		for i := range c {
			if v := c[i].Load(); v != nil {
				f(v)
			}
		}
	}
}
