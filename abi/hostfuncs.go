package abi

import (
	"context"
	"errors"
	"runtime/debug"
	"strings"
	"time"
	"unsafe"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
)

// Limits on what one host call accepts from a guest. Larger inputs get
// BAD_ARGUMENT before anything is copied out of guest memory.
const (
	// MaxHeaderBytes bounds a serialized header map and a single header name
	// or value, like net/http's DefaultMaxHeaderBytes.
	MaxHeaderBytes = 1 << 20
	// MaxHeaderPairs bounds the pairs of one serialized header map.
	MaxHeaderPairs = 1 << 12
	// MaxPropertyPath bounds a property path.
	MaxPropertyPath = 4 << 10
	// maxStatusDetails bounds the details text of a local response; longer
	// text is cut, it only feeds logs.
	maxStatusDetails = 256
)

// errReentered is the fault of an allocator that calls host functions.
var errReentered = errors.New("called from inside the guest memory allocator")

// hostFunction is one function a host module exports to guests.
type hostFunction struct {
	module  string
	name    string
	params  []string        // parameter names, shown in wazero's stack traces
	types   []api.ValueType // parameter types; nil means every parameter is i32
	results []api.ValueType
	fn      api.GoModuleFunc
}

func (f *hostFunction) signature() Signature {
	types := f.types
	if types == nil {
		types = i32s(len(f.params))
	}
	return Signature{Params: types, Results: f.results}
}

// proxyFunc declares an "env" function returning proxy_status_t. The guest
// allocator may not call it (see Guest.allocating).
func proxyFunc(name string, params []string, fn func(ctx context.Context, c *call, s []uint64) Status) *hostFunction {
	return &hostFunction{
		module: ModuleEnv, name: name, params: params, results: []api.ValueType{i32},
		fn: func(ctx context.Context, mod api.Module, s []uint64) {
			c := callFrom(ctx, mod)
			if c.guest.allocating {
				panic(&GuestFault{Func: name, Err: errReentered})
			}
			s[0] = uint64(fn(ctx, c, s))
		},
	}
}

// unimplemented declares a Proxy-Wasm function whose feature Sluice does not
// offer (yet): it exists, so every filter instantiates, and answers
// UNIMPLEMENTED.
func unimplemented(name string, params []string, types ...api.ValueType) *hostFunction {
	f := proxyFunc(name, params, func(context.Context, *call, []uint64) Status { return StatusUnimplemented })
	if len(types) > 0 {
		f.types = types
	}
	return f
}

// hostFunctions lists every function the host exports, by module.
var hostFunctions = buildHostFunctions()

func buildHostFunctions() map[string]map[string]*hostFunction {
	all := append(proxyFunctions(), serviceFunctions()...)
	all = append(all, wasiFunctions(ModuleWASI)...)
	all = append(all, wasiFunctions(ModuleWASIUnstable)...)
	all = append(all, emscriptenFunctions()...)
	byModule := map[string]map[string]*hostFunction{}
	for _, f := range all {
		if byModule[f.module] == nil {
			byModule[f.module] = map[string]*hostFunction{}
		}
		byModule[f.module][f.name] = f
	}
	return byModule
}

// LookupImport returns the signature of the host function a module may
// import as module.name, or false when the host has no such function.
func LookupImport(module, name string) (Signature, bool) {
	f, ok := hostFunctions[module][name]
	if !ok {
		return Signature{}, false
	}
	return f.signature(), true
}

// InstantiateHostModules registers the host modules in r: "env" with the
// Proxy-Wasm functions, "wasi_snapshot_preview1" and "wasi_unstable" with the
// WASI functions filters import. Each function recovers its own panics and
// re-raises them as HostPanic, so a host bug is never taken for a guest trap.
func InstantiateHostModules(ctx context.Context, r wazero.Runtime) error {
	for module, funcs := range hostFunctions {
		b := r.NewHostModuleBuilder(module)
		for _, f := range funcs {
			s := f.signature()
			b.NewFunctionBuilder().
				WithGoModuleFunction(guard(f.name, f.fn), s.Params, s.Results).
				WithParameterNames(f.params...).
				Export(f.name)
		}
		if _, err := b.Instantiate(ctx); err != nil {
			return err
		}
	}
	return nil
}

