package wasmbin

// Prepare makes a module's function table fill lazily when it can. wazero
// resolves every entry of the active element segments at every
// instantiation, each as a constant expression evaluated into a newly
// allocated function instance: for a stock-Go module, 1,700 of them, half
// the CPU of a request restored from a snapshot and almost all its
// allocations. A request calls a few dozen of them.
//
// The rewritten module's table starts empty: the active segments become one
// declarative segment (which keeps ref.func of their functions valid), and
// every call_indirect and return_call_indirect first calls an added
// function, fill(i) -> i - base, which sets slot i - base with ref.func of
// the function the segments put at slot i if that slot is still empty.
// Since every call_indirect goes through fill, the table loses the slots
// below the first one the segments fill (base; stock Go leaves 4,096
// empty). fill hands the slot to one of several functions, each covering a
// chunk of the table: a function with a case per slot nests a block per
// slot, and wazero compiles deep nesting in superlinear time.
//
// call_indirect is then the only instruction that reads the table, and it
// sees what the segments would have put there: Prepare rewrites only
// modules whose code otherwise neither reads nor writes tables (table.size
// included), whose one table is their own (neither imported nor exported),
// and whose active segments list functions (not expressions) at constant
// offsets within the table's initial size. A slot no segment fills stays
// empty and traps as before; an index below base becomes one past the end,
// which traps the same way.

// chunkSlots is how many slots one chunk's function covers.
const chunkSlots = 1024

// maxLazySlots bounds the table span the rewrite covers: 128 chunks.
const maxLazySlots = 128 * chunkSlots

// tablePlan is what Prepare changes for a lazily filled table.
type tablePlan struct {
	base      uint32   // first slot the segments fill: the table is this much shorter
	slots     []uint32 // function of slot base+i, or noFunction
	funcs     []uint32 // every function the active segments name, once each, for the declarative segment
	typeIndex uint32   // of fill's type (i32) -> i32, appended to the type section
	funcIndex uint32   // of fill, appended to the functions, followed by one per chunk
}

const noFunction = ^uint32(0)

// fillType is the type (i32) -> i32.
var fillType = []byte{0x60, 0x01, 0x7f, 0x01, 0x7f}

// planTable returns the plan for module's table, or nil when the module has
// no segments to make lazy or does something the rewrite cannot keep
// (see above). types and funcs are the sizes of the type and function index
// spaces once the dispatcher is added.
func planTable(module []byte, s *Summary, types, funcs uint32) *tablePlan {
	if s.WritesTables || s.ReadsTables || s.ImportsTable || !s.CallsIndirect || s.RecGroups {
		return nil
	}
	var (
		tables   int
		tableMin uint32
		slots    = map[uint32]uint32{}
		named    = map[uint32]bool{}
		declared []uint32 // every function named, overwritten or not: ref.func may name it
		low      = ^uint32(0)
		high     uint32
	)
	for id, body := range sections(module) {
		switch id {
		case SectionTable:
			for n := body.u32(); n > 0 && body.err == nil; n-- {
				if body.byte() != 0x70 { // an initializer, or not funcref
					return nil
				}
				flags := body.byte()
				tableMin = body.u32()
				switch {
				case flags == 0x01 && body.u32() < tableMin: // invalid: let the compiler say so
					return nil
				case flags > 0x01: // 64-bit or shared limits
					return nil
				}
				tables++
			}
		case SectionExport:
			for n := body.u32(); n > 0 && body.err == nil; n-- {
				body.name()
				if body.byte() == 0x01 { // a table
					return nil
				}
				body.u32()
			}
		case SectionElement:
			for n := body.u32(); n > 0 && body.err == nil; n-- {
				start := body.pos
				flags := body.u32()
				switch flags {
				case 0x00: // active in table 0: offset, function indexes
				case 0x02: // active in a given table: index, offset, element kind, function indexes
					if body.u32() != 0 {
						return nil
					}
				case 0x04, 0x06: // active, with expressions
					return nil
				default: // passive or declarative: kept as they are
					body.pos = start
					new(Summary).readElements(body)
					continue
				}
				offset, ok := constI32(body)
				if !ok || flags == 0x02 && body.byte() != 0x00 {
					return nil
				}
				count := body.u32()
				if uint64(offset)+uint64(count) > uint64(tableMin) || count > maxLazySlots {
					return nil // wazero stops applying segments there; keep its behaviour
				}
				for i := uint32(0); i < count && body.err == nil; i++ {
					fn := body.u32()
					slots[offset+i] = fn
					if !named[fn] {
						named[fn] = true
						declared = append(declared, fn)
					}
				}
				if count > 0 {
					low, high = min(low, offset), max(high, offset+count)
				}
				if high-low > maxLazySlots {
					return nil
				}
			}
		}
		if body.err != nil {
			return nil
		}
	}
	if tables != 1 || len(slots) == 0 {
		return nil
	}
	plan := &tablePlan{base: low, slots: make([]uint32, high-low), funcs: declared, typeIndex: types, funcIndex: funcs}
	for i := range plan.slots {
		fn, ok := slots[low+uint32(i)]
		if !ok {
			fn = noFunction
		}
		plan.slots[i] = fn
	}
	return plan
}

