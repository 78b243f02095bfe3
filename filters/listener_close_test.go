package filters

import (
	"context"
	"runtime"
	"sync"
	"testing"
	"time"
	"weak"

	"github.com/sluice-edge/sluice/abi"
)

// blockingLog blocks the guest's first proxy_log until released, after
// telling the test it got there.
type blockingLog struct {
	*fakeExchange
	entered, release chan struct{}
	once             sync.Once
}

func (b *blockingLog) GuestLog(level abi.LogLevel, msg []byte) {
	b.once.Do(func() {
		b.entered <- struct{}{}
		<-b.release
	})
	b.fakeExchange.GuestLog(level, msg)
}

// blockedRequest runs proxy_on_request_headers in a new instance of p on
// another goroutine and returns once the guest's first proxy_log holds it;
// closing ex.release lets it go on, and done receives the call's error.
func blockedRequest(t *testing.T, p *Plugin) (inst *Instance, ex *blockingLog, done chan error) {
	t.Helper()
	ex = &blockingLog{fakeExchange: newExchange(), entered: make(chan struct{}), release: make(chan struct{})}
	inst, err := p.NewInstance(context.Background(), ex)
	if err != nil {
		t.Fatal(err)
	}
	hc, err := inst.NewHTTPContext(context.Background(), ex)
	if err != nil {
		t.Fatal(err)
	}
	done = make(chan error)
	go func() { _, err := hc.RequestHeaders(0, true); done <- err }()
	<-ex.entered
	return inst, ex, done
}

// A request instance still running when its plugin closes may register a
// queue after Close removed the plugin from the store's listeners: the
// store must not keep the closed plugin (it lives as long as the process).
func TestClosedPluginIsNoQueueListener(t *testing.T) {
	for _, late := range []bool{false, true} {
		st := NewSharedState(StateLimits{})
		body := `
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (call $log $"before")
    (drop (call $proxy_register_shared_queue $"jobs" (i32.const 28)))
    (i32.const 0))`
		p, err := Load(context.Background(), config(guest(t, body), withState(st)))
		if err != nil {
			t.Fatal(err)
		}
		wp := weak.Make(p)
		// The guest is in proxy_log, before it registers the queue.
		inst, ex, done := blockedRequest(t, p)
		if late {
			_ = p.Close(context.Background())
			close(ex.release)
			t.Logf("request: %v", <-done)
		} else {
			close(ex.release)
			t.Logf("request: %v", <-done)
			_ = p.Close(context.Background())
		}
		inst.Close(context.Background())
		p, inst = nil, nil
		for range 5 {
			runtime.GC()
			time.Sleep(10 * time.Millisecond)
		}
		_, qerr := st.store.ResolveQueue("vm-a", "jobs")
		if wp.Value() != nil {
			t.Errorf("late=%v: the closed plugin is still reachable (queue registered after Close: %v)", late, qerr == nil)
		}
		runtime.KeepAlive(st)
		st = nil
		runtime.GC()
		runtime.GC()
		t.Logf("late=%v: reachable once the store is dropped too: %v", late, wp.Value() != nil)
	}
}
