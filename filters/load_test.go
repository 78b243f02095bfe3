package filters

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/sluice-edge/sluice/abi"
	"github.com/sluice-edge/sluice/filters/internal/wasmbin"
	"github.com/sluice-edge/sluice/tests/guestbuild"
)

// Hand-assembled binaries, for modules wat2wasm would not write or that are
// too large to write as text.

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

func wasmModule(sections ...[]byte) []byte {
	return append([]byte("\x00asm\x01\x00\x00\x00"), bytes.Join(sections, nil)...)
}

// vec encodes count followed by count copies of item.
func vec(count int, item []byte) []byte {
	return append(uleb(uint64(count)), bytes.Repeat(item, count)...)
}

// loadErr loads module, which must fail, and returns the error.
func loadErr(t *testing.T, module []byte, opts ...func(*Config)) error {
	t.Helper()
	p, err := Load(context.Background(), config(module, opts...))
	if err == nil {
		_ = p.Close(context.Background())
		t.Fatal("Load accepted the module")
	}
	return err
}

func TestLoadRejectsMalformedBinaries(t *testing.T) {
	valid := guest(t, "")
	for _, tc := range []struct {
		name   string
		module []byte
		want   string
	}{
		{"empty", nil, `missing \0asm header`},
		{"not wasm", []byte("#!/bin/sh\necho hello\n"), `missing \0asm header`},
		{"bad magic", append([]byte("\x00asn"), valid[4:]...), `missing \0asm header`},
		{"unsupported version", append([]byte("\x00asm\x02\x00\x00\x00"), valid[8:]...), "unsupported version"},
		{"truncated version", valid[:6], "unsupported version"},
		{"truncated last section", valid[:len(valid)-3], "runs past the end"},
		{"truncated in the middle", valid[:len(valid)/2], "runs past the end"},
		{"section size LEB128 too long", wasmModule([]byte{1, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00}), "too long"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := loadErr(t, tc.module)
			wantErrorContaining(t, err, "not a WebAssembly module", tc.want)
			if !errors.Is(err, wasmbin.ErrMalformed) {
				t.Errorf("error %v does not wrap wasmbin.ErrMalformed", err)
			}
		})
	}
}

func TestLoadRejectsModulesOverMaxModuleSize(t *testing.T) {
	module := append(guest(t, ""), section(0, make([]byte, MaxModuleSize))...)
	wantErrorContaining(t, loadErr(t, module), fmt.Sprint(len(module)), fmt.Sprint(MaxModuleSize))
}

