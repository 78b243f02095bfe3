package wasmbin

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/experimental"

	"github.com/sluice-edge/sluice/tests/guestbuild"
)

// uleb, section and name are the package's own encoders, as tests spell
// module bytes.
func uleb(v uint32) []byte { return appendU32(nil, v) }

func section(id byte, payload []byte) []byte { return appendSection(nil, id, payload) }

func module(sections ...[]byte) []byte {
	return append(slices.Clone(header), bytes.Join(sections, nil)...)
}

// name encodes a WebAssembly name.
func name(s string) []byte { return appendName(nil, s) }

// A module built by wat2wasm is summarized as declared.
func TestSummarizeValidModule(t *testing.T) {
	b := guestbuild.WATText(t, `(module
  (import "env" "f" (func (param i32)))
  (import "env" "g" (global i32))
  (memory (export "memory") 2 10)
  (table 5 funcref)
  (table 7 20 externref)
  (global $a (mut i32) (i32.const 0))
  (global $b i64 (i64.const 1))
  (global $c f32 (f32.const 2))
  (func) (func) (func (result i32) (i32.const 0))
  (data (i32.const 0) "hello")
  (data (i32.const 100) "world"))`)
	b = append(b, section(SectionCustom, append(name("note"), "0123456789"...))...)
	s, err := Summarize(b)
	if err != nil {
		t.Fatal(err)
	}
	want := Summary{
		Functions:       3,
		Globals:         3,
		MemoryMin:       2,
		TableMin:        12,
		CustomBytes:     uint64(len(name("note")) + 10),
		Entries:         20, // 3 types, 2 imports, 3 functions, 2 tables, 1 memory, 3 globals, 1 export, 3 bodies, 2 data
		Types:           3,
		ImportedFuncs:   1,
		ImportedGlobals: 1,
		MaxBodySize:     4, // no locals, i32.const 0, end
		MaxBodyFunc:     3,
	}
	if s.DataBytes < 10 || s.DataBytes > 40 {
		t.Errorf("DataBytes = %d, want the data section's size (10 bytes of data plus headers)", s.DataBytes)
	}
	s.DataBytes = 0
	if *s != want {
		t.Errorf("Summarize = %+v, want %+v", *s, want)
	}
}

// The smallest module, and one with only custom sections, are fine.
func TestSummarizeEmptyModules(t *testing.T) {
	for _, b := range [][]byte{
		module(),
		module(section(SectionCustom, name("a")), section(SectionCustom, append(name("b"), 1, 2, 3))),
	} {
		s, err := Summarize(b)
		if err != nil {
			t.Fatalf("%x: %v", b, err)
		}
		if s.Functions != 0 || s.Globals != 0 || s.TableMin != 0 || s.ImportsMem || s.ImportsTable {
			t.Errorf("%x: %+v", b, *s)
		}
	}
}

func TestSummarizeImportedTablesAndMemories(t *testing.T) {
	for _, tc := range []struct {
		name         string
		imports      []byte
		table, mem   bool
		tableMinimum uint64
	}{
		{"function only", []byte{0x00, 0x00}, false, false, 0},
		{"table", []byte{0x01, 0x70, 0x00, 0x20}, true, false, 32},
		{"table with a maximum", []byte{0x01, 0x70, 0x01, 0x03, 0x09}, true, false, 3},
		{"memory", []byte{0x02, 0x00, 0x01}, false, true, 0},
		{"shared memory with a maximum", []byte{0x02, 0x03, 0x01, 0x02}, false, true, 0},
		{"global", []byte{0x03, 0x7f, 0x00}, false, false, 0},
		{"tag", []byte{0x04, 0x00, 0x00}, false, false, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			entry := append(append(name("env"), name("x")...), tc.imports...)
			b := module(section(SectionType, []byte{1, 0x60, 0, 0}), // the imported function's and tag's
				section(SectionImport, append(uleb(1), entry...)),
				section(SectionTable, []byte{1, 0x70, 0x00, 0x04})) // and a defined table of 4
			s, err := Summarize(b)
			if err != nil {
				t.Fatal(err)
			}
			if s.ImportsTable != tc.table || s.ImportsMem != tc.mem || s.TableMin != tc.tableMinimum+4 {
				t.Errorf("Summarize = %+v; want table %v, memory %v, table minimum %d",
					*s, tc.table, tc.mem, tc.tableMinimum+4)
			}
		})
	}
}

// Tables' minimums add up, past 32 bits.
func TestSummarizeAddsTableMinimums(t *testing.T) {
	b := module(section(SectionTable, []byte{2, 0x70, 0x00, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x6f, 0x00, 0x01}))
	s, err := Summarize(b)
	if err != nil {
		t.Fatal(err)
	}
	if s.TableMin != 0xffffffff+1 {
		t.Errorf("Summarize = %+v", *s)
	}
}

