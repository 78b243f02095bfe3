package caddymodule

import (
	"net/http"
	"net/http/httptest"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/sluice-edge/sluice/abi"
)

// headerOp is one write a filter makes to a header map.
type headerOp struct {
	op    string // "add", "replace", "remove" or "set" (SetPairs)
	name  string
	value string
	pairs [][2]string
}

func (o headerOp) apply(m abi.HeaderMap) abi.Status {
	switch o.op {
	case "add":
		return m.Add(o.name, o.value)
	case "replace":
		return m.Replace(o.name, o.value)
	case "remove":
		return m.Remove(o.name)
	case "set":
		return m.SetPairs(o.pairs)
	}
	panic("unknown op " + o.op)
}

func add(name, value string) headerOp     { return headerOp{op: "add", name: name, value: value} }
func replace(name, value string) headerOp { return headerOp{op: "replace", name: name, value: value} }
func remove(name string) headerOp         { return headerOp{op: "remove", name: name} }
func set(pairs ...[2]string) headerOp     { return headerOp{op: "set", pairs: pairs} }

// requestState is everything a request header map may change.
type requestState struct {
	Method, Host, RequestURI, URL string
	Header                        http.Header
	ContentLength                 int64
}

func stateOf(r *http.Request) requestState {
	return requestState{r.Method, r.Host, r.RequestURI, r.URL.String(), r.Header.Clone(), r.ContentLength}
}

// tableRequest is a POST with a body, as Go's server hands it over.
func tableRequest() *http.Request {
	r := httptest.NewRequest(http.MethodPost, "/a?b=c", strings.NewReader("body"))
	r.Header.Set("Content-Length", "4")
	r.Header.Set("X-Existing", "1")
	return r
}

var (
	twoMiB = strings.Repeat("v", 2<<20)
	oneMiB = strings.Repeat("v", 1<<20)
)

func manyPairs(n int) [][2]string {
	pairs := make([][2]string, n)
	for i := range pairs {
		pairs[i] = [2]string{"x-h" + strconv.Itoa(i), "v"}
	}
	return pairs
}

