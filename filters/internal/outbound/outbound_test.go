package outbound

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluice-edge/sluice/abi"
)

// testServer is an httptest server on 127.0.0.1 that counts what reaches
// it, so tests can assert that something did not.
type testServer struct {
	*httptest.Server
	conns  atomic.Int32 // connections accepted
	closed atomic.Int32 // connections closed
	hits   atomic.Int32 // requests handled
}

func newTestServer(t *testing.T, useTLS bool, h http.HandlerFunc) *testServer {
	t.Helper()
	ts := &testServer{}
	s := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ts.hits.Add(1)
		if h != nil {
			h(w, r)
		}
	}))
	s.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		switch st {
		case http.StateNew:
			ts.conns.Add(1)
		case http.StateClosed, http.StateHijacked:
			ts.closed.Add(1)
		}
	}
	if useTLS {
		s.StartTLS()
	} else {
		s.Start()
	}
	ts.Server = s
	t.Cleanup(s.Close)
	return ts
}

// addr is the server's host:port.
func (ts *testServer) addr() string { return ts.Listener.Addr().String() }

// assertUntouched fails if anything connected to ts.
func (ts *testServer) assertUntouched(t *testing.T, what string) {
	t.Helper()
	if n, h := ts.conns.Load(), ts.hits.Load(); n != 0 || h != 0 {
		t.Errorf("%s saw %d connections, %d requests; want none", what, n, h)
	}
}

