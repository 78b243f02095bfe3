package filters

import (
	"context"
	"errors"
	"fmt"

	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/experimental"

	"github.com/sluice-edge/sluice/abi"
	"github.com/sluice-edge/sluice/filters/internal/cowmem"
	"github.com/sluice-edge/sluice/filters/internal/wasmbin"
)

// How a plugin's instances start, fastest first:
//
//   - restored: from a snapshot of an instance taken right after
//     proxy_on_configure. Memory is a copy-on-write mapping of the
//     snapshot's memory and the mutable globals are set to the snapshot's
//     values; no guest code runs until the request's first callback.
//   - fresh, prepared: the module's data segments come as a copy-on-write
//     mapping of the initial memory image, then the start function,
//     _initialize, proxy_on_vm_start and proxy_on_configure run.
//   - fresh, as is: wazero instantiates the module unchanged (for modules
//     Prepare refuses).
//
// Either way nothing is shared between instances but read-only images.

// idleMemoriesPerPool bounds the released memories a pool keeps mapped for
// the next instance: enough for a filter's concurrent requests not to map
// and unmap memories as they come and go. Each costs two kernel mappings
// and, reset, no resident memory beyond a small image's pages; cowmem caps
// the total across pools.
const idleMemoriesPerPool = 64

// snapshot is an instance's state right after configuration.
type snapshot struct {
	memory  *cowmem.Pool
	pages   uint32   // memory size, in 64 KiB pages
	globals []uint64 // values of the prepared module's mutable globals
	names   []string // their export names
}

// snapshotRefusal says why a prepared module's instances cannot be restored
// from a snapshot, or returns "" when they can.
func snapshotRefusal(s *wasmbin.Summary, prepared *wasmbin.Prepared) string {
	if s.WritesTables {
		return "its code writes tables, which a snapshot does not hold"
	}
	for _, g := range prepared.Globals {
		switch g.Type {
		case 0x7f, 0x7e, 0x7d, 0x7c: // numbers: their value is the whole state
		default:
			return fmt.Sprintf("mutable global %d holds a vector or a reference", g.Index)
		}
	}
	return ""
}

// takeSnapshot records inst's memory and mutable globals. inst has just
// been configured and has served no request.
func (p *Plugin) takeSnapshot(inst *Instance) (*snapshot, error) {
	mem := inst.mod.Memory()
	contents, ok := mem.Read(0, mem.Size())
	if !ok {
		return nil, errors.New("reading the configured instance's memory")
	}
	pool, err := cowmem.NewPool(contents, p.memoryReserve(), idleMemoriesPerPool)
	if err != nil {
		return nil, err
	}
	s := &snapshot{memory: pool, pages: mem.Size() / wasmPageSize}
	for _, g := range p.prepared.Globals {
		name := wasmbin.GlobalExport(g.Index)
		global := inst.mod.ExportedGlobal(name)
		if global == nil {
			pool.Close()
			return nil, fmt.Errorf("global %s is not exported", name)
		}
		s.names = append(s.names, name)
		s.globals = append(s.globals, global.Get())
	}
	return s, nil
}

// memoryReserve is the address space each memory reserves: the most it may
// grow to.
func (p *Plugin) memoryReserve() uint64 {
	return p.cfg.Limits.MemoryLimit / wasmPageSize * wasmPageSize
}

// overloaded is the error of an instance the memory budget cannot hold.
func (p *Plugin) overloaded() error {
	return fmt.Errorf("wasm filter %q: %w", p.cfg.Name, ErrOverloaded)
}

// chargesBudget reports whether the instance's memory is charged to the
// plugin's memory budget. The instances Load validates (and snapshots) and
// the background one are the operator's, not a request's: a busy budget
// must not fail a config load, or stop a filter's timer.
func (inst *Instance) chargesBudget() bool {
	return inst.role == roleRequest || inst.role == roleShared
}

// withMemory charges the instance being created to the plugin's memory
// budget and returns a context that makes wazero give it a memory from pool
// (or, without a pool, its own), which inst owns until Close. A budget that
// cannot hold the instance's initial memory refuses it: ErrOverloaded.
func (inst *Instance) withMemory(ctx context.Context, pool *cowmem.Pool) (context.Context, error) {
	p := inst.plugin
	initial := p.initialMemory()
	charge := inst.chargesBudget()
	if pool == nil {
		// wazero's own memory: charged as it starts, its growth not seen.
		if charge {
			if !p.budget().Charge(initial) {
				return nil, p.overloaded()
			}
			inst.charged = initial
		}
		return ctx, nil
	}
	mem, err := pool.Get()
	if errors.Is(err, cowmem.ErrTooManyMemories) {
		return nil, fmt.Errorf("wasm filter %q: %w (%w)", p.cfg.Name, ErrOverloaded, err)
	}
	if err != nil {
		return nil, err
	}
	if charge && !mem.ChargeTo(p.budget(), initial) {
		pool.Put(mem)
		return nil, p.overloaded()
	}
	inst.memory, inst.memoryPool = mem, pool
	return experimental.WithMemoryAllocator(ctx, experimental.MemoryAllocatorFunc(
		func(uint64, uint64) experimental.LinearMemory { return mem })), nil
}

// restore makes inst the plugin's configured instance, from its snapshot.
func (inst *Instance) restore(ctx context.Context) error {
	p := inst.plugin
	s := p.snapshot
	inst.root.phase = rootReady
	inst.budget = p.cfg.Limits.Timeout
	inst.guest = abi.NewGuest()
	mctx, err := inst.withMemory(ctx, s.memory)
	if errors.Is(err, ErrOverloaded) {
		return err
	}
	if err != nil {
		return &GuestError{Plugin: p.cfg.Name, Callback: "restore", Kind: ErrInstantiate, Err: err}
	}
	mod, err := p.runtime.InstantiateModule(mctx, p.compiled, p.modCfg)
	if err != nil {
		return &GuestError{Plugin: p.cfg.Name, Callback: "restore", Kind: ErrInstantiate, Err: err}
	}
	inst.mod = mod
	if have := mod.Memory().Size() / wasmPageSize; have < s.pages {
		if _, ok := mod.Memory().Grow(s.pages - have); !ok {
			return &GuestError{Plugin: p.cfg.Name, Callback: "restore", Kind: ErrInstantiate,
				Err: fmt.Errorf("growing memory to the snapshot's %d pages", s.pages)}
		}
	}
	inst.setGlobals(s)
	if err := inst.guest.Bind(mod); err != nil {
		return &GuestError{Plugin: p.cfg.Name, Callback: "restore", Kind: ErrABIViolation, Err: err}
	}
	return nil
}

// setGlobals gives the isolate's mutable globals the snapshot's values.
func (iso *isolate) setGlobals(s *snapshot) {
	if iso.globals == nil {
		iso.globals = make([]api.MutableGlobal, len(s.names))
		for i, name := range s.names {
			iso.globals[i] = iso.mod.ExportedGlobal(name).(api.MutableGlobal)
		}
	}
	for i, g := range iso.globals {
		g.Set(s.globals[i])
	}
}
