package caddymodule

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"encoding/hex"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/sluice-edge/sluice/abi"
)

// propertyStream is the stream of a POST from 203.0.113.7:54321 to
// 192.0.2.1:8443, prepared as Caddy's server prepares requests.
func propertyStream(t *testing.T, edit func(r *http.Request)) *stream {
	t.Helper()
	rec := httptest.NewRecorder()
	r := httptest.NewRequest(http.MethodPost, "http://example.com:8443/a/b?x=1&y=2", strings.NewReader("body"))
	r.Header.Set("Content-Length", "4")
	r.Header.Set("X-A", "1")
	r.Header.Set("Referer", "https://ref.example/")
	r.Header.Set("User-Agent", "agent/1.0")
	r.RemoteAddr = "203.0.113.7:54321"
	if edit != nil {
		edit(r)
	}
	r = r.WithContext(context.WithValue(r.Context(), http.LocalAddrContextKey,
		&net.TCPAddr{IP: net.ParseIP("192.0.2.1"), Port: 8443}))
	r = caddyRequest(r, rec)
	return newStream(&Handler{}, rec, r)
}

func le(n int64) string { return string(binary.LittleEndian.AppendUint64(nil, uint64(n))) }

func prop(p string) []string { return abi.SplitPropertyPath(p) }

func TestPropertiesUseEnvoyNamesAndEncodings(t *testing.T) {
	s := propertyStream(t, nil)
	for _, tt := range []struct {
		path string
		want string
	}{
		{"request.path", "/a/b?x=1&y=2"},
		{"request.url_path", "/a/b"},
		{"request.host", "example.com:8443"},
		{"request.scheme", "http"},
		{"request.method", "POST"},
		{"request.protocol", "HTTP/1.1"},
		{"request.query", "x=1&y=2"},
		{"request.referer", "https://ref.example/"},
		{"request.useragent", "agent/1.0"},
		{"request.headers.x-a", "1"},
		{"request.headers.X-A", "1"},
		{"request.headers.:method", "POST"},
		{"request.size", le(4)},
		{"source.address", "203.0.113.7:54321"},
		{"source.port", le(54321)},
		{"destination.address", "192.0.2.1:8443"},
		{"destination.port", le(8443)},
		{"connection.mtls", "\x00"},
		// SDKs separate segments with NUL.
		{"request\x00path", "/a/b?x=1&y=2"},
		{"request\x00headers\x00x-a", "1"},
	} {
		got, ok := s.Property(prop(tt.path))
		if !ok || string(got) != tt.want {
			t.Errorf("%q = %q, %v; want %q", tt.path, got, ok, tt.want)
		}
	}
	for _, missing := range []string{
		"request.headers.x-missing", "response.code", "response.headers", "response.headers.x-a",
		"connection.tls_version", "connection.requested_server_name",
		"request", "request.path.more", "no.such", "request.nope", "",
	} {
		if v, ok := s.Property(prop(missing)); ok {
			t.Errorf("%q found: %q", missing, v)
		}
	}
}

func TestRequestHeadersPropertyIsTheSerializedMap(t *testing.T) {
	s := propertyStream(t, nil)
	raw, ok := s.Property(prop("request.headers"))
	if !ok {
		t.Fatal("request.headers not found")
	}
	pairs, err := abi.DecodeHeaderMap(raw, abi.MaxHeaderPairs)
	if err != nil {
		t.Fatal(err)
	}
	if want := (requestHeaders{s.r}).Pairs(); !reflect.DeepEqual(pairs, want) {
		t.Errorf("decoded %q, want %q", pairs, want)
	}
	if pairs[0] != [2]string{":authority", "example.com:8443"} || pairs[2] != [2]string{":method", "POST"} {
		t.Errorf("pseudo-headers not first: %q", pairs[:4])
	}
}

func TestRequestTimingProperties(t *testing.T) {
	s := propertyStream(t, nil)
	raw, ok := s.Property(prop("request.time"))
	if !ok || len(raw) != 8 {
		t.Fatalf("request.time %x", raw)
	}
	if got := time.Unix(0, int64(binary.LittleEndian.Uint64(raw))); time.Since(got) < 0 || time.Since(got) > time.Minute {
		t.Errorf("request.time %v is not the request's start", got)
	}
	raw, ok = s.Property(prop("request.duration"))
	if !ok || len(raw) != 8 || int64(binary.LittleEndian.Uint64(raw)) < 0 {
		t.Errorf("request.duration %x", raw)
	}
	id, ok := s.Property(prop("request.id"))
	if !ok || len(id) != 36 {
		t.Errorf("request.id %q, want Caddy's request UUID", id)
	}
	if placeholder, _ := s.replacer().GetString("http.request.uuid"); string(id) != placeholder {
		t.Errorf("request.id %q, {http.request.uuid} %q", id, placeholder)
	}
}

