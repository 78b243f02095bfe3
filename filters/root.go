package filters

import (
	"time"

	"github.com/sluice-edge/sluice/abi"
)

// rootPhase is where an instance's root (plugin) context is in start-up.
type rootPhase int

const (
	rootInit rootPhase = iota // _initialize, _start, main
	rootVMStart
	rootCreate
	rootConfigure
	rootReady
)

// rootContext is the abi.Host of the calls that start an instance: the
// configuration buffers exist during their callbacks; there are no header
// maps, no bodies and no request.
type rootContext struct {
	pluginServices
	inst  *Instance
	log   LogSink
	phase rootPhase
	// scope is where the root context's calls run: the start-up calls, or
	// the background instance's for its whole life; nil for a restored
	// instance that serves requests.
	scope *callScope
	calls callSet     // the background instance's outbound calls
	bg    *background // set once the background instance has started

	tick    time.Duration // the timer proxy_on_configure set, before bg exists
	tickSet bool
}

// HeaderMap implements abi.Host: the root context has no request; the
// background instance reads its calls' answers.
func (rc *rootContext) HeaderMap(t abi.MapType, write bool) (abi.HeaderMap, abi.Status) {
	if m, st, ok := rc.calls.response.headerMap(t, write); ok {
		return m, st
	}
	return nil, abi.StatusBadArgument
}

// Buffer implements abi.Host: the VM configuration is readable in
// proxy_on_vm_start, the plugin configuration in proxy_on_configure, an
// outbound call's answer in proxy_on_http_call_response.
func (rc *rootContext) Buffer(t abi.BufferType, write bool) (abi.Buffer, abi.Status) {
	if b, st, ok := rc.calls.response.buffer(t); ok && !write {
		return b, st
	}
	cfg := rc.inst.plugin.cfg
	switch {
	case write:
	case t == abi.BufferVMConfiguration && rc.phase == rootVMStart:
		return constBuffer(cfg.VMConfig), abi.StatusOK
	case t == abi.BufferPluginConfiguration && rc.phase == rootConfigure:
		return constBuffer(cfg.PluginConfig), abi.StatusOK
	}
	return nil, abi.StatusNotFound
}

// SendLocalResponse implements abi.Host: there is no request to answer.
func (rc *rootContext) SendLocalResponse(*abi.LocalResponse) abi.Status {
	return abi.StatusBadArgument
}

// ContinueStream implements abi.Host: there is no stream.
func (rc *rootContext) ContinueStream(abi.StreamType) abi.Status { return abi.StatusBadArgument }

// CloseStream implements abi.Host: there is no stream.
func (rc *rootContext) CloseStream(abi.StreamType) abi.Status { return abi.StatusBadArgument }

// Property implements abi.Host: only the plugin's own properties.
func (rc *rootContext) Property(path []string) ([]byte, abi.Status) {
	if v, ok := rc.inst.plugin.property(path); ok {
		return v, abi.StatusOK
	}
	return nil, abi.StatusNotFound
}

// SetProperty implements abi.Host: there is no request to carry it.
func (rc *rootContext) SetProperty([]string, []byte) abi.Status { return abi.StatusNotFound }

// Log implements abi.Host.
func (rc *rootContext) Log(level abi.LogLevel, msg []byte) { rc.log.GuestLog(level, msg) }

// LogLevel implements abi.Host.
func (rc *rootContext) LogLevel() abi.LogLevel { return rc.log.LogLevel() }

// WriteOutput implements abi.Host.
func (rc *rootContext) WriteOutput(fd uint32, p []byte) { rc.log.GuestOutput(fd, p) }

// SetEffectiveContext implements abi.Host.
func (rc *rootContext) SetEffectiveContext(id uint32) abi.Status {
	if id == rootContextID {
		return abi.StatusOK
	}
	return abi.StatusBadArgument
}

// Done implements abi.Host: the root context is never pending.
func (rc *rootContext) Done() abi.Status { return abi.StatusNotFound }

// CallStatus implements abi.Host.
func (rc *rootContext) CallStatus() (uint32, []byte, abi.Status) { return 0, nil, abi.StatusNotFound }

// SetTickPeriod implements abi.Services. The timer is the background
// instance's: set while the filter loads, it starts that instance; set
// there, it changes its period; set in a request's instance (which runs
// proxy_on_configure when snapshots are off), it has nothing to act on.
func (rc *rootContext) SetTickPeriod(d time.Duration) abi.Status {
	switch {
	case rc.bg != nil:
		rc.bg.setTickPeriod(d)
	case rc.inst.role != roleRequest:
		rc.tick, rc.tickSet = d, true
	}
	return abi.StatusOK
}

// HTTPCall implements abi.Services. Only the background instance's root
// context makes calls: it lives to receive their answers. An instance that
// is starting, or serving a request, would be gone by then.
func (rc *rootContext) HTTPCall(call *abi.HTTPCall) (uint32, abi.Status) {
	if rc.inst.role != roleBackground || rc.phase != rootReady {
		return 0, abi.StatusInternalFailure
	}
	return rc.calls.start(rc.inst, rc.bg.ctx, call, false)
}

// constBuffer is a read-only buffer: a configuration.
type constBuffer []byte

// Bytes implements abi.Buffer.
func (b constBuffer) Bytes() []byte { return b }

// Set implements abi.Buffer.
func (b constBuffer) Set([]byte) abi.Status { return abi.StatusNotFound }

// property answers the plugin_* properties every context can read.
func (p *Plugin) property(path []string) ([]byte, bool) {
	if len(path) != 1 {
		return nil, false
	}
	switch path[0] {
	case "plugin_name":
		return []byte(p.cfg.Name), true
	case "plugin_root_id":
		return []byte(p.cfg.RootID), true
	case "plugin_vm_id":
		return []byte(p.cfg.VMID), true
	}
	return nil, false
}
