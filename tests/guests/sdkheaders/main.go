// Command sdkheaders is tests/guests/headers written with Sluice's own SDK
// (sdk/) instead of the official one: the same header edits and the same
// per-instance request counter, so the benchmarks compare the SDKs' module
// size and isolate cost on the same job.
package main

import "github.com/sluice-edge/sluice/sdk"

func main() {}

func init() {
	sdk.Register(func(*sdk.Plugin) (sdk.NewFilter, error) {
		return func() sdk.Filter { return filter{} }, nil
	})
}

// requests counts the requests this instance has seen: with a fresh
// instance per request it is always 1.
var requests int

type filter struct{}

func (filter) OnRequestHeaders(s *sdk.Stream, _ bool) sdk.Action {
	requests++
	h := s.RequestHeaders()
	_ = h.Add("x-added", "req")
	_ = h.Set("x-replaced", "new")
	_ = h.Del("x-removed")
	return sdk.Continue
}

func (filter) OnResponseHeaders(s *sdk.Stream, _ bool) sdk.Action {
	h := s.ResponseHeaders()
	_ = h.Add("x-added", "resp")
	_ = h.Set("x-count", itoa(requests))
	_ = h.Del("x-upstream-secret")
	return sdk.Continue
}

func itoa(n int) string {
	if n == 0 {
		return "0"
	}
	var b []byte
	for ; n > 0; n /= 10 {
		b = append([]byte{byte('0' + n%10)}, b...)
	}
	return string(b)
}
