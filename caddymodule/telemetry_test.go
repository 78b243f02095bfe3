package caddymodule

import (
	"context"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/sluice-edge/sluice/filters"
)

// tracedRequest is r inside a recording server span, as Caddy's tracing
// directive would hand it over, and the recorder of its trace.
func tracedRequest(t testing.TB, r *http.Request, sampler sdktrace.Sampler) (*http.Request, trace.Span, *tracetest.SpanRecorder) {
	t.Helper()
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec), sdktrace.WithSampler(sampler))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	ctx, span := tp.Tracer("caddy").Start(r.Context(), "server", trace.WithSpanKind(trace.SpanKindServer))
	return r.WithContext(ctx), span, rec
}

func spanAttr(s sdktrace.ReadOnlySpan, key string) string {
	for _, kv := range s.Attributes() {
		if string(kv.Key) == key {
			return kv.Value.Emit()
		}
	}
	return ""
}

// spansByName indexes ended spans; a name seen twice fails the test.
func spansByName(t *testing.T, rec *tracetest.SpanRecorder) map[string]sdktrace.ReadOnlySpan {
	t.Helper()
	m := map[string]sdktrace.ReadOnlySpan{}
	for _, s := range rec.Ended() {
		if _, dup := m[s.Name()]; dup {
			t.Errorf("two spans named %q", s.Name())
		}
		m[s.Name()] = s
	}
	return m
}

// phasesGuest continues every phase it exports: request headers, response
// headers and response body.
func phasesGuest() *guest {
	return newGuest().fn(`(func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) (i32.const 0))
  (func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32) (i32.const 0))
  (func (export "proxy_on_response_body") (param i32 i32 i32) (result i32) (i32.const 0))`)
}

// A traced request gets one span per filter under the server's span, and
// under it one for creating the isolate and one per phase; a body phase is
// one span over its chunks.
func TestTraceHasASpanPerFilterAndPhase(t *testing.T) {
	h := provisionGuest(t, phasesGuest(), "")
	r, server, rec := tracedRequest(t, newRequest(http.MethodGet, "/", ""), sdktrace.AlwaysSample())
	if _, err, p := h.serve(r, upstream()); err != nil || p != nil {
		t.Fatalf("err %v, panic %v", err, p)
	}
	server.End()
	spans := spansByName(t, rec)
	filter, ok := spans["wasm_filter test"]
	if !ok {
		t.Fatalf("no filter span among %v", slices.Collect(maps.Keys(spans)))
	}
	if filter.Parent().SpanID() != server.SpanContext().SpanID() {
		t.Errorf("filter span's parent is not the server span")
	}
	for key, want := range map[string]string{
		"sluice.filter.name": "test", "sluice.filter.digest": h.plugin.Digest(),
		"sluice.isolation": "request", "sluice.outcome": "continued",
	} {
		if got := spanAttr(filter, key); got != want {
			t.Errorf("filter span %s = %q, want %q", key, got, want)
		}
	}
	if o := spanAttr(filter, "sluice.isolate.origin"); o != "restore" && o != "prewarmed" && o != "recycle" { // snapshot, pre-warm and recycling on by default
		t.Errorf("sluice.isolate.origin = %q", o)
	}
	for _, name := range []string{"create isolate", "request_headers", "response_headers", "response_body", "log"} {
		s, ok := spans[name]
		if !ok {
			t.Errorf("no %q span", name)
			continue
		}
		if s.Parent().SpanID() != filter.SpanContext().SpanID() {
			t.Errorf("%q is not a child of the filter span", name)
		}
		if s.StartTime().Before(filter.StartTime()) || s.EndTime().After(filter.EndTime()) || s.EndTime().Before(s.StartTime()) {
			t.Errorf("%q runs %v..%v, outside its filter's %v..%v", name, s.StartTime(), s.EndTime(), filter.StartTime(), filter.EndTime())
		}
		if s.Status().Code == codes.Error {
			t.Errorf("%q failed: %v", name, s.Status())
		}
	}
	if got := spanAttr(spans["request_headers"], "sluice.action"); got != "continue" {
		t.Errorf("request_headers action %q", got)
	}
	// upstream writes "hello" and "world"; the end of the body is a third call.
	if got := spanAttr(spans["response_body"], "sluice.body.chunks"); got != "3" {
		t.Errorf("response_body chunks %q, want 3", got)
	}
	if len(spans) != 7 { // server, filter, isolate, 4 phases
		t.Errorf("%d spans: %v", len(spans), slices.Collect(maps.Keys(spans)))
	}
}

