package abi

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/sys"
)

// onePageMemory returns the real one-page memory of a fresh instance.
func onePageMemory(t *testing.T) api.Memory {
	t.Helper()
	mod := instantiate(t, context.Background(), `(module (memory (export "memory") 1))`)
	mem := mod.ExportedMemory("memory")
	if mem.Size() != pageSize {
		t.Fatalf("memory size %d, want one page", mem.Size())
	}
	return mem
}

func TestReadMemoryBounds(t *testing.T) {
	mem := onePageMemory(t)
	mem.WriteByte(pageSize-1, 0x7e)
	for _, tc := range []struct {
		name      string
		ptr, size uint32
		ok        bool
	}{
		{"whole memory", 0, pageSize, true},
		{"last byte", pageSize - 1, 1, true},
		{"size 0 at the end", pageSize, 0, true},
		{"size 0 at 0", 0, 0, true},
		{"one past the end", pageSize, 1, false},
		{"last byte and one more", pageSize - 1, 2, false},
		{"one more than memory", 0, pageSize + 1, false},
		{"size 0 one past the end", pageSize + 1, 0, false},
		{"ptr near 2^32, size wraps to 0x10", 0xfffffff0, 0x20, false},
		{"ptr 0xffffffff, size 1 wraps to 0", 0xffffffff, 1, false},
		{"ptr 0xffffffff, size 0", 0xffffffff, 0, false},
		{"size 0xffffffff", 0, 0xffffffff, false},
		{"ptr 1, size 0xffffffff wraps to 0", 1, 0xffffffff, false},
		{"ptr and size 0xffffffff", 0xffffffff, 0xffffffff, false},
		{"ptr 0x10001, size 0xffff0000 wraps to 0x1", 0x10001, 0xffff0000, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, ok := ReadMemory(mem, tc.ptr, tc.size)
			if ok != tc.ok {
				t.Fatalf("ReadMemory(%#x, %#x) ok = %v, want %v", tc.ptr, tc.size, ok, tc.ok)
			}
			if !ok {
				if b != nil {
					t.Errorf("refused read returned %d bytes", len(b))
				}
				return
			}
			if uint32(len(b)) != tc.size {
				t.Errorf("len = %d, want %d", len(b), tc.size)
			}
		})
	}
}

// recordingMemory is an api.Memory that counts the reads it is asked for,
// so a test can see that ReadMemory refuses a range on its own instead of
// relying on the memory implementation's checks.
type recordingMemory struct {
	api.Memory
	reads int
}

func (m *recordingMemory) Read(ptr, size uint32) ([]byte, bool) {
	m.reads++
	return m.Memory.Read(ptr, size)
}

func TestReadMemoryRefusesWithoutAskingMemory(t *testing.T) {
	mem := &recordingMemory{Memory: onePageMemory(t)}
	for _, r := range [][2]uint32{{0xfffffff0, 0x20}, {0xffffffff, 1}, {1, 0xffffffff}, {pageSize, 1}} {
		if _, ok := ReadMemory(mem, r[0], r[1]); ok {
			t.Errorf("ReadMemory(%#x, %#x) accepted", r[0], r[1])
		}
	}
	if mem.reads != 0 {
		t.Errorf("ReadMemory passed %d out-of-bounds ranges on to the memory", mem.reads)
	}
	if _, ok := ReadMemory(mem, 0, 1); !ok || mem.reads != 1 {
		t.Errorf("in-bounds read: ok %v after %d reads", ok, mem.reads)
	}
}

// TestReadMemoryAliasesMemory documents that the view is not a copy.
func TestReadMemoryAliasesMemory(t *testing.T) {
	mem := onePageMemory(t)
	b, ok := ReadMemory(mem, pageSize-4, 4)
	if !ok {
		t.Fatal("refused")
	}
	mem.WriteUint32Le(pageSize-4, 0x04030201)
	if string(b) != "\x01\x02\x03\x04" {
		t.Errorf("view = %x, want the bytes written after the read", b)
	}
}

