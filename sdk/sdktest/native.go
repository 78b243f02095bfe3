package sdktest

import (
	"bytes"
	"errors"
	"net/http"
	"net/http/httptest"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/sluice-edge/sluice/sdk/internal/abi"
)

const (
	rootID = 1
	// clientAddr is the source.address of native requests.
	clientAddr = "192.0.2.10:40000"
)

// Run runs the suite's cases natively, one subtest each, in order. The
// filter is configured once, as Sluice configures it once at load; each
// case is a new stream.
func Run(t *testing.T, s Suite) {
	t.Helper()
	e, err := configured(s)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range s.Cases {
		t.Run(c.Name, func(t *testing.T) {
			if c.Check == nil {
				t.Fatal("case has no Check")
			}
			r, err := e.request(c)
			if err != nil {
				t.Fatal(err)
			}
			c.Check(t, r)
		})
	}
}

// ConfigError configures the filter with config natively and returns the
// error the filter refused it with (what it logged), or nil if it took it.
// The suite gives the configure function (nil: the registered one).
func ConfigError(config string, s Suite) error {
	s.Config = config
	_, err := configured(s)
	return err
}

// ConfigLogs configures the suite's filter natively and returns what it
// logged while configuring (a Result's Logs hold a request's only), and the
// error it refused the configuration with, if it did.
func ConfigLogs(s Suite) ([]string, error) {
	e, err := configured(s)
	if err != nil {
		return nil, err
	}
	return e.host.logs, nil
}

// emulation is a configured filter over an emulated host.
type emulation struct {
	suite  Suite
	host   *host
	vm     abi.VM
	stream uint32 // the current request's context
}

// configured starts a dispatcher over a new emulated host and configures
// the suite's filter.
func configured(s Suite) (*emulation, error) {
	allowed := map[string]bool{}
	for name := range s.Upstreams {
		allowed[name] = true
	}
	h := newHost(&store{data: map[string]sharedValue{}}, allowed)
	h.buffers[abi.PluginConfiguration] = []byte(s.Config)
	vm := abi.NewVM(h, s.Configure) // nil: the registered one
	vm.ContextCreate(rootID, 0)
	vm.VMStart(rootID, 0)
	if !vm.Configure(rootID, len(s.Config)) {
		return nil, errors.New("the filter refused its configuration: " + strings.Join(h.logs, "; "))
	}
	return &emulation{suite: s, host: h, vm: vm, stream: rootID}, nil
}

// request sends one case's request through the filter as a new stream.
func (e *emulation) request(c Case) (*Result, error) {
	e.host.reset()
	e.stream++
	e.vm.ContextCreate(e.stream, rootID)
	r, err := e.exchange(c)
	e.host.calls = nil // calls no one waited for are dropped with the stream
	e.vm.Done(e.stream)
	e.vm.Log(e.stream)
	e.vm.Delete(e.stream)
	if r != nil {
		r.Logs = e.host.logs
		r.Metrics = e.host.store.snapshot()
		r.Properties = map[string]string{}
		for _, name := range e.suite.Properties {
			r.Properties[name] = string(e.host.props[name])
		}
	}
	return r, err
}

// exchange takes the request through the filter's phases, the upstream and
// back, in Sluice's order.
func (e *emulation) exchange(c Case) (*Result, error) {
	req := c.Request
	method, path := req.methodPath()
	h := e.host
	urlPath, query, _ := strings.Cut(path, "?")
	for k, v := range map[string]string{
		"request.method": method, "request.path": path, "request.url_path": urlPath,
		"request.query": query, "request.host": "sdktest.local", "request.scheme": "http",
		"request.protocol": "HTTP/1.1", "request.id": "sdktest-" + strconv.Itoa(int(e.stream)),
		"request.useragent": req.Header.Get("User-Agent"), "request.referer": req.Header.Get("Referer"),
	} {
		h.props[k] = []byte(v)
	}
	header := req.Header.Clone()
	if len(req.Body) > 0 && header.Get("Content-Length") == "" {
		header = setHeader(header, "Content-Length", strconv.Itoa(len(req.Body)))
	}
	h.maps[abi.RequestHeaders] = append([][2]string{
		{":method", method}, {":path", path}, {":authority", "sdktest.local"}, {":scheme", "http"},
	}, pairsOf(header)...)

	body, err := e.message(abi.Request, abi.RequestHeaders, abi.RequestBody, split(req.Body, req.ChunkSize),
		e.vm.RequestHeaders, e.vm.RequestBody)
	if err != nil || e.host.local != nil {
		return e.local(), err
	}
	upstreamReq, err := requestOf(h.maps[abi.RequestHeaders], body)
	if err != nil {
		return nil, err
	}
	rec := &chunkRecorder{ResponseRecorder: httptest.NewRecorder()}
	c.handler()(rec, upstreamReq)
	respHeader := rec.Header()
	if !rec.flushed && respHeader.Get("Content-Length") == "" && rec.Body.Len() < 2048 {
		// What Go's server (the upstream in Caddy) does for a short
		// response written in one go.
		respHeader = setHeader(respHeader.Clone(), "Content-Length", strconv.Itoa(rec.Body.Len()))
	}
	h.maps[abi.ResponseHeaders] = append([][2]string{{":status", strconv.Itoa(rec.Code)}}, pairsOf(respHeader)...)
	h.props["response.code"] = []byte(strconv.Itoa(rec.Code))

	respBody, err := e.message(abi.Response, abi.ResponseHeaders, abi.ResponseBody, rec.chunks,
		e.vm.ResponseHeaders, e.vm.ResponseBody)
	result := e.local()
	if result == nil {
		if err != nil {
			return nil, err
		}
		result = &Result{Response: Response{Header: http.Header{}, Body: respBody}}
		for _, p := range h.maps[abi.ResponseHeaders] {
			if p[0] == ":status" {
				result.Response.Status, _ = strconv.Atoi(p[1])
			} else {
				result.Response.Header.Add(p[0], p[1])
			}
		}
	}
	result.Upstream, result.UpstreamBody = upstreamReq, body
	return result, err
}

