package filters

import (
	"errors"
	"slices"

	"github.com/sluice-edge/sluice/abi"
	"github.com/sluice-edge/sluice/filters/internal/state"
)

// SharedState is what filters keep beyond one instance: shared data, shared
// queues and the metrics they define. Request instances are discarded, so
// the host holds it, per namespace (a filter's vm_id: one tenant's never
// reaches another's). It is safe for concurrent use.
type SharedState struct{ store *state.Store }

// StateLimits bound what one namespace may keep; zero fields take the
// defaults (state.DefaultLimits).
type StateLimits = state.Limits

// NewSharedState returns an empty SharedState with limits l.
func NewSharedState(l StateLimits) *SharedState { return &SharedState{store: state.NewStore(l)} }

// DefaultSharedState is the state of plugins whose Config names none: one
// per process, so that it outlives a config reload.
var DefaultSharedState = NewSharedState(StateLimits{})

// GuestMetric is one metric a filter defined, as it stands now.
type GuestMetric = state.MetricSnapshot

// The types of a GuestMetric.
const (
	GuestCounter   = state.Counter
	GuestGauge     = state.Gauge
	GuestHistogram = state.Histogram
)

// Metrics returns every metric filters defined, in a stable order; Owner is
// the filter's namespace and name joined by NUL (see MetricOwner).
func (s *SharedState) Metrics() []GuestMetric { return s.store.Metrics() }

// MetricOwner is the owner of the metrics a filter named name defines in
// namespace ns.
func MetricOwner(ns, name string) string { return ns + "\x00" + name }

// namespace is the tenant namespace of the plugin's shared data and queues:
// its vm_id, or its name when it has none.
func (p *Plugin) namespace() string {
	if p.cfg.VMID != "" {
		return p.cfg.VMID
	}
	return p.cfg.Name
}

func (p *Plugin) sharedState() *SharedState {
	if p.cfg.SharedState != nil {
		return p.cfg.SharedState
	}
	return DefaultSharedState
}

// pluginServices implements the parts of abi.Services every context of a
// plugin shares: shared data and queues in the plugin's namespace, its
// metrics, and the foreign functions.
type pluginServices struct{ p *Plugin }

// GetSharedData implements abi.Services.
func (s pluginServices) GetSharedData(key string) ([]byte, uint32, abi.Status) {
	v, cas, err := s.p.sharedState().store.GetData(s.p.namespace(), key)
	return v, cas, stateStatus(err)
}

// SetSharedData implements abi.Services.
func (s pluginServices) SetSharedData(key string, value []byte, cas uint32) abi.Status {
	return stateStatus(s.p.sharedState().store.SetData(s.p.namespace(), key, value, cas))
}

// RegisterSharedQueue implements abi.Services. The plugin listens on the
// queue: its background instance gets proxy_on_queue_ready.
func (s pluginServices) RegisterSharedQueue(name string) (uint32, abi.Status) {
	id, err := s.p.sharedState().store.RegisterQueue(s.p.namespace(), name, s.p)
	if err == nil {
		s.p.registeredQueue.Store(true)
		if s.p.isClosed() {
			// An instance outliving its plugin's Close registered after
			// Close removed the plugin from the store: undo it, or the
			// process-wide store would keep the closed plugin for good.
			s.p.sharedState().store.RemoveListener(s.p)
		}
	}
	return id, stateStatus(err)
}

// ResolveSharedQueue implements abi.Services: only the plugin's own
// namespace resolves ("" names it too); another VM's queues do not exist
// for it, as Envoy would let them.
func (s pluginServices) ResolveSharedQueue(vmID, name string) (uint32, abi.Status) {
	if vmID != "" && vmID != s.p.namespace() {
		return 0, abi.StatusNotFound
	}
	id, err := s.p.sharedState().store.ResolveQueue(s.p.namespace(), name)
	return id, stateStatus(err)
}

// EnqueueSharedQueue implements abi.Services.
func (s pluginServices) EnqueueSharedQueue(id uint32, value []byte) abi.Status {
	return stateStatus(s.p.sharedState().store.Enqueue(s.p.namespace(), id, value))
}

// DequeueSharedQueue implements abi.Services.
func (s pluginServices) DequeueSharedQueue(id uint32) ([]byte, abi.Status) {
	v, err := s.p.sharedState().store.Dequeue(s.p.namespace(), id)
	return v, stateStatus(err)
}

// DefineMetric implements abi.Services.
func (s pluginServices) DefineMetric(t abi.MetricType, name string) (uint32, abi.Status) {
	id, err := s.p.sharedState().store.DefineMetric(s.p.metricOwner(), state.MetricType(t), name)
	return id, stateStatus(err)
}

// IncrementMetric implements abi.Services.
func (s pluginServices) IncrementMetric(id uint32, delta int64) abi.Status {
	return stateStatus(s.p.sharedState().store.IncrementMetric(s.p.metricOwner(), id, delta))
}

// RecordMetric implements abi.Services.
func (s pluginServices) RecordMetric(id uint32, value uint64) abi.Status {
	return stateStatus(s.p.sharedState().store.RecordMetric(s.p.metricOwner(), id, value))
}

// GetMetric implements abi.Services.
func (s pluginServices) GetMetric(id uint32) (uint64, abi.Status) {
	v, err := s.p.sharedState().store.GetMetric(s.p.metricOwner(), id)
	return v, stateStatus(err)
}

// CallForeignFunction implements abi.Services.
func (s pluginServices) CallForeignFunction(name string, args []byte) ([]byte, abi.Status) {
	fn, ok := foreignFunctions[name]
	if !ok {
		return nil, abi.StatusNotFound
	}
	return fn(args, s.p.cfg.Limits.MaxBodySize)
}

// metricOwner is the owner of the plugin's metrics, built once by Load:
// metric updates are on the request path.
func (p *Plugin) metricOwner() string { return p.owner }

// QueueReady implements state.Listener: an item arrived on a queue the
// plugin registered. Its background instance (started now if need be) will
// call proxy_on_queue_ready.
func (p *Plugin) QueueReady(id uint32) {
	p.bgMu.Lock()
	if !p.loaded && !p.closed {
		// Items enqueued while the filter configures itself wait for the
		// end of Load: the background instance needs the whole plugin.
		if !slices.Contains(p.early, id) {
			p.early = append(p.early, id)
		}
		p.bgMu.Unlock()
		return
	}
	p.bgMu.Unlock()
	if bg := p.startBackground(); bg != nil {
		bg.queueReady(id)
	}
}

// stateStatus maps the store's errors to Proxy-Wasm statuses. Sizes and
// quotas have no status of their own in the specification: BAD_ARGUMENT
// is the one every SDK reports as an error (NOT_FOUND and EMPTY are normal
// outcomes to them).
func stateStatus(err error) abi.Status {
	switch {
	case err == nil:
		return abi.StatusOK
	case errors.Is(err, state.ErrNotFound):
		return abi.StatusNotFound
	case errors.Is(err, state.ErrEmpty):
		return abi.StatusEmpty
	case errors.Is(err, state.ErrCASMismatch):
		return abi.StatusCASMismatch
	}
	return abi.StatusBadArgument // ErrTooLarge, ErrQuota, ErrBadArgument
}