// A local response is the filter span's outcome, with its status.
func TestTraceOfALocalResponse(t *testing.T) {
	h := provisionGuest(t, localResponseGuest(403), "")
	r, server, rec := tracedRequest(t, newRequest(http.MethodGet, "/", ""), sdktrace.AlwaysSample())
	if _, err, p := h.serve(r, &nextHandler{}); err != nil || p != nil {
		t.Fatalf("err %v, panic %v", err, p)
	}
	server.End()
	spans := spansByName(t, rec)
	filter := spans["wasm_filter test"]
	if filter == nil {
		t.Fatal("no filter span")
	}
	if spanAttr(filter, "sluice.outcome") != "local_response" || spanAttr(filter, "http.response.status_code") != "403" {
		t.Errorf("filter span attributes %v", filter.Attributes())
	}
	if got := spanAttr(spans["request_headers"], "sluice.action"); got != "respond" {
		t.Errorf("request_headers action %q, want respond", got)
	}
}

// Traps, timeouts and memory-limit hits fail the phase's span and the
// filter's, with the reason as error.type and the error as an event.
func TestTraceRecordsFailures(t *testing.T) {
	for _, tc := range []struct {
		reason string
		g      *guest
		extra  string
	}{
		{"trap", newGuest().fn(`(func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) unreachable)`), ""},
		{"timeout", loopGuest(), `"timeout": "50ms"`},
		{"memory_limit", newGuest().fn(`(func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (loop $grow
      (if (i32.lt_s (memory.grow (i32.const 1)) (i32.const 0)) (then unreachable))
      (br $grow))
    (i32.const 0))`), `"memory_limit": 1048576`},
	} {
		t.Run(tc.reason, func(t *testing.T) {
			h := provisionGuest(t, tc.g, tc.extra)
			r, server, rec := tracedRequest(t, newRequest(http.MethodGet, "/", ""), sdktrace.AlwaysSample())
			if _, err, _ := h.serve(r, &nextHandler{}); statusOf(err) != http.StatusInternalServerError {
				t.Fatalf("err %v, want 500", err)
			}
			server.End()
			spans := spansByName(t, rec)
			for _, name := range []string{"request_headers", "wasm_filter test"} {
				s := spans[name]
				if s == nil {
					t.Fatalf("no %q span", name)
				}
				if s.Status().Code != codes.Error || spanAttr(s, "error.type") != tc.reason {
					t.Errorf("%q: status %v, error.type %q; want an error, %s", name, s.Status(), spanAttr(s, "error.type"), tc.reason)
				}
				if len(s.Events()) == 0 || s.Events()[0].Name != "exception" {
					t.Errorf("%q: events %v, want the recorded error", name, s.Events())
				}
			}
			if got := spanAttr(spans["wasm_filter test"], "sluice.outcome"); got != "failed_closed" {
				t.Errorf("outcome %q", got)
			}
		})
	}
}

// A request that is not sampled, or not traced at all, gets no filter
// trace, and its sampled-out span gets no children.
func TestUntracedRequestsRecordNothing(t *testing.T) {
	h := provisionGuest(t, phasesGuest(), "")
	plain := newRequest(http.MethodGet, "/", "")
	if tr := startFilterTrace(plain.Context(), h.Handler); tr != nil {
		t.Errorf("a request without a span got a filter trace")
	}
	r, server, rec := tracedRequest(t, newRequest(http.MethodGet, "/", ""), sdktrace.NeverSample())
	if tr := startFilterTrace(r.Context(), h.Handler); tr != nil {
		t.Errorf("an unsampled request got a filter trace")
	}
	if _, err, p := h.serve(r, upstream()); err != nil || p != nil {
		t.Fatalf("err %v, panic %v", err, p)
	}
	server.End()
	if n := len(rec.Started()); n != 0 {
		t.Errorf("%d spans started for an unsampled request", n)
	}
}

// metricValue sums the series of family name whose labels include want,
// as reg exports them: counters' values, gauges' values, histograms'
// sample counts. It is 0 when there is no such series.
func metricValue(t *testing.T, reg prometheus.Gatherer, name string, want map[string]string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		var sum float64
		for _, m := range f.GetMetric() {
			if hasLabels(m, want) {
				sum += m.GetCounter().GetValue() + m.GetGauge().GetValue() + float64(m.GetHistogram().GetSampleCount())
			}
		}
		return sum
	}
	return 0
}

