package abi

import (
	"context"

	"github.com/tetratelabs/wazero/api"
)

// Host is what the host functions need from the runtime during one guest
// call: the request (or the root context) the call acts for. The runtime
// implements it per HTTP context; the host functions find it on the context
// passed to the guest call (see WithCall). Methods are called on the
// goroutine running the guest, never concurrently for one Host.
type Host interface {
	// HeaderMap returns map t, or BAD_ARGUMENT when that map does not exist
	// in the current phase, or when write is true and the map can no longer
	// change anything (the request was already forwarded, say).
	HeaderMap(t MapType, write bool) (HeaderMap, Status)
	// Buffer returns buffer t, or NOT_FOUND when it is not available in the
	// current phase (or not writable, when write is true).
	Buffer(t BufferType, write bool) (Buffer, Status)
	// SendLocalResponse records a response the host sends instead of
	// forwarding the request or the upstream response.
	SendLocalResponse(r *LocalResponse) Status
	// ContinueStream resumes a paused stream.
	ContinueStream(t StreamType) Status
	// CloseStream resets a stream.
	CloseStream(t StreamType) Status
	// Property returns the value of a property path (its segments).
	Property(path []string) ([]byte, Status)
	// SetProperty sets a property for later filters of the same request.
	// value aliases guest memory: copy what must outlive the call.
	SetProperty(path []string, value []byte) Status
	// Log writes a guest log message (proxy_log). msg aliases guest memory.
	Log(level LogLevel, msg []byte)
	// LogLevel is the least level the host records.
	LogLevel() LogLevel
	// WriteOutput receives what the guest writes to stdout (fd 1) or stderr
	// (fd 2). p is the host's copy, at most 64 KiB per write.
	WriteOutput(fd uint32, p []byte)
	// SetEffectiveContext switches the context later host calls act for.
	SetEffectiveContext(contextID uint32) Status
	// Done signals that the guest finished a context it kept open by
	// returning false from proxy_on_done.
	Done() Status
	// CallStatus returns the status code and message of the last outbound
	// call, for proxy_get_status.
	CallStatus() (code uint32, message []byte, st Status)

	Services
}

// HeaderMap is one header map of a request or response as the guest sees it:
// ordered pairs with lowercase names, HTTP/2 pseudo-headers (":path",
// ":status", ...) included. Implementations validate what the guest writes
// and return BAD_ARGUMENT for anything that must not reach the wire.
type HeaderMap interface {
	// Get returns the value of name; several values are joined with ",".
	Get(name string) (value string, ok bool)
	// Pairs returns every pair, pseudo-headers first.
	Pairs() [][2]string
	// SetPairs replaces the whole map. It applies all pairs or none.
	SetPairs(pairs [][2]string) Status
	// Add appends a value to name.
	Add(name, value string) Status
	// Replace sets name to value alone.
	Replace(name, value string) Status
	// Remove deletes name; a missing name is not an error.
	Remove(name string) Status
}

// Buffer is a byte buffer the guest reads and edits: a body chunk, or the VM
// or plugin configuration.
type Buffer interface {
	// Bytes returns the current contents. The caller must not keep it.
	Bytes() []byte
	// Set replaces the contents. It returns a non-OK status, and changes
	// nothing, when the new contents are too large or the buffer is
	// read-only.
	Set(b []byte) Status
}

// LocalResponse is a response a filter sends itself with
// proxy_send_local_response.
type LocalResponse struct {
	StatusCode uint32
	Details    string // status code details, for logs
	// Body aliases guest memory for the duration of the host call: a Host
	// that keeps it must check its size and copy it.
	Body    []byte
	Headers [][2]string
	// GRPCStatus is the gRPC status to send, or -1 for none.
	GRPCStatus int32
}

// call is what host functions find on the context of a guest call.
type call struct {
	guest *Guest
	host  Host
}

type callKey struct{}

// WithCall returns a context that makes host functions act on guest's memory
// for host. Every guest call of an instance must receive such a context.
func WithCall(ctx context.Context, guest *Guest, host Host) context.Context {
	return context.WithValue(ctx, callKey{}, &call{guest: guest, host: host})
}

// callFrom returns the call of ctx, bound to the calling module mod. A guest
// call without one is a bug in the runtime, never something a guest can
// cause, so it panics.
func callFrom(ctx context.Context, mod api.Module) *call {
	c, ok := ctx.Value(callKey{}).(*call)
	if !ok {
		panic("abi: guest call without abi.WithCall context")
	}
	if err := c.guest.Bind(mod); err != nil {
		panic(&GuestFault{Func: "host call", Err: err})
	}
	return c
}