func TestGuestMemoryHelpers(t *testing.T) {
	mem := onePageMemory(t)
	g := &Guest{mem: mem}
	if g.Memory() != mem {
		t.Error("Memory() is not the bound memory")
	}
	for _, tc := range []struct {
		ptr, size uint32
		ok        bool
	}{
		{pageSize - 4, 4, true},
		{pageSize - 3, 4, false},
		{pageSize, 0, true},
		{0xfffffffc, 8, false},
		{0, 0xffffffff, false},
	} {
		if got := g.inBounds(tc.ptr, tc.size); got != tc.ok {
			t.Errorf("inBounds(%#x, %#x) = %v, want %v", tc.ptr, tc.size, got, tc.ok)
		}
		if _, got := g.read(tc.ptr, tc.size); got != tc.ok {
			t.Errorf("read(%#x, %#x) ok = %v, want %v", tc.ptr, tc.size, got, tc.ok)
		}
	}
	if !g.writeUint32(pageSize-4, 0xdeadbeef) || !g.writeUint64(pageSize-8, 1) {
		t.Error("writes at the end of memory refused")
	}
	mem.WriteUint32Le(pageSize-4, 0x11111111)
	if g.writeUint32(pageSize-3, 0) || g.writeUint32(0xffffffff, 0) || g.writeUint64(pageSize-7, 0) || g.writeUint64(0xfffffffc, 0) {
		t.Error("a write past the end of memory was accepted")
	}
	if v, _ := mem.ReadUint32Le(pageSize - 4); v != 0x11111111 {
		t.Errorf("a refused write changed memory: %#x", v)
	}
}

// TestBind covers how a Guest finds memory and allocator, driven the way the
// runtime does: by the first host call of an instance. The memory is bound
// at once; the allocator when a host call first hands the guest data (here
// a property value), so the allocator cases call proxy_get_property too.
func TestBind(t *testing.T) {
	const logCall = `
  (import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))
  (import "env" "proxy_get_property" (func $prop (param i32 i32 i32 i32) (result i32)))
  (func (export "log") (result i32)
    (drop (call $prop (i32.const 0) (i32.const 1) (i32.const 64) (i32.const 68)))
    (call $log (i32.const 2) (i32.const 0) (i32.const 2)))`
	for _, tc := range []struct {
		name    string
		module  string
		wantErr error  // wrapped in a GuestFault
		errText string // for errors without a sentinel
	}{
		{"allocator", `(memory (export "memory") 1)
  (func (export "proxy_on_memory_allocate") (param i32) (result i32) (i32.const 16))`, nil, ""},
		{"malloc only", `(memory (export "memory") 1)
  (func (export "malloc") (param i32) (result i32) (i32.const 16))`, nil, ""},
		{"no memory export", `(memory 1)
  (func (export "proxy_on_memory_allocate") (param i32) (result i32) (i32.const 16))`, ErrNoMemory, ""},
		{"no allocator", `(memory (export "memory") 1)`, ErrNoAllocator, ""},
		{"allocator of the wrong type", `(memory (export "memory") 1)
  (func (export "proxy_on_memory_allocate") (param i64) (result i32) (i32.const 16))`, nil, "want (i32) -> i32"},
		{"malloc of the wrong type", `(memory (export "memory") 1)
  (func (export "malloc") (param i32))`, nil, "want (i32) -> i32"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			host := newFakeHost()
			host.props[""] = []byte("value") // the path "\x00" at address 0: one empty segment
			ctx := WithCall(context.Background(), NewGuest(), host)
			mod := instantiate(t, ctx, "(module"+logCall+"\n"+tc.module+")")
			_, err := mod.ExportedFunction("log").Call(ctx)
			if tc.wantErr == nil && tc.errText == "" {
				if err != nil {
					t.Fatalf("call: %v", err)
				}
				if len(host.logs) != 1 {
					t.Errorf("logs = %v, want one", host.logs)
				}
				return
			}
			var fault *GuestFault
			if !errors.As(err, &fault) {
				t.Fatalf("error %v, want a GuestFault", err)
			}
			if tc.wantErr != nil && !errors.Is(err, tc.wantErr) {
				t.Errorf("error %v, want %v", err, tc.wantErr)
			}
			if tc.errText != "" && !strings.Contains(err.Error(), tc.errText) {
				t.Errorf("error %q does not say %q", err, tc.errText)
			}
			if len(host.logs) != 0 {
				t.Errorf("host function ran for an unbindable guest: %v", host.logs)
			}
		})
	}
}