func TestConnectionPropertiesOverTLSAndHTTP2(t *testing.T) {
	s := propertyStream(t, func(r *http.Request) {
		r.TLS = &tls.ConnectionState{Version: tls.VersionTLS13, ServerName: "sni.example",
			PeerCertificates: []*x509.Certificate{{}}}
		r.Proto, r.ProtoMajor, r.ProtoMinor = "HTTP/2.0", 2, 0
		r.ContentLength = -1
	})
	for p, want := range map[string]string{
		"request.scheme":                   "https",
		"request.protocol":                 "HTTP/2",
		"connection.tls_version":           "TLSv1.3",
		"connection.requested_server_name": "sni.example",
		"connection.mtls":                  "\x01",
	} {
		if got, ok := s.Property(prop(p)); !ok || string(got) != want {
			t.Errorf("%s = %q, %v; want %q", p, got, ok, want)
		}
	}
	if v, ok := s.Property(prop("request.size")); ok {
		t.Errorf("request.size of a body of unknown length: %x", v)
	}
}

func TestSourcePortOfAnAddressWithoutPortIsMissing(t *testing.T) {
	s := propertyStream(t, func(r *http.Request) { r.RemoteAddr = "@" })
	if v, ok := s.Property(prop("source.port")); ok {
		t.Errorf("source.port of a unix socket peer: %x", v)
	}
}

// response.* exists once the next handler chose a status.
func TestResponsePropertiesOnlyAfterTheStatusWasChosen(t *testing.T) {
	s := propertyStream(t, nil)
	if _, ok := s.Property(prop("response.code")); ok {
		t.Fatal("response.code before the response")
	}
	s.rw.Header().Set("X-R", "r")
	s.rw.WriteHeader(http.StatusCreated)
	if got, ok := s.Property(prop("response.code")); !ok || string(got) != le(201) {
		t.Errorf("response.code = %x, %v; want 201 as 8 bytes", got, ok)
	}
	if got, ok := s.Property(prop("response.headers.x-r")); !ok || string(got) != "r" {
		t.Errorf("response.headers.x-r = %q, %v", got, ok)
	}
	raw, ok := s.Property(prop("response.headers"))
	pairs, err := abi.DecodeHeaderMap(raw, abi.MaxHeaderPairs)
	if !ok || err != nil || len(pairs) == 0 || pairs[0] != [2]string{":status", "201"} {
		t.Errorf("response.headers = %q, %v, %v", pairs, ok, err)
	}
}

func TestSetPropertyRoundTripsAndBecomesAPlaceholder(t *testing.T) {
	s := propertyStream(t, nil)
	if st := s.SetProperty(prop("tenant.plan"), []byte("gold")); st != abi.StatusOK {
		t.Fatal(st)
	}
	if got, ok := s.Property(prop("tenant\x00plan")); !ok || string(got) != "gold" {
		t.Errorf("tenant.plan = %q, %v", got, ok)
	}
	repl := s.r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	if got := repl.ReplaceAll("{http.wasm_filter.tenant.plan}", "-"); got != "gold" {
		t.Errorf("placeholder = %q", got)
	}
	if st := s.SetProperty(prop("tenant.plan"), []byte("silver")); st != abi.StatusOK {
		t.Fatal(st)
	}
	if got, _ := s.Property(prop("tenant.plan")); string(got) != "silver" {
		t.Errorf("after overwrite %q", got)
	}
	if st := s.SetProperty(prop("big"), bytes.Repeat([]byte("x"), maxSetPropertySize)); st != abi.StatusOK {
		t.Errorf("64 KiB value: %v", st)
	}
	if st := s.SetProperty(prop("bigger"), bytes.Repeat([]byte("x"), maxSetPropertySize+1)); st != abi.StatusBadArgument {
		t.Errorf("64 KiB + 1 value: %v", st)
	}
	if _, ok := s.Property(prop("bigger")); ok {
		t.Error("the refused value was stored")
	}
}

