package abi

import (
	"context"
	"time"

	"github.com/tetratelabs/wazero/api"
)

// The host functions of the state a filter shares beyond one instance
// (shared data, shared queues, metrics), its outbound calls, its timer and
// the foreign functions: Proxy-Wasm v0.2.1 sections "Shared Key-Value
// Store", "Shared Queues", "Metrics", "HTTP calls", "Timers" and "Foreign
// function interface".

// MaxNameSize bounds the names and keys a guest hands these functions: a
// shared-data key, a queue, metric, upstream or foreign-function name. The
// runtime applies tighter limits of its own; this one only stops the host
// from copying a huge string out of guest memory first.
const MaxNameSize = 64 << 10

// Services is the part of Host that outlives one request: the runtime keeps
// it per filter (shared data, queues, metrics) or per context (timers,
// outbound calls). Values passed in alias guest memory for the duration of
// the call: an implementation that keeps one copies it.
type Services interface {
	// GetSharedData returns the value of key and its compare-and-swap
	// value, or NOT_FOUND.
	GetSharedData(key string) (value []byte, cas uint32, st Status)
	// SetSharedData sets key to value unless cas is not 0 and differs from
	// the key's (CAS_MISMATCH).
	SetSharedData(key string, value []byte, cas uint32) Status
	// RegisterSharedQueue creates the named queue, or opens it.
	RegisterSharedQueue(name string) (id uint32, st Status)
	// ResolveSharedQueue finds the named queue of VM vmID, or NOT_FOUND.
	ResolveSharedQueue(vmID, name string) (id uint32, st Status)
	// EnqueueSharedQueue appends value to queue id.
	EnqueueSharedQueue(id uint32, value []byte) Status
	// DequeueSharedQueue removes the item at the front of queue id: EMPTY
	// when there is none.
	DequeueSharedQueue(id uint32) ([]byte, Status)
	// SetTickPeriod sets (0: stops) the period of proxy_on_tick.
	SetTickPeriod(period time.Duration) Status
	// HTTPCall dispatches an outbound call; its response comes later, in
	// proxy_on_http_call_response.
	HTTPCall(call *HTTPCall) (id uint32, st Status)
	// DefineMetric defines (or finds) the metric name of type t.
	DefineMetric(t MetricType, name string) (id uint32, st Status)
	// IncrementMetric adds delta to metric id.
	IncrementMetric(id uint32, delta int64) Status
	// RecordMetric sets metric id, or records value in a histogram.
	RecordMetric(id uint32, value uint64) Status
	// GetMetric returns the value of metric id.
	GetMetric(id uint32) (uint64, Status)
	// CallForeignFunction calls the host function name with args.
	CallForeignFunction(name string, args []byte) ([]byte, Status)
}

// HTTPCall is an outbound HTTP call a filter asks for with proxy_http_call.
type HTTPCall struct {
	Upstream string      // the operator's name for where the call goes
	Headers  [][2]string // with the pseudo-headers :method, :path, :authority
	Body     []byte      // aliases guest memory during the host call
	Trailers [][2]string
	Timeout  time.Duration
}

