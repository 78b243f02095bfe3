package sdk

import (
	"github.com/sluice-edge/sluice/sdk/internal/abi"
)

func init() {
	abi.NewVM = func(host abi.Host, c any) abi.VM {
		v := newVM(host)
		if c, ok := c.(Configure); ok {
			v.configure = c
		}
		return v
	}
}

// vm dispatches a host's callbacks to the filter: one per module instance.
// Sluice gives it one root context and, per instance, one stream; other
// hosts interleave many streams in one instance, which it handles the same
// way.
type vm struct {
	host      abi.Host
	configure Configure // nil: the program's registered one
	roots     map[uint32]*root
	streams   map[uint32]*Stream
	calls     map[uint32]pendingCall // by token
}

// root is a root context: a configured plugin.
type root struct {
	plugin    *Plugin
	newFilter NewFilter // nil until configured
}

type pendingCall struct {
	stream uint32
	done   func(CallResponse)
}

func newVM(host abi.Host) *vm {
	return &vm{
		host:    host,
		roots:   make(map[uint32]*root, 1),
		streams: make(map[uint32]*Stream, 1),
		calls:   make(map[uint32]pendingCall),
	}
}

func (v *vm) ContextCreate(id, parent uint32) {
	if parent == 0 {
		v.roots[id] = &root{plugin: &Plugin{host: v.host}}
		return
	}
	r := v.roots[parent]
	if r == nil {
		return
	}
	s := &Stream{Plugin: r.plugin, vm: v, id: id}
	if r.newFilter != nil {
		s.filter = r.newFilter()
	} else {
		s.filter = unconfigured{}
	}
	s.phases = phasesOf(s.filter)
	v.streams[id] = s
}

// phases are a filter's phase methods, each nil where the filter has none.
type phases struct {
	requestHeaders   RequestHeadersFilter
	requestBody      RequestBodyFilter
	requestTrailers  RequestTrailersFilter
	responseHeaders  ResponseHeadersFilter
	responseBody     ResponseBodyFilter
	responseTrailers ResponseTrailersFilter
	done             DoneFilter
}

// phasesOf finds f's phase methods, once per stream. The Go runtime builds
// the itab of a (type, interface) pair the first time an assertion needs
// it and keeps it in a global table; under Sluice's snapshots that table is
// as configuration left it, so a pair first met in a request is built again
// in every request: vm.probe meets them at configure.
func phasesOf(f Filter) (p phases) {
	p.requestHeaders, _ = f.(RequestHeadersFilter)
	p.requestBody, _ = f.(RequestBodyFilter)
	p.requestTrailers, _ = f.(RequestTrailersFilter)
	p.responseHeaders, _ = f.(ResponseHeadersFilter)
	p.responseBody, _ = f.(ResponseBodyFilter)
	p.responseTrailers, _ = f.(ResponseTrailersFilter)
	p.done, _ = f.(DoneFilter)
	return p
}

// any reports whether the filter has a phase method.
func (p phases) any() bool { return p != phases{} }

// unconfigured is the filter of a stream whose plugin has no working
// configuration (a host that carried on after proxy_on_configure failed):
// it fails closed rather than let requests through unfiltered.
type unconfigured struct{}

func (unconfigured) OnRequestHeaders(s *Stream, _ bool) Action {
	return s.Respond(500, nil, []byte("filter not configured\n"))
}

func (v *vm) VMStart(uint32, int) bool { return true }

func (v *vm) Configure(id uint32, size int) bool {
	r := v.roots[id]
	if r == nil {
		return false
	}
	configure := v.configure
	if configure == nil {
		configure = registered
	}
	if configure == nil {
		v.host.Log(uint32(LevelCritical), "sluice sdk: the program never called sdk.Register")
		return false
	}
	if size > 0 {
		config, st := v.host.GetBufferBytes(abi.PluginConfiguration, 0, size)
		if st != abi.OK {
			v.host.Log(uint32(LevelCritical), "sluice sdk: reading the configuration: "+Error(st).Error())
			return false
		}
		r.plugin.config = config
	}
	newFilter, err := configure(r.plugin)
	if err == nil && newFilter == nil {
		err = errNoFilter
	}
	if err != nil {
		v.host.Log(uint32(LevelCritical), err.Error())
		return false
	}
	r.newFilter = newFilter
	v.probe(id)
	return true
}

// probe makes and drops one stream of root, as a request makes its own:
// under Sluice every request starts from the state configuration left, so
// the Go runtime is then ready for it (the itabs of the filter's phase
// interfaces built, the allocator holding memory of each size a stream
// needs) rather than set up again in every request: measured, half of a
// small filter's guest time. It also checks the filter once, not per
// request. The probe's id is one a host reaches last; a host that gets
// there (Envoy's counter wraps) may have a live context with it, which the
// probe leaves alone by not running.
func (v *vm) probe(root uint32) {
	if v.streams[probeStream] != nil || v.roots[probeStream] != nil {
		return
	}
	v.ContextCreate(probeStream, root)
	if !v.streams[probeStream].phases.any() {
		v.host.Log(uint32(LevelWarn), "sluice sdk: the Filter has no On... method with the SDK's signatures, so it sees nothing")
	}
	delete(v.streams, probeStream) // it made no calls
}

