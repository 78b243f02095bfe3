package caddymodule

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/sluice-edge/sluice/abi"
	"github.com/sluice-edge/sluice/filters"
)

// errPausedAtEnd is the fault of a filter that pauses a stream at its end
// with nothing that could ever resume it.
var errPausedAtEnd = errors.New("stream paused at its end with nothing pending to resume it")

// ServeHTTP runs the filter on one request in a fresh instance:
// request headers, request body (as the next handler reads it), then the
// response headers, body and trailers (as the next handler writes them),
// then proxy_on_done, proxy_on_log and proxy_on_delete, and the instance is
// discarded. A failure before the response starts is settled by the failure
// policy; after it, the response is aborted.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) (err error) {
	s := newStream(h, w, r)
	if err := s.start(); err != nil {
		defer s.report()
		return s.failBeforeForwarding(next, err)
	}
	defer func() {
		// Whatever happened, the filter gets its end-of-stream callbacks and
		// the instance is discarded. A panic raised by our own code is
		// recovered and settled; one that comes out of the next handler
		// passes on, unless it is the abort our own write errors caused.
		p := recover()
		switch {
		case p == nil:
		case p == http.ErrAbortHandler && s.interruption() != nil: //nolint:errorlint // sentinel panic value
			err, p = s.rw.settle(), nil
		case !s.inNext:
			err, p = s.hostPanicked(p), nil
		}
		s.finish()
		if p != nil {
			panic(p)
		}
		if s.mustAbortNow() {
			panic(http.ErrAbortHandler)
		}
	}()
	return s.serve(next)
}

// stream is one request passing through one wasm_filter: the filter's
// instance and HTTP context, the request, and the response as the filter
// sees it. It is the filters.Exchange of the request.
type stream struct {
	h    *Handler
	w    http.ResponseWriter // the writer this handler was given
	r    *http.Request
	inst *filters.Instance
	hc   *filters.HTTPContext
	rw   *responseWriter // wraps w for the next handler

	origRequest *requestSnapshot // for fail_open, taken before the filter runs
	// clientLength is the body length the client announced (-1 unknown): it
	// sizes the body's read buffer. r.ContentLength follows the filter's
	// content-length header, which must not shrink the buffer.
	clientLength int64
	// The header map as it was before the next handler wrote into it: a
	// response that replaces the next handler's (a local response, or an
	// error for Caddy to answer) starts from it, so no upstream header
	// (Content-Length, Set-Cookie, ...) leaks into it.
	headerBeforeNext http.Header
	stdout, stderr   lineBuffer         // guest output not yet logged
	inNext           bool               // the next handler is running
	props            *requestProperties // set by the request's filters; nil outside Caddy
	started          time.Time
	logOnce          sync.Once
	requestLog       *zap.Logger  // built on first use
	trace            *filterTrace // nil: the request is not traced
	localStatus      int          // of the local response sent, if any
	finishErr        error        // of the log phase

	// Shared with the goroutine that may read the request body.
	mu            sync.Mutex
	interrupted   error // why the next handler's response no longer counts
	failure       error // the filter failure being settled, if any
	failureLogged bool
	mustAbort     bool   // abort the response when the handler returns
	failedClosed  bool   // the failure was answered 500 whatever the policy
	verdict       string // the request's outcome, if no failure decides it
}

// setVerdict records the request's outcome for metrics and traces; the
// first one set stands.
func (s *stream) setVerdict(v string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.verdict == "" {
		s.verdict = v
	}
}

// outcome is what became of the request, for metrics and traces: a
// failure settled by the policy (or an abort once the response started),
// else the verdict set on the way (local_response, reset, shed,
// body_too_large, aborted), else continued.
// It also returns the failure, read under the same lock.
func (s *stream) outcome() (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.failure != nil && s.mustAbort:
		return "aborted", s.failure
	case s.failure != nil && s.h.failOpen() && !s.failedClosed:
		return "failed_open", s.failure
	case s.failure != nil:
		return "failed_closed", s.failure
	case s.verdict != "":
		return s.verdict, nil
	}
	return "continued", nil
}

// report counts the request in the metrics and ends its trace.
func (s *stream) report() {
	outcome, failure := s.outcome()
	if failure == nil {
		failure = s.finishErr
	}
	s.h.metrics.requestDone(outcome, failureReason(failure), s.localStatus)
	s.trace.end(outcome, failure, s.localStatus)
}

