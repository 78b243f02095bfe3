package sdk

import "github.com/sluice-edge/sluice/sdk/internal/abi"

// Stream is one HTTP request and its response, as a Filter sees them. It
// has every Plugin method too.
type Stream struct {
	*Plugin
	vm       *vm
	id       uint32
	filter   Filter
	phases   phases         // the filter's phase methods
	paused   abi.StreamType // the direction a Pause last held
	held     [2]bool        // by direction: the filter's last answer was Pause
	bodySize [2]int         // by direction: the size of the body the current callback has
}

// RequestHeaders are the request's headers, including the pseudo-headers
// :method, :path, :authority and :scheme.
func (s *Stream) RequestHeaders() Headers { return Headers{s.host, abi.RequestHeaders} }

// ResponseHeaders are the response's headers, including :status.
func (s *Stream) ResponseHeaders() Headers { return Headers{s.host, abi.ResponseHeaders} }

// RequestTrailers are the request's trailers, in OnRequestTrailers.
func (s *Stream) RequestTrailers() Headers { return Headers{s.host, abi.RequestTrailers} }

// ResponseTrailers are the response's trailers, in OnResponseTrailers.
func (s *Stream) ResponseTrailers() Headers { return Headers{s.host, abi.ResponseTrailers} }

// Respond answers the request from the filter with status, headers and
// body; the upstream is not asked (or its response is replaced). Return
// what it returns from the phase. If the host refuses (the response has
// started), the error is logged and the stream stays paused: a request an
// auth filter meant to reject is never let through.
func (s *Stream) Respond(status int, headers [][2]string, body []byte) Action {
	if st := s.host.SendLocalResponse(uint32(status), "", body, headers); st != abi.OK {
		s.Log(LevelError, "sending a local response: "+Error(st).Error())
	}
	return Pause
}

// Resume lets a paused stream go on, in the direction that paused last.
// Call it when what the filter waited for (an outbound call) has happened.
//
// Call it from the callback of what the stream waited for, not from a
// callback of the other direction, which would resume that one instead.
func (s *Stream) Resume() error {
	s.held[s.paused] = false
	return errorOf(s.host.ContinueStream(s.paused))
}

// CallResponse is the answer to an outbound call. Status is 0 if the call
// failed (refused, timed out, no connection): there was no answer.
type CallResponse struct {
	Status  int
	Headers [][2]string
	Body    []byte
}

// Call sends an HTTP request to upstream, a destination the operator
// declared (Sluice's wasm_filter `upstream <name> <url>`; an Envoy cluster).
// headers must include :method, :path and :authority. done runs with the
// answer; the phase that calls Call usually returns Pause, and done ends
// with Resume or Respond. A call the phase does not Pause for is answered,
// in Sluice, before the stream's next callback if the answer is in by then,
// and dropped when the stream ends. done may be nil.
//
// timeoutMillis 0 leaves the timeout to the host (Sluice:
// http_call_timeout; Envoy: none). It is in milliseconds rather than a
// time.Duration because importing package time adds 270 KB to a filter.
func (s *Stream) Call(upstream string, headers [][2]string, body []byte, timeoutMillis uint32, done func(CallResponse)) error {
	token, st := s.host.DispatchHTTPCall(upstream, headers, body, nil, timeoutMillis)
	if st != abi.OK {
		return Error(st)
	}
	if done != nil {
		s.vm.calls[token] = pendingCall{stream: s.id, done: done}
	}
	return nil
}

// Headers is a header map of the stream. Names are lower case, as HTTP/2
// has them; lookups in Sluice ignore case.
type Headers struct {
	host abi.Host
	kind abi.MapType
}

// Get returns the value of the header name, or "" if it is absent. For a
// header sent more than once, Sluice joins the values with ",".
func (h Headers) Get(name string) string {
	v, _ := h.Lookup(name)
	return v
}

// Lookup returns the value of the header name and whether it is present.
func (h Headers) Lookup(name string) (string, bool) {
	v, st := h.host.GetHeaderMapValue(h.kind, name)
	return v, st == abi.OK
}

// Set replaces the header name (all its values) with value.
func (h Headers) Set(name, value string) error {
	return errorOf(h.host.ReplaceHeaderMapValue(h.kind, name, value))
}

// Add adds a value to the header name, keeping those it has.
func (h Headers) Add(name, value string) error {
	return errorOf(h.host.AddHeaderMapValue(h.kind, name, value))
}

// Del removes the header name.
func (h Headers) Del(name string) error {
	return errorOf(h.host.RemoveHeaderMapValue(h.kind, name))
}

// All returns every header as name/value pairs, in order.
func (h Headers) All() ([][2]string, error) {
	pairs, st := h.host.GetHeaderMapPairs(h.kind)
	return pairs, errorOf(st)
}

// SetAll replaces the whole map with pairs.
func (h Headers) SetAll(pairs [][2]string) error {
	return errorOf(h.host.SetHeaderMapPairs(h.kind, pairs))
}

// Body is the part of a body a body phase has: the chunk that arrived, or
// everything buffered so far while the filter paused. It is valid during
// the callback it was given to.
type Body struct {
	s   *Stream
	dir abi.StreamType
}

func (b Body) kind() abi.BufferType {
	if b.dir == abi.Request {
		return abi.RequestBody
	}
	return abi.ResponseBody
}

// Len is the body's length in bytes.
func (b Body) Len() int { return b.s.bodySize[b.dir] }

// Bytes reads the body.
func (b Body) Bytes() ([]byte, error) {
	if b.Len() == 0 {
		return nil, nil
	}
	data, st := b.s.host.GetBufferBytes(b.kind(), 0, b.Len())
	return data, errorOf(st)
}

// Replace replaces the body with data, which may be longer or shorter.
// When a filter changes a body's length it should remove content-length in
// the headers phase, since the headers go out before the body.
func (b Body) Replace(data []byte) error {
	if st := b.s.host.SetBufferBytes(b.kind(), 0, b.Len(), data); st != abi.OK {
		return Error(st)
	}
	b.s.bodySize[b.dir] = len(data)
	return nil
}
