// Package caddymodule is the Caddy side of Sluice: the wasm_filter HTTP
// handler, its Caddyfile directive, and the plumbing between Caddy's requests
// and responses and the Proxy-Wasm runtime in package filters. It is the only
// package that imports Caddy.
package caddymodule

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/dustin/go-humanize"
	"go.uber.org/zap"
	"golang.org/x/time/rate"

	"github.com/sluice-edge/sluice/filters"
)

func init() {
	caddy.RegisterModule(Handler{})
	httpcaddyfile.RegisterDirective("wasm_filter", parseCaddyfile)
	// Inside encode (filters see uncompressed bodies), after Caddy's own
	// request manipulation and auth, before the handlers that respond.
	httpcaddyfile.RegisterDirectiveOrder("wasm_filter", httpcaddyfile.After, "templates")
}

// maxPrewarm bounds the ready instances per filter: each holds a memory
// mapping and wazero's per-instance state.
const maxPrewarm = 64

// maxHTTPCalls bounds max_http_calls: each call holds a goroutine and a
// connection while it runs.
const maxHTTPCalls = 1000

// The failure policies.
const (
	FailClosed = "fail_closed"
	FailOpen   = "fail_open"
)

// Handler runs a Proxy-Wasm filter on every request, each request in a fresh
// WebAssembly instance of its own that is discarded when the request ends.
// Filters written for Envoy with the official Proxy-Wasm SDKs run unmodified.
type Handler struct {
	// Path to the filter's WebAssembly module (.wasm).
	Path string `json:"path,omitempty"`

	// Name of the filter in logs, metrics and traces. Default: the module's
	// file name without its extension.
	Name string `json:"name,omitempty"`

	// Plugin configuration, handed to proxy_on_configure. Exclusive with
	// config_file.
	Config string `json:"config,omitempty"`

	// File holding the plugin configuration. Exclusive with config.
	ConfigFile string `json:"config_file,omitempty"`

	// VM configuration, handed to proxy_on_vm_start.
	VMConfig string `json:"vm_config,omitempty"`

	// The plugin's root ID (the plugin_root_id property), which SDKs use to
	// pick a root context when one module holds several.
	RootID string `json:"root_id,omitempty"`

	// The plugin's VM ID (the plugin_vm_id property), and the tenant
	// namespace of its shared data, shared queues and metrics: filters with
	// the same vm_id share them, no filter reaches another vm_id's. Give
	// each tenant its own. Default: the filter's name.
	VMID string `json:"vm_id,omitempty"`

	// Where the filter's outbound calls (proxy_http_call) may go: the name
	// the filter calls, mapped to an http:// or https:// URL with a host
	// and an optional port, and nothing else. A call to any other name
	// (an address, Caddy's admin endpoint, a metadata service) is refused.
	Upstreams map[string]string `json:"upstreams,omitempty"`

	// How many outbound calls one request may make (and the filter's
	// background instance may have in flight). Default: 16.
	MaxHTTPCalls int `json:"max_http_calls,omitempty"`

	// Cap on each outbound call, and the timeout of calls that set none.
	// Default: 5s.
	HTTPCallTimeout caddy.Duration `json:"http_call_timeout,omitempty"`

	// How requests map to instances. "request" (the default): each request
	// runs in a fresh instance of its own, discarded when it ends, so
	// nothing one request does reaches another. "shared": requests share a
	// few long-lived instances (one per core), each in an HTTP context of
	// its own, as in Envoy; for trusted filters that keep state in memory.
	// A failure in a shared instance fails every request in it at the time.
	Isolation string `json:"isolation,omitempty"`

	// Time budget of each callback into the filter. A filter that runs
	// longer is stopped and the failure policy applies. Each step of
	// starting an instance gets ten times as much. Default: 500ms.
	Timeout caddy.Duration `json:"timeout,omitempty"`

	// Cap on the linear memory of each instance, in bytes. Default: 64 MiB.
	MemoryLimit int64 `json:"memory_limit,omitempty"`

	// Largest body, in bytes, the filter may hold back (buffer) per
	// direction. A request over it gets 413; a response over it fails the
	// filter. Default: 10 MiB.
	MaxBodySize int64 `json:"max_body_size,omitempty"`

	// What happens when the filter fails (traps, times out, breaks the ABI)
	// before the response has started: "fail_closed" answers 500,
	// "fail_open" lets the request through as if the filter were not there.
	// After the response has started, the stream is aborted either way.
	// Default: fail_closed.
	FailurePolicy string `json:"failure_policy,omitempty"`

	// Start every request's instance from scratch (instantiate, run
	// _initialize, proxy_on_vm_start and proxy_on_configure) instead of
	// restoring it from a snapshot taken after configuration. Much slower
	// (a stock-Go filter: milliseconds instead of a fraction of one); for
	// filters whose start-up must differ per request. The environment
	// variable SLUICE_SNAPSHOT=off sets it for every filter.
	DisableSnapshot bool `json:"disable_snapshot,omitempty"`

	// Give every request's instance a new wazero module, discarded when
	// the request ends, instead of one that served an earlier request and
	// was then reset to the snapshot (memory and globals). Both start
	// from the same state; recycling is faster (a tiny filter: about half
	// the cost of an instance). Without snapshots nothing is recycled. The
	// environment variable SLUICE_RECYCLE=off sets it for every filter.
	DisableRecycling bool `json:"disable_recycling,omitempty"`

	// How many instances, restored from the snapshot, to keep ready for
	// the next requests: a request then skips instantiation. They run no
	// guest code until taken and start their request from the snapshot. With
	// recycling on they are made at load and kept as spare isolates, which
	// every request that ends well replenishes. 0 keeps none. Default: 4.
	Prewarm *int `json:"prewarm,omitempty"`

	plugin    *filters.Plugin
	poolKey   string
	metrics   *handlerMetrics
	spanName  string // of the filter's span in a request's trace
	logger    *zap.Logger
	guestLogs *guestLogLimiter
	sheds     *rate.Limiter         // of the log lines about shed requests
	budget    *filters.MemoryBudget // nil: filters.DefaultMemoryBudget; set by tests
}

