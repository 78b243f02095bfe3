// Command authcall is a test filter written against the official
// Proxy-Wasm Go SDK: it authorizes each request with an outbound HTTP call
// to an auth service, holding the request until the answer arrives.
//
// Host features: proxy_http_call, proxy_on_http_call_response (with the
// SDK's proxy_set_effective_context back to the request),
// proxy_get_header_map_pairs / proxy_get_buffer_bytes on the call's
// response, proxy_continue_stream, proxy_send_local_response from a callback.
//
// Contract relied on by the end-to-end tests (the plugin configuration is
// ignored):
//   - per request: GET to the upstream "auth", headers :method GET,
//     :path /check, :authority auth.internal and authorization (the
//     request's authorization header, or "" if it has none), no body,
//     timeout 2000 ms; the request is paused;
//   - if the call cannot be dispatched: 502 with body "dispatch: <error>";
//   - if the call fails (the callback sees no headers), or its headers
//     cannot be read: 503 with body "auth unavailable";
//   - if the auth service answers 200: the request gets "x-auth-user: <the
//     auth response's x-user header>" (not added, and logged, if the auth
//     response has none) and is resumed;
//   - any other status: 403 with the auth response's body as body and
//     header "x-auth-status: <its :status>".
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

// dispatchHttpCall is the SDK's; the native tests swap it to make the
// dispatch fail, which the SDK's emulator never does.
var dispatchHttpCall = proxywasm.DispatchHttpCall

func (*filter) OnHttpRequestHeaders(int, bool) types.Action {
	authorization, err := proxywasm.GetHttpRequestHeader("authorization")
	if err != nil && !errors.Is(err, types.ErrorStatusNotFound) {
		proxywasm.LogErrorf("authcall: reading authorization: %v; sending none", err)
	}
	headers := [][2]string{
		{":method", "GET"}, {":path", "/check"}, {":authority", "auth.internal"},
		{"authorization", authorization},
	}
	if _, err := dispatchHttpCall("auth", headers, nil, nil, 2000, onAuthResponse); err != nil {
		proxywasm.LogErrorf("authcall: dispatching to auth: %v", err)
		respond(502, "dispatch: "+err.Error(), nil)
	}
	return types.ActionPause
}

// onAuthResponse runs with the request's context effective again.
func onAuthResponse(numHeaders, bodySize, _ int) {
	if numHeaders == 0 {
		proxywasm.LogErrorf("authcall: the auth call failed")
		respond(503, "auth unavailable", nil)
		return
	}
	headers, err := proxywasm.GetHttpCallResponseHeaders()
	if err != nil {
		proxywasm.LogErrorf("authcall: reading the auth response headers: %v", err)
		respond(503, "auth unavailable", nil)
		return
	}
	status, _ := lookup(headers, ":status")
	if status == "200" {
		if user, ok := lookup(headers, "x-user"); !ok {
			proxywasm.LogErrorf("authcall: the auth response has no x-user")
		} else if err := proxywasm.AddHttpRequestHeader("x-auth-user", user); err != nil {
			proxywasm.LogErrorf("authcall: adding x-auth-user: %v", err)
		}
		if err := proxywasm.ResumeHttpRequest(); err != nil {
			proxywasm.LogErrorf("authcall: resuming the request: %v", err)
		}
		return
	}
	var body []byte
	if bodySize > 0 {
		if body, err = proxywasm.GetHttpCallResponseBody(0, bodySize); err != nil {
			proxywasm.LogErrorf("authcall: reading the auth response body: %v; answering without it", err)
			body = nil
		}
	}
	respond(403, string(body), [][2]string{{"x-auth-status", status}})
}

func lookup(headers [][2]string, name string) (string, bool) {
	for _, h := range headers {
		if strings.EqualFold(h[0], name) {
			return h[1], true
		}
	}
	return "", false
}

// respond answers the request itself. A failed local reply is logged and
// the stream stays paused.
func respond(status uint32, body string, headers [][2]string) {
	if err := proxywasm.SendHttpResponse(status, headers, []byte(body), -1); err != nil {
		proxywasm.LogErrorf("authcall: sending %d: %v", status, err)
	}
}
