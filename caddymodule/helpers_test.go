package caddymodule

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/sluice-edge/sluice/abi"
	"github.com/sluice-edge/sluice/tests/guestbuild"
)

func TestMain(m *testing.M) {
	// Provision keeps wazero's compilation cache in Caddy's data directory.
	// Point it away from the user's real one; keep it between runs, since
	// compiling the Go SDK guest takes ~10 s under -race (entries are keyed
	// by module hash and wazero version, so reuse is safe).
	base, err := os.UserCacheDir()
	if err != nil {
		base = os.TempDir()
	}
	_ = os.Setenv("XDG_DATA_HOME", filepath.Join(base, "sluice-caddymodule-test"))
	os.Exit(m.Run())
}

// guest writes a Proxy-Wasm filter in WebAssembly text: a prelude with the
// imports, memory, allocator and ABI marker every test filter needs, data
// segments for the strings the test names, and the callbacks it adds.
//
// Memory layout: data segments from offset 16, scratch at 4096, return
// slots (pointer, size) at 8192 and 8196, an iovec at 8200, the heap from
// 64 KiB.
type guest struct {
	data  strings.Builder
	funcs strings.Builder
	next  int
}

func newGuest() *guest { return &guest{next: 16} }

// str stores s in a data segment and returns its "(ptr) (len)" arguments.
func (g *guest) str(s string) string {
	off := g.next
	fmt.Fprintf(&g.data, "  (data (i32.const %d) \"%s\")\n", off, watEscape(s))
	g.next += len(s) + 8 - len(s)%8
	if g.next >= 4096 {
		panic("guest data segments overflow the scratch area")
	}
	return fmt.Sprintf("(i32.const %d) (i32.const %d)", off, len(s))
}

// headers stores a serialized header map and returns its "(ptr) (len)".
func (g *guest) headers(pairs ...[2]string) string {
	return g.str(string(abi.AppendHeaderMap(nil, pairs)))
}

// fn adds WAT functions or globals to the module.
func (g *guest) fn(text string) *guest {
	g.funcs.WriteString(text)
	g.funcs.WriteString("\n")
	return g
}

func watEscape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x20 && c < 0x7f && c != '"' && c != '\\' {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "\\%02x", c)
		}
	}
	return b.String()
}

const guestPrelude = `
  (import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))
  (import "env" "proxy_get_header_map_value" (func $get_header (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_add_header_map_value" (func $add_header (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_replace_header_map_value" (func $replace_header (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_remove_header_map_value" (func $remove_header (param i32 i32 i32) (result i32)))
  (import "env" "proxy_get_buffer_bytes" (func $get_buffer (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_set_buffer_bytes" (func $set_buffer (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_send_local_response" (func $send_local (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_property" (func $get_property (param i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_set_property" (func $set_property (param i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_close_stream" (func $close_stream (param i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (global $heap (mut i32) (i32.const 65536))
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_memory_allocate") (param $size i32) (result i32)
    (local $ptr i32)
    (local.set $ptr (global.get $heap))
    (global.set $heap (i32.and (i32.add (i32.add (global.get $heap) (local.get $size)) (i32.const 7)) (i32.const -8)))
    (if (i32.gt_u (global.get $heap) (i32.mul (memory.size) (i32.const 65536)))
      (then (if (i32.lt_s (memory.grow (i32.add (i32.shr_u (local.get $size) (i32.const 16)) (i32.const 1))) (i32.const 0))
        (then unreachable))))
    (local.get $ptr))
  (func (export "proxy_on_context_create") (param i32 i32))
  ;; The pointer and size a host call returned in the return slots.
  (func $ret_ptr (result i32) (i32.load (i32.const 8192)))
  (func $ret_len (result i32) (i32.load (i32.const 8196)))
  ;; Writes size bytes at ptr to fd (1 stdout, 2 stderr) with fd_write.
  (func $write (param $fd i32) (param $ptr i32) (param $size i32)
    (i32.store (i32.const 8200) (local.get $ptr))
    (i32.store (i32.const 8204) (local.get $size))
    (drop (call $fd_write (local.get $fd) (i32.const 8200) (i32.const 1) (i32.const 8208))))
`

// wasm compiles the guest with wat2wasm and returns the path of the module.
func (g *guest) wasm(t testing.TB) string {
	t.Helper()
	return writeModule(t, "(module\n"+guestPrelude+g.data.String()+g.funcs.String()+")\n")
}