func mustUpstream(t *testing.T, name, rawURL string) Upstream {
	t.Helper()
	u, err := ParseUpstream(name, rawURL)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func newTestClient(t *testing.T, o Options, ups ...Upstream) *Client {
	t.Helper()
	c, err := NewClient(ups, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// newRequest is a valid GET unless the caller changes it.
func newRequest(upstream, path, authority string, headers ...[2]string) *Request {
	h := [][2]string{{":method", "GET"}, {":path", path}, {":authority", authority}}
	return &Request{Upstream: upstream, Headers: append(h, headers...), Timeout: 2 * time.Second}
}

func header(r *Response, name string) []string {
	var vs []string
	for _, kv := range r.Headers {
		if kv[0] == name {
			vs = append(vs, kv[1])
		}
	}
	return vs
}

func TestRoundTrip(t *testing.T) {
	type seen struct {
		method, uri, host string
		header            http.Header
		body              string
		te                []string
		trailer           http.Header
	}
	got := make(chan seen, 1)
	srv := newTestServer(t, false, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got <- seen{r.Method, r.RequestURI, r.Host, r.Header.Clone(), string(b), r.TransferEncoding, r.Trailer.Clone()}
		w.Header().Set("Trailer", "X-Resp-Trailer")
		w.Header().Add("X-Multi", "b")
		w.Header().Add("X-Multi", "a")
		w.Header().Set("Content-Type", "text/plain")
		for _, h := range []string{"X-Q", "X-B", "X-Z", "X-C", "X-Y", "X-D", "A-Z", "Zz"} {
			w.Header().Set(h, "v")
		}
		w.WriteHeader(http.StatusCreated)
		io.WriteString(w, "world")
		w.Header().Set("X-Resp-Trailer", "done")
	})
	c := newTestClient(t, Options{}, mustUpstream(t, "api", srv.URL))

	req := newRequest("api", "/a/b%2Fc?x=1&y=%20z&x=2", "api.example:8443",
		[2]string{":scheme", "https"}, // ignored: the upstream is http
		[2]string{"x-one", "1"},
		[2]string{"X-Two", "b"},
		[2]string{"x-one", "2"},
	)
	req.Headers[0][1] = "PUT"
	req.Body = []byte("hello")
	req.Trailers = [][2]string{{"x-checksum", "abc"}, {"content-length", "5"}}
	resp, err := c.Do(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	s := <-got

	if s.method != "PUT" || s.uri != "/a/b%2Fc?x=1&y=%20z&x=2" || s.host != "api.example:8443" {
		t.Errorf("server saw %s %s Host %s", s.method, s.uri, s.host)
	}
	if v := s.header["X-One"]; !slices.Equal(v, []string{"1", "2"}) {
		t.Errorf("X-One = %q, want [1 2]", v)
	}
	if v := s.header.Get("X-Two"); v != "b" {
		t.Errorf("X-Two = %q", v)
	}
	// Nothing the guest did not send: no Go defaults.
	for _, h := range []string{"User-Agent", "Accept-Encoding"} {
		if v, ok := s.header[h]; ok {
			t.Errorf("server saw %s: %q", h, v)
		}
	}
	if s.body != "hello" || !slices.Equal(s.te, []string{"chunked"}) {
		t.Errorf("body %q, transfer-encoding %q; want hello, chunked", s.body, s.te)
	}
	if v := s.trailer.Get("X-Checksum"); v != "abc" {
		t.Errorf("request trailer X-Checksum = %q, want abc", v)
	}
	if _, ok := s.trailer["Content-Length"]; ok {
		t.Errorf("content-length trailer was sent")
	}

	if resp.Headers[0] != [2]string{":status", "201"} {
		t.Errorf("first header %q, want :status 201", resp.Headers[0])
	}
	names := make([]string, 0, len(resp.Headers)-1)
	for _, kv := range resp.Headers[1:] {
		if kv[0] != strings.ToLower(kv[0]) || strings.HasPrefix(kv[0], ":") {
			t.Errorf("response header name %q", kv[0])
		}
		names = append(names, kv[0])
	}
	if !sort.StringsAreSorted(names) {
		t.Errorf("response headers not sorted: %q", names)
	}
	if v := header(resp, "x-multi"); !slices.Equal(v, []string{"b", "a"}) {
		t.Errorf("x-multi = %q, want [b a] (one pair per value, received order)", v)
	}
	if v := header(resp, "content-type"); !slices.Equal(v, []string{"text/plain"}) {
		t.Errorf("content-type = %q", v)
	}
	if string(resp.Body) != "world" {
		t.Errorf("body %q, want world", resp.Body)
	}
	if want := [][2]string{{"x-resp-trailer", "done"}}; !slices.Equal(resp.Trailers, want) {
		t.Errorf("trailers %q, want %q", resp.Trailers, want)
	}
}

func TestTrailersWithoutBody(t *testing.T) {
	got := make(chan string, 1)
	srv := newTestServer(t, false, func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		got <- r.Trailer.Get("X-T")
	})
	c := newTestClient(t, Options{}, mustUpstream(t, "api", srv.URL))
	req := newRequest("api", "/", "a.example")
	req.Trailers = [][2]string{{"x-t", "v"}}
	if _, err := c.Do(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	if v := <-got; v != "v" {
		t.Errorf("trailer X-T = %q, want v", v)
	}
}

func TestFramingHeadersDropped(t *testing.T) {
	type seen struct {
		host    string
		cl      int64
		te      []string
		close   bool
		header  http.Header
		body    string
		trailer []string
	}
	got := make(chan seen, 1)
	srv := newTestServer(t, false, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got <- seen{r.Host, r.ContentLength, r.TransferEncoding, r.Close, r.Header.Clone(), string(b), r.Header.Values("Trailer")}
	})
	c := newTestClient(t, Options{}, mustUpstream(t, "api", srv.URL))
	req := newRequest("api", "/", "a.example",
		[2]string{"content-length", "999"},
		[2]string{"transfer-encoding", "chunked"},
		[2]string{"connection", "close"},
		[2]string{"keep-alive", "timeout=5"},
		[2]string{"proxy-connection", "keep-alive"},
		[2]string{"upgrade", "websocket"},
		[2]string{"te", "trailers"},
		[2]string{"host", "evil.example"},
		[2]string{"trailer", "x-smuggled"},
	)
	req.Headers[0][1] = "POST"
	req.Body = []byte("hello")
	if err := c.Check(req); err != nil {
		t.Fatalf("Check: %v; dropped headers must not be an error", err)
	}
	if _, err := c.Do(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	s := <-got
	if s.host != "a.example" || s.cl != 5 || s.te != nil || s.close || s.body != "hello" {
		t.Errorf("server saw Host %q, Content-Length %d, Transfer-Encoding %q, close %v, body %q",
			s.host, s.cl, s.te, s.close, s.body)
	}
	for _, h := range []string{"Keep-Alive", "Proxy-Connection", "Upgrade", "Te", "Trailer"} {
		if v, ok := s.header[h]; ok {
			t.Errorf("server saw dropped header %s: %q", h, v)
		}
	}
	for _, h := range []string{"content-length", "Transfer-Encoding", "CONNECTION", "te", "host", "trailer"} {
		if !DroppedHeader(h) {
			t.Errorf("DroppedHeader(%q) = false", h)
		}
	}
	if DroppedHeader("x-foo") {
		t.Errorf("DroppedHeader(x-foo) = true")
	}
}

func TestAuthorityDoesNotRoute(t *testing.T) {
	hosts := make(chan string, 1)
	declared := newTestServer(t, false, func(w http.ResponseWriter, r *http.Request) { hosts <- r.Host })
	other := newTestServer(t, false, nil)
	c := newTestClient(t, Options{}, mustUpstream(t, "api", declared.URL))

	if _, err := c.Do(context.Background(), newRequest("api", "/", other.addr())); err != nil {
		t.Fatal(err)
	}
	if h := <-hosts; h != other.addr() {
		t.Errorf("declared upstream saw Host %q, want %q", h, other.addr())
	}
	other.assertUntouched(t, "server named by :authority")
}

func TestDialerRefusesUndeclared(t *testing.T) {
	declared := newTestServer(t, false, nil)
	other := newTestServer(t, false, nil)
	c := newTestClient(t, Options{}, mustUpstream(t, "api", declared.URL))

	if conn, err := c.transport.DialContext(context.Background(), "tcp", other.addr()); err == nil {
		conn.Close()
		t.Fatal("dialer connected to an undeclared address")
	}
	if conn, err := c.transport.DialContext(context.Background(), "udp", declared.addr()); err == nil {
		conn.Close()
		t.Fatal("dialer accepted network udp")
	}
	// Even a request the transport is handed directly goes nowhere else.
	r, _ := http.NewRequest("GET", other.URL, nil)
	if resp, err := c.transport.RoundTrip(r); err == nil {
		resp.Body.Close()
		t.Fatal("transport reached an undeclared server")
	}
	other.assertUntouched(t, "undeclared server")

	conn, err := c.transport.DialContext(context.Background(), "tcp", declared.addr())
	if err != nil {
		t.Fatalf("dialing the declared upstream: %v", err)
	}
	conn.Close()
}

func TestUnknownUpstream(t *testing.T) {
	srv := newTestServer(t, false, nil)
	c := newTestClient(t, Options{}, mustUpstream(t, "api", srv.URL))
	for _, name := range []string{"", "API", "other", srv.URL, srv.addr()} {
		req := newRequest(name, "/", "a.example")
		if err := c.Check(req); !errors.Is(err, ErrUnknownUpstream) {
			t.Errorf("Check(upstream %q) = %v, want ErrUnknownUpstream", name, err)
		}
		if _, err := c.Do(context.Background(), req); !errors.Is(err, ErrUnknownUpstream) {
			t.Errorf("Do(upstream %q) = %v, want ErrUnknownUpstream", name, err)
		}
	}
	srv.assertUntouched(t, "upstream")
}

func TestBadRequests(t *testing.T) {
	srv := newTestServer(t, false, nil)
	c := newTestClient(t, Options{}, mustUpstream(t, "api", srv.URL))

	without := func(name string) func(*Request) {
		return func(r *Request) {
			r.Headers = slices.DeleteFunc(r.Headers, func(kv [2]string) bool { return kv[0] == name })
		}
	}
	set := func(name, value string) func(*Request) {
		return func(r *Request) {
			for i := range r.Headers {
				if r.Headers[i][0] == name {
					r.Headers[i][1] = value
				}
			}
		}
	}
	add := func(name, value string) func(*Request) {
		return func(r *Request) { r.Headers = append(r.Headers, [2]string{name, value}) }
	}
	trailer := func(name, value string) func(*Request) {
		return func(r *Request) { r.Trailers = append(r.Trailers, [2]string{name, value}) }
	}
	many := func(r *Request) {
		for i := len(r.Headers); i <= MaxHeaderPairs; i++ {
			r.Headers = append(r.Headers, [2]string{"x-h", "v"})
		}
	}
	big := add("x-big", strings.Repeat("a", MaxHeaderBytes))
	cases := []struct {
		name   string
		change func(*Request)
	}{
		{"missing :method", without(":method")},
		{"missing :path", without(":path")},
		{"missing :authority", without(":authority")},
		{"duplicate :path", add(":path", "/other")},
		{"unknown pseudo-header", add(":protocol", "websocket")},
		{"uppercase pseudo-header", add(":Method", "GET")},
		{"method with space", set(":method", "G ET")},
		{"method with CRLF", set(":method", "GET\r\n")},
		{"empty method", set(":method", "")},
		{"CONNECT", set(":method", "CONNECT")},
		{"empty path", set(":path", "")},
		{"relative path", set(":path", "ok")},
		{"asterisk path", set(":path", "*")},
		{"absolute-form path", set(":path", "http://evil.example/")},
		{"authority-form path", set(":path", "evil.example:80")},
		{"path with space", set(":path", "/a HTTP/1.1\r\nHost: x")},
		{"path with CRLF", set(":path", "/a\r\nX-Injected: 1")},
		{"path with LF", set(":path", "/a\nb")},
		{"path with CR", set(":path", "/a\rb")},
		{"path with NUL", set(":path", "/a\x00")},
		{"path with fragment", set(":path", "/a#frag")},
		{"path with tab", set(":path", "/a\tb")},
		{"path with DEL", set(":path", "/\x7f")},
		{"path with non-ASCII", set(":path", "/é")},
		{"path with bad escape", set(":path", "/%zz")},
		{"empty authority", set(":authority", "")},
		{"authority with space", set(":authority", "a b")},
		{"authority with CRLF", set(":authority", "a\r\nX-Injected: 1")},
		{"authority with slash", set(":authority", "a/b")},
		{"authority with userinfo", set(":authority", "u@h")},
		{"authority with NUL", set(":authority", "h\x00")},
		{"scheme with CRLF", add(":scheme", "http\r\nX: y")},
		{"header name with space", add("bad name", "v")},
		{"empty header name", add("", "v")},
		{"header name with colon", add("x:y", "v")},
		{"header name with CRLF", add("x\r\ny", "v")},
		{"header name non-ASCII", add("é", "v")},
		{"header value with CR", add("x-v", "a\rb")},
		{"header value with LF", add("x-v", "a\nb")},
		{"header value with NUL", add("x-v", "a\x00b")},
		{"header value with CRLF", add("x-v", "a\r\nX-Injected: 1")},
		{"trailer name with space", trailer("bad name", "v")},
		{"trailer value with CRLF", trailer("x-t", "a\r\nX-Injected: 1")},
		{"pseudo-header trailer", trailer(":status", "200")},
		{"too many headers", many},
		{"headers too large", big},
		{"too many trailers", func(r *Request) {
			for i := 0; i <= MaxHeaderPairs; i++ {
				r.Trailers = append(r.Trailers, [2]string{"x-t", "v"})
			}
		}},
		{"negative timeout", func(r *Request) { r.Timeout = -time.Second }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req := newRequest("api", "/ok", "a.example")
			tc.change(req)
			if err := c.Check(req); !errors.Is(err, ErrBadRequest) {
				t.Errorf("Check = %v, want ErrBadRequest", err)
			}
			if _, err := c.Do(context.Background(), req); !errors.Is(err, ErrBadRequest) {
				t.Errorf("Do = %v, want ErrBadRequest", err)
			}
		})
	}
	if err := c.Check(nil); !errors.Is(err, ErrBadRequest) {
		t.Errorf("Check(nil) = %v, want ErrBadRequest", err)
	}
	srv.assertUntouched(t, "upstream")

	// The base request is fine: the cases above fail for their change.
	if _, err := c.Do(context.Background(), newRequest("api", "/ok", "a.example")); err != nil {
		t.Fatal(err)
	}
}

func TestErrorTextIsClipped(t *testing.T) {
	c := newTestClient(t, Options{}, mustUpstream(t, "api", "http://127.0.0.1:1"))
	req := newRequest("api", "/", "a.example", [2]string{strings.Repeat("x", 10000) + " ", "v"})
	err := c.Check(req)
	if !errors.Is(err, ErrBadRequest) || len(err.Error()) > 200 {
		t.Errorf("Check = %.300v (len %d), want a short ErrBadRequest", err, len(err.Error()))
	}
}

func TestHeaderLimitsBoundary(t *testing.T) {
	got := make(chan int, 1)
	srv := newTestServer(t, false, func(w http.ResponseWriter, r *http.Request) { got <- len(r.Header["X-H"]) })
	c := newTestClient(t, Options{}, mustUpstream(t, "api", srv.URL))
	req := newRequest("api", "/", "a.example")
	for len(req.Headers) < MaxHeaderPairs {
		req.Headers = append(req.Headers, [2]string{"x-h", "v"})
	}
	if _, err := c.Do(context.Background(), req); err != nil {
		t.Fatalf("%d pairs: %v", MaxHeaderPairs, err)
	}
	if n := <-got; n != MaxHeaderPairs-3 {
		t.Errorf("server saw %d x-h values, want %d", n, MaxHeaderPairs-3)
	}

	// Serialized size: exactly at the limit passes the check.
	req = newRequest("api", "/", "a.example", [2]string{"x-big", ""})
	pad := MaxHeaderBytes - abi.HeaderMapSize(req.Headers)
	req.Headers[3][1] = strings.Repeat("a", pad)
	if err := c.Check(req); err != nil {
		t.Errorf("headers of exactly %d bytes: %v", MaxHeaderBytes, err)
	}
	req.Headers[3][1] += "a"
	if err := c.Check(req); !errors.Is(err, ErrBadRequest) {
		t.Errorf("headers of %d bytes: %v, want ErrBadRequest", MaxHeaderBytes+1, err)
	}
}

func TestRedirectNotFollowed(t *testing.T) {
	target := newTestServer(t, false, nil)
	srv := newTestServer(t, false, func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, target.URL+"/landing", http.StatusFound)
	})
	c := newTestClient(t, Options{}, mustUpstream(t, "api", srv.URL))
	resp, err := c.Do(context.Background(), newRequest("api", "/", "a.example"))
	if err != nil {
		t.Fatal(err)
	}
	if resp.Headers[0][1] != "302" {
		t.Errorf("status %q, want 302", resp.Headers[0][1])
	}
	if v := header(resp, "location"); !slices.Equal(v, []string{target.URL + "/landing"}) {
		t.Errorf("location = %q", v)
	}
	target.assertUntouched(t, "redirect target")
}

