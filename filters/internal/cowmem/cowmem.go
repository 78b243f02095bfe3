// Package cowmem gives WebAssembly instances linear memories that start as
// a shared image and are copied only where written: each memory maps the
// image privately (copy-on-write), so a fresh instance costs a mapping, not a
// copy, and holds only the pages it touches. Released memories are reset to
// the image and kept for the next instance: small ones and a few large ones
// keep the pages they wrote, with the image copied back over them, so that
// the next instance writing them takes no page fault; the others drop them.
// An owner that cannot give its memory up (a recycled WebAssembly instance)
// parks it instead: reset in place, counted as kept.
//
// On Linux the image is a sealed memfd mapped MAP_PRIVATE; elsewhere a
// memory is a plain copy of the image.
package cowmem

import (
	"errors"
	"math"
	"sync"
	"sync/atomic"
)

// maxIdle bounds the released memories all pools keep mapped at once: each
// holds two of the kernel's mappings, and the kernel caps a process's
// mappings (vm.max_map_count, 65530 by default) whatever the number of
// pools.
var maxIdle int64 = 4096 // a variable for tests

// idle counts the memories all pools keep.
var idle atomic.Int64

// A warm memory is an idle one that kept the pages it wrote, reset by
// copying the image back over them (Memory.restoreWritten): a page written
// again costs the next instance no fault, where a dropped one costs a fault,
// a copy and the drop (~6 µs a page measured here, against ~0.6 µs). Warm
// memories stay resident, so they are bounded: warmPerPool per pool,
// maxWarm in all, and one that wrote more than maxWarmPages pages drops
// them. warmPerPool is as many as a filter keeps (filters'
// idleMemoriesPerPool): with recycled isolates parked here, a lower bound
// (16, before) cost a stock-Go filter under 32 connections 2.5 page faults
// a request; this one costs 13 MB more resident memory for two filters
// after such a load (measured).
const (
	warmPerPool  = 64
	maxWarm      = 512
	maxWarmPages = 256
)

// warm counts the warm memories of all pools.
var warm atomic.Int64

// mapped counts the memories all pools have made and not released, in use
// or idle. It is capped at a quarter of the kernel's mapping limit: each
// memory holds two mappings, and the rest are left to the Go runtime,
// compiled code and everything else. Past the cap, Get refuses: a guest
// instance too many must be refused, not crash the process when the
// kernel refuses a mapping the runtime needs.
var (
	mapped    atomic.Int64
	maxMapped atomic.Int64
)

func init() { maxMapped.Store(int64(maxMapCount() / 4)) }

// Mapped is how many memories are mapped now.
func Mapped() int64 { return mapped.Load() }

// SetMappedLimit changes how many memories may be mapped at once, for
// tests, and returns the previous limit.
func SetMappedLimit(n int64) int64 { return maxMapped.Swap(n) }

// Errors of NewPool and Get.
var (
	ErrTooLarge        = errors.New("cowmem: image larger than the memory reservation")
	ErrClosed          = errors.New("cowmem: pool closed")
	ErrTooManyMemories = errors.New("cowmem: as many memories mapped as the kernel's mapping limit allows")
)

// Pool hands out memories that start as its image, each with room to grow to
// reserve bytes. It keeps up to keep released memories for reuse. It is safe
// for concurrent use.
type Pool struct {
	image   *image
	reserve uint64
	keep    int
	// small is a copy of a small image: resetting a memory by copying it
	// back is cheaper than asking the kernel to drop the pages.
	small []byte

	// mu guards the idle lists; the image stays open while a reader holds
	// it, so Close cannot close the image's descriptor under a mapping
	// being made or a warm reset copying from it.
	mu     sync.RWMutex
	cold   []*Memory // idle, their written pages dropped
	warm   []*Memory // idle, warm: Get takes these first
	parked int       // idle, kept by their owners (see Park)
	closed bool
	// warmSlots counts warm memories and those being reset warm: a reset
	// reserves its slot before copying, so that concurrent releases cannot
	// keep more than warmPerPool.
	warmSlots atomic.Int32
}

// NewPool makes a pool of memories starting as a copy of contents (padded
// with zeros to a whole number of pages), able to grow to reserve bytes.
func NewPool(contents []byte, reserve uint64, keep int) (*Pool, error) {
	if uint64(len(contents)) > reserve {
		return nil, ErrTooLarge
	}
	img, err := newImage(contents)
	if err != nil {
		return nil, err
	}
	p := &Pool{image: img, reserve: reserve, keep: keep}
	if len(contents) <= copyResetLimit {
		p.small = append([]byte(nil), contents...)
	}
	return p, nil
}

