// Command canary is a test filter written against the official Proxy-Wasm
// Go SDK: it steers routing by setting a property the proxy reads after the
// filter, choosing the canary route for requests that ask for it.
//
// Host features: proxy_set_property (a writable "route" property),
// proxy_get_header_map_value, proxy_add_header_map_value.
//
// Contract relied on by the end-to-end tests (the plugin configuration is
// ignored):
//   - the route is "canary" if the request header x-canary is "1", or its
//     cookie header contains "canary=1", or its :path contains "canary";
//     otherwise "stable" (a header that cannot be read counts as absent;
//     an error other than not-found is logged);
//   - the property ["route"] is set to the route; a failure answers 500 with
//     body "set_property: <error>";
//   - the request gets "x-route: <route>" and continues.
package main

import (
	"errors"
	"strings"

	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm"
	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm/types"
)

func main() {}

func init() { proxywasm.SetVMContext(&vm{}) }

type vm struct{ types.DefaultVMContext }

func (*vm) NewPluginContext(uint32) types.PluginContext { return &plugin{} }

type plugin struct{ types.DefaultPluginContext }

func (*plugin) NewHttpContext(uint32) types.HttpContext { return &filter{} }

type filter struct{ types.DefaultHttpContext }

func (*filter) OnHttpRequestHeaders(int, bool) types.Action {
	route := "stable"
	if requestHeader("x-canary") == "1" ||
		strings.Contains(requestHeader("cookie"), "canary=1") ||
		strings.Contains(requestHeader(":path"), "canary") {
		route = "canary"
	}
	if err := proxywasm.SetProperty([]string{"route"}, []byte(route)); err != nil {
		proxywasm.LogErrorf("canary: setting route: %v", err)
		if err := proxywasm.SendHttpResponse(500, nil, []byte("set_property: "+err.Error()), -1); err != nil {
			proxywasm.LogErrorf("canary: sending 500: %v", err)
		}
		return types.ActionPause
	}
	if err := proxywasm.AddHttpRequestHeader("x-route", route); err != nil {
		proxywasm.LogErrorf("canary: adding x-route: %v", err)
	}
	return types.ActionContinue
}

// requestHeader returns the request header's value, or "" if it is absent.
func requestHeader(name string) string {
	v, err := proxywasm.GetHttpRequestHeader(name)
	if err != nil && !errors.Is(err, types.ErrorStatusNotFound) {
		proxywasm.LogErrorf("canary: reading %s: %v", name, err)
	}
	return v
}
