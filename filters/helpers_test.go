package filters

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tetratelabs/wazero"

	"github.com/sluice-edge/sluice/abi"
	"github.com/sluice-edge/sluice/tests/guestbuild"
)

// Test guests are WebAssembly text compiled by the real wat2wasm. guestWAT
// wraps a body in a prelude that imports the host functions the tests use and
// defines the memory, an allocator and logging helpers, so each test states
// only the callbacks it is about.
//
// Memory layout of a prelude guest:
//
//	0..255       return slots (16: data pointer, 20: size) and scratch
//	256..4095    string literals written $"text" in a body
//	4096..8191   free for a test's own data segments
//	8192..12287  buffers of the logging helpers
//	16384..      the allocator's heap
const (
	strBase  = 256
	strLimit = 4096
)

const preludeImports = `
  (import "env" "proxy_log" (func $proxy_log (param i32 i32 i32) (result i32)))
  (import "env" "proxy_send_local_response"
    (func $proxy_send_local_response (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_continue_stream" (func $proxy_continue_stream (param i32) (result i32)))
  (import "env" "proxy_close_stream" (func $proxy_close_stream (param i32) (result i32)))
  (import "env" "proxy_done" (func $proxy_done (result i32)))
  (import "env" "proxy_get_property" (func $proxy_get_property (param i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_buffer_bytes" (func $proxy_get_buffer_bytes (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_set_buffer_bytes" (func $proxy_set_buffer_bytes (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_buffer_status" (func $proxy_get_buffer_status (param i32 i32 i32) (result i32)))
  (import "env" "proxy_add_header_map_value" (func $proxy_add_header_map_value (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_header_map_value" (func $proxy_get_header_map_value (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_set_property" (func $proxy_set_property (param i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_set_effective_context" (func $proxy_set_effective_context (param i32) (result i32)))
  (import "env" "proxy_get_header_map_pairs" (func $proxy_get_header_map_pairs (param i32 i32 i32) (result i32)))
  (import "env" "proxy_get_log_level" (func $proxy_get_log_level (param i32) (result i32)))
  (import "env" "proxy_get_status" (func $proxy_get_status (param i32 i32 i32) (result i32)))
  (import "env" "proxy_get_shared_data" (func $proxy_get_shared_data (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_set_shared_data" (func $proxy_set_shared_data (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_register_shared_queue" (func $proxy_register_shared_queue (param i32 i32 i32) (result i32)))
  (import "env" "proxy_resolve_shared_queue" (func $proxy_resolve_shared_queue (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_enqueue_shared_queue" (func $proxy_enqueue_shared_queue (param i32 i32 i32) (result i32)))
  (import "env" "proxy_dequeue_shared_queue" (func $proxy_dequeue_shared_queue (param i32 i32 i32) (result i32)))
  (import "env" "proxy_set_tick_period_milliseconds" (func $proxy_set_tick_period_milliseconds (param i32) (result i32)))
  (import "env" "proxy_http_call" (func $proxy_http_call (param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_define_metric" (func $proxy_define_metric (param i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_increment_metric" (func $proxy_increment_metric (param i32 i64) (result i32)))
  (import "env" "proxy_record_metric" (func $proxy_record_metric (param i32 i64) (result i32)))
  (import "env" "proxy_get_metric" (func $proxy_get_metric (param i32 i32) (result i32)))
  (import "env" "proxy_call_foreign_function" (func $proxy_call_foreign_function (param i32 i32 i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll_oneoff (param i32 i32 i32 i32) (result i32)))
`

