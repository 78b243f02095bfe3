package filters

import (
	"context"
	"runtime"
	"slices"
	"sync"
)

// Isolation modes: how requests map to instances.
const (
	// IsolationRequest gives every request a fresh instance of its own,
	// discarded when the request ends: nothing one request does reaches
	// another. The default.
	IsolationRequest = "request"
	// IsolationShared serves many requests, each in an HTTP context of its
	// own, from a few long-lived instances, as Envoy does: for trusted
	// filters that keep state in their memory between requests. A failure
	// (trap, timeout) ends the instance and every request in it at the
	// time; a new one takes its place.
	IsolationShared = "shared"
)

// Acquire returns the instance a request runs in, which the request gives
// back with Release when it is done: a fresh instance (IsolationRequest) or
// one of the plugin's shared instances. log receives what a fresh instance
// logs while it starts.
func (p *Plugin) Acquire(ctx context.Context, log LogSink) (*Instance, error) {
	if p.shared == nil {
		return p.NewInstance(ctx, log)
	}
	return p.shared.acquire()
}

// Release gives back an instance Acquire returned: a request's own is
// closed, a shared one serves one request fewer.
func (inst *Instance) Release() {
	if inst.slot == nil {
		inst.Close(context.Background())
		return
	}
	inst.plugin.shared.release(inst.slot)
}

// sharedPool is the long-lived instances of a plugin in IsolationShared:
// one per core by default, each request going to the one serving the fewest
// requests at the time. An instance that failed is retired: closed once
// its last request lets go, and replaced for the next request.
type sharedPool struct {
	p      *Plugin
	ctx    context.Context // the instances' lifetime: the plugin's
	cancel context.CancelFunc

	mu     sync.Mutex
	slots  []*sharedInstance
	closed bool
}

type sharedInstance struct {
	inst    *Instance
	users   int
	retired bool
}

func newSharedPool(p *Plugin, size int) *sharedPool {
	if size <= 0 {
		size = runtime.GOMAXPROCS(0)
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &sharedPool{p: p, ctx: ctx, cancel: cancel, slots: make([]*sharedInstance, size)}
}

func (sp *sharedPool) acquire() (*Instance, error) {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	if sp.closed {
		return nil, errPluginClosed
	}
	// An empty or failed slot gets a new instance first; otherwise the
	// least busy instance serves.
	var s *sharedInstance
	if free := slices.IndexFunc(sp.slots, unusable); free < 0 {
		s = sp.leastBusy()
	} else {
		if old := sp.slots[free]; old != nil {
			sp.retire(old)
		}
		// A restored instance takes microseconds; a fresh one runs the
		// filter's start-up, which the other requests need not wait for
		// but rarely do: it happens once per instance.
		inst, err := sp.p.newInstanceFor(sp.ctx, sp.p.backgroundLog(), roleShared)
		if err != nil {
			sp.slots[free] = nil
			// A healthy instance serves the request rather than the
			// empty slot refusing it: a full memory budget, say, would
			// otherwise refuse every request while it lasts.
			if s = sp.leastBusy(); s == nil {
				return nil, err
			}
		} else {
			inst.origin = OriginShared
			s = &sharedInstance{inst: inst}
			inst.slot = s
			sp.slots[free] = s
		}
	}
	s.users++
	return s.inst, nil
}

// unusable reports whether a slot needs a new instance: it has none, or
// its instance failed.
func unusable(s *sharedInstance) bool { return s == nil || s.inst.failed.Load() }

// leastBusy is the healthy instance serving the fewest requests, or nil.
// The caller holds sp.mu.
func (sp *sharedPool) leastBusy() *sharedInstance {
	var best *sharedInstance
	for _, s := range sp.slots {
		if !unusable(s) && (best == nil || s.users < best.users) {
			best = s
		}
	}
	return best
}

func (sp *sharedPool) release(s *sharedInstance) {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	s.users--
	if s.retired && s.users == 0 {
		s.inst.Close(context.Background())
	}
}

// retire takes s out of service; it closes once unused. The caller holds
// sp.mu.
func (sp *sharedPool) retire(s *sharedInstance) {
	s.retired = true
	if s.users == 0 {
		s.inst.Close(context.Background())
	}
}

// close retires every instance; the requests in them fail their next call.
func (sp *sharedPool) close() {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	sp.closed = true
	sp.cancel()
	for i, s := range sp.slots {
		if s != nil {
			s.retired = true
			s.inst.Close(context.Background())
			sp.slots[i] = nil
		}
	}
}