func TestSetPropertyStopsAt64Properties(t *testing.T) {
	s := propertyStream(t, nil)
	for i := range maxSetProperties {
		if st := s.SetProperty([]string{"p" + strconv.Itoa(i)}, []byte("v")); st != abi.StatusOK {
			t.Fatalf("property %d: %v", i, st)
		}
	}
	if st := s.SetProperty([]string{"one", "more"}, []byte("v")); st != abi.StatusBadArgument {
		t.Errorf("property 65: %v, want BAD_ARGUMENT", st)
	}
	if st := s.SetProperty([]string{"p0"}, []byte("new")); st != abi.StatusOK {
		t.Errorf("overwriting one of the 64: %v", st)
	}
	if n := s.props.len(); n != maxSetProperties {
		t.Errorf("%d set properties stored", n)
	}
}

func TestSetPropertyWithoutRequestVariablesIsRefused(t *testing.T) {
	r := httptest.NewRequest(http.MethodGet, "/", nil) // not prepared by Caddy
	s := newStream(&Handler{}, httptest.NewRecorder(), r)
	if st := s.SetProperty(prop("a"), []byte("v")); st != abi.StatusBadArgument {
		t.Errorf("status %v", st)
	}
}

// A filter cannot change what later filters read as the request's
// attributes: set_property under request.*, source.* ... is refused, and
// nothing stored under those names shadows them.
func TestSetPropertyCannotShadowHostAttributes(t *testing.T) {
	s := propertyStream(t, nil)
	for _, p := range []string{"request.path", "source.address", "response.code", "request.headers.x-a", "connection.mtls", "plugin_name"} {
		if st := s.SetProperty(prop(p), []byte("spoofed")); st != abi.StatusBadArgument {
			t.Errorf("set %s: %v, want BAD_ARGUMENT", p, st)
		}
	}
	// Even a value stored under the same name some other way.
	s.props.values["source.address"] = "10.0.0.1:1"
	s.props.values["response.code"] = "spoofed"
	if got, _ := s.Property(prop("source.address")); string(got) != "203.0.113.7:54321" {
		t.Errorf("source.address = %q", got)
	}
	if got, ok := s.Property(prop("response.code")); ok {
		t.Errorf("response.code before the response = %q", got)
	}
}

// A filter reads and sets properties through the ABI: request.path, its
// own property across phases, and response.code, which exists only once
// the response does.
func TestFilterReadsAndSetsPropertiesThroughTheABI(t *testing.T) {
	g := newGuest()
	// $status_digit adds name: '0'+status to map, a header per call.
	g.fn(`(func $status_digit (param $map i32) (param $name i32) (param $name_len i32) (param $status i32)
    (i32.store8 (i32.const 4096) (i32.add (i32.const 48) (local.get $status)))
    (drop (call $add_header (local.get $map) (local.get $name) (local.get $name_len) (i32.const 4096) (i32.const 1))))`)
	g.fn(`(func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (drop (call $get_property ` + g.str("request\x00path") + ` (i32.const 8192) (i32.const 8196)))
    (drop (call $add_header ` + reqHeaders + " " + g.str("x-path") + ` (call $ret_ptr) (call $ret_len)))
    (call $status_digit ` + reqHeaders + " " + g.str("x-code-status") + `
      (call $get_property ` + g.str("response\x00code") + ` (i32.const 8192) (i32.const 8196)))
    (call $status_digit ` + reqHeaders + " " + g.str("x-set-status") + `
      (call $set_property ` + g.str("tenant") + " " + g.str("acme") + `))
    (call $status_digit ` + reqHeaders + " " + g.str("x-spoof-status") + `
      (call $set_property ` + g.str("source.address") + " " + g.str("10.0.0.1:1") + `))
    (i32.const 0))
  (func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32)
    (drop (call $get_property ` + g.str("tenant") + ` (i32.const 8192) (i32.const 8196)))
    (drop (call $add_header ` + respHeaders + " " + g.str("x-tenant") + ` (call $ret_ptr) (call $ret_len)))
    (call $status_digit ` + respHeaders + " " + g.str("x-code-status") + `
      (call $get_property ` + g.str("response\x00code") + ` (i32.const 8192) (i32.const 8196)))
    (i32.const 0))`)
	h := provisionGuest(t, g, "")
	next := &nextHandler{}
	rec, err, p := h.serve(newRequest(http.MethodGet, "/p?q=1", ""), next)
	if err != nil || p != nil {
		t.Fatalf("err %v, panic %v", err, p)
	}
	wantValues(t, next.header, "X-Path", "/p?q=1")
	wantValues(t, next.header, "X-Code-Status", "1")  // NOT_FOUND before the response
	wantValues(t, next.header, "X-Set-Status", "0")   // OK
	wantValues(t, next.header, "X-Spoof-Status", "2") // BAD_ARGUMENT
	wantValues(t, rec.Header(), "X-Tenant", "acme")
	wantValues(t, rec.Header(), "X-Code-Status", "0")
}

