package filters

import (
	"context"
	"fmt"
	"time"

	"github.com/sluice-edge/sluice/abi"
	"github.com/sluice-edge/sluice/filters/internal/wasmbin"
)

// Exchange is the HTTP side of one request, supplied by the embedder: the
// header maps over its request and response, the request's properties, and
// where the filter's logs go.
type Exchange interface {
	LogSink
	// HeaderMap returns map t, or nil while it does not exist (response
	// headers before the response, trailers the request has not got, ...).
	HeaderMap(t abi.MapType) abi.HeaderMap
	// Property returns a property of the request: request.*, source.*, ...
	Property(path []string) ([]byte, bool)
	// SetProperty records a property for later filters of the request.
	SetProperty(path []string, value []byte) abi.Status
	// ValidResponseHeaders reports whether a local response may carry pairs.
	ValidResponseHeaders(pairs [][2]string) bool
}

// Observer, when an Exchange implements it, hears of every callback of the
// request as it ends: the embedder's traces and metrics hang on it.
type Observer interface {
	CallbackDone(CallbackStats)
}

// CallbackStats describe one stream callback (with the outbound-call
// answers it waited for) or the end of the context.
type CallbackStats struct {
	// Phase is request_headers, request_body, request_trailers,
	// response_headers, response_body, response_trailers, or log (for
	// proxy_on_done, proxy_on_log and proxy_on_delete together).
	Phase   string
	Began   time.Time
	Ended   time.Time
	Guest   time.Duration // in the guest, host functions included
	Outcome Outcome       // for a stream callback that succeeded
	Err     error
}

// Outcome tells the embedder what to do after a stream callback.
type Outcome int

// The outcomes of a stream callback.
const (
	// Continue: forward the headers, and whatever body is buffered.
	Continue Outcome = iota
	// Pause: hold the headers and keep buffering the body.
	Pause
	// Respond: send LocalResponse instead of forwarding anything.
	Respond
	// Reset: the filter closed the stream; abort it.
	Reset
)

func (o Outcome) String() string {
	return [...]string{"continue", "pause", "respond", "reset"}[o]
}

// phase is where the HTTP context is in its lifecycle; it decides which maps
// and buffers the guest may touch.
type phase int

const (
	phaseCreated phase = iota
	phaseRequestHeaders
	phaseRequestBody
	phaseRequestTrailers
	phaseResponseHeaders
	phaseResponseBody
	phaseResponseTrailers
	phaseDone // proxy_on_done, proxy_on_log, proxy_on_delete
)

// phaseNames are the phases as Observer sees them.
var phaseNames = [...]string{
	phaseCreated:          "create",
	phaseRequestHeaders:   "request_headers",
	phaseRequestBody:      "request_body",
	phaseRequestTrailers:  "request_trailers",
	phaseResponseHeaders:  "response_headers",
	phaseResponseBody:     "response_body",
	phaseResponseTrailers: "response_trailers",
	phaseDone:             "log",
}

// HTTPContext is the Proxy-Wasm stream context of one request in an
// instance. Its methods call the matching callbacks and report what the
// embedder should do; it is the abi.Host of those calls. Methods may be
// called from different goroutines (a request body is often read by the
// transport's goroutine), never concurrently with each other for one
// callback, since the instance serializes calls.
type HTTPContext struct {
	pluginServices
	inst  *Instance
	id    uint32
	ex    Exchange
	obs   Observer // ex, if it observes; else nil
	scope *callScope
	// reqCtx is the request's context. In a request's own instance the
	// scope's calls end with it; a shared instance's calls are bounded by
	// their budget alone, since ending one would end the instance and
	// every request in it, and the request's end is checked between calls.
	reqCtx context.Context
	calls  callSet // outbound calls

	phase         phase
	requestSent   bool // request headers forwarded: they can no longer change
	responseSent  bool // response headers sent downstream
	reqBody       bodyBuffer
	respBody      bodyBuffer
	local         *abi.LocalResponse
	localReported bool
	reset         bool
	resume        [2]bool // proxy_continue_stream per HTTP stream type
	donePending   bool    // proxy_on_done returned false
	createPending bool    // proxy_on_context_create is still to run
	creating      bool    // a call that starts with proxy_on_context_create is running
}

