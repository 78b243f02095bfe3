package outbound

import (
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strings"

	"golang.org/x/net/http/httpguts"

	"github.com/sluice-edge/sluice/abi"
)

// Limits on a request's serialized headers (and, separately, its trailers):
// the guest's pairs become Go maps and strings, so their size is bounded
// before any of that work is done.
const (
	// MaxHeaderPairs is the most pairs a request's headers (or trailers)
	// may hold, pseudo-headers included.
	MaxHeaderPairs = 1000
	// MaxHeaderBytes bounds a request's headers (or trailers) in the
	// Proxy-Wasm serialized form (abi.HeaderMapSize).
	MaxHeaderBytes = 1 << 20
)

// droppedHeaders are the request headers (and trailers) a guest may not
// set; they are removed silently. They describe one hop or the message
// framing, which belong to the host: the transport sets Content-Length or
// Transfer-Encoding from the body, manages the connection itself, and
// writes the Host header from :authority and the Trailer header from the
// trailers.
var droppedHeaders = map[string]bool{
	"connection":        true,
	"keep-alive":        true,
	"proxy-connection":  true,
	"transfer-encoding": true,
	"upgrade":           true,
	"te":                true,
	"content-length":    true,
	"host":              true,
	"trailer":           true,
}

// DroppedHeader reports whether a request header or trailer named name
// (any case) is removed silently before the call is sent.
func DroppedHeader(name string) bool { return droppedHeaders[strings.ToLower(name)] }

// call is a validated request, ready to become an *http.Request.
type call struct {
	up        *upstream
	method    string
	url       *url.URL // the upstream's scheme and host, the guest's path and query
	authority string
	header    http.Header
	trailer   http.Header // nil when the request has none
}

// badRequest wraps ErrBadRequest with the reason.
func badRequest(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrBadRequest}, args...)...)
}

// clip shortens guest-supplied text quoted in error messages: a hostile
// guest must not fill the logs through them.
func clip(s string) string {
	const max = 64
	if len(s) <= max {
		return s
	}
	return s[:max] + "..."
}

// checkPairs bounds a serialized header map before it is looked at.
func checkPairs(what string, pairs [][2]string) error {
	if len(pairs) > MaxHeaderPairs {
		return badRequest("%d %s, more than %d", len(pairs), what, MaxHeaderPairs)
	}
	if n := abi.HeaderMapSize(pairs); n > MaxHeaderBytes {
		return badRequest("%s take %d bytes, more than %d", what, n, MaxHeaderBytes)
	}
	return nil
}

// checkField validates a regular header or trailer field: the transport
// would refuse most of these too, but only after the call was dispatched,
// and the guest must learn it from proxy_http_call's status.
func checkField(what, name, value string) error {
	if !httpguts.ValidHeaderFieldName(name) {
		return badRequest("%s name %q is not a valid token", what, clip(name))
	}
	if !httpguts.ValidHeaderFieldValue(value) {
		return badRequest("%s %q: value contains a control character", what, clip(name))
	}
	return nil
}

// addField appends a regular field to h unless it is one of the dropped
// names, keeping the guest's order of values.
func addField(h http.Header, name, value string) {
	if droppedHeaders[strings.ToLower(name)] {
		return
	}
	key := http.CanonicalHeaderKey(name)
	h[key] = append(h[key], value)
}

// checkPath accepts an origin-form request target: "/", then printable
// ASCII other than '#' (which would start a fragment). That excludes CR,
// LF, NUL, space and every other control byte, so the request line cannot
// be split, and a path starting with "/" cannot name another authority.
func checkPath(p string) error {
	if !strings.HasPrefix(p, "/") {
		return badRequest(":path %q must start with \"/\"", clip(p))
	}
	for i := 0; i < len(p); i++ {
		if b := p[i]; b <= ' ' || b >= 0x7f || b == '#' {
			return badRequest(":path %q: byte %#x not allowed", clip(p), b)
		}
	}
	return nil
}

