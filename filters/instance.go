package filters

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/tetratelabs/wazero/api"

	"github.com/sluice-edge/sluice/abi"
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
	plugin *Plugin
	mod    api.Module
	guest  *abi.Guest
	root   *rootContext
	funcs  map[abi.Callback]api.Function // looked up on first use

	mu            sync.Mutex // serializes guest calls and guards what follows
	stack         [8]uint64
	budget        time.Duration // of the next guest call
	lastCall      abi.Callback
	err           *GuestError
	nextContextID uint32
}

// NewInstance creates a fresh instance and runs the plugin's start-up
// lifecycle in it. log receives what the filter logs while starting. ctx
// bounds the whole start-up; each step also has the plugin's time budget.
func (p *Plugin) NewInstance(ctx context.Context, log LogSink) (*Instance, error) {
	inst := &Instance{
		plugin:        p,
		guest:         abi.NewGuest(),
		funcs:         make(map[abi.Callback]api.Function, 8),
		nextContextID: rootContextID + 1,
	}
	inst.root = &rootContext{inst: inst, log: log}

	// Instantiation runs the module's start section, if any, so it has a
	// budget too.
	inst.budget = p.cfg.Limits.Timeout * StartTimeoutFactor
	callCtx, cancel := context.WithTimeout(abi.WithCall(ctx, inst.guest, inst.root), inst.budget)
	mod, err := p.runtime.InstantiateModule(callCtx, p.compiled, p.modCfg)
	if err == nil && callCtx.Err() != nil {
		// The start section outlived its budget (a host function such as
		// poll_oneoff returned at the deadline): wazero may have closed the
		// module already, so it must not be used.
		_ = mod.Close(ctx)
		err = callCtx.Err()
	}
	cancel()
	if err != nil {
		kind := inst.kindOf(ctx, callCtx, err)
		if kind == ErrTrap { // not necessarily the guest's doing: a memory over the limit, say
			kind = ErrInstantiate
		}
		return nil, &GuestError{Plugin: p.cfg.Name, Callback: "instantiate", Kind: kind, Err: err}
	}
	inst.mod = mod
	if err := inst.guest.Bind(mod); err != nil {
		inst.Close(ctx)
		return nil, &GuestError{Plugin: p.cfg.Name, Callback: "instantiate", Kind: ErrABIViolation, Err: err}
	}
	if err := inst.start(ctx); err != nil {
		inst.Close(ctx)
		return nil, err
	}
	return inst, nil
}

// start runs the module's initialization and the root context's lifecycle
// up to proxy_on_configure.
func (inst *Instance) start(ctx context.Context) error {
	inst.mu.Lock()
	defer inst.mu.Unlock()
	cfg := inst.plugin.cfg
	root := inst.root

	// A reactor exports _initialize (and maybe main, called after it); a
	// command exports _start, which may end with proc_exit(0).
	if inst.function(abi.ExportInit) != nil {
		if _, err := inst.call(ctx, root, abi.ExportInit); err != nil {
			return err
		}
		if inst.function(abi.ExportMain) != nil {
			if _, err := inst.call(ctx, root, abi.ExportMain, 0, 0); err != nil {
				return err
			}
		}
	} else if inst.function(abi.ExportStart) != nil {
		if _, err := inst.call(ctx, root, abi.ExportStart); err != nil {
			var exit *abi.ExitError
			if !errors.As(err, &exit) || exit.Code != 0 {
				return err
			}
			inst.err = nil // a command that exits 0 has finished initializing
		}
	}

	root.phase = rootVMStart
	ok, err := inst.callOr(ctx, root, abi.OnVMStart, 1, rootContextID, uint64(len(cfg.VMConfig)))
	if err != nil {
		return err
	}
	if ok == 0 {
		return inst.fail(abi.OnVMStart, ErrRejected, errors.New("proxy_on_vm_start returned false"))
	}
	root.phase = rootCreate
	if _, err := inst.callOr(ctx, root, abi.OnContextCreate, 0, rootContextID, 0); err != nil {
		return err
	}
	root.phase = rootConfigure
	ok, err = inst.callOr(ctx, root, abi.OnConfigure, 1, rootContextID, uint64(len(cfg.PluginConfig)))
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

// Close discards the instance. It is safe to call more than once and while
// another goroutine is inside a call (that call fails).
func (inst *Instance) Close(ctx context.Context) {
	if inst.mod != nil {
		_ = inst.mod.Close(ctx)
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
		inst.funcs[name] = f
	}
	return f
}

// callOr calls a callback the module may not export; absent, it "returns"
// def. The caller holds inst.mu.
func (inst *Instance) callOr(ctx context.Context, host abi.Host, cb abi.Callback, def uint64, params ...uint64) (uint64, error) {
	if inst.err != nil {
		return 0, inst.err
	}
	if inst.function(cb) == nil {
		return def, nil
	}
	return inst.call(ctx, host, cb, params...)
}

// call runs one exported function of the guest under the plugin's time
// budget, with host as the Host of its host calls. The caller holds inst.mu.
func (inst *Instance) call(ctx context.Context, host abi.Host, name abi.Callback, params ...uint64) (uint64, error) {
	if inst.err != nil {
		return 0, inst.err
	}
	inst.lastCall = name
	if inst.mod.IsClosed() {
		// wazero would run the guest to completion and only then report
		// the closed module: its host calls would still act on the request.
		return 0, inst.fail(name, ErrCanceled, errInstanceClosed)
	}
	fn := inst.function(name)
	copy(inst.stack[:], params)
	callCtx, cancel := context.WithTimeout(abi.WithCall(ctx, inst.guest, host), inst.budget)
	err := fn.CallWithStack(callCtx, inst.stack[:])
	if err == nil && callCtx.Err() != nil {
		// The call returned after its budget or its request ended (a host
		// function such as poll_oneoff returned at the deadline). Whether
		// wazero closed the module in the meantime is a race; either way
		// the call failed, and is reported as such.
		err = callCtx.Err()
	}
	cancel()
	if err != nil {
		return 0, inst.fail(name, inst.kindOf(ctx, callCtx, err), err)
	}
	return inst.stack[0], nil
}

// fail makes the instance unusable with a GuestError and returns it.
func (inst *Instance) fail(name abi.Callback, kind, err error) *GuestError {
	inst.err = &GuestError{Plugin: inst.plugin.cfg.Name, Callback: string(name), Kind: kind, Err: err}
	return inst.err
}

// kindOf classifies a failed guest call. What the guest raised itself
// (proc_exit) or what a host function raised is checked first, so that no
// exit code can pass for a host timeout; then the request's and the call's
// contexts; anything else is a trap.
func (inst *Instance) kindOf(ctx, callCtx context.Context, err error) error {
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
	case ctx.Err() != nil:
		return ErrCanceled
	case errors.Is(callCtx.Err(), context.DeadlineExceeded):
		return ErrTimeout
	case inst.mod != nil && inst.mod.IsClosed():
		return ErrCanceled // the host closed the instance (or its plugin) during the call
	case errors.As(err, &fault):
		return ErrABIViolation
	case inst.memoryAtLimit():
		return ErrMemoryLimit
	}
	return ErrTrap
}

// memoryAtLimit reports whether the guest's memory cannot grow by another
// page: a trap then is almost always an allocation that failed.
func (inst *Instance) memoryAtLimit() bool {
	mem := inst.guest.Memory()
	return mem != nil && uint64(mem.Size())+wasmPageSize > inst.plugin.cfg.Limits.MemoryLimit
}