const preludeDefs = `
  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 16384))
  (global $level (mut i32) (i32.const 2)) ;; the level $log logs at: info

  ;; A bump allocator that grows memory as needed.
  (func (export "proxy_on_memory_allocate") (param $size i32) (result i32)
    (local $ptr i32)
    (local.set $ptr (global.get $heap))
    (global.set $heap (i32.add (global.get $heap) (local.get $size)))
    (if (i32.gt_u (global.get $heap) (i32.mul (memory.size) (i32.const 65536)))
      (then (drop (memory.grow (i32.add (i32.shr_u (local.get $size) (i32.const 16)) (i32.const 1))))))
    (local.get $ptr))

  ;; $log logs a string at $level.
  (func $log (param $ptr i32) (param $len i32)
    (drop (call $proxy_log (global.get $level) (local.get $ptr) (local.get $len))))

  ;; $logkv logs "key=n", n in unsigned decimal.
  (func $logkv (param $ptr i32) (param $len i32) (param $n i32)
    (local $p i32) (local $digits i32)
    (memory.copy (i32.const 8192) (local.get $ptr) (local.get $len))
    (i32.store8 (i32.add (i32.const 8192) (local.get $len)) (i32.const 61))
    (local.set $p (i32.const 9020))
    (loop $l
      (local.set $p (i32.sub (local.get $p) (i32.const 1)))
      (i32.store8 (local.get $p) (i32.add (i32.const 48) (i32.rem_u (local.get $n) (i32.const 10))))
      (local.set $n (i32.div_u (local.get $n) (i32.const 10)))
      (br_if $l (local.get $n)))
    (local.set $digits (i32.sub (i32.const 9020) (local.get $p)))
    (memory.copy (i32.add (i32.const 8193) (local.get $len)) (local.get $p) (local.get $digits))
    (call $log (i32.const 8192) (i32.add (i32.add (local.get $len) (i32.const 1)) (local.get $digits))))

  ;; $logkvs logs "key=value", value being what a host call returned
  ;; through the slots at 16 (pointer) and 20 (size).
  (func $logkvs (param $ptr i32) (param $len i32)
    (local $vlen i32)
    (local.set $vlen (i32.load (i32.const 20)))
    (memory.copy (i32.const 10240) (local.get $ptr) (local.get $len))
    (i32.store8 (i32.add (i32.const 10240) (local.get $len)) (i32.const 61))
    (memory.copy (i32.add (i32.const 10241) (local.get $len)) (i32.load (i32.const 16)) (local.get $vlen))
    (call $log (i32.const 10240) (i32.add (i32.add (local.get $len) (i32.const 1)) (local.get $vlen))))

  (func $spin (loop $forever (br $forever)))
`

// strLit matches the $"text" shorthand of guest bodies.
var strLit = regexp.MustCompile(`\$"([^"\\]*)"`)

// guestSrc builds a guest advertising ABI version (as in the export name,
// "0_2_1") around body. In body, $"text" stands for the two operands
// (i32.const ptr) (i32.const len) of a string literal.
func guestSrc(version, body string) string {
	var data strings.Builder
	offsets := map[string]int{}
	next := strBase
	body = strLit.ReplaceAllStringFunc(body, func(m string) string {
		s := m[2 : len(m)-1]
		off, ok := offsets[s]
		if !ok {
			off, offsets[s] = next, next
			next += len(s)
			fmt.Fprintf(&data, "  (data (i32.const %d) %q)\n", off, s)
		}
		return fmt.Sprintf("(i32.const %d) (i32.const %d)", off, len(s))
	})
	if next > strLimit {
		panic("guest string literals overflow their area")
	}
	return "(module\n" + preludeImports + preludeDefs +
		"  (func (export \"proxy_abi_version_" + version + "\"))\n" +
		body + "\n" + data.String() + ")\n"
}

// watBytes writes b as the contents of a WebAssembly text string.
func watBytes(b []byte) string {
	var s strings.Builder
	for _, c := range b {
		fmt.Fprintf(&s, "\\%02x", c)
	}
	return s.String()
}

// guest compiles a v0.2.1 prelude guest.
func guest(t testing.TB, body string) []byte {
	t.Helper()
	return guestbuild.WATText(t, guestSrc("0_2_1", body))
}

// testCache shares compiled code between the tests' plugins, on disk next
// to guestbuild's outputs: the Go SDK guest takes seconds to compile (tens
// under -race), from the cache well under one. wazero keys its cache by its
// own version, which a test binary reports as "dev", so the directory is
// named after the version in go.mod: an upgrade must not load stale code.
var testCache = func() wazero.CompilationCache {
	_, file, _, _ := runtime.Caller(0)
	gomod, err := os.ReadFile(filepath.Join(filepath.Dir(file), "..", "go.mod"))
	version := regexp.MustCompile(`github.com/tetratelabs/wazero (v\S+)`).FindSubmatch(gomod)
	base := os.Getenv("SLUICE_GUEST_CACHE")
	if base == "" {
		user, uerr := os.UserCacheDir()
		base, err = filepath.Join(user, "sluice-guests"), errors.Join(err, uerr)
	}
	if err != nil || version == nil {
		return wazero.NewCompilationCache()
	}
	cache, err := wazero.NewCompilationCacheWithDir(filepath.Join(base, "wazero-"+string(version[1])))
	if err != nil {
		return wazero.NewCompilationCache()
	}
	return cache
}()

