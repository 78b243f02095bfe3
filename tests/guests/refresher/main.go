// Command refresher is a test filter written against the official
// Proxy-Wasm Go SDK: a timer-driven background refresher. On every tick it
// counts the tick and fetches a key set with an outbound HTTP call, keeping
// the latest good answer in shared data, where every request reads it.
//
// Host features: proxy_set_tick_period_milliseconds (in proxy_on_configure),
// proxy_on_tick, proxy_http_call from the plugin (root) context and
// proxy_on_http_call_response back into it, proxy_get_shared_data,
// proxy_set_shared_data (CAS).
//
// Contract relied on by the end-to-end tests:
//   - the plugin configuration is the tick period in milliseconds, in
//     decimal; empty, invalid or 0 means 100; a failure to set the period
//     is logged and fails the plugin start;
//   - each tick increments the decimal counter under the shared-data key
//     "ticks" (CAS loop, up to 64 attempts) and calls the upstream "keys":
//     GET, :path /keys, :authority keys.internal, no body, timeout 1000 ms;
//     when that call answers :status 200 with a non-empty body, the body is
//     stored under "keys"; anything else is logged and "keys" kept as it was;
//   - every request continues with the request header "x-keys: <keys>",
//     and its response gets "x-keys: <keys>" and "x-ticks: <ticks>", read
//     when the request arrived; a missing or empty "keys" reads as "none",
//     a missing "ticks" as "0".
package main

import (
	"errors"
	"strconv"

	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm"
	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm/types"

	"github.com/sluice-edge/sluice/tests/guests/internal/casdata"
)

func main() {}

func init() { proxywasm.SetVMContext(&vm{}) }

type vm struct{ types.DefaultVMContext }

func (*vm) NewPluginContext(uint32) types.PluginContext { return &plugin{} }

type plugin struct{ types.DefaultPluginContext }

// defaultPeriod is the tick period when the configuration gives none.
const defaultPeriod = 100

func (*plugin) OnPluginStart(int) types.OnPluginStartStatus {
	period := uint64(defaultPeriod)
	cfg, err := proxywasm.GetPluginConfiguration()
	if err != nil && !errors.Is(err, types.ErrorStatusNotFound) {
		proxywasm.LogErrorf("refresher: reading the configuration: %v; ticking every %d ms", err, period)
	} else if len(cfg) > 0 {
		if p, err := strconv.ParseUint(string(cfg), 10, 32); err != nil || p == 0 {
			proxywasm.LogErrorf("refresher: %q is not a tick period in ms; ticking every %d ms", cfg, period)
		} else {
			period = p
		}
	}
	if err := proxywasm.SetTickPeriodMilliSeconds(uint32(period)); err != nil {
		proxywasm.LogErrorf("refresher: setting the tick period: %v", err)
		return types.OnPluginStartStatusFailed
	}
	return types.OnPluginStartStatusOK
}

func (*plugin) OnTick() {
	if err := casdata.Update("ticks", casdata.PlusOne); err != nil {
		proxywasm.LogErrorf("refresher: counting the tick: %v", err)
	}
	headers := [][2]string{{":method", "GET"}, {":path", "/keys"}, {":authority", "keys.internal"}}
	if _, err := proxywasm.DispatchHttpCall("keys", headers, nil, nil, 1000, onKeys); err != nil {
		proxywasm.LogErrorf("refresher: dispatching to keys: %v", err)
	}
}

// onKeys runs with the plugin context effective again.
func onKeys(numHeaders, bodySize, _ int) {
	if numHeaders == 0 {
		proxywasm.LogErrorf("refresher: the keys call failed")
		return
	}
	headers, err := proxywasm.GetHttpCallResponseHeaders()
	if err != nil {
		proxywasm.LogErrorf("refresher: reading the keys response headers: %v", err)
		return
	}
	var status string
	for _, h := range headers {
		if h[0] == ":status" {
			status = h[1]
		}
	}
	if status != "200" || bodySize == 0 {
		proxywasm.LogErrorf("refresher: the keys call answered %q with %d bytes; keeping the keys", status, bodySize)
		return
	}
	body, err := proxywasm.GetHttpCallResponseBody(0, bodySize)
	if err != nil {
		proxywasm.LogErrorf("refresher: reading the keys: %v", err)
		return
	}
	if err := casdata.Update("keys", func([]byte) []byte { return body }); err != nil {
		proxywasm.LogErrorf("refresher: storing the keys: %v", err)
	}
}

func (*plugin) NewHttpContext(uint32) types.HttpContext { return &filter{} }

type filter struct {
	types.DefaultHttpContext
	keys, ticks string
}

func (f *filter) OnHttpRequestHeaders(int, bool) types.Action {
	f.keys = read("keys", "none")
	f.ticks = read("ticks", "0")
	if err := proxywasm.AddHttpRequestHeader("x-keys", f.keys); err != nil {
		proxywasm.LogErrorf("refresher: adding x-keys: %v", err)
	}
	return types.ActionContinue
}

func (f *filter) OnHttpResponseHeaders(int, bool) types.Action {
	if err := proxywasm.AddHttpResponseHeader("x-keys", f.keys); err != nil {
		proxywasm.LogErrorf("refresher: adding x-keys: %v", err)
	}
	if err := proxywasm.AddHttpResponseHeader("x-ticks", f.ticks); err != nil {
		proxywasm.LogErrorf("refresher: adding x-ticks: %v", err)
	}
	return types.ActionContinue
}

// read returns the shared-data value under key, or missing if there is
// none, it is empty, or it cannot be read (that is logged).
func read(key, missing string) string {
	v, _, err := proxywasm.GetSharedData(key)
	if err != nil && !errors.Is(err, types.ErrorStatusNotFound) {
		proxywasm.LogErrorf("refresher: reading %q: %v", key, err)
	}
	if err != nil || len(v) == 0 {
		return missing
	}
	return string(v)
}
