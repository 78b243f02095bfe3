package abi

import (
	"context"
	"errors"
	"fmt"

	"github.com/tetratelabs/wazero/api"
)

// ErrNoMemory and ErrNoAllocator reject modules the host cannot exchange data
// with.
var (
	ErrNoMemory    = errors.New(`module does not export its linear memory as "memory"`)
	ErrNoAllocator = errors.New("module exports neither proxy_on_memory_allocate nor malloc")
)

// Guest is the ABI state of one module instance: its linear memory and its
// allocator, through which the host hands data to the guest. It is not safe
// for concurrent use; the runtime serializes calls into an instance.
type Guest struct {
	mod      api.Module
	mem      api.Memory
	allocate api.Function // looked up when first needed
	stack    [1]uint64

	// allocating is set while the guest allocator runs: the allocator must
	// not call back into Proxy-Wasm host functions (it could observe or
	// change state half-way through the host call that asked for memory).
	allocating bool
}

// NewGuest returns the ABI state of an instance that is about to be
// created. It binds to the instance on the first host call (which may come
// from the module's start function, before instantiation returns) or when
// the runtime calls Bind.
func NewGuest() *Guest { return &Guest{} }

// Bind attaches the guest to mod and its exported memory. Binding twice is a
// no-op. The allocator is found when the host first hands the guest data:
// looking an export up costs wazero a call engine with its own stack, which
// a request that never needs the allocator should not pay.
func (g *Guest) Bind(mod api.Module) error {
	if g.mem != nil {
		return nil
	}
	mem := mod.ExportedMemory(ExportMemory)
	if mem == nil {
		return ErrNoMemory
	}
	g.mod, g.mem = mod, mem
	return nil
}

// allocator finds the guest's allocator: proxy_on_memory_allocate, or malloc
// in its absence, as the specification says; both must have the type
// (i32) -> i32.
func (g *Guest) allocator() (api.Function, error) {
	if g.allocate != nil {
		return g.allocate, nil
	}
	for _, name := range []string{ExportAllocate, ExportMalloc} {
		if alloc := g.mod.ExportedFunction(name); alloc != nil {
			def := alloc.Definition()
			if !AllocatorSignature.Equal(def.ParamTypes(), def.ResultTypes()) {
				return nil, fmt.Errorf("export %q has type %s, want (i32) -> i32", name,
					FormatSignature(def.ParamTypes(), def.ResultTypes()))
			}
			g.allocate = alloc
			return alloc, nil
		}
	}
	return nil, ErrNoAllocator
}

// Memory returns the guest's linear memory.
func (g *Guest) Memory() api.Memory { return g.mem }

// read returns a view of size bytes of guest memory at ptr, or false when any
// byte of it lies outside memory. The view aliases guest memory: copy what
// must outlive the host call.
func (g *Guest) read(ptr, size uint32) ([]byte, bool) {
	return ReadMemory(g.mem, ptr, size)
}

// ReadMemory returns a view of size bytes of mem at ptr, or false when the
// range is not entirely inside memory. ptr+size is computed in 64 bits, so
// ranges that wrap around 2^32 are refused rather than wrapped.
func ReadMemory(mem api.Memory, ptr, size uint32) ([]byte, bool) {
	if uint64(ptr)+uint64(size) > uint64(mem.Size()) {
		return nil, false
	}
	return mem.Read(ptr, size)
}

// writeUint32 stores v little-endian at ptr, or returns false when ptr is out
// of bounds.
func (g *Guest) writeUint32(ptr, v uint32) bool { return g.mem.WriteUint32Le(ptr, v) }

// writeUint64 stores v little-endian at ptr, or returns false when ptr is out
// of bounds.
func (g *Guest) writeUint64(ptr uint32, v uint64) bool { return g.mem.WriteUint64Le(ptr, v) }

// inBounds reports whether size bytes at ptr lie inside guest memory.
func (g *Guest) inBounds(ptr, size uint32) bool {
	return uint64(ptr)+uint64(size) <= uint64(g.mem.Size())
}

// copyOut hands data to the guest the Proxy-Wasm way: it allocates len(data)
// bytes with the guest allocator, copies data there, and writes the address
// and length to the return slots retPtr and retSize. Empty data is returned
// as address 0 and length 0 without allocating.
//
// The return slots are checked before anything is allocated. An allocator
// that returns 0, or memory outside the instance, makes the call fail with
// INVALID_MEMORY_ACCESS; an allocator that traps fails the whole guest call.
func (g *Guest) copyOut(ctx context.Context, data []byte, retPtr, retSize uint32) Status {
	if !g.inBounds(retPtr, 4) || !g.inBounds(retSize, 4) {
		return StatusInvalidMemoryAccess
	}
	if uint64(len(data)) > uint64(^uint32(0)) {
		return StatusInvalidMemoryAccess
	}
	var ptr uint32
	if len(data) > 0 {
		var ok bool
		if ptr, ok = g.alloc(ctx, uint32(len(data))); !ok {
			return StatusInvalidMemoryAccess
		}
		g.mem.Write(ptr, data)
	}
	g.writeUint32(retPtr, ptr)
	g.writeUint32(retSize, uint32(len(data)))
	return StatusOK
}

// alloc calls the guest allocator for size bytes and checks what it returns.
func (g *Guest) alloc(ctx context.Context, size uint32) (ptr uint32, ok bool) {
	allocate, err := g.allocator()
	if err != nil {
		panic(&GuestFault{Func: "memory allocator", Err: err})
	}
	g.allocating = true
	g.stack[0] = uint64(size)
	err = allocate.CallWithStack(ctx, g.stack[:])
	g.allocating = false
	if err != nil {
		// The allocator trapped, exited or ran out of time: the instance is
		// unusable, so the guest call that asked for memory fails too.
		panic(&GuestFault{Func: "memory allocator", Err: err})
	}
	ptr = uint32(g.stack[0])
	return ptr, ptr != 0 && g.inBounds(ptr, size)
}
