package caddymodule

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/sluice-edge/sluice/filters"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// dropSpans is a span processor that keeps nothing: the cost measured is
// making the spans, not exporting them (a batcher exports off the request
// path).
type dropSpans struct{}

func (dropSpans) OnStart(context.Context, sdktrace.ReadWriteSpan) {}
func (dropSpans) OnEnd(sdktrace.ReadOnlySpan)                     {}
func (dropSpans) Shutdown(context.Context) error                  { return nil }
func (dropSpans) ForceFlush(context.Context) error                { return nil }

// BenchmarkTracing is one request through a filter that handles every
// phase (request headers, response headers, response body), with tracing
// off (no span: Caddy without the tracing directive), on but not sampled,
// and on and sampled. Each iteration serves one request: the handler, the
// isolate's whole lifecycle and the next handler's two writes.
func BenchmarkTracing(b *testing.B) {
	h := provisionGuest(b, phasesGuest(), "")
	next := upstream()
	for _, mode := range []struct {
		name    string
		sampler sdktrace.Sampler // nil: no tracing at all
	}{{"off", nil}, {"unsampled", sdktrace.NeverSample()}, {"sampled", sdktrace.AlwaysSample()}} {
		b.Run(mode.name, func(b *testing.B) {
			var tracer trace.Tracer
			if mode.sampler != nil {
				tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(dropSpans{}), sdktrace.WithSampler(mode.sampler))
				b.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
				tracer = tp.Tracer("caddy")
			}
			b.ReportAllocs()
			for b.Loop() {
				r := newRequest(http.MethodGet, "/", "")
				var server trace.Span
				if tracer != nil {
					var ctx context.Context
					ctx, server = tracer.Start(r.Context(), "server")
					r = r.WithContext(ctx)
				}
				if err := h.ServeHTTP(httptest.NewRecorder(), r, next); err != nil {
					b.Fatal(err)
				}
				if server != nil {
					server.End()
				}
			}
		})
	}
}

// untracedHooks is what an untraced request's telemetry does, in two
// parts: the span lookup and the trace hooks of an isolate, four callbacks
// and the end (traces); timing the isolate and the four callbacks into
// their histograms and counting the request (metrics).
func untracedHooks(h testHandler) (traces, metrics func()) {
	r := newRequest(http.MethodGet, "/", "")
	phases := []string{"request_headers", "response_headers", "response_body", "log"}
	began := time.Now()
	traces = func() {
		t := startFilterTrace(r.Context(), h.Handler)
		t.isolateCreated(filters.OriginRestored, began, nil)
		for _, phase := range phases {
			t.callbackDone(filters.CallbackStats{Phase: phase, Began: began, Ended: began})
		}
		t.end("continued", nil, 0)
	}
	metrics = func() {
		h.metrics.isolateCreated(filters.OriginRestored, time.Since(began))
		for _, phase := range phases {
			h.metrics.callbackDone(filters.CallbackStats{Phase: phase, Guest: time.Microsecond})
		}
		h.metrics.requestDone("continued", "", 0)
	}
	return traces, metrics
}

// BenchmarkTelemetryHooks is what an untraced request pays for traces and
// for metrics, apart (see untracedHooks).
func BenchmarkTelemetryHooks(b *testing.B) {
	traces, metrics := untracedHooks(provisionGuest(b, phasesGuest(), ""))
	for name, hooks := range map[string]func(){"traces_off": traces, "metrics": metrics} {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				hooks()
			}
		})
	}
}

// An untraced request's telemetry allocates nothing.
func TestUntracedTelemetryDoesNotAllocate(t *testing.T) {
	traces, metrics := untracedHooks(provisionGuest(t, phasesGuest(), ""))
	for name, hooks := range map[string]func(){"traces": traces, "metrics": metrics} {
		if allocs := testing.AllocsPerRun(100, hooks); allocs != 0 {
			t.Errorf("%s: %v allocations per request, want 0", name, allocs)
		}
	}
}