// copyResetLimit is the largest memory that keeps all its pages when reset:
// the image is copied back over the pages it wrote (or, where the page
// table cannot tell which, over all of them). Larger ones are reset warm
// or by dropping their pages. A 64 KiB copy costs about a microsecond, an
// madvise of as many pages several.
const copyResetLimit = 256 << 10

// Get returns a memory holding the image, from the pool or new.
func (p *Pool) Get() (*Memory, error) {
	p.mu.Lock()
	if m := pop(&p.warm); m != nil {
		p.mu.Unlock()
		p.endIdle(m)
		return m, nil
	}
	if m := pop(&p.cold); m != nil {
		p.mu.Unlock()
		p.endIdle(m)
		return m, nil
	}
	p.mu.Unlock()
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.closed {
		return nil, ErrClosed
	}
	if mapped.Add(1) > maxMapped.Load() {
		mapped.Add(-1)
		return nil, ErrTooManyMemories
	}
	m, err := p.image.mapMemory(p.reserve)
	if err != nil {
		mapped.Add(-1)
	}
	return m, err
}

// Put resets a memory to the image and keeps it for reuse, or releases it
// when the pool is full or closed. The memory must no longer be in use: no
// guest code may run on it.
func (p *Pool) Put(m *Memory) {
	if m == nil {
		return
	}
	m.refund()
	if !p.resetContents(m) {
		m.unmap()
		return
	}
	m.size = 0
	p.mu.Lock()
	if p.roomLocked() {
		if m.warm {
			p.warm = append(p.warm, m)
		} else {
			p.cold = append(p.cold, m)
		}
		p.mu.Unlock()
		return
	}
	p.mu.Unlock()
	if m.warm {
		p.warmSlots.Add(-1)
	}
	m.unmap()
}

// Park resets m to the image in place, for an owner that keeps it idle: a
// WebAssembly instance kept for reuse holds on to its memory, which cannot
// shrink, so m keeps its size. A parked memory counts as one the pool
// keeps, so Park reports false, leaving m as it was, when the pool or the
// process keeps enough, or m could not be reset; the owner then releases it
// with Put. Unpark ends the parking when the owner uses m again.
func (p *Pool) Park(m *Memory) bool {
	m.refund()
	p.mu.Lock()
	room := p.roomLocked()
	if room {
		p.parked++
	}
	p.mu.Unlock()
	if !room {
		return false
	}
	size := m.size
	ok := p.resetContents(m)
	m.high = max(m.high, size) // kept or not, its pages up to size may be written
	if !ok {
		p.Unpark(m)
	}
	return ok
}

// Unpark hands a parked memory back to its owner for use.
func (p *Pool) Unpark(m *Memory) {
	p.mu.Lock()
	p.parked--
	p.mu.Unlock()
	p.endIdle(m)
}

// idleCount is how many memories the pool keeps. The caller holds p.mu.
func (p *Pool) idleCount() int { return len(p.cold) + len(p.warm) + p.parked }

// roomLocked reserves a place for one more idle memory, if the pool is open
// and neither it nor the process keeps enough. The caller holds p.mu.
func (p *Pool) roomLocked() bool {
	if p.closed || p.idleCount() >= p.keep {
		return false
	}
	if idle.Add(1) > maxIdle {
		idle.Add(-1)
		return false
	}
	return true
}

// endIdle counts m, idle until now, as in use.
func (p *Pool) endIdle(m *Memory) {
	idle.Add(-1)
	if m.warm {
		p.warmSlots.Add(-1)
		warm.Add(-1)
		m.warm = false
	}
}

// resetContents resets m's contents to the image, warm if it can (see
// restoreWarm), and reports false when m could not be reset and must be
// released. m's size stays for the caller to set.
func (p *Pool) resetContents(m *Memory) bool {
	m.refused = false
	switch {
	case p.small != nil && m.high <= copyResetLimit:
		// A small memory keeps all its pages: copying the image back over
		// the pages it wrote costs less than over them all (a 64 KiB
		// memory: ~1 µs against ~3, and under load ~9 with the caches
		// cold), so it is not counted warm.
		if p.restoreSmall(m) {
			break
		}
		// Only what was handed out (up to high) can have been written.
		n := min(uint64(len(p.small)), m.high)
		copy(m.buf[:n], p.small[:n])
		if m.high > n {
			clear(m.buf[n:m.high])
		}
		m.high = 0
	case p.restoreWarm(m):
		// high stays: the pages kept may reach it, and the next reset
		// must look at them all.
		m.warm = true
	default:
		return m.dropPages() == nil
	}
	return true
}

