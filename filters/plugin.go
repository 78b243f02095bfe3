// Package filters is Sluice's Proxy-Wasm runtime: it compiles each configured
// filter (a plugin) once, validates it, and gives every request a fresh,
// configured instance of it, driving the Proxy-Wasm lifecycle in order and
// enforcing the plugin's limits. It knows nothing of Caddy; the embedder
// supplies each request's HTTP side through the Exchange interface.
package filters

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tetratelabs/wazero"

	"github.com/sluice-edge/sluice/abi"
	"github.com/sluice-edge/sluice/filters/internal/cowmem"
	"github.com/sluice-edge/sluice/filters/internal/outbound"
	"github.com/sluice-edge/sluice/filters/internal/wasmbin"
)

// Defaults for the limits a configuration leaves out.
const (
	DefaultTimeout     = 500 * time.Millisecond
	DefaultMemoryLimit = 64 << 20
	DefaultMaxBodySize = 10 << 20
)

// StartTimeoutFactor scales Limits.Timeout into the budget of each start-up
// step of an instance.
const StartTimeoutFactor = 10

// Bounds on the modules Load accepts: each would otherwise cost every
// instance (or the compiler) more than any filter needs.
const (
	MaxModuleSize = 64 << 20
	maxFunctions  = 1 << 17
	maxGlobals    = 1 << 16
	maxTableSize  = 1 << 17
	wasmPageSize  = 64 << 10

	// wazero compiles deeply nested code in time superlinear in the depth
	// (4,096 levels: 0.1-0.5 s; 100,000: minutes), and compilation cannot
	// be stopped. Stock Go nests a block per call site of a function: the
	// SDK guest reaches 549, clang's output a few dozen.
	maxNesting = 4096
	// Compiling a function takes about 50 bytes of memory per byte of body.
	maxFunctionSize = 2 << 20
	// wazero allocates for every declared local (about 25 bytes each)
	// before it validates anything, and a five-byte declaration can claim
	// four billion. 50,000 per function is the browsers' limit.
	maxFunctionLocals = 50_000
	maxLocals         = 1 << 22
	// wazero's decoder allocates a structure for each entry of a section
	// (function types cost it 500 bytes each, imports 200, the others less)
	// as soon as it reads their count; Summarize checks the counts fit in
	// the module. The stock-Go guest has 36,000 entries and 16 types.
	maxEntries = 1 << 20
	maxTypes   = 1 << 16
)

// Limits bound what one instance of a plugin may use.
type Limits struct {
	// Timeout bounds each callback into the guest. A long stream is fine, a
	// long callback is not. Starting an instance (instantiation, the start
	// function, _initialize, proxy_on_vm_start, proxy_on_configure) gets
	// StartTimeoutFactor times as much per step: it is mostly host work
	// that slows down under load, and a start that cannot finish is
	// rejected when the filter loads.
	Timeout time.Duration
	// MemoryLimit caps the guest's linear memory, in bytes (whole 64 KiB
	// pages; the rest is rounded down).
	MemoryLimit uint64
	// MaxBodySize caps the body bytes the host buffers for the filter, per
	// direction.
	MaxBodySize int64
}

func (l Limits) withDefaults() Limits {
	if l.Timeout <= 0 {
		l.Timeout = DefaultTimeout
	}
	if l.MemoryLimit == 0 {
		l.MemoryLimit = DefaultMemoryLimit
	}
	if l.MaxBodySize <= 0 {
		l.MaxBodySize = DefaultMaxBodySize
	}
	return l
}