// Modules whose exports, imports or declared sizes do not make a filter,
// each rejected by Load with an error that names the problem.
func TestLoadRejectsBadModules(t *testing.T) {
	const memAlloc = `
  (memory (export "memory") 1)
  (func (export "proxy_on_memory_allocate") (param i32) (result i32) (i32.const 1024))`
	for _, tc := range []struct {
		name  string
		wat   string
		limit uint64 // MemoryLimit, when not testLimits'
		want  []string
		is    error
	}{{
		name: "no ABI version export",
		wat:  `(module ` + memAlloc + `)`,
		want: []string{"exports no Proxy-Wasm ABI version"},
	}, {
		name: "two ABI version exports",
		wat: `(module ` + memAlloc + `
  (func (export "proxy_abi_version_0_2_0"))
  (func (export "proxy_abi_version_0_2_1")))`,
		// In a stable order: the same module gets the same error.
		want: []string{"several Proxy-Wasm ABI versions: [proxy_abi_version_0_2_0 proxy_abi_version_0_2_1]"},
	}, {
		name: "three ABI version exports",
		wat: `(module ` + memAlloc + `
  (func (export "proxy_abi_version_0_1_0"))
  (func (export "proxy_abi_version_0_2_0"))
  (func (export "proxy_abi_version_0_2_1")))`,
		want: []string{"several Proxy-Wasm ABI versions: [proxy_abi_version_0_1_0 proxy_abi_version_0_2_0 proxy_abi_version_0_2_1]"},
	}, {
		name: "memory not exported",
		wat: `(module (memory 1)
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_memory_allocate") (param i32) (result i32) (i32.const 1024)))`,
		want: []string{`does not export its linear memory as "memory"`},
		is:   abi.ErrNoMemory,
	}, {
		name: "memory exported under another name",
		wat: `(module (memory (export "mem") 1)
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_memory_allocate") (param i32) (result i32) (i32.const 1024)))`,
		want: []string{`"memory"`},
		is:   abi.ErrNoMemory,
	}, {
		name: "no allocator",
		wat: `(module (memory (export "memory") 1)
  (func (export "proxy_abi_version_0_2_1")))`,
		want: []string{"neither proxy_on_memory_allocate nor malloc"},
		is:   abi.ErrNoAllocator,
	}, {
		name: "allocator with the wrong type",
		wat: `(module (memory (export "memory") 1)
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_memory_allocate") (param i64) (result i32) (i32.const 1024)))`,
		want: []string{"proxy_on_memory_allocate", "(i64) -> i32", "(i32) -> i32"},
	}, {
		name: "malloc with the wrong type",
		wat: `(module (memory (export "memory") 1)
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "malloc") (param i32)))`,
		want: []string{"malloc", "(i32) -> ()", "(i32) -> i32"},
	}, {
		name: "v0.1.0 request headers with the v0.2 type",
		wat: `(module ` + memAlloc + `
  (func (export "proxy_abi_version_0_1_0"))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) (i32.const 0)))`,
		want: []string{"export proxy_on_request_headers has type (i32, i32, i32) -> i32, ABI 0.1.0 wants (i32, i32) -> i32"},
	}, {
		name: "v0.2.1 response headers with the v0.1 type",
		wat: `(module ` + memAlloc + `
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_response_headers") (param i32 i32) (result i32) (i32.const 0)))`,
		want: []string{"export proxy_on_response_headers has type (i32, i32) -> i32, ABI 0.2.1 wants (i32, i32, i32) -> i32"},
	}, {
		name: "v0.2.0 proxy_on_done without its result",
		wat: `(module ` + memAlloc + `
  (func (export "proxy_abi_version_0_2_0"))
  (func (export "proxy_on_done") (param i32)))`,
		want: []string{"proxy_on_done", "(i32) -> ()", "(i32) -> i32"},
	}, {
		name: "_initialize with parameters",
		wat: `(module ` + memAlloc + `
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "_initialize") (param i32)))`,
		want: []string{"export _initialize has type (i32) -> (), want () -> ()"},
	}, {
		name: "an import the host lacks",
		wat: `(module (import "env" "proxy_teleport" (func (param i32) (result i32))) ` + memAlloc + `
  (func (export "proxy_abi_version_0_2_1")))`,
		want: []string{"imports env.proxy_teleport, which the host does not provide"},
	}, {
		name: "several imports the host lacks, each named",
		wat: `(module
  (import "env" "proxy_teleport" (func))
  (import "wasi_snapshot_preview2" "fd_write" (func (param i32 i32 i32 i32) (result i32)))
  ` + memAlloc + `
  (func (export "proxy_abi_version_0_2_1")))`,
		want: []string{"env.proxy_teleport", "wasi_snapshot_preview2.fd_write"},
	}, {
		name: "a known import with the wrong type",
		wat: `(module (import "env" "proxy_log" (func (param i32 i32) (result i32))) ` + memAlloc + `
  (func (export "proxy_abi_version_0_2_1")))`,
		want: []string{"imports env.proxy_log with type (i32, i32) -> i32, the host's has type (i32, i32, i32) -> i32"},
	}, {
		name: "a WASI import with an i32 where the host has an i64",
		wat: `(module
  (import "wasi_snapshot_preview1" "clock_time_get" (func (param i32 i32 i32) (result i32))) ` + memAlloc + `
  (func (export "proxy_abi_version_0_2_1")))`,
		want: []string{"wasi_snapshot_preview1.clock_time_get", "(i32, i32, i32) -> i32", "(i32, i64, i32) -> i32"},
	}, {
		name: "an imported global",
		wat: `(module (import "env" "tenant_secret" (global i32)) ` + memAlloc + `
  (func (export "proxy_abi_version_0_2_1")))`,
		want: []string{"tenant_secret"},
	}, {
		name: "imported memory",
		wat: `(module (import "env" "memory" (memory 1))
  (export "memory" (memory 0))
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_memory_allocate") (param i32) (result i32) (i32.const 1024)))`,
		want: []string{"imports its memory"},
	}, {
		name: "imported table",
		wat: `(module (import "env" "table" (table 1 funcref)) ` + memAlloc + `
  (func (export "proxy_abi_version_0_2_1")))`,
		want: []string{"imports a table"},
	}, {
		name:  "minimum memory above memory_limit",
		wat:   `(module (memory (export "memory") 17) (func (export "proxy_abi_version_0_2_1")) (func (export "proxy_on_memory_allocate") (param i32) (result i32) (i32.const 1024)))`,
		limit: 1 << 20,
		want:  []string{"memory starts at 17 pages", "more than memory_limit 1048576"},
	}, {
		name: "a huge table",
		wat: `(module (table 1000000 funcref) ` + memAlloc + `
  (func (export "proxy_abi_version_0_2_1")))`,
		want: []string{"1000000 elements", fmt.Sprint(maxTableSize)},
	}, {
		name: "data segments larger than memory_limit",
		wat: `(module (memory (export "memory") 1)
  (data (i32.const 0) "` + strings.Repeat("x", 70000) + `")
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_memory_allocate") (param i32) (result i32) (i32.const 1024)))`,
		limit: 1 << 16,
		want:  []string{"data segments are", "memory_limit 65536"},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			module := guestbuild.WATText(t, tc.wat)
			err := loadErr(t, module, func(c *Config) {
				if tc.limit != 0 {
					c.Limits.MemoryLimit = tc.limit
				}
			})
			wantErrorContaining(t, err, tc.want...)
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("error %v does not wrap %v", err, tc.is)
			}
		})
	}
}

