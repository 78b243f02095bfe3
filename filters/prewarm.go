package filters

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultPrewarm is how many restored instances a plugin keeps ready when
// its configuration does not say.
const DefaultPrewarm = 4

// warmInstances keeps a few instances restored from the snapshot ahead of
// requests, so that a request takes a ready one instead of waiting for
// wazero to instantiate it. Each is a fresh instance that has never run a
// callback: restoring runs no guest code, so it belongs to no request until
// taken, and is never handed out twice.
//
// The pool refills from one goroutine, after a take: an idle filter costs
// nothing. When requests come faster than it refills, takes find it empty
// ("misses"); misses less than busyMisses apart mean the machine is busy,
// and then the pool stays empty and requests restore their own instances:
// handing instances across goroutines would cost throughput (measured: 10%
// of a tiny filter's requests per second) for no latency gain. It holds at
// most cap(ready) instances.
type warmInstances struct {
	ready    chan *Instance
	wake     chan struct{}
	stop     chan struct{}
	stopOnce sync.Once
	done     sync.WaitGroup
	lastMiss atomic.Int64 // unix nanoseconds
}

// busyMisses is how close two misses must come for the pool to stop
// refilling.
const busyMisses = 5 * time.Millisecond

func (p *Plugin) startWarming(n int) {
	w := &warmInstances{
		ready: make(chan *Instance, n),
		wake:  make(chan struct{}, 1),
		stop:  make(chan struct{}),
	}
	p.warm = w
	w.done.Add(1)
	go p.fillWarm(w)
	w.refill()
}

// fillWarm restores instances until the pool is full, each time it is woken.
func (p *Plugin) fillWarm(w *warmInstances) {
	defer w.done.Done()
	for {
		select {
		case <-w.stop:
			return
		case <-w.wake:
		}
		for len(w.ready) < cap(w.ready) {
			inst := p.newRestored()
			if err := inst.restore(context.Background()); err != nil {
				inst.Close(context.Background())
				break // the request path will report it
			}
			select {
			case w.ready <- inst:
			case <-w.stop:
				inst.Close(context.Background())
				return
			}
		}
	}
}

// take returns a ready instance, or nil when none is, and asks for a refill
// unless the machine looks busy.
func (w *warmInstances) take() *Instance {
	select {
	case inst := <-w.ready:
		w.refill()
		return inst
	default:
		now := time.Now().UnixNano()
		if now-w.lastMiss.Swap(now) > int64(busyMisses) {
			w.refill()
		}
		return nil
	}
}

func (w *warmInstances) refill() {
	select {
	case w.wake <- struct{}{}:
	default: // a refill is already due
	}
}

// close stops the filler and discards the ready instances. It is safe to
// call more than once.
func (w *warmInstances) close() {
	w.stopOnce.Do(func() { close(w.stop) })
	w.done.Wait()
	for {
		select {
		case inst := <-w.ready:
			inst.Close(context.Background())
		default:
			return
		}
	}
}
