// Package wasmbin reads the structure of a WebAssembly binary: just enough
// to size up a module before handing it to the compiler, so that modules
// which would cost every instance, or the compiler, too much are refused
// with a clear error instead of being compiled and instantiated.
//
// See https://webassembly.github.io/spec/core/binary/modules.html
package wasmbin

import (
	"bytes"
	"errors"
	"fmt"
	"iter"
)

// ErrMalformed is wrapped by every parse error.
var ErrMalformed = errors.New("malformed wasm binary")

var header = []byte{0x00, 'a', 's', 'm', 0x01, 0x00, 0x00, 0x00}

// Section IDs.
const (
	SectionCustom    = 0
	SectionType      = 1
	SectionImport    = 2
	SectionFunction  = 3
	SectionTable     = 4
	SectionMemory    = 5
	SectionGlobal    = 6
	SectionExport    = 7
	SectionStart     = 8
	SectionElement   = 9
	SectionCode      = 10
	SectionData      = 11
	SectionDataCount = 12
	SectionTag       = 13
)

// Summary counts what a module would cost each instance and the compiler.
type Summary struct {
	Functions    uint32 // defined functions
	Globals      uint32 // defined globals
	MemoryMin    uint32 // the largest declared minimum of a defined memory, in 64 KiB pages
	TableMin     uint64 // sum of the minimum sizes of defined and imported tables
	DataBytes    uint64 // size of the data section
	CustomBytes  uint64 // size of all custom sections
	ImportsTable bool
	ImportsMem   bool

	// Entries counts the items of every vector wazero's decoder allocates a
	// structure for before reading them: sections' entries, element segment
	// items, name section entries. Each costs it tens of bytes or more.
	Entries uint64
	Types   uint32 // function types, the costliest entries to decode

	// From the code section. Function indexes count imported functions
	// first, as the module's function index space does.
	ImportedFuncs   uint32 // imported functions
	ImportedGlobals uint32 // imported globals
	MaxNesting      uint32 // deepest block/loop/if/try_table nesting of any body; a flat body is 0
	MaxNestingFunc  uint32 // index of the first function reaching MaxNesting
	MaxBodySize     uint32 // bytes of the largest function body (locals and code)
	MaxBodyFunc     uint32 // index of the first function reaching MaxBodySize
	MaxLocals       uint64 // most locals one function declares, parameters not counted
	MaxLocalsFunc   uint32 // index of the first function reaching MaxLocals
	Locals          uint64 // locals all functions declare

	// What the code does that decides how instances may start (see Prepare).
	UsesDataSegments bool // memory.init or data.drop
	WritesTables     bool // table.set, table.grow, table.fill, table.copy, table.init or elem.drop
	ReadsTables      bool // table.get or table.size
	CallsIndirect    bool // call_indirect or return_call_indirect
	RecGroups        bool // the type section has recursive groups
}

// Summarize walks the sections of a module, their entries, and the
// instructions of every function body. It checks the structure it reads
// (section order, sizes, counts, opcodes and the length of their
// immediates), so that every count wazero sizes an allocation by is backed by
// the bytes it claims, and that every function, global and type index is in
// range, so that Prepare, which adds one of each, cannot make an invalid
// index valid. It leaves everything else, types included, to the compiler.
// It allocates nothing in proportion to the module.
func Summarize(b []byte) (*Summary, error) {
	if !bytes.HasPrefix(b, header) {
		if len(b) >= 4 && bytes.Equal(b[:4], header[:4]) {
			return nil, fmt.Errorf("%w: unsupported version %x", ErrMalformed, b[4:min(8, len(b))])
		}
		return nil, fmt.Errorf("%w: missing \\0asm header", ErrMalformed)
	}
	s := &Summary{}
	var (
		r    = reader{b: b, pos: len(header)}
		used indexes // the largest indexes the sections refer to
		last int     // order of the last non-custom section
	)
	for !r.done() {
		id := r.byte()
		size := r.u32()
		if r.err != nil {
			return nil, r.err
		}
		if uint64(size) > uint64(len(r.b)-r.pos) {
			return nil, fmt.Errorf("%w: section %d of %d bytes runs past the end", ErrMalformed, id, size)
		}
		if id != SectionCustom {
			if sectionOrder(id) <= last {
				return nil, fmt.Errorf("%w: section %d repeated or out of order", ErrMalformed, id)
			}
			last = sectionOrder(id)
		}
		body := r.sub(int(size))
		s.readSection(id, &body)
		if body.err == nil && body.pos != len(body.b) {
			body.fail("bytes after the last entry")
		}
		if body.err != nil {
			return nil, fmt.Errorf("section %d: %w", id, body.err)
		}
		used.merge(body.used)
	}
	if r.err != nil {
		return nil, r.err
	}
	return s, s.checkIndexes(used)
}

