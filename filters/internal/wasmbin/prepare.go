package wasmbin

import (
	"errors"
	"fmt"
	"strconv"
)

// ErrNotPreparable is wrapped by Prepare's errors: the module is valid but
// must be instantiated as it is.
var ErrNotPreparable = errors.New("module cannot be prepared")

// Names Prepare exports. They cannot collide with a Proxy-Wasm name.
const (
	StartExport        = "sluice:start"
	globalExportPrefix = "sluice:global:"
)

// GlobalExport is the export name Prepare gives the global at index.
func GlobalExport(index uint32) string {
	return globalExportPrefix + strconv.FormatUint(uint64(index), 10)
}

// Global is a mutable global a prepared module exports.
type Global struct {
	Index uint32 // in the module's global index space
	Type  byte   // value type: 0x7f i32, 0x7e i64, 0x7d f32, 0x7c f64, or another
}

// Prepared is a module rewritten so that the host decides how each instance
// starts. Custom sections other than "name" are dropped.
type Prepared struct {
	// Module is the rewritten binary: the original without its data
	// segments and start section, exporting its start function and its
	// mutable globals.
	Module []byte
	// Memory is what linear memory holds right after instantiation: the
	// active data segments applied to zeros. The host hands each instance a
	// memory starting with it.
	Memory []byte
	// MinPages is the memory's declared minimum, in 64 KiB pages.
	MinPages uint32
	// HasStart reports that the module had a start function, now exported
	// as StartExport for the host to call.
	HasStart bool
	// Globals are the mutable globals, exported as GlobalExport(Index).
	Globals []Global
	// Dispatch maps the callbacks DispatchExport calls to their index, the
	// low byte of its first argument. Empty when the module has no
	// dispatcher.
	Dispatch map[string]uint32
	// LazyTable reports that the function table fills as indirect calls
	// reach its slots, not at instantiation (see lazytable.go).
	LazyTable bool

	sequenceOp  uint32
	hasSequence bool
	createFirst bool
}

