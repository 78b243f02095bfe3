package filters

import (
	"errors"
	"sync/atomic"
)

// ErrOverloaded is returned by NewInstance when the memory budget cannot
// hold another instance: a request to shed (503), not a filter failure.
var ErrOverloaded = errors.New("guest memory budget exhausted")

// MemoryBudget caps the linear memory that instances hold at once, across
// the plugins that share it: the bytes each instance's memory has (its size,
// not just what is resident: a guest can touch all of it). An instance that
// would not fit is refused before it is created (ErrOverloaded), and
// memory.grow past the budget fails inside the guest, as it does at
// memory_limit. Without it, 10,000 concurrent requests each growing to
// memory_limit could take the host down. It is safe for concurrent use.
type MemoryBudget struct {
	limit atomic.Uint64
	used  atomic.Uint64
}

// NewMemoryBudget returns a budget of limit bytes.
func NewMemoryBudget(limit uint64) *MemoryBudget {
	b := &MemoryBudget{}
	b.limit.Store(limit)
	return b
}

// DefaultMemoryBudget is the budget of plugins whose Config names none:
// half the machine's memory, until SetLimit says otherwise.
var DefaultMemoryBudget = NewMemoryBudget(defaultBudgetLimit())

// SetLimit changes the budget's limit; memory already held stays held.
func (b *MemoryBudget) SetLimit(limit uint64) { b.limit.Store(limit) }

// Limit and Used report the budget's limit and what instances hold now.
func (b *MemoryBudget) Limit() uint64 { return b.limit.Load() }

// Used reports the bytes instances hold now.
func (b *MemoryBudget) Used() uint64 { return b.used.Load() }

// Charge implements cowmem.Charger.
func (b *MemoryBudget) Charge(n uint64) bool {
	for {
		used := b.used.Load()
		if used+n > b.limit.Load() {
			return false
		}
		if b.used.CompareAndSwap(used, used+n) {
			return true
		}
	}
}

// Refund implements cowmem.Charger.
func (b *MemoryBudget) Refund(n uint64) { b.used.Add(-n) }
