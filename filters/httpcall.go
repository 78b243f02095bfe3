package filters

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/sluice-edge/sluice/abi"
	"github.com/sluice-edge/sluice/filters/internal/outbound"
)

// Defaults for the outbound calls a configuration leaves unbounded.
const (
	DefaultMaxHTTPCalls    = 16
	DefaultHTTPCallTimeout = outbound.DefaultDefaultTimeout
)

// newCallClient makes the client of the plugin's outbound calls, or nil
// when it declares no upstream. Each declaration is checked here, so that
// a bad one fails the load naming it.
func newCallClient(cfg Config) (*outbound.Client, error) {
	if len(cfg.Upstreams) == 0 {
		return nil, nil
	}
	names := make([]string, 0, len(cfg.Upstreams))
	for name := range cfg.Upstreams {
		names = append(names, name)
	}
	slices.Sort(names)
	ups := make([]outbound.Upstream, 0, len(names))
	for _, name := range names {
		u, err := outbound.ParseUpstream(name, cfg.Upstreams[name])
		if err != nil {
			return nil, err
		}
		ups = append(ups, u)
	}
	return outbound.NewClient(ups, outbound.Options{
		MaxResponseBytes: cfg.Limits.MaxBodySize,
		DefaultTimeout:   cfg.HTTPCalls.Timeout,
		MaxTimeout:       cfg.HTTPCalls.Timeout,
		MaxInFlight:      cfg.HTTPCalls.MaxInFlight,
		Prepare:          prepareCall,
	})
}

// HTTPCallLimits bound a filter's outbound calls.
type HTTPCallLimits struct {
	// MaxPerRequest is how many calls one request may make, and how many
	// the background instance may have in flight.
	MaxPerRequest int
	// Timeout caps each call; a guest asking for less gets less, one
	// asking for nothing (0) gets this.
	Timeout time.Duration
	// MaxInFlight caps the calls the whole plugin has in flight.
	MaxInFlight int
}

func (l HTTPCallLimits) withDefaults() HTTPCallLimits {
	if l.MaxPerRequest <= 0 {
		l.MaxPerRequest = DefaultMaxHTTPCalls
	}
	if l.Timeout <= 0 {
		l.Timeout = DefaultHTTPCallTimeout
	}
	if l.MaxInFlight <= 0 {
		l.MaxInFlight = outbound.DefaultMaxInFlight
	}
	return l
}

// callSet is the outbound calls of one context: a request's (at most
// MaxPerRequest in all, canceled when the request ends) or the background
// instance's (at most MaxPerRequest in flight). Each answer arrives on
// results, whose room for every call in flight means a finished call never
// waits to hand its answer over. The instance's lock guards it.
type callSet struct {
	made, pending int
	results       chan callResult
	ctx           context.Context
	cancel        context.CancelFunc
	response      *callResponse // of the call being delivered
}

// callResult is how an outbound call ended: a response, or an error.
type callResult struct {
	id   uint32
	resp *outbound.Response
	err  error
}

// start dispatches call for the context whose calls cs holds, in parent
// (the request's context, or the plugin's). countAll counts every call
// made against the limit (a request), not only those in flight.
func (cs *callSet) start(inst *Instance, parent context.Context, call *abi.HTTPCall, countAll bool) (uint32, abi.Status) {
	p := inst.plugin
	limits := p.cfg.HTTPCalls
	if p.calls == nil {
		return 0, abi.StatusBadArgument // no upstream is declared: none is known
	}
	req := &outbound.Request{
		Upstream: call.Upstream, Headers: call.Headers, Trailers: call.Trailers, Timeout: call.Timeout,
	}
	prepared, err := p.calls.Prepare(req)
	if err != nil || int64(len(call.Body)) > p.cfg.Limits.MaxBodySize {
		return 0, abi.StatusBadArgument
	}
	used := cs.pending
	if countAll {
		used = cs.made
	}
	if used >= limits.MaxPerRequest {
		return 0, abi.StatusInternalFailure
	}
	if cs.results == nil {
		cs.results = make(chan callResult, limits.MaxPerRequest)
		cs.ctx, cs.cancel = context.WithCancel(parent)
	}
	req.Body = slices.Clone(call.Body) // the guest's memory is only lent for this host call
	inst.nextCallID++
	id := inst.nextCallID
	cs.made++
	cs.pending++
	go func(ctx context.Context, results chan<- callResult) {
		ctx, span := startCallSpan(ctx, p, req)
		resp, err := p.calls.Send(ctx, prepared)
		endCallSpan(span, resp, err)
		results <- callResult{id: id, resp: resp, err: err}
	}(cs.ctx, cs.results)
	return id, abi.StatusOK
}