var (
	goOnce   sync.Once
	goModule []byte
)

// goHeadersModule returns tests/guests/headers, built with stock Go against
// the official Proxy-Wasm Go SDK.
func goHeadersModule(t testing.TB) []byte {
	t.Helper()
	goOnce.Do(func() {
		b, err := os.ReadFile(guestbuild.Go(t, "headers"))
		if err != nil {
			t.Fatal(err)
		}
		goModule = b
	})
	if goModule == nil {
		t.Fatal("the Go SDK guest did not build (see the first test that asked for it)")
	}
	return goModule
}

// addHeaderModule returns tests/guests/wat/add_header.wat compiled.
func addHeaderModule(t testing.TB) []byte {
	t.Helper()
	b, err := os.ReadFile(guestbuild.WAT(t, "add_header"))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// testLimits are generous enough for a loaded 2-core machine running -race;
// the tests about limits set their own.
var testLimits = Limits{Timeout: 2 * time.Second, MemoryLimit: 16 << 20, MaxBodySize: 1 << 10}

// config returns a plugin configuration for module with testLimits and the
// shared compilation cache, changed by opts.
func config(module []byte, opts ...func(*Config)) Config {
	cfg := Config{
		Name:             "test-filter",
		Module:           module,
		RootID:           "root-a",
		VMID:             "vm-a",
		Limits:           testLimits,
		CompilationCache: testCache,
	}
	for _, o := range opts {
		o(&cfg)
	}
	return cfg
}

func withTimeout(d time.Duration) func(*Config) {
	return func(c *Config) { c.Limits.Timeout = d }
}

// mustLoad loads a plugin and closes it when the test ends.
// freshStart makes every instance of a test's plugin run the start-up
// lifecycle, for tests that watch it happen in each instance.
func freshStart(c *Config) { c.DisableSnapshot = true }

func mustLoad(t testing.TB, module []byte, opts ...func(*Config)) *Plugin {
	t.Helper()
	p, err := Load(context.Background(), config(module, opts...))
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	t.Cleanup(func() { _ = p.Close(context.Background()) })
	return p
}

// newHTTP starts an instance of p and an HTTP context in it, both logging to
// a fresh exchange; the instance is closed when the test ends.
func newHTTP(t testing.TB, p *Plugin) (*Instance, *HTTPContext, *fakeExchange) {
	t.Helper()
	return newHTTPFor(t, p, context.Background())
}

// newHTTPFor is newHTTP for a request whose context is ctx.
func newHTTPFor(t testing.TB, p *Plugin, ctx context.Context) (*Instance, *HTTPContext, *fakeExchange) {
	t.Helper()
	ex := newExchange()
	inst, err := p.NewInstance(ctx, ex)
	if err != nil {
		t.Fatalf("NewInstance: %v", err)
	}
	t.Cleanup(func() { inst.Close(context.Background()) })
	hc, err := inst.NewHTTPContext(ctx, ex)
	if err != nil {
		t.Fatalf("NewHTTPContext: %v", err)
	}
	return inst, hc, ex
}

// wantGuestError checks that err is a *GuestError of kind and returns it.
func wantGuestError(t testing.TB, err, kind error) *GuestError {
	t.Helper()
	var ge *GuestError
	if !errors.As(err, &ge) {
		t.Fatalf("got error %v (%T), want a *GuestError of kind %q", err, err, kind)
	}
	if ge.Kind != kind || !errors.Is(err, kind) {
		t.Fatalf("got kind %q, want %q (error: %v)", ge.Kind, kind, err)
	}
	return ge
}

// wantErrorContaining checks that err is non-nil and mentions each of subs.
func wantErrorContaining(t testing.TB, err error, subs ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want one mentioning %q", subs)
	}
	for _, s := range subs {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q does not mention %q", err, s)
		}
	}
}

// fakeExchange is an in-memory Exchange: four header maps, a few request
// properties, and a log.
type fakeExchange struct {
	mu       sync.Mutex
	maps     map[abi.MapType]*pairMap
	props    map[string]string
	setProps map[string]string
	logs     []logLine
	output   []string
	// badHeader is a response header name ValidResponseHeaders refuses.
	badHeader string
	// panicOn makes Property panic for this path, to simulate a host bug.
	panicOn string
	// level is what LogLevel reports.
	level abi.LogLevel
}

type logLine struct {
	level abi.LogLevel
	msg   string
}

