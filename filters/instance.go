package filters

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tetratelabs/wazero/api"

	"github.com/sluice-edge/sluice/abi"
	"github.com/sluice-edge/sluice/filters/internal/cowmem"
	"github.com/sluice-edge/sluice/filters/internal/wasmbin"
)

// LogSink receives what a guest logs.
type LogSink interface {
	// GuestLog receives a proxy_log message. msg aliases guest memory.
	GuestLog(level abi.LogLevel, msg []byte)
	// GuestOutput receives what the guest writes to stdout (1) or stderr (2).
	GuestOutput(fd uint32, p []byte)
	// LogLevel is the least level worth sending.
	LogLevel() abi.LogLevel
}

// errInstanceClosed is the cause of calls into a closed instance.
var errInstanceClosed = errors.New("instance closed")

// rootContextID is the id of the plugin (root) context in every instance;
// HTTP contexts count up from it.
const rootContextID = 1

// Instance is one WebAssembly instance of a plugin, started and configured:
// _initialize (or _start), proxy_on_vm_start, the root context and
// proxy_on_configure have run. Calls into it are serialized. After any call
// fails, the instance is unusable: every later call returns that error.
type Instance struct {
	plugin  *Plugin
	role    role
	origin  Origin
	isolate // nil module once closed
	root    *rootContext
	charged uint64 // budget charged for a memory wazero allocated itself

	mu            sync.Mutex // serializes guest calls and guards what follows
	stack         [8]uint64
	budget        time.Duration // of the next guest call
	lastCall      abi.Callback
	err           *GuestError
	nextContextID uint32
	nextCallID    uint32          // of the last outbound call
	failed        atomic.Bool     // err is set: read without the lock
	closing       atomic.Bool     // Close was called: later calls return at once
	slot          *sharedInstance // its shared pool slot; nil for a request's own instance
}

// isolate is the WebAssembly side of an instance: the wazero module, its
// memory, and what was looked up in them. A request's isolate may outlive
// its instance, reset to the snapshot for another request (see recycle.go).
type isolate struct {
	mod   api.Module
	guest *abi.Guest
	funcs map[abi.Callback]api.Function // looked up on first use; made on first use
	// dispatcher is the prepared module's dispatcher, looked up on first
	// use: a prepared instance calls nothing else on the request path.
	dispatcher api.Function
	stepGlobal api.MutableGlobal   // the dispatcher's step, looked up on first use
	globals    []api.MutableGlobal // the snapshot's globals, looked up on first use

	memory     *cowmem.Memory // owned until Close, then back to memoryPool
	memoryPool *cowmem.Pool
}

// role is what an instance is for.
type role int

const (
	roleRequest    role = iota // serves requests
	roleLoad                   // Load's: validates the filter, becomes its snapshot
	roleBackground             // runs the root context's timer, queues and calls
	roleShared                 // serves many requests (IsolationShared)
)

// Origin is how an instance came to be, for traces and metrics.
type Origin string

// The origins of an instance.
const (
	OriginRestored     Origin = "restore"     // restored from the plugin's snapshot on demand
	OriginRecycled     Origin = "recycle"     // an earlier request's isolate, reset to the snapshot
	OriginPrewarmed    Origin = "prewarmed"   // restored from the snapshot ahead of its request
	OriginInstantiated Origin = "instantiate" // instantiated and started from scratch
	OriginShared       Origin = "shared"      // a long-lived instance of IsolationShared
)

// Origin reports how the instance was made.
func (inst *Instance) Origin() Origin { return inst.origin }

// NewInstance creates a configured instance: restored from the plugin's
// snapshot, or started fresh (the start-up lifecycle runs in it). log
// receives what the filter logs while starting. ctx bounds the whole
// start-up; each step also has the plugin's time budget.
func (p *Plugin) NewInstance(ctx context.Context, log LogSink) (*Instance, error) {
	return p.newInstanceFor(ctx, log, roleRequest)
}

