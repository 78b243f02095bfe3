// Command loop is a hostile test filter written against the official
// Proxy-Wasm Go SDK: it adds a request header and then loops forever in the
// callback named by its plugin configuration ("request_headers",
// "response_headers", "response_body" or "log").
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

var sink int

// spin never returns; the host must stop it.
func spin() {
	for i := 0; ; i++ {
		sink += i
	}
}

func (f *filter) OnHttpRequestHeaders(int, bool) types.Action {
	_ = proxywasm.AddHttpRequestHeader("x-loop-was-here", "1")
	if f.phase == "request_headers" {
		spin()
	}
	return types.ActionContinue
}

func (f *filter) OnHttpResponseHeaders(int, bool) types.Action {
	if f.phase == "response_headers" {
		spin()
	}
	return types.ActionContinue
}

func (f *filter) OnHttpResponseBody(int, bool) types.Action {
	if f.phase == "response_body" {
		spin()
	}
	return types.ActionContinue
}

func (f *filter) OnHttpStreamDone() {
	if f.phase == "log" {
		spin()
	}
}