// wazero allocates a structure for every entry a count claims before it
// reads one (its decoder then dies of a fatal out-of-memory error for four
// billion), so every count must fit in what is left of its section. Finding
// out costs nothing.
func TestSummarizeRejectsCountsBeyondTheSection(t *testing.T) {
	huge := []byte{0xff, 0xff, 0xff, 0xff, 0x0f}
	customName := func(payload ...byte) []byte { return section(SectionCustom, append(name("name"), payload...)) }
	for _, tc := range []struct {
		name string
		b    []byte
		want string
	}{
		{"types", module(section(SectionType, huge)), "section 1: malformed wasm binary: 4294967295 entries cannot fit in 0 bytes"},
		{"types in a recursive group", module(section(SectionType, append([]byte{1, 0x4e}, huge...))), "4294967295 entries"},
		{"parameters", module(section(SectionType, append([]byte{1, 0x60}, huge...))), "4294967295 value types cannot fit"},
		{"imports", module(section(SectionImport, huge)), "section 2:"},
		{"functions", module(section(SectionFunction, append(uleb(1_000_000), 0, 0))), "1000000 entries cannot fit in 2 bytes"},
		{"tables", module(section(SectionTable, huge)), "section 4:"},
		{"memories", module(section(SectionMemory, huge)), "section 5:"},
		{"globals", module(section(SectionGlobal, uleb(4_000_000_000))), "4000000000 entries"},
		{"exports", module(section(SectionExport, huge)), "section 7:"},
		{"element segments", module(section(SectionElement, huge)), "section 9:"},
		{"elements of a segment", module(section(SectionElement, append([]byte{1, 1, 0}, huge...))), "section 9:"},
		{"expressions of a segment", module(section(SectionElement, append([]byte{1, 5, 0x70}, huge...))), "section 9:"},
		{"bodies", module(section(SectionCode, huge)), "section 10:"},
		{"local declarations", module(section(SectionCode, append([]byte{1, 5}, huge...))), "4294967295 local declarations cannot fit"},
		{"data segments", module(section(SectionData, huge)), "section 11:"},
		{"data bytes", module(section(SectionData, append([]byte{1, 1}, huge...))), "name runs past the end"},
		{"tags", module(section(SectionTag, huge)), "section 13:"},
		{"function names", module(customName(append([]byte{1, 5}, huge...)...)), "name subsection 1: malformed wasm binary: 4294967295 entries"},
		{"local names", module(customName(2, 7, 1, 0, 0xff, 0xff, 0xff, 0xff, 0x0f)), "name subsection 2:"},
		{"locals named", module(customName(2, 5, 0xff, 0xff, 0xff, 0xff, 0x0f)), "name subsection 2:"},
		{"name subsection past the end", module(customName(1, 10, 0)), "name subsection 1 of 10 bytes runs past the end"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			s, err := Summarize(tc.b)
			if err == nil {
				t.Fatalf("Summarize accepted %x: %+v", tc.b, *s)
			}
			if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not wrap ErrMalformed and mention %q", err, tc.want)
			}
			if !strings.Contains(err.Error(), "cannot fit") && !strings.Contains(err.Error(), "past the end") {
				t.Errorf("error %q does not say the count does not fit", err)
			}
			if elapsed := time.Since(start); elapsed > 10*time.Millisecond {
				t.Errorf("took %v", elapsed)
			}
		})
	}
}

