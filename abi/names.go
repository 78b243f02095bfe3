package abi

import "github.com/tetratelabs/wazero/api"

// Version is a Proxy-Wasm ABI version a module advertises by exporting a
// marker function.
type Version string

// The ABI versions Sluice accepts. v0.2.0 is what the official Go SDK emits.
const (
	Version010 Version = "0.1.0"
	Version020 Version = "0.2.0"
	Version021 Version = "0.2.1"
)

// VersionExports maps each accepted version's marker export to the version.
var VersionExports = map[string]Version{
	"proxy_abi_version_0_1_0": Version010,
	"proxy_abi_version_0_2_0": Version020,
	"proxy_abi_version_0_2_1": Version021,
}

// Module names a filter imports host functions from.
const (
	ModuleEnv          = "env"
	ModuleWASI         = "wasi_snapshot_preview1"
	ModuleWASIUnstable = "wasi_unstable" // AssemblyScript's proxy-runtime
)

// Exports a module provides and the host reads or calls.
const (
	ExportMemory   = "memory"
	ExportAllocate = "proxy_on_memory_allocate"
	ExportMalloc   = "malloc" // deprecated allocator, used only without ExportAllocate
	ExportInit     = "_initialize"
	ExportStart    = "_start" // called only when _initialize is absent
	ExportMain     = "main"   // called after _initialize, when exported
)

// Callback names the guest callbacks (proxy_on_*) the host drives.
type Callback string

// The callbacks of an HTTP filter and its root context.
const (
	OnVMStart          Callback = "proxy_on_vm_start"
	OnConfigure        Callback = "proxy_on_configure"
	OnContextCreate    Callback = "proxy_on_context_create"
	OnRequestHeaders   Callback = "proxy_on_request_headers"
	OnRequestBody      Callback = "proxy_on_request_body"
	OnRequestTrailers  Callback = "proxy_on_request_trailers"
	OnResponseHeaders  Callback = "proxy_on_response_headers"
	OnResponseBody     Callback = "proxy_on_response_body"
	OnResponseTrailers Callback = "proxy_on_response_trailers"
	OnDone             Callback = "proxy_on_done"
	OnLog              Callback = "proxy_on_log"
	OnDelete           Callback = "proxy_on_delete"
	OnTick             Callback = "proxy_on_tick"
	OnQueueReady       Callback = "proxy_on_queue_ready"
	OnHTTPCallResponse Callback = "proxy_on_http_call_response"
	OnForeignFunction  Callback = "proxy_on_foreign_function"
)

const (
	i32 = api.ValueTypeI32
	i64 = api.ValueTypeI64
)

// Signature is a function type: its parameter and result value types.
type Signature struct {
	Params, Results []api.ValueType
}

func sig(params []api.ValueType, results ...api.ValueType) Signature {
	return Signature{Params: params, Results: results}
}

func i32s(n int) []api.ValueType {
	s := make([]api.ValueType, n)
	for i := range s {
		s[i] = i32
	}
	return s
}

// Equal reports whether two signatures are the same function type.
func (s Signature) Equal(params, results []api.ValueType) bool {
	return string(s.Params) == string(params) && string(s.Results) == string(results)
}

func (s Signature) String() string { return FormatSignature(s.Params, s.Results) }

// FormatSignature renders a function type the way the WebAssembly text format
// does, for error messages: "(i32, i32) -> i32".
func FormatSignature(params, results []api.ValueType) string {
	out := "("
	for i, p := range params {
		if i > 0 {
			out += ", "
		}
		out += api.ValueTypeName(p)
	}
	out += ") -> "
	switch len(results) {
	case 0:
		out += "()"
	case 1:
		out += api.ValueTypeName(results[0])
	default:
		out += "("
		for i, r := range results {
			if i > 0 {
				out += ", "
			}
			out += api.ValueTypeName(r)
		}
		out += ")"
	}
	return out
}

// CallbackSignature is the function type a module must give an exported
// callback under the ABI version v. ok is false for names that are not
// callbacks of an HTTP filter (the host ignores those).
func CallbackSignature(v Version, c Callback) (s Signature, ok bool) {
	switch c {
	case OnVMStart, OnConfigure:
		return sig(i32s(2), i32), true
	case OnContextCreate:
		return sig(i32s(2)), true
	case OnRequestHeaders, OnResponseHeaders:
		if v == Version010 { // v0.1.0 has no end_of_stream flag on headers
			return sig(i32s(2), i32), true
		}
		return sig(i32s(3), i32), true
	case OnRequestBody, OnResponseBody:
		return sig(i32s(3), i32), true
	case OnRequestTrailers, OnResponseTrailers:
		return sig(i32s(2), i32), true
	case OnDone:
		return sig(i32s(1), i32), true
	case OnLog, OnDelete, OnTick:
		return sig(i32s(1)), true
	case OnQueueReady:
		return sig(i32s(2)), true
	case OnHTTPCallResponse:
		return sig(i32s(5)), true
	case OnForeignFunction:
		return sig(i32s(3)), true
	}
	return Signature{}, false
}

// AllocatorSignature is the type of the guest allocator
// (proxy_on_memory_allocate or malloc).
var AllocatorSignature = sig(i32s(1), i32)

// Callbacks lists every callback CallbackSignature knows, for validation.
var Callbacks = []Callback{
	OnVMStart, OnConfigure, OnContextCreate,
	OnRequestHeaders, OnRequestBody, OnRequestTrailers,
	OnResponseHeaders, OnResponseBody, OnResponseTrailers,
	OnDone, OnLog, OnDelete, OnTick, OnQueueReady, OnHTTPCallResponse, OnForeignFunction,
}
