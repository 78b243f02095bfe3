//go:build wasip1

package sdk

import "github.com/sluice-edge/sluice/sdk/internal/abi"

// The module's one dispatcher, over the real host.
var theVM = newVM(wasmHost{})

// pinned keeps the buffers the host allocated during a host call reachable
// until the call's caller has copied them (the host holds only an address).
var pinned [][]byte

func unpin() {
	clear(pinned)
	pinned = pinned[:0]
}

//go:wasmexport proxy_abi_version_0_2_1
func proxyABIVersion() {}

//go:wasmexport proxy_on_memory_allocate
func proxyOnMemoryAllocate(size uint32) *byte {
	buf := make([]byte, max(size, 1))
	pinned = append(pinned, buf)
	return &buf[0]
}

//go:wasmexport proxy_on_context_create
func proxyOnContextCreate(id, parent uint32) { theVM.ContextCreate(id, parent) }

//go:wasmexport proxy_on_vm_start
func proxyOnVMStart(id, size uint32) uint32 { return boolean(theVM.VMStart(id, int(size))) }

//go:wasmexport proxy_on_configure
func proxyOnConfigure(id, size uint32) uint32 { return boolean(theVM.Configure(id, int(size))) }

//go:wasmexport proxy_on_request_headers
func proxyOnRequestHeaders(id, headers, end uint32) abi.Action {
	return theVM.RequestHeaders(id, int(headers), end != 0)
}

//go:wasmexport proxy_on_request_body
func proxyOnRequestBody(id, size, end uint32) abi.Action {
	return theVM.RequestBody(id, int(size), end != 0)
}

//go:wasmexport proxy_on_request_trailers
func proxyOnRequestTrailers(id, trailers uint32) abi.Action {
	return theVM.RequestTrailers(id, int(trailers))
}

//go:wasmexport proxy_on_response_headers
func proxyOnResponseHeaders(id, headers, end uint32) abi.Action {
	return theVM.ResponseHeaders(id, int(headers), end != 0)
}

//go:wasmexport proxy_on_response_body
func proxyOnResponseBody(id, size, end uint32) abi.Action {
	return theVM.ResponseBody(id, int(size), end != 0)
}

//go:wasmexport proxy_on_response_trailers
func proxyOnResponseTrailers(id, trailers uint32) abi.Action {
	return theVM.ResponseTrailers(id, int(trailers))
}

//go:wasmexport proxy_on_done
func proxyOnDone(id uint32) uint32 { return boolean(theVM.Done(id)) }

//go:wasmexport proxy_on_log
func proxyOnLog(id uint32) { theVM.Log(id) }

//go:wasmexport proxy_on_delete
func proxyOnDelete(id uint32) { theVM.Delete(id) }

//go:wasmexport proxy_on_http_call_response
func proxyOnHTTPCallResponse(root, token, headers, bodySize, trailers uint32) {
	theVM.HTTPCallResponse(root, token, int(headers), int(bodySize), int(trailers))
}

func boolean(b bool) uint32 {
	if b {
		return 1
	}
	return 0
}
