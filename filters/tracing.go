package filters

import (
	"context"
	"errors"
	"net/http"
	"strconv"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/sluice-edge/sluice/filters/internal/outbound"
)

// TracerName is the instrumentation scope of Sluice's spans.
const TracerName = "github.com/sluice-edge/sluice"

// AttrFilterName is the span attribute naming a filter.
const AttrFilterName = attribute.Key("sluice.filter.name")

// traceContext is the W3C propagator: outbound calls carry traceparent and
// tracestate whatever propagators the embedder's tracing uses, so that a
// filter's call shows in the request's trace.
var traceContext propagation.TraceContext

// startCallSpan starts the client span of an outbound call, a child of the
// span in parent: the filter's span of the request. Without a span in
// parent (tracing off, the background instance) it returns parent and a
// no-op span, at the cost of a context lookup.
func startCallSpan(parent context.Context, p *Plugin, req *outbound.Request) (context.Context, trace.Span) {
	span := trace.SpanFromContext(parent)
	if !span.SpanContext().IsValid() {
		return parent, span
	}
	method := http.MethodGet
	for _, h := range req.Headers {
		if h[0] == ":method" {
			method = h[1]
		}
	}
	return span.TracerProvider().Tracer(TracerName).Start(parent, method,
		trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(
			AttrFilterName.String(p.cfg.Name),
			attribute.String("sluice.upstream", req.Upstream),
			semconv.HTTPRequestMethodKey.String(method),
		))
}

// endCallSpan records how the call ended and ends its span.
func endCallSpan(span trace.Span, resp *outbound.Response, err error) {
	if !span.IsRecording() {
		return
	}
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
		span.SetAttributes(semconv.ErrorTypeKey.String(callErrorType(err)))
	} else if len(resp.Headers) > 0 && resp.Headers[0][0] == ":status" {
		code, _ := strconv.Atoi(resp.Headers[0][1])
		span.SetAttributes(semconv.HTTPResponseStatusCode(code))
		if code >= 500 {
			span.SetStatus(codes.Error, "")
		}
	}
	span.End()
}

// callErrorType is the error.type of a failed call: a short, stable class.
func callErrorType(err error) string {
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case errors.Is(err, context.Canceled):
		return "canceled"
	case errors.Is(err, outbound.ErrResponseTooLarge):
		return "response_too_large"
	case errors.Is(err, outbound.ErrTooManyCalls):
		return "too_many_calls"
	}
	return "_OTHER"
}

// prepareCall is the outbound client's last look at a request: it names
// the call's destination on its span and passes the trace on.
func prepareCall(ctx context.Context, r *http.Request) {
	span := trace.SpanFromContext(ctx)
	if !span.SpanContext().IsValid() {
		return
	}
	traceContext.Inject(ctx, propagation.HeaderCarrier(r.Header))
	if span.IsRecording() {
		attrs := []attribute.KeyValue{semconv.URLFull(r.URL.String()), semconv.ServerAddress(r.URL.Hostname())}
		if port, err := strconv.Atoi(r.URL.Port()); err == nil {
			attrs = append(attrs, semconv.ServerPort(port))
		}
		span.SetAttributes(attrs...)
	}
}