// Invalid writes answer BAD_ARGUMENT and leave the request exactly as it
// was (H15, H16).
func TestRequestHeadersRejectInvalidWritesAndChangeNothing(t *testing.T) {
	tests := []struct {
		name string
		op   headerOp
	}{
		{"CRLF in value (add)", add("x-a", "v\r\nx-injected: 1")},
		{"CRLF in value (replace)", replace("x-existing", "v\r\n\r\nGET / HTTP/1.1")},
		{"LF in value", add("x-a", "v\nx")},
		{"CR in value", add("x-a", "v\rx")},
		{"NUL in value", add("x-a", "v\x00x")},
		{"CRLF in name", add("x-a\r\nx-b", "v")},
		{"LF in name", replace("x-a\nb", "v")},
		{"NUL in name", add("x-a\x00", "v")},
		{"space in name", add("x a", "v")},
		{"colon in name", add("x:a", "v")},
		{"empty name", add("", "v")},
		{"empty name (replace)", replace("", "v")},
		{"add transfer-encoding", add("transfer-encoding", "chunked")},
		{"replace Transfer-Encoding", replace("Transfer-Encoding", "chunked")},
		{"second content-length", add("content-length", "4")},
		{"content-length -1", replace("content-length", "-1")},
		{"content-length +5", replace("content-length", "+5")},
		{"content-length abc", replace("content-length", "abc")},
		{"content-length empty", replace("content-length", "")},
		{"content-length with space", replace("content-length", " 5")},
		{"content-length list", replace("content-length", "4, 4")},
		{":path without slash", replace(":path", "foo")},
		{":path absolute URL", replace(":path", "http://evil/x")},
		{":path with CRLF", replace(":path", "/a\r\nHost: evil")},
		{":path with bad escape", replace(":path", "/%zz")},
		{":path * on POST", replace(":path", "*")},
		{":path empty", replace(":path", "")},
		{":path with a space", replace(":path", "/a b")},
		{":path with a tab", replace(":path", "/a\tb")},
		{":method with space", replace(":method", "GET /x")},
		{":method empty", replace(":method", "")},
		{":method with CRLF", add(":method", "GET\r\n")},
		{":authority with spaces", replace(":authority", "evil com")},
		{":authority with CRLF", replace(":authority", "evil.com\r\nX: 1")},
		{":authority empty", replace(":authority", "")},
		{"host with spaces", replace("host", "a b")},
		{"Host via add with slash", add("Host", "a/b")},
		{":scheme change", replace(":scheme", "https")},
		{"unknown pseudo-header", replace(":protocol", "websocket")},
		{"remove :path", remove(":path")},
		{"remove :method", remove(":method")},
		{"remove :authority", remove(":authority")},
		{"remove :scheme", remove(":scheme")},
		{"remove host", remove("host")},
		{"2 MiB value (add)", add("x-big", twoMiB)},
		{"2 MiB value (replace)", replace("x-big", twoMiB)},
		{"2 MiB value (set)", set([2]string{"x-big", twoMiB})},
		{"5000 pairs", set(manyPairs(5000)...)},
		{"set with one bad value among good ones",
			set([2]string{":path", "/new"}, [2]string{"x-ok", "1"}, [2]string{"x-bad", "a\r\nb"})},
		{"set with a bad pseudo-header after good fields",
			set([2]string{"x-ok", "1"}, [2]string{":method", "G T"})},
		{"set with two content-lengths",
			set([2]string{"content-length", "4"}, [2]string{"Content-Length", "4"})},
		{"set with transfer-encoding", set([2]string{"transfer-encoding", "chunked"})},
		{"set with an invalid host", set([2]string{"host", "a b"}, [2]string{"x-ok", "1"})},
		{"set with a :path without slash", set([2]string{":path", "evil"})},
		{"set with an unknown pseudo-header", set([2]string{":foo", "1"})},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := tableRequest()
			before := stateOf(r)
			if st := tt.op.apply(requestHeaders{r}); st != abi.StatusBadArgument {
				t.Errorf("status %v, want BAD_ARGUMENT", st)
			}
			if after := stateOf(r); !reflect.DeepEqual(after, before) {
				t.Errorf("rejected write changed the request:\nbefore %+v\nafter  %+v", before, after)
			}
		})
	}
}