func TestEnvironmentProxyIgnored(t *testing.T) {
	proxy := newTestServer(t, false, nil)
	srv := newTestServer(t, false, nil)
	for _, k := range []string{"HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY"} {
		t.Setenv(k, proxy.URL)
	}
	t.Setenv("NO_PROXY", "")
	t.Setenv("no_proxy", "")

	// A name that is not loopback: the environment's proxy rules exempt
	// 127.0.0.1 and localhost, which would make this test vacuous.
	_, port, _ := net.SplitHostPort(srv.addr())
	c := newTestClient(t, Options{}, mustUpstream(t, "api", "http://upstream.test:"+port))
	real := c.dial
	c.dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
		if addr == "upstream.test:"+port {
			addr = srv.addr()
		}
		return real(ctx, network, addr)
	}
	if c.transport.Proxy != nil {
		t.Fatal("transport has a Proxy function")
	}
	if _, err := c.Do(context.Background(), newRequest("api", "/", "upstream.test")); err != nil {
		t.Fatal(err)
	}
	if srv.hits.Load() != 1 {
		t.Errorf("upstream saw %d requests, want 1", srv.hits.Load())
	}
	proxy.assertUntouched(t, "proxy")
}

func TestResponseTooLarge(t *testing.T) {
	const limit = 100
	srv := newTestServer(t, false, func(w http.ResponseWriter, r *http.Request) {
		var n int
		fmt.Sscan(r.URL.Query().Get("n"), &n)
		if r.URL.Query().Get("chunked") != "" {
			w.WriteHeader(http.StatusOK)
			w.(http.Flusher).Flush() // no Content-Length
		} else {
			w.Header().Set("Content-Length", fmt.Sprint(n))
		}
		if r.Method != http.MethodHead {
			w.Write([]byte(strings.Repeat("x", n)))
		}
	})
	c := newTestClient(t, Options{MaxResponseBytes: limit}, mustUpstream(t, "api", srv.URL))
	cases := []struct {
		method, path string
		tooLarge     bool
	}{
		{"GET", "/?n=100", false},
		{"GET", "/?n=101", true},
		{"GET", "/?n=100&chunked=1", false},
		{"GET", "/?n=101&chunked=1", true},
		{"GET", "/?n=1000000&chunked=1", true},
		{"HEAD", "/?n=1000", false}, // announces a length it does not send
	}
	for _, tc := range cases {
		req := newRequest("api", tc.path, "a.example")
		req.Headers[0][1] = tc.method
		resp, err := c.Do(context.Background(), req)
		if tc.tooLarge {
			if !errors.Is(err, ErrResponseTooLarge) {
				t.Errorf("%s %s: %v, want ErrResponseTooLarge", tc.method, tc.path, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s %s: %v", tc.method, tc.path, err)
			continue
		}
		if want := map[string]int{"GET": limit, "HEAD": 0}[tc.method]; len(resp.Body) != want {
			t.Errorf("%s %s: body of %d bytes, want %d", tc.method, tc.path, len(resp.Body), want)
		}
		if strings.Contains(tc.path, "chunked") && header(resp, "content-length") != nil {
			t.Errorf("%s %s: response had a Content-Length; the case tests reading without one", tc.method, tc.path)
		}
	}
}

func TestResponseHeadersTooLarge(t *testing.T) {
	srv := newTestServer(t, false, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Big", strings.Repeat("a", maxResponseHeaderBytes+1))
	})
	c := newTestClient(t, Options{}, mustUpstream(t, "api", srv.URL))
	if _, err := c.Do(context.Background(), newRequest("api", "/", "a.example")); err == nil {
		t.Fatal("response headers over the limit were accepted")
	}
}

// slowServer answers after 5s, or when the client goes away.
func slowServer(t *testing.T) *testServer {
	return newTestServer(t, false, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-time.After(5 * time.Second):
		}
	})
}

