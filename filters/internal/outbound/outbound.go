// Package outbound makes the HTTP calls Proxy-Wasm filters ask for with
// proxy_http_call. Filters are tenant code and hostile, so a call may go
// only to an upstream the operator declared for the filter, and everything
// the guest supplies is validated before anything is sent:
//
//   - The connection goes to the declared upstream's host:port whatever the
//     guest's :authority says (that only becomes the Host header), and the
//     transport's dialer refuses any other address as a second line.
//   - No proxy from the environment, no redirects, no cookies.
//   - Request lines and headers that could split or smuggle a request are
//     refused (ErrBadRequest); hop-by-hop and framing headers are dropped.
//   - Responses, time and calls in flight are bounded.
//
// Calls speak HTTP/1.1 only.
package outbound

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// Errors a call fails with; the returned errors wrap them, so callers test
// with errors.Is.
var (
	// ErrUnknownUpstream: the request names no declared upstream
	// (Proxy-Wasm BAD_ARGUMENT).
	ErrUnknownUpstream = errors.New("unknown upstream")
	// ErrBadRequest: the request is malformed or unsafe to send
	// (Proxy-Wasm BAD_ARGUMENT).
	ErrBadRequest = errors.New("bad http call request")
	// ErrResponseTooLarge: the response body exceeded
	// Options.MaxResponseBytes.
	ErrResponseTooLarge = errors.New("http call response too large")
	// ErrTooManyCalls: the client already had Options.MaxInFlight calls in
	// flight.
	ErrTooManyCalls = errors.New("too many http calls in flight")
	// ErrClosed: the client was closed.
	ErrClosed = errors.New("http call client closed")
)

// Defaults for the zero values of Options' fields.
const (
	DefaultMaxResponseBytes = 1 << 20
	DefaultDefaultTimeout   = 5 * time.Second
	DefaultMaxTimeout       = 30 * time.Second
	DefaultMaxInFlight      = 256
)

// maxResponseHeaderBytes bounds the response headers the transport reads.
const maxResponseHeaderBytes = 1 << 20

// maxUpstreamName bounds an upstream's name.
const maxUpstreamName = 256

// Upstream is a destination the operator declared.
type Upstream struct {
	Name string
	URL  *url.URL // scheme http or https, a host, maybe a port; nothing else
}

// ParseUpstream checks a declaration and returns it, with its URL reduced
// to scheme and host[:port]. Errors say what is wrong, e.g.
// `upstream "auth": URL "ftp://x" must be http or https`.
func ParseUpstream(name, rawURL string) (Upstream, error) {
	if name == "" {
		return Upstream{}, errors.New("upstream name is empty")
	}
	if len(name) > maxUpstreamName {
		return Upstream{}, fmt.Errorf("upstream name %q is longer than %d bytes", clip(name), maxUpstreamName)
	}
	for i := 0; i < len(name); i++ {
		if b := name[i]; b <= ' ' || b >= 0x7f {
			return Upstream{}, fmt.Errorf("upstream name %q must be printable ASCII without spaces", clip(name))
		}
	}
	fail := func(what string) (Upstream, error) {
		return Upstream{}, fmt.Errorf("upstream %q: URL %q %s", name, rawURL, what)
	}
	u, err := url.Parse(rawURL)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // url.Error repeats the URL
		}
		return fail("is invalid: " + err.Error())
	}
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return fail("must be http or https")
	case u.Opaque != "" || u.Host == "" || u.Hostname() == "":
		return fail("has no host")
	case u.User != nil:
		return fail("must not have user info")
	case u.Path != "" && u.Path != "/":
		return fail("must not have a path")
	case u.RawQuery != "" || u.ForceQuery:
		return fail("must not have a query")
	case u.Fragment != "" || u.RawFragment != "" || strings.Contains(rawURL, "#"):
		return fail("must not have a fragment")
	}
	host := u.Hostname()
	for i := 0; i < len(host); i++ {
		if b := host[i]; b <= ' ' || b >= 0x7f {
			return fail("must have an ASCII host (use the punycode form)")
		}
	}
	port := u.Port()
	if port == "" && u.Host[len(u.Host)-1] == ':' {
		return fail("has an empty port")
	}
	if port != "" {
		n, err := strconv.Atoi(port)
		if err != nil || n < 1 || n > 65535 {
			return fail("must have a port from 1 to 65535")
		}
		port = strconv.Itoa(n)
	}
	// Rebuilt, so the URL, the request URLs and the dialer's allowed
	// addresses all derive from one canonical host[:port].
	h := host
	if port != "" {
		h = net.JoinHostPort(host, port)
	} else if strings.Contains(host, ":") {
		h = "[" + host + "]"
	}
	return Upstream{Name: name, URL: &url.URL{Scheme: u.Scheme, Host: h}}, nil
}