func TestRequestHeadersApplyValidWrites(t *testing.T) {
	tests := []struct {
		name  string
		op    headerOp
		check func(t *testing.T, r *http.Request)
	}{
		{"add a field", add("X-New", "1"), func(t *testing.T, r *http.Request) {
			wantValues(t, r.Header, "X-New", "1")
		}},
		{"add appends", add("x-existing", "2"), func(t *testing.T, r *http.Request) {
			wantValues(t, r.Header, "X-Existing", "1", "2")
		}},
		{"replace", replace("x-existing", "9"), func(t *testing.T, r *http.Request) {
			wantValues(t, r.Header, "X-Existing", "9")
		}},
		{"remove", remove("X-EXISTING"), func(t *testing.T, r *http.Request) {
			wantValues(t, r.Header, "X-Existing")
		}},
		{"remove a missing field", remove("x-nothing"), func(t *testing.T, r *http.Request) {}},
		{"tab and obs-text in a value", add("x-bin", "a\tb\x80\xff"), func(t *testing.T, r *http.Request) {
			wantValues(t, r.Header, "X-Bin", "a\tb\x80\xff")
		}},
		{":path with query", replace(":path", "/ok?q=1"), func(t *testing.T, r *http.Request) {
			if r.URL.Path != "/ok" || r.URL.RawQuery != "q=1" || r.RequestURI != "/ok?q=1" {
				t.Errorf("path %q query %q RequestURI %q", r.URL.Path, r.URL.RawQuery, r.RequestURI)
			}
		}},
		{":path with escapes keeps the raw path", replace(":path", "/a%2Fb"), func(t *testing.T, r *http.Request) {
			if r.URL.Path != "/a/b" || r.URL.EscapedPath() != "/a%2Fb" || r.URL.RawQuery != "" {
				t.Errorf("path %q escaped %q query %q", r.URL.Path, r.URL.EscapedPath(), r.URL.RawQuery)
			}
		}},
		{":method", replace(":method", "PUT"), func(t *testing.T, r *http.Request) {
			if r.Method != "PUT" {
				t.Errorf("method %q", r.Method)
			}
		}},
		{"add to :method replaces it", add(":method", "PATCH"), func(t *testing.T, r *http.Request) {
			if r.Method != "PATCH" {
				t.Errorf("method %q", r.Method)
			}
		}},
		{":authority", replace(":authority", "internal:8080"), func(t *testing.T, r *http.Request) {
			if r.Host != "internal:8080" {
				t.Errorf("host %q", r.Host)
			}
			wantValues(t, r.Header, "Host")
		}},
		{"host is :authority", replace("Host", "other.example"), func(t *testing.T, r *http.Request) {
			if r.Host != "other.example" {
				t.Errorf("host %q", r.Host)
			}
			wantValues(t, r.Header, "Host")
		}},
		{":scheme unchanged", replace(":scheme", "http"), func(t *testing.T, r *http.Request) {}},
		{"replace content-length syncs ContentLength", replace("content-length", "9"), func(t *testing.T, r *http.Request) {
			if r.ContentLength != 9 {
				t.Errorf("ContentLength %d", r.ContentLength)
			}
		}},
		{"remove content-length of a body", remove("content-length"), func(t *testing.T, r *http.Request) {
			if r.ContentLength != -1 {
				t.Errorf("ContentLength %d, want -1", r.ContentLength)
			}
		}},
		{"set replaces the whole map", set(
			[2]string{":method", "PUT"}, [2]string{":path", "/p?x=1"}, [2]string{":authority", "h.example"},
			[2]string{"x-new", "1"}, [2]string{"X-New", "2"}),
			func(t *testing.T, r *http.Request) {
				if r.Method != "PUT" || r.URL.Path != "/p" || r.URL.RawQuery != "x=1" || r.RequestURI != "/p?x=1" || r.Host != "h.example" {
					t.Errorf("method %q path %q query %q uri %q host %q", r.Method, r.URL.Path, r.URL.RawQuery, r.RequestURI, r.Host)
				}
				if want := (http.Header{"X-New": {"1", "2"}}); !reflect.DeepEqual(r.Header, want) {
					t.Errorf("header %v, want %v", r.Header, want)
				}
				if r.ContentLength != -1 {
					t.Errorf("ContentLength %d after content-length was left out, want -1", r.ContentLength)
				}
			}},
		{"set keeps pseudo-headers it leaves out", set([2]string{"x-only", "1"}, [2]string{"content-length", "4"}),
			func(t *testing.T, r *http.Request) {
				if r.Method != http.MethodPost || r.RequestURI != "/a?b=c" || r.Host != "example.com" {
					t.Errorf("method %q uri %q host %q", r.Method, r.RequestURI, r.Host)
				}
				if r.ContentLength != 4 {
					t.Errorf("ContentLength %d", r.ContentLength)
				}
			}},
		{"set host", set([2]string{"host", "h2.example"}), func(t *testing.T, r *http.Request) {
			if r.Host != "h2.example" {
				t.Errorf("host %q", r.Host)
			}
			wantValues(t, r.Header, "Host")
		}},
		{"set at the pair limit", set(manyPairs(abi.MaxHeaderPairs)...), func(t *testing.T, r *http.Request) {
			if len(r.Header) != abi.MaxHeaderPairs {
				t.Errorf("%d fields", len(r.Header))
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := tableRequest()
			if st := tt.op.apply(requestHeaders{r}); st != abi.StatusOK {
				t.Fatalf("status %v, want OK", st)
			}
			tt.check(t, r)
		})
	}
}

func wantValues(t *testing.T, h http.Header, key string, want ...string) {
	t.Helper()
	if got := h[key]; !slices.Equal(got, want) {
		t.Errorf("%s: %q, want %q", key, got, want)
	}
}

func TestRequestHeadersContentLengthRemovalWithoutBodyKeepsZero(t *testing.T) {
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	r.Header.Set("Content-Length", "0")
	if st := (requestHeaders{r}).Remove("content-length"); st != abi.StatusOK {
		t.Fatal(st)
	}
	if r.ContentLength != 0 {
		t.Errorf("ContentLength %d for a request without a body, want 0", r.ContentLength)
	}
}

func TestRequestHeadersPathStarOnlyForOptions(t *testing.T) {
	r := httptest.NewRequest(http.MethodOptions, "/", nil)
	if st := (requestHeaders{r}).Replace(":path", "*"); st != abi.StatusOK {
		t.Fatalf("OPTIONS * : %v", st)
	}
	if r.RequestURI != "*" || r.URL.Path != "*" {
		t.Errorf("RequestURI %q path %q", r.RequestURI, r.URL.Path)
	}
}

// A filter adding header after header is stopped at the pair cap, not at
// 100k headers (H15).
func TestRequestHeadersAddStopsAtThePairLimit(t *testing.T) {
	t.Parallel() // each add checks the whole map: seconds under -race
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	m := requestHeaders{r}
	ok := 0
	for i := range 5000 {
		if m.Add("x-n"+strconv.Itoa(i), "v") == abi.StatusOK {
			ok++
		}
	}
	if ok != abi.MaxHeaderPairs {
		t.Errorf("%d adds accepted, want %d", ok, abi.MaxHeaderPairs)
	}
	if st := m.Add("x-one-more", "v"); st != abi.StatusBadArgument {
		t.Errorf("add past the limit: %v", st)
	}
}

// Values that together pass the byte cap are refused, one by one.
func TestRequestHeadersAddStopsAtTheByteLimit(t *testing.T) {
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	m := requestHeaders{r}
	half := oneMiB[:len(oneMiB)/2]
	if st := m.Add("x-a", half); st != abi.StatusOK {
		t.Fatalf("first half MiB: %v", st)
	}
	if st := m.Add("x-b", half); st != abi.StatusBadArgument {
		t.Errorf("second half MiB (map over 1 MiB): %v", st)
	}
	if _, ok := r.Header["X-B"]; ok {
		t.Error("the refused value was stored")
	}
}

// Binary bytes the client sent (obs-text, invalid UTF-8) read back
// unchanged (H17).
func TestRequestHeadersReadBinaryValuesUnchanged(t *testing.T) {
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	bin := "caf\xe9 \x80\xfe\xff \xc3\x28"
	r.Header["X-Bin"] = []string{bin}
	m := requestHeaders{r}
	if v, ok := m.Get("x-bin"); !ok || v != bin {
		t.Errorf("Get = %q, %v; want %q", v, ok, bin)
	}
	found := false
	for _, p := range m.Pairs() {
		if p[0] == "x-bin" {
			found = p[1] == bin
		}
	}
	if !found {
		t.Errorf("Pairs lost the binary value: %q", m.Pairs())
	}
	decoded, err := abi.DecodeHeaderMap(abi.AppendHeaderMap(nil, m.Pairs()), abi.MaxHeaderPairs)
	if err != nil || !slices.Equal(decoded, m.Pairs()) {
		t.Errorf("serialized map does not round-trip: %v", err)
	}
}

func TestRequestHeadersPairsListPseudoHeadersFirstAndLowercase(t *testing.T) {
	r := httptest.NewRequest(http.MethodPut, "http://example.com:8080/p/q?x=1", nil)
	r.Header.Set("Zeta", "z")
	r.Header.Set("Alpha", "a")
	r.Header.Add("X-Multi", "1")
	r.Header.Add("X-Multi", "2")
	got := requestHeaders{r}.Pairs()
	want := [][2]string{
		{":authority", "example.com:8080"}, {":path", "/p/q?x=1"}, {":method", "PUT"}, {":scheme", "http"},
		{"alpha", "a"}, {"x-multi", "1"}, {"x-multi", "2"}, {"zeta", "z"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Pairs\n got %q\nwant %q", got, want)
	}
	m := requestHeaders{r}
	for name, want := range map[string]string{
		":method": "PUT", ":PATH": "/p/q?x=1", ":authority": "example.com:8080", "host": "example.com:8080",
		":scheme": "http", "X-MULTI": "1,2", "alpha": "a",
	} {
		if v, ok := m.Get(name); !ok || v != want {
			t.Errorf("Get(%q) = %q, %v; want %q", name, v, ok, want)
		}
	}
	if _, ok := m.Get("x-missing"); ok {
		t.Error("Get of a missing field found it")
	}
}

func TestRequestHeadersSchemeIsHTTPSOverTLS(t *testing.T) {
	r := httptest.NewRequest(http.MethodGet, "https://example.com/", nil)
	m := requestHeaders{r}
	if v, _ := m.Get(":scheme"); v != "https" {
		t.Errorf(":scheme %q", v)
	}
	if st := m.Replace(":scheme", "http"); st != abi.StatusBadArgument {
		t.Errorf("downgrading :scheme: %v", st)
	}
}

// newResponseMap returns a response header map over a recorder, with the
// status the next handler chose.
func newResponseMap(status int) (responseHeaders, *responseWriter) {
	rw := &responseWriter{w: httptest.NewRecorder(), status: status}
	rw.Header().Set("Content-Type", "text/plain")
	rw.Header().Set("Content-Length", "5")
	rw.Header().Set("Trailer:X-Checksum", "abc")
	return responseHeaders{rw}, rw
}

func TestResponseHeadersRejectInvalidWritesAndChangeNothing(t *testing.T) {
	tests := []struct {
		name   string
		status int
		op     headerOp
	}{
		{":status 99", 200, replace(":status", "99")},
		{":status 600", 200, replace(":status", "600")},
		{":status 2000", 200, replace(":status", "2000")},
		{":status abc", 200, replace(":status", "abc")},
		{":status 1xx", 200, replace(":status", "103")},
		{":status empty", 200, replace(":status", "")},
		{":status +20", 200, replace(":status", "+20")},
		{":status with space", 200, replace(":status", " 204")},
		{":status via add", 200, add(":status", "99")},
		{":status of a 101", 101, replace(":status", "200")},
		{"remove :status", 200, remove(":status")},
		{"unknown pseudo-header", 200, replace(":path", "/")},
		{"CRLF in value", 200, add("x-a", "v\r\nSet-Cookie: x=1")},
		{"LF in value", 200, replace("x-a", "\n")},
		{"NUL in value", 200, add("x-a", "\x00")},
		{"space in name", 200, add("x a", "1")},
		{"empty name", 200, replace("", "1")},
		{"add transfer-encoding", 200, add("transfer-encoding", "chunked")},
		{"second content-length", 200, add("content-length", "5")},
		{"content-length -1", 200, replace("content-length", "-1")},
		{"content-length +5", 200, replace("content-length", "+5")},
		{"content-length abc", 200, replace("content-length", "abc")},
		{"2 MiB value", 200, add("x-big", twoMiB)},
		{"5000 pairs", 200, set(manyPairs(5000)...)},
		{"set with a bad :status", 200, set([2]string{":status", "600"}, [2]string{"x-ok", "1"})},
		{"set with a bad field", 200, set([2]string{":status", "404"}, [2]string{"x-bad", "\r\n"})},
		{"set with two content-lengths", 200, set([2]string{"content-length", "1"}, [2]string{"content-length", "1"})},
		{"set with transfer-encoding", 200, set([2]string{"transfer-encoding", "chunked"})},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, rw := newResponseMap(tt.status)
			before := rw.Header().Clone()
			if st := tt.op.apply(m); st != abi.StatusBadArgument {
				t.Errorf("status %v, want BAD_ARGUMENT", st)
			}
			if rw.status != tt.status {
				t.Errorf("status code changed to %d", rw.status)
			}
			if !reflect.DeepEqual(rw.Header(), before) {
				t.Errorf("header changed:\nbefore %v\nafter  %v", before, rw.Header())
			}
		})
	}
}

