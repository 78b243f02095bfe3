// Command header_rewrite is an example Sluice filter written against the
// official Proxy-Wasm Go SDK, so it runs unmodified in Envoy too. It gives
// every response a set of security headers, removes headers that leak
// details of the upstream, and tags each request with the header named in
// its configuration.
//
// Configuration (plugin config, one "name: value" per line), e.g.
//
//	x-served-by: sluice
package main

import (
	"strings"

	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm"
	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm/types"
)

func main() {}

func init() { proxywasm.SetVMContext(&vm{}) }

// securityHeaders are set on every response, replacing what the upstream sent.
var securityHeaders = [][2]string{
	{"strict-transport-security", "max-age=63072000; includeSubDomains"},
	{"x-content-type-options", "nosniff"},
	{"x-frame-options", "DENY"},
	{"referrer-policy", "strict-origin-when-cross-origin"},
}

// leakyHeaders are removed from every response.
var leakyHeaders = []string{"server", "x-powered-by"}

type vm struct{ types.DefaultVMContext }

func (*vm) NewPluginContext(uint32) types.PluginContext { return &plugin{} }

type plugin struct {
	types.DefaultPluginContext
	requestHeaders [][2]string
}

// OnPluginStart reads the request headers to add from the configuration.
func (p *plugin) OnPluginStart(int) types.OnPluginStartStatus {
	cfg, err := proxywasm.GetPluginConfiguration()
	if err != nil && err != types.ErrorStatusNotFound {
		proxywasm.LogCriticalf("reading configuration: %v", err)
		return types.OnPluginStartStatusFailed
	}
	for _, line := range strings.Split(string(cfg), "\n") {
		if strings.TrimSpace(line) == "" {
			continue
		}
		name, value, ok := strings.Cut(line, ":")
		if !ok {
			proxywasm.LogCriticalf("configuration line %q is not \"name: value\"", line)
			return types.OnPluginStartStatusFailed
		}
		p.requestHeaders = append(p.requestHeaders, [2]string{strings.TrimSpace(name), strings.TrimSpace(value)})
	}
	return types.OnPluginStartStatusOK
}

func (p *plugin) NewHttpContext(uint32) types.HttpContext {
	return &filter{requestHeaders: p.requestHeaders}
}

type filter struct {
	types.DefaultHttpContext
	requestHeaders [][2]string
}

func (f *filter) OnHttpRequestHeaders(int, bool) types.Action {
	for _, h := range f.requestHeaders {
		if err := proxywasm.ReplaceHttpRequestHeader(h[0], h[1]); err != nil {
			proxywasm.LogErrorf("setting request header %s: %v", h[0], err)
		}
	}
	return types.ActionContinue
}

func (f *filter) OnHttpResponseHeaders(int, bool) types.Action {
	for _, h := range securityHeaders {
		if err := proxywasm.ReplaceHttpResponseHeader(h[0], h[1]); err != nil {
			proxywasm.LogErrorf("setting response header %s: %v", h[0], err)
		}
	}
	for _, name := range leakyHeaders {
		_ = proxywasm.RemoveHttpResponseHeader(name)
	}
	return types.ActionContinue
}