func hasLabels(m *dto.Metric, want map[string]string) bool {
	found := 0
	for _, l := range m.GetLabel() {
		if v, ok := want[l.GetName()]; ok && v == l.GetValue() {
			found++
		}
	}
	return found == len(want)
}

// Requests are counted by outcome, failures by reason, local responses by
// status; isolate creation and guest time per phase are histograms.
func TestMetricsCountRequestsFailuresAndTime(t *testing.T) {
	name := "metrics-" + strings.ReplaceAll(t.Name(), "/", "-")
	ok := provisionGuest(t, phasesGuest(), fmt.Sprintf(`"name": %q`, name))
	for range 3 {
		if _, err, _ := ok.serve(newRequest(http.MethodGet, "/", ""), upstream()); err != nil {
			t.Fatal(err)
		}
	}
	deny := provisionGuest(t, localResponseGuest(403), fmt.Sprintf(`"name": %q`, name+"-deny"))
	_, _, _ = deny.serve(newRequest(http.MethodGet, "/", ""), &nextHandler{})
	loop := provisionGuest(t, loopGuest(), fmt.Sprintf(`"name": %q, "timeout": "50ms", "failure_policy": "fail_open"`, name+"-loop"))
	_, _, _ = loop.serve(newRequest(http.MethodGet, "/", ""), &nextHandler{})

	reg := ok.registry
	for _, c := range []struct {
		metric string
		labels map[string]string
		want   float64
	}{
		{"caddy_wasm_filter_requests_total", map[string]string{"filter": name, "outcome": "continued"}, 3},
		{"caddy_wasm_filter_isolate_creation_seconds", map[string]string{"filter": name}, 3},
		{"caddy_wasm_filter_guest_seconds", map[string]string{"filter": name, "phase": "request_headers"}, 3},
		{"caddy_wasm_filter_guest_seconds", map[string]string{"filter": name, "phase": "response_body"}, 9},
		{"caddy_wasm_filter_guest_seconds", map[string]string{"filter": name, "phase": "log"}, 3},
		{"caddy_wasm_filter_requests_total", map[string]string{"filter": name + "-deny", "outcome": "local_response"}, 1},
		{"caddy_wasm_filter_local_responses_total", map[string]string{"filter": name + "-deny", "code": "403"}, 1},
		{"caddy_wasm_filter_requests_total", map[string]string{"filter": name + "-loop", "outcome": "failed_open"}, 1},
		{"caddy_wasm_filter_failures_total", map[string]string{"filter": name + "-loop", "reason": "timeout"}, 1},
		{"caddy_wasm_filter_failures_total", map[string]string{"filter": name, "reason": "timeout"}, 0},
	} {
		if got := metricValue(t, reg, c.metric, c.labels); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.metric, c.labels, got, c.want)
		}
	}
}

// metricsGuest defines a counter, a gauge and a histogram and updates
// them on every request: +1, set to 7, observe 300.
const metricsGuest = `(module
  (import "env" "proxy_define_metric" (func $define (param i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_increment_metric" (func $inc (param i32 i64) (result i32)))
  (import "env" "proxy_record_metric" (func $record (param i32 i64) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "hits.totallevelsize_bytes")
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_memory_allocate") (param i32) (result i32) (i32.const 1024))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (drop (call $define (i32.const 0) (i32.const 16) (i32.const 10) (i32.const 100)))
    (drop (call $define (i32.const 1) (i32.const 26) (i32.const 5) (i32.const 104)))
    (drop (call $define (i32.const 2) (i32.const 31) (i32.const 10) (i32.const 108)))
    (drop (call $inc (i32.load (i32.const 100)) (i64.const 1)))
    (drop (call $record (i32.load (i32.const 104)) (i64.const 7)))
    (drop (call $record (i32.load (i32.const 108)) (i64.const 300)))
    (i32.const 0)))`