func TestSummarizeRejectsMalformedModules(t *testing.T) {
	valid := guestbuild.WATText(t, `(module (memory 1) (func (export "f")) (data (i32.const 0) "abc"))`)
	imp := func(entry ...byte) []byte {
		return module(section(SectionImport, append(uleb(1), append(append(name("m"), name("n")...), entry...)...)))
	}
	for _, tc := range []struct {
		name string
		b    []byte
		want string
	}{
		{"empty", nil, `missing \0asm header`},
		{"ELF", []byte("\x7fELF\x02\x01\x01"), `missing \0asm header`},
		{"bad magic", append([]byte("\x00ASM"), valid[4:]...), `missing \0asm header`},
		{"version 2", append([]byte("\x00asm\x02\x00\x00\x00"), valid[8:]...), "unsupported version 02000000"},
		{"truncated version", valid[:5], "unsupported version 01"},
		{"section id without a size", module([]byte{SectionFunction}), "unexpected end"},
		{"section size past the end", module([]byte{10, 10, 0, 0}), "section 10 of 10 bytes runs past the end"},
		{"huge section size", module([]byte{SectionCustom, 0xff, 0xff, 0xff, 0xff, 0x0f}), "runs past the end"},
		{"truncated last section", valid[:len(valid)-1], "runs past the end"},
		{"LEB128 too long", module([]byte{SectionCustom, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00}), "integer representation too long"},
		{"LEB128 above 32 bits", module([]byte{SectionCustom, 0xff, 0xff, 0xff, 0xff, 0x7f}), "integer too large"},
		{"function count cut short", module(section(SectionFunction, []byte{0x80})), "section 3: malformed wasm binary: unexpected end"},
		{"global count too long", module(section(SectionGlobal, []byte{0x80, 0x80, 0x80, 0x80, 0x80, 0x01})), "too long"},
		{"table entry cut short", module(section(SectionTable, []byte{1, 0x70})), "unexpected end"},
		{"table limits flags unknown", module(section(SectionTable, []byte{1, 0x70, 0x08, 0x01})), "unknown limits flags 0x8"},
		{"table count beyond entries", module(section(SectionTable, []byte{3, 0x70, 0x00, 0x01})), "unexpected end"},
		{"import name past the end", module(section(SectionImport, []byte{1, 0x05, 'e', 'n'})), "name runs past the end"},
		{"import kind unknown", imp(0x07), "unknown import kind 0x7"},
		{"import kind missing", imp(), "unexpected end"},
		{"imported memory limits cut short", imp(0x02, 0x01, 0x01), "unexpected end"},
		{"import count beyond entries", module(section(SectionImport, []byte{2, 1, 'm', 1, 'n', 0x00, 0x00})), "unexpected end"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := Summarize(tc.b)
			if err == nil {
				t.Fatalf("Summarize accepted %x: %+v", tc.b, *s)
			}
			if !errors.Is(err, ErrMalformed) {
				t.Errorf("error %v does not wrap ErrMalformed", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not mention %q", err, tc.want)
			}
		})
	}
}

// Every prefix of a real module either summarizes or fails cleanly: no
// panic, no read past the input.
func TestSummarizeEveryTruncation(t *testing.T) {
	b := guestbuild.WATText(t, `(module
  (import "env" "f" (func (param i32)))
  (import "env" "t" (table 2 funcref))
  (memory 1) (global (mut i32) (i32.const 0)) (table 3 funcref)
  (func (export "g") (call 0 (i32.const 1)))
  (func (local i64 v128)
    (block (loop (br_if 1 (i32.const 0)) (br_table 0 1 (i32.load offset=8 (i32.const 0))))))
  (data (i32.const 0) "xyz"))`)
	// Exactly the cuts between sections leave a well-formed structure.
	boundaries := map[int]bool{len(header): true}
	for pos := len(header); pos < len(b); {
		r := reader{b: b, pos: pos + 1}
		size := r.u32()
		pos = r.pos + int(size)
		boundaries[pos] = true
	}
	for n := range len(b) {
		_, err := Summarize(b[:n])
		if ok := err == nil; ok != boundaries[n] {
			t.Errorf("prefix of %d bytes: error %v, want an error: %v", n, err, !boundaries[n])
		}
	}
	if _, err := Summarize(b); err != nil {
		t.Fatal(err)
	}
}

// hx decodes bytes written in hex, spaces allowed.
func hx(s string) []byte {
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		panic(err)
	}
	return b
}

// codeModule is a module whose one function, of type () -> (), has the
// given body (locals and code, without the size), with something for every
// immediate to refer to: types 0 () -> () and 1 (i32) -> (i32), a funcref
// table, a memory, a tag, a global, a declarative element segment holding
// function 0, and a passive data segment.
func codeModule(body []byte) []byte {
	return module(
		section(SectionType, hx("02 600000 60017f017f")),
		section(SectionFunction, hx("01 00")),
		section(SectionTable, hx("01 70 00 01")),
		section(SectionMemory, hx("01 00 01")),
		section(SectionTag, hx("01 00 00")),
		section(SectionGlobal, hx("01 7f 01 41 00 0b")),
		section(SectionElement, hx("01 03 00 01 00")),
		section(SectionDataCount, hx("01")),
		section(SectionCode, append(append(uleb(1), uleb(uint32(len(body)))...), body...)),
		section(SectionData, hx("01 01 01 78")))
}

// allFeatures is every feature wazero v1.12.0 has: what Summarize must
// accept is a superset of what Sluice's runtime (WebAssembly 2.0) does.
const allFeatures = api.CoreFeaturesV2 | experimental.CoreFeaturesThreads | experimental.CoreFeaturesTailCall |
	experimental.CoreFeaturesExtendedConst | experimental.CoreFeaturesExceptionHandling |
	experimental.CoreFeaturesTypedFunctionReferences

// compile compiles b with wazero's interpreter (its decoder and validator
// are the compiler's) and all features.
func compile(t testing.TB, r wazero.Runtime, b []byte) error {
	t.Helper()
	m, err := r.CompileModule(context.Background(), b)
	if err == nil {
		_ = m.Close(context.Background())
	}
	return err
}