func newExchange() *fakeExchange {
	return &fakeExchange{
		maps: map[abi.MapType]*pairMap{
			abi.MapRequestHeaders:   {pairs: [][2]string{{":method", "GET"}, {":path", "/"}, {"host", "example.com"}}},
			abi.MapRequestTrailers:  {},
			abi.MapResponseHeaders:  {pairs: [][2]string{{":status", "200"}}},
			abi.MapResponseTrailers: {},
		},
		props:     map[string]string{"request.path": "/a/b?c", "source.address": "192.0.2.1:4711"},
		setProps:  map[string]string{},
		badHeader: "x-bad",
	}
}

func (e *fakeExchange) HeaderMap(t abi.MapType) abi.HeaderMap {
	if m, ok := e.maps[t]; ok && m != nil {
		return m
	}
	return nil // an untyped nil: the map does not exist
}

func (e *fakeExchange) Property(path []string) ([]byte, bool) {
	key := strings.Join(path, ".")
	if key == e.panicOn {
		panic("fake exchange: simulated host bug")
	}
	v, ok := e.props[key]
	return []byte(v), ok
}

func (e *fakeExchange) SetProperty(path []string, value []byte) abi.Status {
	e.setProps[strings.Join(path, ".")] = string(value)
	return abi.StatusOK
}

func (e *fakeExchange) ValidResponseHeaders(pairs [][2]string) bool {
	for _, p := range pairs {
		if p[0] == e.badHeader {
			return false
		}
	}
	return true
}

func (e *fakeExchange) GuestLog(level abi.LogLevel, msg []byte) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.logs = append(e.logs, logLine{level, string(msg)}) // msg aliases guest memory
}

func (e *fakeExchange) GuestOutput(fd uint32, p []byte) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.output = append(e.output, fmt.Sprintf("%d:%s", fd, p))
}

func (e *fakeExchange) LogLevel() abi.LogLevel { return e.level }

// messages returns what the guest logged so far, at any level.
func (e *fakeExchange) messages() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]string, len(e.logs))
	for i, l := range e.logs {
		out[i] = l.msg
	}
	return out
}

// reset forgets the log, so that a test can look at one callback's lines.
func (e *fakeExchange) reset() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.logs = nil
}

// wantLogs checks the exact messages the guest logged, in order.
func (e *fakeExchange) wantLogs(t testing.TB, want ...string) {
	t.Helper()
	if got := e.messages(); !slices.Equal(got, want) {
		t.Errorf("guest logged %q, want %q", got, want)
	}
}

// pairMap is an abi.HeaderMap over ordered pairs.
type pairMap struct {
	pairs [][2]string
}

func (m *pairMap) Get(name string) (string, bool) {
	var vals []string
	for _, p := range m.pairs {
		if p[0] == name {
			vals = append(vals, p[1])
		}
	}
	return strings.Join(vals, ","), vals != nil
}

func (m *pairMap) Pairs() [][2]string { return m.pairs }

func (m *pairMap) SetPairs(pairs [][2]string) abi.Status {
	m.pairs = slices.Clone(pairs)
	return abi.StatusOK
}

func (m *pairMap) Add(name, value string) abi.Status {
	m.pairs = append(m.pairs, [2]string{name, value})
	return abi.StatusOK
}

func (m *pairMap) Replace(name, value string) abi.Status {
	_ = m.Remove(name)
	return m.Add(name, value)
}

func (m *pairMap) Remove(name string) abi.Status {
	m.pairs = slices.DeleteFunc(m.pairs, func(p [2]string) bool { return p[0] == name })
	return abi.StatusOK
}

func (m *pairMap) get(name string) string {
	v, _ := m.Get(name)
	return v
}

// lifecycle runs one request through an instance of p (a fresh one, unless
// p shares instances): request headers, response headers, Finish, release.
func lifecycle(ctx context.Context, p *Plugin, ex *fakeExchange, numHeaders int) error {
	inst, err := p.Acquire(ctx, ex)
	if err != nil {
		return err
	}
	defer inst.Release()
	hc, err := inst.NewHTTPContext(ctx, ex)
	if err != nil {
		return err
	}
	if _, err := hc.RequestHeaders(numHeaders, true); err != nil {
		return err
	}
	hc.RequestForwarded()
	if _, err := hc.ResponseHeaders(len(ex.maps[abi.MapResponseHeaders].pairs), true); err != nil {
		return err
	}
	hc.ResponseStarted()
	return hc.Finish()
}
