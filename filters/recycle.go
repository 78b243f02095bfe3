package filters

import (
	"context"
	"sync"
)

// Recycling. When a request's instance, restored from the snapshot, is
// closed, its isolate (the wazero module and its memory) is reset to the
// snapshot in place and kept for the next request, which then skips
// wazero's instantiation: a new module instance, its engine, a call engine
// and its stack for every function looked up, about 14 KiB of garbage and
// most of the cost of a tiny filter's request (see RATIONALE.md, "Fast
// isolates").
//
// The reset restores everything a guest can change, so that the next
// request starts from exactly the state a fresh restore gives it:
//   - memory: its contents go back to the snapshot's image (cowmem.Pool.Park);
//   - mutable globals: set to the snapshot's values (all of them: a prepared
//     module exports every one);
//   - tables: a module whose code writes tables has no snapshot (the lazy
//     table's fills are the same whoever makes them, see wasmbin);
//   - data segments: a module whose code drops them (data.drop) or reads
//     them (memory.init) is not prepared, so has no snapshot;
//   - WASI: Sluice's functions keep no state in the module (fd_close
//     closes nothing);
//   - the host side (root context, HTTP contexts, ids, timers) belongs to
//     the Instance, which is not reused; the isolate keeps only lookups
//     (exports, globals) and the guest's bindings (abi.Guest: the memory
//     and the allocator export).
//
// What the reset cannot restore disqualifies the isolate, which is then
// closed as before: an instance that failed (a trap, a timeout, a canceled
// request: the guest may have stopped half-way), one whose memory grew
// (wazero cannot shrink it, and memory.size would tell), one the host
// closed, and one with a call still running (Close from another goroutine).
//
// Pre-warming, with recycling on, restores Config.Prewarm isolates at load
// and keeps them as spares: no goroutine refills them, since every request
// that ends well leaves one.

// spareIsolates holds a plugin's recycled isolates. How many it holds is
// bounded by the memory pool: each is parked there (cowmem.Pool.Park).
type spareIsolates struct {
	mu     sync.Mutex
	list   []isolate
	closed bool
}

// put keeps iso, a parked isolate, or discards it if the plugin is
// closing.
func (s *spareIsolates) put(iso isolate) {
	s.mu.Lock()
	if !s.closed {
		s.list = append(s.list, iso)
		s.mu.Unlock()
		return
	}
	s.mu.Unlock()
	iso.memoryPool.Unpark(iso.memory)
	iso.discard(context.Background())
}

// take returns a spare isolate, the most recently recycled (its pages are
// the likeliest still cached), if there is one.
func (s *spareIsolates) take() (isolate, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := len(s.list)
	if n == 0 {
		return isolate{}, false
	}
	iso := s.list[n-1]
	s.list[n-1] = isolate{}
	s.list = s.list[:n-1]
	return iso, true
}

// close discards the spare isolates and refuses more.
func (s *spareIsolates) close(ctx context.Context) {
	s.mu.Lock()
	list := s.list
	s.list, s.closed = nil, true
	s.mu.Unlock()
	for _, iso := range list {
		iso.memoryPool.Unpark(iso.memory)
		iso.discard(ctx)
	}
}

// discard closes the module and hands its memory back to the pool.
func (iso *isolate) discard(ctx context.Context) {
	_ = iso.mod.Close(ctx)
	iso.memoryPool.Put(iso.memory)
}

// recycle resets inst's isolate to the snapshot and keeps it for another
// request, if it can (see above), and reports whether it did: inst is then
// closed, its calls failing as a closed instance's do.
func (inst *Instance) recycle() bool {
	p := inst.plugin
	if p.spares == nil || inst.role != roleRequest || !inst.mu.TryLock() {
		return false
	}
	defer inst.mu.Unlock()
	iso := inst.isolate
	// A restore that failed half-way left no module, the wrong memory
	// size or an unbound guest.
	if inst.err != nil || iso.mod == nil || iso.memoryPool != p.snapshot.memory ||
		iso.guest == nil || iso.guest.Memory() == nil ||
		iso.mod.IsClosed() || iso.mod.Memory().Size() != p.snapshot.pages*wasmPageSize {
		return false
	}
	if !iso.memoryPool.Park(iso.memory) {
		return false
	}
	iso.setGlobals(p.snapshot)
	p.spares.put(iso)
	inst.isolate = isolate{}
	if inst.root.scope != nil {
		inst.root.scope.end()
	}
	return true
}

// recycled returns a new instance with role r around a spare isolate, or
// nil if the plugin has none. The memory budget must hold the isolate's
// memory; when it cannot, the isolate stays spare and the instance is
// refused with ErrOverloaded.
func (p *Plugin) recycled(log LogSink, r role) (*Instance, error) {
	if p.spares == nil {
		return nil, nil
	}
	iso, ok := p.spares.take()
	if !ok {
		return nil, nil
	}
	inst := p.newInstance(log)
	inst.role, inst.origin = r, OriginRecycled
	if inst.chargesBudget() && !iso.memory.ChargeTo(p.budget(), p.initialMemory()) {
		p.spares.put(iso)
		return nil, p.overloaded()
	}
	iso.memoryPool.Unpark(iso.memory)
	inst.isolate = iso
	inst.root.phase = rootReady
	inst.budget = p.cfg.Limits.Timeout
	return inst, nil
}

// seedSpares restores n isolates and keeps them as spares, for the first
// requests. It stops at the first it cannot restore (the memory budget is
// full, say): requests then restore their own.
func (p *Plugin) seedSpares(ctx context.Context, n int) {
	for range n {
		inst := p.newRestored()
		err := inst.restore(ctx)
		inst.Close(ctx) // into the spares, if restored
		if err != nil {
			return
		}
	}
}