// Prepare rewrites a module (which Summarize accepted) so that:
//
//   - its active data segments are applied by the host, from Memory, not by
//     wazero at every instantiation (one allocation and copy per segment:
//     35,000 of them in a stock-Go module);
//   - its start function runs only when the host calls it, so an instance
//     restored from a snapshot does not initialize again;
//   - its mutable globals are exported, so a snapshot can read and restore
//     them;
//   - a dispatcher (DispatchExport) calls the exported functions dispatch
//     names that take only i32s, alone or in sequence;
//   - its function table fills lazily, slot by slot, when it can (see
//     lazytable.go).
//
// It refuses (ErrNotPreparable) modules whose code uses data segments
// (memory.init, data.drop), whose data offsets are not constants, or whose
// memory is imported or missing: those are instantiated unchanged.
func Prepare(module []byte, dispatch DispatchSpec) (*Prepared, error) {
	s, err := Summarize(module)
	if err != nil {
		return nil, err
	}
	switch {
	case s.UsesDataSegments:
		return nil, fmt.Errorf("%w: its code uses data segments (memory.init or data.drop)", ErrNotPreparable)
	case s.ImportsMem:
		return nil, fmt.Errorf("%w: it imports its memory", ErrNotPreparable)
	}

	p := &Prepared{}
	var (
		out           = append(make([]byte, 0, len(module)), header...)
		exports       []byte // the export section's entries
		exportCount   uint32
		exportsPlaced bool
		importedGlobs uint32
		memories      int
		names         = map[string]bool{}
	)
	// The start section comes after the exports, which must name its
	// function: find it first.
	startFunc, hasStart := findStart(module)
	p.HasStart = hasStart
	plan := planDispatch(module, dispatch)
	if plan != nil {
		p.Dispatch = plan.index
		p.sequenceOp, p.hasSequence = plan.sequenceOp()
		p.createFirst = plan.create >= 0
	}
	types, funcs := s.Types, s.ImportedFuncs+s.Functions
	if plan != nil {
		types, funcs = types+1, funcs+1
	}
	table := planTable(module, s, types, funcs)
	p.LazyTable = table != nil
	// The dispatcher and fill are appended to the types, functions and
	// bodies in that order.
	var addedTypes, addedFuncs [][]byte
	if plan != nil {
		addedTypes = append(addedTypes, dispatcherType)
		addedFuncs = append(addedFuncs, appendU32(nil, plan.typeIndex))
	}
	if table != nil {
		addedTypes = append(addedTypes, fillType)
		for range table.functions() {
			addedFuncs = append(addedFuncs, appendU32(nil, table.typeIndex))
		}
	}
	globalsPlaced := plan == nil
	// placeGlobals adds the dispatcher's step global: as a global section
	// of its own when the module has none.
	placeGlobals := func() {
		if !globalsPlaced {
			globalsPlaced = true
			out = appendSection(out, SectionGlobal, appendU32(nil, 1), stepGlobal)
		}
	}
	// appendEntries rebuilds a vector section with more entries.
	appendEntries := func(id byte, body *reader, entries ...[]byte) {
		n := body.u32()
		out = appendSection(out, id, append([][]byte{appendU32(nil, n+uint32(len(entries))), body.b[body.pos:]}, entries...)...)
		body.pos = len(body.b)
	}

	placeExports := func() {
		if exportsPlaced {
			return
		}
		exportsPlaced = true
		for _, g := range p.Globals {
			exports = appendName(exports, GlobalExport(g.Index))
			exports = append(exports, 0x03) // global
			exports = appendU32(exports, g.Index)
			exportCount++
		}
		if p.HasStart {
			exports = appendName(exports, StartExport)
			exports = append(exports, 0x00) // function
			exports = appendU32(exports, startFunc)
			exportCount++
		}
		if plan != nil {
			exports = appendName(exports, DispatchExport)
			exports = append(exports, 0x00)
			exports = appendU32(exports, plan.funcIndex)
			exports = appendName(exports, StepExport)
			exports = append(exports, 0x03)
			exports = appendU32(exports, plan.global)
			exportCount += 2
			for _, name := range []string{DispatchExport, StepExport} {
				if names[name] {
					err = fmt.Errorf("%w: it already exports %q", ErrNotPreparable, name)
				}
			}
		}
		for _, g := range p.Globals {
			if names[GlobalExport(g.Index)] {
				err = fmt.Errorf("%w: it already exports %q", ErrNotPreparable, GlobalExport(g.Index))
			}
		}
		if p.HasStart && names[StartExport] {
			err = fmt.Errorf("%w: it already exports %q", ErrNotPreparable, StartExport)
		}
		out = appendSection(out, SectionExport, appendU32(nil, exportCount), exports)
	}

	r := reader{b: module, pos: len(header)}
	for !r.done() && err == nil {
		start := r.pos
		id := r.byte()
		size := r.u32()
		body := r.sub(int(size))
		whole := module[start:r.pos]
		if id != SectionCustom && sectionOrder(id) > sectionOrder(SectionGlobal) {
			placeGlobals()
		}
		if id != SectionCustom && sectionOrder(id) > sectionOrder(SectionExport) {
			placeExports()
		}
		switch id {
		case SectionImport:
			for n := body.u32(); n > 0 && body.err == nil; n-- {
				if kind, _ := body.importEntry(); kind == importGlobal {
					importedGlobs++
				}
			}
			out = append(out, whole...)
		case SectionMemory:
			for n := body.u32(); n > 0 && body.err == nil; n-- {
				p.MinPages = body.limits()
				memories++
			}
			out = append(out, whole...)
		case SectionGlobal:
			entries := body.pos
			n := body.u32()
			for i := uint32(0); i < n && body.err == nil; i++ {
				typ := body.b[body.pos]
				body.valType()
				if body.byte() == 0x01 {
					p.Globals = append(p.Globals, Global{Index: importedGlobs + i, Type: typ})
				}
				body.instructions()
			}
			if plan == nil {
				out = append(out, whole...)
			} else {
				body.pos = entries
				appendEntries(id, &body, stepGlobal)
				globalsPlaced = true
			}
		case SectionExport:
			exportCount = body.u32()
			entries := body.pos
			for n := exportCount; n > 0 && body.err == nil; n-- {
				names[string(body.name())] = true
				body.byte()
				body.u32()
			}
			exports = append(exports, body.b[entries:body.pos]...)
			placeExports()
		case SectionStart:
			// Dropped: the host calls the function, exported, when an
			// instance starts fresh.
		case SectionDataCount:
			// Dropped with the data: no code refers to data segments.
		case SectionData:
			p.Memory, err = applyData(&body, p.MinPages)
		case SectionCustom:
			// Only the name section, for stack traces, is worth its memory
			// (wazero keeps custom sections it is given).
			if string(body.name()) == "name" {
				out = append(out, whole...)
			}
			body.pos = len(body.b)
		case SectionType:
			appendEntries(id, &body, addedTypes...)
		case SectionFunction:
			appendEntries(id, &body, addedFuncs...)
		case SectionTable:
			if table == nil {
				out = append(out, whole...)
				break
			}
			out = append(out, table.table(&body)...)
		case SectionElement:
			if table == nil {
				out = append(out, whole...)
				break
			}
			out = append(out, table.elements(&body)...)
		case SectionCode:
			var added [][]byte
			if plan != nil {
				added = append(added, plan.body())
			}
			if table == nil {
				appendEntries(id, &body, added...)
				break
			}
			out = appendSection(out, id, table.bodies(&body, added)...)
		default:
			out = append(out, whole...)
		}
		if err == nil && body.err != nil {
			err = body.err
		}
	}
	if err == nil {
		placeGlobals()
		placeExports()
	}
	if err == nil && r.err != nil {
		err = r.err
	}
	if err == nil && memories != 1 {
		err = fmt.Errorf("%w: it defines %d memories", ErrNotPreparable, memories)
	}
	if err != nil {
		return nil, err
	}
	p.Module = out
	return p, nil
}

