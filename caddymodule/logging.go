package caddymodule

import (
	"bytes"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode"
	"unicode/utf8"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"golang.org/x/time/rate"

	"github.com/sluice-edge/sluice/abi"
)

// Guest logs are untrusted input: each filter may log guestLogRate lines per
// second (bursts of guestLogBurst), each cut to maxGuestLogBytes, with
// control characters and invalid UTF-8 escaped, so that no filter can flood
// the log, forge log lines or hide text from a terminal.
const (
	guestLogRate     = 100
	guestLogBurst    = 200
	maxGuestLogBytes = 4 << 10
)

// guestLogLimiter rate-limits one filter's guest logs and counts what it
// drops.
type guestLogLimiter struct {
	limiter *rate.Limiter
	dropped atomic.Int64
}

func newGuestLogLimiter() *guestLogLimiter {
	return &guestLogLimiter{limiter: rate.NewLimiter(guestLogRate, guestLogBurst)}
}

// log writes one guest message through the request's logger.
func (l *guestLogLimiter) log(logger func() *zap.Logger, level abi.LogLevel, msg []byte, source string) {
	zl := zapLevel(level)
	base := logger()
	if !base.Core().Enabled(zl) {
		return
	}
	if !l.limiter.Allow() {
		l.dropped.Add(1)
		return
	}
	fields := []zap.Field{zap.String("source", source), zap.String("guest_level", level.String())}
	reported := l.dropped.Swap(0)
	if reported > 0 {
		fields = append(fields, zap.Int64("dropped_before", reported))
	}
	truncated := len(msg) > maxGuestLogBytes
	if truncated {
		msg = msg[:maxGuestLogBytes]
		fields = append(fields, zap.Bool("truncated", true))
	}
	if ce := base.Check(zl, sanitizeLogText(msg)); ce != nil && !guestLogs.enqueue(ce, fields) {
		l.dropped.Add(1 + reported) // this line, and the drops it was to report
	}
}

// guestLogQueueSize bounds the guest log lines waiting to be written.
const guestLogQueueSize = 4096

// guestLogs carries guest log lines to one writer goroutine, so that a slow
// log destination (a full disk, a stalled pipe or network sink) never holds
// a request, nor the instance lock its guest call holds: logging is a
// channel send. A line that finds the queue full is dropped and counted as
// the rate limit's drops are. Each line keeps the time it was logged.
var guestLogs guestLogQueue

type guestLogQueue struct {
	start   sync.Once
	lines   chan queuedLine
	pending atomic.Int64 // queued and not yet written
}

type queuedLine struct {
	ce     *zapcore.CheckedEntry
	fields []zap.Field
}

// enqueue hands a checked entry to the writer; false when the queue is full.
func (q *guestLogQueue) enqueue(ce *zapcore.CheckedEntry, fields []zap.Field) bool {
	q.start.Do(func() {
		q.lines = make(chan queuedLine, guestLogQueueSize)
		go q.write()
	})
	q.pending.Add(1)
	select {
	case q.lines <- queuedLine{ce, fields}:
		return true
	default:
		q.pending.Add(-1)
		return false
	}
}

// drain waits, at most d, until every line queued so far is written:
// Caddy closes a config's log writers after its handlers' cleanup.
func (q *guestLogQueue) drain(d time.Duration) {
	for deadline := time.Now().Add(d); q.pending.Load() > 0 && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
}

// write writes queued lines for as long as the process lives.
func (q *guestLogQueue) write() {
	for line := range q.lines {
		line.ce.Write(line.fields...)
		q.pending.Add(-1)
	}
}