func TestTimeouts(t *testing.T) {
	srv := slowServer(t)
	up := mustUpstream(t, "api", srv.URL)
	cases := []struct {
		name    string
		opts    Options
		timeout time.Duration
	}{
		{"request timeout", Options{}, 200 * time.Millisecond},
		{"capped at MaxTimeout", Options{MaxTimeout: 200 * time.Millisecond}, time.Minute},
		{"DefaultTimeout for 0", Options{DefaultTimeout: 200 * time.Millisecond}, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := newTestClient(t, tc.opts, up)
			req := newRequest("api", "/", "a.example")
			req.Timeout = tc.timeout
			start := time.Now()
			_, err := c.Do(context.Background(), req)
			elapsed := time.Since(start)
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("Do = %v, want a deadline error", err)
			}
			if elapsed < 150*time.Millisecond || elapsed > time.Second {
				t.Errorf("Do returned after %v, want about 200ms", elapsed)
			}
		})
	}
}

func TestContextCancelStopsCall(t *testing.T) {
	srv := slowServer(t)
	c := newTestClient(t, Options{}, mustUpstream(t, "api", srv.URL))
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	req := newRequest("api", "/", "a.example")
	req.Timeout = 10 * time.Second
	start := time.Now()
	_, err := c.Do(ctx, req)
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Do = %v, want context.Canceled", err)
	}
	if elapsed := time.Since(start); elapsed > time.Second {
		t.Errorf("Do returned after %v, want about 100ms", elapsed)
	}
}