// sections walks the sections of a module Summarize accepted: each one's
// id and a reader of its body.
func sections(module []byte) iter.Seq2[byte, *reader] {
	return func(yield func(byte, *reader) bool) {
		r := reader{b: module, pos: len(header)}
		for !r.done() {
			id := r.byte()
			body := r.sub(int(r.u32()))
			if !yield(id, &body) {
				return
			}
		}
	}
}

// indexes records the largest function, global and type index a module
// refers to, each plus one: zero when it refers to none.
type indexes struct{ funcs, globals, types uint64 }

func (x *indexes) merge(y indexes) {
	x.funcs = max(x.funcs, y.funcs)
	x.globals = max(x.globals, y.globals)
	x.types = max(x.types, y.types)
}

func refer(bound *uint64, index uint32) { *bound = max(*bound, uint64(index)+1) }

// checkIndexes refuses references past the end of an index space.
func (s *Summary) checkIndexes(used indexes) error {
	for _, space := range []struct {
		what      string
		used, has uint64
	}{
		{"function", used.funcs, uint64(s.ImportedFuncs) + uint64(s.Functions)},
		{"global", used.globals, uint64(s.ImportedGlobals) + uint64(s.Globals)},
		{"type", used.types, uint64(s.Types)},
	} {
		if space.used > space.has {
			return fmt.Errorf("%w: %s index %d out of range: the module has %d",
				ErrMalformed, space.what, space.used-1, space.has)
		}
	}
	return nil
}

// readSection walks the entries of one section, all of them.
func (s *Summary) readSection(id byte, r *reader) {
	switch id {
	case SectionCustom:
		s.CustomBytes += uint64(len(r.b))
		if string(r.name()) == "name" { // the one custom section wazero decodes
			s.readNames(r)
		}
		r.pos = len(r.b)
	case SectionType:
		for n := s.vector(r); n > 0 && r.err == nil; n-- {
			if r.pos < len(r.b) && r.b[r.pos] == 0x4e { // a recursive group of function types
				r.pos++
				s.RecGroups = true
				for m := s.vector(r); m > 0 && r.err == nil; m-- {
					r.funcType()
					s.Types++
				}
				continue
			}
			r.funcType()
			s.Types++
		}
	case SectionImport:
		s.readImports(r)
	case SectionFunction:
		s.Functions = s.vector(r)
		for n := s.Functions; n > 0 && r.err == nil; n-- {
			refer(&r.used.types, r.u32())
		}
	case SectionTable:
		for n := s.vector(r); n > 0 && r.err == nil; n-- {
			s.TableMin += uint64(r.table())
		}
	case SectionMemory:
		for n := s.vector(r); n > 0 && r.err == nil; n-- {
			s.MemoryMin = max(s.MemoryMin, r.limits())
		}
	case SectionGlobal:
		s.Globals = s.vector(r)
		for n := s.Globals; n > 0 && r.err == nil; n-- {
			r.valType()
			r.byte() // mutability
			r.instructions()
		}
	case SectionExport:
		for n := s.vector(r); n > 0 && r.err == nil; n-- {
			r.name()
			switch kind, index := r.byte(), r.u32(); kind {
			case 0x00:
				refer(&r.used.funcs, index)
			case 0x03:
				refer(&r.used.globals, index)
			}
		}
	case SectionStart:
		refer(&r.used.funcs, r.u32())
	case SectionDataCount:
		r.u32()
	case SectionElement:
		for n := s.vector(r); n > 0 && r.err == nil; n-- {
			s.readElements(r)
		}
	case SectionCode:
		s.readCode(r)
	case SectionData:
		s.DataBytes = uint64(len(r.b))
		for n := s.vector(r); n > 0 && r.err == nil; n-- {
			switch flags := r.u32(); flags {
			case 0: // active in memory 0: offset
				r.instructions()
			case 1: // passive
			case 2: // active: memory, offset
				r.u32()
				r.instructions()
			default:
				r.fail(fmt.Sprintf("unknown data segment flags %d", flags))
			}
			r.name() // the bytes
		}
	case SectionTag:
		for n := s.vector(r); n > 0 && r.err == nil; n-- {
			r.byte() // attribute
			refer(&r.used.types, r.u32())
		}
	default:
		r.pos = len(r.b) // wazero refuses it
	}
}