func newRuntime(t testing.TB) wazero.Runtime {
	r := wazero.NewRuntimeWithConfig(context.Background(),
		wazero.NewRuntimeConfigInterpreter().WithCoreFeatures(allFeatures))
	t.Cleanup(func() { _ = r.Close(context.Background()) })
	return r
}

// Each instruction's immediates are skipped exactly: a block after it is
// found, at the right depth, and the body's end is its last byte. wazero
// validates the same bytes. Code starts with unreachable, which makes the
// operand stack polymorphic so that each instruction stands alone, and ends
// with it, which drops what the instruction left.
func TestSummarizeCode(t *testing.T) {
	const i32local = "01 01 7f"
	r := newRuntime(t)
	for _, tc := range []struct {
		name    string
		code    string // between the locals and the final end
		nesting uint32
		invalid bool // for wazero: the scan is right, the types are not
	}{
		// Nesting.
		{name: "empty", code: "", nesting: 0},
		{name: "block", code: "02 40 0b", nesting: 1},
		{name: "loop", code: "03 40 0b", nesting: 1},
		{name: "if", code: "41 00 04 40 0b", nesting: 1},
		{name: "if else", code: "41 00 04 40 05 0b", nesting: 1},
		{name: "else opens no level", code: "41 00 04 40 02 40 0b 05 02 40 0b 0b", nesting: 2},
		{name: "siblings stay at one", code: "02 40 0b 03 40 0b 41 00 04 40 0b", nesting: 1},
		{name: "block loop if", code: "02 40 03 40 41 00 04 40 0b 0b 0b", nesting: 3},
		{name: "the deepest of several", code: "02 40 02 40 0b 0b 02 40 02 40 02 40 0b 0b 0b 02 40 0b", nesting: 3},
		{name: "block with a result", code: "02 7f 41 00 0b 1a", nesting: 1},
		{name: "block of type index 0", code: "02 00 0b", nesting: 1},
		{name: "block of type index 1", code: "41 00 02 01 0b 1a", nesting: 1},
		{name: "block type in two bytes", code: "02 80 00 0b", nesting: 1},
		{name: "block type of five bytes, the last continued as wazero allows", code: "02 80 80 80 80 80 00 0b", nesting: 1},
		{name: "block of (ref null func)", code: "02 63 70 00 0b 1a", nesting: 1},
		{name: "block of (ref 0)", code: "02 64 00 00 0b 1a", nesting: 1},
		{name: "try_table catch and catch_all", code: "1f 40 02 00 00 00 02 00 0b", nesting: 1},
		{name: "try_table catch_ref and catch_all_ref", code: "02 69 1f 40 02 01 00 00 03 00 0b 00 0b 1a", nesting: 2},
		{name: "try_table with a result and a block inside", code: "1f 7f 00 02 40 0b 41 00 0b 1a", nesting: 2},
		// Immediates, each followed by a block.
		{name: "i32.load memarg", code: "00 28 02 c5 27 02 40 0b 00", nesting: 1},
		{name: "i64.store memarg", code: "00 37 03 00 02 40 0b 00", nesting: 1},
		{name: "memory.size memory.grow", code: "00 3f 00 40 00 02 40 0b 00", nesting: 1},
		{name: "i32.const of 5 bytes", code: "00 41 ff ff ff ff 07 02 40 0b 00", nesting: 1},
		{name: "i64.const of 10 bytes", code: "00 42 80 80 80 80 80 80 80 80 80 7f 02 40 0b 00", nesting: 1},
		{name: "f32.const of block bytes", code: "00 43 02 40 02 40 02 40 0b 00", nesting: 1},
		{name: "f64.const of block bytes", code: "00 44 02 40 02 40 03 40 04 40 02 40 0b 00", nesting: 1},
		{name: "locals", code: "00 20 00 21 00 22 00 02 40 0b 00", nesting: 1},
		{name: "globals", code: "00 23 00 24 00 02 40 0b 00", nesting: 1},
		{name: "br br_if", code: "02 40 0c 00 0d 00 0b 00", nesting: 1},
		{name: "br_table", code: "02 40 02 40 00 0e 02 00 01 01 0b 0b 00", nesting: 2},
		{name: "br_table labels in two bytes", code: "02 40 02 40 00 0e 02 80 00 81 00 80 00 0b 0b 00", nesting: 2},
		{name: "call", code: "00 10 00 02 40 0b 00", nesting: 1},
		{name: "call_indirect", code: "00 11 01 00 02 40 0b 00", nesting: 1},
		{name: "return_call", code: "00 12 00 02 40 0b 00", nesting: 1},
		{name: "return_call_indirect", code: "00 13 00 00 02 40 0b 00", nesting: 1},
		{name: "call_ref", code: "00 14 00 02 40 0b 00", nesting: 1},
		{name: "return_call_ref", code: "00 15 00 02 40 0b 00", nesting: 1},
		{name: "select", code: "00 1b 02 40 0b 00", nesting: 1},
		{name: "select t", code: "00 1c 01 7f 02 40 0b 00", nesting: 1},
		{name: "select t of (ref null func)", code: "00 1c 01 63 70 02 40 0b 00", nesting: 1},
		{name: "table.get table.set", code: "00 25 00 26 00 02 40 0b 00", nesting: 1},
		{name: "ref.null ref.is_null", code: "00 d0 70 d1 d0 6f 02 40 0b 00", nesting: 1},
		{name: "ref.func", code: "00 d2 00 02 40 0b 00", nesting: 1},
		{name: "ref.as_non_null br_on_null", code: "00 d4 d5 00 02 40 0b 00", nesting: 1},
		{name: "br_on_non_null", code: "00 d6 00 02 40 0b 00", nesting: 1, invalid: true},
		{name: "throw throw_ref", code: "00 08 00 0a 02 40 0b 00", nesting: 1},
		{name: "numeric and sign extension", code: "00 6a c0 00 c4 02 40 0b 00", nesting: 1},
		{name: "trunc_sat", code: "00 fc 00 00 fc 07 02 40 0b 00", nesting: 1},
		{name: "memory.init data.drop", code: "00 fc 08 00 00 fc 09 00 02 40 0b 00", nesting: 1},
		{name: "memory.copy memory.fill", code: "00 fc 0a 00 00 fc 0b 00 02 40 0b 00", nesting: 1},
		{name: "table.init elem.drop table.copy", code: "00 fc 0c 00 00 fc 0d 00 fc 0e 00 00 02 40 0b 00", nesting: 1},
		{name: "table.grow table.size table.fill", code: "00 fc 0f 00 00 fc 10 00 00 fc 11 00 02 40 0b 00", nesting: 1},
		{name: "0xfc opcode in two bytes", code: "00 fc 8b 00 00 02 40 0b 00", nesting: 1},
		{name: "v128.const of block bytes", code: "00 fd 0c 02 40 0b 0b 03 40 0b 0b 04 40 0b 0b 1f 40 0b 0b 02 40 0b 00", nesting: 1},
		{name: "i8x16.shuffle", code: "00 fd 0d 00 01 02 03 04 05 06 07 08 09 0a 0b 1c 1d 1e 1f 02 40 0b 00", nesting: 1},
		{name: "v128.load v128.store", code: "00 fd 00 04 c5 27 fd 0b 04 00 02 40 0b 00", nesting: 1},
		{name: "v128.load8_splat v128.load32_zero", code: "00 fd 07 00 00 00 fd 5c 02 00 02 40 0b 00", nesting: 1},
		{name: "v128.load64_lane", code: "00 fd 57 03 00 01 02 40 0b 00", nesting: 1},
		{name: "v128.store8_lane", code: "00 fd 58 00 c5 27 0f 02 40 0b 00", nesting: 1},
		{name: "extract_lane", code: "00 fd 15 0f 00 fd 1b 03 02 40 0b 00", nesting: 1},
		{name: "replace_lane", code: "00 fd 22 01 02 40 0b 00", nesting: 1},
		{name: "opcodes past 0x7f: wazero reads the LEB128 continuation as a nop", code: "00 fd ae 01 fd ff 01 02 40 0b 00", nesting: 1},
		{name: "memory.atomic.notify", code: "00 fe 00 02 00 02 40 0b 00", nesting: 1},
		{name: "atomic.fence", code: "fe 03 00 02 40 0b", nesting: 1},
		{name: "atomic load and cmpxchg", code: "00 fe 10 02 00 00 fe 4e 02 00 02 40 0b 00", nesting: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := codeModule(append(hx(i32local+tc.code), 0x0b))
			s, err := Summarize(b)
			if err != nil {
				t.Fatal(err)
			}
			if s.MaxNesting != tc.nesting {
				t.Errorf("MaxNesting = %d, want %d", s.MaxNesting, tc.nesting)
			}
			if err := compile(t, r, b); (err == nil) == tc.invalid {
				t.Errorf("wazero: %v", err)
			}
		})
	}
}

