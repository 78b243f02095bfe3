package caddymodule

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"

	"github.com/sluice-edge/sluice/abi"
	"github.com/sluice-edge/sluice/filters"
)

// The filters.Exchange of a request: its header maps, its properties, and
// the log of its filter.

// HeaderMap implements filters.Exchange.
func (s *stream) HeaderMap(t abi.MapType) abi.HeaderMap {
	switch t {
	case abi.MapRequestHeaders:
		return requestHeaders{s.r}
	case abi.MapRequestTrailers:
		if len(s.r.Trailer) > 0 {
			return trailerMap{h: s.r.Trailer}
		}
	case abi.MapResponseHeaders:
		return responseHeaders{s.rw}
	case abi.MapResponseTrailers:
		return trailerMap{h: s.rw.Header(), prefix: http.TrailerPrefix}
	}
	return nil
}

// ValidResponseHeaders implements filters.Exchange.
func (s *stream) ValidResponseHeaders(pairs [][2]string) bool {
	return validLocalResponseHeaders(pairs)
}

const (
	maxSetProperties   = 64
	maxSetPropertySize = 64 << 10
)

// hostAttributes are the roots of the properties the host answers. Filters
// cannot set properties under them, nor shadow them: a later filter may
// trust request.path or source.address.
var hostAttributes = map[string]bool{
	"request": true, "response": true, "source": true, "destination": true, "connection": true,
	"upstream": true, "node": true, "plugin_name": true, "plugin_root_id": true, "plugin_vm_id": true,
}

func isHostAttribute(path []string) bool { return len(path) > 0 && hostAttributes[path[0]] }

// SetProperty implements filters.Exchange: the property lives for the
// request, visible to later filters and as the placeholder
// {http.wasm_filter.<path joined with dots>}.
func (s *stream) SetProperty(path []string, value []byte) abi.Status {
	if s.props == nil || len(value) > maxSetPropertySize || isHostAttribute(path) {
		return abi.StatusBadArgument
	}
	if !s.props.set(strings.Join(path, "."), string(value)) {
		return abi.StatusBadArgument
	}
	return abi.StatusOK
}

// propertiesVar is the request variable holding the request's
// requestProperties, so that every wasm_filter of the request shares them.
const propertiesVar = "wasm_filter.properties"

// placeholderPrefix names the placeholders of set properties.
const placeholderPrefix = "http.wasm_filter."

// requestProperties are the properties filters set on one request with
// proxy_set_property. Filters may set them from the goroutine that reads
// the request body, so they have their own lock and never live in Caddy's
// variables map, which only the handler goroutine may touch.
type requestProperties struct {
	mu     sync.Mutex
	values map[string]string
}

// propertiesOf returns the request's property store, creating it (and its
// placeholders) for the first filter. It runs on the handler goroutine.
// Outside a Caddy request (no variables, no replacer) it returns nil.
func propertiesOf(r *http.Request) *requestProperties {
	vars, ok := r.Context().Value(caddyhttp.VarsCtxKey).(map[string]any)
	if !ok {
		return nil
	}
	if props, ok := vars[propertiesVar].(*requestProperties); ok {
		return props
	}
	props := &requestProperties{values: map[string]string{}}
	vars[propertiesVar] = props
	if repl, ok := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer); ok {
		repl.Map(func(key string) (any, bool) {
			name, ok := strings.CutPrefix(key, placeholderPrefix)
			if !ok {
				return nil, false
			}
			return props.get(name)
		})
	}
	return props
}

func (p *requestProperties) get(name string) (string, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	v, ok := p.values[name]
	return v, ok
}

// set stores a property unless that would make more than maxSetProperties.
func (p *requestProperties) set(name, value string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, exists := p.values[name]; !exists && len(p.values) >= maxSetProperties {
		return false
	}
	p.values[name] = value
	return true
}

func (p *requestProperties) len() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.values)
}