// Config is everything that makes a plugin: the module and its configuration.
type Config struct {
	// Name identifies the plugin in logs, metrics and errors.
	Name string
	// Module is the WebAssembly binary.
	Module []byte
	// VMConfig is handed to proxy_on_vm_start, PluginConfig to
	// proxy_on_configure.
	VMConfig, PluginConfig []byte
	// RootID and VMID are the plugin_root_id and plugin_vm_id properties.
	RootID, VMID string
	Limits       Limits
	// CompilationCache, if set, shares compiled code between plugins and
	// across reloads.
	CompilationCache wazero.CompilationCache
	// LoadLog receives what the filter logs while Load starts it; may be nil.
	LoadLog LogSink
	// DisableSnapshot makes every instance start from scratch (instantiate,
	// _initialize, proxy_on_vm_start, proxy_on_configure) instead of from
	// a snapshot taken after configuration. Slower; for filters whose
	// start-up must differ per request, and for comparisons.
	DisableSnapshot bool
	// Prewarm is how many instances, restored from the snapshot, the
	// plugin keeps ready for the next requests; 0 keeps none. Restoring
	// runs no guest code, so a ready instance is as fresh as one made on
	// demand. With recycling on, they are restored at load and kept as
	// spare isolates (see recycle.go); without, a goroutine keeps them
	// ready (see prewarm.go).
	Prewarm int
	// DisableRecycling makes every request's instance restored from the
	// snapshot a new wazero module, discarded when the request ends,
	// instead of a module reset to the snapshot after an earlier request
	// (see recycle.go). Both start from the same state; recycling is
	// faster. For comparisons, and for operators who want each request's
	// module new.
	DisableRecycling bool
	// MemoryBudget caps the memory of this plugin's instances together
	// with every other plugin sharing it; nil means DefaultMemoryBudget.
	MemoryBudget *MemoryBudget

	// Upstreams are where the filter's outbound calls (proxy_http_call)
	// may go, by the name the filter gives: "auth" ->
	// "http://127.0.0.1:9000". A call to any other name is refused; no
	// other address is reachable.
	Upstreams map[string]string
	// HTTPCalls bound the outbound calls.
	HTTPCalls HTTPCallLimits
	// SharedState holds the filter's shared data, queues and metrics,
	// under its namespace (VMID, or Name when VMID is empty); nil means
	// DefaultSharedState.
	SharedState *SharedState
	// BackgroundLog receives what the background instance logs (its
	// timer, queues and calls); may be nil.
	BackgroundLog LogSink
	// Events receives what happens outside a request's calls; may be nil.
	Events Events
	// Isolation is IsolationRequest (the default: a fresh instance per
	// request) or IsolationShared.
	Isolation string
	// SharedInstances is how many instances IsolationShared keeps; 0
	// means one per core.
	SharedInstances int
}

// Events receives what happens to a plugin outside the calls a request
// makes, for the embedder to log and count.
type Events interface {
	// BackgroundFailed: the background instance failed, and will be
	// replaced.
	BackgroundFailed(err error)
	// CallFailed: an outbound call failed; the filter gets an empty answer.
	CallFailed(err error)
}

// Plugin is a compiled, validated filter with its configuration. It is safe
// for concurrent use: each request gets its own Instance.
type Plugin struct {
	cfg      Config
	digest   string
	version  abi.Version
	exported map[abi.Callback]bool
	runtime  wazero.Runtime
	compiled wazero.CompiledModule
	modCfg   wazero.ModuleConfig

	warm        *warmInstances    // nil: instances are made on demand
	prepared    *wasmbin.Prepared // nil: the module runs as it is
	createAt    uint32            // the dispatcher's index of proxy_on_context_create
	createFirst bool              // see createsFirst
	freshMemory *cowmem.Pool      // memories starting as the data image; nil if not prepared
	snapshot    *snapshot         // nil: every instance starts fresh
	spares      *spareIsolates    // recycled isolates; nil: none are recycled
	startMode   string            // how instances start, and why, for operators

	owner           string           // of the plugin's metrics (metricOwner)
	calls           *outbound.Client // nil: no upstream declared
	tickPeriod      atomic.Int64     // the timer the filter set while loading
	registeredQueue atomic.Bool      // the filter registered a shared queue

	bgMu   sync.Mutex
	bg     *background // started on demand
	closed bool
	loaded bool     // Load is done: the background instance may start
	early  []uint32 // queues that got items while the plugin loaded

	shared *sharedPool // IsolationShared's instances; nil: a fresh instance per request
}