// guard turns a panic inside a host function into a HostPanic, passing
// through the panics host functions raise on purpose.
func guard(name string, fn api.GoModuleFunc) api.GoModuleFunc {
	return func(ctx context.Context, mod api.Module, stack []uint64) {
		defer func() {
			switch r := recover().(type) {
			case nil:
			case *ExitError, *GuestFault:
				panic(r)
			default:
				panic(&HostPanic{Func: name, Value: r, Stack: debug.Stack()})
			}
		}()
		fn(ctx, mod, stack)
	}
}

func u32(v uint64) uint32 { return uint32(v) }

// readString copies size bytes at ptr out of guest memory, refusing more
// than limit bytes.
func (g *Guest) readString(ptr, size uint32, limit int) (string, Status) {
	if size > uint32(limit) {
		return "", StatusBadArgument
	}
	b, ok := g.read(ptr, size)
	if !ok {
		return "", StatusInvalidMemoryAccess
	}
	return string(b), StatusOK
}

// bytesOf views s as bytes without copying; the result must not be changed.
func bytesOf(s string) []byte { return unsafe.Slice(unsafe.StringData(s), len(s)) }

// SplitPropertyPath splits a property path into its segments. Paths are
// NUL-separated ("request\x00path"), as every SDK sends them; a path without
// NUL is split on dots ("request.path") for hand-written filters.
func SplitPropertyPath(path string) []string {
	sep := "\x00"
	if !strings.Contains(path, sep) {
		sep = "."
	}
	return strings.Split(strings.TrimSuffix(path, sep), sep)
}