// newInstanceFor is NewInstance for an instance with role r.
func (p *Plugin) newInstanceFor(ctx context.Context, log LogSink, r role) (*Instance, error) {
	if p.snapshot != nil {
		if inst, err := p.recycled(log, r); inst != nil || err != nil {
			return inst, err
		}
		if p.warm != nil && r == roleRequest {
			if inst := p.warm.take(); inst != nil {
				inst.root.log = log
				inst.origin = OriginPrewarmed
				return inst, nil
			}
		}
		inst := p.newRestored()
		inst.role = r
		inst.origin = OriginRestored
		inst.root.log = log
		if err := inst.restore(ctx); err != nil {
			inst.Close(ctx)
			return nil, err
		}
		return inst, nil
	}
	inst := p.newInstance(log)
	inst.role = r
	inst.origin = OriginInstantiated
	inst.guest = abi.NewGuest()

	// Instantiation runs the module's start section, if any (an unprepared
	// module's), so it has a budget too.
	inst.budget = p.cfg.Limits.Timeout * StartTimeoutFactor
	mctx, err := inst.withMemory(ctx, p.freshMemory)
	if errors.Is(err, ErrOverloaded) {
		return nil, err
	}
	if err != nil {
		return nil, &GuestError{Plugin: p.cfg.Name, Callback: "instantiate", Kind: ErrInstantiate, Err: err}
	}
	root := inst.root
	root.scope = newCallScope(mctx, inst.guest, root)
	root.scope.arm(inst.budget)
	mod, err := p.runtime.InstantiateModule(root.scope.ctx, p.compiled, p.modCfg)
	root.scope.disarm()
	if err == nil && root.scope.ctx.Err() != nil {
		// The start section outlived its budget (a host function such as
		// poll_oneoff returned at the deadline): wazero may have closed the
		// module already, so it must not be used.
		_ = mod.Close(ctx)
		err = root.scope.ctx.Err()
	}
	if err != nil {
		kind := inst.kindOf(root.scope, err)
		if kind == ErrTrap { // not necessarily the guest's doing: a memory over the limit, say
			kind = ErrInstantiate
		}
		inst.Close(ctx)
		return nil, &GuestError{Plugin: p.cfg.Name, Callback: "instantiate", Kind: kind, Err: err}
	}
	inst.mod = mod
	if err := inst.guest.Bind(mod); err != nil {
		inst.Close(ctx)
		return nil, &GuestError{Plugin: p.cfg.Name, Callback: "instantiate", Kind: ErrABIViolation, Err: err}
	}
	err = inst.start()
	root.scope.end()
	if err != nil {
		inst.Close(ctx)
		return nil, err
	}
	return inst, nil
}

// newInstance makes the host side of an instance; the caller creates the
// wazero module.
func (p *Plugin) newInstance(log LogSink) *Instance {
	inst := &Instance{
		plugin:        p,
		nextContextID: rootContextID + 1,
	}
	inst.root = &rootContext{pluginServices: pluginServices{p}, inst: inst, log: log}
	return inst
}

// newRestored is newInstance for an instance restore will make: it runs no
// guest code before its request, so it logs nowhere until then.
func (p *Plugin) newRestored() *Instance { return p.newInstance(discardLog{}) }

// discardLog is the log sink of an instance that belongs to no request yet.
type discardLog struct{}

func (discardLog) GuestLog(abi.LogLevel, []byte) {}
func (discardLog) GuestOutput(uint32, []byte)    {}
func (discardLog) LogLevel() abi.LogLevel        { return abi.LogCritical }

