package caddymodule

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/sluice-edge/sluice/filters"
	"github.com/sluice-edge/sluice/tests/guestbuild"
)

// provisionErr provisions a handler from JSON and returns the error.
func provisionErr(t *testing.T, cfg string) (*Handler, error) {
	t.Helper()
	var h Handler
	if err := json.Unmarshal([]byte(cfg), &h); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	t.Cleanup(cancel)
	err := h.Provision(ctx)
	if err == nil {
		t.Cleanup(func() { _ = h.Cleanup() })
	}
	return &h, err
}

// configGuest accepts its plugin configuration only when it is "ok".
func configGuest() *guest {
	return newGuest().fn(`
  (func (export "proxy_on_configure") (param i32 i32) (result i32)
    (if (i32.ne (local.get 1) (i32.const 2)) (then (return (i32.const 0))))
    (drop (call $get_buffer (i32.const 7) (i32.const 0) (i32.const 2) (i32.const 8192) (i32.const 8196)))
    (i32.eq (i32.load16_u (call $ret_ptr)) (i32.const 0x6b6f)))`) // "ok"
}

func TestProvisionErrorsNameTheFileAndTheProblem(t *testing.T) {
	dir := t.TempDir()
	notWasm := filepath.Join(dir, "notwasm.wasm")
	if err := os.WriteFile(notWasm, []byte("#!/bin/sh\necho hello\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	truncated := filepath.Join(dir, "truncated.wasm")
	if err := os.WriteFile(truncated, []byte("\x00asm\x01\x00\x00\x00\x01\x05"), 0o644); err != nil {
		t.Fatal(err)
	}
	valid := newGuest().wasm(t)
	noABIPath := filepath.Join(dir, "noabi.wasm")
	noABIText := "(module (memory (export \"memory\") 1) (func (export \"proxy_on_memory_allocate\") (param i32) (result i32) (i32.const 0)))"
	writeWAT(t, noABIPath, noABIText)
	badImport := filepath.Join(dir, "badimport.wasm")
	writeWAT(t, badImport, `(module
  (import "env" "proxy_launch_missiles" (func (param i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_memory_allocate") (param i32) (result i32) (i32.const 1024)))`)
	okConfig := configGuest().wasm(t)
	badConfigFile := filepath.Join(dir, "bad.json")
	if err := os.WriteFile(badConfigFile, []byte("no"), 0o644); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name string
		cfg  map[string]any
		want []string
	}{
		{"no path", map[string]any{}, []string{"path to the .wasm module is required"}},
		{"missing file", map[string]any{"path": filepath.Join(dir, "missing.wasm")},
			[]string{filepath.Join(dir, "missing.wasm"), "reading module", "no such file"}},
		{"not wasm", map[string]any{"path": notWasm}, []string{notWasm, "not a WebAssembly module"}},
		{"truncated wasm", map[string]any{"path": truncated}, []string{truncated}},
		{"no ABI version export", map[string]any{"path": noABIPath}, []string{noABIPath, "proxy_abi_version"}},
		{"unknown import", map[string]any{"path": badImport}, []string{badImport, "env.proxy_launch_missiles"}},
		{"config_file missing", map[string]any{"path": valid, "config_file": filepath.Join(dir, "nope.json")},
			[]string{valid, "config_file", filepath.Join(dir, "nope.json")}},
		{"filter rejects its config", map[string]any{"path": okConfig, "config": "nope"},
			[]string{okConfig, "rejected its configuration", "proxy_on_configure"}},
		{"filter rejects its config_file", map[string]any{"path": okConfig, "config_file": badConfigFile},
			[]string{okConfig, "rejected its configuration"}},
		{"upstream not http", map[string]any{"path": valid, "upstreams": map[string]string{"auth": "ftp://x"}},
			[]string{valid, `upstream "auth"`, "must be http or https"}},
		{"upstream with a path", map[string]any{"path": valid, "upstreams": map[string]string{"keys": "http://k/v1"}},
			[]string{valid, `upstream "keys"`, "must not have a path"}},
		{"isolation unknown", map[string]any{"path": valid, "isolation": "tenant"},
			[]string{valid, `isolation "tenant"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, _ := json.Marshal(tt.cfg)
			h, err := provisionErr(t, string(b))
			if err == nil {
				t.Fatalf("provisioned %s", b)
			}
			for _, want := range tt.want {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not mention %q", err, want)
				}
			}
			if h.plugin != nil {
				t.Error("a failed Provision left a loaded plugin behind")
			}
		})
	}
}

func writeWAT(t *testing.T, path, text string) {
	t.Helper()
	if err := os.WriteFile(path, guestbuild.WATText(t, text), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestProvisionPassesConfigAndConfigFileToTheFilter(t *testing.T) {
	module := configGuest().wasm(t)
	if _, err := provisionErr(t, `{"path": "`+module+`", "config": "ok"}`); err != nil {
		t.Errorf("config \"ok\": %v", err)
	}
	file := filepath.Join(t.TempDir(), "ok.json")
	if err := os.WriteFile(file, []byte("ok"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := provisionErr(t, `{"path": "`+module+`", "config_file": "`+file+`"}`); err != nil {
		t.Errorf("config_file holding \"ok\": %v", err)
	}
}

func TestProvisionDefaultsTheNameToTheFileName(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "tenant-auth.v2.wasm")
	b, err := os.ReadFile(newGuest().wasm(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	h, err := provisionErr(t, `{"path": "`+path+`"}`)
	if err != nil {
		t.Fatal(err)
	}
	if h.Name != "tenant-auth.v2" {
		t.Errorf("name %q, want tenant-auth.v2", h.Name)
	}
	if h.plugin.Name() != "tenant-auth.v2" {
		t.Errorf("plugin name %q, want tenant-auth.v2", h.plugin.Name())
	}
}

func TestValidateErrorsNameTheFileAndTheProblem(t *testing.T) {
	tests := []struct {
		name string
		h    Handler
		want []string
	}{
		{"config and config_file", Handler{Path: "/srv/f.wasm", Config: "{}", ConfigFile: "/etc/f.json"},
			[]string{`"/srv/f.wasm"`, "config and config_file are exclusive"}},
		{"bad failure_policy", Handler{Path: "/srv/f.wasm", FailurePolicy: "maybe"},
			[]string{`"/srv/f.wasm"`, `failure_policy "maybe"`, FailClosed, FailOpen}},
		{"negative timeout", Handler{Path: "/srv/f.wasm", Timeout: -1}, []string{"/srv/f.wasm", "negative"}},
		{"negative memory_limit", Handler{Path: "/srv/f.wasm", MemoryLimit: -1}, []string{"negative"}},
		{"negative max_body_size", Handler{Path: "/srv/f.wasm", MaxBodySize: -1}, []string{"negative"}},
		{"every problem at once", Handler{Path: "/srv/f.wasm", Config: "a", ConfigFile: "b", FailurePolicy: "x"},
			[]string{"exclusive", `failure_policy "x"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.h.Validate()
			if err == nil {
				t.Fatal("accepted")
			}
			for _, want := range tt.want {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not mention %q", err, want)
				}
			}
		})
	}
	for _, ok := range []Handler{
		{Path: "f.wasm"},
		{Path: "f.wasm", FailurePolicy: FailOpen, Config: "x"},
		{Path: "f.wasm", FailurePolicy: FailClosed, ConfigFile: "x"},
	} {
		if err := ok.Validate(); err != nil {
			t.Errorf("Validate(%+v): %v", ok, err)
		}
	}
}

