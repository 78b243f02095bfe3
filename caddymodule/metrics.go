package caddymodule

import (
	"errors"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluice-edge/sluice/filters"
)

// Sluice's metrics, on Caddy's Prometheus endpoint. They are process-wide
// and registered into every config's registry, so that their counts go on
// across config reloads, as Caddy's own do. Every label value is bounded:
// filter names are the operator's, the others come from fixed sets (phases,
// outcomes, failure reasons, instance origins, HTTP status codes).
const metricsNamespace, metricsSubsystem = "caddy", "wasm_filter"

// durationBuckets span 1µs (a restored isolate) to 2.5s (a filter at a
// generous timeout), about three a decade.
var durationBuckets = []float64{
	1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4,
	1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 0.5, 1, 2.5,
}

var filterMetrics = struct {
	requests       *prometheus.CounterVec
	isolates       *prometheus.HistogramVec
	guestTime      *prometheus.HistogramVec
	failures       *prometheus.CounterVec
	localResponses *prometheus.CounterVec
	guest          guestMetrics
}{
	requests: prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: metricsNamespace, Subsystem: metricsSubsystem, Name: "requests_total",
		Help: "Requests through a filter, by outcome: continued, local_response, reset, failed_open, failed_closed, aborted, shed, body_too_large.",
	}, []string{"filter", "outcome"}),
	isolates: prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: metricsNamespace, Subsystem: metricsSubsystem, Name: "isolate_creation_seconds",
		Help:    "Time to get a request its configured instance, by origin: restore, prewarmed, instantiate, shared.",
		Buckets: durationBuckets,
	}, []string{"filter", "origin"}),
	guestTime: prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: metricsNamespace, Subsystem: metricsSubsystem, Name: "guest_seconds",
		Help:    "Time spent in the filter's code per callback, by phase.",
		Buckets: durationBuckets,
	}, []string{"filter", "phase"}),
	failures: prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: metricsNamespace, Subsystem: metricsSubsystem, Name: "failures_total",
		Help: "Filter failures by reason: trap, timeout, memory_limit, abi_violation, exit, instantiate, canceled, host_panic, ...",
	}, []string{"filter", "reason"}),
	localResponses: prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: metricsNamespace, Subsystem: metricsSubsystem, Name: "local_responses_total",
		Help: "Responses a filter sent itself, by status code.",
	}, []string{"filter", "code"}),
	guest: newGuestMetrics(filters.DefaultSharedState),
}

// registerMetrics adds Sluice's metrics to a config's registry; the
// handlers of one config register them once between them.
func registerMetrics(reg prometheus.Registerer) error {
	for _, c := range []prometheus.Collector{
		filterMetrics.requests, filterMetrics.isolates, filterMetrics.guestTime,
		filterMetrics.failures, filterMetrics.localResponses, filterMetrics.guest,
	} {
		if err := reg.Register(c); err != nil {
			if are := (prometheus.AlreadyRegisteredError{}); !errors.As(err, &are) {
				return err
			}
		}
	}
	return nil
}

// phases are the phases filters.CallbackStats name.
var phases = []string{
	"request_headers", "request_body", "request_trailers",
	"response_headers", "response_body", "response_trailers", "log",
}

// outcomes are what may become of a request through a filter (see
// stream.outcome), and origins how its isolate may come to be.
var (
	outcomes = []string{
		"continued", "local_response", "reset", "failed_open", "failed_closed", "aborted", "shed", "body_too_large",
	}
	origins = []filters.Origin{
		filters.OriginRecycled, filters.OriginRestored, filters.OriginPrewarmed, filters.OriginInstantiated, filters.OriginShared,
	}
)

// handlerMetrics are one filter's series, looked up once at Provision: a
// label lookup hashes the labels and allocates on every request. The
// series exist from the start, at zero, as Prometheus advises.
type handlerMetrics struct {
	filter    string
	guestTime map[string]prometheus.Observer         // by phase
	isolates  map[filters.Origin]prometheus.Observer // by origin
	requests  map[string]prometheus.Counter          // by outcome
}