// Load compiles and validates a filter, then starts one instance of it to
// check that it accepts its configuration. Every error names the problem:
// a malformed binary, a missing export, an import the host lacks, a
// configuration the filter rejects.
func Load(ctx context.Context, cfg Config) (*Plugin, error) {
	switch cfg.Isolation {
	case "", IsolationRequest, IsolationShared:
	default:
		return nil, fmt.Errorf("isolation %q: want %s or %s", cfg.Isolation, IsolationRequest, IsolationShared)
	}
	cfg.Limits = cfg.Limits.withDefaults()
	cfg.HTTPCalls = cfg.HTTPCalls.withDefaults()
	if len(cfg.Module) > MaxModuleSize {
		return nil, fmt.Errorf("module is %d bytes, limit %d", len(cfg.Module), MaxModuleSize)
	}
	shape, err := checkShape(cfg.Module, cfg.Limits)
	if err != nil {
		return nil, err
	}

	rc := wazero.NewRuntimeConfig().
		WithCloseOnContextDone(true).
		WithMemoryLimitPages(uint32(min(cfg.Limits.MemoryLimit/wasmPageSize, 65536)))
	if cfg.CompilationCache != nil {
		rc = rc.WithCompilationCache(cfg.CompilationCache)
	}
	calls, err := newCallClient(cfg)
	if err != nil {
		return nil, err
	}
	p := &Plugin{cfg: cfg, runtime: wazero.NewRuntimeWithConfig(ctx, rc), calls: calls}
	p.owner = MetricOwner(p.namespace(), cfg.Name)
	sum := sha256.Sum256(cfg.Module)
	p.digest = "sha256:" + hex.EncodeToString(sum[:])
	module := cfg.Module
	switch prepared, err := prepare(cfg.Module); {
	case err == nil:
		p.prepared, module = prepared, prepared.Module
		// Asked on every request: looked up once.
		p.createAt, p.createFirst = prepared.Dispatch[string(abi.OnContextCreate)]
		p.createFirst = p.createFirst && prepared.CanCreateFirst()
		if p.freshMemory, err = cowmem.NewPool(prepared.Memory, p.memoryReserve(), idleMemoriesPerPool); err != nil {
			_ = p.Close(ctx)
			return nil, fmt.Errorf("mapping the initial memory: %w", err)
		}
	case errors.Is(err, wasmbin.ErrNotPreparable):
		p.startMode = "fresh, unprepared: " + err.Error()
	default:
		_ = p.Close(ctx)
		return nil, fmt.Errorf("not a WebAssembly module: %w", err)
	}
	if err := p.compile(ctx, module); err != nil {
		_ = p.Close(ctx)
		return nil, err
	}
	// Compiled and mapped: the plugin keeps neither binary nor image.
	p.cfg.Module = nil
	if p.prepared != nil {
		p.prepared.Module, p.prepared.Memory = nil, nil
	}

	// Start one instance now, so that a filter that rejects its
	// configuration, traps or loops while starting fails the load, with
	// what it logged, rather than the first request.
	log := &lastErrorLog{next: cfg.LoadLog}
	inst, err := p.newInstanceFor(ctx, log, roleLoad)
	if err != nil {
		_ = p.Close(ctx)
		if log.last != "" {
			return nil, fmt.Errorf("%w (filter logged: %q)", err, log.last)
		}
		return nil, err
	}
	defer inst.Close(ctx)
	if inst.root.tickSet {
		p.tickPeriod.Store(int64(inst.root.tick))
	}

	// That instance, configured and unused, is the snapshot every request's
	// instance will start from.
	switch refusal := ""; {
	case p.prepared == nil:
	case cfg.DisableSnapshot:
		p.startMode = "fresh: snapshots disabled"
	default:
		if refusal = snapshotRefusal(shape, p.prepared); refusal != "" {
			p.startMode = "fresh: " + refusal
			break
		}
		if p.snapshot, err = p.takeSnapshot(inst); err != nil {
			_ = p.Close(ctx)
			return nil, fmt.Errorf("taking the snapshot: %w", err)
		}
		p.startMode = "snapshot"
		if cfg.DisableRecycling {
			p.startMode += ", not recycled: recycling disabled"
		} else {
			p.spares = &spareIsolates{}
		}
		// Every instance starts from the snapshot now: the data image's
		// pool (its memfd) serves nobody.
		p.freshMemory.Close()
		p.freshMemory = nil
		switch {
		case cfg.Prewarm == 0 || cfg.Isolation == IsolationShared:
		case p.spares != nil:
			p.seedSpares(ctx, cfg.Prewarm)
		default:
			p.startWarming(cfg.Prewarm)
		}
	}
	if cfg.Isolation == IsolationShared {
		p.shared = newSharedPool(p, cfg.SharedInstances)
	}
	p.finishLoading()
	return p, nil
}