// Declared sizes that would cost every instance are refused before the
// compiler runs: quickly, and without memory in proportion to the claim.
func TestLoadRejectsHugeDeclarationsQuicklyWithBoundedMemory(t *testing.T) {
	voidType := section(1, []byte{1, 0x60, 0, 0}) // one type: () -> ()
	for _, tc := range []struct {
		name   string
		module []byte
		want   string
	}{{
		name: "a million functions",
		module: wasmModule(voidType,
			section(3, vec(1_000_000, []byte{0})),            // each of type 0
			section(10, vec(1_000_000, []byte{2, 0, 0x0b}))), // each body: no locals, end
		want: "defines 1000000 functions",
	}, {
		name:   "seventy thousand globals",
		module: wasmModule(section(6, vec(70_000, []byte{0x7f, 0, 0x41, 0, 0x0b}))), // i32 const 0
		want:   "defines 70000 globals",
	}, {
		// Preparing it would build a 4 GiB image of its initial memory.
		name: "a 4 GiB initial memory with a byte at its end",
		module: wasmModule(
			section(5, []byte{1, 0x00, 0x80, 0x80, 0x04}),           // 65536 pages
			section(11, []byte{1, 0x00, 0x41, 0x70, 0x0b, 1, 'x'})), // at i32.const -16
		want: "module memory starts at 65536 pages (4294967296 bytes), more than memory_limit",
	}} {
		t.Run(tc.name, func(t *testing.T) {
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			start := time.Now()
			err := loadErr(t, tc.module)
			elapsed := time.Since(start)
			runtime.ReadMemStats(&after)
			wantErrorContaining(t, err, tc.want)
			if elapsed > raceSlowdown*time.Second {
				t.Errorf("rejecting took %v", elapsed)
			}
			if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 1<<20 {
				t.Errorf("rejecting a %d-byte module allocated %d bytes", len(tc.module), alloc)
			}
		})
	}
}

