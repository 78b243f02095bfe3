package filters

import (
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
	inst  *Instance
	log   LogSink
	phase rootPhase
	scope *callScope // of the start-up calls; nil for a restored instance
}

// HeaderMap implements abi.Host: the root context has no request.
func (rc *rootContext) HeaderMap(abi.MapType, bool) (abi.HeaderMap, abi.Status) {
	return nil, abi.StatusBadArgument
}

// Buffer implements abi.Host: the VM configuration is readable in
// proxy_on_vm_start, the plugin configuration in proxy_on_configure.
func (rc *rootContext) Buffer(t abi.BufferType, write bool) (abi.Buffer, abi.Status) {
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