// currentPhase is the phase host calls act in. While a call runs
// proxy_on_context_create ahead of a callback, the dispatcher's step tells
// which of the two is running.
func (hc *HTTPContext) currentPhase() phase {
	if hc.creating && hc.inst.step() == hc.inst.plugin.createIndex() {
		return phaseCreated
	}
	return hc.phase
}

// NewHTTPContext creates the stream context of a request:
// proxy_on_context_create(id, root). Its calls end when ctx, the request's
// context, ends.
func (inst *Instance) NewHTTPContext(ctx context.Context, ex Exchange) (*HTTPContext, error) {
	inst.mu.Lock()
	defer inst.mu.Unlock()
	limit := inst.plugin.cfg.Limits.MaxBodySize
	hc := &HTTPContext{
		pluginServices: pluginServices{inst.plugin},
		inst:           inst,
		id:             inst.nextContextID,
		ex:             ex,
		reqBody:        bodyBuffer{limit: limit, tooLarge: ErrRequestBodyTooLarge},
		respBody:       bodyBuffer{limit: limit, tooLarge: ErrBodyTooLarge},
	}
	hc.reqCtx = ctx
	hc.obs, _ = ex.(Observer)
	parent := ctx
	if inst.role == roleShared {
		parent = inst.plugin.shared.ctx
	}
	hc.scope = newCallScope(parent, inst.guest, hc)
	inst.nextContextID++
	if inst.plugin.createsFirst() {
		// proxy_on_context_create runs at the start of the next call into
		// the guest: one call instead of two, in the same order.
		hc.createPending = true
		return hc, nil
	}
	if _, err := inst.callOr(hc.scope, abi.OnContextCreate, 0, uint64(hc.id), rootContextID); err != nil {
		hc.scope.end()
		return nil, err
	}
	return hc, nil
}

// RequestHeaders calls proxy_on_request_headers.
func (hc *HTTPContext) RequestHeaders(numHeaders int, endOfStream bool) (Outcome, error) {
	return hc.stream(phaseRequestHeaders, abi.OnRequestHeaders, abi.StreamHTTPRequest,
		uint64(numHeaders), boolArg(endOfStream))
}

// RequestBody appends chunk to the buffered request body and calls
// proxy_on_request_body with the size of everything buffered. After
// Continue, TakeRequestBody returns what to forward. A body that would grow
// past max_body_size fails with ErrRequestBodyTooLarge, without a guest
// call.
func (hc *HTTPContext) RequestBody(chunk []byte, endOfStream bool) (Outcome, error) {
	if err := hc.reqBody.append(chunk); err != nil {
		return 0, err
	}
	return hc.stream(phaseRequestBody, abi.OnRequestBody, abi.StreamHTTPRequest,
		uint64(len(hc.reqBody.data)), boolArg(endOfStream))
}

// RequestTrailers calls proxy_on_request_trailers.
func (hc *HTTPContext) RequestTrailers(numTrailers int) (Outcome, error) {
	return hc.stream(phaseRequestTrailers, abi.OnRequestTrailers, abi.StreamHTTPRequest, uint64(numTrailers))
}

// ResponseHeaders calls proxy_on_response_headers.
func (hc *HTTPContext) ResponseHeaders(numHeaders int, endOfStream bool) (Outcome, error) {
	return hc.stream(phaseResponseHeaders, abi.OnResponseHeaders, abi.StreamHTTPResponse,
		uint64(numHeaders), boolArg(endOfStream))
}

// ResponseBody is RequestBody for the response.
func (hc *HTTPContext) ResponseBody(chunk []byte, endOfStream bool) (Outcome, error) {
	if err := hc.respBody.append(chunk); err != nil {
		return 0, err
	}
	return hc.stream(phaseResponseBody, abi.OnResponseBody, abi.StreamHTTPResponse,
		uint64(len(hc.respBody.data)), boolArg(endOfStream))
}

// ResponseTrailers calls proxy_on_response_trailers.
func (hc *HTTPContext) ResponseTrailers(numTrailers int) (Outcome, error) {
	return hc.stream(phaseResponseTrailers, abi.OnResponseTrailers, abi.StreamHTTPResponse, uint64(numTrailers))
}

// TakeRequestBody returns the buffered request body, as the filter left it,
// and empties the buffer.
func (hc *HTTPContext) TakeRequestBody() []byte { return hc.reqBody.take() }

