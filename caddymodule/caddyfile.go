package caddymodule

import (
	"strconv"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/dustin/go-humanize"

	"github.com/sluice-edge/sluice/filters"
)

// parseCaddyfile sets up a wasm_filter route. With one argument, that
// argument is the module path even when it starts with "/", which Caddy
// would otherwise take for a path matcher; with two, the first is the
// matcher.
func parseCaddyfile(h httpcaddyfile.Helper) ([]httpcaddyfile.ConfigValue, error) {
	if !h.Next() {
		return nil, h.ArgErr()
	}
	var matcherSet caddy.ModuleMap
	if h.CountRemainingArgs() > 1 {
		var err error
		if matcherSet, err = h.ExtractMatcherSet(); err != nil {
			return nil, err
		}
	} else {
		h.Reset()
	}
	var handler Handler
	if err := handler.UnmarshalCaddyfile(h.Dispenser); err != nil {
		return nil, err
	}
	return h.NewRoute(matcherSet, &handler), nil
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens. Syntax:
//
//	wasm_filter [<matcher>] <path> {
//	    name           <name>
//	    config         <text>
//	    config_file    <path>
//	    vm_config      <text>
//	    root_id        <id>
//	    vm_id          <id>
//	    upstream       <name> <url>
//	    max_http_calls <count>
//	    http_call_timeout <duration>
//	    timeout        <duration>
//	    memory_limit   <size>
//	    max_body_size  <size>
//	    failure_policy fail_closed|fail_open
//	    isolation      request|shared
//	    snapshot       on|off
//	    recycle        on|off
//	    prewarm        <count>
//	}
func (h *Handler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the directive name
	if !d.NextArg() {
		return d.ArgErr()
	}
	h.Path = d.Val()
	if d.NextArg() {
		return d.ArgErr()
	}
	for d.NextBlock(0) {
		option := d.Val()
		if option == "upstream" {
			if err := h.unmarshalUpstream(d); err != nil {
				return err
			}
			continue
		}
		if !d.NextArg() {
			return d.ArgErr()
		}
		value := d.Val()
		if d.NextArg() {
			return d.ArgErr()
		}
		switch option {
		case "name":
			h.Name = value
		case "config":
			h.Config = value
		case "config_file":
			h.ConfigFile = value
		case "vm_config":
			h.VMConfig = value
		case "root_id":
			h.RootID = value
		case "vm_id":
			h.VMID = value
		case "timeout", "http_call_timeout":
			dur, err := caddy.ParseDuration(value)
			if err != nil {
				return d.Errf("%s %q: %v", option, value, err)
			}
			if dur <= 0 {
				return d.Errf("%s %q: must be positive", option, value)
			}
			if option == "timeout" {
				h.Timeout = caddy.Duration(dur)
			} else {
				h.HTTPCallTimeout = caddy.Duration(dur)
			}
		case "max_http_calls":
			n, err := strconv.Atoi(value)
			if err != nil || n < 1 || n > maxHTTPCalls {
				return d.Errf("max_http_calls %q: want a count from 1 to %d", value, maxHTTPCalls)
			}
			h.MaxHTTPCalls = n
		case "memory_limit", "max_body_size":
			size, err := humanize.ParseBytes(value)
			if err != nil || size == 0 || size > 1<<40 {
				return d.Errf("%s %q: want a positive size such as 64MiB", option, value)
			}
			if option == "memory_limit" {
				h.MemoryLimit = int64(size)
			} else {
				h.MaxBodySize = int64(size)
			}
		case "prewarm":
			n, err := strconv.Atoi(value)
			if err != nil || n < 0 || n > maxPrewarm {
				return d.Errf("prewarm %q: want a count from 0 to %d", value, maxPrewarm)
			}
			h.Prewarm = &n
		case "snapshot":
			if value != "on" && value != "off" {
				return d.Errf("snapshot %q: want on or off", value)
			}
			h.DisableSnapshot = value == "off"
		case "recycle":
			if value != "on" && value != "off" {
				return d.Errf("recycle %q: want on or off", value)
			}
			h.DisableRecycling = value == "off"
		case "isolation":
			if value != filters.IsolationRequest && value != filters.IsolationShared {
				return d.Errf("isolation %q: want %s or %s", value, filters.IsolationRequest, filters.IsolationShared)
			}
			h.Isolation = value
		case "failure_policy":
			if value != FailClosed && value != FailOpen {
				return d.Errf("failure_policy %q: want %s or %s", value, FailClosed, FailOpen)
			}
			h.FailurePolicy = value
		default:
			return d.Errf("unknown wasm_filter option %q", option)
		}
	}
	return nil
}

// unmarshalUpstream reads "upstream <name> <url>". The URL is checked when
// the filter loads.
func (h *Handler) unmarshalUpstream(d *caddyfile.Dispenser) error {
	args := d.RemainingArgs()
	if len(args) != 2 {
		return d.Errf("upstream: want a name and a URL, as in: upstream auth http://127.0.0.1:9000")
	}
	if _, dup := h.Upstreams[args[0]]; dup {
		return d.Errf("upstream %q declared twice", args[0])
	}
	if h.Upstreams == nil {
		h.Upstreams = map[string]string{}
	}
	h.Upstreams[args[0]] = args[1]
	return nil
}

// Interface guards
var _ caddyfile.Unmarshaler = (*Handler)(nil)
