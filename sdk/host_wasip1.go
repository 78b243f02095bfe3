//go:build wasip1

package sdk

import (
	"unsafe"

	"github.com/sluice-edge/sluice/sdk/internal/abi"
)

// wasmHost is abi.Host over the Proxy-Wasm 0.2.1 host functions.
type wasmHost struct{}

// bytesAt is the n bytes the host allocated (through
// proxy_on_memory_allocate) at p.
func bytesAt(p *byte, n uint32) []byte {
	if p == nil || n == 0 {
		return nil
	}
	return unsafe.Slice(p, n)
}

func stringPtr(s string) (*byte, uint32) { return unsafe.StringData(s), uint32(len(s)) }

func bytesPtr(b []byte) (*byte, uint32) {
	if len(b) == 0 {
		return nil, 0
	}
	return &b[0], uint32(len(b))
}

// pairsPtr serializes header pairs for the host; no pairs is no buffer.
func pairsPtr(pairs [][2]string) (*byte, uint32) {
	if len(pairs) == 0 {
		return nil, 0
	}
	return bytesPtr(abi.EncodePairs(pairs))
}

// slot holds what host functions write back. Locals passed to an import
// escape to the heap (the imports cannot be //go:noescape: the host calls
// proxy_on_memory_allocate during them, which may move the stack), so one
// package-level slot spares an allocation per value on every call. An
// instance runs one callback at a time, and proxy_on_memory_allocate does
// not touch it.
var slot struct {
	data *byte
	size uint32
	u32  uint32
	u64  uint64
}

// returned calls f with the slots for a buffer the host returns, and
// returns that buffer (which the host allocated through
// proxy_on_memory_allocate, so it is the module's own).
func returned(f func(data unsafe.Pointer, size *uint32) abi.Status) ([]byte, abi.Status) {
	slot.data, slot.size = nil, 0
	st := f(unsafe.Pointer(&slot.data), &slot.size)
	b := bytesAt(slot.data, slot.size)
	slot.data = nil
	unpin()
	return b, st
}

func (wasmHost) Log(level uint32, msg string) abi.Status {
	p, n := stringPtr(msg)
	return proxyLog(level, p, n)
}

func (wasmHost) GetProperty(path string) ([]byte, abi.Status) {
	p, n := bytesPtr(abi.EncodePath(path))
	return returned(func(data unsafe.Pointer, size *uint32) abi.Status {
		return proxyGetProperty(p, n, data, size)
	})
}

func (wasmHost) SetProperty(path string, value []byte) abi.Status {
	p, n := bytesPtr(abi.EncodePath(path))
	v, vn := bytesPtr(value)
	return proxySetProperty(p, n, v, vn)
}

func (wasmHost) GetHeaderMapPairs(m abi.MapType) ([][2]string, abi.Status) {
	buf, st := returned(func(data unsafe.Pointer, size *uint32) abi.Status {
		return proxyGetHeaderMapPairs(m, data, size)
	})
	if st != abi.OK {
		return nil, st
	}
	pairs, ok := abi.DecodePairs(buf)
	if !ok {
		return nil, abi.SerializationFailure
	}
	return pairs, abi.OK
}

func (wasmHost) SetHeaderMapPairs(m abi.MapType, pairs [][2]string) abi.Status {
	p, n := pairsPtr(pairs)
	return proxySetHeaderMapPairs(m, p, n)
}

func (wasmHost) GetHeaderMapValue(m abi.MapType, name string) (string, abi.Status) {
	k, kn := stringPtr(name)
	v, st := returned(func(data unsafe.Pointer, size *uint32) abi.Status {
		return proxyGetHeaderMapValue(m, k, kn, data, size)
	})
	if len(v) == 0 {
		return "", st
	}
	return unsafe.String(&v[0], len(v)), st
}

func (wasmHost) ReplaceHeaderMapValue(m abi.MapType, name, value string) abi.Status {
	k, kn := stringPtr(name)
	v, vn := stringPtr(value)
	return proxyReplaceHeaderMapValue(m, k, kn, v, vn)
}

func (wasmHost) AddHeaderMapValue(m abi.MapType, name, value string) abi.Status {
	k, kn := stringPtr(name)
	v, vn := stringPtr(value)
	return proxyAddHeaderMapValue(m, k, kn, v, vn)
}

func (wasmHost) RemoveHeaderMapValue(m abi.MapType, name string) abi.Status {
	k, kn := stringPtr(name)
	return proxyRemoveHeaderMapValue(m, k, kn)
}

func (wasmHost) GetBufferBytes(b abi.BufferType, start, size int) ([]byte, abi.Status) {
	return returned(func(data unsafe.Pointer, n *uint32) abi.Status {
		return proxyGetBufferBytes(b, uint32(start), uint32(size), data, n)
	})
}

func (wasmHost) SetBufferBytes(b abi.BufferType, start, size int, data []byte) abi.Status {
	p, n := bytesPtr(data)
	return proxySetBufferBytes(b, uint32(start), uint32(size), p, n)
}

func (wasmHost) SendLocalResponse(status uint32, details string, body []byte, headers [][2]string) abi.Status {
	d, dn := stringPtr(details)
	b, bn := bytesPtr(body)
	h, hn := pairsPtr(headers)
	return proxySendLocalResponse(status, d, dn, b, bn, h, hn, -1)
}