func newHandlerMetrics(filter string) *handlerMetrics {
	m := &handlerMetrics{
		filter:    filter,
		guestTime: make(map[string]prometheus.Observer, len(phases)),
		isolates:  make(map[filters.Origin]prometheus.Observer, len(origins)),
		requests:  make(map[string]prometheus.Counter, len(outcomes)),
	}
	for _, p := range phases {
		m.guestTime[p] = filterMetrics.guestTime.WithLabelValues(filter, p)
	}
	for _, o := range origins {
		m.isolates[o] = filterMetrics.isolates.WithLabelValues(filter, string(o))
	}
	for _, o := range outcomes {
		m.requests[o] = filterMetrics.requests.WithLabelValues(filter, o)
	}
	return m
}

func (m *handlerMetrics) callbackDone(c filters.CallbackStats) {
	if o := m.guestTime[c.Phase]; o != nil {
		o.Observe(c.Guest.Seconds())
	}
}

func (m *handlerMetrics) isolateCreated(origin filters.Origin, d time.Duration) {
	if o := m.isolates[origin]; o != nil {
		o.Observe(d.Seconds())
	}
}

// requestDone counts a request by outcome, and its failure and local
// response if it had one (rarer: their series are looked up then).
func (m *handlerMetrics) requestDone(outcome, failure string, localStatus int) {
	if c := m.requests[outcome]; c != nil {
		c.Inc()
	}
	if failure != "" {
		filterMetrics.failures.WithLabelValues(m.filter, failure).Inc()
	}
	if localStatus > 0 {
		filterMetrics.localResponses.WithLabelValues(m.filter, strconv.Itoa(localStatus)).Inc()
	}
}

// guestMetrics exports the metrics filters define (proxy_define_metric),
// read from the shared state at scrape time. Three families, one per
// metric type, with the metric's name as a label: guests name metrics as
// they like (Envoy-style "a.b.c", any case), and two tenants may define
// one name with different types, which separate Prometheus families per
// name could not hold. The state's quota (1,000 metrics per filter) bounds
// the series.
type guestMetrics struct {
	state                     *filters.SharedState
	counter, gauge, histogram *prometheus.Desc
}

func newGuestMetrics(state *filters.SharedState) guestMetrics {
	labels := []string{"filter", "vm_id", "metric"}
	name := func(n string) string { return prometheus.BuildFQName(metricsNamespace, metricsSubsystem, n) }
	return guestMetrics{
		state:     state,
		counter:   prometheus.NewDesc(name("guest_counter_total"), "Counters filters define (proxy_define_metric).", labels, nil),
		gauge:     prometheus.NewDesc(name("guest_gauge"), "Gauges filters define (proxy_define_metric).", labels, nil),
		histogram: prometheus.NewDesc(name("guest_histogram"), "Histograms filters define (proxy_define_metric).", labels, nil),
	}
}

// Describe implements prometheus.Collector.
func (g guestMetrics) Describe(ch chan<- *prometheus.Desc) {
	ch <- g.counter
	ch <- g.gauge
	ch <- g.histogram
}

// Collect implements prometheus.Collector.
// A series whose labels are not valid UTF-8, or repeat an earlier series'
// (names are UTF-8 already; an operator's vm_id or filter name could still
// collide), is skipped: one bad series would fail the whole scrape, Caddy's
// own metrics included.
func (g guestMetrics) Collect(ch chan<- prometheus.Metric) {
	seen := map[[3]string]bool{}
	for _, m := range g.state.Metrics() {
		vmID, filter, _ := strings.Cut(m.Owner, "\x00")
		key := [3]string{filter, vmID, m.Name}
		if seen[key] || !utf8.ValidString(filter) || !utf8.ValidString(vmID) || !utf8.ValidString(m.Name) {
			continue
		}
		seen[key] = true
		labels := key[:]
		var metric prometheus.Metric
		var err error
		switch m.Type {
		case filters.GuestCounter:
			metric, err = prometheus.NewConstMetric(g.counter, prometheus.CounterValue, float64(m.Value), labels...)
		case filters.GuestGauge:
			metric, err = prometheus.NewConstMetric(g.gauge, prometheus.GaugeValue, float64(m.Value), labels...)
		case filters.GuestHistogram:
			buckets := make(map[float64]uint64, len(m.Bounds))
			for i, b := range m.Bounds {
				buckets[b] = m.Counts[i]
			}
			metric, err = prometheus.NewConstHistogram(g.histogram, m.Count, m.Sum, buckets, labels...)
		default:
			continue
		}
		if err == nil {
			ch <- metric
		}
	}
}
