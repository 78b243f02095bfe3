package caddymodule

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/sluice-edge/sluice/abi"
)

func TestSanitizeLogTextEscapesWhatCouldForgeOrHideLines(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"plain text", "plain text"},
		{"line\n", "line"},
		{"two\n\n", `two\u{a}`},
		{"a\nforged=line", `a\u{a}forged=line`},
		{"cr\r\n", `cr\u{d}`},
		{"\x1b[31mred\x1b[0m", `\u{1b}[31mred\u{1b}[0m`},
		{"nul\x00byte", `nul\u{0}byte`},
		{"tab\there", `tab\u{9}here`},
		{"del\x7f", `del\u{7f}`},
		{"c1 \u0085 next line", `c1 \u{85} next line`},
		{"bad \xff\xfe utf8", `bad \xff\xfe utf8`},
		{"cut \xe2\x82", `cut \xe2\x82`},
		{"café ✓ 日本", "café ✓ 日本"},
		{"literal \ufffd stays", "literal \ufffd stays"},
		{"", ""},
	} {
		if got := sanitizeLogText([]byte(tt.in)); got != tt.want {
			t.Errorf("sanitizeLogText(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func observed(level zapcore.Level) (func() *zap.Logger, drainedLogs) {
	core, logs := observer.New(level)
	logger := zap.New(core)
	return func() *zap.Logger { return logger }, drainedLogs{logs}
}

// drainedLogs reads observed logs once the guest log writer has written
// every line queued so far.
type drainedLogs struct{ logs *observer.ObservedLogs }

func (d drainedLogs) All() []observer.LoggedEntry {
	drainGuestLogs()
	return d.logs.All()
}

func (d drainedLogs) Len() int {
	drainGuestLogs()
	return d.logs.Len()
}

func (d drainedLogs) FilterMessage(msg string) *observer.ObservedLogs {
	drainGuestLogs()
	return d.logs.FilterMessage(msg)
}

// drainGuestLogs waits until the guest log queue is empty.
func drainGuestLogs() { guestLogs.drain(5 * time.Second) }

// blockingCore is a log destination that blocks every write until
// released, like a stalled disk or pipe.
type blockingCore struct {
	zapcore.Core
	release chan struct{}
}

func (b blockingCore) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	return ce.AddCore(e, b)
}

func (b blockingCore) Write(e zapcore.Entry, f []zapcore.Field) error {
	<-b.release
	return b.Core.Write(e, f)
}

// A stalled log destination does not hold the filter: guest lines queue,
// and are written once it recovers.
func TestStalledLogDestinationDoesNotBlockTheGuest(t *testing.T) {
	core, logs := observer.New(zap.DebugLevel)
	stalled := blockingCore{core, make(chan struct{})}
	logger := zap.New(stalled)
	l := newGuestLogLimiter()
	done := make(chan struct{})
	go func() {
		for range 10 {
			l.log(func() *zap.Logger { return logger }, abi.LogInfo, []byte("queued"), "proxy_log")
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("logging blocked on a stalled destination")
	}
	close(stalled.release)
	if n := (drainedLogs{logs}).FilterMessage("queued").Len(); n != 10 {
		t.Errorf("%d of 10 lines written once the destination recovered", n)
	}
}

func TestGuestLogTruncatesAt4KiB(t *testing.T) {
	for _, tt := range []struct {
		size      int
		truncated bool
	}{
		{maxGuestLogBytes - 1, false},
		{maxGuestLogBytes, false},
		{maxGuestLogBytes + 1, true},
		{100 << 20, true}, // a 100 MB message (H33)
	} {
		logger, logs := observed(zap.DebugLevel)
		l := newGuestLogLimiter()
		l.log(logger, abi.LogWarn, []byte(strings.Repeat("m", tt.size)), "proxy_log")
		entries := logs.All()
		if len(entries) != 1 {
			t.Fatalf("size %d: %d entries", tt.size, len(entries))
		}
		e := entries[0]
		if want := min(tt.size, maxGuestLogBytes); len(e.Message) != want {
			t.Errorf("size %d: message of %d bytes, want %d", tt.size, len(e.Message), want)
		}
		if got, _ := e.ContextMap()["truncated"].(bool); got != tt.truncated {
			t.Errorf("size %d: truncated=%v, want %v", tt.size, got, tt.truncated)
		}
		if e.Level != zap.WarnLevel || e.ContextMap()["source"] != "proxy_log" || e.ContextMap()["guest_level"] != "warn" {
			t.Errorf("entry %v %v", e.Level, e.ContextMap())
		}
	}
}

func TestGuestLogRateLimitDropsPastTheBurstAndReportsIt(t *testing.T) {
	logger, logs := observed(zap.DebugLevel)
	l := newGuestLogLimiter()
	const sent = 3 * guestLogBurst
	for range sent {
		l.log(logger, abi.LogInfo, []byte("flood"), "proxy_log")
	}
	logged := logs.Len()
	// The burst, plus the few tokens refilled while the loop ran.
	if logged < guestLogBurst || logged > guestLogBurst+guestLogRate/10 {
		t.Fatalf("%d of %d lines logged, want about the burst of %d", logged, sent, guestLogBurst)
	}
	// The burst's lines come before any drop; a line a refilled token lets
	// through later in the loop (a slow machine) may report drops.
	for _, e := range logs.All()[:guestLogBurst] {
		if _, ok := e.ContextMap()["dropped_before"]; ok {
			t.Fatal("dropped_before on a line logged before anything was dropped")
		}
	}
	time.Sleep(2 * time.Second / guestLogRate) // a token comes back
	l.log(logger, abi.LogInfo, []byte("after"), "proxy_log")
	after := logs.FilterMessage("after").All()
	if len(after) != 1 {
		t.Fatalf("the line after the pause was not logged")
	}
	if got := after[0].ContextMap()["dropped_before"]; got != int64(sent-logged) {
		t.Errorf("dropped_before = %v, want %d", got, sent-logged)
	}
	time.Sleep(2 * time.Second / guestLogRate)
	l.log(logger, abi.LogInfo, []byte("later"), "proxy_log")
	if later := logs.FilterMessage("later").All(); len(later) != 1 || later[0].ContextMap()["dropped_before"] != nil {
		t.Errorf("the drop count was reported twice: %v", later)
	}
}

// Lines below the logger's level are skipped before the limiter: they
// neither spend its budget nor count as dropped.
func TestGuestLogBelowTheLevelCostsNothing(t *testing.T) {
	logger, logs := observed(zap.InfoLevel)
	l := newGuestLogLimiter()
	for range 2 * guestLogBurst {
		l.log(logger, abi.LogDebug, []byte("debug"), "proxy_log")
	}
	if logs.Len() != 0 || l.dropped.Load() != 0 {
		t.Errorf("%d logged, %d dropped", logs.Len(), l.dropped.Load())
	}
	l.log(logger, abi.LogInfo, []byte("info"), "proxy_log")
	if logs.Len() != 1 || logs.All()[0].ContextMap()["dropped_before"] != nil {
		t.Errorf("info line: %v", logs.All())
	}
}

func TestLogLevelsMapBetweenProxyWasmAndZap(t *testing.T) {
	for level, want := range map[abi.LogLevel]zapcore.Level{
		abi.LogTrace: zap.DebugLevel, abi.LogDebug: zap.DebugLevel, abi.LogInfo: zap.InfoLevel,
		abi.LogWarn: zap.WarnLevel, abi.LogError: zap.ErrorLevel, abi.LogCritical: zap.ErrorLevel,
	} {
		if got := zapLevel(level); got != want {
			t.Errorf("zapLevel(%v) = %v, want %v", level, got, want)
		}
	}
	for level, want := range map[zapcore.Level]abi.LogLevel{
		zap.DebugLevel: abi.LogTrace, zap.InfoLevel: abi.LogInfo, zap.WarnLevel: abi.LogWarn,
		zap.ErrorLevel: abi.LogError, zap.FatalLevel: abi.LogError,
	} {
		core, _ := observer.New(level)
		if got := guestLogLevel(zap.New(core)); got != want {
			t.Errorf("guestLogLevel(%v) = %v, want %v", level, got, want)
		}
	}
}

// What a filter logs, or writes to stdout and stderr, reaches the log
// escaped, a line at a time, with the filter's name.
func TestGuestLogsAndOutputReachTheLogEscaped(t *testing.T) {
	g := newGuest()
	g.fn(`(func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (drop (call $log (i32.const 2) ` + g.str("hello \x1b[31mred\n") + `))
    (drop (call $log (i32.const 5) ` + g.str("bad \xff") + `))
    (call $write (i32.const 1) ` + g.str("line one\nline") + `)
    (call $write (i32.const 1) ` + g.str(" two\n") + `)
    (call $write (i32.const 2) ` + g.str("oops\x07\n") + `)
    (i32.const 0))`)
	h := provisionGuest(t, g, "")
	if _, err, p := h.serve(newRequest(http.MethodGet, "/", ""), &nextHandler{}); err != nil || p != nil {
		t.Fatalf("err %v, panic %v", err, p)
	}
	for _, tt := range []struct {
		msg    string
		level  zapcore.Level
		source string
	}{
		{`hello \u{1b}[31mred`, zap.InfoLevel, "proxy_log"},
		{`bad \xff`, zap.ErrorLevel, "proxy_log"},
		{"line one", zap.InfoLevel, "stdout"},
		{"line two", zap.InfoLevel, "stdout"},
		{`oops\u{7}`, zap.ErrorLevel, "stderr"},
	} {
		entries := h.logged(tt.msg)
		if len(entries) != 1 {
			t.Errorf("%q logged %d times; all: %v", tt.msg, len(entries), messages(h.logs))
			continue
		}
		e := entries[0]
		if e.Level != tt.level || e.ContextMap()["source"] != tt.source || e.ContextMap()["filter"] != "test" {
			t.Errorf("%q: level %v fields %v", tt.msg, e.Level, e.ContextMap())
		}
	}
}

func messages(logs interface{ All() []observer.LoggedEntry }) []string {
	var out []string
	for _, e := range logs.All() {
		out = append(out, e.Message)
	}
	return out
}
