package wasmbin

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/sluice-edge/sluice/tests/guestbuild"
)

func uleb(v uint64) []byte {
	var out []byte
	for {
		c := byte(v & 0x7f)
		v >>= 7
		if v == 0 {
			return append(out, c)
		}
		out = append(out, c|0x80)
	}
}

func section(id byte, payload []byte) []byte {
	return append(append([]byte{id}, uleb(uint64(len(payload)))...), payload...)
}

func module(sections ...[]byte) []byte {
	return append(slicesClone(header), bytes.Join(sections, nil)...)
}

func slicesClone(b []byte) []byte { return append([]byte(nil), b...) }

// name encodes a WebAssembly name.
func name(s string) []byte { return append(uleb(uint64(len(s))), s...) }

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
		Functions:   3,
		Globals:     3,
		TableMin:    12,
		CustomBytes: uint64(len(name("note")) + 10),
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
			b := module(section(SectionImport, append(uleb(1), entry...)),
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

// Counts are read as declared, without walking the entries: a huge claim
// costs nothing to read.
func TestSummarizeReadsDeclaredCounts(t *testing.T) {
	b := module(
		section(SectionFunction, uleb(1_000_000)),
		section(SectionGlobal, uleb(4_000_000_000)),
		section(SectionTable, []byte{2, 0x70, 0x00, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x6f, 0x00, 0x01}))
	s, err := Summarize(b)
	if err != nil {
		t.Fatal(err)
	}
	if s.Functions != 1_000_000 || s.Globals != 4_000_000_000 || s.TableMin != 0xffffffff+1 {
		t.Errorf("Summarize = %+v", *s)
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
  (func (export "g") (call 0 (i32.const 1))) (data (i32.const 0) "xyz"))`)
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

// FuzzSummarize checks that no input panics, and that what Summarize
// accepts starts with the header.
func FuzzSummarize(f *testing.F) {
	f.Add(module())
	f.Add(module(section(SectionImport, []byte{1, 1, 'm', 1, 'n', 0x02, 0x00, 0x01})))
	f.Add(module(section(SectionTable, []byte{1, 0x70, 0x01, 0x01, 0x02})))
	f.Add([]byte("\x00asm\x01\x00\x00\x00\x00\x80\x80\x80\x80\x80"))
	f.Fuzz(func(t *testing.T, b []byte) {
		if _, err := Summarize(b); err == nil && !bytes.HasPrefix(b, header) {
			t.Errorf("accepted %x without the header", b)
		}
	})
}