// finishLoading lets the background instance start, now that the plugin is
// whole, and starts it if the filter set a timer or registered a queue
// while loading, with the queues that got items meanwhile.
func (p *Plugin) finishLoading() {
	p.bgMu.Lock()
	p.loaded = true
	early := p.early
	p.early = nil
	p.bgMu.Unlock()
	if p.tickPeriod.Load() == 0 && !p.registeredQueue.Load() {
		return
	}
	if bg := p.startBackground(); bg != nil {
		for _, id := range early {
			bg.queueReady(id)
		}
	}
}

// isClosed reports whether Close has begun.
func (p *Plugin) isClosed() bool {
	p.bgMu.Lock()
	defer p.bgMu.Unlock()
	return p.closed
}

// prepare is wasmbin.Prepare, with a panic (a bug in Sluice, not the
// module's fault) turned into an error: a config load must fail, not the
// process.
func prepare(module []byte) (p *wasmbin.Prepared, err error) {
	defer func() {
		if v := recover(); v != nil {
			p, err = nil, fmt.Errorf("%w: preparing the module panicked (a bug in Sluice): %v", wasmbin.ErrNotPreparable, v)
		}
	}()
	return prepareModule(module, dispatchSpec)
}

// prepareModule is wasmbin.Prepare; tests replace it.
var prepareModule = wasmbin.Prepare

// checkShape refuses modules whose declared sizes would make every instance
// expensive, before the compiler spends time on them, and returns the
// module's summary.
func checkShape(module []byte, limits Limits) (*wasmbin.Summary, error) {
	s, err := wasmbin.Summarize(module)
	if err != nil {
		return nil, fmt.Errorf("not a WebAssembly module: %w", err)
	}
	switch {
	case s.ImportsMem:
		return nil, errors.New("module imports its memory; a filter must define and export its own")
	case s.ImportsTable:
		return nil, errors.New("module imports a table; a filter must define its own")
	case s.Functions > maxFunctions:
		return nil, fmt.Errorf("module defines %d functions, limit %d", s.Functions, maxFunctions)
	case s.Globals > maxGlobals:
		return nil, fmt.Errorf("module defines %d globals, limit %d", s.Globals, maxGlobals)
	case s.TableMin > maxTableSize:
		return nil, fmt.Errorf("module tables need %d elements, limit %d", s.TableMin, maxTableSize)
	case uint64(s.MemoryMin)*wasmPageSize > limits.MemoryLimit:
		return nil, fmt.Errorf("module memory starts at %d pages (%d bytes), more than memory_limit %d",
			s.MemoryMin, uint64(s.MemoryMin)*wasmPageSize, limits.MemoryLimit)
	case s.DataBytes > limits.MemoryLimit:
		return nil, fmt.Errorf("module data segments are %d bytes, more than memory_limit %d", s.DataBytes, limits.MemoryLimit)
	case s.MaxNesting > maxNesting:
		return nil, fmt.Errorf("module function %d nests blocks %d deep, limit %d", s.MaxNestingFunc, s.MaxNesting, maxNesting)
	case s.MaxBodySize > maxFunctionSize:
		return nil, fmt.Errorf("module function %d is %d bytes, limit %d", s.MaxBodyFunc, s.MaxBodySize, maxFunctionSize)
	case s.MaxLocals > maxFunctionLocals:
		return nil, fmt.Errorf("module function %d declares %d locals, limit %d", s.MaxLocalsFunc, s.MaxLocals, maxFunctionLocals)
	case s.Locals > maxLocals:
		return nil, fmt.Errorf("module functions declare %d locals in all, limit %d", s.Locals, maxLocals)
	case s.Types > maxTypes:
		return nil, fmt.Errorf("module declares %d function types, limit %d", s.Types, maxTypes)
	case s.Entries > maxEntries:
		return nil, fmt.Errorf("module sections have %d entries in all, limit %d", s.Entries, maxEntries)
	}
	return s, nil
}

// compile compiles the module and checks its imports and exports against
// the ABI.
func (p *Plugin) compile(ctx context.Context, module []byte) error {
	if err := abi.InstantiateHostModules(ctx, p.runtime); err != nil {
		return fmt.Errorf("registering host functions: %w", err)
	}
	compiled, err := p.runtime.CompileModule(ctx, module)
	if err != nil {
		return fmt.Errorf("compiling module: %w", err)
	}
	p.compiled = compiled
	if err := checkImports(compiled); err != nil {
		return err
	}
	if p.version, p.exported, err = checkExports(compiled); err != nil {
		return err
	}
	p.modCfg = wazero.NewModuleConfig().
		WithName("").         // anonymous: many instances of one module coexist
		WithStartFunctions(). // the instance runs _initialize or _start under a time budget
		// Sluice's own WASI functions serve guests; wazero's system context
		// only needs sources that cost nothing to set up. Its default
		// randomness is a seeded math/rand, a quarter of a small module's
		// instantiation.
		WithRandSource(rand.Reader).
		WithSysWalltime().WithSysNanotime()
	return nil
}

