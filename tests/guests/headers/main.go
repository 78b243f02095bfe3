// Command headers is a test filter written against the official Proxy-Wasm
// Go SDK: it adds, replaces and removes headers in both directions, as the
// plugin configuration says, and counts requests in a guest global.
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
}

func (*plugin) NewHttpContext(uint32) types.HttpContext { return &filter{} }

func (*plugin) OnPluginStart(int) types.OnPluginStartStatus { return types.OnPluginStartStatusOK }

// requests counts the requests this instance has seen: with a fresh
// instance per request it is always 1.
var requests int

type filter struct{ types.DefaultHttpContext }

func (*filter) OnHttpRequestHeaders(int, bool) types.Action {
	requests++
	_ = proxywasm.AddHttpRequestHeader("x-added", "req")
	_ = proxywasm.ReplaceHttpRequestHeader("x-replaced", "new")
	_ = proxywasm.RemoveHttpRequestHeader("x-removed")
	return types.ActionContinue
}

func (*filter) OnHttpResponseHeaders(int, bool) types.Action {
	_ = proxywasm.AddHttpResponseHeader("x-added", "resp")
	_ = proxywasm.ReplaceHttpResponseHeader("x-count", itoa(requests))
	_ = proxywasm.RemoveHttpResponseHeader("x-upstream-secret")
	return types.ActionContinue
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