// CallbackDone implements filters.Observer.
func (s *stream) CallbackDone(c filters.CallbackStats) {
	s.h.metrics.callbackDone(c)
	s.trace.callbackDone(c)
}

// interrupt records why the next handler's response no longer counts; the
// first reason wins.
func (s *stream) interrupt(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.interrupted == nil {
		s.interrupted = err
	}
}

// interruption returns what interrupted the stream, or nil.
func (s *stream) interruption() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.interrupted
}

// setFailure records the filter failure being settled.
func (s *stream) setFailure(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failure == nil {
		s.failure = err
	}
}

func (s *stream) setMustAbort() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.mustAbort = true
}

func (s *stream) mustAbortNow() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mustAbort
}

func newStream(h *Handler, w http.ResponseWriter, r *http.Request) *stream {
	s := &stream{h: h, w: w, r: r, started: time.Now(), props: propertiesOf(r), clientLength: r.ContentLength}
	s.rw = &responseWriter{w: w, s: s}
	return s
}

// start creates the request's instance and HTTP context.
func (s *stream) start() error {
	s.trace = startFilterTrace(s.r.Context(), s.h)
	ctx := s.trace.context(s.r.Context())
	began := time.Now()
	inst, err := s.h.plugin.Acquire(ctx, s)
	if err != nil {
		s.trace.isolateCreated("", began, err)
		return err
	}
	s.h.metrics.isolateCreated(inst.Origin(), time.Since(began))
	s.trace.isolateCreated(inst.Origin(), began, nil)
	s.inst = inst
	if s.hc, err = inst.NewHTTPContext(ctx, s); err != nil {
		inst.Release()
		s.inst = nil
		return err
	}
	return nil
}

// finish ends the HTTP context and gives the instance back: a request's
// own instance is discarded.
func (s *stream) finish() {
	if s.inst == nil {
		return
	}
	if err := s.hc.Finish(); err != nil {
		s.finishErr = err
		s.logFailureOnce(err, "ignored: the response is complete")
	}
	s.inst.Release()
	s.flushOutput()
	s.report()
}

// tooLarge answers a request whose body the filter held past max_body_size:
// 413, whatever the failure policy.
func (s *stream) tooLarge(err error) error {
	s.setVerdict("body_too_large")
	return caddyhttp.Error(http.StatusRequestEntityTooLarge, err)
}

// bodyless reports whether r has no body. r.Body alone does not say, since
// Caddy wraps even an empty body: a request with neither a length nor
// chunked encoding has none (RFC 9112, section 6.3), as has an HTTP/2
// request whose headers ended the stream (Go gives it length 0).
func bodyless(r *http.Request) bool {
	return r.Body == nil || r.Body == http.NoBody || (r.ContentLength == 0 && len(r.TransferEncoding) == 0)
}

// serve runs the request phase, then the next handler with the response
// phase intercepted.
func (s *stream) serve(next caddyhttp.Handler) error {
	r := s.r
	endOfStream := bodyless(r)
	if s.h.failOpen() {
		s.origRequest = snapshotRequest(r)
	}

	out, err := s.hc.RequestHeaders(countPairs(requestHeaders{r}), endOfStream)
	held := false // the filter has seen the body already, while holding the request
	if err == nil && out == filters.Pause {
		if endOfStream {
			err = s.violation(errPausedAtEnd)
		} else {
			out, err = s.holdRequest()
			held = true
		}
	}
	if err != nil {
		if errors.Is(err, filters.ErrRequestBodyTooLarge) {
			return s.tooLarge(err)
		}
		return s.failBeforeForwarding(next, err)
	}
	switch out {
	case filters.Respond:
		return s.writeLocalResponse(s.w)
	case filters.Reset:
		s.setVerdict("reset")
		s.setMustAbort()
		return nil
	}

	if !endOfStream && !held && s.h.plugin.Exports(abi.OnRequestBody) {
		r.Body = &requestBody{s: s, src: r.Body}
	}
	s.hc.RequestForwarded()
	s.headerBeforeNext = s.w.Header().Clone()
	s.inNext = true
	nextErr := next.ServeHTTP(s.rw, r)
	s.inNext = false
	return s.rw.finish(nextErr)
}

