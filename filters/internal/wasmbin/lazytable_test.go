package wasmbin

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/tetratelabs/wazero"

	"github.com/sluice-edge/sluice/tests/guestbuild"
)

// tableWAT is a module whose table holds functions of two types, with
// gaps, in segments that overlap and span several chunks. call(i) calls
// slot i as a function returning an i32.
func tableWAT(extra string) string {
	var segment strings.Builder
	for i := range 2500 {
		fmt.Fprintf(&segment, " $f%d", i%3)
	}
	return fmt.Sprintf(`(module
  (memory 1)
  (type $ret (func (result i32)))
  (table 3000 funcref)
  (func $f0 (result i32) (i32.const 100))
  (func $f1 (result i32) (i32.const 101))
  (func $f2 (result i32) (i32.const 102))
  (func $void)
  (elem (i32.const 7) func %s)
  (elem (i32.const 1030) func $void $f2)  ;; overlaps the first
  (elem (i32.const 2800) func $f1)        ;; after a gap
  (func (export "call") (param i32) (result i32)
    (call_indirect (type $ret) (local.get 0)))
  %s)`, segment.String(), extra)
}

// lazyOutcomes prepares original, which must get a lazy table, and returns
// what calling each of its first slots gives in the prepared module (got)
// and in the original (want).
func lazyOutcomes(t *testing.T, original []byte, slots int) (got, want []string) {
	t.Helper()
	ctx := context.Background()
	p, err := Prepare(original, DispatchSpec{})
	if err != nil {
		t.Fatal(err)
	}
	if !p.LazyTable {
		t.Fatal("the table was not made lazy")
	}
	r := wazero.NewRuntime(ctx)
	defer r.Close(ctx)
	if want, err = outcome(ctx, r, original, slots); err != nil {
		t.Fatal(err)
	}
	if got, err = outcome(ctx, r, p.Module, slots); err != nil {
		t.Fatal(err)
	}
	return got, want
}

// outcome is what calling a slot gives: its value, or the trap's message.
func outcome(ctx context.Context, r wazero.Runtime, module []byte, slots int) ([]string, error) {
	compiled, err := r.CompileModule(ctx, module)
	if err != nil {
		return nil, err
	}
	var got []string
	// One instance for all slots: a slot filled earlier must not change
	// what a later one gives. And a second instance, to see every slot
	// start empty again.
	for range 2 {
		mod, err := r.InstantiateModule(ctx, compiled, wazero.NewModuleConfig().WithName(""))
		if err != nil {
			return nil, err
		}
		for i := range slots {
			res, err := mod.ExportedFunction("call").Call(ctx, uint64(i))
			if err != nil {
				got = append(got, err.Error())
			} else {
				got = append(got, fmt.Sprint(res[0]))
			}
		}
		_ = mod.Close(ctx)
	}
	return got, nil
}

// Every slot calls what the original's table holds there, or traps as the
// original does, with the same stack: empty slots, a type mismatch, past
// the end.
func TestLazyTableCallsLikeTheOriginal(t *testing.T) {
	got, want := lazyOutcomes(t, guestbuild.WATText(t, tableWAT("")), 3002)
	seen := map[string]bool{}
	for i := range want {
		seen[strings.SplitN(want[i], "\n", 2)[0]] = true
		if got[i] != want[i] {
			t.Errorf("call %d (slot %d): %q, want %q", i, i%3002, got[i], want[i])
		}
	}
	for _, w := range []string{"100", "101", "102", "wasm error: invalid table access", "wasm error: indirect call type mismatch"} {
		if !seen[w] {
			t.Errorf("no slot gave %q: the test covers less than it says (saw %v)", w, seen)
		}
	}
}