// dispatchSpec says what instances call through the prepared module's
// dispatcher: every callback, proxy_on_context_create run ahead of a
// request's first callback, and proxy_on_done, proxy_on_log and
// proxy_on_delete in one call.
var dispatchSpec = func() wasmbin.DispatchSpec {
	spec := wasmbin.DispatchSpec{
		Create:   string(abi.OnContextCreate),
		Sequence: []string{string(abi.OnDone), string(abi.OnLog), string(abi.OnDelete)},
	}
	for _, cb := range abi.Callbacks {
		spec.Callbacks = append(spec.Callbacks, string(cb))
	}
	return spec
}()

// checkImports refuses imports the host does not provide, naming each.
func checkImports(m wazero.CompiledModule) error {
	var errs []error
	for _, f := range m.ImportedFunctions() {
		module, name, _ := f.Import()
		want, ok := abi.LookupImport(module, name)
		switch {
		case !ok:
			errs = append(errs, fmt.Errorf("imports %s.%s, which the host does not provide", module, name))
		case !want.Equal(f.ParamTypes(), f.ResultTypes()):
			errs = append(errs, fmt.Errorf("imports %s.%s with type %s, the host's has type %s",
				module, name, abi.FormatSignature(f.ParamTypes(), f.ResultTypes()), want))
		}
	}
	for _, mem := range m.ImportedMemories() {
		module, name, _ := mem.Import()
		errs = append(errs, fmt.Errorf("imports memory %s.%s; a filter must define its own", module, name))
	}
	return errors.Join(errs...)
}

// checkExports finds the one ABI version the module advertises and checks
// the memory, the allocator and the type of every callback it exports.
func checkExports(m wazero.CompiledModule) (abi.Version, map[abi.Callback]bool, error) {
	funcs := m.ExportedFunctions()
	var versions []string
	var version abi.Version
	for name, v := range abi.VersionExports {
		if _, ok := funcs[name]; ok {
			versions = append(versions, name)
			version = v
		}
	}
	slices.Sort(versions) // map order would make the error differ from load to load
	switch len(versions) {
	case 0:
		return "", nil, errors.New("module exports no Proxy-Wasm ABI version (proxy_abi_version_0_2_1, _0_2_0 or _0_1_0)")
	case 1:
	default:
		return "", nil, fmt.Errorf("module exports several Proxy-Wasm ABI versions: %v", versions)
	}
	if _, ok := m.ExportedMemories()[abi.ExportMemory]; !ok {
		return "", nil, abi.ErrNoMemory
	}
	alloc, ok := funcs[abi.ExportAllocate]
	if !ok {
		if alloc, ok = funcs[abi.ExportMalloc]; !ok {
			return "", nil, abi.ErrNoAllocator
		}
	}
	if !abi.AllocatorSignature.Equal(alloc.ParamTypes(), alloc.ResultTypes()) {
		return "", nil, fmt.Errorf("export %s has type %s, want %s", alloc.ExportNames()[0],
			abi.FormatSignature(alloc.ParamTypes(), alloc.ResultTypes()), abi.AllocatorSignature)
	}

	exported := map[abi.Callback]bool{}
	for _, cb := range abi.Callbacks {
		def, ok := funcs[string(cb)]
		if !ok {
			continue
		}
		want, _ := abi.CallbackSignature(version, cb)
		if !want.Equal(def.ParamTypes(), def.ResultTypes()) {
			return "", nil, fmt.Errorf("export %s has type %s, ABI %s wants %s",
				cb, abi.FormatSignature(def.ParamTypes(), def.ResultTypes()), version, want)
		}
		exported[cb] = true
	}
	for _, name := range []string{abi.ExportInit, abi.ExportStart} {
		if def, ok := funcs[name]; ok && (len(def.ParamTypes()) != 0 || len(def.ResultTypes()) != 0) {
			return "", nil, fmt.Errorf("export %s has type %s, want () -> ()", name,
				abi.FormatSignature(def.ParamTypes(), def.ResultTypes()))
		}
	}
	return version, exported, nil
}