// Property implements filters.Exchange with Envoy's attribute names:
// https://www.envoyproxy.io/docs/envoy/latest/intro/arch_overview/advanced/attributes
// Strings are raw bytes, integers 8-byte little-endian, timestamps
// nanoseconds since the epoch, booleans one byte, and header maps use the
// Proxy-Wasm map serialization.
func (s *stream) Property(path []string) ([]byte, bool) {
	r := s.r
	if s.props != nil && !isHostAttribute(path) {
		if v, ok := s.props.get(strings.Join(path, ".")); ok {
			return []byte(v), true
		}
	}
	if len(path) == 3 && path[0] == "request" && path[1] == "headers" {
		v, ok := requestHeaders{r}.Get(path[2])
		return []byte(v), ok
	}
	if len(path) == 3 && path[0] == "response" && path[1] == "headers" && s.rw.wroteHeader {
		v, ok := responseHeaders{s.rw}.Get(path[2])
		return []byte(v), ok
	}
	if len(path) != 2 {
		return nil, false
	}
	switch path[0] + "." + path[1] {
	case "request.path":
		return []byte(r.URL.RequestURI()), true
	case "request.url_path":
		return []byte(r.URL.Path), true
	case "request.host":
		return []byte(r.Host), true
	case "request.scheme":
		return []byte(requestScheme(r)), true
	case "request.method":
		return []byte(r.Method), true
	case "request.headers":
		return abi.AppendHeaderMap(nil, requestHeaders{r}.Pairs()), true
	case "request.referer":
		return []byte(r.Referer()), true
	case "request.useragent":
		return []byte(r.UserAgent()), true
	case "request.query":
		return []byte(r.URL.RawQuery), true
	case "request.protocol":
		return []byte(protocolName(r)), true
	case "request.id":
		id, _ := s.replacer().GetString("http.request.uuid")
		return []byte(id), id != ""
	case "request.time":
		return int64Bytes(s.started.UnixNano()), true
	case "request.duration":
		return int64Bytes(int64(time.Since(s.started))), true
	case "request.size":
		return int64Bytes(max(r.ContentLength, 0)), r.ContentLength >= 0
	case "source.address":
		return []byte(r.RemoteAddr), true
	case "source.port":
		return portBytes(r.RemoteAddr)
	case "destination.address", "destination.port":
		addr, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
		if !ok {
			return nil, false
		}
		if path[1] == "port" {
			return portBytes(addr.String())
		}
		return []byte(addr.String()), true
	case "connection.tls_version":
		if r.TLS == nil {
			return nil, false
		}
		return []byte(tlsVersionName(r.TLS.Version)), true
	case "connection.requested_server_name":
		if r.TLS == nil {
			return nil, false
		}
		return []byte(r.TLS.ServerName), true
	case "connection.mtls":
		return boolBytes(r.TLS != nil && len(r.TLS.PeerCertificates) > 0), true
	case "connection.subject_peer_certificate", "connection.dns_san_peer_certificate",
		"connection.uri_san_peer_certificate", "connection.sha256_peer_certificate_digest":
		return peerCertificateProperty(r, path[1])
	case "upstream.address", "upstream.port":
		// Known once reverse_proxy has picked an upstream: in the response
		// phase.
		hostport, ok := s.replacer().GetString("http.reverse_proxy.upstream.hostport")
		if !ok || hostport == "" {
			return nil, false
		}
		if path[1] == "port" {
			return portBytes(hostport)
		}
		return []byte(hostport), true
	case "node.id", "node.cluster":
		v := nodeIdentity[path[1]]
		return []byte(v), v != ""
	case "response.size":
		if !s.rw.wroteHeader {
			return nil, false
		}
		return int64Bytes(s.rw.forwarded), true
	case "response.code":
		if !s.rw.wroteHeader {
			return nil, false
		}
		return int64Bytes(int64(s.rw.status)), true
	case "response.headers":
		if !s.rw.wroteHeader {
			return nil, false
		}
		return abi.AppendHeaderMap(nil, responseHeaders{s.rw}.Pairs()), true
	}
	return nil, false
}

// nodeIdentity is the node.* properties: which proxy this is, for filters
// that report or route by it. SLUICE_NODE_ID (default: the host name) and
// SLUICE_NODE_CLUSTER set them.
var nodeIdentity = nodeIdentityFrom(os.Getenv, os.Hostname)

func nodeIdentityFrom(getenv func(string) string, hostname func() (string, error)) map[string]string {
	id := getenv("SLUICE_NODE_ID")
	if id == "" {
		id, _ = hostname()
	}
	return map[string]string{"id": id, "cluster": getenv("SLUICE_NODE_CLUSTER")}
}