// holdRequest reads the request body while the filter keeps the request
// paused, handing each chunk to proxy_on_request_body, until the filter
// continues (or answers, or resets). The next handler then gets what the
// filter left in the buffer, and the rest of the body streamed through the
// filter. A filter still paused at the end of the body is at fault.
func (s *stream) holdRequest() (filters.Outcome, error) {
	r := s.r
	buf := chunkBuffer(s.clientLength)
	var original []byte // for fail_open: the body as the client sent it
	failed := func(err error) (filters.Outcome, error) {
		// fail_open forwards the body the filter consumed, then the rest.
		if s.origRequest != nil {
			s.origRequest.body = io.MultiReader(bytes.NewReader(original), r.Body)
		}
		return 0, err
	}
	for {
		n, readErr := r.Body.Read(buf)
		endOfStream := readErr == io.EOF
		if readErr != nil && !endOfStream {
			return 0, caddyhttp.Error(http.StatusBadRequest, fmt.Errorf("reading request body: %w", readErr))
		}
		if s.origRequest != nil {
			original = append(original, buf[:n]...)
		}
		if n == 0 && !endOfStream {
			continue
		}
		out, err := s.requestChunk(buf[:n], endOfStream)
		switch {
		case err != nil:
			return failed(err)
		case out == filters.Pause:
			continue
		case out != filters.Continue:
			return out, nil
		}
		held := s.hc.TakeRequestBody()
		if endOfStream {
			// The whole body is known: send it with its length.
			r.Body = io.NopCloser(bytes.NewReader(held))
			r.ContentLength = int64(len(held))
			if r.Header.Get("Content-Length") != "" || len(r.TransferEncoding) == 0 {
				r.Header.Set("Content-Length", strconv.Itoa(len(held)))
			}
			r.TransferEncoding = nil
			return filters.Continue, nil
		}
		rest := &requestBody{s: s, src: r.Body}
		r.Body = io.NopCloser(io.MultiReader(bytes.NewReader(held), rest))
		return filters.Continue, nil
	}
}

// chunkBuffer is the read buffer of a request body: 32 KiB, or less when
// the body is known to be smaller, as most are (a form, a JSON document);
// one byte more lets the read that ends the body say so.
func chunkBuffer(contentLength int64) []byte {
	const size = 32 << 10
	if contentLength >= 0 && contentLength < size {
		return make([]byte, contentLength+1)
	}
	return make([]byte, size)
}

// requestTrailers calls proxy_on_request_trailers when the request has
// trailers and the body callback did not stop the stream.
func (s *stream) requestTrailers(out filters.Outcome) (filters.Outcome, error) {
	if out == filters.Respond || out == filters.Reset || len(s.r.Trailer) == 0 ||
		!s.h.plugin.Exports(abi.OnRequestTrailers) {
		return out, nil
	}
	trailersOut, err := s.hc.RequestTrailers(countPairs(trailerMap{h: s.r.Trailer}))
	if err != nil || trailersOut != filters.Continue {
		return trailersOut, err
	}
	return out, nil
}

// failBeforeForwarding settles a filter failure that happened before the
// request went to the next handler: fail_open serves the request as the
// client sent it, without the filter; fail_closed answers 500.
func (s *stream) failBeforeForwarding(next caddyhttp.Handler, err error) error {
	var httpErr caddyhttp.HandlerError
	if errors.As(err, &httpErr) {
		return err // not the filter's failure: a client error
	}
	if errors.Is(err, filters.ErrOverloaded) {
		// Load shedding, whatever the policy: serving without the filter
		// is no answer to a full memory budget.
		s.h.shedLog(s, err)
		s.setVerdict("shed")
		s.w.Header().Set("Retry-After", "1")
		return caddyhttp.Error(http.StatusServiceUnavailable, err)
	}
	s.setFailure(err)
	if s.h.failOpen() {
		s.logFailure(err, "fail_open: serving the request without the filter")
		if s.origRequest != nil {
			s.origRequest.restore(s.r)
		}
		// A panic from here on is the next handler's, not ours.
		s.inNext = true
		err = next.ServeHTTP(s.w, s.r)
		s.inNext = false
		return err
	}
	s.logFailure(err, "fail_closed: answering 500")
	return caddyhttp.Error(http.StatusInternalServerError, err)
}

// violation makes the instance fail with an ABI violation and returns the
// error.
func (s *stream) violation(err error) error {
	return s.inst.Violation(err)
}