const probeStream = ^uint32(0)

var errNoFilter = simpleError("the configure function returned no NewFilter")

type simpleError string

func (e simpleError) Error() string { return string(e) }

func (v *vm) RequestHeaders(id uint32, _ int, end bool) Action {
	if s := v.streams[id]; s != nil {
		if f := s.phases.requestHeaders; f != nil {
			return s.answer(abi.Request, f.OnRequestHeaders(s, end))
		}
	}
	return Continue
}

func (v *vm) RequestBody(id uint32, size int, end bool) Action {
	if s := v.streams[id]; s != nil {
		if f := s.phases.requestBody; f != nil {
			s.bodySize[abi.Request] = size
			return s.answer(abi.Request, f.OnRequestBody(s, Body{s, abi.Request}, end))
		}
		return s.unhandled(abi.Request)
	}
	return Continue
}

func (v *vm) RequestTrailers(id uint32, _ int) Action {
	if s := v.streams[id]; s != nil {
		if f := s.phases.requestTrailers; f != nil {
			return s.answer(abi.Request, f.OnRequestTrailers(s))
		}
		return s.unhandled(abi.Request)
	}
	return Continue
}

func (v *vm) ResponseHeaders(id uint32, _ int, end bool) Action {
	if s := v.streams[id]; s != nil {
		if f := s.phases.responseHeaders; f != nil {
			return s.answer(abi.Response, f.OnResponseHeaders(s, end))
		}
	}
	return Continue
}

func (v *vm) ResponseBody(id uint32, size int, end bool) Action {
	if s := v.streams[id]; s != nil {
		if f := s.phases.responseBody; f != nil {
			s.bodySize[abi.Response] = size
			return s.answer(abi.Response, f.OnResponseBody(s, Body{s, abi.Response}, end))
		}
		return s.unhandled(abi.Response)
	}
	return Continue
}

func (v *vm) ResponseTrailers(id uint32, _ int) Action {
	if s := v.streams[id]; s != nil {
		if f := s.phases.responseTrailers; f != nil {
			return s.answer(abi.Response, f.OnResponseTrailers(s))
		}
		return s.unhandled(abi.Response)
	}
	return Continue
}

// answer notes what the filter answered a callback of direction dir: a
// Pause holds the direction (for Resume, and for the callbacks the filter
// has no method for); a Continue lets it go.
func (s *Stream) answer(dir abi.StreamType, a Action) Action {
	s.held[dir] = a == Pause
	if a == Pause {
		s.paused = dir
	}
	return a
}

// unhandled answers a body or trailers callback the filter has no method
// for: the direction stays held if the filter held it. Answering Continue
// would let through headers the filter paused (hosts read it as "go on"),
// such as a request it is still checking or failed to reject.
func (s *Stream) unhandled(dir abi.StreamType) Action {
	if s.held[dir] {
		return Pause
	}
	return Continue
}

func (v *vm) Done(uint32) bool { return true }

// Log runs OnDone: the last callback in which the request and response are
// still readable.
func (v *vm) Log(id uint32) {
	if s := v.streams[id]; s != nil {
		if f := s.phases.done; f != nil {
			f.OnDone(s)
		}
	}
}

func (v *vm) Delete(id uint32) {
	delete(v.roots, id)
	if _, ok := v.streams[id]; !ok {
		return
	}
	delete(v.streams, id)
	for token, c := range v.calls {
		if c.stream == id {
			delete(v.calls, token)
		}
	}
}

func (v *vm) HTTPCallResponse(_, token uint32, headers, bodySize, _ int) {
	c, ok := v.calls[token]
	if !ok {
		return
	}
	delete(v.calls, token)
	s := v.streams[c.stream]
	if s == nil {
		return
	}
	v.host.SetEffectiveContext(s.id)
	var resp CallResponse
	if headers > 0 {
		resp.Headers, _ = v.host.GetHeaderMapPairs(abi.HTTPCallResponseHeaders)
		for _, h := range resp.Headers {
			if h[0] == ":status" {
				resp.Status = atoi(h[1])
			}
		}
	}
	if bodySize > 0 {
		resp.Body, _ = v.host.GetBufferBytes(abi.HTTPCallResponseBody, 0, bodySize)
	}
	c.done(resp)
}

// atoi parses a status code; anything else is 0.
func atoi(s string) int {
	n := 0
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' || n > 1e6 {
			return 0
		}
		n = n*10 + int(s[i]-'0')
	}
	return n
}