func TestResponseHeadersApplyValidWrites(t *testing.T) {
	tests := []struct {
		name       string
		op         headerOp
		wantStatus int
		check      func(t *testing.T, h http.Header)
	}{
		{":status 204", replace(":status", "204"), 204, nil},
		{":status 599", replace(":status", "599"), 599, nil},
		{"add to :status replaces it", add(":status", "404"), 404, nil},
		{"add a field", add("x-a", "1"), 200, func(t *testing.T, h http.Header) { wantValues(t, h, "X-A", "1") }},
		{"replace content-length", replace("content-length", "7"), 200, func(t *testing.T, h http.Header) {
			wantValues(t, h, "Content-Length", "7")
		}},
		{"remove content-length", remove("Content-Length"), 200, func(t *testing.T, h http.Header) {
			wantValues(t, h, "Content-Length")
		}},
		{"set replaces fields, keeps trailers", set([2]string{":status", "201"}, [2]string{"x-only", "1"}), 201,
			func(t *testing.T, h http.Header) {
				want := http.Header{"X-Only": {"1"}, "Trailer:X-Checksum": {"abc"}}
				if !reflect.DeepEqual(h, want) {
					t.Errorf("header %v, want %v", h, want)
				}
			}},
		{"set without :status keeps it", set([2]string{"x-only", "1"}), 200, nil},
		{"set with an uppercase :Status", set([2]string{":Status", "404"}), 404, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, rw := newResponseMap(200)
			if st := tt.op.apply(m); st != abi.StatusOK {
				t.Fatalf("status %v, want OK", st)
			}
			if rw.status != tt.wantStatus {
				t.Errorf("status %d, want %d", rw.status, tt.wantStatus)
			}
			if tt.check != nil {
				tt.check(t, rw.Header())
			}
		})
	}
}