// vector reads the count of a vector's entries, which must fit in what is
// left: each takes at least a byte.
func (s *Summary) vector(r *reader) uint32 {
	n := r.u32()
	if r.err == nil && uint64(n) > uint64(len(r.b)-r.pos) {
		r.fail(fmt.Sprintf("%d entries cannot fit in %d bytes", n, len(r.b)-r.pos))
		return 0
	}
	s.Entries += uint64(n)
	return n
}

func (s *Summary) readImports(r *reader) {
	for n := s.vector(r); n > 0 && r.err == nil; n-- {
		switch kind, index := r.importEntry(); kind {
		case importFunc:
			refer(&r.used.types, index)
			s.ImportedFuncs++
		case importTable:
			s.TableMin += uint64(index)
			s.ImportsTable = true
		case importMemory:
			s.ImportsMem = true
		case importGlobal:
			s.ImportedGlobals++
		case importTag:
			refer(&r.used.types, index)
		}
	}
}

// The kinds of an import.
const (
	importFunc   = 0x00
	importTable  = 0x01
	importMemory = 0x02
	importGlobal = 0x03
	importTag    = 0x04
)

// importEntry reads one import (module and field names, then what it
// imports) and returns its kind and the number its callers use: a
// function's or tag's type index, a table's minimum size. An unknown kind
// fails r.
func (r *reader) importEntry() (kind byte, index uint32) {
	r.name() // module
	r.name() // field
	switch kind = r.byte(); kind {
	case importFunc:
		index = r.u32()
	case importTable:
		index = r.table()
	case importMemory:
		r.limits()
	case importGlobal: // value type, mutability
		r.valType()
		r.byte()
	case importTag: // attribute, type index
		r.byte()
		index = r.u32()
	default:
		if r.err == nil {
			r.fail(fmt.Sprintf("unknown import kind %#x", kind))
		}
	}
	return kind, index
}

// readElements reads an element segment, in any of its eight encodings.
func (s *Summary) readElements(r *reader) {
	flags := r.u32()
	if flags > 7 {
		r.fail(fmt.Sprintf("unknown element segment flags %d", flags))
		return
	}
	if flags&0x03 == 0x02 { // active with a table index
		r.u32()
	}
	if flags&0x01 == 0 { // active: offset
		r.instructions()
	}
	switch {
	case flags&0x03 == 0: // funcref, implied
	case flags&0x04 == 0:
		if kind := r.byte(); kind != 0 && r.err == nil { // element kind: funcref
			r.pos--
			r.fail(fmt.Sprintf("unknown element kind %#x", kind))
		}
	default:
		r.valType() // reference type
	}
	for n := s.vector(r); n > 0 && r.err == nil; n-- {
		if flags&0x04 == 0 {
			refer(&r.used.funcs, r.u32())
		} else {
			r.instructions() // an expression
		}
	}
}

// readNames reads the subsections of the name section wazero decodes: the
// module's name, function names and local names.
func (s *Summary) readNames(r *reader) {
	for r.err == nil && r.pos < len(r.b) {
		id := r.byte()
		size := r.u32()
		if r.err == nil && uint64(size) > uint64(len(r.b)-r.pos) {
			r.fail(fmt.Sprintf("name subsection %d of %d bytes runs past the end", id, size))
		}
		if r.err != nil {
			return
		}
		sub := r.sub(int(size))
		switch id {
		case 0: // module name
			sub.name()
		case 1: // function index, name
			for n := s.vector(&sub); n > 0 && sub.err == nil; n-- {
				sub.u32()
				sub.name()
			}
		case 2: // function index, then local index and name
			for n := s.vector(&sub); n > 0 && sub.err == nil; n-- {
				sub.u32()
				for m := s.vector(&sub); m > 0 && sub.err == nil; m-- {
					sub.u32()
					sub.name()
				}
			}
		default:
			sub.pos = len(sub.b)
		}
		if sub.err == nil && sub.pos != len(sub.b) {
			sub.fail("bytes after the last entry")
		}
		if sub.err != nil {
			r.err = fmt.Errorf("name subsection %d: %w", id, sub.err)
		}
	}
}