func serviceFunctions() []*hostFunction {
	return []*hostFunction{
		// Timers.
		proxyFunc("proxy_set_tick_period_milliseconds", []string{"tick_period"},
			func(_ context.Context, c *call, s []uint64) Status {
				return c.host.SetTickPeriod(time.Duration(u32(s[0])) * time.Millisecond)
			}),

		// Shared data.
		proxyFunc("proxy_get_shared_data", []string{"key_data", "key_size", "return_value_data", "return_value_size", "return_cas"},
			func(ctx context.Context, c *call, s []uint64) Status {
				key, st := c.guest.readString(u32(s[0]), u32(s[1]), MaxNameSize)
				if st != StatusOK {
					return st
				}
				if !c.guest.inBounds(u32(s[4]), 4) {
					return StatusInvalidMemoryAccess
				}
				value, cas, st := c.host.GetSharedData(key)
				if st != StatusOK {
					return st
				}
				if st := c.guest.copyOut(ctx, value, u32(s[2]), u32(s[3])); st != StatusOK {
					return st
				}
				c.guest.writeUint32(u32(s[4]), cas)
				return StatusOK
			}),
		proxyFunc("proxy_set_shared_data", []string{"key_data", "key_size", "value_data", "value_size", "cas"},
			func(_ context.Context, c *call, s []uint64) Status {
				key, st := c.guest.readString(u32(s[0]), u32(s[1]), MaxNameSize)
				if st != StatusOK {
					return st
				}
				value, ok := c.guest.read(u32(s[2]), u32(s[3]))
				if !ok {
					return StatusInvalidMemoryAccess
				}
				return c.host.SetSharedData(key, value, u32(s[4]))
			}),

		// Shared queues.
		proxyFunc("proxy_register_shared_queue", []string{"name_data", "name_size", "return_queue_id"},
			func(_ context.Context, c *call, s []uint64) Status {
				name, st := c.guest.readString(u32(s[0]), u32(s[1]), MaxNameSize)
				if st != StatusOK {
					return st
				}
				return writeID(c, u32(s[2]), func() (uint32, Status) { return c.host.RegisterSharedQueue(name) })
			}),
		proxyFunc("proxy_resolve_shared_queue", []string{"vm_id_data", "vm_id_size", "name_data", "name_size", "return_queue_id"},
			func(_ context.Context, c *call, s []uint64) Status {
				vmID, st := c.guest.readString(u32(s[0]), u32(s[1]), MaxNameSize)
				if st != StatusOK {
					return st
				}
				name, st := c.guest.readString(u32(s[2]), u32(s[3]), MaxNameSize)
				if st != StatusOK {
					return st
				}
				return writeID(c, u32(s[4]), func() (uint32, Status) { return c.host.ResolveSharedQueue(vmID, name) })
			}),
		proxyFunc("proxy_enqueue_shared_queue", []string{"queue_id", "value_data", "value_size"},
			func(_ context.Context, c *call, s []uint64) Status {
				value, ok := c.guest.read(u32(s[1]), u32(s[2]))
				if !ok {
					return StatusInvalidMemoryAccess
				}
				return c.host.EnqueueSharedQueue(u32(s[0]), value)
			}),
		proxyFunc("proxy_dequeue_shared_queue", []string{"queue_id", "return_value_data", "return_value_size"},
			func(ctx context.Context, c *call, s []uint64) Status {
				// Checked first: a dequeued item the guest cannot receive
				// would be lost.
				if !c.guest.inBounds(u32(s[1]), 4) || !c.guest.inBounds(u32(s[2]), 4) {
					return StatusInvalidMemoryAccess
				}
				value, st := c.host.DequeueSharedQueue(u32(s[0]))
				if st != StatusOK {
					return st
				}
				return c.guest.copyOut(ctx, value, u32(s[1]), u32(s[2]))
			}),

		// Outbound HTTP calls.
		proxyFunc("proxy_http_call", []string{"upstream_name_data", "upstream_name_size", "serialized_headers_data",
			"serialized_headers_size", "body_data", "body_size", "serialized_trailers_data", "serialized_trailers_size",
			"timeout", "return_call_id"}, httpCall),

		// Metrics.
		proxyFunc("proxy_define_metric", []string{"metric_type", "name_data", "name_size", "return_metric_id"},
			func(_ context.Context, c *call, s []uint64) Status {
				t := MetricType(s[0])
				if !t.Valid() {
					return StatusBadArgument
				}
				name, st := c.guest.readString(u32(s[1]), u32(s[2]), MaxNameSize)
				if st != StatusOK {
					return st
				}
				return writeID(c, u32(s[3]), func() (uint32, Status) { return c.host.DefineMetric(t, name) })
			}),
		typed(proxyFunc("proxy_record_metric", []string{"metric_id", "value"},
			func(_ context.Context, c *call, s []uint64) Status { return c.host.RecordMetric(u32(s[0]), s[1]) }),
			i32, i64),
		typed(proxyFunc("proxy_increment_metric", []string{"metric_id", "delta"},
			func(_ context.Context, c *call, s []uint64) Status {
				return c.host.IncrementMetric(u32(s[0]), int64(s[1]))
			}),
			i32, i64),
		proxyFunc("proxy_get_metric", []string{"metric_id", "return_value"},
			func(_ context.Context, c *call, s []uint64) Status {
				if !c.guest.inBounds(u32(s[1]), 8) {
					return StatusInvalidMemoryAccess
				}
				v, st := c.host.GetMetric(u32(s[0]))
				if st != StatusOK {
					return st
				}
				c.guest.writeUint64(u32(s[1]), v)
				return StatusOK
			}),

		// Foreign functions.
		proxyFunc("proxy_call_foreign_function", []string{"name_data", "name_size", "arguments_data",
			"arguments_size", "return_results_data", "return_results_size"},
			func(ctx context.Context, c *call, s []uint64) Status {
				name, st := c.guest.readString(u32(s[0]), u32(s[1]), MaxNameSize)
				if st != StatusOK {
					return st
				}
				args, ok := c.guest.read(u32(s[2]), u32(s[3]))
				if !ok {
					return StatusInvalidMemoryAccess
				}
				if !c.guest.inBounds(u32(s[4]), 4) || !c.guest.inBounds(u32(s[5]), 4) {
					return StatusInvalidMemoryAccess
				}
				results, st := c.host.CallForeignFunction(name, args)
				if st != StatusOK {
					return st
				}
				return c.guest.copyOut(ctx, results, u32(s[4]), u32(s[5]))
			}),
	}
}