// TestBindPrefersProxyAllocatorOverMalloc checks the spec's order: malloc
// is only the fallback.
func TestBindPrefersProxyAllocatorOverMalloc(t *testing.T) {
	host := newFakeHost()
	host.maps[MapRequestHeaders] = newFakeMap([2]string{"k", "v"})
	ctx := WithCall(context.Background(), NewGuest(), host)
	mod := instantiate(t, ctx, `(module
  (import "env" "proxy_get_header_map_value" (func $get (param i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "k")
  (func (export "malloc") (param i32) (result i32) (i32.const 0x200))
  (func (export "proxy_on_memory_allocate") (param i32) (result i32) (i32.const 0x100))
  (func (export "get") (result i32) (call $get (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 0x40) (i32.const 0x44))))`)
	res, err := mod.ExportedFunction("get").Call(ctx)
	if err != nil || Status(res[0]) != StatusOK {
		t.Fatalf("get: %v %v", res, err)
	}
	mem := mod.ExportedMemory("memory")
	if ptr, _ := mem.ReadUint32Le(0x40); ptr != 0x100 {
		t.Errorf("value copied to %#x, want proxy_on_memory_allocate's 0x100", ptr)
	}
}

// TestBindFromStartFunction: a module's start function may call host
// functions before instantiation returns, so Guest binds lazily.
func TestBindFromStartFunction(t *testing.T) {
	host := newFakeHost()
	ctx := WithCall(context.Background(), NewGuest(), host)
	instantiate(t, ctx, `(module
  (import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "started")
  (func (export "proxy_on_memory_allocate") (param i32) (result i32) (i32.const 16))
  (func $start (drop (call $log (i32.const 2) (i32.const 0) (i32.const 7))))
  (start $start))`)
	if len(host.logs) != 1 || host.logs[0].msg != "started" {
		t.Errorf("logs = %v, want the start function's message", host.logs)
	}
}

func TestBindTwiceIsNoOp(t *testing.T) {
	ctx := context.Background()
	r := newRuntime(t)
	cfg := wazero.NewModuleConfig().WithName("").WithStartFunctions()
	a, err := r.InstantiateWithConfig(ctx, compileWAT(t, `(module (memory (export "memory") 1)
  (func (export "proxy_on_memory_allocate") (param i32) (result i32) (i32.const 16)))`), cfg)
	if err != nil {
		t.Fatal(err)
	}
	b, err := r.InstantiateWithConfig(ctx, compileWAT(t, `(module (memory (export "memory") 2)
  (func (export "proxy_on_memory_allocate") (param i32) (result i32) (i32.const 32)))`), cfg)
	if err != nil {
		t.Fatal(err)
	}
	g := NewGuest()
	if err := g.Bind(a); err != nil {
		t.Fatal(err)
	}
	if err := g.Bind(b); err != nil {
		t.Fatal(err)
	}
	if g.Memory() != a.ExportedMemory("memory") {
		t.Error("second Bind replaced the memory")
	}
}

// The copyOut tests drive it through proxy_get_header_map_value, whose
// value the fake map holds.

const copyOutValue = "value-bytes"

func copyOutGuest(t *testing.T, value string) *testGuest {
	t.Helper()
	host := newFakeHost()
	host.maps[MapRequestHeaders] = newFakeMap([2]string{"k", value})
	g := newTestGuest(t, host)
	g.writeString(dataA, "k")
	g.writeU32(slotA, 0xaaaaaaaa) // sentinels: a refused call must not touch them
	g.writeU32(slotB, 0xbbbbbbbb)
	return g
}

func getValue(g *testGuest, retPtr, retSize uint32) Status {
	g.t.Helper()
	return g.proxy("proxy_get_header_map_value", uint64(MapRequestHeaders), dataA, 1, uint64(retPtr), uint64(retSize))
}