// start runs the module's initialization and the root context's lifecycle
// up to proxy_on_configure.
func (inst *Instance) start() error {
	inst.mu.Lock()
	defer inst.mu.Unlock()
	cfg := inst.plugin.cfg
	root := inst.root

	// A prepared module's start function (a start section, which wazero
	// would have run at instantiation) runs first.
	if inst.plugin.prepared != nil && inst.plugin.prepared.HasStart {
		if _, err := inst.call(root.scope, wasmbin.StartExport); err != nil {
			return err
		}
	}
	// A reactor exports _initialize (and maybe main, called after it); a
	// command exports _start, which may end with proc_exit(0).
	if inst.function(abi.ExportInit) != nil {
		if _, err := inst.call(root.scope, abi.ExportInit); err != nil {
			return err
		}
		if inst.function(abi.ExportMain) != nil {
			if _, err := inst.call(root.scope, abi.ExportMain, 0, 0); err != nil {
				return err
			}
		}
	} else if inst.function(abi.ExportStart) != nil {
		if _, err := inst.call(root.scope, abi.ExportStart); err != nil {
			return err
		}
	}

	root.phase = rootVMStart
	ok, err := inst.callOr(root.scope, abi.OnVMStart, 1, rootContextID, uint64(len(cfg.VMConfig)))
	if err != nil {
		return err
	}
	if ok == 0 {
		return inst.fail(abi.OnVMStart, ErrRejected, errors.New("proxy_on_vm_start returned false"))
	}
	root.phase = rootCreate
	if _, err := inst.callOr(root.scope, abi.OnContextCreate, 0, rootContextID, 0); err != nil {
		return err
	}
	root.phase = rootConfigure
	ok, err = inst.callOr(root.scope, abi.OnConfigure, 1, rootContextID, uint64(len(cfg.PluginConfig)))
	if err != nil {
		return err
	}
	if ok == 0 {
		return inst.fail(abi.OnConfigure, ErrRejected, errors.New("proxy_on_configure returned false"))
	}
	root.phase = rootReady
	inst.budget = cfg.Limits.Timeout
	return nil
}

// Close discards the instance. It is safe to call more than once (the
// first call acts) and while another goroutine is inside a call: that call
// fails, and Close waits for it before handing the instance's memory back
// for reuse.
func (inst *Instance) Close(ctx context.Context) {
	// The first Close does the work; another, concurrent one must not read
	// the isolate the first may be handing to another request.
	if inst.closing.Swap(true) || inst.recycle() {
		return
	}
	if inst.mod != nil {
		_ = inst.mod.Close(ctx)
	}
	inst.mu.Lock()
	defer inst.mu.Unlock()
	if inst.memory != nil {
		inst.memoryPool.Put(inst.memory) // refunds its budget
		inst.memory = nil
	}
	if inst.charged > 0 {
		inst.plugin.budget().Refund(inst.charged)
		inst.charged = 0
	}
	if inst.root.scope != nil {
		inst.root.scope.end()
	}
}

// Violation makes the instance fail with an ABI violation the embedder
// detected (a stream left paused with nothing to resume it, say), and
// returns the resulting error.
func (inst *Instance) Violation(err error) error {
	inst.mu.Lock()
	defer inst.mu.Unlock()
	if inst.err != nil {
		return inst.err
	}
	return inst.fail(inst.lastCall, ErrABIViolation, err)
}

// Err returns the error that made the instance unusable, or nil.
func (inst *Instance) Err() error {
	inst.mu.Lock()
	defer inst.mu.Unlock()
	if inst.err == nil {
		return nil
	}
	return inst.err
}

// function returns the exported function name, or nil. Lookups are cached:
// wazero builds a new call engine (with its own stack) for each one.
func (inst *Instance) function(name abi.Callback) api.Function {
	f, ok := inst.funcs[name]
	if !ok {
		f = inst.mod.ExportedFunction(string(name))
		if inst.funcs == nil {
			inst.funcs = make(map[abi.Callback]api.Function, 8)
		}
		inst.funcs[name] = f
	}
	return f
}