// writeModule compiles WebAssembly text and writes it to a temporary file.
func writeModule(t testing.TB, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "filter.wasm")
	if err := os.WriteFile(path, guestbuild.WATText(t, text), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// testHandler is a provisioned Handler whose logs a test can read.
type testHandler struct {
	*Handler
	logs     drainedLogs
	registry *prometheus.Registry // the config's metrics
}

// provision builds a Handler the way Caddy does: JSON into the struct,
// Provision with a caddy.Context, Validate; Cleanup when the test ends.
// extra holds more JSON fields, such as `"timeout": "50ms"`.
func provision(t testing.TB, modulePath, extra string) testHandler {
	t.Helper()
	cfg := fmt.Sprintf(`{"path": %q, "name": "test"`, modulePath)
	if extra != "" {
		cfg += ", " + extra
	}
	cfg += "}"
	var h Handler
	if err := json.Unmarshal([]byte(cfg), &h); err != nil {
		t.Fatalf("unmarshal %s: %v", cfg, err)
	}
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	t.Cleanup(cancel)
	if err := h.Provision(ctx); err != nil {
		t.Fatalf("provision: %v", err)
	}
	t.Cleanup(func() {
		if err := h.Cleanup(); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	if err := h.Validate(); err != nil {
		t.Fatalf("validate: %v", err)
	}
	core, logs := observer.New(zapcore.DebugLevel)
	h.logger = zap.New(core).With(zap.String("filter", h.Name))
	return testHandler{&h, drainedLogs{logs}, ctx.GetMetricsRegistry()}
}

// provisionGuest compiles g and provisions a handler for it.
func provisionGuest(t testing.TB, g *guest, extra string) testHandler {
	t.Helper()
	return provision(t, g.wasm(t), extra)
}

// caddyRequest prepares r as Caddy's server does (replacer, vars), so that
// placeholders and request variables work.
func caddyRequest(r *http.Request, w http.ResponseWriter) *http.Request {
	return caddyhttp.PrepareRequest(r, caddy.NewReplacer(), w, nil)
}

// newRequest is httptest.NewRequest prepared for Caddy. A body gets its
// Content-Length header, as a client's would.
func newRequest(method, target, body string) *http.Request {
	var r *http.Request
	if body == "" {
		r = httptest.NewRequest(method, target, nil)
	} else {
		r = httptest.NewRequest(method, target, strings.NewReader(body))
		r.Header.Set("Content-Length", fmt.Sprint(len(body)))
	}
	return caddyRequest(r, nil)
}

// nextHandler is the handler after the filter: it records what it saw and
// answers with serve.
type nextHandler struct {
	calls  atomic.Int32
	header http.Header
	method string
	uri    string
	host   string
	body   string
	bodyCL int64 // r.ContentLength
	serve  func(w http.ResponseWriter, r *http.Request) error
}

func (n *nextHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) error {
	n.calls.Add(1)
	n.header = r.Header.Clone()
	n.method, n.uri, n.host = r.Method, r.URL.RequestURI(), r.Host
	n.bodyCL = r.ContentLength
	if r.Body != nil {
		b, err := io.ReadAll(r.Body)
		n.body = string(b)
		if err != nil {
			return err
		}
	}
	if n.serve != nil {
		return n.serve(w, r)
	}
	w.Header().Set("Content-Type", "text/plain")
	_, err := w.Write([]byte("from next"))
	return err
}

// serve runs the handler on r with a recorder. It returns the handler's
// error and the value it panicked with, if any.
func (h testHandler) serve(r *http.Request, next caddyhttp.Handler) (rec *httptest.ResponseRecorder, err error, panicked any) {
	rec = httptest.NewRecorder()
	func() {
		defer func() { panicked = recover() }()
		err = h.ServeHTTP(rec, r, next)
	}()
	return rec, err, panicked
}

// statusOf returns the status of a caddyhttp.HandlerError, or 0.
func statusOf(err error) int {
	var he caddyhttp.HandlerError
	if errors.As(err, &he) {
		return he.StatusCode
	}
	return 0
}

// logged returns the log entries with message msg.
func (h testHandler) logged(msg string) []observer.LoggedEntry {
	return h.logs.FilterMessage(msg).All()
}

// httpServer serves h in a real HTTP server, turning handler errors into
// their status as Caddy's error handling would.
func httpServer(t *testing.T, h testHandler, next caddyhttp.Handler) *httptest.Server {
	t.Helper()
	srv := httptest.NewUnstartedServer(handlerFunc(h, next))
	srv.Start()
	t.Cleanup(srv.Close)
	return srv
}

// http2Server is httpServer over TLS with HTTP/2, as Caddy serves HTTPS.
func http2Server(t *testing.T, h testHandler, next caddyhttp.Handler) *httptest.Server {
	t.Helper()
	srv := httptest.NewUnstartedServer(handlerFunc(h, next))
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv
}

// handlerFunc serves h in front of next as Caddy would, answering its
// errors with their status.
func handlerFunc(h testHandler, next caddyhttp.Handler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		r = caddyRequest(r, w)
		if err := h.ServeHTTP(w, r, next); err != nil {
			code := statusOf(err)
			if code == 0 {
				code = http.StatusInternalServerError
			}
			w.WriteHeader(code)
		}
	}
}