func proxyFunctions() []*hostFunction {
	return []*hostFunction{
		proxyFunc("proxy_log", []string{"log_level", "message_data", "message_size"},
			func(_ context.Context, c *call, s []uint64) Status {
				level := LogLevel(s[0])
				if !level.Valid() {
					return StatusBadArgument
				}
				msg, ok := c.guest.read(u32(s[1]), u32(s[2]))
				if !ok {
					return StatusInvalidMemoryAccess
				}
				c.host.Log(level, msg)
				return StatusOK
			}),
		proxyFunc("proxy_get_log_level", []string{"return_log_level"},
			func(_ context.Context, c *call, s []uint64) Status {
				if !c.guest.writeUint32(u32(s[0]), uint32(c.host.LogLevel())) {
					return StatusInvalidMemoryAccess
				}
				return StatusOK
			}),
		proxyFunc("proxy_get_current_time_nanoseconds", []string{"return_time"},
			func(_ context.Context, c *call, s []uint64) Status {
				if !c.guest.writeUint64(u32(s[0]), uint64(time.Now().UnixNano())) {
					return StatusInvalidMemoryAccess
				}
				return StatusOK
			}),
		proxyFunc("proxy_set_effective_context", []string{"context_id"},
			func(_ context.Context, c *call, s []uint64) Status { return c.host.SetEffectiveContext(u32(s[0])) }),
		proxyFunc("proxy_done", nil,
			func(_ context.Context, c *call, _ []uint64) Status { return c.host.Done() }),

		// Buffers.
		proxyFunc("proxy_get_buffer_bytes", []string{"buffer_id", "start", "max_size", "return_value_data", "return_value_size"},
			getBufferBytes),
		proxyFunc("proxy_set_buffer_bytes", []string{"buffer_id", "start", "size", "value_data", "value_size"},
			setBufferBytes),
		proxyFunc("proxy_get_buffer_status", []string{"buffer_id", "return_buffer_size", "return_unused"},
			func(_ context.Context, c *call, s []uint64) Status {
				t := BufferType(s[0])
				if !t.Valid() {
					return StatusBadArgument
				}
				buf, st := c.host.Buffer(t, false)
				if st != StatusOK {
					return st
				}
				if !c.guest.inBounds(u32(s[1]), 4) || !c.guest.inBounds(u32(s[2]), 4) {
					return StatusInvalidMemoryAccess
				}
				c.guest.writeUint32(u32(s[1]), uint32(len(buf.Bytes())))
				c.guest.writeUint32(u32(s[2]), 0)
				return StatusOK
			}),
		// proxy_get_configuration is ABI v0.1.0's way to read the plugin
		// (or, in proxy_on_vm_start, the VM) configuration.
		proxyFunc("proxy_get_configuration", []string{"return_value_data", "return_value_size"},
			func(ctx context.Context, c *call, s []uint64) Status {
				buf, st := c.host.Buffer(BufferPluginConfiguration, false)
				if st != StatusOK {
					if buf, st = c.host.Buffer(BufferVMConfiguration, false); st != StatusOK {
						return st
					}
				}
				return c.guest.copyOut(ctx, buf.Bytes(), u32(s[0]), u32(s[1]))
			}),

		// Header maps.
		proxyFunc("proxy_get_header_map_size", []string{"map_id", "return_serialized_pairs_size"},
			func(_ context.Context, c *call, s []uint64) Status {
				m, st := headerMap(c, s[0], false)
				if st != StatusOK {
					return st
				}
				if !c.guest.writeUint32(u32(s[1]), uint32(HeaderMapSize(m.Pairs()))) {
					return StatusInvalidMemoryAccess
				}
				return StatusOK
			}),
		proxyFunc("proxy_get_header_map_pairs", []string{"map_id", "return_serialized_pairs_data", "return_serialized_pairs_size"},
			func(ctx context.Context, c *call, s []uint64) Status {
				m, st := headerMap(c, s[0], false)
				if st != StatusOK {
					return st
				}
				pairs := m.Pairs()
				return c.guest.copyOut(ctx, AppendHeaderMap(make([]byte, 0, HeaderMapSize(pairs)), pairs), u32(s[1]), u32(s[2]))
			}),
		proxyFunc("proxy_set_header_map_pairs", []string{"map_id", "serialized_pairs_data", "serialized_pairs_size"},
			func(_ context.Context, c *call, s []uint64) Status {
				m, st := headerMap(c, s[0], true)
				if st != StatusOK {
					return st
				}
				pairs, st := readHeaderMap(c.guest, u32(s[1]), u32(s[2]))
				if st != StatusOK {
					return st
				}
				return m.SetPairs(pairs)
			}),
		proxyFunc("proxy_get_header_map_value", []string{"map_id", "key_data", "key_size", "return_value_data", "return_value_size"},
			func(ctx context.Context, c *call, s []uint64) Status {
				m, st := headerMap(c, s[0], false)
				if st != StatusOK {
					return st
				}
				key, st := c.guest.readString(u32(s[1]), u32(s[2]), MaxHeaderBytes)
				if st != StatusOK {
					return st
				}
				value, found := m.Get(key)
				if !found {
					return StatusNotFound
				}
				return c.guest.copyOut(ctx, bytesOf(value), u32(s[3]), u32(s[4]))
			}),
		proxyFunc("proxy_add_header_map_value", []string{"map_id", "key_data", "key_size", "value_data", "value_size"},
			func(_ context.Context, c *call, s []uint64) Status {
				return withKeyValue(c, s, HeaderMap.Add)
			}),
		proxyFunc("proxy_replace_header_map_value", []string{"map_id", "key_data", "key_size", "value_data", "value_size"},
			func(_ context.Context, c *call, s []uint64) Status {
				return withKeyValue(c, s, HeaderMap.Replace)
			}),
		proxyFunc("proxy_remove_header_map_value", []string{"map_id", "key_data", "key_size"},
			func(_ context.Context, c *call, s []uint64) Status {
				m, st := headerMap(c, s[0], true)
				if st != StatusOK {
					return st
				}
				key, st := c.guest.readString(u32(s[1]), u32(s[2]), MaxHeaderBytes)
				if st != StatusOK {
					return st
				}
				return m.Remove(key)
			}),

		// Stream control.
		proxyFunc("proxy_continue_stream", []string{"stream_type"},
			func(_ context.Context, c *call, s []uint64) Status {
				if t := StreamType(s[0]); t.Valid() {
					return c.host.ContinueStream(t)
				}
				return StatusBadArgument
			}),
		proxyFunc("proxy_close_stream", []string{"stream_type"},
			func(_ context.Context, c *call, s []uint64) Status {
				if t := StreamType(s[0]); t.Valid() {
					return c.host.CloseStream(t)
				}
				return StatusBadArgument
			}),
		// ABI v0.1.0 spellings of proxy_continue_stream, and a route cache
		// Caddy does not have.
		proxyFunc("proxy_continue_request", nil,
			func(_ context.Context, c *call, _ []uint64) Status { return c.host.ContinueStream(StreamHTTPRequest) }),
		proxyFunc("proxy_continue_response", nil,
			func(_ context.Context, c *call, _ []uint64) Status { return c.host.ContinueStream(StreamHTTPResponse) }),
		proxyFunc("proxy_clear_route_cache", nil,
			func(context.Context, *call, []uint64) Status { return StatusOK }),
		proxyFunc("proxy_send_local_response",
			[]string{"status_code", "status_code_details_data", "status_code_details_size", "body_data", "body_size",
				"serialized_headers_data", "serialized_headers_size", "grpc_status"},
			sendLocalResponse),
		proxyFunc("proxy_get_status", []string{"return_status_code", "return_status_message_data", "return_status_message_size"},
			func(ctx context.Context, c *call, s []uint64) Status {
				code, msg, st := c.host.CallStatus()
				if st != StatusOK {
					return st
				}
				if !c.guest.inBounds(u32(s[0]), 4) {
					return StatusInvalidMemoryAccess
				}
				if st := c.guest.copyOut(ctx, msg, u32(s[1]), u32(s[2])); st != StatusOK {
					return st
				}
				c.guest.writeUint32(u32(s[0]), code)
				return StatusOK
			}),

		// Properties.
		proxyFunc("proxy_get_property", []string{"path_data", "path_size", "return_value_data", "return_value_size"},
			func(ctx context.Context, c *call, s []uint64) Status {
				path, st := c.guest.readString(u32(s[0]), u32(s[1]), MaxPropertyPath)
				if st != StatusOK {
					return st
				}
				value, st := c.host.Property(SplitPropertyPath(path))
				if st != StatusOK {
					return st
				}
				return c.guest.copyOut(ctx, value, u32(s[2]), u32(s[3]))
			}),
		proxyFunc("proxy_set_property", []string{"path_data", "path_size", "value_data", "value_size"},
			func(_ context.Context, c *call, s []uint64) Status {
				path, st := c.guest.readString(u32(s[0]), u32(s[1]), MaxPropertyPath)
				if st != StatusOK {
					return st
				}
				value, ok := c.guest.read(u32(s[2]), u32(s[3]))
				if !ok {
					return StatusInvalidMemoryAccess
				}
				return c.host.SetProperty(SplitPropertyPath(path), value)
			}),

		// gRPC calls: not offered (see RATIONALE.md).
		unimplemented("proxy_grpc_call", []string{"upstream_name_data", "upstream_name_size", "service_name_data",
			"service_name_size", "method_name_data", "method_name_size", "serialized_initial_metadata_data",
			"serialized_initial_metadata_size", "message_data", "message_size", "timeout", "return_call_id"}),
		unimplemented("proxy_grpc_stream", []string{"upstream_name_data", "upstream_name_size", "service_name_data",
			"service_name_size", "method_name_data", "method_name_size", "serialized_initial_metadata_data",
			"serialized_initial_metadata_size", "return_stream_id"}),
		unimplemented("proxy_grpc_send", []string{"stream_id", "message_data", "message_size", "end_stream"}),
		unimplemented("proxy_grpc_cancel", []string{"call_or_stream_id"}),
		unimplemented("proxy_grpc_close", []string{"call_or_stream_id"}),
	}
}