// sanitizeLogText escapes control characters and invalid UTF-8 as \xNN or
// \u{...}, and drops a trailing newline (fd_write lines end with one).
func sanitizeLogText(msg []byte) string {
	s := strings.TrimSuffix(string(msg), "\n")
	clean := true
	for _, r := range s {
		if r == utf8.RuneError || unicode.IsControl(r) {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size <= 1:
			b.WriteString(`\x`)
			b.WriteByte("0123456789abcdef"[s[i]>>4])
			b.WriteByte("0123456789abcdef"[s[i]&0xf])
		case unicode.IsControl(r):
			fmt.Fprintf(&b, `\u{%x}`, r)
		default:
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	return b.String()
}

// zapLevel maps a Proxy-Wasm log level onto zap's. Critical is logged as
// error: zap's higher levels panic or exit.
func zapLevel(level abi.LogLevel) zapcore.Level {
	switch level {
	case abi.LogTrace, abi.LogDebug:
		return zap.DebugLevel
	case abi.LogInfo:
		return zap.InfoLevel
	case abi.LogWarn:
		return zap.WarnLevel
	}
	return zap.ErrorLevel
}

// guestLogLevel is the least Proxy-Wasm level the logger records, so that
// filters skip building messages nobody keeps.
func guestLogLevel(logger *zap.Logger) abi.LogLevel {
	core := logger.Core()
	switch {
	case core.Enabled(zap.DebugLevel):
		return abi.LogTrace
	case core.Enabled(zap.InfoLevel):
		return abi.LogInfo
	case core.Enabled(zap.WarnLevel):
		return abi.LogWarn
	}
	return abi.LogError
}

// loadLog logs what a filter says while it is being loaded.
type loadLog struct{ logger *zap.Logger }

func (l *loadLog) GuestLog(level abi.LogLevel, msg []byte) {
	if ce := l.logger.Check(zapLevel(level), sanitizeLogText(msg[:min(len(msg), maxGuestLogBytes)])); ce != nil {
		ce.Write(zap.String("source", "proxy_log"), zap.String("phase", "load"))
	}
}

func (l *loadLog) GuestOutput(fd uint32, p []byte) {
	level, _ := outputLevel(fd)
	l.GuestLog(level, p)
}

// outputLevel is the log level and source of what a guest writes to fd:
// stderr is an error, stdout information.
func outputLevel(fd uint32) (abi.LogLevel, string) {
	if fd == 2 {
		return abi.LogError, "stderr"
	}
	return abi.LogInfo, "stdout"
}

func (l *loadLog) LogLevel() abi.LogLevel { return guestLogLevel(l.logger) }

// backgroundLog logs what a filter's background instance says (its timer,
// queues and outbound calls), rate-limited like a request's guest logs.
type backgroundLog struct {
	logger  *zap.Logger
	limiter *guestLogLimiter
}

func newBackgroundLog(logger *zap.Logger) *backgroundLog {
	return &backgroundLog{logger: logger.With(zap.String("phase", "background")), limiter: newGuestLogLimiter()}
}

func (l *backgroundLog) GuestLog(level abi.LogLevel, msg []byte) {
	l.limiter.log(func() *zap.Logger { return l.logger }, level, msg, "proxy_log")
}

func (l *backgroundLog) GuestOutput(fd uint32, p []byte) {
	level, source := outputLevel(fd)
	l.limiter.log(func() *zap.Logger { return l.logger }, level, bytes.TrimSuffix(p, []byte("\n")), source)
}

func (l *backgroundLog) LogLevel() abi.LogLevel { return guestLogLevel(l.logger) }

// pluginEvents logs what happens to a filter outside its requests' calls.
// Failed outbound calls are logged at most once a second: an upstream that
// is down fails every call.
type pluginEvents struct {
	logger *zap.Logger
	calls  *rate.Limiter
}

func newPluginEvents(logger *zap.Logger) *pluginEvents {
	return &pluginEvents{logger: logger, calls: rate.NewLimiter(1, 1)}
}

func (e *pluginEvents) BackgroundFailed(err error) {
	e.logger.Error("background instance failed; restarting it", zap.Error(err))
}

func (e *pluginEvents) CallFailed(err error) {
	if e.calls.Allow() {
		e.logger.Warn("outbound call failed", zap.Error(err))
	}
}

// lineBuffer collects a guest's output stream into lines, bounded by
// maxGuestLogBytes: a longer line is logged in pieces.
type lineBuffer struct{ pending []byte }

func (b *lineBuffer) write(p []byte, emit func(line []byte)) {
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			room := maxGuestLogBytes - len(b.pending)
			b.pending = append(b.pending, p[:min(len(p), room)]...)
			if len(b.pending) >= maxGuestLogBytes {
				b.flush(emit)
			}
			if len(p) <= room {
				return
			}
			p = p[room:]
			continue
		}
		b.pending = append(b.pending, p[:i]...)
		b.flush(emit)
		p = p[i+1:]
	}
}

func (b *lineBuffer) flush(emit func(line []byte)) {
	if len(b.pending) > 0 {
		emit(b.pending)
		b.pending = b.pending[:0]
	}
}