// TakeResponseBody returns the buffered response body and empties the buffer.
func (hc *HTTPContext) TakeResponseBody() []byte { return hc.respBody.take() }

// BufferedResponseBody is the size of the response body held back so far.
func (hc *HTTPContext) BufferedResponseBody() int { return len(hc.respBody.data) }

// LocalResponse returns the response the filter sent, or nil.
func (hc *HTTPContext) LocalResponse() *abi.LocalResponse { return hc.local }

// RequestForwarded records that the request headers went upstream: the
// filter can no longer change them.
func (hc *HTTPContext) RequestForwarded() {
	hc.inst.mu.Lock()
	defer hc.inst.mu.Unlock()
	hc.requestSent = true
}

// ResponseStarted records that the response headers went downstream: the
// filter can no longer change them or send a local response.
func (hc *HTTPContext) ResponseStarted() {
	hc.inst.mu.Lock()
	defer hc.inst.mu.Unlock()
	hc.responseSent = true
}

// Finish ends the context: proxy_on_done, then proxy_on_log and
// proxy_on_delete, in the specification's order. A filter that returns false
// from proxy_on_done to keep the context open is not waited for: a request's
// instance ends with its request.
func (hc *HTTPContext) Finish() error {
	var guest time.Duration
	if hc.obs == nil {
		return hc.finish(&guest)
	}
	began := time.Now()
	err := hc.finish(&guest)
	hc.observe(phaseDone, began, guest, Continue, err)
	return err
}

func (hc *HTTPContext) finish(guest *time.Duration) error {
	inst := hc.inst
	defer hc.unlockCounting(guest, hc.lockCounting())
	defer hc.scope.end()
	// Calls still in flight end with the request: their answers would
	// reach a context that is gone.
	defer hc.calls.end()
	if inst.err != nil {
		return inst.err
	}
	if err := hc.deliverReady(); err != nil {
		return err
	}
	hc.phase = phaseDone
	if op, ok := inst.plugin.sequenceOp(); ok {
		// One call runs proxy_on_done, proxy_on_log and proxy_on_delete,
		// unless proxy_on_done returns false: the dispatcher stops, and
		// the other two run once the host knows.
		done, err := inst.dispatch(hc.scope, abi.OnDone, hc.createOp(op), hc.args())
		hc.creating = false
		if err != nil || done != 0 {
			return err
		}
	} else {
		if err := hc.createNow(); err != nil {
			return err
		}
		done, err := inst.callOr(hc.scope, abi.OnDone, 1, uint64(hc.id))
		if err != nil || done != 0 {
			return err
		}
	}
	hc.donePending = true
	if _, err := inst.callOr(hc.scope, abi.OnLog, 0, uint64(hc.id)); err != nil {
		return err
	}
	_, err := inst.callOr(hc.scope, abi.OnDelete, 0, uint64(hc.id))
	return err
}

// createOp adds the pending proxy_on_context_create to a dispatcher op.
func (hc *HTTPContext) createOp(op uint32) uint32 {
	hc.creating = hc.createPending
	if hc.createPending {
		hc.createPending = false
		return op | wasmbin.DispatchCreateFirst
	}
	return op
}

// args are the dispatcher's a..e for a callback of this context: the
// context's id first, the root context's id last (for a pending
// proxy_on_context_create), the callback's own arguments between.
func (hc *HTTPContext) args(more ...uint64) [5]uint64 {
	a := [5]uint64{uint64(hc.id)}
	copy(a[1:4], more)
	a[4] = rootContextID
	return a
}

// createNow runs a pending proxy_on_context_create on its own.
func (hc *HTTPContext) createNow() error {
	if !hc.createPending {
		return nil
	}
	hc.createPending = false
	_, err := hc.inst.callOr(hc.scope, abi.OnContextCreate, 0, uint64(hc.id), rootContextID)
	return err
}