// headerMap validates a map_id argument and fetches the map from the host.
func headerMap(c *call, mapID uint64, write bool) (HeaderMap, Status) {
	t := MapType(mapID)
	if !t.Valid() {
		return nil, StatusBadArgument
	}
	return c.host.HeaderMap(t, write)
}

// withKeyValue reads the (map_id, key, value) arguments shared by
// proxy_add_header_map_value and proxy_replace_header_map_value.
func withKeyValue(c *call, s []uint64, apply func(HeaderMap, string, string) Status) Status {
	m, st := headerMap(c, s[0], true)
	if st != StatusOK {
		return st
	}
	key, st := c.guest.readString(u32(s[1]), u32(s[2]), MaxHeaderBytes)
	if st != StatusOK {
		return st
	}
	value, st := c.guest.readString(u32(s[3]), u32(s[4]), MaxHeaderBytes)
	if st != StatusOK {
		return st
	}
	return apply(m, key, value)
}

func getBufferBytes(ctx context.Context, c *call, s []uint64) Status {
	t := BufferType(s[0])
	if !t.Valid() {
		return StatusBadArgument
	}
	buf, st := c.host.Buffer(t, false)
	if st != StatusOK {
		return st
	}
	data := buf.Bytes()
	start, maxSize := uint64(u32(s[1])), uint64(u32(s[2]))
	if start > uint64(len(data)) {
		return StatusBadArgument
	}
	end := min(start+maxSize, uint64(len(data)))
	return c.guest.copyOut(ctx, data[start:end], u32(s[3]), u32(s[4]))
}