// message runs the headers and body callbacks of one direction and returns
// the body as it leaves the filter. As in Sluice, headers go out when the
// filter lets them (then they can no longer change, and for the response a
// local response is too late); headers held until the body's end go out
// with the body's real content-length, and headers that went out earlier
// must not carry a content-length the filter then made wrong.
func (e *emulation) message(dir abi.StreamType, headers abi.MapType, kind abi.BufferType, chunks [][]byte,
	onHeaders func(uint32, int, bool) abi.Action, onBody func(uint32, int, bool) abi.Action) ([]byte, error) {
	end := len(chunks) == 0
	action, err := e.phase(dir, func() abi.Action {
		return onHeaders(e.stream, len(e.host.maps[headers]), end)
	}, end)
	if err != nil || e.host.local != nil {
		return nil, err
	}
	held := action == abi.Pause && !e.host.resumed[dir]
	if !held {
		e.host.sent(headers)
	}
	if end {
		return nil, nil
	}
	out, releasedAtEnd, err := e.body(dir, kind, chunks, onBody, func() { e.host.sent(headers) })
	if err != nil || e.host.local != nil {
		return nil, err
	}
	length := strconv.Itoa(len(out))
	if held && releasedAtEnd {
		e.host.maps[headers] = append(without(e.host.maps[headers], "content-length"), [2]string{"content-length", length})
	} else if v, st := e.host.GetHeaderMapValue(headers, "content-length"); st == abi.OK && v != length {
		return nil, errors.New("the filter changed the " + direction(dir) + " body to " + length +
			" bytes but its headers, already sent, say content-length " + v +
			": Sluice aborts such a stream; remove content-length in the headers callback")
	}
	return out, nil
}

// local is the result of a local response, or nil.
func (e *emulation) local() *Result {
	if e.host.local == nil {
		return nil
	}
	return &Result{Response: *e.host.local}
}

// phase runs one callback. Answers to calls made earlier, which no callback
// waited for, come before it, as in Sluice; calls the callback pauses for
// are answered after it. A Pause that waits for nothing more (the end of
// the stream) must be resumed by a call's callback or answered with a
// local response; otherwise the request would hang until Sluice's timeout,
// which is an error here.
func (e *emulation) phase(dir abi.StreamType, callback func() abi.Action, last bool) (abi.Action, error) {
	e.answerCalls()
	if e.host.local != nil {
		return abi.Pause, nil
	}
	e.host.resumed[dir] = false
	action := callback()
	if action == abi.Pause {
		e.answerCalls()
	}
	if action == abi.Pause && last && !e.host.resumed[dir] && e.host.local == nil {
		return action, errors.New("the filter paused the " + direction(dir) + " and nothing resumed it: " +
			"in Sluice it would wait until its timeout")
	}
	return action, nil
}

func direction(dir abi.StreamType) string {
	if dir == abi.Request {
		return "request"
	}
	return "response"
}

