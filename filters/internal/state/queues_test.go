package state

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"
)

// recorder is a Listener that counts its notifications per queue.
type recorder struct {
	mu    sync.Mutex
	ready map[uint32]int
}

func newRecorder() *recorder { return &recorder{ready: map[uint32]int{}} }

func (r *recorder) QueueReady(id uint32) {
	r.mu.Lock()
	r.ready[id]++
	r.mu.Unlock()
}

func (r *recorder) count(id uint32) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.ready[id]
}

func register(t *testing.T, s *Store, ns, name string, l Listener) uint32 {
	t.Helper()
	id, err := s.RegisterQueue(ns, name, l)
	if err != nil {
		t.Fatalf("RegisterQueue(%q, %q): %v", ns, name, err)
	}
	return id
}

func enqueue(t *testing.T, s *Store, ns string, id uint32, item string) {
	t.Helper()
	if err := s.Enqueue(ns, id, []byte(item)); err != nil {
		t.Fatalf("Enqueue(%q, %d, %q): %v", ns, id, item, err)
	}
}

func dequeue(t *testing.T, s *Store, ns string, id uint32) string {
	t.Helper()
	b, err := s.Dequeue(ns, id)
	if err != nil {
		t.Fatalf("Dequeue(%q, %d): %v", ns, id, err)
	}
	return string(b)
}

func TestRegisterQueueCreatesOrOpens(t *testing.T) {
	s := NewStore(Limits{})
	a := register(t, s, "ns", "a", nil)
	b := register(t, s, "ns", "b", nil)
	if a != 1 || b != 2 {
		t.Fatalf("ids %d, %d; want 1, 2", a, b)
	}
	if again := register(t, s, "ns", "a", nil); again != a {
		t.Fatalf("registering again gave id %d, want %d", again, a)
	}
	if id, err := s.ResolveQueue("ns", "b"); id != b || err != nil {
		t.Fatalf("ResolveQueue(b) = %d, %v; want %d", id, err, b)
	}
	for _, c := range []struct{ ns, name string }{{"ns", "c"}, {"other", "a"}, {"ns", ""}} {
		if _, err := s.ResolveQueue(c.ns, c.name); err != ErrNotFound {
			t.Errorf("ResolveQueue(%q, %q): err %v, want ErrNotFound", c.ns, c.name, err)
		}
	}
}

func TestQueuesAreFIFO(t *testing.T) {
	s := NewStore(Limits{})
	id := register(t, s, "ns", "q", nil)
	if _, err := s.Dequeue("ns", id); err != ErrEmpty {
		t.Fatalf("Dequeue of a new queue: err %v, want ErrEmpty", err)
	}
	for i := range 3 {
		enqueue(t, s, "ns", id, fmt.Sprint(i))
	}
	enqueue(t, s, "ns", id, "")
	for _, want := range []string{"0", "1", "2", ""} {
		if got := dequeue(t, s, "ns", id); got != want {
			t.Fatalf("dequeued %q, want %q", got, want)
		}
	}
	if _, err := s.Dequeue("ns", id); err != ErrEmpty {
		t.Fatalf("Dequeue of an emptied queue: err %v, want ErrEmpty", err)
	}
}

// Growing, wrapping and shrinking the ring keeps order, against a model.
func TestQueueOrderThroughGrowthAndShrinking(t *testing.T) {
	s := NewStore(Limits{})
	id := register(t, s, "ns", "q", nil)
	r := rand.New(rand.NewPCG(1, 2))
	var model []string
	next := 0
	for range 20000 {
		// Bursts up, then down, so the ring grows and shrinks repeatedly.
		pPush := 0.7
		if (next/2000)%2 == 1 {
			pPush = 0.3
		}
		if r.Float64() < pPush {
			item := fmt.Sprint(next)
			next++
			enqueue(t, s, "ns", id, item)
			model = append(model, item)
			continue
		}
		b, err := s.Dequeue("ns", id)
		if len(model) == 0 {
			if err != ErrEmpty {
				t.Fatalf("Dequeue of an empty queue: %q, %v", b, err)
			}
			continue
		}
		if err != nil || string(b) != model[0] {
			t.Fatalf("dequeued %q, %v; want %q", b, err, model[0])
		}
		model = model[1:]
	}
	if q := s.queues.get(id); q.items.len() != len(model) {
		t.Fatalf("%d items, want %d", q.items.len(), len(model))
	}
}

func TestEnqueueCopiesAndDequeueHandsOver(t *testing.T) {
	s := NewStore(Limits{})
	id := register(t, s, "ns", "q", nil)
	item := []byte("item")
	if err := s.Enqueue("ns", id, item); err != nil {
		t.Fatal(err)
	}
	copy(item, "XXXX")
	if got := dequeue(t, s, "ns", id); got != "item" {
		t.Fatalf("dequeued %q after the caller changed its slice", got)
	}
}

