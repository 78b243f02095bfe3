// Command auth is a test filter written against the official Proxy-Wasm Go
// SDK: it answers 403 itself unless the request carries the API key from its
// plugin configuration in "x-api-key".
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
	key string
}

func (p *plugin) OnPluginStart(int) types.OnPluginStartStatus {
	cfg, err := proxywasm.GetPluginConfiguration()
	if err != nil || len(cfg) == 0 {
		proxywasm.LogCritical("auth: the plugin configuration must be the API key")
		return types.OnPluginStartStatusFailed
	}
	p.key = string(cfg)
	return types.OnPluginStartStatusOK
}

func (p *plugin) NewHttpContext(uint32) types.HttpContext { return &filter{key: p.key} }

type filter struct {
	types.DefaultHttpContext
	key string
}

func (f *filter) OnHttpRequestHeaders(int, bool) types.Action {
	if got, err := proxywasm.GetHttpRequestHeader("x-api-key"); err == nil && got == f.key {
		_ = proxywasm.RemoveHttpRequestHeader("x-api-key") // the upstream never sees the key
		return types.ActionContinue
	}
	err := proxywasm.SendHttpResponse(403, [][2]string{{"x-auth", "denied"}, {"content-type", "text/plain"}},
		[]byte("forbidden\n"), -1)
	if err != nil {
		proxywasm.LogErrorf("sending 403: %v", err)
	}
	return types.ActionPause
}