// body feeds chunks to a body callback, buffering what the filter holds with
// Pause, and returns the body as it leaves the filter, and whether nothing
// left before the last chunk. release runs when the first bytes leave.
func (e *emulation) body(dir abi.StreamType, kind abi.BufferType, chunks [][]byte,
	callback func(id uint32, size int, end bool) abi.Action, release func()) (out []byte, releasedAtEnd bool, err error) {
	var held []byte
	released := false
	for i, chunk := range chunks {
		end := i == len(chunks)-1
		e.host.buffers[kind] = append(held, chunk...)
		action, err := e.phase(dir, func() abi.Action {
			return callback(e.stream, len(e.host.buffers[kind]), end)
		}, end)
		if err != nil || e.host.local != nil {
			return nil, false, err
		}
		if action == abi.Pause && !e.host.resumed[dir] {
			held = e.host.buffers[kind]
			continue
		}
		if !released {
			released, releasedAtEnd = true, end
			release()
		}
		out = append(out, e.host.buffers[kind]...)
		held = nil
	}
	delete(e.host.buffers, kind)
	return out, releasedAtEnd, nil
}

// split cuts data into chunks of size bytes (one chunk if size is 0).
func split(data []byte, size int) [][]byte {
	if size <= 0 {
		size = len(data)
	}
	var chunks [][]byte
	for len(data) > 0 {
		n := min(size, len(data))
		chunks = append(chunks, data[:n])
		data = data[n:]
	}
	return chunks
}

// chunkRecorder records an upstream handler's response, each Write as one
// body chunk, as it would reach a filter if the handler flushed after it.
type chunkRecorder struct {
	*httptest.ResponseRecorder
	chunks  [][]byte
	flushed bool
}

func (r *chunkRecorder) Write(p []byte) (int, error) {
	if len(p) > 0 {
		r.chunks = append(r.chunks, append([]byte(nil), p...))
	}
	return r.ResponseRecorder.Write(p)
}

func (r *chunkRecorder) WriteString(s string) (int, error) { return r.Write([]byte(s)) }

func (r *chunkRecorder) Flush() {
	r.flushed = true
	r.ResponseRecorder.Flush()
}

func setHeader(h http.Header, name, value string) http.Header {
	if h == nil {
		h = http.Header{}
	}
	h.Set(name, value)
	return h
}

// answerCalls answers the outbound calls made so far from the suite's
// upstream handlers, as Sluice does before the next callback.
func (e *emulation) answerCalls() {
	for len(e.host.calls) > 0 {
		c := e.host.calls[0]
		e.host.calls = e.host.calls[1:]
		req, err := requestOf(c.headers, c.body)
		var headers [][2]string
		var body []byte
		if err == nil {
			rec := httptest.NewRecorder()
			e.suite.Upstreams[c.upstream].ServeHTTP(rec, req)
			headers = append([][2]string{{":status", strconv.Itoa(rec.Code)}}, pairsOf(rec.Header())...)
			body = rec.Body.Bytes()
		} // a call Sluice could not send is an answer with no headers
		e.host.maps[abi.HTTPCallResponseHeaders] = headers
		e.host.buffers[abi.HTTPCallResponseBody] = body
		e.vm.HTTPCallResponse(rootID, c.token, len(headers), len(body), 0)
		delete(e.host.maps, abi.HTTPCallResponseHeaders)
		delete(e.host.buffers, abi.HTTPCallResponseBody)
	}
}

// requestOf builds an *http.Request from pseudo-headers and headers.
func requestOf(pairs [][2]string, body []byte) (*http.Request, error) {
	method, path, authority := http.MethodGet, "/", "sdktest.local"
	header := http.Header{}
	for _, p := range pairs {
		switch p[0] {
		case ":method":
			method = p[1]
		case ":path":
			path = p[1]
		case ":authority":
			authority = p[1]
		case ":scheme":
		default:
			header.Add(p[0], p[1])
		}
	}
	req, err := http.NewRequest(method, "http://"+authority+path, bytes.NewReader(body))
	if err != nil {
		return nil, errors.New("the filter left a request no upstream can receive: " + err.Error())
	}
	req.Header = header
	req.RequestURI = path
	req.RemoteAddr = clientAddr
	return req, nil
}

// pairsOf lists h as lower-case pairs, in a stable order, with values as
// they arrive over HTTP.
func pairsOf(h http.Header) [][2]string {
	names := make([]string, 0, len(h))
	for name := range h {
		names = append(names, name)
	}
	sort.Strings(names)
	var pairs [][2]string
	for _, name := range names {
		for _, v := range h[name] {
			// HTTP drops spaces around a field value on the wire.
			pairs = append(pairs, [2]string{strings.ToLower(name), strings.Trim(v, " \t")})
		}
	}
	return pairs
}

func toHeader(pairs [][2]string) http.Header {
	h := http.Header{}
	for _, p := range pairs {
		h.Add(p[0], p[1])
	}
	return h
}