// Queue names are private to a namespace, and a queue id of another
// namespace is refused exactly as an unknown one, touching nothing.
func TestNamespacesDoNotShareQueues(t *testing.T) {
	s := NewStore(Limits{})
	a := register(t, s, "a", "q", nil)
	b := register(t, s, "b", "q", nil)
	if a == b {
		t.Fatalf("the queues q of two namespaces have the same id %d", a)
	}
	if id, _ := s.ResolveQueue("b", "q"); id != b {
		t.Fatalf("ResolveQueue in b gave %d, want b's %d", id, b)
	}
	enqueue(t, s, "a", a, "a's secret")
	for _, id := range []uint32{a, 0, 3, math.MaxUint32} {
		if err := s.Enqueue("b", id, []byte("intrusion")); err != ErrNotFound {
			t.Errorf("Enqueue from b on id %d: err %v, want ErrNotFound", id, err)
		}
		if item, err := s.Dequeue("b", id); err != ErrNotFound {
			t.Errorf("Dequeue from b on id %d: %q, err %v; want ErrNotFound", id, item, err)
		}
	}
	if got := dequeue(t, s, "a", a); got != "a's secret" {
		t.Fatalf("a's queue holds %q", got)
	}
	if _, err := s.Dequeue("a", a); err != ErrEmpty {
		t.Fatalf("a's queue was changed from b: err %v", err)
	}
	if nsBytes(s, "b") != 0 {
		t.Fatalf("b charged %d bytes", nsBytes(s, "b"))
	}
}

func TestQueueNamesMayAliasTheCallersMemory(t *testing.T) {
	s := NewStore(Limits{})
	buf := []byte("queue")
	name := unsafe.String(&buf[0], len(buf))
	id := register(t, s, "ns", name, nil)
	copy(buf, "XXXXX")
	if got, err := s.ResolveQueue("ns", "queue"); got != id || err != nil {
		t.Fatalf("ResolveQueue after the caller's memory changed: %d, %v; want %d", got, err, id)
	}
}

func TestQueueLimits(t *testing.T) {
	lim := Limits{MaxQueueName: 5, MaxQueues: 2, MaxQueueItems: 3, MaxValueSize: 10, MaxBytes: 20}
	t.Run("names", func(t *testing.T) {
		s := NewStore(lim)
		if _, err := s.RegisterQueue("ns", "", nil); err != ErrBadArgument {
			t.Errorf("empty name: err %v, want ErrBadArgument", err)
		}
		if _, err := s.RegisterQueue("ns", "123456", nil); err != ErrTooLarge {
			t.Errorf("name over MaxQueueName: err %v, want ErrTooLarge", err)
		}
		register(t, s, "ns", "12345", nil)
	})
	t.Run("MaxQueues", func(t *testing.T) {
		s := NewStore(lim)
		register(t, s, "ns", "a", nil)
		b := register(t, s, "ns", "b", nil)
		if _, err := s.RegisterQueue("ns", "c", nil); err != ErrQuota {
			t.Fatalf("a queue past MaxQueues: err %v, want ErrQuota", err)
		}
		if _, err := s.ResolveQueue("ns", "c"); err != ErrNotFound {
			t.Fatalf("a refused queue exists: %v", err)
		}
		if id := register(t, s, "ns", "b", nil); id != b {
			t.Fatalf("opening an existing queue at MaxQueues gave %d, want %d", id, b)
		}
		register(t, s, "other", "c", nil) // another namespace's quota
		if id := register(t, s, "other", "d", nil); id != 4 {
			t.Fatalf("the refused queue used an id: the next is %d, want 4", id)
		}
	})
	t.Run("MaxQueueItems", func(t *testing.T) {
		s := NewStore(lim)
		id := register(t, s, "ns", "q", newRecorder())
		for i := range 3 {
			enqueue(t, s, "ns", id, fmt.Sprint(i))
		}
		if err := s.Enqueue("ns", id, []byte("3")); err != ErrQuota {
			t.Fatalf("an item past MaxQueueItems: err %v, want ErrQuota", err)
		}
		dequeue(t, s, "ns", id)
		enqueue(t, s, "ns", id, "3")
		for _, want := range []string{"1", "2", "3"} {
			if got := dequeue(t, s, "ns", id); got != want {
				t.Fatalf("dequeued %q, want %q", got, want)
			}
		}
	})
	t.Run("item size", func(t *testing.T) {
		s := NewStore(lim)
		id := register(t, s, "ns", "q", nil)
		enqueue(t, s, "ns", id, strings.Repeat("x", 10))
		if err := s.Enqueue("ns", id, make([]byte, 11)); err != ErrTooLarge {
			t.Fatalf("an item over MaxValueSize: err %v, want ErrTooLarge", err)
		}
		if q := s.queues.get(id); q.items.len() != 1 || nsBytes(s, "ns") != 10 {
			t.Fatalf("a refused item changed the queue: %d items, %d bytes", q.items.len(), nsBytes(s, "ns"))
		}
	})
	t.Run("MaxBytes is shared with data, and dequeuing frees bytes", func(t *testing.T) {
		s := NewStore(lim)
		set(t, s, "ns", "k", "1234", 0) // 5 bytes
		a := register(t, s, "ns", "a", nil)
		b := register(t, s, "ns", "b", nil)
		enqueue(t, s, "ns", a, "1234567890")
		enqueue(t, s, "ns", b, "12345") // 20 bytes: exactly MaxBytes
		if got := nsBytes(s, "ns"); got != 20 {
			t.Fatalf("charged %d bytes, want 20", got)
		}
		if err := s.Enqueue("ns", b, []byte("x")); err != ErrQuota {
			t.Fatalf("an item past MaxBytes: err %v, want ErrQuota", err)
		}
		if err := s.SetData("ns", "k2", nil, 0); err != ErrQuota {
			t.Fatalf("a key past MaxBytes: err %v, want ErrQuota", err)
		}
		if got := nsBytes(s, "ns"); got != 20 {
			t.Fatalf("refusals changed the bytes charged to %d", got)
		}
		dequeue(t, s, "ns", a)
		if got := nsBytes(s, "ns"); got != 10 {
			t.Fatalf("after a dequeue, charged %d bytes, want 10", got)
		}
		set(t, s, "ns", "k", "12345678", 0)
		if got := nsBytes(s, "ns"); got != 14 {
			t.Fatalf("charged %d bytes, want 14", got)
		}
	})
	t.Run("ids run out", func(t *testing.T) {
		s := NewStore(lim)
		s.queues.maxID = 2
		register(t, s, "ns", "first", nil)
		if id := register(t, s, "ns", "last", nil); id != 2 {
			t.Fatalf("id %d, want 2", id)
		}
		if _, err := s.RegisterQueue("other", "more", nil); err != ErrQuota {
			t.Fatalf("with no ids left: err %v, want ErrQuota", err)
		}
		if _, err := s.ResolveQueue("other", "more"); err != ErrNotFound {
			t.Fatalf("a refused queue exists: %v", err)
		}
	})
}