func TestCopyOutSuccess(t *testing.T) {
	g := copyOutGuest(t, copyOutValue)
	if st := getValue(g, slotA, slotB); st != StatusOK {
		t.Fatalf("status %v", st)
	}
	ptr, size, data := g.returned(slotA, slotB)
	if ptr < heapStart || string(data) != copyOutValue || size != uint32(len(copyOutValue)) {
		t.Errorf("returned %#x/%d %q, want the allocator's memory holding %q", ptr, size, data, copyOutValue)
	}
	if n := g.allocCalls(); n != 1 {
		t.Errorf("allocator called %d times, want 1", n)
	}
}

func TestCopyOutEmptyValueSkipsAllocator(t *testing.T) {
	g := copyOutGuest(t, "")
	if st := getValue(g, slotA, slotB); st != StatusOK {
		t.Fatalf("status %v", st)
	}
	if ptr, size := g.u32(slotA), g.u32(slotB); ptr != 0 || size != 0 {
		t.Errorf("empty value returned as %#x/%d, want 0/0", ptr, size)
	}
	if n := g.allocCalls(); n != 0 {
		t.Errorf("allocator called %d times for an empty value", n)
	}
}

func TestCopyOutBadAllocator(t *testing.T) {
	for _, tc := range []struct {
		name string
		mode uint64
	}{
		{"allocator returns 0", allocZero},
		{"allocator returns an out-of-bounds pointer", allocOutOfBounds},
		{"allocator returns the last byte for a longer value", allocLastByte},
		{"allocator returns a pointer whose range wraps past 2^32", allocWrapsAround},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := copyOutGuest(t, copyOutValue)
			g.setAllocMode(tc.mode)
			g.fillTail(1)
			if st := getValue(g, slotA, slotB); st != StatusInvalidMemoryAccess {
				t.Errorf("status %v, want INVALID_MEMORY_ACCESS", st)
			}
			if g.u32(slotA) != 0xaaaaaaaa || g.u32(slotB) != 0xbbbbbbbb {
				t.Errorf("return slots written by a failed call: %#x %#x", g.u32(slotA), g.u32(slotB))
			}
			g.checkTail(1)
			if n := g.allocCalls(); n != 1 {
				t.Errorf("allocator called %d times, want 1", n)
			}
		})
	}
}

func TestCopyOutReturnSlotsCheckedBeforeAllocating(t *testing.T) {
	for _, tc := range []struct {
		name            string
		retPtr, retSize uint32
	}{
		{"data slot past the end", pageSize, slotB},
		{"data slot straddles the end", pageSize - 3, slotB},
		{"size slot past the end", slotA, pageSize},
		{"size slot straddles the end", slotA, pageSize - 2},
		{"data slot wraps past 2^32", 0xfffffffe, slotB},
		{"size slot at 0xffffffff", slotA, 0xffffffff},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := copyOutGuest(t, copyOutValue)
			g.fillTail(4)
			if st := getValue(g, tc.retPtr, tc.retSize); st != StatusInvalidMemoryAccess {
				t.Errorf("status %v, want INVALID_MEMORY_ACCESS", st)
			}
			if n := g.allocCalls(); n != 0 {
				t.Errorf("allocator called %d times before the slots were checked", n)
			}
			g.checkTail(4)
			if g.u32(slotA) != 0xaaaaaaaa && tc.retPtr == slotA || g.u32(slotB) != 0xbbbbbbbb && tc.retSize == slotB {
				t.Error("the in-bounds return slot was written by a failed call")
			}
		})
	}
}

func TestCopyOutAllocatorTrapFailsTheCall(t *testing.T) {
	g := copyOutGuest(t, copyOutValue)
	g.setAllocMode(allocTrap)
	err := g.proxyErr("proxy_get_header_map_value", uint64(MapRequestHeaders), dataA, 1, slotA, slotB)
	var fault *GuestFault
	if !errors.As(err, &fault) {
		t.Fatalf("error %v, want a GuestFault", err)
	}
	if fault.Func != "memory allocator" || !strings.Contains(err.Error(), "unreachable") {
		t.Errorf("fault %q does not name the allocator and its trap", err)
	}
	var hp *HostPanic
	if errors.As(err, &hp) {
		t.Errorf("a guest trap was reported as a host panic: %v", err)
	}
}

