package wasmbin

// Prepare adds a dispatcher to a module: one exported function that calls
// any of a set of callbacks, and can run several in one call. Two wazero
// costs make it worth it: every looked-up export gets its own call engine
// (with a 10 KiB stack), and every call starts a goroutine to watch the
// call's context, which on an idle server wakes another thread. An instance
// that calls six callbacks through the dispatcher builds one call engine and
// makes three calls.
//
//	dispatch(op, a, b, c, d, e) -> i32
//
// The low byte of op picks what to run: a callback's index (Prepared.Dispatch)
// calls it with as many of a..e as it takes and returns its result, or 0
// when it has none; SequenceOp(...) runs the sequence callbacks in order,
// each with a, and returns the first one's result (1 when it is absent or has
// none). When that result is 0 the sequence stops there, so that the host
// can act on it before running the rest one by one. With DispatchCreateFirst set in op, the create callback runs first,
// with (a, e). Before each callback the dispatcher stores its index in the
// exported global StepExport, so a failure is traced to its callback.
const (
	DispatchExport = "sluice:dispatch"
	StepExport     = "sluice:step"
	// DispatchCreateFirst in op runs the create callback before the others.
	DispatchCreateFirst = 1 << 8
)

// DispatchSpec names the callbacks a dispatcher calls.
type DispatchSpec struct {
	Callbacks []string // each may be called alone, by index
	Create    string   // one of Callbacks: what DispatchCreateFirst runs, with (a, e)
	Sequence  []string // some of Callbacks: what the sequence op runs, in order, with (a)
}

// maxDispatchParams is how many parameters a dispatched callback may take.
const maxDispatchParams = 5

// dispatchPlan is what Prepare adds to a module for the dispatcher.
type dispatchPlan struct {
	index     map[string]uint32 // dispatch index of each callback the module has
	targets   []dispatchTarget  // by dispatch index
	create    int               // index of the create callback, or -1
	sequence  []uint32          // indexes of the sequence callbacks the module has
	seqFirst  bool              // the sequence's first callback is present with a result
	typeIndex uint32            // of the dispatcher's type, appended to the type section
	funcIndex uint32            // of the dispatcher, appended after every function
	global    uint32            // index of the step global, appended after every global
}

type dispatchTarget struct {
	funcIndex uint32
	params    int
	result    bool
}

// funcType is a function type: whether all its values are i32 is all that
// matters here.
type funcType struct {
	params, results int
	allI32          bool
}

// planDispatch finds which of the spec's callbacks the module exports as
// functions of a dispatchable type: i32 parameters (at most five) and no
// result or one i32. It returns nil when the module's types are more than
// plain function types (recursive groups), or when no callback qualifies.
func planDispatch(module []byte, spec DispatchSpec) *dispatchPlan {
	var (
		types       []funcType
		funcTypes   []uint32 // type of each function, imported ones first
		exports     = map[string]uint32{}
		globalCount uint32
	)
	for id, body := range sections(module) {
		switch id {
		case SectionType:
			for n := body.u32(); n > 0 && body.err == nil; n-- {
				if body.byte() != 0x60 {
					return nil // a recursive group: leave the module's types alone
				}
				t := funcType{allI32: true}
				for _, count := range [2]*int{&t.params, &t.results} {
					*count = int(body.u32())
					for k := 0; k < *count && body.err == nil; k++ {
						// Read whole: a reference type has a heap type after it.
						if body.pos < len(body.b) && body.b[body.pos] != 0x7f {
							t.allI32 = false
						}
						body.valType()
					}
				}
				types = append(types, t)
			}
		case SectionImport:
			for n := body.u32(); n > 0 && body.err == nil; n-- {
				switch kind, index := body.importEntry(); kind {
				case importFunc:
					funcTypes = append(funcTypes, index)
				case importGlobal:
					globalCount++
				}
			}
		case SectionFunction:
			for n := body.u32(); n > 0 && body.err == nil; n-- {
				funcTypes = append(funcTypes, body.u32())
			}
		case SectionGlobal:
			globalCount += body.u32()
			body.pos = len(body.b)
		case SectionExport:
			for n := body.u32(); n > 0 && body.err == nil; n-- {
				name := string(body.name())
				kind := body.byte()
				index := body.u32()
				if kind == 0x00 {
					exports[name] = index
				}
			}
		}
		if body.err != nil {
			return nil
		}
	}

	plan := &dispatchPlan{index: map[string]uint32{}, create: -1}
	for _, name := range spec.Callbacks {
		fn, ok := exports[name]
		if !ok || int(fn) >= len(funcTypes) || int(funcTypes[fn]) >= len(types) {
			continue
		}
		t := types[funcTypes[fn]]
		if !t.allI32 || t.params > maxDispatchParams || t.results > 1 {
			continue
		}
		plan.index[name] = uint32(len(plan.targets))
		plan.targets = append(plan.targets, dispatchTarget{funcIndex: fn, params: t.params, result: t.results == 1})
	}
	if len(plan.targets) == 0 {
		return nil
	}
	if i, ok := plan.index[spec.Create]; ok && plan.targets[i].params == 2 && !plan.targets[i].result {
		plan.create = int(i)
	}
	for k, name := range spec.Sequence {
		i, ok := plan.index[name]
		if !ok {
			continue
		}
		if plan.targets[i].params != 1 {
			plan.sequence = nil // cannot call it with (a): no sequence op
			break
		}
		plan.sequence = append(plan.sequence, i)
		if k == 0 {
			plan.seqFirst = plan.targets[i].result
		}
	}
	plan.typeIndex = uint32(len(types))
	plan.funcIndex = uint32(len(funcTypes))
	plan.global = globalCount
	return plan
}