// Options configures a Client; zero values mean the defaults.
type Options struct {
	MaxResponseBytes int64         // default 1 MiB
	DefaultTimeout   time.Duration // default 5s
	MaxTimeout       time.Duration // default 30s
	MaxInFlight      int           // default 256
	TLSConfig        *tls.Config   // nil: system roots (tests pass one trusting their httptest TLS server)
	// Prepare, if set, is called on every outgoing *http.Request just before
	// it is sent (later used to inject trace context); it must not change
	// the URL.
	Prepare func(ctx context.Context, r *http.Request)
}

// upstream is a declared upstream, as the client uses it.
type upstream struct {
	name   string
	scheme string
	host   string // URL host: host[:port]
	addr   string // host:port, as the transport asks the dialer for it
}

// Client makes the calls of the filters that declared its upstreams. It is
// safe for concurrent use.
type Client struct {
	upstreams map[string]*upstream
	names     []string
	allowed   map[string]bool // addresses the dialer may connect to
	opts      Options
	transport *http.Transport
	client    *http.Client
	sem       chan struct{} // one token per call in flight
	closed    atomic.Bool

	// dial connects once the address was allowed; tests replace it to
	// resolve made-up names.
	dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

// NewClient returns a client for upstreams. It fails on duplicate names,
// invalid upstreams and negative options.
func NewClient(upstreams []Upstream, o Options) (*Client, error) {
	switch {
	case o.MaxResponseBytes < 0:
		return nil, errors.New("negative MaxResponseBytes")
	case o.DefaultTimeout < 0:
		return nil, errors.New("negative DefaultTimeout")
	case o.MaxTimeout < 0:
		return nil, errors.New("negative MaxTimeout")
	case o.MaxInFlight < 0:
		return nil, errors.New("negative MaxInFlight")
	}
	if o.MaxResponseBytes == 0 {
		o.MaxResponseBytes = DefaultMaxResponseBytes
	}
	if o.DefaultTimeout == 0 {
		o.DefaultTimeout = DefaultDefaultTimeout
	}
	if o.MaxTimeout == 0 {
		o.MaxTimeout = DefaultMaxTimeout
	}
	if o.MaxInFlight == 0 {
		o.MaxInFlight = DefaultMaxInFlight
	}

	c := &Client{
		upstreams: make(map[string]*upstream, len(upstreams)),
		allowed:   make(map[string]bool, len(upstreams)),
		opts:      o,
		sem:       make(chan struct{}, o.MaxInFlight),
	}
	for _, u := range upstreams {
		if u.URL == nil {
			return nil, fmt.Errorf("upstream %q has no URL", u.Name)
		}
		// Revalidated: an Upstream may have been built without
		// ParseUpstream.
		p, err := ParseUpstream(u.Name, u.URL.String())
		if err != nil {
			return nil, err
		}
		if c.upstreams[p.Name] != nil {
			return nil, fmt.Errorf("duplicate upstream %q", p.Name)
		}
		port := p.URL.Port()
		if port == "" {
			port = map[string]string{"http": "80", "https": "443"}[p.URL.Scheme]
		}
		up := &upstream{
			name:   p.Name,
			scheme: p.URL.Scheme,
			host:   p.URL.Host,
			addr:   net.JoinHostPort(p.URL.Hostname(), port),
		}
		c.upstreams[up.name] = up
		c.names = append(c.names, up.name)
		c.allowed[up.addr] = true
	}
	sort.Strings(c.names)

	d := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	c.dial = d.DialContext
	var tlsConf *tls.Config
	if o.TLSConfig != nil {
		tlsConf = o.TLSConfig.Clone()
	}
	protos := new(http.Protocols)
	protos.SetHTTP1(true)
	c.transport = &http.Transport{
		Proxy:                  nil, // HTTP_PROXY and friends must not reroute calls
		DialContext:            c.dialContext,
		TLSClientConfig:        tlsConf,
		TLSHandshakeTimeout:    10 * time.Second,
		DisableCompression:     true, // the guest sees the body as sent, and no Accept-Encoding is added
		MaxIdleConns:           128,
		MaxIdleConnsPerHost:    32,
		IdleConnTimeout:        90 * time.Second,
		MaxResponseHeaderBytes: maxResponseHeaderBytes,
		Protocols:              protos,
	}
	c.client = &http.Client{
		Transport: c.transport,
		// The guest gets the 3xx itself: following Location would take
		// the call to an undeclared destination.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return c, nil
}

// dialContext is the transport's dialer: it connects only to declared
// upstreams, whatever the request ended up asking for.
func (c *Client) dialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	if !c.allowed[addr] {
		return nil, fmt.Errorf("dial %s refused: not a declared upstream", addr)
	}
	switch network {
	case "tcp", "tcp4", "tcp6":
	default:
		return nil, fmt.Errorf("dial %s refused: network %q", addr, network)
	}
	return c.dial(ctx, network, addr)
}

// Upstreams returns the declared upstreams' names, sorted.
func (c *Client) Upstreams() []string { return append([]string(nil), c.names...) }

// Request is a guest's proxy_http_call.
type Request struct {
	Upstream string
	Headers  [][2]string // includes :method, :path, :authority
	Body     []byte
	Trailers [][2]string
	Timeout  time.Duration // 0: Options.DefaultTimeout; capped at Options.MaxTimeout
}

// Response is what the guest gets back.
type Response struct {
	Headers  [][2]string // ":status" first, then the response headers, names lowercase, sorted by name, values in received order
	Body     []byte
	Trailers [][2]string // lowercase, sorted
}

// Check validates a request without sending it: the host calls it
// synchronously inside proxy_http_call to return BAD_ARGUMENT
// (ErrUnknownUpstream, ErrBadRequest) before the call is dispatched. Do
// calls it too. Headers and trailers that DroppedHeader names are not an
// error; they are removed.
func (c *Client) Check(req *Request) error {
	_, err := c.check(req)
	return err
}

// Call is a request Prepare accepted, ready to Send.
type Call struct {
	req *Request
	cl  *call
}

// Prepare checks a request as Check does and returns it ready to Send, so
// that a host checking inside proxy_http_call and sending later does the
// work once.
func (c *Client) Prepare(req *Request) (*Call, error) {
	cl, err := c.check(req)
	if err != nil {
		return nil, err
	}
	return &Call{req: req, cl: cl}, nil
}

// timeout is the call's time limit.
func (c *Client) timeout(d time.Duration) time.Duration {
	if d == 0 {
		d = c.opts.DefaultTimeout
	}
	return min(d, c.opts.MaxTimeout)
}

// Do sends the request and reads the whole response. Network failures,
// timeouts, cancellation of ctx and oversized responses are errors. Do
// copies req.Body, so the caller may reuse it once Do returns.
func (c *Client) Do(ctx context.Context, req *Request) (*Response, error) {
	copied := *req
	copied.Body = bytes.Clone(req.Body)
	call, err := c.Prepare(&copied)
	if err != nil {
		return nil, err
	}
	return c.Send(ctx, call)
}

// Send sends a prepared call and reads the whole response, as Do does. It
// sends the request's body as it is: the caller must not change it after.
func (c *Client) Send(ctx context.Context, call *Call) (*Response, error) {
	req, cl := call.req, call.cl
	if c.closed.Load() {
		return nil, ErrClosed
	}
	select {
	case c.sem <- struct{}{}:
	default:
		return nil, ErrTooManyCalls
	}
	defer func() {
		<-c.sem
		// Connections returned to the pool after Close are closed by the
		// last calls out.
		if c.closed.Load() {
			c.transport.CloseIdleConnections()
		}
	}()

	timeout := c.timeout(req.Timeout)
	callCtx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	fail := func(err error) error {
		if perr := ctx.Err(); perr != nil {
			return fmt.Errorf("http call to upstream %q: %w", cl.up.name, perr)
		}
		if callCtx.Err() != nil {
			return fmt.Errorf("http call to upstream %q: timed out after %v: %w", cl.up.name, timeout, context.DeadlineExceeded)
		}
		return fmt.Errorf("http call to upstream %q: %w", cl.up.name, err)
	}

	hr := newHTTPRequest(callCtx, cl, req.Body)
	if c.opts.Prepare != nil {
		want := *hr.URL
		c.opts.Prepare(callCtx, hr)
		if hr.URL == nil || *hr.URL != want {
			return nil, fmt.Errorf("http call to upstream %q: Options.Prepare changed the URL", cl.up.name)
		}
	}
	resp, err := c.client.Do(hr)
	if err != nil {
		return nil, fail(err)
	}
	defer resp.Body.Close()

	max := c.opts.MaxResponseBytes
	tooLarge := func() error {
		return fmt.Errorf("http call to upstream %q: %w: more than %d bytes", cl.up.name, ErrResponseTooLarge, max)
	}
	// A HEAD response announces a length it does not send.
	if resp.ContentLength > max && cl.method != http.MethodHead {
		return nil, tooLarge()
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, max+1))
	if err != nil {
		return nil, fail(err)
	}
	if int64(len(body)) > max {
		return nil, tooLarge()
	}

	out := &Response{Body: body}
	out.Headers = make([][2]string, 0, 1+len(resp.Header))
	out.Headers = append(out.Headers, [2]string{":status", strconv.Itoa(resp.StatusCode)})
	out.Headers = flatten(resp.Header, out.Headers)
	if len(resp.Trailer) > 0 {
		out.Trailers = flatten(resp.Trailer, nil)
	}
	return out, nil
}