// peerCertificateProperty answers the connection.* properties of a client
// certificate, as Envoy names them: the subject, the first DNS and URI
// names, and the SHA-256 digest (hex) of the leaf certificate.
func peerCertificateProperty(r *http.Request, name string) ([]byte, bool) {
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		return nil, false
	}
	cert := r.TLS.PeerCertificates[0]
	switch name {
	case "subject_peer_certificate":
		return []byte(cert.Subject.String()), true
	case "dns_san_peer_certificate":
		if len(cert.DNSNames) > 0 {
			return []byte(cert.DNSNames[0]), true
		}
	case "uri_san_peer_certificate":
		if len(cert.URIs) > 0 {
			return []byte(cert.URIs[0].String()), true
		}
	case "sha256_peer_certificate_digest":
		sum := sha256.Sum256(cert.Raw)
		return []byte(hex.EncodeToString(sum[:])), true
	}
	return nil, false
}

func int64Bytes(v int64) []byte { return binary.LittleEndian.AppendUint64(nil, uint64(v)) }

func boolBytes(b bool) []byte {
	if b {
		return []byte{1}
	}
	return []byte{0}
}

func portBytes(hostport string) ([]byte, bool) {
	_, port, err := net.SplitHostPort(hostport)
	if err != nil {
		return nil, false
	}
	n, err := strconv.Atoi(port)
	return int64Bytes(int64(n)), err == nil
}

// protocolName names the protocol the way Envoy does: HTTP/1.1, HTTP/2, HTTP/3.
func protocolName(r *http.Request) string {
	switch r.ProtoMajor {
	case 2:
		return "HTTP/2"
	case 3:
		return "HTTP/3"
	}
	return r.Proto
}

func tlsVersionName(v uint16) string {
	switch v {
	case 0x0301:
		return "TLSv1"
	case 0x0302:
		return "TLSv1.1"
	case 0x0303:
		return "TLSv1.2"
	case 0x0304:
		return "TLSv1.3"
	}
	return ""
}

// replacer returns the request's placeholder replacer, or an empty one
// outside Caddy.
func (s *stream) replacer() *caddy.Replacer {
	if repl, ok := s.r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer); ok {
		return repl
	}
	return caddy.NewEmptyReplacer()
}

// logger returns the filter's logger with the request's ID, built once.
func (s *stream) logger() *zap.Logger {
	s.logOnce.Do(func() {
		id, _ := s.replacer().GetString("http.request.uuid")
		fields := []zap.Field{zap.String("request_id", id)}
		if sc := trace.SpanContextFromContext(s.trace.context(s.r.Context())); sc.IsValid() {
			// The filter's span: its logs sit next to it in a trace viewer.
			fields = append(fields, zap.String("trace_id", sc.TraceID().String()), zap.String("span_id", sc.SpanID().String()))
		}
		s.requestLog = s.h.logger.With(fields...)
	})
	return s.requestLog
}

// GuestLog implements filters.LogSink.
func (s *stream) GuestLog(level abi.LogLevel, msg []byte) {
	s.h.guestLogs.log(s.logger, level, msg, "proxy_log")
}

// GuestOutput implements filters.LogSink: stdout logs at info, stderr at
// error, as the specification says, a line at a time (runtimes write lines
// in fragments: Go prints a panic a word at a time).
func (s *stream) GuestOutput(fd uint32, p []byte) {
	out := &s.stdout
	if fd == 2 {
		out = &s.stderr
	}
	out.write(p, func(line []byte) { s.logOutput(fd, line) })
}

// flushOutput logs what the guest wrote after its last newline.
func (s *stream) flushOutput() {
	s.stdout.flush(func(line []byte) { s.logOutput(1, line) })
	s.stderr.flush(func(line []byte) { s.logOutput(2, line) })
}

func (s *stream) logOutput(fd uint32, line []byte) {
	level, source := outputLevel(fd)
	s.h.guestLogs.log(s.logger, level, line, source)
}

// LogLevel implements filters.LogSink.
func (s *stream) LogLevel() abi.LogLevel { return guestLogLevel(s.h.logger) }

// Interface guards
var _ filters.Exchange = (*stream)(nil)