// A module that is mostly one custom section, just under MaxModuleSize,
// loads quickly, and the plugin holds no more than the module's size for it.
// (wazero keeps custom sections for DWARF; modules past MaxModuleSize are
// refused by TestLoadRejectsModulesOverMaxModuleSize.)
func TestLoadHandlesAGiantCustomSectionQuickly(t *testing.T) {
	payload := append([]byte{7}, "garbage"...)
	payload = append(payload, make([]byte, MaxModuleSize-(1<<20))...)
	module := append(guest(t, ""), section(0, payload)...)
	payload = nil
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	start := time.Now()
	p, err := Load(context.Background(), config(module, func(c *Config) { c.CompilationCache = nil }))
	elapsed := time.Since(start)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	defer p.Close(context.Background())
	runtime.GC()
	runtime.ReadMemStats(&after)
	if elapsed > 5*time.Second {
		t.Errorf("loading took %v", elapsed)
	}
	if held := int64(after.HeapInuse) - int64(before.HeapInuse); held > int64(len(module))+8<<20 {
		t.Errorf("the loaded plugin holds %d MiB of heap for a %d MiB module", held>>20, len(module)>>20)
	}
	runtime.KeepAlive(module)
}

// H3: a filter refusing its configuration fails the load with ErrRejected
// and the reason it logged at error level.
func TestLoadRejectedConfigurationExplainsWhy(t *testing.T) {
	for _, tc := range []struct {
		name     string
		body     string
		callback abi.Callback
		want     string
	}{{
		name:     "proxy_on_vm_start returns false",
		callback: abi.OnVMStart,
		body: `
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32)
    (drop (call $proxy_log (i32.const 4) $"vm config needs a region"))
    (call $log $"info chatter after the error")
    (i32.const 0))`,
		want: "vm config needs a region",
	}, {
		name:     "proxy_on_configure returns false",
		callback: abi.OnConfigure,
		body: `
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_configure") (param $id i32) (param $size i32) (result i32)
    ;; Echo the plugin configuration back at error level: it must reach the error.
    (drop (call $proxy_get_buffer_bytes (i32.const 7) (i32.const 0) (local.get $size) (i32.const 16) (i32.const 20)))
    (drop (call $proxy_log (i32.const 4) (i32.load (i32.const 16)) (i32.load (i32.const 20))))
    (i32.const 0))`,
		want: "bad plugin config: tenant=acme",
	}, {
		name:     "critical level counts as an error",
		callback: abi.OnConfigure,
		body: `
  (func (export "proxy_on_configure") (param i32 i32) (result i32)
    (drop (call $proxy_log (i32.const 5) $"first problem"))
    (drop (call $proxy_log (i32.const 4) $"last problem"))
    (i32.const 0))`,
		want: "last problem",
	}} {
		t.Run(tc.name, func(t *testing.T) {
			sink := newExchange()
			err := loadErr(t, guest(t, tc.body), func(c *Config) {
				c.PluginConfig = []byte("bad plugin config: tenant=acme")
				c.LoadLog = sink
			})
			ge := wantGuestError(t, err, ErrRejected)
			if ge.Callback != string(tc.callback) {
				t.Errorf("failed callback %q, want %q", ge.Callback, tc.callback)
			}
			wantErrorContaining(t, err, tc.want, "test-filter")
			if strings.Contains(err.Error(), "info chatter") {
				t.Errorf("error %q quotes an info-level message", err)
			}
			if len(sink.messages()) == 0 {
				t.Error("LoadLog received nothing the filter logged")
			}
		})
	}
}

// Without a LoadLog, Load still explains a rejection.
func TestLoadRejectionWithoutLoadLog(t *testing.T) {
	err := loadErr(t, guest(t, `
  (func (export "proxy_on_configure") (param i32 i32) (result i32)
    (drop (call $proxy_log (i32.const 4) $"no upstream configured"))
    (i32.const 0))`))
	wantGuestError(t, err, ErrRejected)
	wantErrorContaining(t, err, "no upstream configured")
}