// stream runs one stream callback and turns its result into an Outcome. A
// reset or local response the guest asked for during the call wins over its
// return value; proxy_continue_stream during the call turns a pause into a
// continue. A pause with outbound calls in flight waits for their answers,
// each handed to proxy_on_http_call_response, until one of them resumes,
// answers or resets the stream, or none is left.
func (hc *HTTPContext) stream(p phase, cb abi.Callback, st abi.StreamType, args ...uint64) (Outcome, error) {
	var began time.Time
	var guest time.Duration
	if hc.obs != nil {
		began = time.Now()
	}
	out, err := hc.runStream(&guest, p, cb, st, args)
	for err == nil && out == Pause && hc.callsPending() {
		out, err = hc.awaitCall(&guest, st)
	}
	if hc.obs != nil {
		hc.observe(p, began, guest, out, err)
	}
	return out, err
}

// observe tells the observer of a callback that began at began and spent
// guest in the guest.
func (hc *HTTPContext) observe(p phase, began time.Time, guest time.Duration, out Outcome, err error) {
	hc.obs.CallbackDone(CallbackStats{
		Phase: phaseNames[p], Began: began, Ended: time.Now(),
		Guest: guest, Outcome: out, Err: err,
	})
}

// lockCounting takes the instance's lock and returns the guest time so
// far; unlockCounting releases it, adding to *guest the guest time of the
// calls made meanwhile: this goroutine's only, since calls need the lock
// (the request body's goroutine may call between two of ours). Used as
// defer hc.unlockCounting(guest, hc.lockCounting()).
func (hc *HTTPContext) lockCounting() int64 {
	hc.inst.mu.Lock()
	return hc.scope.guestTime.Load()
}

func (hc *HTTPContext) unlockCounting(guest *time.Duration, before int64) {
	*guest += time.Duration(hc.scope.guestTime.Load() - before)
	hc.inst.mu.Unlock()
}

// runStream makes the stream callback's call into the guest, after handing
// it the answers of earlier calls that already came.
func (hc *HTTPContext) runStream(guest *time.Duration, p phase, cb abi.Callback, st abi.StreamType, args []uint64) (Outcome, error) {
	inst := hc.inst
	defer hc.unlockCounting(guest, hc.lockCounting())
	if inst.err != nil {
		return 0, inst.err
	}
	if err := hc.requestGone(cb); err != nil {
		return 0, err
	}
	if err := hc.deliverReady(); err != nil {
		return 0, err
	}
	hc.phase = p
	hc.resume[st] = false
	raw := uint64(abi.ActionContinue) // for a callback the module lacks
	if index, ok := inst.plugin.dispatchIndex(cb); ok {
		var err error
		raw, err = inst.dispatch(hc.scope, cb, hc.createOp(index), hc.args(args...))
		hc.creating = false
		if err != nil {
			return 0, err
		}
	} else if inst.plugin.exported[cb] {
		if err := hc.createNow(); err != nil {
			return 0, err
		}
		var params [3]uint64
		params[0] = uint64(hc.id)
		copy(params[1:], args)
		var err error
		if raw, err = inst.call(hc.scope, cb, params[:1+len(args)]...); err != nil {
			return 0, err
		}
	}
	action, ok := abi.ParseAction(uint32(raw))
	if !ok && !hc.reset && hc.local == nil {
		return 0, inst.fail(cb, ErrABIViolation, fmt.Errorf("returned %d, which is no Proxy-Wasm action", uint32(raw)))
	}
	return hc.outcome(st, action == abi.ActionPause), nil
}

// outcome is what the embedder does next: a reset or a local response the
// guest asked for wins; a pause stands unless the stream was continued.
func (hc *HTTPContext) outcome(st abi.StreamType, paused bool) Outcome {
	switch {
	case hc.reset:
		return Reset
	case hc.local != nil && !hc.localReported:
		hc.localReported = true
		return Respond
	case paused && !hc.resume[st]:
		return Pause
	}
	return Continue
}

func (hc *HTTPContext) callsPending() bool {
	hc.inst.mu.Lock()
	defer hc.inst.mu.Unlock()
	return hc.calls.pending > 0
}

