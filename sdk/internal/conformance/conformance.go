// Package conformance is a filter that uses the SDK's parts a filter uses
// per request, chosen by the request path. The SDK's tests run it natively through sdktest and,
// built for wasip1 (cmd/), in a real Caddy, with the same cases: both must
// agree, which checks the SDK's Wasm glue against the real host and
// sdktest's emulator against Sluice.
package conformance

import (
	"github.com/sluice-edge/sluice/sdk"
)

// Configure is the filter's sdk.Configure. The configuration must be
// "conformance"; anything else is refused.
func Configure(p *sdk.Plugin) (sdk.NewFilter, error) {
	if string(p.Config()) != "conformance" {
		return nil, errBadConfig
	}
	var m metrics
	var errs [4]error
	m.hits, errs[0] = p.Counter("conformance_hits")
	m.done, errs[1] = p.Counter("conformance_done")
	m.level, errs[2] = p.Gauge("conformance_level")
	m.sizes, errs[3] = p.Histogram("conformance_sizes")
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	return func() sdk.Filter { return &filter{metrics: &m} }, nil
}

// metrics are the filter's metrics, defined once at configure.
type metrics struct {
	hits, done sdk.Counter
	level      sdk.Gauge
	sizes      sdk.Histogram
}

type configError string

func (e configError) Error() string { return string(e) }

const errBadConfig = configError(`want the configuration "conformance"`)

// filter holds per-request state: a new one per request.
type filter struct {
	*metrics
	path    string
	phases  int
	resumed bool
}

func (f *filter) OnRequestHeaders(s *sdk.Stream, end bool) sdk.Action {
	f.phases++
	req := s.RequestHeaders()
	f.path = req.Get(":path")
	switch f.path {
	case "/headers":
		_ = req.Add("x-added", "a")
		_ = req.Set("x-set", "s")
		_ = req.Del("x-del")
		if v, ok := req.Lookup("x-absent"); ok || v != "" {
			_ = req.Set("x-lookup", "absent header found")
		}
	case "/setall":
		pairs, err := req.All()
		if err != nil {
			return s.Respond(500, nil, []byte(err.Error()))
		}
		kept := pairs[:0]
		for _, p := range pairs {
			if p[0] != "x-drop" {
				kept = append(kept, p)
			}
		}
		_ = req.SetAll(append(kept, [2]string{"x-count", itoa(len(pairs))}))
	case "/respond":
		return s.Respond(418, [][2]string{{"x-why", "teapot"}}, []byte("short and stout"))
	case "/property":
		path, _ := s.Property("request.path")
		_ = req.Set("x-property-path", string(path))
		if _, ok := s.Property("no.such.property"); ok {
			_ = req.Set("x-missing-found", "true")
		}
		if err := s.SetProperty("route", "blue"); err != nil {
			return s.Respond(500, nil, []byte("set route: "+err.Error()))
		}
		_ = req.Set("x-host-property", errText(s.SetProperty("request.path", "/elsewhere")))
	case "/shared":
		_ = req.Set("x-n", itoa(increment(s, "conformance-n")))
	case "/call":
		err := s.Call("auth", [][2]string{{":method", "GET"}, {":path", "/check"}, {":authority", "auth"}}, nil, 2000,
			func(r sdk.CallResponse) {
				if r.Status != 200 {
					s.Respond(502, nil, []byte("auth answered "+itoa(r.Status)))
					return
				}
				_ = s.RequestHeaders().Set("x-auth", string(r.Body))
				f.resumed = true
				if err := s.Resume(); err != nil {
					s.Log(sdk.LevelError, "resume: "+err.Error())
				}
			})
		if err != nil {
			return s.Respond(500, nil, []byte("call: "+err.Error()))
		}
		return sdk.Pause
	case "/call-undeclared":
		_ = req.Set("x-error", errText(s.Call("nowhere", [][2]string{{":method", "GET"}, {":path", "/"}, {":authority", "x"}}, nil, 0, func(sdk.CallResponse) {})))
	case "/metrics":
		_ = f.hits.Add(2)
		v, err := f.hits.Value()
		if err != nil {
			return s.Respond(500, nil, []byte("metric: "+err.Error()))
		}
		_ = req.Set("x-hits", itoa(int(v)))
		_ = f.level.Set(7)
		_ = f.level.Add(-2)
		level, _ := f.level.Value()
		_ = req.Set("x-gauge", itoa(int(level)))
		_ = req.Set("x-histogram", errText(f.sizes.Record(42)))
		done, _ := f.done.Value()
		_ = req.Set("x-done", itoa(int(done)))
	case "/random":
		var b [16]byte
		if err := sdk.RandomBytes(b[:]); err != nil {
			return s.Respond(500, nil, []byte("random: "+err.Error()))
		}
		const hex = "0123456789abcdef"
		out := make([]byte, 0, 32)
		for _, c := range b {
			out = append(out, hex[c>>4], hex[c&15])
		}
		_ = req.Set("x-random", string(out))
		_ = req.Set("x-now", itoa(int(sdk.Now()/1e9)))
	case "/end":
		_ = req.Set("x-end", boolText(end))
	case "/log":
		s.Log(sdk.LevelWarn, "conformance says hello")
	case "/body":
		if !end {
			_ = req.Del("content-length")
		}
	}
	return sdk.Continue
}

