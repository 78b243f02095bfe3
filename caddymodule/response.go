package caddymodule

import (
	"errors"
	"net/http"
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/sluice-edge/sluice/abi"
	"github.com/sluice-edge/sluice/filters"
)

// Why the next handler's writes stop reaching the client. The next handler
// sees these as write errors; the stream settles them when it returns.
var (
	errLocalResponse = errors.New("wasm filter sent a local response")
	errReset         = errors.New("wasm filter reset the stream")
)

// responseWriter intercepts the next handler's response for the filter. It
// shares the header map of the writer it wraps (nothing reaches the wire
// before WriteHeader), holds the status until the filter has seen the
// headers, and hands each body write to proxy_on_response_body. While the
// filter pauses, headers and body are held (up to max_body_size); if the
// whole body was held, it goes out with its real Content-Length.
type responseWriter struct {
	w http.ResponseWriter
	s *stream

	status      int
	wroteHeader bool  // the next handler chose a status
	headersDone bool  // proxy_on_response_headers ran
	held        bool  // headers held back: the filter paused
	sent        bool  // headers went downstream
	bypass      bool  // fail_open settled a failure: writes go straight through
	declared    int64 // Content-Length sent downstream, -1 for none
	forwarded   int64 // body bytes sent downstream

	// For fail_open: the response as the next handler wrote it, until the
	// filter lets it go.
	origStatus int
	origHeader http.Header
	origBody   []byte
}

// Header implements http.ResponseWriter.
func (rw *responseWriter) Header() http.Header { return rw.w.Header() }

// Unwrap lets http.ResponseController reach the underlying writer (for
// deadlines and hijacking); flushing stays with this writer.
func (rw *responseWriter) Unwrap() http.ResponseWriter { return rw.w }

// WriteHeader implements http.ResponseWriter. Informational responses pass
// through; the final status waits for the first write, so the filter learns
// whether a body follows. An upgrade (101) is shown to the filter at once.
func (rw *responseWriter) WriteHeader(code int) {
	switch {
	case rw.bypass:
		rw.w.WriteHeader(code)
	case rw.s.interruption() != nil, rw.wroteHeader:
	case code >= 100 && code < 200 && code != http.StatusSwitchingProtocols:
		rw.w.WriteHeader(code)
	default:
		rw.wroteHeader, rw.status = true, code
		if code == http.StatusSwitchingProtocols {
			_ = rw.responseHeaders(true)
		}
	}
}

// Write implements http.ResponseWriter.
func (rw *responseWriter) Write(p []byte) (int, error) {
	if rw.bypass {
		return rw.w.Write(p)
	}
	if err := rw.s.interruption(); err != nil {
		return 0, err
	}
	if !rw.wroteHeader {
		rw.WriteHeader(http.StatusOK)
	}
	if !rw.headersDone {
		if err := rw.responseHeaders(false); err != nil {
			return 0, err
		}
	}
	if rw.bypass || rw.status == http.StatusSwitchingProtocols {
		return rw.w.Write(p)
	}
	if !rw.s.h.plugin.Exports(abi.OnResponseBody) {
		if rw.held { // nothing can resume headers the filter paused
			return 0, rw.interrupt(rw.s.violation(errPausedAtEnd))
		}
		return rw.forward(p)
	}
	if len(p) == 0 {
		return 0, nil
	}
	if rw.origHeader != nil {
		rw.origBody = append(rw.origBody, p...)
	}
	out, err := rw.s.hc.ResponseBody(p, false)
	if err := rw.afterBody(out, err, false); err != nil {
		return 0, err
	}
	return len(p), nil // also when fail_open took over: it sent p
}

// FlushError implements the interface http.ResponseController uses. Held
// headers or body stay held.
func (rw *responseWriter) FlushError() error {
	if !rw.bypass {
		if rw.s.interruption() != nil {
			return nil
		}
		if !rw.wroteHeader {
			rw.WriteHeader(http.StatusOK)
		}
		if !rw.headersDone {
			if err := rw.responseHeaders(false); err != nil {
				return err
			}
		}
		if !rw.sent {
			return nil
		}
	}
	return http.NewResponseController(rw.w).Flush()
}

