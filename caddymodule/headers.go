package caddymodule

import (
	"net/http"
	"net/textproto"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/net/http/httpguts"

	"github.com/sluice-edge/sluice/abi"
)

// What a filter may write into a header map is checked here: names must be
// tokens, values must hold no CR, LF or NUL, pseudo-headers must be valid,
// framing headers (content-length, transfer-encoding) cannot be duplicated or
// added, and a map cannot grow past maxHeaderBytes or abi.MaxHeaderPairs. A
// write that breaks a rule returns BAD_ARGUMENT and changes nothing, so no
// response splitting or request smuggling can start from a filter.

// maxHeaderBytes bounds a header map's serialized size after any write.
const maxHeaderBytes = abi.MaxHeaderBytes

// validField checks a regular (non-pseudo) header field.
func validField(name, value string) bool {
	if !httpguts.ValidHeaderFieldName(name) || !httpguts.ValidHeaderFieldValue(value) {
		return false
	}
	switch name {
	case "transfer-encoding":
		return false // framing is Caddy's business
	case "content-length":
		n, err := strconv.ParseInt(value, 10, 64)
		return err == nil && n >= 0 && !strings.HasPrefix(value, "+")
	}
	return true
}

// httpHeaderMap is the common part of the maps over an http.Header: regular
// fields, with pseudo-headers left to the embedding type.
type httpHeaderMap struct {
	h http.Header
	// prefix, when set, makes the map the keys with it (response trailers
	// kept in the header map); the size limits count only those.
	prefix string
}

func canonical(name string) string { return textproto.CanonicalMIMEHeaderKey(name) }

// get returns the values of name joined with ",", as a proxy joins repeated
// fields.
func (m httpHeaderMap) get(name string) (string, bool) {
	values := m.h[canonical(name)]
	if len(values) == 0 {
		return "", false
	}
	return strings.Join(values, ","), true
}