func pop(list *[]*Memory) *Memory {
	n := len(*list)
	if n == 0 {
		return nil
	}
	m := (*list)[n-1]
	*list = (*list)[:n-1]
	return m
}

// restoreWarm resets m by copying the image back over the pages it wrote,
// if the pool and the process keep another warm memory and m wrote few
// enough pages, and reports whether it did. It reserves m's warm slots.
func (p *Pool) restoreWarm(m *Memory) bool {
	p.mu.RLock() // the image stays mapped meanwhile
	defer p.mu.RUnlock()
	if p.closed {
		return false
	}
	if p.warmSlots.Add(1) > warmPerPool {
		p.warmSlots.Add(-1)
		return false
	}
	if warm.Add(1) > maxWarm || !m.restoreWritten(p.image, maxWarmPages) {
		warm.Add(-1)
		p.warmSlots.Add(-1)
		return false
	}
	return true
}

// restoreSmall resets a small memory by copying the image back over the
// pages it wrote, if the pool is open (its image mapped) and the page table
// tells which they are, and reports whether it did.
func (p *Pool) restoreSmall(m *Memory) bool {
	p.mu.RLock() // the image stays mapped meanwhile
	defer p.mu.RUnlock()
	return !p.closed && m.restoreWritten(p.image, math.MaxInt)
}

// Close releases the pooled memories and the image. Memories still in use
// stay valid until Put, which then releases them.
func (p *Pool) Close() {
	p.mu.Lock()
	free := append(p.cold, p.warm...)
	p.cold, p.warm, p.closed = nil, nil, true
	p.image.close()
	p.mu.Unlock()
	idle.Add(-int64(len(free)))
	for _, m := range free {
		m.unmap()
	}
}

// unmap releases a memory for good.
func (m *Memory) unmap() {
	if m.warm {
		warm.Add(-1)
		m.warm = false
	}
	m.release()
	mapped.Add(-1)
}

// Size is the image's size in bytes, a multiple of the page size.
func (p *Pool) Size() uint64 { return p.image.size }

// Memory is one linear memory: it implements wazero's
// experimental.LinearMemory. Its lifetime is its owner's, not wazero's: Free
// does nothing, because wazero may call it from another goroutine while the
// guest still runs; the owner hands it back with Pool.Put once the guest is
// done.
type Memory struct {
	buf  []byte // the whole reservation
	size uint64 // bytes handed to wazero
	high uint64 // the most ever handed out since its pages were last dropped
	warm bool   // idle, holding the pages it wrote (see warmPerPool)
	osMemory

	charger Charger // pays for what is handed out; nil: nobody
	charged uint64  // bytes charged so far
	refused bool    // a growth was refused by the charger
}

// Charger is charged for the bytes a memory hands out and refunded when
// the memory goes back to its pool: a budget shared by many memories.
type Charger interface {
	// Charge takes n more bytes, or refuses.
	Charge(n uint64) bool
	// Refund gives n bytes back.
	Refund(n uint64)
}

// ChargeTo makes c pay for this memory, charging initial bytes now: what
// wazero will ask for first, which must not fail. It reports whether c
// accepted them.
func (m *Memory) ChargeTo(c Charger, initial uint64) bool {
	if !c.Charge(initial) {
		return false
	}
	m.charger, m.charged = c, initial
	return true
}

// Reallocate implements experimental.LinearMemory: growth within the
// reservation keeps the address, so it never copies. Growth the charger
// refuses fails, as memory.grow past a limit does.
func (m *Memory) Reallocate(size uint64) []byte {
	if size > uint64(len(m.buf)) {
		return nil
	}
	if size > m.charged && m.charger != nil {
		if !m.charger.Charge(size - m.charged) {
			m.refused = true
			return nil
		}
		m.charged = size
	}
	m.size = size
	m.high = max(m.high, size)
	return m.buf[:size:size]
}

// refund gives back what m's charger paid for it: m is idle from now on.
func (m *Memory) refund() {
	if m.charger != nil {
		m.charger.Refund(m.charged)
		m.charger, m.charged = nil, 0
	}
}

// Refused reports whether the charger refused this memory a growth.
func (m *Memory) Refused() bool { return m.refused }

// Free implements experimental.LinearMemory; see Memory.
func (m *Memory) Free() {}

// Bytes is the memory as wazero sees it.
func (m *Memory) Bytes() []byte { return m.buf[:m.size] }