// The rewrite is skipped for what it cannot keep the same; the module is
// prepared all the same.
func TestLazyTableOnlyWhenItCannotBeSeen(t *testing.T) {
	for name, wat := range map[string]string{
		"table.get":                tableWAT(`(func (result funcref) (table.get 0 (i32.const 7)))`),
		"table.set":                tableWAT(`(func (table.set 0 (i32.const 7) (ref.null func)))`),
		"table.size":               tableWAT(`(func (result i32) (table.size 0))`),
		"table.grow":               tableWAT(`(func (drop (table.grow 0 (ref.null func) (i32.const 1))))`),
		"table.fill":               tableWAT(`(func (table.fill 0 (i32.const 0) (ref.null func) (i32.const 1)))`),
		"table.copy":               tableWAT(`(func (table.copy (i32.const 0) (i32.const 1) (i32.const 1)))`),
		"elem.drop":                tableWAT(`(elem $p func $f0) (func (elem.drop $p))`),
		"a segment of expressions": tableWAT(`(elem (i32.const 2900) funcref (ref.func $f0) (ref.null func))`),
		"exported table":           strings.Replace(tableWAT(""), "(table 3000 funcref)", `(table (export "t") 3000 funcref)`, 1),
		"segment past the table":   strings.Replace(tableWAT(""), "(i32.const 2800) func $f1", "(i32.const 2999) func $f1 $f1", 1),
		"no indirect call":         `(module (memory 1) (table 1 funcref) (func $f) (elem (i32.const 0) $f))`,
		"offset from a global": `(module (import "env" "g" (global i32)) (memory 1) (table 1 funcref) (func $f)
  (elem (global.get 0) $f) (func (call_indirect (i32.const 0))))`,
		"imported table": `(module (import "env" "t" (table 1 funcref)) (memory 1) (func $f)
  (elem (i32.const 0) $f) (func (call_indirect (i32.const 0))))`,
	} {
		t.Run(name, func(t *testing.T) {
			p, err := Prepare(guestbuild.WATText(t, wat), DispatchSpec{})
			if err != nil {
				t.Fatal(err)
			}
			if p.LazyTable {
				t.Error("the table was made lazy")
			}
		})
	}
}

// Stock Go's table is made lazy and shorter, and the rewritten guest
// compiles: the guests' end-to-end tests then run through it.
func TestLazyTableOfAGoGuest(t *testing.T) {
	module := readFile(t, guestbuild.Go(t, "headers"))
	p, err := Prepare(module, proxySpec)
	if err != nil {
		t.Fatal(err)
	}
	if !p.LazyTable {
		t.Fatal("the Go guest's table was not made lazy")
	}
	// Go fills its table from slot 4096 on: the rewritten table starts there.
	before, _ := Summarize(module)
	after, err := Summarize(p.Module)
	if err != nil {
		t.Fatal(err)
	}
	if before.TableMin-after.TableMin != 4096 {
		t.Errorf("table of %d slots, was %d: want 4,096 fewer", after.TableMin, before.TableMin)
	}
	if err := compile(t, wazero.NewRuntime(context.Background()), p.Module); err != nil {
		t.Fatal(err)
	}
}

// A segment naming its table (flags 2) is made lazy like one that does
// not, and calls the same: table 0 of 10 slots, function 0 (returning 42)
// in slot 5, call(i) through call_indirect.
func TestLazyTableWithAnExplicitTableIndex(t *testing.T) {
	got, want := lazyOutcomes(t, module(
		section(SectionType, hx("02 6000017f 60017f017f")),
		section(SectionFunction, hx("02 00 01")),
		section(SectionTable, hx("01 70 00 0a")),
		section(SectionMemory, hx("01 00 01")),
		section(SectionExport, append(hx("01"), append(name("call"), 0x00, 0x01)...)),
		section(SectionElement, hx("01 02 00 41050b 00 01 00")), // flags 2, table 0, offset 5, funcref, [0]
		section(SectionCode, hx("02 04 00 412a 0b 07 00 2000 110000 0b"))), 12)
	if !slices.Equal(got, want) || want[5] != "42" {
		t.Errorf("calls gave %q, the original %q", got, want)
	}
}

// A function a later segment overwrote stays declared: ref.func may name
// it, and the rewritten module must still compile.
func TestLazyTableKeepsOverwrittenFunctionsDeclared(t *testing.T) {
	p, err := Prepare(guestbuild.WATText(t, `(module
  (memory 1)
  (table 10 funcref)
  (func $only)
  (func $other)
  (elem (i32.const 5) func $only)
  (elem (i32.const 5) func $other)
  (func (export "ref") (drop (ref.func $only)))
  (func (call_indirect (i32.const 5))))`), DispatchSpec{})
	if err != nil {
		t.Fatal(err)
	}
	if !p.LazyTable {
		t.Fatal("the table was not made lazy")
	}
	if err := compile(t, wazero.NewRuntime(context.Background()), p.Module); err != nil {
		t.Errorf("the rewritten module does not compile: %v", err)
	}
}