// TestCopyOutAllocatorLoopStoppedByDeadline: a looping allocator is stopped
// with the guest call's context, and the call's error still says it was the
// deadline (wazero's exit), so the runtime can report a timeout.
func TestCopyOutAllocatorLoopStoppedByDeadline(t *testing.T) {
	g := copyOutGuest(t, copyOutValue)
	g.setAllocMode(allocLoops)
	ctx, cancel := context.WithTimeout(g.ctx, 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := g.callCtx(ctx, "env.proxy_get_header_map_value", uint64(MapRequestHeaders), dataA, 1, slotA, slotB)
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("looping allocator ran %v past a 50ms deadline", d)
	}
	var fault *GuestFault
	var exit *sys.ExitError
	if !errors.As(err, &fault) || !errors.As(err, &exit) || exit.ExitCode() != sys.ExitCodeDeadlineExceeded {
		t.Errorf("error %v, want a GuestFault wrapping wazero's deadline exit", err)
	}
}

// TestCopyOutAllocatorReentryRefused is H12: an allocator calling a
// Proxy-Wasm function fails the guest call, and that function never acts.
func TestCopyOutAllocatorReentryRefused(t *testing.T) {
	g := copyOutGuest(t, copyOutValue)
	g.setAllocMode(allocReenter)
	err := g.proxyErr("proxy_get_header_map_value", uint64(MapRequestHeaders), dataA, 1, slotA, slotB)
	var fault *GuestFault
	if !errors.As(err, &fault) || !errors.Is(err, errReentered) {
		t.Fatalf("error %v, want a GuestFault for re-entry", err)
	}
	if len(g.host.logs) != 0 {
		t.Errorf("the re-entered proxy_log ran: %v", g.host.logs)
	}
	if g.u32(slotA) != 0xaaaaaaaa || g.u32(slotB) != 0xbbbbbbbb {
		t.Error("return slots written by a failed call")
	}
	// The refusal must not leave the guest flagged as allocating.
	g.setAllocMode(allocBump)
	if st := g.proxy("proxy_log", uint64(LogInfo), dataA, 1); st != StatusOK || len(g.host.logs) != 1 {
		t.Errorf("proxy_log after a refused re-entry: %v, logs %v", st, g.host.logs)
	}
	if st := getValue(g, slotA, slotB); st != StatusOK {
		t.Errorf("copyOut after a refused re-entry: %v", st)
	}
}

// TestCopyOutAllocatorMayCallWASI: Go's allocator reads clocks, so WASI
// functions stay callable from inside it.
func TestCopyOutAllocatorMayCallWASI(t *testing.T) {
	g := copyOutGuest(t, copyOutValue)
	g.setAllocMode(allocCallsWASI)
	if st := getValue(g, slotA, slotB); st != StatusOK {
		t.Fatalf("status %v", st)
	}
	if _, _, data := g.returned(slotA, slotB); string(data) != copyOutValue {
		t.Errorf("value %q", data)
	}
}

// TestCopyOutIntoGrownMemory: the allocator grows memory for a value larger
// than the instance; copyOut must see the new size.
func TestCopyOutIntoGrownMemory(t *testing.T) {
	big := strings.Repeat("0123456789abcdef", 10000) // 160,000 bytes: two more pages
	g := copyOutGuest(t, big)
	if st := getValue(g, slotA, slotB); st != StatusOK {
		t.Fatalf("status %v", st)
	}
	if g.mem.Size() <= pageSize {
		t.Fatalf("memory did not grow: %d", g.mem.Size())
	}
	if _, size, data := g.returned(slotA, slotB); size != uint32(len(big)) || string(data) != big {
		t.Errorf("returned %d bytes, want the %d-byte value", size, len(big))
	}
}
