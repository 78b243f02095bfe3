// Command shareddata is a test filter written against the official
// Proxy-Wasm Go SDK: a request counter kept in the host's shared data and
// updated with compare-and-swap, so that requests running in separate
// instances (and concurrently) never lose an increment.
//
// Host features: proxy_get_shared_data, proxy_set_shared_data (CAS).
//
// Contract relied on by the end-to-end tests (the plugin configuration is
// ignored):
//   - every request increments the decimal counter under the shared-data key
//     "counter": GetSharedData (not found reads as value 0, cas 0), then
//     SetSharedData(value+1, cas); a CAS mismatch is retried, up to 64
//     attempts in all;
//   - the response carries "x-count: <the value this request stored>" and
//     "x-cas-retries: <CAS mismatches this request hit>";
//   - if 64 attempts all lose the race, the filter answers 503 with body
//     "cas retries exhausted"; any other shared-data error answers 500 with
//     body "shared data: <error>" (the error is also logged). A stored value
//     that is not a decimal number is logged and counted from 0.
package main

import (
	"errors"
	"fmt"
	"strconv"

	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm"
	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm/types"
)

func main() {}

func init() { proxywasm.SetVMContext(&vm{}) }

type vm struct{ types.DefaultVMContext }

func (*vm) NewPluginContext(uint32) types.PluginContext { return &plugin{} }

type plugin struct{ types.DefaultPluginContext }

func (*plugin) NewHttpContext(uint32) types.HttpContext { return &filter{} }

type filter struct {
	types.DefaultHttpContext
	counted bool
	count   uint64
	retries int
}

func (f *filter) OnHttpRequestHeaders(int, bool) types.Action {
	count, retries, err := increment("counter")
	switch {
	case errors.Is(err, errExhausted):
		proxywasm.LogErrorf("shareddata: %v after %d retries", err, retries)
		return respond(503, "cas retries exhausted")
	case err != nil:
		proxywasm.LogErrorf("shareddata: %v", err)
		return respond(500, "shared data: "+err.Error())
	}
	f.counted, f.count, f.retries = true, count, retries
	return types.ActionContinue
}

func (f *filter) OnHttpResponseHeaders(int, bool) types.Action {
	if !f.counted { // our own local reply
		return types.ActionContinue
	}
	if err := proxywasm.AddHttpResponseHeader("x-count", strconv.FormatUint(f.count, 10)); err != nil {
		proxywasm.LogErrorf("shareddata: adding x-count: %v", err)
	}
	if err := proxywasm.AddHttpResponseHeader("x-cas-retries", strconv.Itoa(f.retries)); err != nil {
		proxywasm.LogErrorf("shareddata: adding x-cas-retries: %v", err)
	}
	return types.ActionContinue
}

// maxAttempts bounds the compare-and-swap loop.
const maxAttempts = 64

var errExhausted = errors.New("cas retries exhausted")

// getSharedData and setSharedData are the SDK's; the native tests swap them
// to make writes lose races, which the SDK's emulator never does.
var (
	getSharedData = proxywasm.GetSharedData
	setSharedData = proxywasm.SetSharedData
)

// increment adds one to the decimal counter under key and returns the value
// it stored and how many CAS mismatches it retried.
func increment(key string) (value uint64, retries int, err error) {
	for attempt := 0; attempt < maxAttempts; attempt++ {
		raw, cas, err := getSharedData(key)
		if errors.Is(err, types.ErrorStatusNotFound) {
			raw, cas, err = nil, 0, nil
		}
		if err != nil {
			return 0, retries, fmt.Errorf("get %q: %w", key, err)
		}
		var n uint64
		if len(raw) > 0 {
			if n, err = strconv.ParseUint(string(raw), 10, 64); err != nil {
				proxywasm.LogErrorf("shareddata: %q holds %q, not a decimal number: counting from 0", key, raw)
				n = 0
			}
		}
		err = setSharedData(key, []byte(strconv.FormatUint(n+1, 10)), cas)
		if err == nil {
			return n + 1, retries, nil
		}
		if !errors.Is(err, types.ErrorStatusCasMismatch) {
			return 0, retries, fmt.Errorf("set %q: %w", key, err)
		}
		retries++
	}
	return 0, retries, errExhausted
}

// respond answers the request itself. A failed local reply is logged and
// the stream stays paused.
func respond(status uint32, body string) types.Action {
	if err := proxywasm.SendHttpResponse(status, nil, []byte(body), -1); err != nil {
		proxywasm.LogErrorf("shareddata: sending %d: %v", status, err)
	}
	return types.ActionPause
}