// table rewrites the table section: its one table, base slots shorter.
// Its maximum stays: no code grows the table.
func (plan *tablePlan) table(body *reader) []byte {
	body.u32()  // one table
	body.byte() // funcref
	flags := body.byte()
	entry := appendU32([]byte{0x01, 0x70, flags}, body.u32()-plan.base)
	return appendSection(nil, SectionTable, entry, body.b[body.pos:])
}

// elements rewrites the element section: its active segments, now filled by
// fill, become one declarative segment; the others are kept.
func (plan *tablePlan) elements(body *reader) []byte {
	var kept []byte
	var count uint32
	for n := body.u32(); n > 0 && body.err == nil; n-- {
		start := body.pos
		flags := body.u32()
		body.pos = start
		new(Summary).readElements(body)
		if flags == 0x00 || flags == 0x02 {
			continue
		}
		kept = append(kept, body.b[start:body.pos]...)
		count++
	}
	declarative := []byte{0x03, 0x00} // declarative, element kind funcref
	declarative = appendU32(declarative, uint32(len(plan.funcs)))
	for _, fn := range plan.funcs {
		declarative = appendU32(declarative, fn)
	}
	return appendSection(nil, SectionElement, appendU32(nil, count+1), kept, declarative)
}

// bodies rewrites the code section's entries: each body, then added (the
// dispatcher's), then fill's. It returns the section's parts.
func (plan *tablePlan) bodies(section *reader, added [][]byte) [][]byte {
	n := section.u32()
	fills := plan.fills()
	parts := [][]byte{appendU32(nil, n+uint32(len(added)+len(fills)))}
	for ; n > 0 && section.err == nil; n-- {
		size := section.u32()
		parts = append(parts, plan.code(section.b[section.pos:section.pos+int(size)]))
		section.pos += int(size)
	}
	return append(append(parts, added...), fills...)
}

// code rewrites a function body so that fill runs before each indirect call.
func (plan *tablePlan) code(body []byte) []byte {
	r := reader{b: body, trackIndirect: true}
	r.locals()
	r.instructions()
	if len(r.indirect) == 0 {
		return withSize(body)
	}
	call := appendU32([]byte{0x10}, plan.funcIndex)
	code := make([]byte, 0, len(body)+len(r.indirect)*len(call))
	last := 0
	for _, at := range r.indirect {
		code = append(append(code, body[last:at]...), call...)
		last = at
	}
	return withSize(append(code, body[last:]...))
}

// functions is how many functions the plan adds: fill and one per chunk.
func (plan *tablePlan) functions() int {
	return 1 + (len(plan.slots)+chunkSlots-1)/chunkSlots
}