// A client certificate's facts are connection.* properties, with Envoy's
// names; without one they are missing.
func TestPeerCertificateProperties(t *testing.T) {
	spiffe, _ := url.Parse("spiffe://example.org/client")
	cert := &x509.Certificate{
		Raw:      []byte("the certificate's DER"),
		Subject:  pkix.Name{CommonName: "client", Organization: []string{"Example"}},
		DNSNames: []string{"client.example", "other.example"},
		URIs:     []*url.URL{spiffe},
	}
	s := propertyStream(t, func(r *http.Request) {
		r.TLS = &tls.ConnectionState{Version: tls.VersionTLS13, PeerCertificates: []*x509.Certificate{cert}}
	})
	sum := sha256.Sum256(cert.Raw)
	for p, want := range map[string]string{
		"connection.subject_peer_certificate":       "CN=client,O=Example",
		"connection.dns_san_peer_certificate":       "client.example",
		"connection.uri_san_peer_certificate":       "spiffe://example.org/client",
		"connection.sha256_peer_certificate_digest": hex.EncodeToString(sum[:]),
	} {
		if got, ok := s.Property(prop(p)); !ok || string(got) != want {
			t.Errorf("%s = %q, %v; want %q", p, got, ok, want)
		}
	}
	plain := propertyStream(t, nil)
	for _, p := range []string{"connection.subject_peer_certificate", "connection.sha256_peer_certificate_digest"} {
		if v, ok := plain.Property(prop(p)); ok {
			t.Errorf("%s without TLS: %q", p, v)
		}
	}
}

// upstream.* is known once reverse_proxy picked an upstream; node.* names
// this proxy; response.size counts the body sent so far.
func TestUpstreamNodeAndResponseSizeProperties(t *testing.T) {
	s := propertyStream(t, nil)
	if _, ok := s.Property(prop("upstream.address")); ok {
		t.Error("upstream.address before any upstream was picked")
	}
	s.replacer().Set("http.reverse_proxy.upstream.hostport", "10.0.0.5:8080")
	if got, ok := s.Property(prop("upstream.address")); !ok || string(got) != "10.0.0.5:8080" {
		t.Errorf("upstream.address = %q, %v", got, ok)
	}
	if got, ok := s.Property(prop("upstream.port")); !ok || string(got) != le(8080) {
		t.Errorf("upstream.port = %x, %v", got, ok)
	}
	if got, ok := s.Property(prop("node.id")); !ok || string(got) != nodeIdentity["id"] {
		t.Errorf("node.id = %q, %v; want %q", got, ok, nodeIdentity["id"])
	}
	if _, ok := s.Property(prop("response.size")); ok {
		t.Error("response.size before the response")
	}
	s.rw.WriteHeader(http.StatusOK)
	s.rw.forwarded = 5 // as if five body bytes went downstream
	if got, ok := s.Property(prop("response.size")); !ok || string(got) != le(5) {
		t.Errorf("response.size = %x, %v; want 5", got, ok)
	}
}

// node.id is SLUICE_NODE_ID, else the host name; node.cluster is
// SLUICE_NODE_CLUSTER.
func TestNodeIdentityFromTheEnvironment(t *testing.T) {
	hostname := func() (string, error) { return "edge-7", nil }
	env := func(vars map[string]string) func(string) string {
		return func(k string) string { return vars[k] }
	}
	if got := nodeIdentityFrom(env(nil), hostname); got["id"] != "edge-7" || got["cluster"] != "" {
		t.Errorf("defaults: %v", got)
	}
	got := nodeIdentityFrom(env(map[string]string{"SLUICE_NODE_ID": "pop-ams-3", "SLUICE_NODE_CLUSTER": "ams"}), hostname)
	if got["id"] != "pop-ams-3" || got["cluster"] != "ams" {
		t.Errorf("from the environment: %v", got)
	}
}

// The property and guest-log limits the README promises, as numbers.
func TestLimitsAreTheDocumentedOnes(t *testing.T) {
	for name, c := range map[string]struct{ got, want int }{
		"properties per request":   {maxSetProperties, 64},
		"property size":            {maxSetPropertySize, 64 << 10},
		"guest log lines a second": {guestLogRate, 100},
		"guest log burst":          {guestLogBurst, 200},
		"guest log line":           {maxGuestLogBytes, 4 << 10},
	} {
		if c.got != c.want {
			t.Errorf("%s: %d, the README says %d", name, c.got, c.want)
		}
	}
}
