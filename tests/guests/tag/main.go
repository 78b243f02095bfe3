// Command tag is a test filter written against the official Proxy-Wasm Go
// SDK that marks the path of a request through a filter chain: it appends
// its name (the plugin configuration) to the request's and the response's
// "x-chain" header. Its body callbacks pass every chunk on as it comes.
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
	name string
}

func (p *plugin) OnPluginStart(int) types.OnPluginStartStatus {
	cfg, _ := proxywasm.GetPluginConfiguration()
	p.name = string(cfg)
	return types.OnPluginStartStatusOK
}

func (p *plugin) NewHttpContext(uint32) types.HttpContext { return &filter{name: p.name} }

type filter struct {
	types.DefaultHttpContext
	name string
}

func (f *filter) OnHttpRequestHeaders(int, bool) types.Action {
	_ = proxywasm.AddHttpRequestHeader("x-chain", f.name)
	return types.ActionContinue
}

func (f *filter) OnHttpResponseHeaders(int, bool) types.Action {
	_ = proxywasm.AddHttpResponseHeader("x-chain", f.name)
	return types.ActionContinue
}