func TestSummarizeRejectsMalformedCode(t *testing.T) {
	r := newRuntime(t)
	for _, tc := range []struct {
		name string
		body string // locals, code and end
		want string
	}{
		{"unknown opcode", "00 27 0b", "unknown opcode 0x27"},
		{"legacy try", "00 06 40 0b 0b", "unknown opcode 0x6"},
		{"ref.eq", "00 d3 0b", "unknown opcode 0xd3"},
		{"0xff", "00 ff 0b", "unknown opcode 0xff"},
		{"0xfc 18", "00 fc 12 0b", "unknown opcode 0xfc 18"},
		{"0xfc 256", "00 fc 80 02 0b", "unknown opcode 0xfc 256"},
		{"reserved SIMD opcode", "00 fd 9a 01 0b", "unknown opcode 0xfd 0x9a"},
		{"relaxed SIMD", "00 fd 80 02 0b 0b", "code ends before its end opcode"}, // wazero reads i16x8.abs, then block
		{"unknown atomic opcode", "00 fe 04 0b", "unknown opcode 0xfe 0x4"},
		{"unknown catch kind", "00 1f 40 01 04 00 0b 0b", "unknown catch kind 0x4"},
		{"select t of no type", "00 1c 01 40 0b", "unknown value type 0x40"},
		{"local of no type", "01 01 40 0b", "unknown value type 0x40"},
		{"a local count over 32 bits", "01 ff ff ff ff 1f 7f 0b", "integer too large"},
		{"no end", "00 01", "code ends before its end opcode"},
		{"a block left open", "00 02 40 0b", "code ends before its end opcode"},
		{"code after the end", "00 0b 01 0b", "code after the body's end"},
		{"memarg cut short", "00 28 02 80", "unexpected end"},
		{"v128.const cut short", "00 fd 0c 00 00 0b", "unexpected end"},
		{"shuffle cut short", "00 fd 0d 00 0b", "unexpected end"},
		{"lane cut short", "00 fd 15", "unexpected end"},
		{"i32.const too long", "00 41 80 80 80 80 80 00 0b", "integer representation too long"},
		{"i64.const too long", "00 42 80 80 80 80 80 80 80 80 80 80 00 0b", "integer representation too long"},
		{"block type cut short", "00 02 80 80", "unexpected end"},
		{"br_table past the end", "00 0e ff ff ff ff 0f", "unexpected end"},
		{"empty body", "", "unexpected end"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := codeModule(hx(tc.body))
			s, err := Summarize(b)
			if err == nil {
				t.Fatalf("Summarize accepted %x: %+v", b, *s)
			}
			if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), tc.want) ||
				!strings.Contains(err.Error(), "section 10: function 0: ") {
				t.Errorf("error %q does not wrap ErrMalformed and mention function 0 and %q", err, tc.want)
			}
			if err := compile(t, r, b); err == nil {
				t.Error("wazero accepts it")
			}
		})
	}
}