// Name returns the plugin's name.
func (p *Plugin) Name() string { return p.cfg.Name }

// Digest returns the SHA-256 of the module, as "sha256:<hex>".
func (p *Plugin) Digest() string { return p.digest }

// ABIVersion returns the Proxy-Wasm ABI version the module advertises.
func (p *Plugin) ABIVersion() abi.Version { return p.version }

// Limits returns the plugin's limits, defaults filled in.
func (p *Plugin) Limits() Limits { return p.cfg.Limits }

// Exports reports whether the module exports callback cb.
func (p *Plugin) Exports(cb abi.Callback) bool { return p.exported[cb] }

// Close releases the compiled module and the runtime. Instances still running
// fail their next call. It is safe to call more than once.
func (p *Plugin) Close(ctx context.Context) error {
	p.stopBackground()
	if p.shared != nil {
		p.shared.close()
	}
	p.sharedState().store.RemoveListener(p)
	if p.calls != nil {
		p.calls.Close()
	}
	if p.warm != nil {
		p.warm.close()
	}
	if p.spares != nil {
		p.spares.close(ctx)
	}
	err := p.runtime.Close(ctx)
	if p.freshMemory != nil {
		p.freshMemory.Close()
	}
	if p.snapshot != nil {
		p.snapshot.memory.Close()
	}
	return err
}

// budget is the memory budget the plugin's instances are charged to.
func (p *Plugin) budget() *MemoryBudget {
	if p.cfg.MemoryBudget != nil {
		return p.cfg.MemoryBudget
	}
	return DefaultMemoryBudget
}

// initialMemory is the memory an instance has when it starts: the
// snapshot's, or the module's declared minimum.
func (p *Plugin) initialMemory() uint64 {
	switch {
	case p.snapshot != nil:
		return uint64(p.snapshot.pages) * wasmPageSize
	case p.prepared != nil:
		return uint64(p.prepared.MinPages) * wasmPageSize
	}
	if mem, ok := p.compiled.ExportedMemories()[abi.ExportMemory]; ok {
		return uint64(mem.Min()) * wasmPageSize
	}
	return 0
}

// dispatchIndex returns the index of callback name in the prepared module's
// dispatcher, if it has one for it.
func (p *Plugin) dispatchIndex(name abi.Callback) (uint32, bool) {
	if p.prepared == nil {
		return 0, false
	}
	index, ok := p.prepared.Dispatch[string(name)]
	return index, ok
}

// createsFirst reports whether an HTTP context's proxy_on_context_create
// can run in the same call as its first callback.
func (p *Plugin) createsFirst() bool { return p.createFirst }

// createIndex is the dispatcher's index of proxy_on_context_create.
func (p *Plugin) createIndex() uint32 { return p.createAt }

// sequenceOp returns the dispatcher op that runs proxy_on_done,
// proxy_on_log and proxy_on_delete, if the module has one.
func (p *Plugin) sequenceOp() (uint32, bool) {
	if p.prepared == nil {
		return 0, false
	}
	return p.prepared.SequenceOp()
}

// StartMode says how the plugin's instances start ("snapshot", or "fresh"
// and why), for operators.
func (p *Plugin) StartMode() string { return p.startMode }

// lastErrorLog remembers the last error a starting filter logged, to explain
// a rejected configuration, and passes everything on.
type lastErrorLog struct {
	next LogSink
	last string
}

const maxExplained = 200

func (l *lastErrorLog) GuestLog(level abi.LogLevel, msg []byte) {
	if level >= abi.LogError {
		l.last = string(msg[:min(len(msg), maxExplained)])
	}
	if l.next != nil {
		l.next.GuestLog(level, msg)
	}
}

func (l *lastErrorLog) GuestOutput(fd uint32, p []byte) {
	if fd == 2 {
		l.last = string(p[:min(len(p), maxExplained)])
	}
	if l.next != nil {
		l.next.GuestOutput(fd, p)
	}
}

func (l *lastErrorLog) LogLevel() abi.LogLevel {
	if l.next != nil {
		return min(l.next.LogLevel(), abi.LogError)
	}
	return abi.LogError
}
