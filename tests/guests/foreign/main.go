// Command foreign is a test filter written against the official Proxy-Wasm
// Go SDK: it round-trips data through the host's "compress" and
// "uncompress" foreign functions (the ones Envoy offers) and checks that an
// unknown foreign function is refused.
//
// Host features: proxy_call_foreign_function (found and not found, with a
// nil argument), proxy_send_local_response with headers.
//
// Contract relied on by the end-to-end tests (the plugin configuration is
// ignored). Every request is answered by the filter; every answer carries
// "x-missing: <error of calling no_such_function with no argument>" (e.g.
// "error status returned by host: not found"; "unexpectedly succeeded" if
// the host runs it):
//   - data is the request's :path repeated 50 times (a :path that cannot
//     be read is logged and counts as "");
//   - compress(data) failing: 500 with body "compress: <error>";
//   - uncompress(compressed) failing: 500 with body "uncompress: <error>";
//   - otherwise 200 with body "ok <len(data)> <len(compressed)> <equal>",
//     equal being "true" if uncompress gave data back, else "false".
package main

import (
	"bytes"
	"fmt"
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

// callForeignFunction is the SDK's; the native tests wrap it because the
// SDK's emulator exits the process on an unknown function.
var callForeignFunction = proxywasm.CallForeignFunction

func (*filter) OnHttpRequestHeaders(int, bool) types.Action {
	missing := "unexpectedly succeeded"
	if _, err := callForeignFunction("no_such_function", nil); err != nil {
		missing = err.Error()
	} else {
		proxywasm.LogErrorf("foreign: no_such_function %s", missing)
	}
	headers := [][2]string{{"x-missing", missing}}

	path, err := proxywasm.GetHttpRequestHeader(":path")
	if err != nil {
		proxywasm.LogErrorf("foreign: reading :path: %v; using \"\"", err)
	}
	data := []byte(strings.Repeat(path, 50))
	compressed, err := callForeignFunction("compress", data)
	if err != nil {
		proxywasm.LogErrorf("foreign: compress: %v", err)
		return respond(500, "compress: "+err.Error(), headers)
	}
	back, err := callForeignFunction("uncompress", compressed)
	if err != nil {
		proxywasm.LogErrorf("foreign: uncompress: %v", err)
		return respond(500, "uncompress: "+err.Error(), headers)
	}
	return respond(200, fmt.Sprintf("ok %d %d %t", len(data), len(compressed), bytes.Equal(back, data)), headers)
}

// respond answers the request itself. A failed local reply is logged and
// the stream stays paused.
func respond(status uint32, body string, headers [][2]string) types.Action {
	if err := proxywasm.SendHttpResponse(status, headers, []byte(body), -1); err != nil {
		proxywasm.LogErrorf("foreign: sending %d: %v", status, err)
	}
	return types.ActionPause
}