// callOr calls a callback the module may not export; absent, it "returns"
// def. The caller holds inst.mu.
func (inst *Instance) callOr(scope *callScope, cb abi.Callback, def uint64, params ...uint64) (uint64, error) {
	if inst.err != nil {
		return 0, inst.err
	}
	if !inst.plugin.exported[cb] {
		return def, nil
	}
	return inst.call(scope, cb, params...)
}

// call runs one exported function of the guest in scope, under the plugin's
// time budget. The caller holds inst.mu.
func (inst *Instance) call(scope *callScope, name abi.Callback, params ...uint64) (uint64, error) {
	if index, ok := inst.plugin.dispatchIndex(name); ok {
		var args [5]uint64
		copy(args[:], params)
		return inst.dispatch(scope, name, index, args)
	}
	copy(inst.stack[:], params)
	return inst.run(scope, name, false)
}

// dispatch runs op through the prepared module's dispatcher, with args as
// its a..e (see wasmbin.DispatchExport). A failure is traced to the
// callback that was running, name if the dispatcher cannot tell.
func (inst *Instance) dispatch(scope *callScope, name abi.Callback, op uint32, args [5]uint64) (uint64, error) {
	// A call that fails before the dispatcher records a step (canceled on
	// entry, say) must not be traced to the previous call's callback.
	inst.setStep(noStep)
	inst.stack[0] = uint64(op)
	copy(inst.stack[1:], args[:])
	return inst.run(scope, name, true)
}

// run calls the guest function the stack is ready for: the dispatcher, or
// the export name. The caller holds inst.mu.
func (inst *Instance) run(scope *callScope, name abi.Callback, dispatched bool) (uint64, error) {
	if inst.err != nil {
		return 0, inst.err
	}
	inst.lastCall = name
	if inst.mod == nil || inst.mod.IsClosed() {
		// wazero would run the guest to completion and only then report
		// the closed module: its host calls would still act on the request.
		return 0, inst.fail(name, ErrCanceled, errInstanceClosed)
	}
	var fn api.Function
	switch {
	case !dispatched:
		fn = inst.function(name)
	case inst.dispatcher != nil:
		fn = inst.dispatcher
	default:
		fn = inst.mod.ExportedFunction(wasmbin.DispatchExport)
		inst.dispatcher = fn
	}
	scope.arm(inst.budget)
	began := time.Now()
	err := fn.CallWithStack(scope.ctx, inst.stack[:])
	scope.guestTime.Add(int64(time.Since(began)))
	scope.disarm()
	if err == nil && scope.ctx.Err() != nil {
		// The call returned after its budget or its request ended (a host
		// function such as poll_oneoff returned at the deadline). Whether
		// wazero closed the module in the meantime is a race; either way
		// the call failed, and is reported as such.
		err = scope.ctx.Err()
	}
	if err != nil && name == abi.ExportStart && exitedZero(err) {
		// A command module that exits 0 has finished initializing.
		return 0, nil
	}
	if err != nil {
		if dispatched {
			name = inst.stepCallback(name)
		}
		return 0, inst.fail(name, inst.kindOf(scope, err), err)
	}
	return inst.stack[0], nil
}

// exitedZero reports whether err is the guest calling proc_exit(0).
func exitedZero(err error) bool {
	var exit *abi.ExitError
	return errors.As(err, &exit) && exit.Code == 0
}

// stepCallback names the callback the dispatcher was running when a call
// failed, from its step global.
func (inst *Instance) stepCallback(name abi.Callback) abi.Callback {
	if cb, ok := inst.plugin.prepared.DispatchedCallback(inst.step()); ok {
		return abi.Callback(cb)
	}
	return name
}

// noStep is a step no callback has.
const noStep = ^uint32(0)

// step reads the dispatcher's step global: the index of the callback it
// runs, or ran last, or noStep.
func (inst *Instance) step() uint32 {
	if !inst.lookUpStep() {
		return noStep
	}
	return uint32(inst.stepGlobal.Get())
}

func (inst *Instance) setStep(step uint32) {
	if inst.lookUpStep() {
		inst.stepGlobal.Set(uint64(step))
	}
}