// CaddyModule returns the Caddy module information.
func (Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.wasm_filter",
		New: func() caddy.Module { return new(Handler) },
	}
}

// Provision loads the filter: it reads the module and its configuration,
// compiles and validates the module, and starts one instance to check that
// the filter accepts its configuration. Any problem fails the config load,
// naming the file. Loaded filters are shared across config reloads.
func (h *Handler) Provision(ctx caddy.Context) error {
	if h.Path == "" {
		return errors.New("wasm_filter: path to the .wasm module is required")
	}
	// Caddy validates after provisioning; a bad setting must not cost a
	// load (compiling, starting, pre-warming) first.
	if err := h.Validate(); err != nil {
		return err
	}
	h.logger = ctx.Logger()
	if h.Name == "" {
		h.Name = strings.TrimSuffix(filepath.Base(h.Path), filepath.Ext(h.Path))
	}
	h.logger = h.logger.With(zap.String("filter", h.Name))
	h.spanName = "wasm_filter " + h.Name
	h.metrics = newHandlerMetrics(h.Name)
	if reg := ctx.GetMetricsRegistry(); reg != nil {
		if err := registerMetrics(reg); err != nil {
			return fmt.Errorf("wasm_filter %q: registering metrics: %w", h.Path, err)
		}
	}
	h.guestLogs = newGuestLogLimiter()
	h.sheds = rate.NewLimiter(1, 1)
	if err := setMemoryBudget(); err != nil {
		return err
	}

	cfg, err := h.pluginConfig()
	if err != nil {
		return fmt.Errorf("wasm_filter %q: %w", h.Path, err)
	}
	h.poolKey = poolKey(cfg)
	h.plugin, err = loadShared(ctx, h.poolKey, cfg, h.logger)
	if err != nil {
		return fmt.Errorf("wasm_filter %q: %w", h.Path, err)
	}
	h.logger.Info("filter loaded",
		zap.String("digest", h.plugin.Digest()),
		zap.String("abi_version", string(h.plugin.ABIVersion())),
		zap.String("start", h.plugin.StartMode()))
	return nil
}