func TestListeners(t *testing.T) {
	s := NewStore(Limits{})
	l1, l2, l3 := newRecorder(), newRecorder(), newRecorder()
	q := register(t, s, "ns", "q", l1)
	if again := register(t, s, "ns", "q", l1); again != q { // twice: told once
		t.Fatalf("id %d, want %d", again, q)
	}
	register(t, s, "ns", "q", l2)
	register(t, s, "ns", "q", nil) // opens without listening
	other := register(t, s, "ns", "other", l3)
	register(t, s, "ns", "other", l1)

	enqueue(t, s, "ns", q, "x")
	enqueue(t, s, "ns", q, "y")
	enqueue(t, s, "ns", other, "z")
	check := func(when string, l *recorder, id uint32, want int) {
		t.Helper()
		if got := l.count(id); got != want {
			t.Errorf("%s: told %d times about queue %d, want %d", when, got, id, want)
		}
	}
	check("l1", l1, q, 2)
	check("l2", l2, q, 2)
	check("l3", l3, q, 0)
	check("l1", l1, other, 1)
	check("l3", l3, other, 1)

	// Refused enqueues and dequeues tell nobody.
	s.Enqueue("ns", q, make([]byte, s.Limits().MaxValueSize+1))
	s.Enqueue("other-ns", q, []byte("x"))
	dequeue(t, s, "ns", q)
	check("l1 after refusals and a dequeue", l1, q, 2)

	// Removed from every queue.
	s.RemoveListener(l1)
	s.RemoveListener(newRecorder()) // never registered: no effect
	s.RemoveListener(nil)
	enqueue(t, s, "ns", q, "x")
	enqueue(t, s, "ns", other, "x")
	check("l1 after RemoveListener", l1, q, 2)
	check("l1 after RemoveListener", l1, other, 1)
	check("l2 after l1's removal", l2, q, 3)
	check("l3 after l1's removal", l3, other, 2)

	// Registering again after the removal listens again.
	register(t, s, "ns", "q", l1)
	enqueue(t, s, "ns", q, "x")
	check("l1 registered again", l1, q, 3)
}

// reentrant is a listener that dequeues from within QueueReady, which would
// deadlock if the store held a lock while telling it.
type reentrant struct {
	s   *Store
	got chan string
}

func (r *reentrant) QueueReady(id uint32) {
	item, err := r.s.Dequeue("ns", id)
	if err != nil {
		r.got <- err.Error()
		return
	}
	r.got <- string(item)
}

