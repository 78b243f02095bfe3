package sdktest

import (
	"strings"
	"sync"

	"github.com/sluice-edge/sluice/sdk/internal/abi"
)

// store is what a suite's cases share, as a Sluice tenant's requests do:
// shared data and metrics.
type store struct {
	mu      sync.Mutex
	data    map[string]sharedValue
	metrics []metricValue
}

// snapshot returns the metrics' values by name.
func (s *store) snapshot() map[string]uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := make(map[string]uint64, len(s.metrics))
	for _, v := range s.metrics {
		m[v.name] = v.value
	}
	return m
}

type sharedValue struct {
	value []byte
	cas   uint32
}

type metricValue struct {
	kind  abi.MetricType
	name  string
	value uint64
}

// host is one request's view of the emulated proxy: abi.Host over in-memory
// header maps and buffers, with Sluice's rules where hosts differ.
type host struct {
	store *store
	logs  []string
	props map[string][]byte

	maps    map[abi.MapType][][2]string
	buffers map[abi.BufferType][]byte

	frozen map[abi.MapType]bool // header maps already sent on; the response's means it started

	local   *Response // a local response the filter sent
	resumed map[abi.StreamType]bool
	calls   []call // outbound calls not answered yet
	nextTok uint32
	allowed map[string]bool // the suite's upstreams
}

type call struct {
	token    uint32
	upstream string
	headers  [][2]string
	body     []byte
}

func newHost(s *store, allowed map[string]bool) *host {
	h := &host{store: s, allowed: allowed, buffers: map[abi.BufferType][]byte{}}
	h.reset()
	return h
}

// reset readies the host for a new request: the plugin's configuration,
// shared data and metrics stay.
func (h *host) reset() {
	h.logs, h.local, h.calls = nil, nil, nil
	h.maps = map[abi.MapType][][2]string{}
	h.frozen = map[abi.MapType]bool{}
	h.resumed = map[abi.StreamType]bool{}
	for kind := range h.buffers {
		if kind != abi.PluginConfiguration {
			delete(h.buffers, kind)
		}
	}
	h.props = map[string][]byte{}
	for k, v := range map[string]string{"plugin_name": "sdktest", "plugin_vm_id": "sdktest", "plugin_root_id": "",
		"source.address": clientAddr, "node.id": "sdktest"} {
		h.props[k] = []byte(v)
	}
}

// sent marks a header map as gone on: it can no longer change, and once
// the response headers are gone a local response is too late.
func (h *host) sent(m abi.MapType) {
	h.frozen[m] = true
}

// writable is the status of a change to map m: NOT_FOUND if it does not
// exist (yet), BAD_ARGUMENT if it went on already or is an answer's.
func (h *host) writable(m abi.MapType) abi.Status {
	if _, ok := h.maps[m]; !ok {
		return abi.NotFound
	}
	if h.frozen[m] || m == abi.HTTPCallResponseHeaders || m == abi.HTTPCallResponseTrailers {
		return abi.BadArgument
	}
	return abi.OK
}

var levelNames = []string{"trace", "debug", "info", "warn", "error", "critical"}

func (h *host) Log(level uint32, msg string) abi.Status {
	name := "unknown level"
	if int(level) < len(levelNames) {
		name = levelNames[level]
	}
	h.logs = append(h.logs, name+": "+msg)
	return abi.OK
}

func (h *host) GetProperty(path string) ([]byte, abi.Status) {
	if v, ok := h.props[path]; ok {
		return v, abi.OK
	}
	return nil, abi.NotFound
}

// hostProperties are the properties the host provides; a filter cannot set
// them (Sluice refuses with BAD_ARGUMENT).
var hostProperties = map[string]bool{"request": true, "source": true, "destination": true,
	"connection": true, "upstream": true, "response": true, "node": true,
	"plugin_name": true, "plugin_root_id": true, "plugin_vm_id": true}

func (h *host) SetProperty(path string, value []byte) abi.Status {
	if first, _, _ := strings.Cut(path, "."); path == "" || hostProperties[first] {
		return abi.BadArgument
	}
	h.props[path] = append([]byte(nil), value...)
	return abi.OK
}