// pluginConfig reads the files the handler names and builds the runtime's
// configuration.
func (h *Handler) pluginConfig() (filters.Config, error) {
	module, err := os.ReadFile(h.Path)
	if err != nil {
		return filters.Config{}, fmt.Errorf("reading module: %w", err)
	}
	pluginConfig := []byte(h.Config)
	if h.ConfigFile != "" {
		if pluginConfig, err = os.ReadFile(h.ConfigFile); err != nil {
			return filters.Config{}, fmt.Errorf("reading config_file: %w", err)
		}
	}
	return filters.Config{
		Name:         h.Name,
		Module:       module,
		VMConfig:     []byte(h.VMConfig),
		PluginConfig: pluginConfig,
		RootID:       h.RootID,
		VMID:         h.VMID,
		Upstreams:    h.Upstreams,
		HTTPCalls: filters.HTTPCallLimits{
			MaxPerRequest: h.MaxHTTPCalls,
			Timeout:       time.Duration(h.HTTPCallTimeout),
		},
		// A process-wide switch, for comparisons and for running a test
		// suite both ways.
		DisableSnapshot:  h.DisableSnapshot || os.Getenv("SLUICE_SNAPSHOT") == "off",
		DisableRecycling: h.DisableRecycling || os.Getenv("SLUICE_RECYCLE") == "off",
		Isolation:        h.Isolation,
		Prewarm:          h.prewarm(),
		MemoryBudget:     h.budget,
		Limits: filters.Limits{
			Timeout:     time.Duration(h.Timeout),
			MemoryLimit: uint64(h.MemoryLimit), // Validate refused a negative one
			MaxBodySize: h.MaxBodySize,
		},
	}, nil
}

// Validate checks the configuration.
func (h *Handler) Validate() error {
	var errs []error
	if h.Config != "" && h.ConfigFile != "" {
		errs = append(errs, errors.New("config and config_file are exclusive"))
	}
	switch h.FailurePolicy {
	case "", FailClosed, FailOpen:
	default:
		errs = append(errs, fmt.Errorf("failure_policy %q: want %s or %s", h.FailurePolicy, FailClosed, FailOpen))
	}
	switch h.Isolation {
	case "", filters.IsolationRequest, filters.IsolationShared:
	default:
		errs = append(errs, fmt.Errorf("isolation %q: want %s or %s", h.Isolation, filters.IsolationRequest, filters.IsolationShared))
	}
	if h.Timeout < 0 || h.MemoryLimit < 0 || h.MaxBodySize < 0 || h.MaxHTTPCalls < 0 || h.HTTPCallTimeout < 0 {
		errs = append(errs, errors.New("timeout, memory_limit, max_body_size, max_http_calls and http_call_timeout must not be negative"))
	}
	if h.MaxHTTPCalls > maxHTTPCalls {
		errs = append(errs, fmt.Errorf("max_http_calls %d: want at most %d", h.MaxHTTPCalls, maxHTTPCalls))
	}
	if h.Prewarm != nil && (*h.Prewarm < 0 || *h.Prewarm > maxPrewarm) {
		errs = append(errs, fmt.Errorf("prewarm %d: want 0 to %d", *h.Prewarm, maxPrewarm))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("wasm_filter %q: %w", h.Path, err)
	}
	return nil
}

// Cleanup releases this config's hold on the loaded filter; the filter is
// closed when no config uses it.
func (h *Handler) Cleanup() error {
	if h.plugin == nil {
		return nil
	}
	guestLogs.drain(time.Second)
	_, err := plugins.Delete(h.poolKey)
	return err
}

// setMemoryBudget applies SLUICE_MEMORY_BUDGET (a size such as 8GiB): the
// memory all filters' instances may hold at once in this process, half the
// machine's memory by default. Requests that would pass it get 503.
func setMemoryBudget() error {
	v := os.Getenv("SLUICE_MEMORY_BUDGET")
	if v == "" {
		return nil
	}
	n, err := humanize.ParseBytes(v)
	if err != nil {
		return fmt.Errorf("SLUICE_MEMORY_BUDGET %q: want a size such as 8GiB", v)
	}
	filters.DefaultMemoryBudget.SetLimit(n)
	return nil
}

// shedLog logs a request shed for want of memory, at most once a second.
func (h *Handler) shedLog(s *stream, err error) {
	if h.sheds.Allow() {
		s.logger().Warn("request shed: the guest memory budget is full",
			zap.Uint64("budget", filters.DefaultMemoryBudget.Limit()), zap.Error(err))
	}
}

// prewarm is the number of ready instances to keep.
func (h *Handler) prewarm() int {
	if h.Prewarm == nil {
		return filters.DefaultPrewarm
	}
	return *h.Prewarm
}

// failOpen reports whether the failure policy lets requests through.
func (h *Handler) failOpen() bool { return h.FailurePolicy == FailOpen }

// Interface guards
var (
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddy.Validator             = (*Handler)(nil)
	_ caddy.CleanerUpper          = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
)
