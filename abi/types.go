// Package abi is the host side of the Proxy-Wasm ABI and nothing else: the
// enums and names of the specification, the header-map wire codec,
// bounds-checked guest-memory helpers, and the host functions a filter
// imports. It knows nothing of HTTP servers; the runtime supplies a Host per
// guest call through the context.
//
// Reference: https://github.com/proxy-wasm/spec/tree/main/abi-versions/v0.2.1
package abi

import "strconv"

// Status is proxy_status_t, the result of every Proxy-Wasm host function.
// Only the values the specification lists are ever returned.
//
// See https://github.com/proxy-wasm/spec/tree/main/abi-versions/v0.2.1#proxy_status_t
type Status uint32

// The statuses of proxy_status_t.
const (
	StatusOK                   Status = 0
	StatusNotFound             Status = 1
	StatusBadArgument          Status = 2
	StatusSerializationFailure Status = 3
	StatusParseFailure         Status = 4
	StatusInvalidMemoryAccess  Status = 6
	StatusEmpty                Status = 7
	StatusCASMismatch          Status = 8
	StatusInternalFailure      Status = 10
	StatusUnimplemented        Status = 12
)

var statusNames = map[Status]string{
	StatusOK:                   "OK",
	StatusNotFound:             "NOT_FOUND",
	StatusBadArgument:          "BAD_ARGUMENT",
	StatusSerializationFailure: "SERIALIZATION_FAILURE",
	StatusParseFailure:         "PARSE_FAILURE",
	StatusInvalidMemoryAccess:  "INVALID_MEMORY_ACCESS",
	StatusEmpty:                "EMPTY",
	StatusCASMismatch:          "CAS_MISMATCH",
	StatusInternalFailure:      "INTERNAL_FAILURE",
	StatusUnimplemented:        "UNIMPLEMENTED",
}

func (s Status) String() string {
	if n, ok := statusNames[s]; ok {
		return n
	}
	return "Status(" + strconv.Itoa(int(s)) + ")"
}

// Action is proxy_action_t, what a stream callback asks the host to do next.
//
// See https://github.com/proxy-wasm/spec/tree/main/abi-versions/v0.2.1#proxy_action_t
type Action uint32

// The actions of proxy_action_t.
const (
	ActionContinue Action = 0
	ActionPause    Action = 1
)

// maxPauseAction is the largest raw value read as a pause. Envoy's C++ SDK
// returns its own enums (StopAllIterationAndBuffer = 3,
// StopAllIterationAndWatermark = 4, StopIterationNoBuffer = 3 for data);
// every one of them stops iteration, so they pause here too.
const maxPauseAction = 4

// ParseAction maps a callback's raw return value to an Action. ok is false for
// values no SDK produces; the runtime treats those as a filter error.
func ParseAction(raw uint32) (a Action, ok bool) {
	switch {
	case raw == uint32(ActionContinue):
		return ActionContinue, true
	case raw <= maxPauseAction:
		return ActionPause, true
	}
	return 0, false
}

func (a Action) String() string {
	switch a {
	case ActionContinue:
		return "continue"
	case ActionPause:
		return "pause"
	}
	return "Action(" + strconv.Itoa(int(a)) + ")"
}

// MapType is proxy_map_type_t, which header map a host function acts on.
//
// See https://github.com/proxy-wasm/spec/tree/main/abi-versions/v0.2.1#proxy_map_type_t
type MapType uint32

// The map types of proxy_map_type_t.
const (
	MapRequestHeaders           MapType = 0
	MapRequestTrailers          MapType = 1
	MapResponseHeaders          MapType = 2
	MapResponseTrailers         MapType = 3
	MapGRPCInitialMetadata      MapType = 4
	MapGRPCTrailingMetadata     MapType = 5
	MapHTTPCallResponseHeaders  MapType = 6
	MapHTTPCallResponseTrailers MapType = 7
)

// Valid reports whether t is a map type the specification defines.
func (t MapType) Valid() bool { return t <= MapHTTPCallResponseTrailers }

// BufferType is proxy_buffer_type_t, which byte buffer a host function acts on.
//
// See https://github.com/proxy-wasm/spec/tree/main/abi-versions/v0.2.1#proxy_buffer_type_t
type BufferType uint32

// The buffer types of proxy_buffer_type_t.
const (
	BufferRequestBody         BufferType = 0
	BufferResponseBody        BufferType = 1
	BufferDownstreamData      BufferType = 2
	BufferUpstreamData        BufferType = 3
	BufferHTTPCallResponse    BufferType = 4
	BufferGRPCCallMessage     BufferType = 5
	BufferVMConfiguration     BufferType = 6
	BufferPluginConfiguration BufferType = 7
	BufferForeignFunctionArg  BufferType = 8
)

// Valid reports whether t is a buffer type the specification defines.
func (t BufferType) Valid() bool { return t <= BufferForeignFunctionArg }

// LogLevel is proxy_log_level_t.
//
// See https://github.com/proxy-wasm/spec/tree/main/abi-versions/v0.2.1#proxy_log_level_t
type LogLevel uint32

// The log levels of proxy_log_level_t.
const (
	LogTrace    LogLevel = 0
	LogDebug    LogLevel = 1
	LogInfo     LogLevel = 2
	LogWarn     LogLevel = 3
	LogError    LogLevel = 4
	LogCritical LogLevel = 5
)

// Valid reports whether l is a log level the specification defines.
func (l LogLevel) Valid() bool { return l <= LogCritical }

func (l LogLevel) String() string {
	switch l {
	case LogTrace:
		return "trace"
	case LogDebug:
		return "debug"
	case LogInfo:
		return "info"
	case LogWarn:
		return "warn"
	case LogError:
		return "error"
	case LogCritical:
		return "critical"
	}
	return "LogLevel(" + strconv.Itoa(int(l)) + ")"
}

// StreamType is proxy_stream_type_t.
//
// See https://github.com/proxy-wasm/spec/tree/main/abi-versions/v0.2.1#proxy_stream_type_t
type StreamType uint32

// The stream types of proxy_stream_type_t.
const (
	StreamHTTPRequest  StreamType = 0
	StreamHTTPResponse StreamType = 1
	StreamDownstream   StreamType = 2
	StreamUpstream     StreamType = 3
)

// Valid reports whether t is a stream type the specification defines.
func (t StreamType) Valid() bool { return t <= StreamUpstream }

// MetricType is proxy_metric_type_t.
//
// See https://github.com/proxy-wasm/spec/tree/main/abi-versions/v0.2.1#proxy_metric_type_t
type MetricType uint32

// The metric types of proxy_metric_type_t.
const (
	MetricCounter   MetricType = 0
	MetricGauge     MetricType = 1
	MetricHistogram MetricType = 2
)

// Valid reports whether t is a metric type the specification defines.
func (t MetricType) Valid() bool { return t <= MetricHistogram }

// Errno is a WASI preview1 errno, the result of every WASI function.
//
// See https://github.com/WebAssembly/WASI/blob/snapshot-01/phases/snapshot/docs.md#errno
type Errno uint32

// The errno values the host returns.
const (
	ErrnoSuccess Errno = 0
	ErrnoBadf    Errno = 8
	ErrnoFault   Errno = 21
	ErrnoInval   Errno = 28
	ErrnoNosys   Errno = 52
	ErrnoNotsup  Errno = 58
	ErrnoSpipe   Errno = 70
	ErrnoNotdir  Errno = 54
)