// fills returns the bodies of fill and of each chunk's function.
//
//	(func $fill (param $i i32) (result i32) (local $j i32)
//	  (local.set $j (i32.sub (local.get $i) (i32.const base)))
//	  (if (i32.lt_u (local.get $j) (table.size))
//	    (if (ref.is_null (table.get (local.get $j)))
//	      (then (block $exit (block $chunk_n ... (block $chunk_0
//	        (br_table $chunk_0 ... $exit (i32.shr_u (local.get $j) (i32.const 10))))
//	        (drop (call $fill_0 (local.get $j))) (br $exit))
//	      ...))))
//	  (local.get $j))
func (plan *tablePlan) fills() [][]byte {
	chunks := plan.functions() - 1
	labels := make([]uint32, chunks)
	for c := range labels {
		labels[c] = uint32(c)
	}
	code := []byte{0x01, 0x01, 0x7f}      // one i32 local, $j
	code = append(code, 0x20, 0x00, 0x41) // local.get $i; i32.const base; i32.sub; local.set $j
	code = appendS32(code, int32(plan.base))
	code = append(code, 0x6b, 0x21, 0x01)
	// Past the end, call_indirect traps by itself, with the same stack.
	code = append(code, 0x20, 0x01, 0xfc, 0x10, 0x00, 0x49) // local.get $j; table.size 0; i32.lt_u
	code = append(code, 0x04, 0x40)                         // if
	code = append(code, 0x20, 0x01, 0x25, 0x00, 0xd1)       // local.get $j; table.get 0; ref.is_null
	code = append(code, 0x04, 0x40, 0x02, 0x40)             // if; block $exit
	code = switchOn(code, 1, 0, chunkShift, labels, func(code []byte, c int) []byte {
		code = append(code, 0x20, 0x01, 0x10) // local.get $j; call $fill_c; drop
		return append(appendU32(code, plan.funcIndex+1+uint32(c)), 0x1a)
	})
	code = append(code, 0x0b, 0x0b, 0x0b) // end of $exit; end of both ifs
	code = append(code, 0x20, 0x01, 0x0b) // local.get $j; end
	bodies := [][]byte{withSize(code)}
	for c := range chunks {
		bodies = append(bodies, plan.chunk(c))
	}
	return bodies
}

const chunkShift = 10 // log2(chunkSlots)

// chunk returns the body of the function filling the slots of chunk c
// (slots counted from base, as in the shortened table):
//
//	(func $fill_c (param $j i32) (result i32)
//	  (block $exit (block $case_k ... (block $case_0
//	    (br_table $case_... $exit (i32.sub (local.get $j) (i32.const first)))
//	  ) (table.set (local.get $j) (ref.func f_0)) (br $exit)
//	  ...)
//	  (local.get $j))
//
// Slots no segment fills go to $exit.
func (plan *tablePlan) chunk(c int) []byte {
	first := c * chunkSlots
	slots := plan.slots[first:min(first+chunkSlots, len(plan.slots))]
	// One case per function: a function in many slots is one case.
	var filled []uint32 // the case's function, by case
	cases := map[uint32]uint32{}
	labels := make([]uint32, len(slots))
	for i, fn := range slots {
		labels[i] = noFunction
		if fn == noFunction {
			continue
		}
		k, ok := cases[fn]
		if !ok {
			k = uint32(len(filled))
			cases[fn] = k
			filled = append(filled, fn)
		}
		labels[i] = k
	}
	code := []byte{0x00}            // no locals
	code = append(code, 0x02, 0x40) // block $exit
	code = switchOn(code, 0, uint32(first), 0, labels, func(code []byte, k int) []byte {
		code = append(code, 0x20, 0x00, 0xd2) // local.get $j; ref.func f_k; table.set 0
		return append(appendU32(code, filled[k]), 0x26, 0x00)
	})
	code = append(code, 0x0b)             // end of $exit
	code = append(code, 0x20, 0x00, 0x0b) // local.get $j; end
	return withSize(code)
}

// switchOn appends a switch on local >> shift (minus first, in a chunk),
// inside a block $exit: labels maps each value to a case (noFunction: none,
// go to $exit), and each case's code is followed by a branch to $exit.
func switchOn(code []byte, local byte, first uint32, shift int, labels []uint32, emit func([]byte, int) []byte) []byte {
	cases := uint32(0)
	for _, l := range labels {
		if l != noFunction {
			cases = max(cases, l+1)
		}
	}
	for range cases {
		code = append(code, 0x02, 0x40) // block $case_k
	}
	code = append(code, 0x20, local) // local.get
	if first > 0 {
		code = append(code, 0x41) // i32.const first; i32.sub
		code = append(appendS32(code, int32(first)), 0x6b)
	}
	if shift > 0 {
		code = append(code, 0x41, byte(shift), 0x76) // i32.const shift; i32.shr_u
	}
	code = append(code, 0x0e) // br_table: case k is k blocks out, $exit all of them
	code = appendU32(code, uint32(len(labels)))
	for _, l := range labels {
		if l == noFunction {
			l = cases
		}
		code = appendU32(code, l)
	}
	code = appendU32(code, cases)
	for k := range cases {
		code = append(code, 0x0b) // end of $case_k
		code = emit(code, int(k))
		code = append(code, 0x0c) // br $exit
		code = appendU32(code, cases-1-k)
	}
	return code
}
