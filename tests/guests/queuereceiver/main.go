// Command queuereceiver is a test filter written against the official
// Proxy-Wasm Go SDK: it registers a shared queue and drains it in the
// background, recording what it received in shared data; its requests
// report that record.
//
// Host features: proxy_register_shared_queue (in proxy_on_configure),
// proxy_on_queue_ready, proxy_dequeue_shared_queue, proxy_get_shared_data,
// proxy_set_shared_data (CAS).
//
// Contract relied on by the end-to-end tests:
//   - the plugin configuration is the queue name (e.g. "paths");
//     OnPluginStart registers it and remembers its id; an empty
//     configuration or a failed registration fails the plugin start;
//   - OnQueueReady(id) dequeues until the queue is empty; for each item it
//     stores the item under the shared-data key "last_item" and increments
//     the decimal counter "received" (both with compare-and-swap loops of
//     up to 64 attempts); errors are logged and the item skipped;
//   - every request is answered 200 by the filter with body
//     "received=<received> last=<last_item>" (missing keys read as "0" and
//     "") and header "x-queue-id: <the id registered in OnPluginStart>".
package main

import (
	"errors"
	"strconv"

	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm"
	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm/types"

	"github.com/sluice-edge/sluice/tests/guests/internal/casdata"
)

func main() {}

func init() { proxywasm.SetVMContext(&vm{}) }

type vm struct{ types.DefaultVMContext }

func (*vm) NewPluginContext(uint32) types.PluginContext { return &plugin{} }

type plugin struct {
	types.DefaultPluginContext
	queueID uint32
}

func (p *plugin) OnPluginStart(int) types.OnPluginStartStatus {
	cfg, err := proxywasm.GetPluginConfiguration()
	if err != nil || len(cfg) == 0 {
		proxywasm.LogCriticalf("queuereceiver: the plugin configuration must be the queue name (%v)", err)
		return types.OnPluginStartStatusFailed
	}
	if p.queueID, err = proxywasm.RegisterSharedQueue(string(cfg)); err != nil {
		proxywasm.LogErrorf("queuereceiver: registering queue %q: %v", cfg, err)
		return types.OnPluginStartStatusFailed
	}
	return types.OnPluginStartStatusOK
}

func (p *plugin) OnQueueReady(queueID uint32) {
	for {
		item, err := proxywasm.DequeueSharedQueue(queueID)
		if errors.Is(err, types.ErrorStatusEmpty) {
			return
		}
		if err != nil {
			proxywasm.LogErrorf("queuereceiver: dequeueing from %d: %v", queueID, err)
			return
		}
		if err := casdata.Update("last_item", func([]byte) []byte { return item }); err != nil {
			proxywasm.LogErrorf("queuereceiver: storing last_item: %v", err)
			continue
		}
		if err := casdata.Update("received", casdata.PlusOne); err != nil {
			proxywasm.LogErrorf("queuereceiver: counting: %v", err)
		}
	}
}

func (p *plugin) NewHttpContext(uint32) types.HttpContext { return &filter{queueID: p.queueID} }

type filter struct {
	types.DefaultHttpContext
	queueID uint32
}

func (f *filter) OnHttpRequestHeaders(int, bool) types.Action {
	received := read("received", "0")
	last := read("last_item", "")
	err := proxywasm.SendHttpResponse(200,
		[][2]string{{"x-queue-id", strconv.FormatUint(uint64(f.queueID), 10)}},
		[]byte("received="+received+" last="+last), -1)
	if err != nil {
		proxywasm.LogErrorf("queuereceiver: sending 200: %v", err)
	}
	return types.ActionPause
}

// read returns the shared-data value under key, or missing if there is
// none (or it cannot be read: that is logged).
func read(key, missing string) string {
	v, _, err := proxywasm.GetSharedData(key)
	if errors.Is(err, types.ErrorStatusNotFound) {
		return missing
	}
	if err != nil {
		proxywasm.LogErrorf("queuereceiver: reading %q: %v", key, err)
		return missing
	}
	return string(v)
}