func TestMaxInFlight(t *testing.T) {
	const n = 2
	arrived := make(chan struct{}, 16)
	release := make(chan struct{})
	srv := newTestServer(t, false, func(w http.ResponseWriter, r *http.Request) {
		arrived <- struct{}{}
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	c := newTestClient(t, Options{MaxInFlight: n}, mustUpstream(t, "api", srv.URL))

	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		wg.Go(func() {
			_, err := c.Do(context.Background(), newRequest("api", "/", "a.example"))
			errs <- err
		})
	}
	for range n {
		select {
		case <-arrived:
		case <-time.After(2 * time.Second):
			t.Fatal("calls did not reach the server")
		}
	}

	req := newRequest("api", "/", "a.example")
	if err := c.Check(req); err != nil {
		t.Errorf("Check with the client full: %v; Check must not take a slot", err)
	}
	start := time.Now()
	if _, err := c.Do(context.Background(), req); !errors.Is(err, ErrTooManyCalls) {
		t.Errorf("call %d: %v, want ErrTooManyCalls", n+1, err)
	}
	if elapsed := time.Since(start); elapsed > 250*time.Millisecond {
		t.Errorf("refusal took %v, want immediate", elapsed)
	}
	if h := srv.hits.Load(); h != n {
		t.Errorf("server saw %d requests, want %d", h, n)
	}

	close(release)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("blocked call: %v", err)
		}
	}
	if _, err := c.Do(context.Background(), req); err != nil {
		t.Errorf("call after the others finished: %v", err)
	}
}