// readCode walks every function body: its locals, then its instructions.
func (s *Summary) readCode(r *reader) {
	n := s.vector(r)
	for i := uint32(0); i < n && r.err == nil; i++ {
		size := r.u32()
		if r.err != nil {
			return
		}
		fn := s.ImportedFuncs + i
		if uint64(size) > uint64(len(r.b)-r.pos) {
			r.fail(fmt.Sprintf("function %d: body of %d bytes runs past the end", fn, size))
			return
		}
		body := r.sub(int(size))
		locals := body.locals()
		depth := body.instructions()
		s.UsesDataSegments = s.UsesDataSegments || body.usesData
		s.WritesTables = s.WritesTables || body.writesTables
		s.ReadsTables = s.ReadsTables || body.readsTables
		s.CallsIndirect = s.CallsIndirect || body.callsIndirect
		r.used.merge(body.used)
		if body.err == nil && body.pos != len(body.b) {
			body.fail("code after the body's end")
		}
		if body.err != nil {
			r.err = fmt.Errorf("function %d: %w", fn, body.err)
			return
		}
		if size > s.MaxBodySize {
			s.MaxBodySize, s.MaxBodyFunc = size, fn
		}
		s.Locals += locals
		if locals > s.MaxLocals {
			s.MaxLocals, s.MaxLocalsFunc = locals, fn
		}
		if depth > s.MaxNesting {
			s.MaxNesting, s.MaxNestingFunc = depth, fn
		}
	}
}

// funcType reads a function type: 0x60, then parameter and result types.
func (r *reader) funcType() {
	if form := r.byte(); form != 0x60 && r.err == nil {
		r.pos--
		r.fail(fmt.Sprintf("unknown type form %#x", form))
	}
	for i := 0; i < 2 && r.err == nil; i++ {
		n := r.u32()
		if r.err == nil && uint64(n) > uint64(len(r.b)-r.pos) {
			r.fail(fmt.Sprintf("%d value types cannot fit in %d bytes", n, len(r.b)-r.pos))
		}
		for ; n > 0 && r.err == nil; n-- {
			r.valType()
		}
	}
}

// locals reads a body's local declarations and returns how many they add up
// to. Each entry is checked but none is kept: a claim of four billion locals
// costs five bytes to make and nothing to read.
func (r *reader) locals() uint64 {
	var total uint64
	n := r.u32()
	if r.err == nil && uint64(n) > uint64(len(r.b)-r.pos) {
		r.fail(fmt.Sprintf("%d local declarations cannot fit in %d bytes", n, len(r.b)-r.pos))
	}
	for ; n > 0 && r.err == nil; n-- {
		total += uint64(r.u32())
		r.valType()
	}
	return total
}

// Immediate classes of single-byte opcodes. The zero value is an opcode
// wazero does not accept.
const (
	immInvalid  = iota
	immNone     // no immediate
	immBlock    // block type; opens a level (block, loop, if)
	immTryTable // block type and catch clauses; opens a level
	immEnd      // closes a level, or the body
	immU32      // one index or label
	immFunc     // a function index
	immGlobal   // a global index
	immType     // a type index
	immHeapType // a heap type: an s33, a type index when not negative
	immU32x2    // a type index and a table index (call_indirect)
	immMemArg   // alignment and offset
	immI32      // LEB128 up to 5 bytes: i32.const
	immI64      // signed LEB128 up to 10 bytes
	immF32      // 4 bytes
	immF64      // 8 bytes
	immBrTable  // label vector and default label
	immSelectT  // value type vector
	immPrefixFC // bulk memory, reference types, saturating truncation
	immPrefixFD // SIMD
	immPrefixFE // threads
	immLaneMem  // SIMD: memarg then lane index
	immLane     // SIMD: lane index
	immBytes16  // SIMD: v128.const and i8x16.shuffle
)

