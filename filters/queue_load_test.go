package filters

import (
	"slices"
	"testing"
)

// A filter that registers a queue and enqueues on it while it configures
// gets proxy_on_queue_ready in its background instance once Load is done:
// started from inside Load, that instance would read the snapshot while
// Load writes it (a race -race reports).
func TestEnqueueWhileConfiguringIsDeliveredAfterLoad(t *testing.T) {
	for i := 0; i < 5; i++ {
		st := NewSharedState(StateLimits{})
		bgLog := newExchange()
		p := mustLoad(t, guest(t, `
  (func (export "proxy_on_configure") (param i32 i32) (result i32)
    (drop (call $proxy_register_shared_queue $"jobs" (i32.const 28)))
    (drop (call $proxy_enqueue_shared_queue (i32.load (i32.const 28)) $"boot"))
    (i32.const 1))
  (func (export "proxy_on_queue_ready") (param $root i32) (param $id i32)
    (call $log $"ready"))`), withState(st), withBackground(bgLog, &fakeEvents{}))
		waitForLog(t, bgLog, "ready", func(msgs []string) bool { return slices.Contains(msgs, "ready") })
		if p.StartMode() != "snapshot" {
			t.Fatalf("start mode %q: the race needs a snapshot", p.StartMode())
		}
	}
}
