package wasmbin

import (
	"bytes"
	"context"
	"errors"
	"os"
	"testing"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"

	"github.com/sluice-edge/sluice/tests/guestbuild"
)

// A module with data segments, a start function and mutable globals.
const preparableWAT = `(module
  (memory (export "memory") 2)
  (data (i32.const 16) "hello")
  (data (i32.const 70000) "second page")
  (data "passive, never used")
  (global $counter (mut i32) (i32.const 7))
  (global $wide (mut i64) (i64.const -1))
  (global $fixed i32 (i32.const 3))
  (func $start
    (global.set $counter (i32.add (global.get $counter) (i32.const 1)))
    (i32.store8 (i32.const 17) (i32.const 69)))  ;; "hEllo"
  (start $start)
  (func (export "counter") (result i32) (global.get $counter))
  (func (export "wide") (result i64) (global.get $wide)))`

func instantiate(t *testing.T, r wazero.Runtime, module []byte) api.Module {
	t.Helper()
	ctx := context.Background()
	compiled, err := r.CompileModule(ctx, module)
	if err != nil {
		t.Fatalf("compiling: %v", err)
	}
	mod, err := r.InstantiateModule(ctx, compiled, wazero.NewModuleConfig().WithName(""))
	if err != nil {
		t.Fatalf("instantiating: %v", err)
	}
	return mod
}

// A prepared module, given Memory and its start function run by the host,
// is in the state wazero gives the original right after instantiation.
func TestPreparedModuleStartsLikeTheOriginal(t *testing.T) {
	ctx := context.Background()
	original := guestbuild.WATText(t, preparableWAT)
	p, err := Prepare(original, DispatchSpec{})
	if err != nil {
		t.Fatal(err)
	}
	if !p.HasStart || p.MinPages != 2 || len(p.Globals) != 2 {
		t.Fatalf("HasStart %v, MinPages %d, Globals %v", p.HasStart, p.MinPages, p.Globals)
	}
	if s, _ := Summarize(p.Module); s.DataBytes != 0 {
		t.Errorf("the prepared module still carries %d bytes of data", s.DataBytes)
	}
	r := wazero.NewRuntime(ctx)
	defer r.Close(ctx)

	want := instantiate(t, r, original)
	got := instantiate(t, r, p.Module)
	if n, _ := got.Memory().Read(0, got.Memory().Size()); !bytes.Equal(n, make([]byte, len(n))) {
		t.Fatal("the prepared module wrote its data itself")
	}
	if got.ExportedFunction("counter").Call(ctx); got.ExportedGlobal(GlobalExport(0)).Get() != 7 {
		t.Fatal("the prepared module ran its start function by itself")
	}
	got.Memory().Write(0, p.Memory)
	if _, err := got.ExportedFunction(StartExport).Call(ctx); err != nil {
		t.Fatal(err)
	}

	wantMem, _ := want.Memory().Read(0, want.Memory().Size())
	gotMem, _ := got.Memory().Read(0, got.Memory().Size())
	if !bytes.Equal(wantMem, gotMem) {
		t.Error("memory differs from the original's after instantiation")
	}
	for _, name := range []string{"counter", "wide"} {
		w, _ := want.ExportedFunction(name).Call(ctx)
		g, _ := got.ExportedFunction(name).Call(ctx)
		if w[0] != g[0] {
			t.Errorf("%s = %d, want %d", name, g[0], w[0])
		}
	}
	// Exported mutable globals can be set: a snapshot restores them so.
	got.ExportedGlobal(GlobalExport(0)).(api.MutableGlobal).Set(42)
	if v, _ := got.ExportedFunction("counter").Call(ctx); v[0] != 42 {
		t.Errorf("counter after Set = %d", v[0])
	}
	if p.Globals[0].Type != 0x7f || p.Globals[1].Type != 0x7e {
		t.Errorf("global types %#x %#x", p.Globals[0].Type, p.Globals[1].Type)
	}
}

