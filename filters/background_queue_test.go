package filters

import (
	"slices"
	"testing"
)

// Queue notifications coalesce: ten items on one queue and one on another
// before the guest runs are one wake-up, one report per queue.
func TestQueueNotificationsCoalesce(t *testing.T) {
	bg := &background{pending: map[uint32]bool{}, wake: make(chan struct{}, 1)}
	for range 10 {
		bg.queueReady(7)
	}
	bg.queueReady(8)
	if len(bg.wake) != 1 {
		t.Errorf("%d wake-ups pending, want 1", len(bg.wake))
	}
	ids := bg.takePending()
	slices.Sort(ids)
	if !slices.Equal(ids, []uint32{7, 8}) {
		t.Errorf("pending %v, want [7 8]", ids)
	}
	if ids := bg.takePending(); len(ids) != 0 {
		t.Errorf("pending again: %v", ids)
	}
}