// end cancels the calls still in flight: their answers are dropped.
func (cs *callSet) end() {
	if cs.cancel != nil {
		cs.cancel()
	}
}

// deliver calls proxy_on_http_call_response for r in scope, with the
// response's maps and body readable during the call. The caller holds the
// instance's lock.
func (cs *callSet) deliver(inst *Instance, scope *callScope, r callResult) error {
	cs.pending--
	cs.response = newCallResponse(r)
	defer func() { cs.response = nil }()
	if r.err != nil {
		inst.plugin.callFailed(r.err)
	}
	nh, body, nt := cs.response.counts()
	_, err := inst.callOr(scope, abi.OnHTTPCallResponse, 0, rootContextID, uint64(r.id), nh, body, nt)
	return err
}

// callResponse is an outbound call's answer as proxy_on_http_call_response
// sees it; a failed call has no headers, body or trailers.
type callResponse struct {
	headers, trailers pairsMap
	body              constBuffer
}

func newCallResponse(r callResult) *callResponse {
	if r.resp == nil {
		return &callResponse{}
	}
	return &callResponse{headers: r.resp.Headers, trailers: r.resp.Trailers, body: r.resp.Body}
}

func (c *callResponse) counts() (headers, body, trailers uint64) {
	return uint64(len(c.headers)), uint64(len(c.body)), uint64(len(c.trailers))
}

// headerMap returns the call response's headers or trailers (read only),
// for map types that name them; handled is false for other types.
func (c *callResponse) headerMap(t abi.MapType, write bool) (m abi.HeaderMap, st abi.Status, handled bool) {
	switch t {
	case abi.MapHTTPCallResponseHeaders, abi.MapHTTPCallResponseTrailers:
	default:
		return nil, 0, false
	}
	if c == nil || write {
		return nil, abi.StatusBadArgument, true
	}
	if t == abi.MapHTTPCallResponseHeaders {
		return c.headers, abi.StatusOK, true
	}
	return c.trailers, abi.StatusOK, true
}

// buffer returns the call response's body (read only).
func (c *callResponse) buffer(t abi.BufferType) (abi.Buffer, abi.Status, bool) {
	if t != abi.BufferHTTPCallResponse {
		return nil, 0, false
	}
	if c == nil {
		return nil, abi.StatusNotFound, true
	}
	return c.body, abi.StatusOK, true
}

// pairsMap is a read-only header map.
type pairsMap [][2]string

// Get implements abi.HeaderMap.
func (m pairsMap) Get(name string) (string, bool) {
	var values []string
	for _, p := range m {
		if p[0] == name {
			values = append(values, p[1])
		}
	}
	return strings.Join(values, ","), values != nil
}

// Pairs implements abi.HeaderMap.
func (m pairsMap) Pairs() [][2]string { return m }

// SetPairs implements abi.HeaderMap: read only.
func (m pairsMap) SetPairs([][2]string) abi.Status { return abi.StatusBadArgument }

// Add implements abi.HeaderMap: read only.
func (m pairsMap) Add(string, string) abi.Status { return abi.StatusBadArgument }

// Replace implements abi.HeaderMap: read only.
func (m pairsMap) Replace(string, string) abi.Status { return abi.StatusBadArgument }

// Remove implements abi.HeaderMap: read only.
func (m pairsMap) Remove(string) abi.Status { return abi.StatusBadArgument }

// callFailed reports a failed outbound call to the embedder.
func (p *Plugin) callFailed(err error) {
	if p.cfg.Events != nil {
		p.cfg.Events.CallFailed(fmt.Errorf("wasm filter %q: outbound call: %w", p.cfg.Name, err))
	}
}