func (wasmHost) ContinueStream(s abi.StreamType) abi.Status { return proxyContinueStream(s) }

func (wasmHost) SetEffectiveContext(id uint32) abi.Status { return proxySetEffectiveContext(id) }

func (wasmHost) GetSharedData(key string) ([]byte, uint32, abi.Status) {
	k, kn := stringPtr(key)
	v, st := returned(func(data unsafe.Pointer, size *uint32) abi.Status {
		return proxyGetSharedData(k, kn, data, size, &slot.u32)
	})
	return v, slot.u32, st
}

func (wasmHost) SetSharedData(key string, value []byte, cas uint32) abi.Status {
	k, kn := stringPtr(key)
	v, vn := bytesPtr(value)
	return proxySetSharedData(k, kn, v, vn, cas)
}

func (wasmHost) DispatchHTTPCall(upstream string, headers [][2]string, body []byte, trailers [][2]string, timeoutMillis uint32) (uint32, abi.Status) {
	u, un := stringPtr(upstream)
	h, hn := pairsPtr(headers)
	b, bn := bytesPtr(body)
	t, tn := pairsPtr(trailers)
	st := proxyHTTPCall(u, un, h, hn, b, bn, t, tn, timeoutMillis, &slot.u32)
	return slot.u32, st
}

func (wasmHost) DefineMetric(t abi.MetricType, name string) (uint32, abi.Status) {
	n, nn := stringPtr(name)
	st := proxyDefineMetric(t, n, nn, &slot.u32)
	return slot.u32, st
}

func (wasmHost) IncrementMetric(id uint32, delta int64) abi.Status {
	return proxyIncrementMetric(id, delta)
}

func (wasmHost) RecordMetric(id uint32, value uint64) abi.Status { return proxyRecordMetric(id, value) }

func (wasmHost) GetMetric(id uint32) (uint64, abi.Status) {
	st := proxyGetMetric(id, &slot.u64)
	return slot.u64, st
}

//go:wasmimport env proxy_log
func proxyLog(level uint32, msg *byte, size uint32) abi.Status

//go:wasmimport env proxy_get_property
func proxyGetProperty(path *byte, pathSize uint32, data unsafe.Pointer, size *uint32) abi.Status

//go:wasmimport env proxy_set_property
func proxySetProperty(path *byte, pathSize uint32, value *byte, valueSize uint32) abi.Status

//go:wasmimport env proxy_get_header_map_pairs
func proxyGetHeaderMapPairs(m abi.MapType, data unsafe.Pointer, size *uint32) abi.Status

//go:wasmimport env proxy_set_header_map_pairs
func proxySetHeaderMapPairs(m abi.MapType, pairs *byte, size uint32) abi.Status

//go:wasmimport env proxy_get_header_map_value
func proxyGetHeaderMapValue(m abi.MapType, name *byte, nameSize uint32, data unsafe.Pointer, size *uint32) abi.Status

//go:wasmimport env proxy_replace_header_map_value
func proxyReplaceHeaderMapValue(m abi.MapType, name *byte, nameSize uint32, value *byte, valueSize uint32) abi.Status

//go:wasmimport env proxy_add_header_map_value
func proxyAddHeaderMapValue(m abi.MapType, name *byte, nameSize uint32, value *byte, valueSize uint32) abi.Status

//go:wasmimport env proxy_remove_header_map_value
func proxyRemoveHeaderMapValue(m abi.MapType, name *byte, nameSize uint32) abi.Status

//go:wasmimport env proxy_get_buffer_bytes
func proxyGetBufferBytes(b abi.BufferType, start, maxSize uint32, data unsafe.Pointer, size *uint32) abi.Status

//go:wasmimport env proxy_set_buffer_bytes
func proxySetBufferBytes(b abi.BufferType, start, size uint32, data *byte, dataSize uint32) abi.Status

//go:wasmimport env proxy_send_local_response
func proxySendLocalResponse(status uint32, details *byte, detailsSize uint32, body *byte, bodySize uint32, headers *byte, headersSize uint32, grpcStatus int32) abi.Status

//go:wasmimport env proxy_continue_stream
func proxyContinueStream(s abi.StreamType) abi.Status

//go:wasmimport env proxy_set_effective_context
func proxySetEffectiveContext(id uint32) abi.Status

//go:wasmimport env proxy_get_shared_data
func proxyGetSharedData(key *byte, keySize uint32, data unsafe.Pointer, size *uint32, cas *uint32) abi.Status

//go:wasmimport env proxy_set_shared_data
func proxySetSharedData(key *byte, keySize uint32, value *byte, valueSize uint32, cas uint32) abi.Status

//go:wasmimport env proxy_http_call
func proxyHTTPCall(upstream *byte, upstreamSize uint32, headers *byte, headersSize uint32, body *byte, bodySize uint32, trailers *byte, trailersSize uint32, timeoutMillis uint32, token *uint32) abi.Status

//go:wasmimport env proxy_define_metric
func proxyDefineMetric(t abi.MetricType, name *byte, nameSize uint32, id *uint32) abi.Status

//go:wasmimport env proxy_increment_metric
func proxyIncrementMetric(id uint32, delta int64) abi.Status

//go:wasmimport env proxy_record_metric
func proxyRecordMetric(id uint32, value uint64) abi.Status

//go:wasmimport env proxy_get_metric
func proxyGetMetric(id uint32, value *uint64) abi.Status