// Flush implements http.Flusher.
func (rw *responseWriter) Flush() { _ = rw.FlushError() }

// responseHeaders runs proxy_on_response_headers and sends the headers
// unless the filter pauses them.
func (rw *responseWriter) responseHeaders(endOfStream bool) error {
	rw.headersDone = true
	s := rw.s
	if s.h.failOpen() {
		rw.origStatus, rw.origHeader = rw.status, rw.w.Header().Clone()
	}
	out, err := s.hc.ResponseHeaders(countPairs(responseHeaders{rw}), endOfStream)
	if err := s.stopping(out, err, endOfStream || rw.status == http.StatusSwitchingProtocols); err != nil {
		return rw.interrupt(err)
	}
	if out == filters.Pause {
		rw.held = true
		return nil
	}
	rw.sendHeaders(-1)
	return nil
}

// afterBody acts on the outcome of a body callback: forward what the filter
// released, keep holding, or stop.
func (rw *responseWriter) afterBody(out filters.Outcome, err error, endOfStream bool) error {
	if err := rw.s.stopping(out, err, endOfStream); err != nil {
		return rw.interrupt(err)
	}
	if out == filters.Pause {
		return nil
	}
	data := rw.s.hc.TakeResponseBody()
	rw.origBody = rw.origBody[:0]
	if rw.held {
		length := int64(-1)
		if endOfStream { // the whole body is known
			length = int64(len(data))
		}
		rw.sendHeaders(length)
	}
	_, err = rw.forward(data)
	return err
}

// stopping is what an outcome of the response's callbacks stops the stream
// with: the call's error, the filter's local response or reset, or a pause
// with nothing left to wait for (atEnd); nil to go on.
func (s *stream) stopping(out filters.Outcome, err error, atEnd bool) error {
	switch {
	case err != nil:
		return err
	case out == filters.Respond:
		return errLocalResponse
	case out == filters.Reset:
		return errReset
	case out == filters.Pause && atEnd:
		return s.violation(errPausedAtEnd)
	}
	return nil
}

// sendHeaders sends the status and headers downstream. bodyLength, when
// known (not -1), becomes the Content-Length.
func (rw *responseWriter) sendHeaders(bodyLength int64) {
	rw.s.hc.ResponseStarted()
	header := rw.w.Header()
	if bodyLength >= 0 && bodyAllowed(rw.s.r, rw.status) {
		header.Set("Content-Length", strconv.FormatInt(bodyLength, 10))
	}
	rw.declared = -1
	if v := header.Get("Content-Length"); v != "" && bodyAllowed(rw.s.r, rw.status) {
		rw.declared, _ = strconv.ParseInt(v, 10, 64)
	}
	rw.held, rw.sent = false, true
	rw.w.WriteHeader(rw.status)
}

// bodyAllowed reports whether a response carries a body on the wire.
func bodyAllowed(r *http.Request, status int) bool {
	return r.Method != http.MethodHead && status != http.StatusNoContent && status != http.StatusNotModified &&
		(status < 100 || status >= 200)
}

func (rw *responseWriter) forward(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	n, err := rw.w.Write(p)
	rw.forwarded += int64(n)
	return n, err
}

// interrupt stops the response for err. Under fail_open, a filter failure
// before anything was sent hands the response back, untouched, to the next
// handler and returns nil; otherwise the next handler's writes fail from now
// on and finish settles the stream.
func (rw *responseWriter) interrupt(err error) error {
	s := rw.s
	isFailure := err != errLocalResponse && err != errReset //nolint:errorlint // sentinels
	if isFailure && s.h.failOpen() && !rw.sent && rw.origHeader != nil {
		s.setFailure(err)
		s.logFailureOnce(err, "fail_open: sending the response without the filter") // a request body failure logged it already
		rw.bypassFilter()
		return nil
	}
	if isFailure {
		s.setFailure(err)
	}
	s.interrupt(err)
	return err
}

