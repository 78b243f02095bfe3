package abi

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluice-edge/sluice/tests/guestbuild"
	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
)

// This file holds the test harness shared by the abi tests: the function
// types the specifications give every import, a fake Host, and a generic
// guest that re-exports each host function so tests can call it with any
// arguments, including the hostile ones a real SDK never sends.

// parseSig turns a compact signature ("iil>i": params, '>', results; i is
// i32, l is i64) into value types.
func parseSig(s string) (params, results []api.ValueType) {
	p, r, ok := strings.Cut(s, ">")
	if !ok {
		panic("bad signature " + s)
	}
	conv := func(s string) []api.ValueType {
		out := []api.ValueType{}
		for _, c := range s {
			switch c {
			case 'i':
				out = append(out, api.ValueTypeI32)
			case 'l':
				out = append(out, api.ValueTypeI64)
			default:
				panic("bad signature " + s)
			}
		}
		return out
	}
	return conv(p), conv(r)
}

// envSpec is the type of every "env" function, copied from the Proxy-Wasm
// v0.2.1 specification, plus the ABI v0.1.0 functions Envoy still offers and
// the two Emscripten imports. It is the test's source of truth: the generic
// guest imports these types, so a host function of another type fails
// instantiation.
var envSpec = map[string]string{
	"proxy_log":                          "iii>i",
	"proxy_get_log_level":                "i>i",
	"proxy_get_current_time_nanoseconds": "i>i",
	"proxy_set_effective_context":        "i>i",
	"proxy_done":                         ">i",
	"proxy_set_tick_period_milliseconds": "i>i",
	"proxy_get_buffer_bytes":             "iiiii>i",
	"proxy_set_buffer_bytes":             "iiiii>i",
	"proxy_get_buffer_status":            "iii>i",
	"proxy_get_header_map_size":          "ii>i",
	"proxy_get_header_map_pairs":         "iii>i",
	"proxy_set_header_map_pairs":         "iii>i",
	"proxy_get_header_map_value":         "iiiii>i",
	"proxy_add_header_map_value":         "iiiii>i",
	"proxy_replace_header_map_value":     "iiiii>i",
	"proxy_remove_header_map_value":      "iii>i",
	"proxy_continue_stream":              "i>i",
	"proxy_close_stream":                 "i>i",
	"proxy_get_status":                   "iii>i",
	"proxy_send_local_response":          "iiiiiiii>i",
	"proxy_http_call":                    "iiiiiiiiii>i",
	"proxy_grpc_call":                    "iiiiiiiiiiii>i",
	"proxy_grpc_stream":                  "iiiiiiiii>i",
	"proxy_grpc_send":                    "iiii>i",
	"proxy_grpc_cancel":                  "i>i",
	"proxy_grpc_close":                   "i>i",
	"proxy_set_shared_data":              "iiiii>i",
	"proxy_get_shared_data":              "iiiii>i",
	"proxy_register_shared_queue":        "iii>i",
	"proxy_resolve_shared_queue":         "iiiii>i",
	"proxy_enqueue_shared_queue":         "iii>i",
	"proxy_dequeue_shared_queue":         "iii>i",
	"proxy_define_metric":                "iiii>i",
	"proxy_record_metric":                "il>i",
	"proxy_increment_metric":             "il>i",
	"proxy_get_metric":                   "ii>i",
	"proxy_get_property":                 "iiii>i",
	"proxy_set_property":                 "iiii>i",
	"proxy_call_foreign_function":        "iiiiii>i",
	// ABI v0.1.0.
	"proxy_get_configuration": "ii>i",
	"proxy_continue_request":  ">i",
	"proxy_continue_response": ">i",
	"proxy_clear_route_cache": ">i",
	// Emscripten.
	"emscripten_notify_memory_growth": "i>",
	"pthread_equal":                   "ii>i",
}

