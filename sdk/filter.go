// Package sdk is a small Go SDK for Proxy-Wasm HTTP filters, built with stock
// Go (1.24 or newer) for GOOS=wasip1:
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o filter.wasm .
//
// A filter program registers one function from init. It runs once per filter
// configuration with the operator's configuration text and returns the
// constructor of the per-request Filter:
//
//	func init() {
//		sdk.Register(func(p *sdk.Plugin) (sdk.NewFilter, error) {
//			name := string(p.Config())
//			return func() sdk.Filter { return &tagger{name: name} }, nil
//		})
//	}
//
//	type tagger struct{ name string }
//
//	func (t *tagger) OnRequestHeaders(s *sdk.Stream, end bool) sdk.Action {
//		s.RequestHeaders().Set("x-tenant", t.name)
//		return sdk.Continue
//	}
//
// A Filter handles the phases it has methods for (OnRequestHeaders,
// OnRequestBody, ... see the interfaces below) and nothing else. Everything
// it does goes through the *Stream it is given, so filters run unmodified in
// any Proxy-Wasm host (Sluice, Envoy, Istio) and in sdktest's native emulator.
//
// The SDK is built for Sluice's per-request model: every request gets a
// fresh instance, restored from the state right after configuration. Work
// done in the configure function (parsing config, compiling patterns,
// decoding keys) is done once and shared by every request for free; package
// variables a request changes are gone when it ends. The same program also
// runs in hosts that keep one instance for many requests, since per-request
// state lives in the Filter value NewFilter makes.
//
// Warm up in the configure function too: under Sluice, what it leaves in
// memory is in every request's instance. A filter using encoding/json, for
// example, should decode its types once there, so requests do not each pay
// for building its caches (about 1 ms in Wasm).
//
// The SDK leaves out fmt, reflect, time and encoding/json so that a
// filter's module stays close to the Go runtime's own size; see
// BENCHMARKS.md. Now and RandomBytes give the host's clock and randomness
// without package time (270 KB) or crypto/rand (580 KB).
package sdk

import "github.com/sluice-edge/sluice/sdk/internal/abi"

// Action is what a phase tells the host.
type Action = abi.Action

const (
	// Continue passes the headers or body on.
	Continue Action = abi.Continue
	// Pause holds the stream: in a headers phase, the headers wait; in a
	// body phase, the host buffers the body and calls again with all of it
	// until the filter continues or the body ends. A paused stream goes on
	// when the filter calls Resume or Respond (typically from an outbound
	// call's callback).
	Pause Action = abi.Pause
)

// Configure sets a filter up from its configuration and returns the
// constructor of each request's Filter. An error refuses the configuration:
// the host logs it and, in Sluice, the config that named the filter fails to
// load.
type Configure func(p *Plugin) (NewFilter, error)

// NewFilter makes the Filter for one request. A filter without per-request
// state may return the same value every time. The SDK also calls it once
// while configuring, to check the Filter has phase methods.
type NewFilter func() Filter

// Filter is a value with any of the On... methods below.
type Filter any

// RequestHeadersFilter sees the request headers; end is true when the
// request has no body.
type RequestHeadersFilter interface {
	OnRequestHeaders(s *Stream, end bool) Action
}

// RequestBodyFilter sees the request body, chunk by chunk as it arrives, or
// buffered while the filter returns Pause; end is true for the last call.
type RequestBodyFilter interface {
	OnRequestBody(s *Stream, body Body, end bool) Action
}

// RequestTrailersFilter sees the request trailers.
type RequestTrailersFilter interface {
	OnRequestTrailers(s *Stream) Action
}

// ResponseHeadersFilter sees the response headers from upstream (a local
// response goes to the client as the filter made it); end is true when the
// response has no body.
type ResponseHeadersFilter interface {
	OnResponseHeaders(s *Stream, end bool) Action
}

// ResponseBodyFilter sees the response body like RequestBodyFilter sees the
// request's.
type ResponseBodyFilter interface {
	OnResponseBody(s *Stream, body Body, end bool) Action
}

// ResponseTrailersFilter sees the response trailers.
type ResponseTrailersFilter interface {
	OnResponseTrailers(s *Stream) Action
}

// DoneFilter runs once the exchange is over, for logging and accounting.
type DoneFilter interface {
	OnDone(s *Stream)
}

// registered is the program's Configure, from Register.
var registered Configure

// Register makes c the filter program's configuration function. Call it
// once, from an init function.
func Register(c Configure) {
	if registered != nil {
		panic("sdk.Register called twice")
	}
	registered = c
}