// opcodes classifies the single-byte opcodes wazero v1.12.0 decodes with its
// features: WebAssembly 2.0 and the experimental tail-call, exception
// handling (try_table, not the legacy try), threads and typed function
// references.
var opcodes = func() (t [256]uint8) {
	set := func(class uint8, ops ...byte) {
		for _, op := range ops {
			t[op] = class
		}
	}
	span := func(class uint8, from, to byte) {
		for op := int(from); op <= int(to); op++ {
			t[op] = class
		}
	}
	set(immNone, 0x00, 0x01, 0x05, 0x0a, 0x0f, 0x1a, 0x1b, 0xd1, 0xd4)
	set(immBlock, 0x02, 0x03, 0x04)
	set(immTryTable, 0x1f)
	set(immEnd, 0x0b)
	// throw, br, br_if, table.get, table.set, br_on_null, br_on_non_null
	set(immU32, 0x08, 0x0c, 0x0d, 0x25, 0x26, 0xd5, 0xd6)
	span(immU32, 0x20, 0x22)    // local.get/set/tee
	set(immU32, 0x3f, 0x40)     // memory.size, memory.grow: a reserved zero
	set(immFunc, 0x10, 0x12)    // call, return_call
	set(immFunc, 0xd2)          // ref.func
	set(immGlobal, 0x23, 0x24)  // global.get, global.set
	set(immType, 0x14, 0x15)    // call_ref, return_call_ref
	set(immU32x2, 0x11, 0x13)   // call_indirect, return_call_indirect: type, table
	span(immMemArg, 0x28, 0x3e) // loads and stores
	set(immI32, 0x41)           // i32.const
	set(immHeapType, 0xd0)      // ref.null
	set(immI64, 0x42)           // i64.const
	set(immF32, 0x43)           // f32.const
	set(immF64, 0x44)           // f64.const
	set(immBrTable, 0x0e)       // br_table
	set(immSelectT, 0x1c)       // select t*
	span(immNone, 0x45, 0xc4)   // numeric, conversions, sign extension
	set(immPrefixFC, 0xfc)      // misc
	set(immPrefixFD, 0xfd)      // SIMD
	set(immPrefixFE, 0xfe)      // atomics
	return t
}()

// simdOpcodes classifies what follows 0xfd. wazero reads the SIMD opcode as
// one byte, not as the LEB128 the specification has: an opcode of 0x80 or
// more is then followed by its continuation byte 0x01, which wazero (and
// this scan) reads as a nop.
var simdOpcodes = func() (t [256]uint8) {
	for op := range t {
		t[op] = immNone
	}
	for op := 0x00; op <= 0x0b; op++ {
		t[op] = immMemArg // v128.load*, v128.store
	}
	t[0x0c], t[0x0d] = immBytes16, immBytes16 // v128.const, i8x16.shuffle
	for op := 0x15; op <= 0x22; op++ {
		t[op] = immLane // extract_lane, replace_lane
	}
	for op := 0x54; op <= 0x5b; op++ {
		t[op] = immLaneMem // v128.load*_lane, v128.store*_lane
	}
	t[0x5c], t[0x5d] = immMemArg, immMemArg // v128.load32_zero, v128.load64_zero
	for _, op := range []byte{0x9a, 0xa2, 0xa5, 0xa6, 0xaf, 0xb0, 0xb2, 0xb3, 0xb4, 0xbb,
		0xc2, 0xc5, 0xc6, 0xcf, 0xd0, 0xd2, 0xd3, 0xd4, 0xe2, 0xee} {
		t[op] = immInvalid // reserved
	}
	return t
}()

// instructions walks code (a body's, or a constant expression) up to its
// final end and returns the deepest nesting reached. It keeps no stack:
// wazero checks what each end closes, this only counts.
func (r *reader) instructions() (deepest uint32) {
	var depth uint32
	for r.err == nil {
		if r.pos >= len(r.b) {
			r.fail("code ends before its end opcode")
			break
		}
		op := r.b[r.pos]
		r.pos++
		switch opcodes[op] {
		case immNone:
		case immBlock:
			r.blockType()
			if depth++; depth > deepest {
				deepest = depth
			}
		case immTryTable:
			r.blockType()
			for n := r.u32(); n > 0 && r.err == nil; n-- {
				switch kind := r.byte(); kind {
				case 0x00, 0x01: // catch, catch_ref: tag, label
					r.u32()
					r.u32()
				case 0x02, 0x03: // catch_all, catch_all_ref: label
					r.u32()
				default:
					r.fail(fmt.Sprintf("unknown catch kind %#x", kind))
				}
			}
			if depth++; depth > deepest {
				deepest = depth
			}
		case immEnd:
			if depth == 0 {
				return deepest
			}
			depth--
		case immU32:
			switch op {
			case 0x25: // table.get
				r.readsTables = true
			case 0x26: // table.set
				r.writesTables = true
			}
			r.u32()
		case immFunc:
			refer(&r.used.funcs, r.u32())
		case immGlobal:
			refer(&r.used.globals, r.u32())
		case immType:
			refer(&r.used.types, r.u32())
		case immHeapType:
			r.heapType()
		case immU32x2:
			r.callsIndirect = true
			if r.trackIndirect {
				r.indirect = append(r.indirect, r.pos-1)
			}
			refer(&r.used.types, r.u32())
			r.u32()
		case immMemArg:
			r.memArg()
		case immI32:
			r.leb(5)
		case immI64:
			r.leb(10)
		case immF32:
			r.skip(4)
		case immF64:
			r.skip(8)
		case immBrTable:
			for n := r.u32(); n > 0 && r.err == nil; n-- {
				r.u32()
			}
			r.u32()
		case immSelectT:
			for n := r.u32(); n > 0 && r.err == nil; n-- {
				r.valType()
			}
		case immPrefixFC:
			r.prefixFC()
		case immPrefixFD:
			r.prefixFD()
		case immPrefixFE:
			r.prefixFE()
		default:
			r.pos--
			r.fail(fmt.Sprintf("unknown opcode %#x", op))
		}
	}
	return deepest
}