// appendPairs adds every field, names lowercase and sorted, one pair per
// value, skipping the names skip reports.
func (m httpHeaderMap) appendPairs(pairs [][2]string, skip func(key string) bool) [][2]string {
	keys := make([]string, 0, len(m.h))
	for k := range m.h {
		if skip == nil || !skip(k) {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	for _, k := range keys {
		lower := strings.ToLower(k)
		for _, v := range m.h[k] {
			pairs = append(pairs, [2]string{lower, v})
		}
	}
	return pairs
}

// fits reports whether the map stays within the size limits after adding
// addPairs pairs of addBytes bytes in all, with the values of the key
// replacing (if not empty) dropped.
func (m httpHeaderMap) fits(addPairs, addBytes int, replacing string) bool {
	pairs, size := addPairs, 4+addBytes
	for k, vs := range m.h {
		if k == replacing || !strings.HasPrefix(k, m.prefix) {
			continue
		}
		pairs += len(vs)
		for _, v := range vs {
			size += 8 + len(k) + len(v) + 2
		}
	}
	return pairs <= abi.MaxHeaderPairs && size <= maxHeaderBytes
}

// pairsFit reports whether pairs, as a whole map, stay within the limits.
func pairsFit(pairs [][2]string) bool {
	return len(pairs) <= abi.MaxHeaderPairs && abi.HeaderMapSize(pairs) <= maxHeaderBytes
}

// add appends a regular field. A second content-length is refused.
func (m httpHeaderMap) add(name, value string) abi.Status {
	name = strings.ToLower(name)
	if !validField(name, value) || !m.fits(1, len(name)+len(value)+10, "") {
		return abi.StatusBadArgument
	}
	if name == "content-length" && len(m.h["Content-Length"]) > 0 {
		return abi.StatusBadArgument
	}
	m.h.Add(canonical(name), value)
	return abi.StatusOK
}

// replace sets a regular field to one value.
func (m httpHeaderMap) replace(name, value string) abi.Status {
	name = strings.ToLower(name)
	if !validField(name, value) || !m.fits(1, len(name)+len(value)+10, canonical(name)) {
		return abi.StatusBadArgument
	}
	m.h[canonical(name)] = []string{value}
	return abi.StatusOK
}

// checkPairs validates a whole replacement map: every regular field, at most
// one content-length, the size limits, and the pseudo-headers with pseudo.
func checkPairs(pairs [][2]string, pseudo func(name, value string) bool) bool {
	if !pairsFit(pairs) {
		return false
	}
	lengths := 0
	for _, p := range pairs {
		name := strings.ToLower(p[0])
		if strings.HasPrefix(name, ":") {
			if !pseudo(name, p[1]) {
				return false
			}
			continue
		}
		if !validField(name, p[1]) {
			return false
		}
		if name == "content-length" {
			lengths++
		}
	}
	return lengths <= 1
}

// replaceAll rebuilds h from the regular fields of pairs.
func replaceAll(h http.Header, pairs [][2]string, keep func(key string) bool) {
	for k := range h {
		if keep == nil || !keep(k) {
			delete(h, k)
		}
	}
	for _, p := range pairs {
		if !strings.HasPrefix(p[0], ":") {
			h.Add(canonical(p[0]), p[1])
		}
	}
}

// requestHeaders is HTTP_REQUEST_HEADERS over a request being served. The
// pseudo-headers :method, :path, :authority and :scheme map onto the
// request's method, URL, Host and TLS state; host is :authority's alias.
type requestHeaders struct {
	r *http.Request
}

func (m requestHeaders) fields() httpHeaderMap { return httpHeaderMap{h: m.r.Header} }

func requestScheme(r *http.Request) string {
	if r.TLS != nil {
		return "https"
	}
	return "http"
}

// Get implements abi.HeaderMap.
func (m requestHeaders) Get(name string) (string, bool) {
	switch strings.ToLower(name) {
	case ":method":
		return m.r.Method, true
	case ":path":
		return m.r.URL.RequestURI(), true
	case ":authority", "host":
		return m.r.Host, true
	case ":scheme":
		return requestScheme(m.r), true
	}
	return m.fields().get(name)
}

// Pairs implements abi.HeaderMap.
func (m requestHeaders) Pairs() [][2]string {
	pairs := make([][2]string, 0, 4+len(m.r.Header))
	pairs = append(pairs,
		[2]string{":authority", m.r.Host},
		[2]string{":path", m.r.URL.RequestURI()},
		[2]string{":method", m.r.Method},
		[2]string{":scheme", requestScheme(m.r)})
	return m.fields().appendPairs(pairs, nil)
}

// validRequestPseudo checks a request pseudo-header (or host) value.
func (m requestHeaders) validPseudo(name, value string) bool {
	switch name {
	case ":method":
		return value != "" && strings.IndexFunc(value, func(c rune) bool { return !httpguts.IsTokenRune(c) }) < 0
	case ":path":
		if value == "*" {
			return m.r.Method == http.MethodOptions
		}
		u, err := url.ParseRequestURI(value)
		return err == nil && strings.HasPrefix(value, "/") && u.Host == "" &&
			strings.IndexFunc(value, func(c rune) bool { return c <= ' ' || c == 0x7f }) < 0
	case ":authority", "host":
		return value != "" && httpguts.ValidHostHeader(value)
	case ":scheme":
		return value == requestScheme(m.r)
	}
	return false
}

// setPseudo applies a valid pseudo-header (or host) value.
func (m requestHeaders) setPseudo(name, value string) {
	switch name {
	case ":method":
		m.r.Method = value
	case ":path":
		if value == "*" {
			m.r.URL.Path, m.r.URL.RawPath, m.r.URL.RawQuery = "*", "", ""
		} else {
			u, _ := url.ParseRequestURI(value)
			m.r.URL.Path, m.r.URL.RawPath, m.r.URL.RawQuery = u.Path, u.RawPath, u.RawQuery
		}
		m.r.RequestURI = value
	case ":authority", "host":
		m.r.Host = value
	}
}

// syncContentLength keeps the request's ContentLength, which is what Caddy's
// reverse proxy sends, in step with the content-length field.
func (m requestHeaders) syncContentLength() {
	if v := m.r.Header.Get("Content-Length"); v != "" {
		m.r.ContentLength, _ = strconv.ParseInt(v, 10, 64)
	} else if !bodyless(m.r) {
		m.r.ContentLength = -1
	}
}

// SetPairs implements abi.HeaderMap. Pseudo-headers missing from pairs keep
// their values.
func (m requestHeaders) SetPairs(pairs [][2]string) abi.Status {
	if !checkPairs(pairs, m.validPseudo) {
		return abi.StatusBadArgument
	}
	for _, p := range pairs {
		// host is :authority's alias and gets its rules, which checkPairs
		// (regular-field rules) does not apply.
		if strings.EqualFold(p[0], "host") && !m.validPseudo("host", p[1]) {
			return abi.StatusBadArgument
		}
	}
	var host string
	for _, p := range pairs {
		switch name := strings.ToLower(p[0]); {
		case name == "host":
			host = p[1]
		case strings.HasPrefix(name, ":"):
			m.setPseudo(name, p[1])
		}
	}
	replaceAll(m.r.Header, pairs, nil)
	m.r.Header.Del("Host")
	if host != "" {
		m.r.Host = host
	}
	m.syncContentLength()
	return abi.StatusOK
}

// Add implements abi.HeaderMap. Adding to a pseudo-header or host replaces
// it: those hold one value.
func (m requestHeaders) Add(name, value string) abi.Status {
	if lower := strings.ToLower(name); lower == "host" || strings.HasPrefix(lower, ":") {
		return m.Replace(name, value)
	}
	st := m.fields().add(name, value)
	m.syncContentLength()
	return st
}

// Replace implements abi.HeaderMap.
func (m requestHeaders) Replace(name, value string) abi.Status {
	lower := strings.ToLower(name)
	if lower == "host" || strings.HasPrefix(lower, ":") {
		if !m.validPseudo(lower, value) {
			return abi.StatusBadArgument
		}
		m.setPseudo(lower, value)
		return abi.StatusOK
	}
	st := m.fields().replace(name, value)
	m.syncContentLength()
	return st
}

// Remove implements abi.HeaderMap. Pseudo-headers and host cannot be removed.
func (m requestHeaders) Remove(name string) abi.Status {
	lower := strings.ToLower(name)
	if lower == "host" || strings.HasPrefix(lower, ":") {
		return abi.StatusBadArgument
	}
	m.r.Header.Del(canonical(lower))
	m.syncContentLength()
	return abi.StatusOK
}

// responseHeaders is HTTP_RESPONSE_HEADERS over the response a filter
// intercepts: the response writer's header map and its status (:status).
// Trailer fields (declared or prefixed with http.TrailerPrefix) belong to
// the trailers map, not this one.
type responseHeaders struct {
	rw *responseWriter
}

func (m responseHeaders) fields() httpHeaderMap { return httpHeaderMap{h: m.rw.Header()} }

func isTrailerKey(key string) bool { return strings.HasPrefix(key, http.TrailerPrefix) }

// validStatus accepts a final status a filter may set.
func validStatus(value string) bool {
	code, err := strconv.Atoi(value)
	return err == nil && len(value) == 3 && code >= 200 && code <= 599
}

// Get implements abi.HeaderMap.
func (m responseHeaders) Get(name string) (string, bool) {
	if strings.ToLower(name) == ":status" {
		return strconv.Itoa(m.rw.status), true
	}
	if isTrailerKey(name) {
		return "", false
	}
	return m.fields().get(name)
}

// Pairs implements abi.HeaderMap.
func (m responseHeaders) Pairs() [][2]string {
	pairs := make([][2]string, 0, 1+len(m.rw.Header()))
	pairs = append(pairs, [2]string{":status", strconv.Itoa(m.rw.status)})
	return m.fields().appendPairs(pairs, isTrailerKey)
}

func (m responseHeaders) validPseudo(name, value string) bool {
	return name == ":status" && validStatus(value) && m.rw.status != http.StatusSwitchingProtocols
}

// SetPairs implements abi.HeaderMap.
func (m responseHeaders) SetPairs(pairs [][2]string) abi.Status {
	if !checkPairs(pairs, m.validPseudo) {
		return abi.StatusBadArgument
	}
	for _, p := range pairs {
		if strings.ToLower(p[0]) == ":status" { // checkPairs matched it case-insensitively
			m.rw.status, _ = strconv.Atoi(p[1])
		}
	}
	replaceAll(m.rw.Header(), pairs, isTrailerKey)
	return abi.StatusOK
}

// Add implements abi.HeaderMap.
func (m responseHeaders) Add(name, value string) abi.Status {
	if strings.HasPrefix(name, ":") {
		return m.Replace(name, value)
	}
	return m.fields().add(name, value)
}

// Replace implements abi.HeaderMap.
func (m responseHeaders) Replace(name, value string) abi.Status {
	if strings.HasPrefix(name, ":") {
		if !m.validPseudo(strings.ToLower(name), value) {
			return abi.StatusBadArgument
		}
		m.rw.status, _ = strconv.Atoi(value)
		return abi.StatusOK
	}
	return m.fields().replace(name, value)
}

// Remove implements abi.HeaderMap.
func (m responseHeaders) Remove(name string) abi.Status {
	if strings.HasPrefix(name, ":") {
		return abi.StatusBadArgument
	}
	m.rw.Header().Del(canonical(name))
	return abi.StatusOK
}

// trailerMap is a trailers map (request or response) over an http.Header
// whose keys all are trailers. Trailers have no pseudo-headers.
type trailerMap struct {
	h      http.Header
	prefix string // http.TrailerPrefix for response trailers set in the header map
}

// validTrailer checks a trailer field: a valid field that is not one of the
// fields a trailer must not carry (RFC 9110, section 6.5.1): framing,
// routing, and the trailer declaration itself.
func validTrailer(name, value string) bool {
	switch name {
	case "content-length", "host", "trailer", "te", "content-encoding", "content-type", "content-range":
		return false
	}
	return validField(name, value)
}

// checkTrailerPairs validates a whole replacement trailer map.
func checkTrailerPairs(pairs [][2]string) bool {
	if !pairsFit(pairs) {
		return false
	}
	for _, p := range pairs {
		if !validTrailer(strings.ToLower(p[0]), p[1]) {
			return false
		}
	}
	return true
}

// fields is the trailers as an httpHeaderMap, limits counting only them.
func (m trailerMap) fields() httpHeaderMap { return httpHeaderMap{h: m.h, prefix: m.prefix} }

// Get implements abi.HeaderMap.
func (m trailerMap) Get(name string) (string, bool) {
	return m.fields().get(m.prefix + canonical(name))
}

// Pairs implements abi.HeaderMap.
func (m trailerMap) Pairs() [][2]string {
	var pairs [][2]string
	for k, vs := range m.h {
		if m.prefix != "" && !strings.HasPrefix(k, m.prefix) {
			continue
		}
		for _, v := range vs {
			pairs = append(pairs, [2]string{strings.ToLower(strings.TrimPrefix(k, m.prefix)), v})
		}
	}
	slices.SortStableFunc(pairs, func(a, b [2]string) int { return strings.Compare(a[0], b[0]) })
	return pairs
}

// SetPairs implements abi.HeaderMap.
func (m trailerMap) SetPairs(pairs [][2]string) abi.Status {
	if !checkTrailerPairs(pairs) {
		return abi.StatusBadArgument
	}
	for k := range m.h {
		if strings.HasPrefix(k, m.prefix) {
			delete(m.h, k)
		}
	}
	for _, p := range pairs {
		m.h.Add(m.prefix+canonical(p[0]), p[1])
	}
	return abi.StatusOK
}

// Add implements abi.HeaderMap.
func (m trailerMap) Add(name, value string) abi.Status {
	if !validTrailer(strings.ToLower(name), value) || !m.fields().fits(1, len(name)+len(value)+10, "") {
		return abi.StatusBadArgument
	}
	m.h.Add(m.prefix+canonical(name), value)
	return abi.StatusOK
}

// Replace implements abi.HeaderMap.
func (m trailerMap) Replace(name, value string) abi.Status {
	key := m.prefix + canonical(name)
	if !validTrailer(strings.ToLower(name), value) || !m.fields().fits(1, len(name)+len(value)+10, key) {
		return abi.StatusBadArgument
	}
	m.h[m.prefix+canonical(name)] = []string{value}
	return abi.StatusOK
}

// Remove implements abi.HeaderMap.
func (m trailerMap) Remove(name string) abi.Status {
	delete(m.h, m.prefix+canonical(name))
	return abi.StatusOK
}

// validLocalResponseHeaders checks the headers of a local response: regular
// fields only, under the same rules as any other write.
func validLocalResponseHeaders(pairs [][2]string) bool {
	return checkPairs(pairs, func(name, value string) bool { return name == ":status" && validStatus(value) })
}

// Interface guards
var (
	_ abi.HeaderMap = requestHeaders{}
	_ abi.HeaderMap = responseHeaders{}
	_ abi.HeaderMap = trailerMap{}
)