func (inst *Instance) lookUpStep() bool {
	if inst.stepGlobal == nil && inst.mod != nil {
		inst.stepGlobal, _ = inst.mod.ExportedGlobal(wasmbin.StepExport).(api.MutableGlobal)
	}
	return inst.stepGlobal != nil
}

// callScope is where a series of guest calls runs: the root context's while
// an instance starts, or one HTTP context's. Its context carries the Host
// of the calls and ends when a call runs out of budget or the scope's parent
// (the request) ends; one timer, re-armed for each call, enforces the
// budget, instead of a timer context per call.
type callScope struct {
	parent  context.Context
	ctx     context.Context
	cancel  context.CancelFunc
	timer   *time.Timer
	expired atomic.Bool // the budget of a call ran out
	// guestTime sums the scope's calls into the guest (nanoseconds), for
	// traces and metrics; read while a request body's goroutine may call.
	guestTime atomic.Int64

	mu    sync.Mutex
	armed bool // a call is running under the timer
}

func newCallScope(parent context.Context, guest *abi.Guest, host abi.Host) *callScope {
	ctx, cancel := context.WithCancel(parent)
	s := &callScope{parent: parent, ctx: abi.WithCall(ctx, guest, host), cancel: cancel}
	s.timer = time.AfterFunc(time.Hour, s.expire)
	s.timer.Stop()
	return s
}

// arm starts a call's budget of d.
func (s *callScope) arm(d time.Duration) {
	s.mu.Lock()
	s.armed = true
	s.mu.Unlock()
	s.timer.Reset(d)
}

// disarm ends the running call's budget. A timer that fired as the call
// returned may still run expire; it finds the scope disarmed and leaves
// the next call alone.
func (s *callScope) disarm() {
	s.timer.Stop()
	s.mu.Lock()
	s.armed = false
	s.mu.Unlock()
}

// expire ends the scope when the running call is out of budget.
func (s *callScope) expire() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.armed {
		s.expired.Store(true)
		s.cancel()
	}
}

// end releases the scope; its calls are over.
func (s *callScope) end() {
	s.timer.Stop()
	s.cancel()
}

// fail makes the instance unusable with a GuestError and returns it.
func (inst *Instance) fail(name abi.Callback, kind, err error) *GuestError {
	inst.err = &GuestError{Plugin: inst.plugin.cfg.Name, Callback: string(name), Kind: kind, Err: err}
	inst.failed.Store(true)
	return inst.err
}

// kindOf classifies a failed guest call. What the guest raised itself
// (proc_exit) or what a host function raised is checked first, so that no
// exit code can pass for a host timeout; then the request's context and the
// call's budget; anything else is a trap.
func (inst *Instance) kindOf(scope *callScope, err error) error {
	var (
		hostPanic *abi.HostPanic
		exit      *abi.ExitError
		fault     *abi.GuestFault
	)
	switch {
	case errors.As(err, &hostPanic):
		return ErrHostPanic
	case errors.As(err, &exit):
		return ErrExit
	case scope.parent.Err() != nil:
		return ErrCanceled
	case scope.expired.Load():
		return ErrTimeout
	case inst.mod != nil && inst.mod.IsClosed():
		return ErrCanceled // the host closed the instance (or its plugin) during the call
	case errors.As(err, &fault):
		return ErrABIViolation
	case inst.memory != nil && inst.memory.Refused(), inst.memoryAtLimit():
		return ErrMemoryLimit
	}
	return ErrTrap
}

// memoryAtLimit reports whether the guest's memory cannot grow by another
// page: a trap then is almost always an allocation that failed.
func (inst *Instance) memoryAtLimit() bool {
	if inst.guest == nil {
		return false
	}
	mem := inst.guest.Memory()
	return mem != nil && uint64(mem.Size())+wasmPageSize > inst.plugin.cfg.Limits.MemoryLimit
}
