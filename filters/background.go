package filters

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/sluice-edge/sluice/abi"
)

// The background instance: request instances live as long as their
// request, so a filter's root context gets one long-lived instance of its
// own for what happens between requests: proxy_on_tick on the timer the
// filter set (proxy_set_tick_period_milliseconds), proxy_on_queue_ready when
// an item arrives on a queue it registered, and the answers to the outbound
// calls it makes from those. It starts when the filter loads if it set a
// timer or registered a queue then, or with the first item on its queues,
// and stops when the plugin closes. It has the same limits as any instance;
// one that fails is replaced, after a pause that grows while it keeps
// failing.

// MinTickPeriod is the shortest timer period a filter gets; a shorter one
// is raised to it.
const MinTickPeriod = 10 * time.Millisecond

// Restart delays of a background instance that keeps failing.
const (
	backgroundRestartMin = 100 * time.Millisecond
	backgroundRestartMax = time.Minute
)

type background struct {
	p      *Plugin
	ctx    context.Context // ends when the plugin closes
	cancel context.CancelFunc
	done   chan struct{}

	mu      sync.Mutex
	pending map[uint32]bool // queues with items since the last proxy_on_queue_ready
	wake    chan struct{}   // something is pending

	// Owned by the run goroutine.
	inst   *Instance
	ticker *time.Ticker
}

// startBackground starts the plugin's background instance unless it runs
// already, and returns it; nil when the plugin is still loading (its
// snapshot is not taken yet), closed, or has no callback it would ever
// call.
func (p *Plugin) startBackground() *background {
	p.bgMu.Lock()
	defer p.bgMu.Unlock()
	if p.bg != nil || p.closed || !p.loaded || !(p.exported[abi.OnTick] || p.exported[abi.OnQueueReady]) {
		return p.bg
	}
	ctx, cancel := context.WithCancel(context.Background())
	p.bg = &background{
		p: p, ctx: ctx, cancel: cancel, done: make(chan struct{}),
		pending: map[uint32]bool{}, wake: make(chan struct{}, 1),
	}
	go p.bg.run()
	return p.bg
}

// stopBackground stops the background instance and waits for it.
func (p *Plugin) stopBackground() {
	p.bgMu.Lock()
	p.closed = true
	bg := p.bg
	p.bgMu.Unlock()
	if bg != nil {
		bg.cancel()
		<-bg.done
	}
}

// queueReady records that queue id has an item for proxy_on_queue_ready.
// Notifications coalesce: a queue that gets ten items before the guest
// runs is reported once, and the guest drains it (as SDKs do).
func (bg *background) queueReady(id uint32) {
	bg.mu.Lock()
	bg.pending[id] = true
	bg.mu.Unlock()
	select {
	case bg.wake <- struct{}{}:
	default:
	}
}

func (bg *background) takePending() []uint32 {
	bg.mu.Lock()
	defer bg.mu.Unlock()
	ids := make([]uint32, 0, len(bg.pending))
	for id := range bg.pending {
		ids = append(ids, id)
	}
	clear(bg.pending)
	return ids
}

// setTickPeriod (re)sets the timer; 0 stops it. It runs on the run
// goroutine, inside a guest call.
func (bg *background) setTickPeriod(d time.Duration) {
	if d > 0 {
		d = max(d, MinTickPeriod)
	}
	switch {
	case d == 0 && bg.ticker != nil:
		bg.ticker.Stop()
	case d > 0 && bg.ticker == nil:
		bg.ticker = time.NewTicker(d)
	case d > 0:
		bg.ticker.Reset(d)
	}
}

// run starts the instance and serves its events until the plugin closes.
func (bg *background) run() {
	defer close(bg.done)
	defer bg.stopInstance()
	delay := backgroundRestartMin
	for bg.ctx.Err() == nil {
		started := time.Now()
		err := bg.serve()
		if bg.ctx.Err() != nil {
			return
		}
		bg.p.backgroundFailed(err)
		bg.stopInstance()
		if time.Since(started) > backgroundRestartMax {
			delay = backgroundRestartMin // it had been working: no longer "keeps failing"
		}
		select {
		case <-bg.ctx.Done():
			return
		case <-time.After(delay):
		}
		delay = min(2*delay, backgroundRestartMax)
	}
}

// serve starts an instance and runs its callbacks until one fails or the
// plugin closes. After each callback the instance rests as long as the
// callback ran, so that a filter's background work takes at most half a
// core, whatever its timer says.
func (bg *background) serve() error {
	if err := bg.startInstance(); err != nil {
		return err
	}
	for {
		var tick <-chan time.Time
		if bg.ticker != nil {
			tick = bg.ticker.C
		}
		var run func() error
		select {
		case <-bg.ctx.Done():
			return nil
		case <-tick:
			run = func() error { return bg.call(abi.OnTick) }
		case <-bg.wake:
			run = func() error {
				for _, id := range bg.takePending() {
					if err := bg.call(abi.OnQueueReady, uint64(id)); err != nil {
						return err
					}
				}
				return nil
			}
		case r := <-bg.inst.root.calls.results:
			run = func() error { return bg.deliver(r) }
		}
		began := time.Now()
		if err := run(); err != nil {
			return err
		}
		select {
		case <-bg.ctx.Done():
			return nil
		case <-time.After(time.Since(began)):
		}
	}
}

// startInstance makes the background instance: restored from the snapshot,
// with the timer the filter set while it loaded, or started fresh, with
// the timer its own proxy_on_configure set.
func (bg *background) startInstance() error {
	p := bg.p
	inst, err := p.newInstanceFor(bg.ctx, p.backgroundLog(), roleBackground)
	if err != nil {
		return err
	}
	bg.inst = inst
	root := inst.root
	if root.scope != nil {
		root.scope.end() // the start-up's; the background's lasts
	}
	root.scope = newCallScope(bg.ctx, inst.guest, root)
	period := time.Duration(p.tickPeriod.Load())
	if root.tickSet {
		period = root.tick
	}
	bg.setTickPeriod(period)
	root.bg = bg
	return nil
}

func (bg *background) stopInstance() {
	if bg.ticker != nil {
		bg.ticker.Stop()
		bg.ticker = nil
	}
	if bg.inst != nil {
		bg.inst.root.calls.end()
		bg.inst.Close(context.Background())
		bg.inst = nil
	}
}

// call runs a root-context callback: the context's id first, then args.
func (bg *background) call(cb abi.Callback, args ...uint64) error {
	inst := bg.inst
	inst.mu.Lock()
	defer inst.mu.Unlock()
	if inst.err != nil {
		return inst.err
	}
	_, err := inst.callOr(inst.root.scope, cb, 0, append([]uint64{rootContextID}, args...)...)
	return err
}

// deliver hands an outbound call's answer to proxy_on_http_call_response.
func (bg *background) deliver(r callResult) error {
	inst := bg.inst
	inst.mu.Lock()
	defer inst.mu.Unlock()
	if inst.err != nil {
		return inst.err
	}
	return inst.root.calls.deliver(inst, inst.root.scope, r)
}

// backgroundLog is where the background instance's logs go.
func (p *Plugin) backgroundLog() LogSink {
	if p.cfg.BackgroundLog != nil {
		return p.cfg.BackgroundLog
	}
	return discardLog{}
}

// backgroundFailed reports a failed background instance to the embedder.
func (p *Plugin) backgroundFailed(err error) {
	if p.cfg.Events != nil {
		p.cfg.Events.BackgroundFailed(fmt.Errorf("wasm filter %q: background instance: %w", p.cfg.Name, err))
	}
}
