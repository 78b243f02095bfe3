// Package sdktest runs a filter's test cases natively, with plain go test
// and no Wasm, and runs the same cases against the filter's built .wasm in a
// real Caddy with Sluice:
//
//	var suite = sdktest.Suite{
//		Config: "x-tenant: a",
//		Cases: []sdktest.Case{{
//			Name:    "tags the request",
//			Request: sdktest.Request{Path: "/"},
//			Check: func(t *testing.T, r *sdktest.Result) {
//				if got := r.Upstream.Header.Get("X-Tenant"); got != "a" {
//					t.Errorf("x-tenant = %q", got)
//				}
//			},
//		}},
//	}
//
//	func TestFilter(t *testing.T) { sdktest.Run(t, suite) }
//
//	func TestFilterInCaddy(t *testing.T) {
//		sdktest.RunCaddy(t, sdktest.Build(t, "."), suite)
//	}
//
// A suite is one configured filter; its cases are requests sent one after
// another. They share the filter's shared data and metrics, so a rate
// limiter's cases see the tokens earlier cases took. Suites are independent
// of each other: run them in parallel with t.Parallel.
//
// Natively the filter is configured once per suite and each case is a new
// stream with a new Filter, but memory the filter program changes (package
// variables, its configuration's values) persists between cases, where in
// Sluice every request starts from the configured state: RunCaddy catches a
// filter that depends on that.
//
// The emulator follows Sluice's rules where hosts differ: repeated headers
// joined with ",", host properties read-only, undeclared upstreams refused,
// headers read-only once sent, no local response once the response
// started, a held body's real content-length, a stale content-length an
// error, a request paused with nothing to resume it an error (Sluice would
// time it out).
package sdktest

import (
	"net/http"
	"testing"

	"github.com/sluice-edge/sluice/sdk"
)

// Suite is a filter configuration and the requests to send through it.
type Suite struct {
	// Config is the plugin configuration (wasm_filter's config).
	Config string
	// Configure is the filter's configuration function, for native runs;
	// nil means the one the test's package registered with sdk.Register.
	Configure sdk.Configure
	// Upstreams are the destinations of the filter's outbound calls, by the
	// name the filter calls (wasm_filter's `upstream <name> <url>`).
	Upstreams map[string]http.Handler
	// Properties are properties the filter sets (sdk.SetProperty) to report
	// in each Result; in Caddy they are read as {http.wasm_filter.<name>}.
	Properties []string
	// Options are more wasm_filter options for RunCaddy, one per line, e.g.
	// "isolation shared" or "memory_limit 16MiB", to test the filter as it
	// will be deployed. Native runs ignore them.
	Options string
	// Cases are the requests, sent in order.
	Cases []Case
}

// Case is one request through the filter.
type Case struct {
	Name    string
	Request Request
	// Upstream answers the request if the filter lets it through; nil
	// answers 200 with the body "upstream".
	Upstream http.HandlerFunc
	// Check looks at what happened.
	Check func(t *testing.T, r *Result)
}

// Request is a request a client sends.
type Request struct {
	Method string // GET if empty
	Path   string // "/" if empty; may have a query
	Header http.Header
	Body   []byte
	// ChunkSize splits the body into chunks of this size (natively; Caddy
	// reads what arrives). 0 sends it as one chunk.
	ChunkSize int
}

// Result is what a case's request led to.
type Result struct {
	// Upstream is the request the upstream received, nil if the filter
	// answered itself.
	Upstream *http.Request
	// UpstreamBody is the body the upstream received.
	UpstreamBody []byte
	// Response is what the client received.
	Response Response
	// Properties holds the values of the suite's Properties, "" for unset.
	Properties map[string]string
	// Logs are the filter's log lines ("level: message"); native runs only.
	Logs []string
	// Metrics are the filter's metrics by name after the request; native
	// runs only (in Caddy they are on /metrics).
	Metrics map[string]uint64
}

// Response is an HTTP response as the client received it.
type Response struct {
	Status int
	Header http.Header
	Body   []byte
}

// methodPath is the request's method and path, GET and / if unset.
func (r Request) methodPath() (method, path string) {
	method, path = r.Method, r.Path
	if method == "" {
		method = http.MethodGet
	}
	if path == "" {
		path = "/"
	}
	return method, path
}

// handler is the case's upstream, or the default one.
func (c Case) handler() http.HandlerFunc {
	if c.Upstream == nil {
		return defaultUpstream
	}
	return c.Upstream
}

func defaultUpstream(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain")
	_, _ = w.Write([]byte("upstream"))
}