// typed gives f parameter types other than all-i32.
func typed(f *hostFunction, types ...api.ValueType) *hostFunction {
	f.types = types
	return f
}

// writeID runs a host call that yields an id, once the slot for the id is
// known to be writable: the id of a queue or metric the guest cannot learn
// would be created for nothing.
func writeID(c *call, slot uint32, fn func() (uint32, Status)) Status {
	if !c.guest.inBounds(slot, 4) {
		return StatusInvalidMemoryAccess
	}
	id, st := fn()
	if st != StatusOK {
		return st
	}
	c.guest.writeUint32(slot, id)
	return StatusOK
}

// httpCall is proxy_http_call: every input is read and checked before the
// host dispatches anything, and the call's id slot before that.
func httpCall(_ context.Context, c *call, s []uint64) Status {
	upstream, st := c.guest.readString(u32(s[0]), u32(s[1]), MaxNameSize)
	if st != StatusOK {
		return st
	}
	headers, st := readHeaderMap(c.guest, u32(s[2]), u32(s[3]))
	if st != StatusOK {
		return st
	}
	body, ok := c.guest.read(u32(s[4]), u32(s[5]))
	if !ok {
		return StatusInvalidMemoryAccess
	}
	trailers, st := readHeaderMap(c.guest, u32(s[6]), u32(s[7]))
	if st != StatusOK {
		return st
	}
	call := &HTTPCall{
		Upstream: upstream, Headers: headers, Body: body, Trailers: trailers,
		Timeout: time.Duration(u32(s[8])) * time.Millisecond,
	}
	return writeID(c, u32(s[9]), func() (uint32, Status) { return c.host.HTTPCall(call) })
}

// readHeaderMap reads a serialized header map from guest memory: too large
// is BAD_ARGUMENT, out of bounds INVALID_MEMORY_ACCESS, malformed
// BAD_ARGUMENT; an empty one (size 0) is an empty map.
func readHeaderMap(g *Guest, ptr, size uint32) ([][2]string, Status) {
	if size > MaxHeaderBytes {
		return nil, StatusBadArgument
	}
	data, ok := g.read(ptr, size)
	if !ok {
		return nil, StatusInvalidMemoryAccess
	}
	pairs, err := DecodeHeaderMap(data, MaxHeaderPairs)
	if err != nil {
		return nil, StatusBadArgument
	}
	return pairs, StatusOK
}
