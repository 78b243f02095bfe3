// Command trap is a hostile test filter written against the official
// Proxy-Wasm Go SDK: it panics in the callback named by its plugin
// configuration ("request_headers", "response_headers" or "response_body").
// A Go panic in a wasip1 module ends in proc_exit(2) after printing to
// stderr.
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
	phase string
}

func (p *plugin) OnPluginStart(int) types.OnPluginStartStatus {
	cfg, _ := proxywasm.GetPluginConfiguration()
	p.phase = string(cfg)
	return types.OnPluginStartStatusOK
}

func (p *plugin) NewHttpContext(uint32) types.HttpContext { return &filter{phase: p.phase} }

type filter struct {
	types.DefaultHttpContext
	phase string
}

func (f *filter) OnHttpRequestHeaders(int, bool) types.Action {
	if f.phase == "request_headers" {
		panic("trap in request headers")
	}
	return types.ActionContinue
}

func (f *filter) OnHttpResponseHeaders(int, bool) types.Action {
	if f.phase == "response_headers" {
		panic("trap in response headers")
	}
	return types.ActionContinue
}

func (f *filter) OnHttpResponseBody(int, bool) types.Action {
	if f.phase == "response_body" {
		panic("trap in response body")
	}
	return types.ActionContinue
}
