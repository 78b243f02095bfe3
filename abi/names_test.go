package abi

import (
	"context"
	"testing"

	"github.com/tetratelabs/wazero"
	wasip1 "github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"
)

func TestLookupImportSpotChecks(t *testing.T) {
	for _, tc := range []struct {
		module, name string
		want         string
	}{
		{ModuleEnv, "proxy_log", "iii>i"},
		{ModuleEnv, "proxy_record_metric", "il>i"},
		{ModuleEnv, "proxy_increment_metric", "il>i"},
		{ModuleEnv, "proxy_send_local_response", "iiiiiiii>i"},
		{ModuleEnv, "proxy_done", ">i"},
		{ModuleWASI, "clock_time_get", "ili>i"},
		{ModuleWASI, "proc_exit", "i>"},
		{ModuleWASI, "path_open", "iiiiillii>i"},
		{ModuleWASI, "fd_write", "iiii>i"},
		{ModuleWASIUnstable, "proc_exit", "i>"},
		{ModuleWASIUnstable, "fd_write", "iiii>i"},
	} {
		s, ok := LookupImport(tc.module, tc.name)
		params, results := parseSig(tc.want)
		if !ok {
			t.Errorf("LookupImport(%s, %s) not found", tc.module, tc.name)
			continue
		}
		if !s.Equal(params, results) {
			t.Errorf("%s.%s has type %v, want %s", tc.module, tc.name, s, FormatSignature(params, results))
		}
	}
}

// TestLookupImportMatchesSpec checks every host function against the
// specifications' types, in both directions: nothing the spec lists is
// missing, and the host exports nothing the test does not know.
func TestLookupImportMatchesSpec(t *testing.T) {
	for module, spec := range map[string]map[string]string{
		ModuleEnv: envSpec, ModuleWASI: wasiSpec, ModuleWASIUnstable: wasiSpec,
	} {
		for name, want := range spec {
			s, ok := LookupImport(module, name)
			params, results := parseSig(want)
			if !ok {
				t.Errorf("%s.%s: not found", module, name)
			} else if !s.Equal(params, results) {
				t.Errorf("%s.%s has type %v, want %s", module, name, s, FormatSignature(params, results))
			}
		}
		for name := range hostFunctions[module] {
			if _, ok := spec[name]; !ok {
				t.Errorf("host exports %s.%s, which no specification in this test lists", module, name)
			}
		}
	}
	if len(hostFunctions) != 3 {
		t.Errorf("host modules: %d, want env and the two WASI modules", len(hostFunctions))
	}
}

// TestWASITypesMatchWazero cross-checks the WASI types against wazero's own
// wasi_snapshot_preview1, an implementation independent of this package.
func TestWASITypesMatchWazero(t *testing.T) {
	ctx := context.Background()
	r := wazero.NewRuntime(ctx)
	defer r.Close(ctx)
	wasip1.MustInstantiate(ctx, r)
	defs := r.Module(wasip1.ModuleName).ExportedFunctionDefinitions()
	for name := range hostFunctions[ModuleWASI] {
		def, ok := defs[name]
		if !ok {
			t.Errorf("wazero's WASI has no %s", name)
			continue
		}
		s, _ := LookupImport(ModuleWASI, name)
		if !s.Equal(def.ParamTypes(), def.ResultTypes()) {
			t.Errorf("%s: host %v, wazero %s", name, s, FormatSignature(def.ParamTypes(), def.ResultTypes()))
		}
	}
}

func TestLookupImportUnknown(t *testing.T) {
	for _, tc := range [][2]string{
		{ModuleEnv, "proxy_no_such_function"},
		{ModuleEnv, ""},
		{ModuleEnv, "proxy_on_request_headers"}, // a guest callback, not a host function
		{ModuleEnv, "fd_write"},                 // WASI names live in the WASI modules
		{ModuleWASI, "proxy_log"},
		{ModuleWASI, "sock_open"},
		{"wasi_snapshot_preview2", "fd_write"},
		{"", "proxy_log"},
		{"ENV", "proxy_log"},
	} {
		if s, ok := LookupImport(tc[0], tc[1]); ok {
			t.Errorf("LookupImport(%q, %q) = %v, want not found", tc[0], tc[1], s)
		}
	}
}

// TestGenericGuestInstantiates imports every function of the spec tables
// with the spec's types: wazero refuses the instance if the host registered
// any of them under another type, so this checks InstantiateHostModules
// itself and not just the table LookupImport reads.
func TestGenericGuestInstantiates(t *testing.T) {
	g := newTestGuest(t, nil)
	if g.mem == nil || g.mem.Size() != pageSize {
		t.Fatalf("generic guest memory: %v", g.mem)
	}
	for _, module := range []string{ModuleEnv, ModuleWASI, ModuleWASIUnstable} {
		for name := range hostFunctions[module] {
			if g.mod.ExportedFunction(module+"."+name) == nil {
				t.Errorf("generic guest lacks a trampoline for %s.%s", module, name)
			}
		}
	}
}

func TestInstantiateHostModulesRejectsWrongImportType(t *testing.T) {
	ctx := context.Background()
	r := newRuntime(t)
	bin := compileWAT(t, `(module
  (import "env" "proxy_log" (func (param i32 i32) (result i32)))
  (memory (export "memory") 1))`)
	if _, err := r.InstantiateWithConfig(ctx, bin, wazero.NewModuleConfig().WithName("")); err == nil {
		t.Error("a guest importing proxy_log with the wrong type was instantiated")
	}
}

// TestVersionExports pins the marker exports of the accepted ABI versions.
func TestVersionExports(t *testing.T) {
	want := map[string]Version{
		"proxy_abi_version_0_1_0": "0.1.0",
		"proxy_abi_version_0_2_0": "0.2.0",
		"proxy_abi_version_0_2_1": "0.2.1",
	}
	if len(VersionExports) != len(want) {
		t.Errorf("VersionExports = %v", VersionExports)
	}
	for k, v := range want {
		if VersionExports[k] != v {
			t.Errorf("VersionExports[%s] = %q, want %q", k, VersionExports[k], v)
		}
	}
}