// setBufferBytes replaces size bytes at start with the value: start 0 and
// size 0 prepend, a start at or past the end appends, anything else injects
// or replaces.
func setBufferBytes(_ context.Context, c *call, s []uint64) Status {
	t := BufferType(s[0])
	if !t.Valid() {
		return StatusBadArgument
	}
	buf, st := c.host.Buffer(t, true)
	if st != StatusOK {
		return st
	}
	value, ok := c.guest.read(u32(s[3]), u32(s[4]))
	if !ok {
		return StatusInvalidMemoryAccess
	}
	return buf.Set(SpliceBuffer(buf.Bytes(), u32(s[1]), u32(s[2]), value))
}

// SpliceBuffer returns a new slice holding old with size bytes at start
// replaced by value, as proxy_set_buffer_bytes defines it. A start at or past
// the end of old appends.
func SpliceBuffer(old []byte, start, size uint32, value []byte) []byte {
	from := min(uint64(start), uint64(len(old)))
	to := min(from+uint64(size), uint64(len(old)))
	out := make([]byte, 0, uint64(len(old))-(to-from)+uint64(len(value)))
	out = append(out, old[:from]...)
	out = append(out, value...)
	return append(out, old[to:]...)
}

func sendLocalResponse(_ context.Context, c *call, s []uint64) Status {
	details, ok := c.guest.read(u32(s[1]), u32(s[2]))
	if !ok {
		return StatusInvalidMemoryAccess
	}
	body, ok := c.guest.read(u32(s[3]), u32(s[4]))
	if !ok {
		return StatusInvalidMemoryAccess
	}
	headers, st := readHeaderMap(c.guest, u32(s[5]), u32(s[6]))
	if st != StatusOK {
		return st
	}
	return c.host.SendLocalResponse(&LocalResponse{
		StatusCode: u32(s[0]),
		Details:    string(details[:min(len(details), maxStatusDetails)]),
		Body:       body,
		Headers:    headers,
		GRPCStatus: int32(u32(s[7])),
	})
}

// emscriptenFunctions are the two "env" functions Emscripten-built filters
// import; Envoy provides them too.
func emscriptenFunctions() []*hostFunction {
	return []*hostFunction{
		{module: ModuleEnv, name: "emscripten_notify_memory_growth", params: []string{"memory_index"},
			fn: func(context.Context, api.Module, []uint64) {}},
		{module: ModuleEnv, name: "pthread_equal", params: []string{"left", "right"}, results: []api.ValueType{i32},
			fn: func(_ context.Context, _ api.Module, s []uint64) {
				if u32(s[0]) == u32(s[1]) {
					s[0] = 1
				} else {
					s[0] = 0
				}
			}},
	}
}