func (r *reader) prefixFC() {
	op := r.u32()
	switch op {
	case 0x08, 0x09: // memory.init, data.drop
		r.usesData = true
	case 0x0c, 0x0d, 0x0e, 0x0f, 0x11: // table.init, elem.drop, table.copy, table.grow, table.fill
		r.writesTables = true
	case 0x10: // table.size
		r.readsTables = true
	}
	switch op {
	case 0, 1, 2, 3, 4, 5, 6, 7: // trunc_sat
	case 0x09, 0x0b, 0x0d, 0x0f, 0x10, 0x11: // data.drop; memory.fill; elem.drop; table.grow, size, fill
		r.u32()
	case 0x08, 0x0a, 0x0c, 0x0e: // memory.init, memory.copy, table.init, table.copy
		r.u32()
		r.u32()
	default:
		if r.err == nil {
			r.fail(fmt.Sprintf("unknown opcode 0xfc %d", op))
		}
	}
}

func (r *reader) prefixFD() {
	op := r.byte()
	switch simdOpcodes[op] {
	case immNone:
	case immMemArg:
		r.memArg()
	case immLaneMem:
		r.memArg()
		r.skip(1)
	case immLane:
		r.skip(1)
	case immBytes16:
		r.skip(16)
	default:
		if r.err == nil {
			r.fail(fmt.Sprintf("unknown opcode 0xfd %#x", op))
		}
	}
}

func (r *reader) prefixFE() {
	switch op := r.byte(); {
	case r.err != nil:
	case op == 0x03: // atomic.fence
		r.skip(1)
	case op <= 0x02 || 0x10 <= op && op <= 0x4e: // notify, wait; loads, stores, rmw
		r.memArg()
	default:
		r.fail(fmt.Sprintf("unknown opcode 0xfe %#x", op))
	}
}

// blockType reads a block type: an s33 that is an empty or value type, a
// type index, or the prefix of a reference type followed by its heap type.
func (r *reader) blockType() {
	switch t := r.s33(); {
	case t >= 0 && r.err == nil:
		refer(&r.used.types, uint32(min(t, 1<<32-1)))
	case t == -29, t == -28: // 0x63 (ref null ht), 0x64 (ref ht)
		r.heapType()
	}
}

// heapType reads a heap type: an abstract one (negative) or a type index.
func (r *reader) heapType() {
	if t := r.s33(); t >= 0 && r.err == nil {
		refer(&r.used.types, uint32(min(t, 1<<32-1)))
	}
}

// valType reads a value type: of a local, a global, a table or select t*.
func (r *reader) valType() {
	switch t := r.byte(); t {
	case 0x7f, 0x7e, 0x7d, 0x7c, 0x7b, 0x70, 0x6f, 0x69: // i32 i64 f32 f64 v128 funcref externref exnref
	case 0x63, 0x64: // (ref null ht), (ref ht)
		r.heapType()
	default:
		if r.err == nil {
			r.pos--
			r.fail(fmt.Sprintf("unknown value type %#x", t))
		}
	}
}

func (r *reader) memArg() {
	r.u32() // alignment
	r.u32() // offset
}