// H2: a filter that loops while starting fails the load at its time budget.
func TestLoadStopsFiltersLoopingWhileStarting(t *testing.T) {
	for _, tc := range []struct{ name, body string }{
		{"start section", `(start $spin)`},
		{"_initialize", `(func (export "_initialize") (call $spin))`},
		{"main after _initialize", `(func (export "_initialize")) (func (export "main") (param i32 i32) (result i32) (call $spin) (i32.const 0))`},
		{"_start", `(func (export "_start") (call $spin))`},
		{"proxy_on_vm_start", `(func (export "proxy_on_vm_start") (param i32 i32) (result i32) (call $spin) (i32.const 1))`},
		{"root proxy_on_context_create", `(func (export "proxy_on_context_create") (param i32 i32) (call $spin))`},
		{"proxy_on_configure", `(func (export "proxy_on_configure") (param i32 i32) (result i32) (call $spin) (i32.const 1))`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			module := guest(t, tc.body)
			start := time.Now()
			err := loadErr(t, module, withTimeout(50*time.Millisecond))
			elapsed := time.Since(start)
			wantGuestError(t, err, ErrTimeout)
			// Start-up steps get ten times the callback budget.
			if elapsed < 500*time.Millisecond || elapsed > 3*time.Second {
				t.Errorf("Load returned after %v with a 50ms budget, want 500ms (10x) to 3s", elapsed)
			}
		})
	}
}

func TestLoadAcceptsEachABIVersion(t *testing.T) {
	for _, tc := range []struct {
		export  string
		version abi.Version
		headers string // the parameters of the headers callbacks
	}{
		{"0_1_0", abi.Version010, "(param i32 i32)"},
		{"0_2_0", abi.Version020, "(param i32 i32 i32)"},
		{"0_2_1", abi.Version021, "(param i32 i32 i32)"},
	} {
		t.Run(string(tc.version), func(t *testing.T) {
			module := guestbuild.WATText(t, guestSrc(tc.export, `
  (func (export "proxy_on_request_headers") `+tc.headers+` (result i32)
    (call $logkv $"context" (local.get 0))
    (call $logkv $"headers" (local.get 1))
    (i32.const 0))
  (func (export "proxy_on_response_headers") `+tc.headers+` (result i32) (i32.const 0))`))
			p := mustLoad(t, module)
			if p.ABIVersion() != tc.version {
				t.Errorf("ABIVersion() = %q, want %q", p.ABIVersion(), tc.version)
			}
			if !p.Exports(abi.OnRequestHeaders) || p.Exports(abi.OnRequestBody) {
				t.Errorf("Exports: request headers %v, request body %v; want true, false",
					p.Exports(abi.OnRequestHeaders), p.Exports(abi.OnRequestBody))
			}
			// The callback gets its context id and header count, whatever
			// the number of parameters its version has.
			_, hc, ex := newHTTP(t, p)
			if out, err := hc.RequestHeaders(5, true); err != nil || out != Continue {
				t.Fatalf("RequestHeaders = %v, %v", out, err)
			}
			ex.wantLogs(t, "context=2", "headers=5")
		})
	}
}

func TestLoadReportsNameDigestAndLimits(t *testing.T) {
	module := guest(t, "")
	p := mustLoad(t, module, func(c *Config) { c.Name = "tenant-a"; c.Limits = Limits{} })
	if p.Name() != "tenant-a" {
		t.Errorf("Name() = %q", p.Name())
	}
	if !strings.HasPrefix(p.Digest(), "sha256:") || len(p.Digest()) != len("sha256:")+64 {
		t.Errorf("Digest() = %q", p.Digest())
	}
	other := mustLoad(t, append(module, section(0, []byte{1, 'x', 'y'})...))
	if other.Digest() == p.Digest() {
		t.Error("two different modules have the same digest")
	}
	want := Limits{Timeout: DefaultTimeout, MemoryLimit: DefaultMemoryLimit, MaxBodySize: DefaultMaxBodySize}
	if p.Limits() != want {
		t.Errorf("Limits() = %+v, want the defaults %+v", p.Limits(), want)
	}
}