// Sizes, locals and nesting are the largest of any function, named by their
// index in the function index space: after the imported functions.
func TestSummarizeReportsTheFunctions(t *testing.T) {
	bodies := [][]byte{
		hx("00 0b"),
		hx("02 01 7f 03 7e 02 40 02 40 0b 0b 0b"),          // 4 locals, nesting 2
		hx("00 03 40 03 40 03 40 0b 0b 0b 01 01 01 01 0b"), // the largest, nesting 3
		hx("01 05 7d 41 00 04 40 0b 0b"),                   // 5 locals
		hx("00 02 40 02 40 02 40 0b 0b 0b 0b"),             // nesting 3 again
	}
	code := uleb(uint32(len(bodies)))
	for _, b := range bodies {
		code = append(append(code, uleb(uint32(len(b)))...), b...)
	}
	imports := hx("02 01 65 01 66 00 00 01 65 01 67 00 00") // env.f, env.g: functions of type 0
	b := module(section(SectionType, hx("01 600000")), section(SectionImport, imports),
		section(SectionFunction, hx("05 00 00 00 00 00")), section(SectionCode, code))
	s, err := Summarize(b)
	if err != nil {
		t.Fatal(err)
	}
	want := Summary{Functions: 5, ImportedFuncs: 2, Entries: 1 + 2 + 5 + 5, Types: 1,
		MaxNesting: 3, MaxNestingFunc: 4, MaxBodySize: 15, MaxBodyFunc: 4, MaxLocals: 5, MaxLocalsFunc: 5, Locals: 9}
	if *s != want {
		t.Errorf("Summarize = %+v\nwant %+v", *s, want)
	}
	if err := compile(t, newRuntime(t), b); err != nil {
		t.Errorf("wazero: %v", err)
	}
}