// hostPanicked turns a panic of our own code (not the guest's: guest traps
// are errors) into the failure policy, or an abort once the response has
// started.
func (s *stream) hostPanicked(p any) error {
	err := fmt.Errorf("%w: %v", filters.ErrHostPanic, p)
	s.h.logger.Error("recovered from a panic in sluice", zap.Any("panic", p), zap.Stack("stack"))
	s.setFailure(err)
	if s.rw.sent {
		s.setMustAbort()
		return nil
	}
	s.mu.Lock()
	s.failedClosed = true // our bug: no policy serves around it
	s.mu.Unlock()
	return caddyhttp.Error(http.StatusInternalServerError, err)
}

// writeLocalResponse sends the filter's local response on w, replacing
// anything the next handler put in the header map.
func (s *stream) writeLocalResponse(w http.ResponseWriter) error {
	lr := s.hc.LocalResponse()
	header := s.resetHeader()
	for _, p := range lr.Headers {
		if p[0] != ":status" {
			header.Add(canonical(p[0]), p[1])
		}
	}
	if lr.GRPCStatus >= 0 {
		header.Set("Grpc-Status", strconv.Itoa(int(lr.GRPCStatus)))
	}
	header.Set("Content-Length", strconv.Itoa(len(lr.Body)))
	if s.h.logger.Core().Enabled(zap.DebugLevel) {
		s.logger().Debug("local response", zap.Uint32("status", lr.StatusCode), zap.String("details", lr.Details))
	}
	s.setVerdict("local_response")
	s.localStatus = int(lr.StatusCode)
	w.WriteHeader(int(lr.StatusCode))
	if s.r.Method != http.MethodHead {
		_, _ = w.Write(lr.Body)
	}
	return nil
}

// resetHeader puts the response header map back as it was before the next
// handler ran, and returns it.
func (s *stream) resetHeader() http.Header {
	header := s.w.Header()
	if s.headerBeforeNext != nil {
		clear(header)
		for k, v := range s.headerBeforeNext {
			header[k] = v
		}
	}
	return header
}

// countPairs is the num_headers argument of a headers callback.
func countPairs(m abi.HeaderMap) int {
	switch m := m.(type) {
	case requestHeaders:
		return 4 + countValues(m.r.Header, nil) // :authority, :path, :method, :scheme
	case responseHeaders:
		return 1 + countValues(m.rw.Header(), isTrailerKey) // :status
	}
	return len(m.Pairs())
}

// countValues counts the values of h, one pair each, skipping the keys skip
// reports.
func countValues(h http.Header, skip func(string) bool) int {
	n := 0
	for k, vs := range h {
		if skip == nil || !skip(k) {
			n += len(vs)
		}
	}
	return n
}

// logFailureOnce logs the failure that is being settled, unless that was
// logged already.
func (s *stream) logFailureOnce(err error, action string) {
	s.mu.Lock()
	logged := s.failureLogged
	s.failureLogged = true
	s.mu.Unlock()
	if !logged {
		s.logFailure(err, action)
	}
}

// logFailure logs a filter failure with its reason and what was done.
func (s *stream) logFailure(err error, action string) {
	s.mu.Lock()
	s.failureLogged = true
	s.mu.Unlock()
	reason := "error"
	var ge *filters.GuestError
	if errors.As(err, &ge) {
		reason = ge.Reason()
	}
	s.logger().Error("filter failed", zap.String("reason", reason), zap.String("action", action), zap.Error(err))
}

// requestSnapshot is the request as the client sent it, for fail_open.
type requestSnapshot struct {
	method, host, requestURI string
	url                      urlCopy
	header                   http.Header
	contentLength            int64
	body                     io.Reader // set once the filter has consumed part of the body
}

type urlCopy struct{ path, rawPath, rawQuery string }

func snapshotRequest(r *http.Request) *requestSnapshot {
	return &requestSnapshot{
		method: r.Method, host: r.Host, requestURI: r.RequestURI,
		url:           urlCopy{r.URL.Path, r.URL.RawPath, r.URL.RawQuery},
		header:        r.Header.Clone(),
		contentLength: r.ContentLength,
	}
}

func (o *requestSnapshot) restore(r *http.Request) {
	r.Method, r.Host, r.RequestURI = o.method, o.host, o.requestURI
	r.URL.Path, r.URL.RawPath, r.URL.RawQuery = o.url.path, o.url.rawPath, o.url.rawQuery
	r.Header = o.header
	r.ContentLength = o.contentLength
	if o.body != nil {
		r.Body = io.NopCloser(o.body)
	}
}