// A command module runs _start, which may end with proc_exit(0); the
// instance is usable afterwards. Any other exit code fails the load.
func TestLoadCommandModules(t *testing.T) {
	body := func(code int) string {
		return fmt.Sprintf(`
  (func (export "_start") (call $log $"started") (call $proc_exit (i32.const %d)) (call $log $"after exit"))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) (call $log $"vm_start") (i32.const 1))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) (call $log $"request") (i32.const 0))`, code)
	}
	t.Run("exit 0", func(t *testing.T) {
		sink := newExchange()
		p := mustLoad(t, guest(t, body(0)), freshStart, func(c *Config) { c.LoadLog = sink })
		sink.wantLogs(t, "started", "vm_start")
		_, hc, ex := newHTTP(t, p)
		if _, err := hc.RequestHeaders(0, true); err != nil {
			t.Fatal(err)
		}
		ex.wantLogs(t, "started", "vm_start", "request")
	})
	t.Run("exit 0, restored from the snapshot", func(t *testing.T) {
		p := mustLoad(t, guest(t, body(0)))
		if p.StartMode() != "snapshot" {
			t.Fatalf("start mode %q", p.StartMode())
		}
		_, hc, ex := newHTTP(t, p)
		if _, err := hc.RequestHeaders(0, true); err != nil {
			t.Fatal(err)
		}
		ex.wantLogs(t, "request") // started and configured once, at load
	})
	t.Run("exit 3", func(t *testing.T) {
		err := loadErr(t, guest(t, body(3)))
		ge := wantGuestError(t, err, ErrExit)
		var exit *abi.ExitError
		if !errors.As(err, &exit) || exit.Code != 3 {
			t.Errorf("error %v does not carry exit code 3", err)
		}
		if ge.Callback != abi.ExportStart {
			t.Errorf("failed callback %q, want _start", ge.Callback)
		}
	})
}

// Start-up runs _initialize, then main, then proxy_on_vm_start, the root
// context and proxy_on_configure, each with its configuration; _start is
// ignored when _initialize exists.
func TestInstanceStartUpOrder(t *testing.T) {
	sink := newExchange()
	mustLoad(t, guest(t, `
  (func (export "_initialize") (call $log $"_initialize"))
  (func (export "_start") (call $log $"_start"))
  (func (export "main") (param i32 i32) (result i32) (call $log $"main") (i32.const 0))
  (func (export "proxy_on_vm_start") (param $id i32) (param $size i32) (result i32)
    (call $logkv $"vm_start" (local.get $id))
    (call $logkv $"vm_config_size" (local.get $size))
    (call $logkv $"vm_config_status"
      (call $proxy_get_buffer_bytes (i32.const 6) (i32.const 0) (local.get $size) (i32.const 16) (i32.const 20)))
    (call $logkvs $"vm_config")
    ;; The plugin configuration is not readable yet.
    (call $logkv $"plugin_config_status"
      (call $proxy_get_buffer_bytes (i32.const 7) (i32.const 0) (i32.const 10) (i32.const 16) (i32.const 20)))
    (i32.const 1))
  (func (export "proxy_on_context_create") (param $id i32) (param $parent i32)
    (call $logkv $"context_create" (local.get $id))
    (call $logkv $"parent" (local.get $parent)))
  (func (export "proxy_on_configure") (param $id i32) (param $size i32) (result i32)
    (call $logkv $"configure" (local.get $id))
    (drop (call $proxy_get_buffer_bytes (i32.const 7) (i32.const 0) (local.get $size) (i32.const 16) (i32.const 20)))
    (call $logkvs $"plugin_config")
    (call $logkv $"vm_config_status"
      (call $proxy_get_buffer_bytes (i32.const 6) (i32.const 0) (i32.const 10) (i32.const 16) (i32.const 20)))
    (i32.const 1))`), func(c *Config) {
		c.LoadLog = sink
		c.VMConfig = []byte("vm-cfg")
		c.PluginConfig = []byte(`{"plugin":1}`)
	})
	sink.wantLogs(t, "_initialize", "main",
		"vm_start=1", "vm_config_size=6", "vm_config_status=0", "vm_config=vm-cfg", "plugin_config_status=1",
		"context_create=1", "parent=0",
		"configure=1", `plugin_config={"plugin":1}`, "vm_config_status=1")
}