func TestListenersAreToldWithNoLockHeld(t *testing.T) {
	s := NewStore(Limits{})
	r := &reentrant{s: s, got: make(chan string, 1)}
	id := register(t, s, "ns", "q", r)
	done := make(chan struct{})
	go func() {
		defer close(done)
		enqueue(t, s, "ns", id, "item")
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Enqueue deadlocked: a lock is held while telling listeners")
	}
	if got := <-r.got; got != "item" {
		t.Fatalf("the listener dequeued %q", got)
	}
}

// listenerFunc is not comparable.
type listenerFunc func(uint32)

func (f listenerFunc) QueueReady(id uint32) { f(id) }

func TestAListenerThatIsNotComparablePanics(t *testing.T) {
	s := NewStore(Limits{})
	defer func() {
		if recover() == nil {
			t.Fatal("no panic")
		}
	}()
	s.RegisterQueue("ns", "q", listenerFunc(func(uint32) {}))
}

// Concurrent producers and consumers pass every item exactly once, and the
// bytes charged return to zero.
func TestConcurrentEnqueueDequeueDeliversEachItemOnce(t *testing.T) {
	const producers, consumers, perProducer = 4, 4, 2000
	s := NewStore(Limits{MaxQueueItems: 100}) // small: producers hit the quota
	notified := newRecorder()
	id := register(t, s, "ns", "q", notified)
	var (
		wg       sync.WaitGroup
		produced atomic.Int64
		mu       sync.Mutex
		seen     = make(map[string]int)
	)
	for p := range producers {
		wg.Go(func() {
			for i := range perProducer {
				item := []byte(fmt.Sprintf("%d/%d", p, i))
				for {
					err := s.Enqueue("ns", id, item)
					if err == nil {
						break
					}
					if err != ErrQuota {
						t.Error(err)
						return
					}
					time.Sleep(time.Microsecond)
				}
				produced.Add(1)
			}
		})
	}
	var consumed atomic.Int64
	var cwg sync.WaitGroup
	for range consumers {
		cwg.Go(func() {
			last := map[int]int{} // per producer: FIFO keeps each producer's order
			for consumed.Load() < producers*perProducer {
				item, err := s.Dequeue("ns", id)
				if err == ErrEmpty {
					continue
				}
				if err != nil {
					t.Error(err)
					return
				}
				consumed.Add(1)
				var p, i int
				fmt.Sscanf(string(item), "%d/%d", &p, &i)
				if prev, ok := last[p]; ok && i <= prev {
					t.Errorf("producer %d's item %d after its item %d", p, i, prev)
				}
				last[p] = i
				mu.Lock()
				seen[string(item)]++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	cwg.Wait()
	if len(seen) != producers*perProducer {
		t.Fatalf("%d distinct items, want %d", len(seen), producers*perProducer)
	}
	for item, n := range seen {
		if n != 1 {
			t.Fatalf("item %q dequeued %d times", item, n)
		}
	}
	if got := notified.count(id); got != producers*perProducer {
		t.Fatalf("listener told %d times, want %d", got, producers*perProducer)
	}
	if got := nsBytes(s, "ns"); got != 0 {
		t.Fatalf("%d bytes still charged", got)
	}
}

// Enqueue allocates the copy of the item only; Dequeue nothing.
func TestQueueAllocations(t *testing.T) {
	s := NewStore(Limits{})
	id := register(t, s, "ns", "q", newRecorder())
	item := []byte("item")
	enqueue(t, s, "ns", id, "warm") // the ring's first buffer
	dequeue(t, s, "ns", id)
	if n := testing.AllocsPerRun(100, func() {
		s.Enqueue("ns", id, item)
		s.Dequeue("ns", id)
	}); n != 1 {
		t.Errorf("Enqueue and Dequeue: %v allocations, want 1", n)
	}
}

func TestRemoveListenerDuringEnqueues(t *testing.T) {
	s := NewStore(Limits{})
	ls := []*recorder{newRecorder(), newRecorder(), newRecorder()}
	id := register(t, s, "ns", "q", ls[0])
	for _, l := range ls[1:] {
		register(t, s, "ns", "q", l)
	}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			if err := s.Enqueue("ns", id, nil); err != nil && err != ErrQuota {
				t.Error(err)
			}
			s.Dequeue("ns", id)
		}
	})
	for range 100 {
		s.RemoveListener(ls[1])
		register(t, s, "ns", "q", ls[1])
	}
	close(stop)
	wg.Wait()
	q := s.queues.get(id)
	q.ns.mu.Lock()
	got := slices.Clone(q.listeners)
	q.ns.mu.Unlock()
	if len(got) != 3 {
		t.Fatalf("%d listeners, want 3", len(got))
	}
}