func TestResponseHeadersHideTrailersAndListStatusFirst(t *testing.T) {
	m, _ := newResponseMap(404)
	got := m.Pairs()
	want := [][2]string{{":status", "404"}, {"content-length", "5"}, {"content-type", "text/plain"}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Pairs %q, want %q", got, want)
	}
	if v, ok := m.Get(":status"); !ok || v != "404" {
		t.Errorf(":status %q", v)
	}
	if _, ok := m.Get("Trailer:X-Checksum"); ok {
		t.Error("a trailer is visible in the response headers")
	}
}

func TestTrailerMaps(t *testing.T) {
	t.Run("request trailers", func(t *testing.T) {
		h := http.Header{"X-Sum": {"1"}}
		m := trailerMap{h: h}
		for _, op := range []headerOp{
			add("x-a", "v\r\nx"), replace("x-a", "\x00"), add("bad name", "v"), add("", "v"),
			add("transfer-encoding", "chunked"), add("x-big", twoMiB), set([2]string{":path", "/"}),
			set(manyPairs(5000)...), set([2]string{"x-ok", "1"}, [2]string{"x-bad", "\n"}),
			replace("content-length", "-1"),
			// Fields a trailer must not carry (RFC 9110, section 6.5.1).
			add("content-length", "4"), add("Host", "evil.example"), replace("trailer", "x-a"),
			set([2]string{"x-ok", "1"}, [2]string{"content-type", "text/html"}),
		} {
			if st := op.apply(m); st != abi.StatusBadArgument {
				t.Errorf("%s %q: %v, want BAD_ARGUMENT", op.op, op.name, st)
			}
		}
		if want := (http.Header{"X-Sum": {"1"}}); !reflect.DeepEqual(h, want) {
			t.Errorf("rejected writes changed the trailers: %v", h)
		}
		if st := m.Add("X-More", "2"); st != abi.StatusOK {
			t.Fatal(st)
		}
		if got, want := m.Pairs(), [][2]string{{"x-more", "2"}, {"x-sum", "1"}}; !reflect.DeepEqual(got, want) {
			t.Errorf("Pairs %q, want %q", got, want)
		}
		if st := m.SetPairs([][2]string{{"x-new", "n"}}); st != abi.StatusOK {
			t.Fatal(st)
		}
		if want := (http.Header{"X-New": {"n"}}); !reflect.DeepEqual(h, want) {
			t.Errorf("after SetPairs %v, want %v", h, want)
		}
	})
	t.Run("the size limit counts the trailers, not the headers beside them", func(t *testing.T) {
		big := strings.Repeat("v", abi.MaxHeaderBytes-100)
		h := http.Header{"X-Big": {big}}
		m := trailerMap{h: h, prefix: http.TrailerPrefix}
		if st := m.Add("x-sum", strings.Repeat("1", 200)); st != abi.StatusOK {
			t.Errorf("a 200-byte trailer beside a large header: %v", st)
		}
	})
	t.Run("response trailers live beside the headers", func(t *testing.T) {
		h := http.Header{"Content-Type": {"text/plain"}, "Trailer:X-Sum": {"1"}}
		m := trailerMap{h: h, prefix: http.TrailerPrefix}
		if got, want := m.Pairs(), [][2]string{{"x-sum", "1"}}; !reflect.DeepEqual(got, want) {
			t.Errorf("Pairs %q, want %q", got, want)
		}
		if v, ok := m.Get("x-sum"); !ok || v != "1" {
			t.Errorf("Get = %q, %v", v, ok)
		}
		if st := m.Add("x-a", "v\r\n"); st != abi.StatusBadArgument {
			t.Errorf("CRLF: %v", st)
		}
		if st := m.Replace("x-sum", "2"); st != abi.StatusOK {
			t.Fatal(st)
		}
		if st := m.SetPairs([][2]string{{"x-other", "3"}}); st != abi.StatusOK {
			t.Fatal(st)
		}
		want := http.Header{"Content-Type": {"text/plain"}, "Trailer:X-Other": {"3"}}
		if !reflect.DeepEqual(h, want) {
			t.Errorf("header %v, want %v (SetPairs must leave the headers alone)", h, want)
		}
		if st := m.Remove("x-other"); st != abi.StatusOK || len(h) != 1 {
			t.Errorf("remove: %v, %v", st, h)
		}
	})
}