// SequenceOp is the op that runs the sequence, for a module whose dispatcher
// has one; ok is false otherwise.
func (p *Prepared) SequenceOp() (op uint32, ok bool) {
	return p.sequenceOp, p.hasSequence
}

// CanCreateFirst reports whether the dispatcher runs the create callback
// when op has DispatchCreateFirst.
func (p *Prepared) CanCreateFirst() bool { return p.createFirst }

// DispatchedCallback names the callback a step value (read from StepExport)
// stands for.
func (p *Prepared) DispatchedCallback(step uint32) (string, bool) {
	for name, i := range p.Dispatch {
		if i == step {
			return name, true
		}
	}
	return "", false
}

// dispatcherType is the dispatcher's type: six i32 parameters, an i32 result.
var dispatcherType = []byte{0x60, 0x06, 0x7f, 0x7f, 0x7f, 0x7f, 0x7f, 0x7f, 0x01, 0x7f}

// stepGlobal is the step global's definition: a mutable i32, 0 at first.
var stepGlobal = []byte{0x7f, 0x01, 0x41, 0x00, 0x0b}

// body encodes the dispatcher: the optional create call, then nested
// blocks, one per target, one for the sequence and one for an unknown op,
// entered with a br_table on the op's low byte; each target calls its
// callback and returns.
func (plan *dispatchPlan) body() []byte {
	const result = 6                 // the local holding the sequence's result
	code := []byte{0x01, 0x01, 0x7f} // one i32 local
	step := func(code []byte, index uint32) []byte {
		code = append(code, 0x41) // i32.const index; global.set step
		code = appendS32(code, int32(index))
		code = append(code, 0x24)
		return appendU32(code, plan.global)
	}
	call := func(code []byte, fn uint32) []byte { return appendU32(append(code, 0x10), fn) }

	if plan.create >= 0 {
		code = append(code, 0x20, 0x00, 0x41) // local.get 0; i32.const 256; i32.and; if
		code = appendS32(code, DispatchCreateFirst)
		code = append(code, 0x71, 0x04, 0x40)
		code = step(code, uint32(plan.create))
		code = append(code, 0x20, 0x01, 0x20, 0x05) // local.get 1; local.get 5
		code = call(code, plan.targets[plan.create].funcIndex)
		code = append(code, 0x0b)
	}

	m := uint32(len(plan.targets))
	cases := m
	if len(plan.sequence) > 0 {
		cases++ // the sequence is case m
	}
	for range cases + 1 {
		code = append(code, 0x02, 0x40) // block with no result
	}
	code = append(code, 0x20, 0x00, 0x41) // local.get 0; i32.const 255; i32.and; br_table
	code = appendS32(code, 0xff)
	code = append(code, 0x71, 0x0e)
	code = appendU32(code, cases)
	for i := range cases {
		code = appendU32(code, i)
	}
	code = appendU32(code, cases) // the default: past every case
	code = append(code, 0x0b)
	for i, t := range plan.targets {
		code = step(code, uint32(i))
		for p := 1; p <= t.params; p++ {
			code = append(code, 0x20, byte(p)) // local.get p
		}
		code = call(code, t.funcIndex)
		if !t.result {
			code = append(code, 0x41, 0x00) // i32.const 0
		}
		code = append(code, 0x0f, 0x0b) // return; end of the next block
	}
	if len(plan.sequence) > 0 {
		code = append(code, 0x41, 0x01, 0x21, result) // i32.const 1; local.set result
		for k, i := range plan.sequence {
			t := plan.targets[i]
			code = step(code, i)
			code = append(code, 0x20, 0x01) // local.get 1
			code = call(code, t.funcIndex)
			switch {
			case k == 0 && plan.seqFirst:
				// local.tee result; i32.eqz; if; i32.const 0; return; end
				code = append(code, 0x22, result, 0x45, 0x04, 0x40, 0x41, 0x00, 0x0f, 0x0b)
			case t.result:
				code = append(code, 0x1a) // drop
			}
		}
		code = append(code, 0x20, result, 0x0f, 0x0b) // local.get result; return; end
	}
	code = append(code, 0x00, 0x0b) // unreachable; end of the function
	return withSize(code)
}

// sequenceOp returns the op of plan's sequence.
func (plan *dispatchPlan) sequenceOp() (uint32, bool) {
	return uint32(len(plan.targets)), len(plan.sequence) > 0
}

func appendS32(dst []byte, v int32) []byte {
	for {
		b := byte(v & 0x7f)
		v >>= 7
		if (v == 0 && b&0x40 == 0) || (v == -1 && b&0x40 != 0) {
			return append(dst, b)
		}
		dst = append(dst, b|0x80)
	}
}