// H35, deep nesting: a function of 100,000 nested blocks (a 300 KB module)
// would take wazero minutes to compile, and compilation cannot be stopped
// (measured: 10k blocks 0.5 s and 29 MiB; 100k blocks 3.4 min and 308
// MiB). checkShape refuses it before the compiler starts, quickly and in
// bounded memory, and so too the small modules whose declarations make
// wazero allocate gigabytes: billions of locals, or of entries it allocates
// for on reading their count (a fatal out-of-memory error, not a panic).
func TestLoadRejectsDeeplyNestedCodeQuickly(t *testing.T) {
	// module has one function of type () -> () per body.
	module := func(bodies ...[]byte) []byte {
		code := uleb(uint64(len(bodies)))
		for _, b := range bodies {
			code = append(append(code, uleb(uint64(len(b)))...), b...)
		}
		return wasmModule(section(1, []byte{1, 0x60, 0, 0}),
			section(3, vec(len(bodies), []byte{0})), section(10, code))
	}
	// nested opens depth levels with open (the block type included) and
	// closes them, after no locals.
	nested := func(depth int, open ...byte) []byte {
		body := append([]byte{0}, bytes.Repeat(open, depth)...)
		return append(body, bytes.Repeat([]byte{0x0b}, depth+1)...) // and the function's end
	}
	locals := func(n uint64) []byte { return append(append([]byte{1}, uleb(n)...), 0x7f, 0x0b) } // n i32s; end
	fifty := make([][]byte, 100)
	for i := range fifty {
		fifty[i] = locals(maxFunctionLocals)
	}
	for _, tc := range []struct {
		name   string
		module []byte
		want   []string
	}{
		{"100,000 nested blocks", module(nested(100_000, 0x02, 0x40)),
			[]string{"function 0 nests blocks 100000 deep", fmt.Sprint(maxNesting)}},
		{"nested loops just over the limit, after a flat function", module(nested(0), nested(maxNesting+1, 0x03, 0x40)),
			[]string{fmt.Sprintf("function 1 nests blocks %d deep", maxNesting+1)}},
		{"nested ifs", module(nested(20_000, 0x41, 0x00, 0x04, 0x40)), []string{"nests blocks 20000 deep"}},
		{"four billion locals", module(locals(1<<32 - 1)),
			[]string{"function 0 declares 4294967295 locals", fmt.Sprint(maxFunctionLocals)}},
		{"a function over maxFunctionLocals", module(locals(maxFunctionLocals + 1)), []string{"declares 50001 locals"}},
		{"many functions at maxFunctionLocals", module(fifty...),
			[]string{"declare 5000000 locals in all", fmt.Sprint(maxLocals)}},
		{"a function over maxFunctionSize", module(append(append([]byte{0}, make([]byte, maxFunctionSize)...), 0x0b)),
			[]string{fmt.Sprintf("function 0 is %d bytes", maxFunctionSize+2)}},
		{"four billion data segments in 14 bytes", wasmModule(section(11, []byte{0xff, 0xff, 0xff, 0xff, 0x0f})),
			[]string{"not a WebAssembly module", "4294967295 entries cannot fit in 0 bytes"}},
		{"four billion function names", wasmModule(section(0, []byte{4, 'n', 'a', 'm', 'e', 1, 5, 0xff, 0xff, 0xff, 0xff, 0x0f})),
			[]string{"not a WebAssembly module", "4294967295 entries cannot fit in 0 bytes"}},
		{"too many function types", wasmModule(section(1, vec(maxTypes+1, []byte{0x60, 0, 0}))),
			[]string{fmt.Sprintf("declares %d function types, limit %d", maxTypes+1, maxTypes)}},
		{"too many entries", wasmModule( // a function, and a passive segment of maxEntries references to it
			section(1, []byte{1, 0x60, 0, 0}), section(3, []byte{1, 0}),
			section(9, append([]byte{1, 1, 0}, vec(maxEntries, []byte{0})...)),
			section(10, []byte{1, 2, 0, 0x0b})),
			[]string{fmt.Sprintf("have %d entries in all, limit %d", maxEntries+4, maxEntries)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			done := make(chan error, 1)
			start := time.Now()
			go func() {
				p, err := Load(context.Background(), config(tc.module, func(c *Config) { c.CompilationCache = nil }))
				if err == nil {
					_ = p.Close(context.Background())
				}
				done <- err
			}()
			select {
			case err := <-done:
				elapsed := time.Since(start)
				runtime.ReadMemStats(&after)
				wantErrorContaining(t, err, tc.want...)
				if elapsed > time.Second {
					t.Errorf("rejecting took %v", elapsed)
				}
				if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 1<<20 {
					t.Errorf("rejecting a %d-byte module allocated %d bytes", len(tc.module), alloc)
				}
			case <-time.After(30 * time.Second):
				t.Fatal("Load still compiling after 30s") // the goroutine keeps compiling until the binary exits
			}
		})
	}
}