// unimplementedFuncs are the functions whose features Sluice does not offer
// (gRPC calls: see RATIONALE.md); each must answer UNIMPLEMENTED whatever
// its arguments.
var unimplementedFuncs = []string{
	"proxy_grpc_call", "proxy_grpc_stream", "proxy_grpc_send", "proxy_grpc_cancel", "proxy_grpc_close",
}

// wasiSpec is the type of every WASI preview1 function the host offers,
// from the witx of snapshot 01 (wasi_unstable uses the same types).
var wasiSpec = map[string]string{
	"args_get": "ii>i", "args_sizes_get": "ii>i",
	"environ_get": "ii>i", "environ_sizes_get": "ii>i",
	"clock_res_get": "ii>i", "clock_time_get": "ili>i",
	"random_get": "ii>i", "sched_yield": ">i", "poll_oneoff": "iiii>i",
	"proc_exit": "i>", "proc_raise": "i>i",
	"fd_write": "iiii>i", "fd_read": "iiii>i",
	"fd_fdstat_get": "ii>i", "fd_fdstat_set_flags": "ii>i", "fd_fdstat_set_rights": "ill>i",
	"fd_filestat_get": "ii>i", "fd_filestat_set_size": "il>i", "fd_filestat_set_times": "illi>i",
	"fd_close": "i>i", "fd_sync": "i>i", "fd_datasync": "i>i",
	"fd_seek": "ilii>i", "fd_tell": "ii>i", "fd_advise": "illi>i", "fd_allocate": "ill>i",
	"fd_pread": "iiili>i", "fd_pwrite": "iiili>i", "fd_readdir": "iiili>i", "fd_renumber": "ii>i",
	"fd_prestat_get": "ii>i", "fd_prestat_dir_name": "iii>i",
	"path_create_directory": "iii>i", "path_filestat_get": "iiiii>i",
	"path_filestat_set_times": "iiiilli>i", "path_link": "iiiiiii>i",
	"path_open": "iiiiillii>i", "path_readlink": "iiiiii>i",
	"path_remove_directory": "iii>i", "path_rename": "iiiiii>i",
	"path_symlink": "iiiii>i", "path_unlink_file": "iii>i",
	"sock_accept": "iii>i", "sock_recv": "iiiiii>i", "sock_send": "iiiii>i", "sock_shutdown": "ii>i",
}

// specStatuses are the values of proxy_status_t. No host function may
// return anything else.
var specStatuses = []Status{0, 1, 2, 3, 4, 6, 7, 8, 10, 12}

// Guest memory layout used by the tests. The generic guest has one page and
// a bump allocator starting at heapStart.
const (
	pageSize  = 65536
	slotA     = 0x40 // return slots
	slotB     = 0x48
	slotC     = 0x50
	dataA     = 0x100 // inputs
	dataB     = 0x800
	dataC     = 0x1000
	heapStart = 0x4000
)

// Allocator modes of the generic guest (set_alloc_mode).
const (
	allocBump        = 0 // a working bump allocator
	allocZero        = 1 // returns 0
	allocOutOfBounds = 2 // returns 0x7ffffff0
	allocTrap        = 3 // executes unreachable
	allocReenter     = 4 // calls proxy_log, then allocates
	allocLastByte    = 5 // returns the last byte of memory
	allocCallsWASI   = 6 // calls clock_time_get, then allocates
	allocWrapsAround = 7 // returns 0xfffffff0: ptr+size wraps past 2^32
	allocLoops       = 8 // never returns
)

func watTypes(params, results []api.ValueType) string {
	var b strings.Builder
	if len(params) > 0 {
		b.WriteString(" (param")
		for _, p := range params {
			b.WriteString(" " + api.ValueTypeName(p))
		}
		b.WriteString(")")
	}
	if len(results) > 0 {
		b.WriteString(" (result")
		for _, r := range results {
			b.WriteString(" " + api.ValueTypeName(r))
		}
		b.WriteString(")")
	}
	return b.String()
}