// awaitCall waits for the next outbound call's answer, without holding the
// instance, and delivers it to the paused stream st.
func (hc *HTTPContext) awaitCall(guest *time.Duration, st abi.StreamType) (Outcome, error) {
	var r callResult
	select {
	case r = <-hc.calls.results:
	case <-hc.reqCtx.Done():
		inst := hc.inst
		inst.mu.Lock()
		defer inst.mu.Unlock()
		if inst.err != nil {
			return 0, inst.err
		}
		if err := hc.requestGone(abi.OnHTTPCallResponse); err != nil {
			return 0, err
		}
		return 0, inst.fail(abi.OnHTTPCallResponse, ErrCanceled, hc.reqCtx.Err())
	}
	inst := hc.inst
	defer hc.unlockCounting(guest, hc.lockCounting())
	if inst.err != nil {
		return 0, inst.err
	}
	if err := hc.calls.deliver(inst, hc.scope, r); err != nil {
		return 0, err
	}
	return hc.outcome(st, true), nil
}

// requestGone returns the error of a call for a request that ended, in a
// shared instance: it fails this context only, not the instance. It returns
// nil otherwise (a request's own instance notices through its scope).
func (hc *HTTPContext) requestGone(cb abi.Callback) error {
	if hc.inst.role != roleShared || hc.reqCtx.Err() == nil {
		return nil
	}
	return &GuestError{Plugin: hc.inst.plugin.cfg.Name, Callback: string(cb), Kind: ErrCanceled, Err: hc.reqCtx.Err()}
}

// deliverReady hands the guest the answers that came while its request
// went on (calls made by a callback that did not pause). The caller holds
// the instance's lock.
func (hc *HTTPContext) deliverReady() error {
	for hc.calls.pending > 0 {
		select {
		case r := <-hc.calls.results:
			if err := hc.calls.deliver(hc.inst, hc.scope, r); err != nil {
				return err
			}
		default:
			return nil
		}
	}
	return nil
}

func boolArg(b bool) uint64 {
	if b {
		return 1
	}
	return 0
}

// The abi.Host methods, for calls made while a callback of this context runs.

// HeaderMap implements abi.Host. A map can be read from the phase it appears
// in until the end of the stream (Envoy allows as much), and written only
// while the change can still reach the wire.
func (hc *HTTPContext) HeaderMap(t abi.MapType, write bool) (abi.HeaderMap, abi.Status) {
	if m, st, ok := hc.calls.response.headerMap(t, write); ok {
		return m, st
	}
	phase := hc.currentPhase()
	var exists, writable bool
	switch t {
	case abi.MapRequestHeaders:
		exists = true
		writable = !hc.requestSent && phase >= phaseRequestHeaders && phase <= phaseRequestTrailers
	case abi.MapRequestTrailers:
		exists = phase >= phaseRequestTrailers
		writable = phase == phaseRequestTrailers
	case abi.MapResponseHeaders:
		exists = phase >= phaseResponseHeaders
		writable = !hc.responseSent && phase >= phaseResponseHeaders && phase <= phaseResponseTrailers
	case abi.MapResponseTrailers:
		exists = phase >= phaseResponseTrailers
		writable = phase == phaseResponseTrailers
	}
	if !exists || (write && !writable) {
		return nil, abi.StatusBadArgument
	}
	m := hc.ex.HeaderMap(t)
	if m == nil {
		return nil, abi.StatusBadArgument
	}
	return m, abi.StatusOK
}

// Buffer implements abi.Host: a body buffer exists during its own callback.
func (hc *HTTPContext) Buffer(t abi.BufferType, write bool) (abi.Buffer, abi.Status) {
	if b, st, ok := hc.calls.response.buffer(t); ok {
		if write {
			return nil, abi.StatusNotFound
		}
		return b, st
	}
	phase := hc.currentPhase()
	switch {
	case t == abi.BufferRequestBody && phase == phaseRequestBody:
		return &hc.reqBody, abi.StatusOK
	case t == abi.BufferResponseBody && phase == phaseResponseBody:
		return &hc.respBody, abi.StatusOK
	}
	return nil, abi.StatusNotFound
}

// SendLocalResponse implements abi.Host. A filter may answer once, from a
// request or response callback, before the response headers went
// downstream, with a final status and headers that may go on the wire.
func (hc *HTTPContext) SendLocalResponse(r *abi.LocalResponse) abi.Status {
	phase := hc.currentPhase()
	switch {
	case hc.local != nil, hc.responseSent,
		phase < phaseRequestHeaders, phase > phaseResponseTrailers,
		r.StatusCode < 200, r.StatusCode > 599,
		int64(len(r.Body)) > hc.reqBody.limit,
		!hc.ex.ValidResponseHeaders(r.Headers):
		return abi.StatusBadArgument
	}
	local := *r
	local.Body = append([]byte(nil), r.Body...)
	hc.local = &local
	return abi.StatusOK
}

