// Command body is a test filter written against the official Proxy-Wasm Go
// SDK that rewrites bodies the way Envoy filters do: it holds the request
// body until its end and upper-cases it, and holds the response body until
// its end and replaces every "upstream" with "filtered". It removes
// content-length in the headers phases, as a body-changing Envoy filter must.
package main

import (
	"bytes"

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
	_ = proxywasm.RemoveHttpRequestHeader("content-length")
	return types.ActionContinue
}

func (*filter) OnHttpRequestBody(bodySize int, endOfStream bool) types.Action {
	if !endOfStream {
		return types.ActionPause // wait for the whole body
	}
	body, err := proxywasm.GetHttpRequestBody(0, bodySize)
	if err != nil {
		proxywasm.LogErrorf("reading request body: %v", err)
		return types.ActionContinue
	}
	if err := proxywasm.ReplaceHttpRequestBody(bytes.ToUpper(body)); err != nil {
		proxywasm.LogErrorf("replacing request body: %v", err)
	}
	return types.ActionContinue
}

func (*filter) OnHttpResponseHeaders(int, bool) types.Action {
	_ = proxywasm.RemoveHttpResponseHeader("content-length")
	return types.ActionContinue
}

func (*filter) OnHttpResponseBody(bodySize int, endOfStream bool) types.Action {
	if !endOfStream {
		return types.ActionPause
	}
	body, err := proxywasm.GetHttpResponseBody(0, bodySize)
	if err != nil {
		proxywasm.LogErrorf("reading response body: %v", err)
		return types.ActionContinue
	}
	rewritten := bytes.ReplaceAll(body, []byte("upstream"), []byte("filtered"))
	if err := proxywasm.ReplaceHttpResponseBody(rewritten); err != nil {
		proxywasm.LogErrorf("replacing response body: %v", err)
	}
	return types.ActionContinue
}