// newHTTPRequest builds the outgoing request for a validated call.
func newHTTPRequest(ctx context.Context, cl *call, body []byte) *http.Request {
	u := *cl.url
	hr := &http.Request{
		Method:     cl.method,
		URL:        &u,
		Proto:      "HTTP/1.1",
		ProtoMajor: 1,
		ProtoMinor: 1,
		Header:     cl.header,
		Host:       cl.authority,
	}
	if _, ok := hr.Header["User-Agent"]; !ok {
		// An empty value keeps Go from adding its own: the upstream sees
		// the guest's headers only.
		hr.Header["User-Agent"] = []string{""}
	}
	// The body is the call's own (Do copies it; Send's callers hand it
	// over): the transport may still read it after the response arrived,
	// when the upstream answered early.
	getBody := func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
	switch {
	case cl.trailer != nil:
		// Trailers need a chunked body. Said explicitly, so the transport
		// does not probe an empty body away (and the trailers with it).
		hr.Body, _ = getBody()
		hr.GetBody = getBody
		hr.ContentLength = -1
		hr.TransferEncoding = []string{"chunked"}
		hr.Trailer = cl.trailer
	case len(body) > 0:
		hr.Body, _ = getBody()
		hr.GetBody = getBody
		hr.ContentLength = int64(len(body))
	default:
		hr.Body = http.NoBody
	}
	return hr.WithContext(ctx)
}

// Close closes idle connections; calls after Close fail with ErrClosed.
// Calls in flight finish, and their connections are closed after them.
func (c *Client) Close() {
	c.closed.Store(true)
	c.transport.CloseIdleConnections()
}
