package filters

import (
	"context"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

// recordingContext returns a context carrying a recording span, and the
// recorder its trace's spans end up in.
func recordingContext(t *testing.T) (context.Context, trace.Span, *tracetest.SpanRecorder) {
	t.Helper()
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	ctx, span := tp.Tracer("test").Start(context.Background(), "filter")
	return ctx, span, rec
}

func attrOf(s sdktrace.ReadOnlySpan, key string) (attribute.Value, bool) {
	for _, kv := range s.Attributes() {
		if string(kv.Key) == key {
			return kv.Value, true
		}
	}
	return attribute.Value{}, false
}

// An outbound call made under a traced request is a client span, child of
// the request's span, and the upstream gets the trace in traceparent.
func TestHTTPCallIsTracedAndCarriesTraceparent(t *testing.T) {
	up := newCallUpstream(t)
	p := mustLoad(t, guest(t, callGuest("/check", `(drop (call $proxy_continue_stream (i32.const 0)))`)), withUpstream("up", up.URL))
	ctx, parent, rec := recordingContext(t)
	_, hc, _ := newHTTPFor(t, p, ctx)
	if out, err := hc.RequestHeaders(0, false); err != nil || out != Continue {
		t.Fatalf("RequestHeaders = %v, %v", out, err)
	}
	ended := rec.Ended()
	if len(ended) != 1 {
		t.Fatalf("%d spans ended, want the call's", len(ended))
	}
	call := ended[0]
	if call.Name() != "GET" || call.SpanKind() != trace.SpanKindClient {
		t.Errorf("span %q kind %v, want GET client", call.Name(), call.SpanKind())
	}
	if call.Parent().SpanID() != parent.SpanContext().SpanID() {
		t.Errorf("call span's parent %v, want the request's span %v", call.Parent().SpanID(), parent.SpanContext().SpanID())
	}
	for key, want := range map[string]string{
		"sluice.filter.name": "test-filter", "sluice.upstream": "up", "http.request.method": "GET",
		"url.full": up.URL + "/check", "server.address": "127.0.0.1",
	} {
		if v, _ := attrOf(call, key); v.Emit() != want {
			t.Errorf("%s = %q, want %q", key, v.Emit(), want)
		}
	}
	if v, _ := attrOf(call, "http.response.status_code"); v.AsInt64() != 200 {
		t.Errorf("http.response.status_code = %v", v.Emit())
	}
	up.mu.Lock()
	got := up.seen[len(up.seen)-1].Header.Get("Traceparent")
	up.mu.Unlock()
	want := "00-" + call.SpanContext().TraceID().String() + "-" + call.SpanContext().SpanID().String() + "-01"
	if got != want {
		t.Errorf("upstream got traceparent %q, want %q", got, want)
	}
}

// A failed call's span records the error; without a span in the request's
// context, a call makes none and sends no traceparent.
func TestHTTPCallTracingEdges(t *testing.T) {
	t.Run("failed call", func(t *testing.T) {
		p := mustLoad(t, guest(t, callGuest("/check", ``)), withUpstream("up", "http://127.0.0.1:1"))
		ctx, _, rec := recordingContext(t)
		_, hc, _ := newHTTPFor(t, p, ctx)
		if _, err := hc.RequestHeaders(0, false); err != nil {
			t.Fatal(err)
		}
		ended := rec.Ended()
		if len(ended) != 1 || ended[0].Status().Code != codes.Error || len(ended[0].Events()) == 0 {
			t.Fatalf("spans %v: want one failed call span with its error", ended)
		}
		if v, _ := attrOf(ended[0], "error.type"); v.Emit() != "_OTHER" {
			t.Errorf("error.type = %q", v.Emit())
		}
	})
	t.Run("untraced request", func(t *testing.T) {
		up := newCallUpstream(t)
		p := mustLoad(t, guest(t, callGuest("/check", `(drop (call $proxy_continue_stream (i32.const 0)))`)), withUpstream("up", up.URL))
		_, hc, _ := newHTTP(t, p)
		if _, err := hc.RequestHeaders(0, false); err != nil {
			t.Fatal(err)
		}
		up.mu.Lock()
		defer up.mu.Unlock()
		if h := up.seen[len(up.seen)-1].Header.Get("Traceparent"); h != "" {
			t.Errorf("untraced call sent traceparent %q", h)
		}
	})
}

// observingExchange records what Observer hears.
type observingExchange struct {
	*fakeExchange
	seen []CallbackStats
}

func (o *observingExchange) CallbackDone(c CallbackStats) { o.seen = append(o.seen, c) }

// An Exchange that observes hears each callback once, with its phase,
// outcome, guest time and error, and the end of the context as "log".
func TestObserverHearsEveryCallback(t *testing.T) {
	p := mustLoad(t, guest(t, `
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_request_body") (param i32 i32 i32) (result i32) (i32.const 0))
  (func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32) unreachable)`))
	ex := &observingExchange{fakeExchange: newExchange()}
	inst, err := p.NewInstance(context.Background(), ex)
	if err != nil {
		t.Fatal(err)
	}
	defer inst.Close(context.Background())
	if inst.Origin() != OriginRestored { // the default: a snapshot, no pre-warm
		t.Errorf("origin %q, want %q", inst.Origin(), OriginRestored)
	}
	hc, err := inst.NewHTTPContext(context.Background(), ex)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = hc.RequestHeaders(0, false)
	_, _ = hc.RequestBody([]byte("x"), true)
	_, trap := hc.ResponseHeaders(0, true)
	_ = hc.Finish()
	want := []struct {
		phase string
		out   Outcome
		err   bool
	}{{"request_headers", Pause, false}, {"request_body", Continue, false}, {"response_headers", 0, true}, {"log", Continue, true}}
	if len(ex.seen) != len(want) {
		t.Fatalf("observed %+v, want %d callbacks", ex.seen, len(want))
	}
	for i, w := range want {
		c := ex.seen[i]
		if c.Phase != w.phase || (c.Err != nil) != w.err || (!w.err && c.Outcome != w.out) {
			t.Errorf("callback %d: %s %v %v, want %s %v err=%v", i, c.Phase, c.Outcome, c.Err, w.phase, w.out, w.err)
		}
		if c.Ended.Before(c.Began) || c.Guest < 0 || c.Guest > c.Ended.Sub(c.Began) {
			t.Errorf("callback %d: began %v ended %v guest %v", i, c.Began, c.Ended, c.Guest)
		}
	}
	if ex.seen[2].Err != trap {
		t.Errorf("observed error %v, want the trap %v", ex.seen[2].Err, trap)
	}
	if ex.seen[0].Guest <= 0 {
		t.Errorf("request_headers spent %v in the guest", ex.seen[0].Guest)
	}
}