// reader decodes the binary format; the first error sticks and later reads
// return zero values.
type reader struct {
	b    []byte
	pos  int
	base int // offset of b in the module, for errors
	err  error

	usesData      bool    // the code read so far uses data segments
	writesTables  bool    // the code read so far writes tables
	readsTables   bool    // the code read so far reads tables (table.get, table.size)
	callsIndirect bool    // call_indirect or return_call_indirect read so far
	used          indexes // by what was read so far

	trackIndirect bool  // record where indirect calls are
	indirect      []int // positions of their opcodes, when tracked
}

func (r *reader) done() bool { return r.err != nil || r.pos >= len(r.b) }

// sub returns a reader of the next n bytes, which the caller has checked
// exist, and moves past them.
func (r *reader) sub(n int) reader {
	s := reader{b: r.b[r.pos : r.pos+n], base: r.base + r.pos}
	r.pos += n
	return s
}

func (r *reader) fail(msg string) {
	if r.err == nil {
		r.err = fmt.Errorf("%w: %s at offset %d", ErrMalformed, msg, r.base+r.pos)
	}
}

func (r *reader) byte() byte {
	if r.err != nil {
		return 0
	}
	if r.pos >= len(r.b) {
		r.fail("unexpected end")
		return 0
	}
	c := r.b[r.pos]
	r.pos++
	return c
}

func (r *reader) skip(n int) {
	if r.err == nil && n > len(r.b)-r.pos {
		r.pos = len(r.b)
		r.fail("unexpected end")
		return
	}
	r.pos += n
}

// u32 reads an unsigned LEB128 of at most 5 bytes.
func (r *reader) u32() uint32 {
	if r.err == nil && r.pos < len(r.b) && r.b[r.pos] < 0x80 {
		c := r.b[r.pos] // the common one-byte case
		r.pos++
		return uint32(c)
	}
	var v uint64
	for shift := 0; shift < 35; shift += 7 {
		c := r.byte()
		if r.err != nil {
			return 0
		}
		v |= uint64(c&0x7f) << shift
		if c&0x80 == 0 {
			if v > 0xffffffff {
				r.fail("integer too large")
				return 0
			}
			return uint32(v)
		}
	}
	r.fail("integer representation too long")
	return 0
}

// s33 reads a signed LEB128 as block and heap types are. Like wazero, it
// stops after the fifth byte even if that has its continuation bit set:
// wazero reads the byte after it as the next instruction, so must this.
func (r *reader) s33() int64 {
	var v int64
	for shift := 0; shift < 35; shift += 7 {
		c := r.byte()
		if r.err != nil {
			return 0
		}
		v |= int64(c&0x7f) << shift
		if c&0x80 == 0 {
			if c&0x40 != 0 {
				v -= 1 << (shift + 7) // sign-extend
			}
			return v
		}
	}
	return v
}

// leb skips a LEB128 of at most max bytes, signed or not: its length is all
// the scan needs, and the compiler checks its value.
func (r *reader) leb(max int) {
	for i := 0; i < max; i++ {
		if r.byte()&0x80 == 0 {
			return
		}
	}
	if r.err == nil {
		r.fail("integer representation too long")
	}
}

// name reads a name, or any vector of bytes, and returns it.
func (r *reader) name() []byte {
	n := r.u32()
	if r.err == nil && uint64(n) > uint64(len(r.b)-r.pos) {
		r.fail("name runs past the end")
	}
	if r.err != nil {
		return nil
	}
	r.pos += int(n)
	return r.b[r.pos-int(n) : r.pos]
}

// table reads a table type, with the initializer that typed function
// references allow, and returns its minimum size.
func (r *reader) table() uint32 {
	init := r.pos < len(r.b) && r.b[r.pos] == 0x40
	if init {
		r.pos++
		if reserved := r.byte(); reserved != 0 && r.err == nil {
			r.fail(fmt.Sprintf("unknown table prefix 0x40 %#x", reserved))
		}
	}
	r.valType() // reference type
	minimum := r.limits()
	if init {
		r.instructions() // a constant expression
	}
	return minimum
}

// limits reads a limits structure and returns its minimum.
func (r *reader) limits() uint32 {
	flags := r.byte()
	minimum := r.u32()
	if flags&0x01 != 0 {
		r.u32() // maximum
	}
	if flags&^0x07 != 0 {
		r.fail(fmt.Sprintf("unknown limits flags %#x", flags))
	}
	return minimum
}