// bypassFilter sends the response as the next handler wrote it and lets the
// rest through untouched.
func (rw *responseWriter) bypassFilter() {
	header := rw.s.resetHeader()
	clear(header)
	for k, v := range rw.origHeader {
		header[k] = v
	}
	rw.bypass, rw.sent = true, true
	rw.w.WriteHeader(rw.origStatus)
	_, _ = rw.w.Write(rw.origBody)
	rw.origBody = nil
}

// finish completes the response after the next handler returned nextErr:
// headers that never saw a body, the final body callback, trailers, and the
// settling of anything that interrupted the stream.
func (rw *responseWriter) finish(nextErr error) error {
	s := rw.s
	if rw.bypass {
		return nextErr
	}
	if s.interruption() != nil {
		return rw.settle()
	}
	if !rw.wroteHeader {
		if nextErr != nil {
			return nextErr // Caddy's error handling answers; the filter saw no response
		}
		rw.WriteHeader(http.StatusOK)
	}
	if !rw.headersDone {
		_ = rw.responseHeaders(true)
	} else if s.h.plugin.Exports(abi.OnResponseBody) && rw.status != http.StatusSwitchingProtocols {
		out, err := s.hc.ResponseBody(nil, true)
		_ = rw.afterBody(out, err, true)
	}
	if rw.bypass {
		return nextErr
	}
	if s.interruption() != nil {
		return rw.settle()
	}
	if err := rw.responseTrailers(); err != nil {
		return rw.settle()
	}
	if rw.declared >= 0 && rw.forwarded != rw.declared {
		// The filter changed the body's length but not its Content-Length:
		// cut the stream rather than let the client take it as complete.
		s.logger().Error("filter changed the response body length without updating content-length",
			zap.Int64("content_length", rw.declared), zap.Int64("sent", rw.forwarded))
		s.setVerdict("aborted")
		s.setMustAbort()
	}
	return nextErr
}

// responseTrailers runs proxy_on_response_trailers when the response has
// trailers: fields set with http.TrailerPrefix, or declared in "Trailer".
func (rw *responseWriter) responseTrailers() error {
	s := rw.s
	if !s.h.plugin.Exports(abi.OnResponseTrailers) {
		return nil
	}
	header := rw.w.Header()
	for _, declared := range header.Values("Trailer") {
		for _, name := range strings.Split(declared, ",") {
			key := canonical(strings.TrimSpace(name))
			if values, ok := header[key]; ok && key != "" {
				header[http.TrailerPrefix+key] = values
				delete(header, key)
			}
		}
	}
	trailers := trailerMap{h: header, prefix: http.TrailerPrefix}
	n := countPairs(trailers)
	if n == 0 {
		return nil
	}
	out, err := s.hc.ResponseTrailers(n)
	if err := s.stopping(out, err, false); err != nil {
		return rw.interrupt(err)
	}
	return nil // a pause at the very end has nothing left to hold
}

// settle ends an interrupted stream: the filter's local response if the
// client has seen nothing yet, 500 for a failure under fail_closed (413 for
// a request body over the cap), and an abort once the response has started.
func (rw *responseWriter) settle() error {
	s := rw.s
	err := s.interruption()
	if rw.sent {
		switch err {
		case errReset:
			s.setVerdict("reset")
			s.logFailureOnce(err, "aborting the response")
		case errLocalResponse: // too late to send it
			s.setVerdict("aborted")
		default:
			s.setVerdict("aborted")
			s.logFailureOnce(err, "aborting the response")
		}
		s.setMustAbort()
		return nil
	}
	switch {
	case err == errLocalResponse: //nolint:errorlint // sentinel
		return s.writeLocalResponse(rw.w)
	case err == errReset: //nolint:errorlint // sentinel
		s.setVerdict("reset")
		s.setMustAbort()
		return nil
	}
	s.resetHeader() // Caddy answers the error; nothing of the failed response may go with it
	if errors.Is(err, filters.ErrRequestBodyTooLarge) {
		return s.tooLarge(err)
	}
	s.logFailureOnce(err, "fail_closed: answering 500")
	return caddyhttp.Error(http.StatusInternalServerError, err)
}