// A module with no export section gets one in the right place.
func TestPrepareAddsAnExportSection(t *testing.T) {
	p, err := Prepare(guestbuild.WATText(t, `(module
  (memory 1)
  (global (mut i32) (i32.const 1))
  (func $f)
  (start $f)
  (data (i32.const 0) "x"))`), DispatchSpec{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	r := wazero.NewRuntime(ctx)
	defer r.Close(ctx)
	mod := instantiate(t, r, p.Module)
	if mod.ExportedFunction(StartExport) == nil || mod.ExportedGlobal(GlobalExport(0)) == nil {
		t.Error("start function or global not exported")
	}
}

func TestPrepareRefusesWhatItCannotRewrite(t *testing.T) {
	for name, wat := range map[string]string{
		"memory.init": `(module (memory 1) (data "x")
  (func (memory.init 0 (i32.const 0) (i32.const 0) (i32.const 1))))`,
		"data.drop": `(module (memory 1) (data "x") (func (data.drop 0)))`,
		"offset from a global": `(module (import "env" "base" (global i32)) (memory 1)
  (data (global.get 0) "x"))`,
		"imported memory":                 `(module (import "env" "memory" (memory 1)))`,
		"no memory":                       `(module (func))`,
		"segment past the initial memory": `(module (memory 1 2) (data (i32.const 65535) "xy"))`,
	} {
		t.Run(name, func(t *testing.T) {
			_, err := Prepare(guestbuild.WATText(t, wat), DispatchSpec{})
			if !errors.Is(err, ErrNotPreparable) {
				t.Errorf("err = %v, want ErrNotPreparable", err)
			}
		})
	}
}

// The real guests prepare, compile and keep their data.
func TestPrepareRealGuests(t *testing.T) {
	ctx := context.Background()
	r := wazero.NewRuntime(ctx)
	defer r.Close(ctx)
	for name, path := range map[string]string{
		"go-sdk": guestbuild.Go(t, "headers"),
		"c":      guestbuild.C(t, "add_header"),
		"wat":    guestbuild.WAT(t, "add_header"),
	} {
		t.Run(name, func(t *testing.T) {
			module := readFile(t, path)
			p, err := Prepare(module, proxySpec)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := r.CompileModule(ctx, p.Module); err != nil {
				t.Fatalf("the prepared module does not compile: %v", err)
			}
			s, _ := Summarize(module)
			if s.DataBytes > 0 && len(p.Memory) == 0 {
				t.Error("data segments vanished")
			}
			t.Logf("%s: %d -> %d bytes, memory image %d bytes, %d mutable globals", name,
				len(module), len(p.Module), len(p.Memory), len(p.Globals))
		})
	}
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

var proxySpec = DispatchSpec{
	Callbacks: []string{"proxy_on_context_create", "proxy_on_request_headers", "proxy_on_response_headers",
		"proxy_on_done", "proxy_on_log", "proxy_on_delete", "proxy_on_configure", "proxy_on_vm_start"},
	Create:   "proxy_on_context_create",
	Sequence: []string{"proxy_on_done", "proxy_on_log", "proxy_on_delete"},
}

// The dispatcher calls each callback with its own number of parameters and
// returns its result, or 0 for a callback without one; runs the create
// callback first when asked; runs the sequence in order, returning the
// first one's result; records each step; and traps on an unknown op.
func TestDispatcherCallsEachCallback(t *testing.T) {
	ctx := context.Background()
	p, err := Prepare(guestbuild.WATText(t, `(module
  (memory (export "memory") 1)
  (global $trail (mut i32) (i32.const 0))  ;; a decimal digit per callback run
  (func $mark (param i32) (global.set $trail (i32.add (i32.mul (global.get $trail) (i32.const 10)) (local.get 0))))
  (func (export "proxy_on_context_create") (param i32 i32) (call $mark (i32.const 1)))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (call $mark (i32.const 2))
    (i32.add (i32.mul (local.get 0) (i32.const 100)) (i32.add (local.get 1) (local.get 2))))
  (func (export "proxy_on_done") (param i32) (result i32) (call $mark (i32.const 3)) (i32.const 0))
  (func (export "proxy_on_log") (param i32) (call $mark (i32.const 4)))
  (func (export "proxy_on_delete") (param i32) (call $mark (i32.const 5)))
  (func (export "proxy_on_vm_start") (param i64))  ;; not all i32: called directly
  (func (export "trail") (result i32) (global.get $trail))
  (func (export "other") (result i32) (i32.const 9)))`), proxySpec)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]uint32{"proxy_on_context_create": 0, "proxy_on_request_headers": 1,
		"proxy_on_done": 2, "proxy_on_log": 3, "proxy_on_delete": 4}
	if len(p.Dispatch) != len(want) {
		t.Fatalf("dispatch %v, want %v", p.Dispatch, want)
	}
	for name, i := range want {
		if p.Dispatch[name] != i {
			t.Errorf("dispatch[%s] = %d, want %d", name, p.Dispatch[name], i)
		}
	}
	seq32, ok := p.SequenceOp()
	seq := uint64(seq32)
	if !ok || seq != 5 || !p.CanCreateFirst() {
		t.Fatalf("sequence op %d, %v; create first %v", seq, ok, p.CanCreateFirst())
	}
	r := wazero.NewRuntime(ctx)
	defer r.Close(ctx)
	mod := instantiate(t, r, p.Module)
	dispatch := mod.ExportedFunction(DispatchExport)
	call := func(args ...uint64) (uint64, error) {
		stack := make([]uint64, 6)
		copy(stack, args)
		err := dispatch.CallWithStack(ctx, stack)
		return stack[0], err
	}
	trail := func() uint64 {
		v, _ := mod.ExportedFunction("trail").Call(ctx)
		mod.ExportedGlobal(GlobalExport(0)).(api.MutableGlobal).Set(0)
		return v[0]
	}
	step := func() uint64 { return mod.ExportedGlobal(StepExport).Get() }

	if got, err := call(0, 3, 4); err != nil || got != 0 || trail() != 1 || step() != 0 {
		t.Errorf("create alone: %d, %v", got, err)
	}
	if got, err := call(1|DispatchCreateFirst, 5, 6, 7, 0, 1); err != nil || got != 513 || trail() != 12 || step() != 1 {
		t.Errorf("create, then request headers: %d, %v", got, err)
	}
	// proxy_on_done returns 0: the sequence stops after it.
	if got, err := call(seq, 2); err != nil || got != 0 || trail() != 3 || step() != 2 {
		t.Errorf("the sequence: %d, %v (proxy_on_done's 0 stops it)", got, err)
	}
	if got, err := call(seq|DispatchCreateFirst, 2, 0, 0, 0, 1); err != nil || got != 0 || trail() != 13 {
		t.Errorf("create, then the sequence: %d, %v", got, err)
	}
	if _, err := call(6); err == nil {
		t.Error("an unknown op did not trap")
	}
	if got, err := mod.ExportedFunction("other").Call(ctx); err != nil || got[0] != 9 {
		t.Errorf("the module's own exports changed: %v, %v", got, err)
	}
	if name, ok := p.DispatchedCallback(3); !ok || name != "proxy_on_log" {
		t.Errorf("step 3 is %q", name)
	}
}

// A sequence whose first callback returns true runs to its end and returns 1.
func TestSequenceRunsToItsEnd(t *testing.T) {
	ctx := context.Background()
	p, err := Prepare(guestbuild.WATText(t, `(module
  (memory (export "memory") 1)
  (func (export "proxy_on_done") (param i32) (result i32) (i32.const 1))
  (func (export "proxy_on_log") (param i32)))`), proxySpec)
	if err != nil {
		t.Fatal(err)
	}
	seq, ok := p.SequenceOp()
	if !ok {
		t.Fatal("no sequence")
	}
	_ = seq
	r := wazero.NewRuntime(ctx)
	defer r.Close(ctx)
	stack := []uint64{uint64(seq), 2, 0, 0, 0, 0}
	if err := instantiate(t, r, p.Module).ExportedFunction(DispatchExport).CallWithStack(ctx, stack); err != nil || stack[0] != 1 {
		t.Errorf("got %d, %v; want 1", stack[0], err)
	}
}

// A callback whose type has a typed reference is not dispatched, and the
// types after it are read right: the callback after it is.
func TestDispatchSkipsTypedReferences(t *testing.T) {
	b := module(
		section(SectionType, hx("03 60017f00 6002630 07f00 6000017f")), // (i32), ((ref null 0) i32), () -> i32
		section(SectionFunction, hx("03 00 01 02")),
		section(SectionMemory, hx("01 00 01")),
		section(SectionExport, append(hx("03"), append(append(append(name("cb"), 0, 0), append(name("refcb"), 0, 1)...),
			append(name("last"), 0, 2)...)...)),
		section(SectionCode, hx("03 02 00 0b 02 00 0b 04 00 41 07 0b")))
	p, err := Prepare(b, DispatchSpec{Callbacks: []string{"refcb", "cb", "last"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := p.Dispatch["refcb"]; ok || len(p.Dispatch) != 2 {
		t.Errorf("Dispatch = %v, want cb and last only", p.Dispatch)
	}
	if err := compile(t, newRuntime(t), p.Module); err != nil {
		t.Errorf("the prepared module does not compile: %v", err)
	}
}

// FuzzPrepare checks that Prepare never panics on a module Summarize
// accepts, that what it writes is well formed in turn, and that it
// compiles when the original does.
func FuzzPrepare(f *testing.F) {
	f.Add(guestbuild.WATText(f, preparableWAT))
	f.Add(guestbuild.WATText(f, tableWAT("")))
	f.Add(codeModule(hx("00 00 0b")))
	f.Add(module(
		section(SectionType, hx("02 6002630 07f00 60017f00")),
		section(SectionFunction, hx("02 00 01")),
		section(SectionMemory, hx("01 00 01")),
		section(SectionExport, append(hx("02"), append(append(name("proxy_on_log"), 0, 1), append(name("proxy_on_done"), 0, 0)...)...)),
		section(SectionCode, hx("02 02 00 0b 02 00 0b")),
		section(SectionData, hx("01 00 41 10 0b 02 68 69"))))
	f.Fuzz(func(t *testing.T, b []byte) {
		if _, err := Summarize(b); err != nil {
			return
		}
		p, err := Prepare(b, proxySpec)
		if err != nil {
			return
		}
		if _, err := Summarize(p.Module); err != nil {
			t.Errorf("the prepared module is malformed: %v", err)
		}
		// What compiles must still compile. (The other way round is not
		// held: Prepare drops custom and data count sections, which wazero
		// may refuse as malformed.)
		r := newRuntime(t)
		if want, got := compile(t, r, b), compile(t, r, p.Module); want == nil && got != nil {
			t.Errorf("the original compiles: %v; the prepared module: %v", want, got)
		}
	})
}
