package caddymodule

import (
	"context"
	"errors"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/sluice-edge/sluice/filters"
)

// Span attributes of Sluice's own. Where OpenTelemetry has a convention
// (http.response.status_code, error.type) the spans use it.
const (
	attrDigest        = attribute.Key("sluice.filter.digest")
	attrIsolation     = attribute.Key("sluice.isolation")
	attrOrigin        = attribute.Key("sluice.isolate.origin")
	attrCreation      = attribute.Key("sluice.isolate.creation_us")
	attrPhase         = attribute.Key("sluice.phase")
	attrAction        = attribute.Key("sluice.action")
	attrGuestTime     = attribute.Key("sluice.guest.time_us")
	attrChunks        = attribute.Key("sluice.body.chunks")
	attrOutcome       = attribute.Key("sluice.outcome")
	spanCreateIsolate = "create isolate"
)

// filterTrace is the trace of one request through one filter: a span for
// the filter, a child for getting its isolate, and a child per phase, a body
// phase being one span over all its chunks. The filter's outbound calls are
// children of the filter's span too (package filters makes them). A
// request that is not traced has none (nil): the cost of tracing off is
// looking up the request's span.
type filterTrace struct {
	ctx    context.Context // carries span: the parent of the filter's spans
	span   trace.Span
	tracer trace.Tracer

	// A request body's callbacks may run on the transport's goroutine
	// while the response's run on the handler's.
	mu    sync.Mutex
	body  map[string]*bodySpan // the body phases under way
	guest time.Duration        // in the guest, over all phases
	ended bool                 // a request body read late reports nothing
}

// bodySpan is a body phase's span, open while chunks come.
type bodySpan struct {
	span   trace.Span
	chunks int
	guest  time.Duration
	ended  time.Time
	action string
}

// startFilterTrace starts the filter's span under the request's, if that is
// recording.
func startFilterTrace(ctx context.Context, h *Handler) *filterTrace {
	parent := trace.SpanFromContext(ctx)
	if !parent.IsRecording() {
		return nil
	}
	tracer := parent.TracerProvider().Tracer(filters.TracerName)
	isolation := h.Isolation
	if isolation == "" {
		isolation = filters.IsolationRequest
	}
	ctx, span := tracer.Start(ctx, h.spanName, trace.WithAttributes(
		filters.AttrFilterName.String(h.Name),
		attrDigest.String(h.plugin.Digest()),
		attrIsolation.String(isolation),
	))
	return &filterTrace{ctx: ctx, span: span, tracer: tracer}
}

// context is where the filter's work hangs: the filter's span, or ctx
// itself when the request is not traced.
func (t *filterTrace) context(ctx context.Context) context.Context {
	if t == nil {
		return ctx
	}
	return t.ctx
}

// isolateCreated records getting the request's instance, from began to now.
func (t *filterTrace) isolateCreated(origin filters.Origin, began time.Time, err error) {
	if t == nil {
		return
	}
	now := time.Now()
	_, span := t.tracer.Start(t.ctx, spanCreateIsolate, trace.WithTimestamp(began))
	if origin != "" {
		span.SetAttributes(attrOrigin.String(string(origin)))
		t.span.SetAttributes(attrOrigin.String(string(origin)), attrCreation.Int64(now.Sub(began).Microseconds()))
	}
	if err != nil {
		recordFailure(span, err)
	}
	span.End(trace.WithTimestamp(now))
}

// callbackDone records one callback: a span of its own, or a body chunk
// added to its phase's span.
func (t *filterTrace) callbackDone(c filters.CallbackStats) {
	if t == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.ended {
		return
	}
	t.guest += c.Guest
	action := ""
	if c.Err == nil && c.Phase != "log" {
		action = c.Outcome.String()
	}
	if c.Phase == "request_body" || c.Phase == "response_body" {
		b := t.body[c.Phase]
		if b == nil {
			if t.body == nil {
				t.body = make(map[string]*bodySpan, 2)
			}
			b = &bodySpan{}
			_, b.span = t.tracer.Start(t.ctx, c.Phase, trace.WithTimestamp(c.Began),
				trace.WithAttributes(attrPhase.String(c.Phase)))
			t.body[c.Phase] = b
		}
		b.chunks++
		b.guest += c.Guest
		b.ended, b.action = c.Ended, action
		if c.Err != nil {
			recordFailure(b.span, c.Err)
		}
		return
	}
	_, span := t.tracer.Start(t.ctx, c.Phase, trace.WithTimestamp(c.Began), trace.WithAttributes(
		attrPhase.String(c.Phase),
		attrGuestTime.Int64(c.Guest.Microseconds()),
	))
	if action != "" {
		span.SetAttributes(attrAction.String(action))
	}
	if c.Err != nil {
		recordFailure(span, c.Err)
	}
	span.End(trace.WithTimestamp(c.Ended))
}

// end ends the body spans still open and the filter's span, with what
// became of the request.
func (t *filterTrace) end(outcome string, failure error, localStatus int) {
	if t == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.ended = true
	for phase, b := range t.body {
		b.span.SetAttributes(attrChunks.Int(b.chunks), attrGuestTime.Int64(b.guest.Microseconds()))
		if b.action != "" {
			b.span.SetAttributes(attrAction.String(b.action))
		}
		b.span.End(trace.WithTimestamp(b.ended))
		delete(t.body, phase)
	}
	t.span.SetAttributes(attrOutcome.String(outcome), attrGuestTime.Int64(t.guest.Microseconds()))
	if localStatus > 0 {
		t.span.SetAttributes(semconv.HTTPResponseStatusCode(localStatus))
	}
	if failure != nil {
		recordFailure(t.span, failure)
	}
	t.span.End()
}

// recordFailure marks span failed by err, with error.type the failure's
// reason (trap, timeout, memory_limit, ...).
func recordFailure(span trace.Span, err error) {
	span.RecordError(err)
	span.SetStatus(codes.Error, failureReason(err))
	span.SetAttributes(semconv.ErrorTypeKey.String(failureReason(err)))
}

// failureReason is a short, stable label for a failure, "" for none.
func failureReason(err error) string {
	if err == nil {
		return "" // before ge, which escapes: most requests do not fail
	}
	var ge *filters.GuestError
	switch {
	case errors.As(err, &ge):
		return ge.Reason()
	case errors.Is(err, filters.ErrOverloaded):
		return "overloaded"
	case errors.Is(err, filters.ErrHostPanic):
		return "host_panic"
	}
	return "_OTHER"
}