// The metrics filters define are exported with the filter's name, and go
// on across a config reload: the new config's registry has them too.
func TestGuestMetricsAreExported(t *testing.T) {
	name := "guest-metrics-" + t.Name()
	path := writeModule(t, metricsGuest)
	h := provision(t, path, fmt.Sprintf(`"name": %q`, name))
	for range 2 {
		if _, err, _ := h.serve(newRequest(http.MethodGet, "/", ""), &nextHandler{}); err != nil {
			t.Fatal(err)
		}
	}
	labels := func(metric string) map[string]string {
		return map[string]string{"filter": name, "vm_id": name, "metric": metric}
	}
	reloaded := provision(t, path, fmt.Sprintf(`"name": %q`, name)) // a new config: a new registry
	for _, reg := range []*prometheus.Registry{h.registry, reloaded.registry} {
		if got := metricValue(t, reg, "caddy_wasm_filter_guest_counter_total", labels("hits.total")); got != 2 {
			t.Errorf("counter = %v, want 2", got)
		}
		if got := metricValue(t, reg, "caddy_wasm_filter_guest_gauge", labels("level")); got != 7 {
			t.Errorf("gauge = %v, want 7", got)
		}
		if got := metricValue(t, reg, "caddy_wasm_filter_guest_histogram", labels("size_bytes")); got != 2 {
			t.Errorf("histogram count = %v, want 2", got)
		}
		if got := metricValue(t, reg, "caddy_wasm_filter_requests_total", map[string]string{"filter": name, "outcome": "continued"}); got != 2 {
			t.Errorf("requests after reload = %v, want 2", got)
		}
	}
	if _, err := h.registry.Gather(); err != nil {
		t.Errorf("the registry is inconsistent: %v", err)
	}
}

// A traced request's guest logs name its trace and the filter's span.
func TestGuestLogsCarryTheTrace(t *testing.T) {
	h := provisionGuest(t, continueGuest(), "")
	r, server, rec := tracedRequest(t, newRequest(http.MethodGet, "/", ""), sdktrace.AlwaysSample())
	if _, err, p := h.serve(r, &nextHandler{}); err != nil || p != nil {
		t.Fatalf("err %v, panic %v", err, p)
	}
	server.End()
	filter := spansByName(t, rec)["wasm_filter test"]
	entries := h.logged("done")
	if len(entries) != 1 || filter == nil {
		t.Fatalf("%d guest log lines, filter span %v", len(entries), filter)
	}
	fields := entries[0].ContextMap()
	if fields["trace_id"] != server.SpanContext().TraceID().String() || fields["span_id"] != filter.SpanContext().SpanID().String() {
		t.Errorf("log fields %v, want trace %s span %s", fields, server.SpanContext().TraceID(), filter.SpanContext().SpanID())
	}
}

// A request body read after the request ended (the upstream answered
// before the upload was over) adds no span to the ended trace.
func TestLateCallbackAfterTheTraceEndedRecordsNothing(t *testing.T) {
	h := provisionGuest(t, phasesGuest(), "")
	r, server, rec := tracedRequest(t, newRequest(http.MethodGet, "/", ""), sdktrace.AlwaysSample())
	tr := startFilterTrace(r.Context(), h.Handler)
	tr.end("continued", nil, 0)
	now := time.Now()
	tr.callbackDone(filters.CallbackStats{Phase: "request_body", Began: now, Ended: now})
	server.End()
	if n := len(rec.Started()); n != 2 { // server and filter
		t.Errorf("%d spans started, want the server's and the filter's", n)
	}
}

// Every outcome the requests counter documents is counted when it happens.
func TestMetricsCountEachOutcome(t *testing.T) {
	reset := newGuest().fn(`(func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (drop (call $close_stream (i32.const 0)))
    (i32.const 0))`)
	for _, tc := range []struct {
		outcome string
		g       *guest
		options string
		req     func() *http.Request
		next    *nextHandler
	}{
		{"reset", reset, "", func() *http.Request { return newRequest(http.MethodGet, "/", "") }, &nextHandler{}},
		{"failed_closed", loopGuest(), `"timeout": "50ms"`, func() *http.Request { return newRequest(http.MethodGet, "/", "") }, &nextHandler{}},
		{"body_too_large", pauseBodyGuest("proxy_on_request_body", true), `"max_body_size": 1024`,
			func() *http.Request { return bodyRequest(false, strings.Repeat("x", 4096)) }, &nextHandler{}},
		{"aborted", rewriteBodyGuest(false), "", func() *http.Request { return newRequest(http.MethodGet, "/", "") }, bodyUpstream(true)},
	} {
		t.Run(tc.outcome, func(t *testing.T) {
			name := "outcome-" + tc.outcome
			options := fmt.Sprintf(`"name": %q`, name)
			if tc.options != "" {
				options += ", " + tc.options
			}
			h := provisionGuest(t, tc.g, options)
			_, _, _ = h.serve(tc.req(), tc.next)
			if got := metricValue(t, h.registry, "caddy_wasm_filter_requests_total", map[string]string{"filter": name, "outcome": tc.outcome}); got != 1 {
				t.Errorf("requests_total{outcome=%q} = %v, want 1", tc.outcome, got)
			}
		})
	}
}
