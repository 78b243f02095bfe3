// Command properties is a test filter written against the official
// Proxy-Wasm Go SDK: it reads well-known properties and reports them in
// response headers named x-prop-<property>.
package main

import (
	"encoding/binary"
	"strconv"
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

type filter struct {
	types.DefaultHttpContext
	props [][2]string
}

var stringProps = []string{
	"request.path", "request.url_path", "request.method", "request.host", "request.scheme",
	"request.protocol", "request.id", "source.address", "destination.address",
	"plugin_name", "plugin_root_id", "plugin_vm_id", "node.id",
}

var intProps = []string{"source.port", "destination.port"}

func (f *filter) OnHttpRequestHeaders(int, bool) types.Action {
	for _, name := range stringProps {
		v, err := proxywasm.GetProperty(strings.Split(name, "."))
		if err == nil {
			f.props = append(f.props, [2]string{name, string(v)})
		}
	}
	for _, name := range intProps {
		v, err := proxywasm.GetProperty(strings.Split(name, "."))
		if err == nil && len(v) == 8 {
			f.props = append(f.props, [2]string{name, strconv.FormatUint(binary.LittleEndian.Uint64(v), 10)})
		}
	}
	if _, err := proxywasm.GetProperty([]string{"no", "such", "property"}); err != nil {
		f.props = append(f.props, [2]string{"missing", err.Error()})
	}
	return types.ActionContinue
}

func (f *filter) OnHttpResponseHeaders(int, bool) types.Action {
	for _, p := range f.props {
		_ = proxywasm.AddHttpResponseHeader("x-prop-"+strings.ReplaceAll(p[0], ".", "-"), p[1])
	}
	if code, err := proxywasm.GetProperty([]string{"response", "code"}); err == nil && len(code) == 8 {
		_ = proxywasm.AddHttpResponseHeader("x-prop-response-code", strconv.FormatUint(binary.LittleEndian.Uint64(code), 10))
	}
	// Known once reverse_proxy picked the upstream.
	if addr, err := proxywasm.GetProperty([]string{"upstream", "address"}); err == nil {
		_ = proxywasm.AddHttpResponseHeader("x-prop-upstream-address", string(addr))
	}
	return types.ActionContinue
}
