// Command metrics is a test filter written against the official Proxy-Wasm
// Go SDK: it defines its own metrics and updates them on every request.
//
// Host features: proxy_define_metric (counter, gauge, histogram; in
// proxy_on_configure), proxy_increment_metric (with a negative offset for
// the gauge), proxy_record_metric, proxy_get_metric.
//
// Contract relied on by the end-to-end tests (the plugin configuration is
// ignored):
//   - OnPluginStart defines the counter "requests_total", the gauge
//     "inflight" and the histogram "path_length";
//   - per request: requests_total += 1, inflight += 1, path_length records
//     the length of :path (0 if it cannot be read, which is logged);
//   - the response gets "x-requests-total: <requests_total>" and
//     "x-inflight: <inflight>", both read from the host in the response
//     phase (inflight before this request's own decrement), then
//     inflight -= 1.
//
// The SDK's metric functions panic when the host answers an error status
// (DefineCounterMetric: "define metric of name requests_total: error status
// returned by host: ..."; Increment, Add, Record and Value likewise). The
// filter recovers: a failed definition is logged and fails the plugin
// start; a failure during a request is logged and the request continues
// (with whatever headers were added before it).
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

type metrics struct {
	requests   proxywasm.MetricCounter
	inflight   proxywasm.MetricGauge
	pathLength proxywasm.MetricHistogram
}

type plugin struct {
	types.DefaultPluginContext
	m metrics
}

func (p *plugin) OnPluginStart(int) (status types.OnPluginStartStatus) {
	defer func() {
		if r := recover(); r != nil {
			proxywasm.LogErrorf("metrics: %v", r)
			status = types.OnPluginStartStatusFailed
		}
	}()
	p.m.requests = proxywasm.DefineCounterMetric("requests_total")
	p.m.inflight = proxywasm.DefineGaugeMetric("inflight")
	p.m.pathLength = proxywasm.DefineHistogramMetric("path_length")
	return types.OnPluginStartStatusOK
}

func (p *plugin) NewHttpContext(uint32) types.HttpContext { return &filter{m: p.m} }

type filter struct {
	types.DefaultHttpContext
	m metrics
}

func (f *filter) OnHttpRequestHeaders(int, bool) (action types.Action) {
	defer recovered(&action)
	path, err := proxywasm.GetHttpRequestHeader(":path")
	if err != nil {
		proxywasm.LogErrorf("metrics: reading :path: %v; recording 0", err)
	}
	f.m.requests.Increment(1)
	f.m.inflight.Add(1)
	f.m.pathLength.Record(uint64(len(path)))
	return types.ActionContinue
}

func (f *filter) OnHttpResponseHeaders(int, bool) (action types.Action) {
	defer recovered(&action)
	if err := proxywasm.AddHttpResponseHeader("x-requests-total", strconv.FormatUint(f.m.requests.Value(), 10)); err != nil {
		proxywasm.LogErrorf("metrics: adding x-requests-total: %v", err)
	}
	if err := proxywasm.AddHttpResponseHeader("x-inflight", strconv.FormatInt(f.m.inflight.Value(), 10)); err != nil {
		proxywasm.LogErrorf("metrics: adding x-inflight: %v", err)
	}
	f.m.inflight.Add(-1)
	return types.ActionContinue
}

// recovered, deferred, turns a panic of the SDK's metric functions into a
// log line and lets the stream continue.
func recovered(action *types.Action) {
	if r := recover(); r != nil {
		proxywasm.LogErrorf("metrics: %v", r)
		*action = types.ActionContinue
	}
}