func (h *host) GetHeaderMapPairs(m abi.MapType) ([][2]string, abi.Status) {
	pairs, ok := h.maps[m]
	if !ok {
		return nil, abi.NotFound
	}
	return append([][2]string(nil), pairs...), abi.OK
}

func (h *host) SetHeaderMapPairs(m abi.MapType, pairs [][2]string) abi.Status {
	if st := h.writable(m); st != abi.OK {
		return st
	}
	if !validPairs(pairs) {
		return abi.BadArgument
	}
	h.maps[m] = lowerNames(pairs)
	return abi.OK
}

// GetHeaderMapValue joins repeated values with ",", as Sluice does.
func (h *host) GetHeaderMapValue(m abi.MapType, name string) (string, abi.Status) {
	var values []string
	for _, p := range h.maps[m] {
		if strings.EqualFold(p[0], name) {
			values = append(values, p[1])
		}
	}
	if values == nil {
		return "", abi.NotFound
	}
	return strings.Join(values, ","), abi.OK
}

func (h *host) ReplaceHeaderMapValue(m abi.MapType, name, value string) abi.Status {
	if st := h.writable(m); st != abi.OK {
		return st
	}
	if !validPairs([][2]string{{name, value}}) {
		return abi.BadArgument
	}
	pairs := h.maps[m]
	h.maps[m] = append(without(pairs, name), [2]string{strings.ToLower(name), value})
	return abi.OK
}

func (h *host) AddHeaderMapValue(m abi.MapType, name, value string) abi.Status {
	if st := h.writable(m); st != abi.OK {
		return st
	}
	if !validPairs([][2]string{{name, value}}) {
		return abi.BadArgument
	}
	h.maps[m] = append(h.maps[m], [2]string{strings.ToLower(name), value})
	return abi.OK
}

func (h *host) RemoveHeaderMapValue(m abi.MapType, name string) abi.Status {
	if st := h.writable(m); st != abi.OK {
		return st
	}
	pairs := h.maps[m]
	h.maps[m] = without(pairs, name)
	return abi.OK
}

func without(pairs [][2]string, name string) [][2]string {
	out := pairs[:0:0]
	for _, p := range pairs {
		if !strings.EqualFold(p[0], name) {
			out = append(out, p)
		}
	}
	return out
}

func lowerNames(pairs [][2]string) [][2]string {
	out := make([][2]string, len(pairs))
	for i, p := range pairs {
		out[i] = [2]string{strings.ToLower(p[0]), p[1]}
	}
	return out
}

func (h *host) GetBufferBytes(b abi.BufferType, start, size int) ([]byte, abi.Status) {
	buf, ok := h.buffers[b]
	if !ok {
		return nil, abi.NotFound
	}
	if start < 0 || start > len(buf) {
		return nil, abi.BadArgument
	}
	end := min(len(buf), start+size)
	return append([]byte(nil), buf[start:end]...), abi.OK
}

// SetBufferBytes replaces buf[start:start+size] with data, Envoy's rule.
func (h *host) SetBufferBytes(b abi.BufferType, start, size int, data []byte) abi.Status {
	buf, ok := h.buffers[b]
	if !ok || b == abi.PluginConfiguration || b == abi.HTTPCallResponseBody {
		return abi.BadArgument
	}
	if start < 0 || start > len(buf) {
		return abi.BadArgument
	}
	end := min(len(buf), start+size)
	out := append(append(append([]byte(nil), buf[:start]...), data...), buf[end:]...)
	h.buffers[b] = out
	return abi.OK
}

// maxBodySize is Sluice's default max_body_size, which bounds a local
// response's body too.
const maxBodySize = 10 << 20

// SendLocalResponse refuses what Sluice refuses: a second local response,
// one after the response started, a status outside 200-599, a body over
// max_body_size, headers HTTP cannot carry.
func (h *host) SendLocalResponse(status uint32, _ string, body []byte, headers [][2]string) abi.Status {
	if h.local != nil || h.frozen[abi.ResponseHeaders] || status < 200 || status > 599 ||
		len(body) > maxBodySize || !validPairs(headers) {
		return abi.BadArgument
	}
	h.local = &Response{Status: int(status), Header: toHeader(lowerNames(headers)), Body: append([]byte(nil), body...)}
	return abi.OK
}

