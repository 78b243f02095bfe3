// Command queuesender is a test filter written against the official
// Proxy-Wasm Go SDK: it enqueues every request's path on a shared queue that
// another filter (queuereceiver) registered and drains.
//
// Host features: proxy_get_property("plugin_vm_id"),
// proxy_resolve_shared_queue, proxy_enqueue_shared_queue.
//
// Contract relied on by the end-to-end tests:
//   - the plugin configuration is the queue name (e.g. "paths"); an empty
//     configuration fails the plugin start;
//   - per request: the queue is resolved as (vm id, name), the vm id being
//     the "plugin_vm_id" property (if it cannot be read, the error is logged
//     and the empty vm id is used); a resolve failure answers 500 with body
//     "resolve: <error>";
//   - the request's :path is enqueued; a failure answers 500 with body
//     "enqueue: <error>" (a missing :path, which the SDK cannot enqueue,
//     answers 500 with body "path: <error>");
//   - on success the request continues and the response carries
//     "x-enqueued: <queue id>".
package main

import (
	"strconv"

	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm"
	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm/types"
)

func main() {}

func init() { proxywasm.SetVMContext(&vm{}) }

type vm struct{ types.DefaultVMContext }

func (*vm) NewPluginContext(uint32) types.PluginContext { return &plugin{} }

type plugin struct {
	types.DefaultPluginContext
	queue string
}

func (p *plugin) OnPluginStart(int) types.OnPluginStartStatus {
	cfg, err := proxywasm.GetPluginConfiguration()
	if err != nil || len(cfg) == 0 {
		proxywasm.LogCriticalf("queuesender: the plugin configuration must be the queue name (%v)", err)
		return types.OnPluginStartStatusFailed
	}
	p.queue = string(cfg)
	return types.OnPluginStartStatusOK
}

func (p *plugin) NewHttpContext(uint32) types.HttpContext { return &filter{queue: p.queue} }

type filter struct {
	types.DefaultHttpContext
	queue    string
	enqueued bool
	id       uint32
}

func (f *filter) OnHttpRequestHeaders(int, bool) types.Action {
	vmID, err := proxywasm.GetProperty([]string{"plugin_vm_id"})
	if err != nil {
		proxywasm.LogErrorf("queuesender: reading plugin_vm_id: %v; using the empty vm id", err)
		vmID = nil
	}
	id, err := proxywasm.ResolveSharedQueue(string(vmID), f.queue)
	if err != nil {
		proxywasm.LogErrorf("queuesender: resolving %q in vm %q: %v", f.queue, vmID, err)
		return respond(500, "resolve: "+err.Error())
	}
	path, err := proxywasm.GetHttpRequestHeader(":path")
	if err != nil || path == "" {
		if err == nil {
			err = types.ErrorStatusNotFound
		}
		proxywasm.LogErrorf("queuesender: reading :path: %v", err)
		return respond(500, "path: "+err.Error())
	}
	if err := proxywasm.EnqueueSharedQueue(id, []byte(path)); err != nil {
		proxywasm.LogErrorf("queuesender: enqueueing on %d: %v", id, err)
		return respond(500, "enqueue: "+err.Error())
	}
	f.enqueued, f.id = true, id
	return types.ActionContinue
}

func (f *filter) OnHttpResponseHeaders(int, bool) types.Action {
	if !f.enqueued { // our own local reply
		return types.ActionContinue
	}
	if err := proxywasm.AddHttpResponseHeader("x-enqueued", strconv.FormatUint(uint64(f.id), 10)); err != nil {
		proxywasm.LogErrorf("queuesender: adding x-enqueued: %v", err)
	}
	return types.ActionContinue
}

// respond answers the request itself. A failed local reply is logged and
// the stream stays paused.
func respond(status uint32, body string) types.Action {
	if err := proxywasm.SendHttpResponse(status, nil, []byte(body), -1); err != nil {
		proxywasm.LogErrorf("queuesender: sending %d: %v", status, err)
	}
	return types.ActionPause
}