func TestConnectionRefused(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	c := newTestClient(t, Options{}, mustUpstream(t, "api", "http://"+addr))
	_, err = c.Do(context.Background(), newRequest("api", "/", "a.example"))
	if err == nil {
		t.Fatal("call to a closed port succeeded")
	}
	var op *net.OpError
	if !errors.As(err, &op) || op.Op != "dial" {
		t.Errorf("Do = %v, want a dial error", err)
	}
}

func TestTLS(t *testing.T) {
	srv := newTestServer(t, true, func(w http.ResponseWriter, r *http.Request) {
		if r.TLS == nil {
			t.Error("request arrived without TLS")
		}
		io.WriteString(w, "secure")
	})
	up := mustUpstream(t, "api", srv.URL)
	pool := x509.NewCertPool()
	pool.AddCert(srv.Certificate())

	c := newTestClient(t, Options{TLSConfig: &tls.Config{RootCAs: pool}}, up)
	// :authority names a host the certificate does not cover: the
	// certificate is checked against the declared upstream.
	resp, err := c.Do(context.Background(), newRequest("api", "/", "evil.example"))
	if err != nil {
		t.Fatal(err)
	}
	if string(resp.Body) != "secure" {
		t.Errorf("body %q", resp.Body)
	}

	sys := newTestClient(t, Options{}, up)
	_, err = sys.Do(context.Background(), newRequest("api", "/", "a.example"))
	var verr *tls.CertificateVerificationError
	if !errors.As(err, &verr) {
		t.Errorf("with system roots: %v, want a certificate verification error", err)
	}
}

// waitFor polls cond for up to a second.
func waitFor(cond func() bool) bool {
	for deadline := time.Now().Add(time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if cond() {
			return true
		}
	}
	return cond()
}