func (h *host) ContinueStream(s abi.StreamType) abi.Status {
	h.resumed[s] = true
	return abi.OK
}

func (h *host) SetEffectiveContext(uint32) abi.Status { return abi.OK }

func (h *host) GetSharedData(key string) ([]byte, uint32, abi.Status) {
	h.store.mu.Lock()
	defer h.store.mu.Unlock()
	v, ok := h.store.data[key]
	if !ok {
		return nil, 0, abi.NotFound
	}
	return append([]byte(nil), v.value...), v.cas, abi.OK
}

// SetSharedData follows Envoy's and Sluice's compare-and-swap: cas 0
// always writes, any other value only if it is the key's current version;
// a key that does not exist yet is written whatever the cas.
func (h *host) SetSharedData(key string, value []byte, cas uint32) abi.Status {
	h.store.mu.Lock()
	defer h.store.mu.Unlock()
	cur, ok := h.store.data[key]
	if ok && cas != 0 && cur.cas != cas {
		return abi.CASMismatch
	}
	h.store.data[key] = sharedValue{value: append([]byte(nil), value...), cas: cur.cas + 1}
	return abi.OK
}

// DispatchHTTPCall refuses an upstream the suite did not declare, as Sluice
// refuses one the operator did not.
func (h *host) DispatchHTTPCall(upstream string, headers [][2]string, body []byte, _ [][2]string, _ uint32) (uint32, abi.Status) {
	if !h.allowed[upstream] {
		return 0, abi.BadArgument
	}
	h.nextTok++
	h.calls = append(h.calls, call{token: h.nextTok, upstream: upstream, headers: headers, body: body})
	return h.nextTok, abi.OK
}

func (h *host) DefineMetric(t abi.MetricType, name string) (uint32, abi.Status) {
	h.store.mu.Lock()
	defer h.store.mu.Unlock()
	for i, m := range h.store.metrics {
		if m.name == name {
			if m.kind != t {
				return 0, abi.BadArgument
			}
			return uint32(i), abi.OK
		}
	}
	h.store.metrics = append(h.store.metrics, metricValue{kind: t, name: name})
	return uint32(len(h.store.metrics) - 1), abi.OK
}

func (h *host) IncrementMetric(id uint32, delta int64) abi.Status {
	h.store.mu.Lock()
	defer h.store.mu.Unlock()
	if int(id) >= len(h.store.metrics) || h.store.metrics[id].kind == abi.Histogram {
		return abi.NotFound
	}
	h.store.metrics[id].value += uint64(delta)
	return abi.OK
}

func (h *host) RecordMetric(id uint32, value uint64) abi.Status {
	h.store.mu.Lock()
	defer h.store.mu.Unlock()
	if int(id) >= len(h.store.metrics) {
		return abi.NotFound
	}
	h.store.metrics[id].value = value
	return abi.OK
}

func (h *host) GetMetric(id uint32) (uint64, abi.Status) {
	h.store.mu.Lock()
	defer h.store.mu.Unlock()
	if int(id) >= len(h.store.metrics) {
		return 0, abi.NotFound
	}
	return h.store.metrics[id].value, abi.OK
}

// validPairs reports whether HTTP can carry the header pairs: names are
// tokens (or pseudo-headers), values have no control characters but tab.
func validPairs(pairs [][2]string) bool {
	for _, p := range pairs {
		name := strings.TrimPrefix(p[0], ":")
		if name == "" {
			return false
		}
		for i := 0; i < len(name); i++ {
			if c := name[i]; c <= ' ' || c >= 0x7f || strings.IndexByte("\"(),/:;<=>?@[\\]{}", c) >= 0 {
				return false
			}
		}
		for i := 0; i < len(p[1]); i++ {
			if c := p[1][i]; (c < ' ' && c != '\t') || c == 0x7f {
				return false
			}
		}
	}
	return true
}
