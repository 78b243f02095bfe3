// Package abi is the seam between the SDK and whatever runs it: the
// Proxy-Wasm host functions a filter calls (Host) and the callbacks a host
// makes (VM), in Go types. In a .wasm build the host is the real one behind
// go:wasmimport; in native tests it is sdktest's emulator. Both drive the same
// dispatcher, so a native test exercises the code a proxy runs.
package abi

// Status is a Proxy-Wasm status code, as host functions return them.
type Status uint32

const (
	OK                   Status = 0
	NotFound             Status = 1
	BadArgument          Status = 2
	SerializationFailure Status = 3
	ParseFailure         Status = 4
	Empty                Status = 7
	CASMismatch          Status = 8
	InternalFailure      Status = 10
	Unimplemented        Status = 12
)

// MapType names a header map (Proxy-Wasm's map_type).
type MapType uint32

const (
	RequestHeaders           MapType = 0
	RequestTrailers          MapType = 1
	ResponseHeaders          MapType = 2
	ResponseTrailers         MapType = 3
	HTTPCallResponseHeaders  MapType = 6
	HTTPCallResponseTrailers MapType = 7
)

// BufferType names a byte buffer (Proxy-Wasm's buffer_type).
type BufferType uint32

const (
	RequestBody          BufferType = 0
	ResponseBody         BufferType = 1
	HTTPCallResponseBody BufferType = 4
	VMConfiguration      BufferType = 6
	PluginConfiguration  BufferType = 7
)

// StreamType names a direction of an HTTP stream (Proxy-Wasm's stream_type).
type StreamType uint32

const (
	Request  StreamType = 0
	Response StreamType = 1
)

// MetricType is a Proxy-Wasm metric kind.
type MetricType uint32

const (
	Counter   MetricType = 0
	Gauge     MetricType = 1
	Histogram MetricType = 2
)

// Action is what an HTTP callback tells the host: go on, or hold the stream.
type Action uint32

const (
	Continue Action = 0
	Pause    Action = 1
)

// Host is the set of Proxy-Wasm host functions the SDK uses.
type Host interface {
	Log(level uint32, msg string) Status
	// Property paths are dot-separated ("request.path").
	GetProperty(path string) ([]byte, Status)
	SetProperty(path string, value []byte) Status

	GetHeaderMapPairs(m MapType) ([][2]string, Status)
	SetHeaderMapPairs(m MapType, pairs [][2]string) Status
	GetHeaderMapValue(m MapType, name string) (string, Status)
	ReplaceHeaderMapValue(m MapType, name, value string) Status
	AddHeaderMapValue(m MapType, name, value string) Status
	RemoveHeaderMapValue(m MapType, name string) Status

	GetBufferBytes(b BufferType, start, size int) ([]byte, Status)
	SetBufferBytes(b BufferType, start, size int, data []byte) Status

	SendLocalResponse(status uint32, details string, body []byte, headers [][2]string) Status
	ContinueStream(s StreamType) Status
	SetEffectiveContext(id uint32) Status

	GetSharedData(key string) ([]byte, uint32, Status)
	SetSharedData(key string, value []byte, cas uint32) Status

	DispatchHTTPCall(upstream string, headers [][2]string, body []byte, trailers [][2]string, timeoutMillis uint32) (uint32, Status)

	DefineMetric(t MetricType, name string) (uint32, Status)
	IncrementMetric(id uint32, delta int64) Status
	RecordMetric(id uint32, value uint64) Status
	GetMetric(id uint32) (uint64, Status)
}

// VM is the set of Proxy-Wasm callbacks the SDK handles, as a host makes
// them.
type VM interface {
	ContextCreate(id, parent uint32)
	VMStart(root uint32, size int) bool
	Configure(root uint32, size int) bool
	RequestHeaders(id uint32, headers int, end bool) Action
	RequestBody(id uint32, size int, end bool) Action
	RequestTrailers(id uint32, trailers int) Action
	ResponseHeaders(id uint32, headers int, end bool) Action
	ResponseBody(id uint32, size int, end bool) Action
	ResponseTrailers(id uint32, trailers int) Action
	Done(id uint32) bool
	Log(id uint32)
	Delete(id uint32)
	HTTPCallResponse(root, token uint32, headers, bodySize, trailers int)
}

// NewVM makes a dispatcher over host that configures filters with
// configure (an sdk.Configure; nil for the one the program registered).
// Package sdk sets it when it initializes, so sdktest reaches the dispatcher
// without it being public API.
var NewVM func(host Host, configure any) VM