// genericGuestWAT imports every function of envSpec and wasiSpec (from both
// WASI modules) and re-exports each as "<module>.<name>" with the same type.
func genericGuestWAT() string {
	var imports, trampolines strings.Builder
	add := func(module string, spec map[string]string) {
		names := make([]string, 0, len(spec))
		for n := range spec {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, name := range names {
			params, results := parseSig(spec[name])
			types := watTypes(params, results)
			id := "$" + module + "." + name
			fmt.Fprintf(&imports, "  (import %q %q (func %s%s))\n", module, name, id, types)
			fmt.Fprintf(&trampolines, "  (func (export %q)%s", module+"."+name, types)
			for i := range params {
				fmt.Fprintf(&trampolines, " (local.get %d)", i)
			}
			fmt.Fprintf(&trampolines, " (call %s))\n", id)
		}
	}
	add(ModuleEnv, envSpec)
	add(ModuleWASI, wasiSpec)
	add(ModuleWASIUnstable, wasiSpec)
	return "(module\n" + imports.String() + `
  (memory (export "memory") 1)
  (global $mode (mut i32) (i32.const 0))
  (global $calls (mut i32) (i32.const 0))
  (global $heap (mut i32) (i32.const 0x4000))
  (func (export "set_alloc_mode") (param i32) (global.set $mode (local.get 0)))
  (func (export "alloc_calls") (result i32) (global.get $calls))
  (func (export "proxy_on_memory_allocate") (param $size i32) (result i32)
    (local $ptr i32)
    (global.set $calls (i32.add (global.get $calls) (i32.const 1)))
    (if (i32.eq (global.get $mode) (i32.const 1)) (then (return (i32.const 0))))
    (if (i32.eq (global.get $mode) (i32.const 2)) (then (return (i32.const 0x7ffffff0))))
    (if (i32.eq (global.get $mode) (i32.const 3)) (then (unreachable)))
    (if (i32.eq (global.get $mode) (i32.const 4))
      (then (drop (call $env.proxy_log (i32.const 2) (i32.const 0) (i32.const 0)))))
    (if (i32.eq (global.get $mode) (i32.const 5))
      (then (return (i32.sub (i32.mul (memory.size) (i32.const 65536)) (i32.const 1)))))
    (if (i32.eq (global.get $mode) (i32.const 6))
      (then (drop (call $wasi_snapshot_preview1.clock_time_get (i32.const 1) (i64.const 0) (i32.const 0x60)))))
    (if (i32.eq (global.get $mode) (i32.const 7)) (then (return (i32.const -16))))
    (if (i32.eq (global.get $mode) (i32.const 8)) (then (loop $forever (br $forever))))
    ;; Bump allocation, growing memory when the heap passes its end.
    (local.set $ptr (global.get $heap))
    (global.set $heap (i32.add (local.get $ptr) (local.get $size)))
    (if (i32.gt_u (global.get $heap) (i32.mul (memory.size) (i32.const 65536)))
      (then (if (i32.eq (i32.const -1)
                  (memory.grow (i32.add (i32.const 1) (i32.shr_u
                    (i32.sub (global.get $heap) (i32.mul (memory.size) (i32.const 65536)))
                    (i32.const 16)))))
              (then (unreachable)))))
    (local.get $ptr))
` + trampolines.String() + ")\n"
}

var (
	wasmCacheMu sync.Mutex
	wasmCache   = map[string][]byte{}

	// shared is the runtime most tests instantiate guests in: building the
	// host modules for every subtest would dominate the package's run time.
	sharedOnce     sync.Once
	shared         wazero.Runtime
	sharedErr      error
	compiledMu     sync.Mutex
	compiledByText = map[string]wazero.CompiledModule{}
)

// compileWAT returns the binary of src, built once per test binary.
func compileWAT(t testing.TB, src string) []byte {
	t.Helper()
	wasmCacheMu.Lock()
	defer wasmCacheMu.Unlock()
	if b, ok := wasmCache[src]; ok {
		return b
	}
	b := guestbuild.WATText(t, src)
	wasmCache[src] = b
	return b
}

func runtimeConfig() wazero.RuntimeConfig {
	return wazero.NewRuntimeConfig().WithCloseOnContextDone(true)
}

// newRuntime returns a runtime of its own with the host modules, closed
// with the test.
func newRuntime(t testing.TB) wazero.Runtime {
	t.Helper()
	ctx := context.Background()
	r := wazero.NewRuntimeWithConfig(ctx, runtimeConfig())
	t.Cleanup(func() { r.Close(ctx) })
	if err := InstantiateHostModules(ctx, r); err != nil {
		t.Fatalf("InstantiateHostModules: %v", err)
	}
	return r
}

// sharedRuntime returns the runtime shared by the package's tests.
func sharedRuntime(t testing.TB) wazero.Runtime {
	t.Helper()
	sharedOnce.Do(func() {
		ctx := context.Background()
		shared = wazero.NewRuntimeWithConfig(ctx, runtimeConfig())
		sharedErr = InstantiateHostModules(ctx, shared)
	})
	if sharedErr != nil {
		t.Fatalf("InstantiateHostModules: %v", sharedErr)
	}
	return shared
}

// instantiate instantiates src (without start functions) as a fresh,
// anonymous module in the shared runtime, closed with the test.
func instantiate(t testing.TB, ctx context.Context, src string) api.Module {
	t.Helper()
	r := sharedRuntime(t)
	compiledMu.Lock()
	compiled, ok := compiledByText[src]
	if !ok {
		var err error
		if compiled, err = r.CompileModule(context.Background(), compileWAT(t, src)); err != nil {
			compiledMu.Unlock()
			t.Fatalf("compile: %v", err)
		}
		compiledByText[src] = compiled
	}
	compiledMu.Unlock()
	mod, err := r.InstantiateModule(ctx, compiled, wazero.NewModuleConfig().WithName("").WithStartFunctions())
	if err != nil {
		t.Fatalf("instantiate: %v", err)
	}
	t.Cleanup(func() { mod.Close(context.Background()) })
	return mod
}

// testGuest is one instance of the generic guest with its fake host.
type testGuest struct {
	t     testing.TB
	mod   api.Module
	mem   api.Memory
	host  *fakeHost
	guest *Guest
	ctx   context.Context
}

func newTestGuest(t testing.TB, host *fakeHost) *testGuest {
	t.Helper()
	if host == nil {
		host = newFakeHost()
	}
	g := &testGuest{t: t, host: host, guest: NewGuest()}
	g.ctx = WithCall(context.Background(), g.guest, host)
	g.mod = instantiate(t, g.ctx, genericGuestWAT())
	g.mem = g.mod.ExportedMemory("memory")
	return g
}

// callCtx calls an export of the guest with ctx and returns its results.
func (g *testGuest) callCtx(ctx context.Context, export string, args ...uint64) ([]uint64, error) {
	g.t.Helper()
	f := g.mod.ExportedFunction(export)
	if f == nil {
		g.t.Fatalf("guest has no export %q", export)
	}
	return f.Call(ctx, args...)
}

// proxy calls the env host function name and returns its status, failing
// the test when the call fails or the status is not one the spec lists.
func (g *testGuest) proxy(name string, args ...uint64) Status {
	g.t.Helper()
	res, err := g.callCtx(g.ctx, ModuleEnv+"."+name, args...)
	if err != nil {
		g.t.Fatalf("%s(%#x): %v", name, args, err)
	}
	st := Status(res[0])
	if !slices.Contains(specStatuses, st) {
		g.t.Fatalf("%s returned %d, which proxy_status_t does not list", name, st)
	}
	return st
}

// proxyErr calls the env host function name and returns the call's error.
func (g *testGuest) proxyErr(name string, args ...uint64) error {
	g.t.Helper()
	_, err := g.callCtx(g.ctx, ModuleEnv+"."+name, args...)
	return err
}

// wasi calls the WASI function name of module and returns its errno.
func (g *testGuest) wasi(module, name string, args ...uint64) Errno {
	g.t.Helper()
	res, err := g.callCtx(g.ctx, module+"."+name, args...)
	if err != nil {
		g.t.Fatalf("%s.%s(%#x): %v", module, name, args, err)
	}
	return Errno(res[0])
}

func (g *testGuest) setAllocMode(mode uint64) {
	g.t.Helper()
	if _, err := g.callCtx(g.ctx, "set_alloc_mode", mode); err != nil {
		g.t.Fatal(err)
	}
}

func (g *testGuest) allocCalls() uint32 {
	g.t.Helper()
	res, err := g.callCtx(g.ctx, "alloc_calls")
	if err != nil {
		g.t.Fatal(err)
	}
	return uint32(res[0])
}

func (g *testGuest) write(off uint32, b []byte) {
	g.t.Helper()
	if !g.mem.Write(off, b) {
		g.t.Fatalf("write %d bytes at %#x out of bounds", len(b), off)
	}
}

func (g *testGuest) writeString(off uint32, s string) { g.write(off, []byte(s)) }

func (g *testGuest) writeU32(off, v uint32) {
	g.t.Helper()
	if !g.mem.WriteUint32Le(off, v) {
		g.t.Fatalf("write at %#x out of bounds", off)
	}
}

func (g *testGuest) u32(off uint32) uint32 {
	g.t.Helper()
	v, ok := g.mem.ReadUint32Le(off)
	if !ok {
		g.t.Fatalf("read at %#x out of bounds", off)
	}
	return v
}

func (g *testGuest) u64(off uint32) uint64 {
	g.t.Helper()
	v, ok := g.mem.ReadUint64Le(off)
	if !ok {
		g.t.Fatalf("read at %#x out of bounds", off)
	}
	return v
}

func (g *testGuest) bytes(off, n uint32) []byte {
	g.t.Helper()
	b, ok := g.mem.Read(off, n)
	if !ok {
		g.t.Fatalf("read %d bytes at %#x out of bounds", n, off)
	}
	return append([]byte(nil), b...)
}

// returned reads the (pointer, size) a host function stored in two return
// slots and the bytes they designate.
func (g *testGuest) returned(ptrSlot, sizeSlot uint32) (ptr, size uint32, data []byte) {
	g.t.Helper()
	ptr, size = g.u32(ptrSlot), g.u32(sizeSlot)
	return ptr, size, g.bytes(ptr, size)
}

// tailSentinel fills memory a refused write must leave alone.
const tailSentinel = 0xa5

// fillTail writes a sentinel over the last n bytes of memory, so tests can
// check that a refused write left them alone.
func (g *testGuest) fillTail(n uint32) {
	g.t.Helper()
	size := g.mem.Size()
	g.write(size-n, bytesRepeat(tailSentinel, int(n)))
}

func (g *testGuest) checkTail(n uint32) {
	g.t.Helper()
	size := g.mem.Size()
	if got := g.bytes(size-n, n); string(got) != string(bytesRepeat(tailSentinel, int(n))) {
		g.t.Errorf("the last %d bytes of memory changed to %x", n, got)
	}
}

func bytesRepeat(b byte, n int) []byte {
	out := make([]byte, n)
	for i := range out {
		out[i] = b
	}
	return out
}

// fakeHost is a Host that records every call and answers from canned maps,
// buffers and properties. Its zero statuses are OK.
type fakeHost struct {
	maps    map[MapType]*fakeMap
	buffers map[BufferType]*fakeBuffer
	props   map[string][]byte // by path segments joined with "/"

	level   LogLevel
	logs    []logEntry
	outputs []outputEntry

	local       []LocalResponse
	localStatus Status

	continued, closed []StreamType
	streamStatus      Status

	propGets      [][]string
	propSets      []propSet
	propSetStatus Status

	effective       []uint32
	effectiveStatus Status
	dones           int
	doneStatus      Status

	callCode   uint32
	callMsg    []byte
	callStatus Status

	mapLookups, bufferLookups int
	panicOnLog                any

	// Services: what every service call returns, and a log of the calls
	// that change something.
	svcStatus   Status
	svcCalls    []string
	data        map[string][]byte
	cas         uint32
	queueItem   []byte
	nextID      uint32
	httpCalls   []HTTPCall
	metricValue uint64
	foreignOut  []byte
}

type logEntry struct {
	level LogLevel
	msg   string
}

type outputEntry struct {
	fd   uint32
	data []byte
}

type propSet struct {
	path  []string
	value string
}

func newFakeHost() *fakeHost {
	return &fakeHost{
		maps:    map[MapType]*fakeMap{},
		buffers: map[BufferType]*fakeBuffer{},
		props:   map[string][]byte{},
		level:   LogInfo,
		data:    map[string][]byte{},
		nextID:  7,
	}
}

// The fake Services: each records what it was asked, and answers svcStatus.

func (h *fakeHost) record(format string, args ...any) Status {
	h.svcCalls = append(h.svcCalls, fmt.Sprintf(format, args...))
	return h.svcStatus
}

func (h *fakeHost) GetSharedData(key string) ([]byte, uint32, Status) {
	if h.svcStatus != StatusOK {
		return nil, 0, h.svcStatus
	}
	v, ok := h.data[key]
	if !ok {
		return nil, 0, StatusNotFound
	}
	return v, h.cas, StatusOK
}

func (h *fakeHost) SetSharedData(key string, value []byte, cas uint32) Status {
	return h.record("set %s=%s cas=%d", key, value, cas)
}

func (h *fakeHost) RegisterSharedQueue(name string) (uint32, Status) {
	return h.nextID, h.record("register %s", name)
}

func (h *fakeHost) ResolveSharedQueue(vmID, name string) (uint32, Status) {
	return h.nextID, h.record("resolve %s/%s", vmID, name)
}

func (h *fakeHost) EnqueueSharedQueue(id uint32, value []byte) Status {
	return h.record("enqueue %d %s", id, value)
}

func (h *fakeHost) DequeueSharedQueue(id uint32) ([]byte, Status) {
	return h.queueItem, h.record("dequeue %d", id)
}

func (h *fakeHost) SetTickPeriod(d time.Duration) Status { return h.record("tick %v", d) }

func (h *fakeHost) HTTPCall(c *HTTPCall) (uint32, Status) {
	copied := *c
	copied.Body = slices.Clone(c.Body)
	h.httpCalls = append(h.httpCalls, copied)
	return h.nextID, h.record("http_call %s", c.Upstream)
}

func (h *fakeHost) DefineMetric(t MetricType, name string) (uint32, Status) {
	return h.nextID, h.record("define %d %s", t, name)
}

func (h *fakeHost) IncrementMetric(id uint32, delta int64) Status {
	return h.record("increment %d %d", id, delta)
}

func (h *fakeHost) RecordMetric(id uint32, value uint64) Status {
	return h.record("record %d %d", id, value)
}

func (h *fakeHost) GetMetric(uint32) (uint64, Status) { return h.metricValue, h.svcStatus }

func (h *fakeHost) CallForeignFunction(name string, args []byte) ([]byte, Status) {
	return h.foreignOut, h.record("foreign %s(%s)", name, args)
}

func (h *fakeHost) HeaderMap(t MapType, write bool) (HeaderMap, Status) {
	h.mapLookups++
	m, ok := h.maps[t]
	if !ok || (write && m.readOnly) {
		return nil, StatusBadArgument
	}
	return m, StatusOK
}

func (h *fakeHost) Buffer(t BufferType, write bool) (Buffer, Status) {
	h.bufferLookups++
	b, ok := h.buffers[t]
	if !ok || (write && b.readOnly) {
		return nil, StatusNotFound
	}
	return b, StatusOK
}

func (h *fakeHost) SendLocalResponse(r *LocalResponse) Status {
	c := *r
	c.Body = append([]byte(nil), r.Body...) // Body aliases guest memory
	h.local = append(h.local, c)
	return h.localStatus
}

func (h *fakeHost) ContinueStream(t StreamType) Status {
	h.continued = append(h.continued, t)
	return h.streamStatus
}

func (h *fakeHost) CloseStream(t StreamType) Status {
	h.closed = append(h.closed, t)
	return h.streamStatus
}

func (h *fakeHost) Property(path []string) ([]byte, Status) {
	h.propGets = append(h.propGets, slices.Clone(path))
	v, ok := h.props[strings.Join(path, "/")]
	if !ok {
		return nil, StatusNotFound
	}
	return v, StatusOK
}

func (h *fakeHost) SetProperty(path []string, value []byte) Status {
	h.propSets = append(h.propSets, propSet{slices.Clone(path), string(value)})
	return h.propSetStatus
}

func (h *fakeHost) Log(level LogLevel, msg []byte) {
	if h.panicOnLog != nil {
		panic(h.panicOnLog)
	}
	h.logs = append(h.logs, logEntry{level, string(msg)})
}

func (h *fakeHost) LogLevel() LogLevel { return h.level }

func (h *fakeHost) WriteOutput(fd uint32, p []byte) {
	h.outputs = append(h.outputs, outputEntry{fd, append([]byte(nil), p...)})
}

func (h *fakeHost) SetEffectiveContext(id uint32) Status {
	h.effective = append(h.effective, id)
	return h.effectiveStatus
}

func (h *fakeHost) Done() Status {
	h.dones++
	return h.doneStatus
}

func (h *fakeHost) CallStatus() (uint32, []byte, Status) {
	return h.callCode, h.callMsg, h.callStatus
}

// fakeMap is an ordered header map counting its changes.
type fakeMap struct {
	pairs    [][2]string
	readOnly bool
	fail     Status // returned by every change when not OK
	changes  int
}

func newFakeMap(pairs ...[2]string) *fakeMap { return &fakeMap{pairs: pairs} }

func (m *fakeMap) Get(name string) (string, bool) {
	var vals []string
	for _, p := range m.pairs {
		if p[0] == name {
			vals = append(vals, p[1])
		}
	}
	return strings.Join(vals, ","), vals != nil
}

func (m *fakeMap) Pairs() [][2]string { return slices.Clone(m.pairs) }

func (m *fakeMap) SetPairs(pairs [][2]string) Status {
	if m.fail != StatusOK {
		return m.fail
	}
	m.changes++
	m.pairs = slices.Clone(pairs)
	return StatusOK
}

func (m *fakeMap) Add(name, value string) Status {
	if m.fail != StatusOK {
		return m.fail
	}
	m.changes++
	m.pairs = append(m.pairs, [2]string{name, value})
	return StatusOK
}

func (m *fakeMap) Replace(name, value string) Status {
	if m.fail != StatusOK {
		return m.fail
	}
	m.changes++
	m.pairs = slices.DeleteFunc(m.pairs, func(p [2]string) bool { return p[0] == name })
	m.pairs = append(m.pairs, [2]string{name, value})
	return StatusOK
}

func (m *fakeMap) Remove(name string) Status {
	if m.fail != StatusOK {
		return m.fail
	}
	m.changes++
	m.pairs = slices.DeleteFunc(m.pairs, func(p [2]string) bool { return p[0] == name })
	return StatusOK
}

// fakeBuffer is a byte buffer counting its changes.
type fakeBuffer struct {
	data     []byte
	readOnly bool
	fail     Status
	sets     int
}

func (b *fakeBuffer) Bytes() []byte { return b.data }

func (b *fakeBuffer) Set(p []byte) Status {
	if b.fail != StatusOK {
		return b.fail
	}
	b.sets++
	b.data = p
	return StatusOK
}