// check validates req and turns it into a call.
func (c *Client) check(req *Request) (*call, error) {
	if req == nil {
		return nil, badRequest("nil request")
	}
	up := c.upstreams[req.Upstream]
	if up == nil {
		return nil, fmt.Errorf("%w %q", ErrUnknownUpstream, clip(req.Upstream))
	}
	if req.Timeout < 0 {
		return nil, badRequest("negative timeout %v", req.Timeout)
	}
	if err := checkPairs("headers", req.Headers); err != nil {
		return nil, err
	}
	if err := checkPairs("trailers", req.Trailers); err != nil {
		return nil, err
	}

	cl := &call{up: up, header: make(http.Header, len(req.Headers))}
	var path string
	var haveMethod, havePath, haveAuthority, haveScheme bool
	for _, kv := range req.Headers {
		name, value := kv[0], kv[1]
		if !strings.HasPrefix(name, ":") {
			if err := checkField("header", name, value); err != nil {
				return nil, err
			}
			addField(cl.header, name, value)
			continue
		}
		if !httpguts.ValidHeaderFieldValue(value) {
			return nil, badRequest("%s: value contains a control character", clip(name))
		}
		var seen *bool
		switch name {
		case ":method":
			seen = &haveMethod
			cl.method = value
		case ":path":
			seen = &havePath
			path = value
		case ":authority":
			seen = &haveAuthority
			cl.authority = value
		case ":scheme":
			// The declared upstream decides the scheme.
			seen = &haveScheme
		default:
			return nil, badRequest("unknown pseudo-header %q", clip(name))
		}
		if *seen {
			return nil, badRequest("duplicate %s", name)
		}
		*seen = true
	}

	switch {
	case !haveMethod:
		return nil, badRequest("missing :method")
	case !havePath:
		return nil, badRequest("missing :path")
	case !haveAuthority:
		return nil, badRequest("missing :authority")
	}
	if !httpguts.ValidHeaderFieldName(cl.method) {
		return nil, badRequest(":method %q is not a valid token", clip(cl.method))
	}
	if cl.method == http.MethodConnect {
		// A tunnel has no place in a buffered call.
		return nil, badRequest(":method CONNECT not allowed")
	}
	if cl.authority == "" || !httpguts.ValidHostHeader(cl.authority) {
		return nil, badRequest(":authority %q is not a valid host", clip(cl.authority))
	}
	if err := checkPath(path); err != nil {
		return nil, err
	}
	// The path starts with "/", so it cannot change the authority; the
	// check after parsing is defense in depth.
	u, err := url.Parse(up.scheme + "://" + up.host + path)
	if err != nil {
		return nil, badRequest(":path %q is not a valid request target", clip(path))
	}
	if u.Scheme != up.scheme || u.Host != up.host || u.User != nil || u.Opaque != "" || u.Fragment != "" {
		return nil, badRequest(":path %q changes the destination", clip(path))
	}
	cl.url = u

	for _, kv := range req.Trailers {
		name, value := kv[0], kv[1]
		if err := checkField("trailer", name, value); err != nil {
			return nil, err
		}
		if cl.trailer == nil {
			cl.trailer = make(http.Header)
		}
		addField(cl.trailer, name, value)
	}
	if len(cl.trailer) == 0 {
		cl.trailer = nil
	}
	return cl, nil
}

// flatten turns a received header map into Proxy-Wasm pairs: lowercase
// names, sorted so the guest sees a deterministic order, one pair per
// value with each name's values in the order received.
func flatten(h http.Header, dst [][2]string) [][2]string {
	keys := make([]string, 0, len(h))
	for k := range h {
		keys = append(keys, k)
	}
	// Sorted first, so that keys differing only in case (possible only
	// for names the parser did not canonicalize) merge in a fixed order.
	sort.Strings(keys)
	byName := make(map[string][]string, len(h))
	for _, k := range keys {
		lk := strings.ToLower(k)
		byName[lk] = append(byName[lk], h[k]...)
	}
	names := make([]string, 0, len(byName))
	for k := range byName {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		for _, v := range byName[k] {
			dst = append(dst, [2]string{k, v})
		}
	}
	return dst
}