// The real guests, built by their toolchains, stay well within the limits
// on code, and load.
func TestLoadAcceptsRealGuests(t *testing.T) {
	read := func(path string) []byte {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	type guest struct {
		name   string
		module []byte
		loads  bool // starts as a filter; the other WAT guests are for tests of failures
	}
	guests := []guest{
		{"stock Go SDK headers", goHeadersModule(t), true},
		{"clang wasi-libc add_header", read(guestbuild.C(t, "add_header")), true},
		{"wat add_header", addHeaderModule(t), true},
	}
	for _, name := range []string{"configure_loop", "memory_hog", "no_abi_version", "oob", "unknown_import"} {
		guests = append(guests, guest{"wat " + name, read(guestbuild.WAT(t, name)), false})
	}
	for _, g := range guests {
		t.Run(g.name, func(t *testing.T) {
			s, err := wasmbin.Summarize(g.module)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%d bytes, %d functions: nesting %d, largest function %d bytes, locals %d per function, %d in all, %d entries, %d types",
				len(g.module), s.Functions, s.MaxNesting, s.MaxBodySize, s.MaxLocals, s.Locals, s.Entries, s.Types)
			if s.MaxNesting > maxNesting/4 || s.MaxBodySize > maxFunctionSize/4 || s.MaxLocals > maxFunctionLocals/4 ||
				s.Locals > maxLocals/4 || s.Entries > maxEntries/4 || s.Types > maxTypes/4 {
				t.Errorf("within 4x of a limit: %+v", *s)
			}
			if _, err := checkShape(g.module, testLimits); err != nil {
				t.Fatal(err)
			}
			if g.loads {
				mustLoad(t, g.module)
			}
		})
	}
}

// A panic while preparing a module (a bug in Sluice) does not fail the
// load, let alone the process: the module runs as it is, and the start mode
// says why.
func TestLoadSurvivesAPanicInPrepare(t *testing.T) {
	defer func(prev func([]byte, wasmbin.DispatchSpec) (*wasmbin.Prepared, error)) { prepareModule = prev }(prepareModule)
	prepareModule = func([]byte, wasmbin.DispatchSpec) (*wasmbin.Prepared, error) { panic("index out of range") }
	p, err := Load(context.Background(), config(guest(t, "")))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close(context.Background())
	if mode := p.StartMode(); !strings.Contains(mode, "fresh, unprepared") || !strings.Contains(mode, "panicked") {
		t.Errorf("start mode %q", mode)
	}
	inst, err := p.NewInstance(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	inst.Close(context.Background())
}