// Local responses go through the same rules as any other write.
func TestValidLocalResponseHeaders(t *testing.T) {
	for _, tt := range []struct {
		pairs [][2]string
		ok    bool
	}{
		{[][2]string{{"x-a", "1"}, {"content-type", "text/plain"}}, true},
		{[][2]string{{":status", "403"}}, true},
		{nil, true},
		{[][2]string{{"x-a", "1\r\nSet-Cookie: a=b"}}, false},
		{[][2]string{{"transfer-encoding", "chunked"}}, false},
		{[][2]string{{":status", "600"}}, false},
		{[][2]string{{":path", "/"}}, false},
		{[][2]string{{"content-length", "1"}, {"content-length", "2"}}, false},
		{manyPairs(5000), false},
	} {
		if got := validLocalResponseHeaders(tt.pairs); got != tt.ok {
			t.Errorf("validLocalResponseHeaders(%.60q) = %v, want %v", tt.pairs, got, tt.ok)
		}
	}
}

// Replacing a header in a full map is a replacement, not one more pair.
func TestRequestHeadersReplaceInAFullMap(t *testing.T) {
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	m := requestHeaders{r}
	half := oneMiB[:len(oneMiB)/2]
	if st := m.Add("x-a", half); st != abi.StatusOK {
		t.Fatalf("half MiB: %v", st)
	}
	if st := m.Replace("x-a", half+"v"); st != abi.StatusOK {
		t.Errorf("replacing the half MiB with one byte more: %v", st)
	}
	if got := len(r.Header.Get("X-A")); got != len(half)+1 {
		t.Errorf("value is %d bytes", got)
	}
}

// countPairs, the num_headers of a headers callback, is the number of pairs
// the guest would get.
func TestCountPairsMatchesPairs(t *testing.T) {
	r := tableRequest()
	r.Header.Add("X-Multi", "a")
	r.Header.Add("X-Multi", "b")
	if got, want := countPairs(requestHeaders{r}), len(requestHeaders{r}.Pairs()); got != want {
		t.Errorf("request: countPairs %d, Pairs %d", got, want)
	}
	rw := &responseWriter{w: httptest.NewRecorder(), status: 200}
	rw.Header().Set("X-A", "1")
	rw.Header().Set(http.TrailerPrefix+"X-T", "t")
	if got, want := countPairs(responseHeaders{rw}), len(responseHeaders{rw}.Pairs()); got != want || got != 2 {
		t.Errorf("response: countPairs %d, Pairs %d, want 2", got, want)
	}
}