// Provision refuses a bad setting before loading anything: the module
// need not even exist for the error to be the setting's.
func TestProvisionValidatesBeforeLoading(t *testing.T) {
	h := Handler{Path: filepath.Join(t.TempDir(), "missing.wasm"), FailurePolicy: "maybe"}
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	err := h.Provision(ctx)
	if err == nil || !strings.Contains(err.Error(), `failure_policy "maybe"`) || strings.Contains(err.Error(), "reading module") {
		t.Errorf("Provision: %v, want the failure_policy error before any load", err)
	}
}

// Caddy provisions a new config before it cleans up the old one: an
// unchanged filter is loaded once and shared, and closed only when the last
// config lets go.
func TestProvisionSharesTheLoadedFilterUntilTheLastCleanup(t *testing.T) {
	module := newGuest().wasm(t)
	cfg := `{"path": "` + module + `", "name": "shared"}`
	a, err := provisionErr(t, cfg)
	if err != nil {
		t.Fatal(err)
	}
	b, err := provisionErr(t, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if a.plugin != b.plugin {
		t.Error("two configs with the same filter loaded it twice")
	}
	other, err := provisionErr(t, `{"path": "`+module+`", "name": "shared", "config": "different"}`)
	if err != nil {
		t.Fatal(err)
	}
	if other.plugin == a.plugin {
		t.Error("a different configuration shares the loaded filter")
	}
	if n, _ := plugins.References(a.poolKey); n != 2 {
		t.Errorf("references %d, want 2", n)
	}
	if err := a.Cleanup(); err != nil {
		t.Fatal(err)
	}
	if n, _ := plugins.References(a.poolKey); n != 1 {
		t.Errorf("references after one cleanup %d, want 1", n)
	}
	if err := b.Cleanup(); err != nil {
		t.Fatal(err)
	}
	if _, ok := plugins.References(a.poolKey); ok {
		t.Error("the filter is still loaded after the last cleanup")
	}
	// b's t.Cleanup calls Cleanup again; mark it done.
	a.plugin, b.plugin = nil, nil
}

// A panic while loading a filter (a bug in Sluice) fails the provision with
// an error, and the next provision of the same filter does not hang on the
// shared pool's key.
func TestProvisionSurvivesAPanicInLoad(t *testing.T) {
	defer func(prev func(context.Context, filters.Config) (*filters.Plugin, error)) { loadPlugin = prev }(loadPlugin)
	loadPlugin = func(context.Context, filters.Config) (*filters.Plugin, error) { panic("index out of range") }
	cfg := fmt.Sprintf(`{"path": %q}`, newGuest().wasm(t))
	for attempt := range 2 {
		done := make(chan error, 1)
		go func() {
			_, err := provisionErr(t, cfg)
			done <- err
		}()
		select {
		case err := <-done:
			if err == nil || !strings.Contains(err.Error(), "panicked") {
				t.Errorf("attempt %d: %v", attempt, err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("attempt %d: provisioning hangs", attempt)
		}
	}
}

// SLUICE_MEMORY_BUDGET sets the process's memory budget; a value that is
// not a size is an error naming it.
func TestMemoryBudgetFromTheEnvironment(t *testing.T) {
	old := filters.DefaultMemoryBudget.Limit()
	t.Cleanup(func() { filters.DefaultMemoryBudget.SetLimit(old) })
	t.Setenv("SLUICE_MEMORY_BUDGET", "8GiB")
	if err := setMemoryBudget(); err != nil || filters.DefaultMemoryBudget.Limit() != 8<<30 {
		t.Errorf("8GiB: limit %d, err %v", filters.DefaultMemoryBudget.Limit(), err)
	}
	t.Setenv("SLUICE_MEMORY_BUDGET", "bogus")
	if err := setMemoryBudget(); err == nil || !strings.Contains(err.Error(), "SLUICE_MEMORY_BUDGET") {
		t.Errorf("bogus: %v", err)
	}
}
