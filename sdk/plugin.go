package sdk

import "github.com/sluice-edge/sluice/sdk/internal/abi"

// Plugin is a configured filter: its configuration and what outlives a
// request (logs, properties, shared data, metrics). A Stream has all of its
// methods.
type Plugin struct {
	host   abi.Host
	config []byte
}

// Config is the plugin configuration the operator gave (wasm_filter's
// config or config_file; Envoy's plugin configuration). Empty if none.
func (p *Plugin) Config() []byte { return p.config }

// Level is a log level.
type Level uint32

const (
	LevelTrace Level = iota
	LevelDebug
	LevelInfo
	LevelWarn
	LevelError
	LevelCritical
)

// Log writes msg to the host's log at level (Caddy's log in Sluice).
func (p *Plugin) Log(level Level, msg string) { p.host.Log(uint32(level), msg) }

// Property reads a host property by its dot-separated path, e.g.
// "request.path", "source.address" or "plugin_name". ok is false if the
// host has no such property.
func (p *Plugin) Property(path string) (value []byte, ok bool) {
	v, st := p.host.GetProperty(path)
	return v, st == abi.OK
}

// SetProperty sets a property by its dot-separated path. In Sluice a filter
// steers routing this way: SetProperty("route", "canary") is read in the
// Caddyfile as {http.wasm_filter.route}.
func (p *Plugin) SetProperty(path, value string) error {
	return errorOf(p.host.SetProperty(path, []byte(value)))
}

// SharedData reads key from the data the filter's tenant shares across
// requests (and, in Sluice, across reloads). cas identifies the version
// read, for SetSharedData. A missing key is ErrNotFound.
func (p *Plugin) SharedData(key string) (value []byte, cas uint32, err error) {
	v, cas, st := p.host.GetSharedData(key)
	return v, cas, errorOf(st)
}

// SetSharedData writes key. With cas 0 it always writes; otherwise only if
// the key is still at the version SharedData returned, and ErrCASMismatch
// says someone wrote in between: read again and retry.
func (p *Plugin) SetSharedData(key string, value []byte, cas uint32) error {
	return errorOf(p.host.SetSharedData(key, value, cas))
}

// Counter is a metric that only goes up.
type Counter struct{ metric }

// Gauge is a metric that is set, or goes up and down.
type Gauge struct{ metric }

// Histogram is a metric recording a distribution of values.
type Histogram struct{ metric }

type metric struct {
	host abi.Host
	id   uint32
}

// Counter defines (or finds) the counter named name. Define metrics in the
// configure function, so requests only update them.
func (p *Plugin) Counter(name string) (Counter, error) {
	m, err := p.define(abi.Counter, name)
	return Counter{m}, err
}

// Gauge defines (or finds) the gauge named name.
func (p *Plugin) Gauge(name string) (Gauge, error) {
	m, err := p.define(abi.Gauge, name)
	return Gauge{m}, err
}

// Histogram defines (or finds) the histogram named name.
func (p *Plugin) Histogram(name string) (Histogram, error) {
	m, err := p.define(abi.Histogram, name)
	return Histogram{m}, err
}

func (p *Plugin) define(t abi.MetricType, name string) (metric, error) {
	id, st := p.host.DefineMetric(t, name)
	if st != abi.OK {
		return metric{}, Error(st)
	}
	return metric{p.host, id}, nil
}

// Add adds n to the counter. A zero Counter (one whose definition failed)
// ignores it.
func (c Counter) Add(n uint64) error { return c.increment(int64(n)) }

// Add adds delta to the gauge.
func (g Gauge) Add(delta int64) error { return g.increment(delta) }

// Set sets the gauge to v.
func (g Gauge) Set(v uint64) error { return g.record(v) }

// Record records v in the histogram.
func (h Histogram) Record(v uint64) error { return h.record(v) }

// Value reads the metric's current value.
func (m metric) Value() (uint64, error) {
	if m.host == nil {
		return 0, ErrNotFound
	}
	v, st := m.host.GetMetric(m.id)
	return v, errorOf(st)
}

func (m metric) increment(delta int64) error {
	if m.host == nil {
		return nil
	}
	return errorOf(m.host.IncrementMetric(m.id, delta))
}

func (m metric) record(v uint64) error {
	if m.host == nil {
		return nil
	}
	return errorOf(m.host.RecordMetric(m.id, v))
}