// OnRequestBody upper-cases the request body of /body, buffered whole.
func (f *filter) OnRequestBody(s *sdk.Stream, body sdk.Body, end bool) sdk.Action {
	if f.path != "/body" {
		return sdk.Continue
	}
	if !end {
		return sdk.Pause
	}
	b, err := body.Bytes()
	if err != nil || len(b) != body.Len() {
		return s.Respond(500, nil, []byte("reading the body"))
	}
	upper := make([]byte, len(b))
	for i, c := range b {
		if 'a' <= c && c <= 'z' {
			c -= 'a' - 'A'
		}
		upper[i] = c
	}
	if err := body.Replace(upper); err != nil {
		return s.Respond(500, nil, []byte("replacing the body: "+err.Error()))
	}
	return sdk.Continue
}

func (f *filter) OnResponseHeaders(s *sdk.Stream, end bool) sdk.Action {
	f.phases++
	resp := s.ResponseHeaders()
	_ = resp.Set("x-saw-path", f.path)
	_ = resp.Set("x-phases", itoa(f.phases))
	if f.resumed {
		_ = resp.Set("x-resumed", "true")
	}
	if f.path == "/respbody" {
		_ = resp.Del("content-length")
	}
	return sdk.Continue
}

// OnResponseBody appends "!" to the response body of /respbody.
func (f *filter) OnResponseBody(s *sdk.Stream, body sdk.Body, end bool) sdk.Action {
	if f.path != "/respbody" {
		return sdk.Continue
	}
	if !end {
		return sdk.Pause
	}
	b, _ := body.Bytes()
	_ = body.Replace(append(b, '!'))
	return sdk.Continue
}

// OnDone counts the requests that ended, which /metrics reports.
func (f *filter) OnDone(*sdk.Stream) { _ = f.done.Add(1) }

// increment adds one to a counter in shared data with compare-and-swap and
// returns the new value.
func increment(s *sdk.Stream, key string) int {
	for {
		v, cas, err := s.SharedData(key)
		n := 0
		if err == nil {
			n = atoi(string(v))
		} else if err != sdk.ErrNotFound {
			return -1
		}
		err = s.SetSharedData(key, []byte(itoa(n+1)), cas)
		if err == nil {
			return n + 1
		}
		if err != sdk.ErrCASMismatch {
			return -1
		}
	}
}

func boolText(b bool) string {
	if b {
		return "true"
	}
	return "false"
}

func errText(err error) string {
	if err == nil {
		return "<nil>"
	}
	return err.Error()
}

func itoa(n int) string {
	if n < 0 {
		return "-" + itoa(-n)
	}
	if n < 10 {
		return string(rune('0' + n))
	}
	return itoa(n/10) + string(rune('0'+n%10))
}

func atoi(s string) int {
	n := 0
	for _, c := range s {
		n = n*10 + int(c-'0')
	}
	return n
}
