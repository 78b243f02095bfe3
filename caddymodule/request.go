package caddymodule

import (
	"errors"
	"io"

	"github.com/sluice-edge/sluice/filters"
)

// requestBody streams the request body through the filter as the next
// handler reads it: each chunk read from the client goes to
// proxy_on_request_body, and the reader returns what the filter releases.
// While the filter pauses, chunks accumulate (up to max_body_size). Reads
// may come from another goroutine than the handler's (Caddy's reverse proxy
// sends the body from the transport's); the instance serializes the calls.
type requestBody struct {
	s       *stream
	src     io.ReadCloser
	ready   []byte // released by the filter, not yet read
	scratch []byte
	eof     bool
	err     error

	// Under fail_open, a failing filter is taken out of the stream: the
	// body handed to it but not released goes on as the client sent it.
	passthrough bool
	original    []byte
}

// Read implements io.Reader.
func (b *requestBody) Read(p []byte) (int, error) {
	for len(b.ready) == 0 {
		switch {
		case b.err != nil:
			return 0, b.err
		case b.eof:
			return 0, io.EOF
		case b.passthrough:
			return b.src.Read(p)
		}
		if b.scratch == nil {
			b.scratch = chunkBuffer(b.s.clientLength)
		}
		n, err := b.src.Read(b.scratch)
		endOfStream := err == io.EOF
		if err != nil && !endOfStream {
			b.err = err
			return 0, err
		}
		if n > 0 || endOfStream {
			b.filter(b.scratch[:n], endOfStream)
		}
		b.eof = b.eof || (endOfStream && !b.passthrough)
	}
	n := copy(p, b.ready)
	b.ready = b.ready[n:]
	return n, nil
}

// Close implements io.Closer.
func (b *requestBody) Close() error { return b.src.Close() }

// filter hands one chunk to the filter and acts on the outcome.
func (b *requestBody) filter(chunk []byte, endOfStream bool) {
	s := b.s
	if s.h.failOpen() {
		b.original = append(b.original, chunk...)
	}
	out, err := s.requestChunk(chunk, endOfStream)
	switch {
	case errors.Is(err, filters.ErrRequestBodyTooLarge):
		b.stop(err)
	case err != nil && s.h.failOpen():
		s.setFailure(err)
		s.logFailure(err, "fail_open: forwarding the rest of the request body without the filter")
		b.passthrough = true
		b.ready, b.original = b.original, nil
		if endOfStream {
			b.eof = true
		}
	case err != nil:
		s.setFailure(err)
		b.stop(err)
	case out == filters.Respond:
		b.stop(errLocalResponse)
	case out == filters.Reset:
		b.stop(errReset)
	case out == filters.Continue:
		b.ready = s.hc.TakeRequestBody()
		b.original = b.original[:0]
	}
}

// requestChunk hands one chunk of the request body to the filter, and the
// trailers after the last one. A pause at the end, with nothing left to wait
// for, is the filter's fault.
func (s *stream) requestChunk(chunk []byte, endOfStream bool) (filters.Outcome, error) {
	out, err := s.hc.RequestBody(chunk, endOfStream)
	if err == nil && endOfStream {
		out, err = s.requestTrailers(out)
	}
	if err == nil && out == filters.Pause && endOfStream {
		err = s.violation(errPausedAtEnd)
	}
	return out, err
}

// stop ends the body with err and interrupts the stream, so that the next
// handler's response is replaced when it returns.
func (b *requestBody) stop(err error) {
	b.err = err
	b.s.interrupt(err)
}