func TestClose(t *testing.T) {
	srv := newTestServer(t, false, nil)
	c := newTestClient(t, Options{}, mustUpstream(t, "api", srv.URL))
	req := newRequest("api", "/", "a.example")
	if _, err := c.Do(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	c.Close()
	if !waitFor(func() bool { return srv.closed.Load() == 1 }) {
		t.Errorf("idle connection not closed by Close")
	}
	if _, err := c.Do(context.Background(), req); !errors.Is(err, ErrClosed) {
		t.Errorf("Do after Close = %v, want ErrClosed", err)
	}
	if err := c.Check(req); err != nil {
		t.Errorf("Check after Close = %v; validation does not depend on the client being open", err)
	}
	if h := srv.hits.Load(); h != 1 {
		t.Errorf("server saw %d requests, want 1", h)
	}
}

func TestCloseLetsCallsInFlightFinish(t *testing.T) {
	arrived := make(chan struct{}, 1)
	release := make(chan struct{})
	srv := newTestServer(t, false, func(w http.ResponseWriter, r *http.Request) {
		arrived <- struct{}{}
		<-release
		io.WriteString(w, "late")
	})
	c := newTestClient(t, Options{}, mustUpstream(t, "api", srv.URL))
	done := make(chan error, 1)
	go func() {
		resp, err := c.Do(context.Background(), newRequest("api", "/", "a.example"))
		if err == nil && string(resp.Body) != "late" {
			err = fmt.Errorf("body %q", resp.Body)
		}
		done <- err
	}()
	<-arrived
	c.Close()
	close(release)
	if err := <-done; err != nil {
		t.Errorf("call in flight during Close: %v", err)
	}
	if !waitFor(func() bool { return srv.closed.Load() == 1 }) {
		t.Errorf("connection of the call in flight not closed after it finished")
	}
}

func TestConnectionReuse(t *testing.T) {
	srv := newTestServer(t, false, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	c := newTestClient(t, Options{}, mustUpstream(t, "api", srv.URL))
	for range 3 {
		if _, err := c.Do(context.Background(), newRequest("api", "/", "a.example")); err != nil {
			t.Fatal(err)
		}
	}
	if n := srv.conns.Load(); n != 1 {
		t.Errorf("3 sequential calls used %d connections, want 1", n)
	}
}

func TestConcurrentCalls(t *testing.T) {
	srv := newTestServer(t, false, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Write(b)
	})
	c := newTestClient(t, Options{}, mustUpstream(t, "api", srv.URL))
	var wg sync.WaitGroup
	for i := range 32 {
		wg.Go(func() {
			req := newRequest("api", fmt.Sprintf("/%d", i), "a.example")
			req.Headers[0][1] = "POST"
			req.Body = []byte(fmt.Sprint(i))
			resp, err := c.Do(context.Background(), req)
			if err != nil {
				t.Error(err)
				return
			}
			if string(resp.Body) != fmt.Sprint(i) {
				t.Errorf("call %d: body %q", i, resp.Body)
			}
		})
	}
	wg.Wait()
}

type ctxKey struct{}

func TestPrepare(t *testing.T) {
	got := make(chan string, 1)
	srv := newTestServer(t, false, func(w http.ResponseWriter, r *http.Request) { got <- r.Header.Get("Traceparent") })
	other := newTestServer(t, false, nil)
	c := newTestClient(t, Options{Prepare: func(ctx context.Context, r *http.Request) {
		if v, ok := ctx.Value(ctxKey{}).(string); ok {
			r.Header.Set("Traceparent", v)
		}
	}}, mustUpstream(t, "api", srv.URL))
	ctx := context.WithValue(context.Background(), ctxKey{}, "00-abc-def-01")
	if _, err := c.Do(ctx, newRequest("api", "/", "a.example")); err != nil {
		t.Fatal(err)
	}
	if v := <-got; v != "00-abc-def-01" {
		t.Errorf("Traceparent = %q", v)
	}

	otherURL, _ := url.Parse(other.URL)
	bad := newTestClient(t, Options{Prepare: func(ctx context.Context, r *http.Request) { r.URL = otherURL }},
		mustUpstream(t, "api", srv.URL))
	if _, err := bad.Do(context.Background(), newRequest("api", "/", "a.example")); err == nil || !strings.Contains(err.Error(), "Prepare changed the URL") {
		t.Errorf("Do with a Prepare that changes the URL = %v, want it refused", err)
	}
	other.assertUntouched(t, "server Prepare pointed at")
}

func TestNewClient(t *testing.T) {
	a := mustUpstream(t, "b-auth", "http://127.0.0.1:1")
	b := mustUpstream(t, "a-api", "https://127.0.0.1:2")
	c := newTestClient(t, Options{}, a, b)
	if got := c.Upstreams(); !slices.Equal(got, []string{"a-api", "b-auth"}) {
		t.Errorf("Upstreams() = %q", got)
	}
	if c.opts.MaxResponseBytes != 1<<20 || c.opts.DefaultTimeout != 5*time.Second ||
		c.opts.MaxTimeout != 30*time.Second || cap(c.sem) != 256 {
		t.Errorf("defaults: %+v, in flight %d", c.opts, cap(c.sem))
	}
	if c.timeout(0) != 5*time.Second || c.timeout(time.Hour) != 30*time.Second || c.timeout(time.Second) != time.Second {
		t.Errorf("timeouts: %v %v %v", c.timeout(0), c.timeout(time.Hour), c.timeout(time.Second))
	}
	if c.client.Jar != nil || c.transport.Proxy != nil {
		t.Error("client has a cookie jar or a proxy")
	}
	if !c.allowed["127.0.0.1:1"] || !c.allowed["127.0.0.1:2"] || len(c.allowed) != 2 {
		t.Errorf("allowed addresses %v", c.allowed)
	}

	bad := []struct {
		name string
		ups  []Upstream
		opts Options
		want string
	}{
		{"duplicate", []Upstream{a, a}, Options{}, `duplicate upstream "b-auth"`},
		{"nil URL", []Upstream{{Name: "x"}}, Options{}, `upstream "x" has no URL`},
		{"invalid URL", []Upstream{{Name: "x", URL: &url.URL{Scheme: "ftp", Host: "h"}}}, Options{}, `upstream "x": URL "ftp://h" must be http or https`},
		{"URL with path", []Upstream{{Name: "x", URL: &url.URL{Scheme: "http", Host: "h", Path: "/p"}}}, Options{}, `upstream "x": URL "http://h/p" must not have a path`},
		{"negative MaxInFlight", nil, Options{MaxInFlight: -1}, "negative MaxInFlight"},
		{"negative MaxResponseBytes", nil, Options{MaxResponseBytes: -1}, "negative MaxResponseBytes"},
		{"negative timeout", nil, Options{DefaultTimeout: -1}, "negative DefaultTimeout"},
	}
	for _, tc := range bad {
		if _, err := NewClient(tc.ups, tc.opts); err == nil || err.Error() != tc.want {
			t.Errorf("%s: NewClient error %v, want %q", tc.name, err, tc.want)
		}
	}
}

func TestParseUpstream(t *testing.T) {
	good := []struct{ name, url, want string }{
		{"auth", "http://auth.internal:8080", "http://auth.internal:8080"},
		{"auth-v2.svc_1", "https://auth.internal/", "https://auth.internal"},
		{"a", "HTTP://Example.COM", "http://Example.COM"},
		{"a", "http://x:0080", "http://x:80"},
		{"a", "http://127.0.0.1:65535", "http://127.0.0.1:65535"},
		{"v6", "http://[::1]:8080", "http://[::1]:8080"},
		{"v6", "https://[::1]", "https://[::1]"},
		{"a", "http://x:1", "http://x:1"},
		{strings.Repeat("n", 256), "http://x", "http://x"},
	}
	for _, tc := range good {
		u, err := ParseUpstream(tc.name, tc.url)
		if err != nil {
			t.Errorf("ParseUpstream(%q, %q): %v", tc.name, tc.url, err)
			continue
		}
		if u.Name != tc.name || u.URL.String() != tc.want {
			t.Errorf("ParseUpstream(%q, %q) = %q %q, want %q", tc.name, tc.url, u.Name, u.URL, tc.want)
		}
	}

	bad := []struct{ name, url, want string }{
		{"", "http://x", `upstream name is empty`},
		{strings.Repeat("n", 257), "http://x", `upstream name "` + strings.Repeat("n", 64) + `..." is longer than 256 bytes`},
		{"a b", "http://x", `upstream name "a b" must be printable ASCII without spaces`},
		{"a\tb", "http://x", `upstream name "a\tb" must be printable ASCII without spaces`},
		{"é", "http://x", `upstream name "é" must be printable ASCII without spaces`},
		{"auth", "ftp://x", `upstream "auth": URL "ftp://x" must be http or https`},
		{"auth", "x.example:80", `upstream "auth": URL "x.example:80" must be http or https`},
		{"auth", "//x", `upstream "auth": URL "//x" must be http or https`},
		{"auth", "", `upstream "auth": URL "" must be http or https`},
		{"auth", "http://", `upstream "auth": URL "http://" has no host`},
		{"auth", "http:x", `upstream "auth": URL "http:x" has no host`},
		{"auth", "http://:80", `upstream "auth": URL "http://:80" has no host`},
		{"auth", "http://u:p@x", `upstream "auth": URL "http://u:p@x" must not have user info`},
		{"auth", "http://x/api", `upstream "auth": URL "http://x/api" must not have a path`},
		{"auth", "http://x?a=1", `upstream "auth": URL "http://x?a=1" must not have a query`},
		{"auth", "http://x/?", `upstream "auth": URL "http://x/?" must not have a query`},
		{"auth", "http://x#f", `upstream "auth": URL "http://x#f" must not have a fragment`},
		{"auth", "http://x#", `upstream "auth": URL "http://x#" must not have a fragment`},
		{"auth", "http://x:0", `upstream "auth": URL "http://x:0" must have a port from 1 to 65535`},
		{"auth", "http://x:65536", `upstream "auth": URL "http://x:65536" must have a port from 1 to 65535`},
		{"auth", "http://x:", `upstream "auth": URL "http://x:" has an empty port`},
		{"auth", "http://x:abc", `upstream "auth": URL "http://x:abc" is invalid: invalid port ":abc" after host`},
		{"auth", "http://bücher.example", `upstream "auth": URL "http://bücher.example" must have an ASCII host (use the punycode form)`},
		{"auth", "http://x\n", `upstream "auth": URL "http://x\n" is invalid: net/url: invalid control character in URL`},
	}
	for _, tc := range bad {
		_, err := ParseUpstream(tc.name, tc.url)
		if err == nil || err.Error() != tc.want {
			t.Errorf("ParseUpstream(%q, %q) error:\n got %v\nwant %s", tc.name, tc.url, err, tc.want)
		}
	}
}
