package state

import (
	"reflect"
	"slices"
	"strings"
)

// Listener is told when an item is enqueued on a queue it registered: a
// filter with a long-lived background instance, on which the host calls
// proxy_on_queue_ready. Listeners are compared with ==, so a Listener must
// be of a comparable type (a pointer, typically).
type Listener interface {
	// QueueReady is called after an item is enqueued on a queue the
	// listener registered, with no store lock held. It must not block (the
	// host posts to a channel).
	QueueReady(id uint32)
}

// queue is a shared queue. Its items and listeners are guarded by its
// namespace's mutex, as queued bytes count against the namespace's quota.
type queue struct {
	id   uint32
	ns   *namespace
	name string

	items ring
	// listeners is replaced, never changed in place, so Enqueue can notify
	// them from the slice it saw under the lock after releasing it.
	listeners []Listener
}

// RegisterQueue creates the queue name in namespace ns, or opens the one
// that exists, and returns its id. A non-nil l is added to the queue's
// listeners, at most once however often it registers. An empty name is
// ErrBadArgument, one over MaxQueueName ErrTooLarge, a queue past
// MaxQueues ErrQuota.
func (s *Store) RegisterQueue(ns, name string, l Listener) (uint32, error) {
	if name == "" {
		return 0, ErrBadArgument
	}
	if len(name) > s.limits.MaxQueueName {
		return 0, ErrTooLarge
	}
	if l != nil && !reflect.TypeOf(l).Comparable() {
		// Found now rather than as a panic in a later == between listeners.
		panic("state: Listener of a type that is not comparable")
	}
	n := s.namespace(ns)
	n.mu.Lock()
	defer n.mu.Unlock()
	q := n.queues[name]
	if q == nil {
		if len(n.queues) >= s.limits.MaxQueues {
			return 0, ErrQuota
		}
		name = strings.Clone(name)
		var ok bool
		q, ok = s.queues.add(func(id uint32) *queue { return &queue{id: id, ns: n, name: name} })
		if !ok {
			return 0, ErrQuota
		}
		n.queues[name] = q
	}
	if l != nil && !slices.Contains(q.listeners, l) {
		q.listeners = append(slices.Clip(q.listeners), l)
	}
	return q.id, nil
}

// ResolveQueue returns the id of the queue name in namespace ns, or
// ErrNotFound.
func (s *Store) ResolveQueue(ns, name string) (uint32, error) {
	n := s.namespaces.get(ns)
	if n == nil {
		return 0, ErrNotFound
	}
	n.mu.RLock()
	defer n.mu.RUnlock()
	if q := n.queues[name]; q != nil {
		return q.id, nil
	}
	return 0, ErrNotFound
}

// queue returns queue id if it belongs to namespace ns, or nil: another
// namespace's queue must look exactly like one that does not exist.
func (s *Store) queue(ns string, id uint32) *queue {
	q := s.queues.get(id)
	if q == nil || q.ns.name != ns {
		return nil
	}
	return q
}

// Enqueue appends a copy of item to queue id of namespace ns, then tells
// each of the queue's listeners, once, outside the lock. An unknown queue
// (or another namespace's) is ErrNotFound, an item over MaxValueSize
// ErrTooLarge, a queue at MaxQueueItems or a namespace that would pass
// MaxBytes ErrQuota. It allocates the copy of the item only.
//
// A listener removed while Enqueue runs may still be told about the item.
func (s *Store) Enqueue(ns string, id uint32, item []byte) error {
	q := s.queue(ns, id)
	if q == nil {
		return ErrNotFound
	}
	if len(item) > s.limits.MaxValueSize {
		return ErrTooLarge
	}
	n := q.ns
	n.mu.Lock()
	if q.items.len() >= s.limits.MaxQueueItems || n.bytes+int64(len(item)) > s.limits.MaxBytes {
		n.mu.Unlock()
		return ErrQuota
	}
	q.items.push(clone(item))
	n.bytes += int64(len(item))
	listeners := q.listeners
	n.mu.Unlock()
	for _, l := range listeners {
		l.QueueReady(id)
	}
	return nil
}

// Dequeue removes and returns the front item of queue id of namespace ns:
// ErrNotFound for an unknown queue (or another namespace's), ErrEmpty for
// an empty one. The item is the caller's; Dequeue does not allocate.
func (s *Store) Dequeue(ns string, id uint32) ([]byte, error) {
	q := s.queue(ns, id)
	if q == nil {
		return nil, ErrNotFound
	}
	n := q.ns
	n.mu.Lock()
	defer n.mu.Unlock()
	if q.items.len() == 0 {
		return nil, ErrEmpty
	}
	item := q.items.pop()
	n.bytes -= int64(len(item))
	return item, nil
}

// RemoveListener removes l from every queue, for a filter unloading. It
// visits every queue of the store, which is fine for an event that rare.
// An Enqueue under way may still tell l once after RemoveListener returns.
func (s *Store) RemoveListener(l Listener) {
	if l == nil || !reflect.TypeOf(l).Comparable() {
		return // never registered
	}
	s.queues.each(func(q *queue) {
		q.ns.mu.Lock()
		if i := slices.Index(q.listeners, l); i >= 0 {
			q.listeners = slices.Delete(slices.Clone(q.listeners), i, i+1)
		}
		q.ns.mu.Unlock()
	})
}

// ring is a FIFO of items in a circular buffer: in a steady flow, pushing
// and popping allocate nothing. It shrinks when mostly empty, so a burst
// does not pin its peak size forever.
type ring struct {
	buf  [][]byte
	head int // index of the front item
	n    int // number of items
}

const minRing = 8

func (r *ring) len() int { return r.n }

func (r *ring) push(item []byte) {
	if r.n == len(r.buf) {
		r.resize(max(2*len(r.buf), minRing))
	}
	r.buf[(r.head+r.n)%len(r.buf)] = item
	r.n++
}

// pop removes the front item; the ring must not be empty.
func (r *ring) pop() []byte {
	item := r.buf[r.head]
	r.buf[r.head] = nil // the item is the caller's now
	r.head = (r.head + 1) % len(r.buf)
	r.n--
	if len(r.buf) > 8*minRing && r.n <= len(r.buf)/4 {
		r.resize(len(r.buf) / 2)
	}
	return item
}

func (r *ring) resize(size int) {
	buf := make([][]byte, size)
	for i := range r.n {
		buf[i] = r.buf[(r.head+i)%len(r.buf)]
	}
	r.buf, r.head = buf, 0
}