// Summarize knows exactly the opcodes wazero does: an opcode wazero reports
// as unknown is unknown to Summarize too, and every other is known.
func TestSummarizeKnowsTheOpcodesWazeroDoes(t *testing.T) {
	r := newRuntime(t)
	unknown := func(b []byte, wazeroSays ...string) (bool, bool) {
		_, err := Summarize(b)
		ours := err != nil && strings.Contains(err.Error(), "unknown opcode")
		werr := compile(t, r, b)
		for _, w := range wazeroSays {
			if werr != nil && strings.Contains(werr.Error(), w) {
				return ours, true
			}
		}
		return ours, false
	}
	check := func(name string, code []byte, wazeroSays ...string) {
		b := codeModule(append(append([]byte{0, 0x00}, code...), 0x0b)) // no locals, unreachable, code, end
		if ours, theirs := unknown(b, wazeroSays...); ours != theirs {
			t.Errorf("%s: unknown to Summarize: %v, to wazero: %v", name, ours, theirs)
		}
	}
	for op := range 256 {
		switch op {
		case 0xfc, 0xfd, 0xfe:
			continue
		}
		check(fmt.Sprintf("%#x", op), []byte{byte(op)}, "invalid instruction", "legacy exception handling")
	}
	for op := range 300 {
		check(fmt.Sprintf("0xfc %d", op), append([]byte{0xfc}, uleb(uint32(op))...), "unknown misc opcode", "invalid misc opcode")
	}
	for op := range 256 {
		check(fmt.Sprintf("0xfd %#x", op), []byte{0xfd, byte(op)}, "unknown SIMD instruction")
		check(fmt.Sprintf("0xfe %#x", op), []byte{0xfe, byte(op), 0x02, 0x00}, "invalid atomic opcode") // wazero reads a memarg first
	}
}

// Every module of wazero's own test data that it compiles (the
// specification's test suites for WebAssembly 1.0 and 2.0, threads, tail
// calls, exceptions, extended constants and typed function references, and
// programs built by Go, TinyGo, Rust, Zig and Emscripten), Summarize accepts.
func TestSummarizeAcceptsWhatWazeroCompiles(t *testing.T) {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/tetratelabs/wazero").Output()
	if err != nil {
		t.Fatalf("finding wazero's module: %v", err)
	}
	r := newRuntime(t)
	var compiled, rejected int
	err = filepath.WalkDir(strings.TrimSpace(string(out)), func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".wasm") {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if compile(t, r, b) != nil {
			rejected++
			return nil
		}
		compiled++
		if _, err := Summarize(b); err != nil {
			t.Errorf("%s: %v", path, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d modules compiled, %d refused", compiled, rejected)
	if compiled < 3000 {
		t.Errorf("only %d modules compiled: is this wazero's test data?", compiled)
	}
}

// The guests the tests use, built by real toolchains, are summarized in a
// few milliseconds and one allocation.
func TestSummarizeRealGuests(t *testing.T) {
	paths := map[string]string{
		"stock Go": guestbuild.Go(t, "headers"),
		"clang":    guestbuild.C(t, "add_header"),
	}
	wats, _ := filepath.Glob(filepath.Join(guestbuild.GuestsDir(), "wat", "*.wat"))
	for _, w := range wats {
		name := strings.TrimSuffix(filepath.Base(w), ".wat")
		paths["wat "+name] = guestbuild.WAT(t, name)
	}
	for name, path := range paths {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		s, err := Summarize(b)
		elapsed := time.Since(start)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		t.Logf("%s: %d bytes in %v: %+v", name, len(b), elapsed, *s)
		if allocs := testing.AllocsPerRun(3, func() { _, _ = Summarize(b) }); allocs > 1 {
			t.Errorf("%s: %v allocations", name, allocs)
		}
	}
}

func BenchmarkSummarizeGoGuest(b *testing.B) {
	module, err := os.ReadFile(guestbuild.Go(b, "headers"))
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(module)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Summarize(module); err != nil {
			b.Fatal(err)
		}
	}
}

// FuzzSummarize checks that no input panics, and that what Summarize
// accepts starts with the header and backs its counts with bytes: each entry
// and each level of nesting takes at least one.
func FuzzSummarize(f *testing.F) {
	f.Add(module())
	f.Add(module(section(SectionImport, []byte{1, 1, 'm', 1, 'n', 0x02, 0x00, 0x01})))
	f.Add(module(section(SectionTable, []byte{1, 0x70, 0x01, 0x01, 0x02})))
	f.Add([]byte("\x00asm\x01\x00\x00\x00\x00\x80\x80\x80\x80\x80"))
	f.Add(codeModule(hx("01 01 7f 02 40 03 7f 41 00 04 40 05 0b 00 0b 1a 0b 0b")))
	f.Add(codeModule(hx("00 00 fd 0c 00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f fd 15 03 28 02 00 0e 01 00 00 0b")))
	f.Add(codeModule(hx("00 1f 40 02 00 00 00 02 00 0b fc 0a 00 00 fe 4e 02 00 1c 01 7f 0b")))
	f.Add(module(section(SectionCustom, append(name("name"), hx("01 04 01 00 01 61 02 06 01 00 01 00 01 62")...))))
	f.Add(module(section(SectionElement, hx("02 00 41 00 0b 01 00 05 70 01 d2 00 0b"))))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := Summarize(b)
		if err != nil {
			return
		}
		if !bytes.HasPrefix(b, header) {
			t.Errorf("accepted %x without the header", b)
		}
		if n := uint64(len(b)); s.Entries > n || 2*uint64(s.MaxNesting) > n || uint64(s.MaxBodySize) > n || s.MaxLocals > s.Locals {
			t.Errorf("%x (%d bytes): %+v", b, len(b), *s)
		}
	})
}