// ContinueStream implements abi.Host. TCP streams do not exist in an HTTP
// filter.
func (hc *HTTPContext) ContinueStream(t abi.StreamType) abi.Status {
	if t > abi.StreamHTTPResponse {
		return abi.StatusUnimplemented
	}
	if hc.currentPhase() == phaseCreated {
		// Nothing is paused yet. (proxy_on_context_create may run in the
		// same call as the next callback, whose pause this must not undo.)
		return abi.StatusOK
	}
	hc.resume[t] = true
	return abi.StatusOK
}

// CloseStream implements abi.Host: either HTTP stream resets the request.
func (hc *HTTPContext) CloseStream(t abi.StreamType) abi.Status {
	if t > abi.StreamHTTPResponse || hc.currentPhase() == phaseDone {
		return abi.StatusBadArgument
	}
	hc.reset = true
	return abi.StatusOK
}

// Property implements abi.Host.
func (hc *HTTPContext) Property(path []string) ([]byte, abi.Status) {
	if v, ok := hc.inst.plugin.property(path); ok {
		return v, abi.StatusOK
	}
	if v, ok := hc.ex.Property(path); ok {
		return v, abi.StatusOK
	}
	return nil, abi.StatusNotFound
}

// SetProperty implements abi.Host.
func (hc *HTTPContext) SetProperty(path []string, value []byte) abi.Status {
	return hc.ex.SetProperty(path, value)
}

// Log implements abi.Host.
func (hc *HTTPContext) Log(level abi.LogLevel, msg []byte) { hc.ex.GuestLog(level, msg) }

// LogLevel implements abi.Host.
func (hc *HTTPContext) LogLevel() abi.LogLevel { return hc.ex.LogLevel() }

// WriteOutput implements abi.Host.
func (hc *HTTPContext) WriteOutput(fd uint32, p []byte) { hc.ex.GuestOutput(fd, p) }

// SetEffectiveContext implements abi.Host: the root and this context exist.
func (hc *HTTPContext) SetEffectiveContext(id uint32) abi.Status {
	if id == hc.id || id == rootContextID {
		return abi.StatusOK
	}
	return abi.StatusBadArgument
}

// Done implements abi.Host.
func (hc *HTTPContext) Done() abi.Status {
	if !hc.donePending {
		return abi.StatusNotFound
	}
	hc.donePending = false
	return abi.StatusOK
}

// CallStatus implements abi.Host: only gRPC calls have a status, and there
// are none.
func (hc *HTTPContext) CallStatus() (uint32, []byte, abi.Status) { return 0, nil, abi.StatusNotFound }

// HTTPCall implements abi.Services: a request's calls are answered while it
// lasts, and canceled when it ends; a context that is ending makes none.
func (hc *HTTPContext) HTTPCall(call *abi.HTTPCall) (uint32, abi.Status) {
	if hc.currentPhase() == phaseDone {
		return 0, abi.StatusInternalFailure
	}
	return hc.calls.start(hc.inst, hc.reqCtx, call, true)
}

// SetTickPeriod implements abi.Services: ticks are the background
// instance's; a request's instance has no timer that outlives it.
func (hc *HTTPContext) SetTickPeriod(time.Duration) abi.Status { return abi.StatusOK }

// bodyBuffer is a body held for the filter, bounded by max_body_size.
type bodyBuffer struct {
	data     []byte
	limit    int64
	tooLarge error // what passing limit fails with
}

func (b *bodyBuffer) append(chunk []byte) error {
	if int64(len(b.data))+int64(len(chunk)) > b.limit {
		return b.tooLarge
	}
	b.data = append(b.data, chunk...)
	return nil
}

func (b *bodyBuffer) take() []byte {
	data := b.data
	b.data = nil
	return data
}

// Bytes implements abi.Buffer.
func (b *bodyBuffer) Bytes() []byte { return b.data }

// Set implements abi.Buffer: the filter may not grow a body past the limit.
func (b *bodyBuffer) Set(data []byte) abi.Status {
	if int64(len(data)) > b.limit {
		return abi.StatusBadArgument
	}
	b.data = data
	return abi.StatusOK
}