// findStart returns the start function of a module Summarize accepted.
func findStart(module []byte) (uint32, bool) {
	for id, body := range sections(module) {
		if id == SectionStart {
			return body.u32(), true
		}
	}
	return 0, false
}

// applyData applies the active data segments of a data section to a zeroed
// memory of at most minPages pages and returns it, cut after the last
// segment. A segment past the initial memory, or with an offset that is not
// an i32.const, makes the module unpreparable: wazero's own instantiation
// reports the first as the module's error, and the second depends on an
// imported global.
func applyData(r *reader, minPages uint32) ([]byte, error) {
	var memory []byte
	limit := uint64(minPages) * 65536
	for n := r.u32(); n > 0 && r.err == nil; n-- {
		flags := r.u32()
		if flags == 1 { // passive: only memory.init can use it, and the code has none
			r.name()
			continue
		}
		if flags == 2 && r.u32() != 0 {
			return nil, fmt.Errorf("%w: a data segment is for memory %d", ErrNotPreparable, flags)
		}
		offset, ok := constI32(r)
		if !ok {
			return nil, fmt.Errorf("%w: a data segment offset is not a constant", ErrNotPreparable)
		}
		data := r.name()
		end := uint64(offset) + uint64(len(data))
		if end > limit {
			return nil, fmt.Errorf("%w: a data segment ends at %d, past the initial memory of %d bytes",
				ErrNotPreparable, end, limit)
		}
		if end > uint64(len(memory)) {
			memory = append(memory, make([]byte, end-uint64(len(memory)))...)
		}
		copy(memory[offset:], data)
	}
	return memory, r.err
}

// sectionOrder ranks sections in the order the binary format requires;
// tags come between memories and globals.
func sectionOrder(id byte) int {
	switch id {
	case SectionTag:
		return 55
	case SectionDataCount:
		return 95
	}
	return int(id) * 10
}

// constI32 reads a constant expression that is a single i32.const, as
// segment offsets are.
func constI32(r *reader) (uint32, bool) {
	if r.byte() != 0x41 {
		return 0, false
	}
	v := uint32(r.s33())
	return v, r.byte() == 0x0b && r.err == nil
}

// withSize prefixes code with its size, as a function body is written.
func withSize(code []byte) []byte {
	return append(appendU32(nil, uint32(len(code))), code...)
}

func appendSection(dst []byte, id byte, parts ...[]byte) []byte {
	size := 0
	for _, p := range parts {
		size += len(p)
	}
	dst = append(dst, id)
	dst = appendU32(dst, uint32(size))
	for _, p := range parts {
		dst = append(dst, p...)
	}
	return dst
}

func appendU32(dst []byte, v uint32) []byte {
	for v >= 0x80 {
		dst = append(dst, byte(v)|0x80)
		v >>= 7
	}
	return append(dst, byte(v))
}

func appendName(dst []byte, name string) []byte {
	dst = appendU32(dst, uint32(len(name)))
	return append(dst, name...)
}
