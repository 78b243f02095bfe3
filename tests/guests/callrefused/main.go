// Command callrefused is a test filter written against the official
// Proxy-Wasm Go SDK: it tries an outbound HTTP call to an upstream nobody
// declared (an address such as Caddy's admin endpoint), which the host must
// refuse at dispatch.
//
// Host features: proxy_http_call (refusal), proxy_send_local_response.
//
// Contract relied on by the end-to-end tests:
//   - the plugin configuration is the upstream to call (e.g.
//     "127.0.0.1:2019" or "admin"); an empty configuration fails the plugin
//     start;
//   - per request: GET to that upstream, headers :method GET, :path
//     /config/, :authority localhost, no body, timeout 1000 ms;
//   - if the dispatch fails (as it must): 502 with body
//     "refused: <error>", e.g. "refused: error status returned by host:
//     bad argument";
//   - if it is dispatched nonetheless, the request is paused and, whatever
//     the call's outcome, answered 200 with body "reached".
package main

import (
	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm"
	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm/types"
)

func main() {}

func init() { proxywasm.SetVMContext(&vm{}) }

type vm struct{ types.DefaultVMContext }

func (*vm) NewPluginContext(uint32) types.PluginContext { return &plugin{} }

type plugin struct {
	types.DefaultPluginContext
	upstream string
}

func (p *plugin) OnPluginStart(int) types.OnPluginStartStatus {
	cfg, err := proxywasm.GetPluginConfiguration()
	if err != nil || len(cfg) == 0 {
		proxywasm.LogCriticalf("callrefused: the plugin configuration must be the upstream to call (%v)", err)
		return types.OnPluginStartStatusFailed
	}
	p.upstream = string(cfg)
	return types.OnPluginStartStatusOK
}

func (p *plugin) NewHttpContext(uint32) types.HttpContext { return &filter{upstream: p.upstream} }

type filter struct {
	types.DefaultHttpContext
	upstream string
}

// dispatchHttpCall is the SDK's; the native tests swap it to refuse the
// call, which the SDK's emulator never does.
var dispatchHttpCall = proxywasm.DispatchHttpCall

func (f *filter) OnHttpRequestHeaders(int, bool) types.Action {
	headers := [][2]string{{":method", "GET"}, {":path", "/config/"}, {":authority", "localhost"}}
	_, err := dispatchHttpCall(f.upstream, headers, nil, nil, 1000, func(int, int, int) {
		proxywasm.LogErrorf("callrefused: the call to %q was dispatched", f.upstream)
		respond(200, "reached")
	})
	if err != nil {
		proxywasm.LogInfof("callrefused: the call to %q was refused: %v", f.upstream, err)
		respond(502, "refused: "+err.Error())
	}
	return types.ActionPause
}

// respond answers the request itself. A failed local reply is logged and
// the stream stays paused.
func respond(status uint32, body string) {
	if err := proxywasm.SendHttpResponse(status, nil, []byte(body), -1); err != nil {
		proxywasm.LogErrorf("callrefused: sending %d: %v", status, err)
	}
}