// A function, global or type index past the end of its index space is
// refused, as wazero refuses it: Prepare appends a function, a global and a
// type, and must not make such an index valid.
func TestSummarizeRejectsIndexesOutOfRange(t *testing.T) {
	// sections builds a module of one function of type () -> (), with the
	// given code and extra sections, in the binary format's order.
	sections := func(code string, extra map[byte]string) []byte {
		parts := map[byte]string{
			SectionType:     "01 600000",
			SectionFunction: "01 00",
			SectionTable:    "01 70 00 01",
			SectionCode:     "01 " + fmt.Sprintf("%02x", len(hx(code))+1) + " 00 " + code,
		}
		for id, s := range extra {
			parts[id] = s
		}
		var out [][]byte
		for _, id := range []byte{SectionType, SectionImport, SectionFunction, SectionTable, SectionGlobal,
			SectionExport, SectionStart, SectionElement, SectionCode} {
			if s, ok := parts[id]; ok {
				out = append(out, section(id, hx(s)))
			}
		}
		return module(out...)
	}
	r := newRuntime(t)
	for _, tc := range []struct {
		name, code string
		extra      map[byte]string
		want       string
	}{
		{"call", "10 01 0b", nil, "function index 1 out of range: the module has 1"},
		{"return_call", "12 01 0b", nil, "function index 1"},
		{"ref.func", "d2 05 1a 0b", nil, "function index 5"},
		{"global.get", "23 00 1a 0b", nil, "global index 0 out of range: the module has 0"},
		{"global.set", "41 00 24 01 0b", map[byte]string{SectionGlobal: "01 7f 01 41 00 0b"}, "global index 1"},
		{"global.get in an initializer", "0b", map[byte]string{SectionGlobal: "01 7f 00 23 03 0b"}, "global index 3"},
		{"call_indirect", "41 00 11 01 00 0b", nil, "type index 1 out of range: the module has 1"},
		{"block type", "02 01 0b 0b", nil, "type index 1"},
		{"typed reference in a block type", "02 63 07 0b 0b", nil, "type index 7"},
		{"function's type", "0b", map[byte]string{SectionFunction: "01 02"}, "type index 2"},
		{"imported function's type", "0b", map[byte]string{SectionImport: "01 01 6d 01 6e 00 04"}, "type index 4"},
		{"exported function", "0b", map[byte]string{SectionExport: "01 01 66 00 01"}, "function index 1"},
		{"exported global", "0b", map[byte]string{SectionExport: "01 01 67 03 00"}, "global index 0"},
		{"start", "0b", map[byte]string{SectionStart: "02"}, "function index 2"},
		{"element", "0b", map[byte]string{SectionElement: "01 00 41 00 0b 01 03"}, "function index 3"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := sections(tc.code, tc.extra)
			_, err := Summarize(b)
			if err == nil || !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Summarize: %v, want an error mentioning %q", err, tc.want)
			}
			if compile(t, r, b) == nil {
				t.Error("wazero compiles it: the case is not what it says")
			}
		})
	}
	// The same module with every index in range is accepted.
	if _, err := Summarize(sections("10 00 0b", map[byte]string{SectionExport: "01 01 66 00 00", SectionStart: "00"})); err != nil {
		t.Errorf("in range: %v", err)
	}
}

// Each non-custom section appears once, in the binary format's order
// (Prepare would otherwise merge or misplace them); custom sections go
// anywhere.
func TestSummarizeRejectsSectionsOutOfOrder(t *testing.T) {
	typ := section(SectionType, hx("01 600000"))
	fn := section(SectionFunction, hx("01 00"))
	code := section(SectionCode, hx("01 02 00 0b"))
	custom := section(SectionCustom, name("note"))
	for name, b := range map[string][]byte{
		"repeated":              module(typ, typ, fn, code),
		"out of order":          module(typ, code, fn),
		"data count after code": module(typ, fn, code, section(SectionDataCount, hx("00"))),
	} {
		if _, err := Summarize(b); err == nil || !strings.Contains(err.Error(), "repeated or out of order") {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := Summarize(module(custom, typ, custom, fn, custom, code, custom)); err != nil {
		t.Errorf("custom sections between the others: %v", err)
	}
}
