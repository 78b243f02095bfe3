package main

import (
	"bytes"
	"compress/gzip"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sluice-edge/sluice/sdk/sdktest"
)

const snippet = `<script src="/rum.js"></script>`

// pieces answers with body written in flushed pieces, so that in Caddy the
// filter gets them as separate chunks. length, if not -1, is announced as
// the Content-Length.
func pieces(contentType string, length int, body ...string) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", contentType)
		if length >= 0 {
			w.Header().Set("Content-Length", strconv.Itoa(length))
		}
		for i, p := range body {
			if i > 0 {
				time.Sleep(20 * time.Millisecond) // let the proxy pass the last piece on alone
			}
			_, _ = io.WriteString(w, p)
			http.NewResponseController(w).Flush()
		}
	}
}

// wantBody checks the body and that the response's length is not the
// upstream's: absent (chunked) or the real one.
func wantBody(t *testing.T, r *sdktest.Result, want string) {
	t.Helper()
	if r.Response.Status != 200 {
		t.Errorf("status %d", r.Response.Status)
	}
	if got := string(r.Response.Body); got != want {
		t.Errorf("body\n got %q\nwant %q", got, want)
	}
	if cl := r.Response.Header.Get("Content-Length"); cl != "" && cl != strconv.Itoa(len(r.Response.Body)) {
		t.Errorf("content-length %s for a body of %d bytes", cl, len(r.Response.Body))
	}
}

const (
	page       = "<html><body><p>hi</p></body></html>"
	nestedJSON = `{"user": {"name": "ann", "password": "hunter2",
 "keys": [{"token": "abc", "id": 1}, {"token": {"deep": [1, 2, {"password": 3}]}, "id": 2}]},
 "password": null, "passwords": 4, "list": ["password", {"password": [true]}], "pass\u0077ord": 1.5e3,
 "Password": "kept"}`
	redactedJSON = `{"user": {"name": "ann", "password": "[redacted]",
 "keys": [{"token": "[redacted]", "id": 1}, {"token": "[redacted]", "id": 2}]},
 "password": "[redacted]", "passwords": 4, "list": ["password", {"password": "[redacted]"}], "pass\u0077ord": "[redacted]",
 "Password": "kept"}`
	invalidJSON = `{"password": "hunter2",}`
)

var suite = sdktest.Suite{
	Config: `# a RUM script on every page, no secrets in API answers
inject_html ` + snippet + `
redact_json password
redact_json token`,
	Cases: []sdktest.Case{{
		Name: "the snippet goes before </body>, split across chunks, in any case",
		Upstream: pieces("Text/HTML; charset=utf-8", len("<html><body><p>hi</p></BO"+"Dy></html>"),
			"<html><body><p>hi</p></BO", "Dy></html>"),
		Check: func(t *testing.T, r *sdktest.Result) {
			wantBody(t, r, "<html><body><p>hi</p>"+snippet+"</BODy></html>")
		},
	}, {
		Name:     "only before the first </body>",
		Upstream: pieces("text/html", -1, "<body>a</body>", "b</body>"),
		Check: func(t *testing.T, r *sdktest.Result) {
			wantBody(t, r, "<body>a"+snippet+"</body>b</body>")
		},
	}, {
		Name:     "a page without </body> gets it at the end",
		Upstream: pieces("text/html", len("<p>fragment</bod"), "<p>fragment</bo", "d"),
		Check: func(t *testing.T, r *sdktest.Result) {
			wantBody(t, r, "<p>fragment</bod"+snippet)
		},
	}, {
		Name:     "other types are untouched, byte for byte, with their length",
		Upstream: pieces("text/plain", len(page+nestedJSON), page, nestedJSON),
		Check: func(t *testing.T, r *sdktest.Result) {
			wantBody(t, r, page+nestedJSON)
			if cl := r.Response.Header.Get("Content-Length"); cl != strconv.Itoa(len(page+nestedJSON)) {
				t.Errorf("content-length %q, want the upstream's", cl)
			}
		},
	}, {
		Name: "an HTML response without a body stays empty",
		Upstream: func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "text/html")
			w.WriteHeader(http.StatusNoContent)
		},
		Check: func(t *testing.T, r *sdktest.Result) {
			if r.Response.Status != http.StatusNoContent || len(r.Response.Body) != 0 {
				t.Errorf("%d %q", r.Response.Status, r.Response.Body)
			}
		},
	}, {
		Name: "a compressed page is left alone",
		Request: sdktest.Request{Header: http.Header{
			"Accept-Encoding": {"gzip"}, // so that Go's client does not decompress
		}},
		Upstream: func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "text/html")
			w.Header().Set("Content-Encoding", "gzip")
			_, _ = w.Write(gzipped(page))
		},
		Check: func(t *testing.T, r *sdktest.Result) {
			if !bytes.Equal(r.Response.Body, gzipped(page)) {
				t.Errorf("body changed: %q", r.Response.Body)
			}
		},
	}, {
		Name: "JSON members are redacted at any depth, in arrays, the rest kept byte for byte",
		Upstream: pieces("application/json; charset=utf-8", len(nestedJSON),
			nestedJSON[:30], nestedJSON[30:35], nestedJSON[35:]), // "pass|word"
		Check: func(t *testing.T, r *sdktest.Result) {
			wantBody(t, r, redactedJSON)
		},
	}, {
		Name:     "+json types are JSON",
		Upstream: pieces("application/problem+json", -1, `[{"token":"t"},{"a":{"token":"u"}}]`),
		Check: func(t *testing.T, r *sdktest.Result) {
			wantBody(t, r, `[{"token":"[redacted]"},{"a":{"token":"[redacted]"}}]`)
		},
	}, {
		Name:     "JSON without those members is untouched",
		Upstream: pieces("application/json", len(` {"a": [1, "password"]} `), ` {"a": [1, "password"]} `),
		Check: func(t *testing.T, r *sdktest.Result) {
			wantBody(t, r, ` {"a": [1, "password"]} `)
		},
	}, {
		Name:     "invalid JSON passes unchanged",
		Upstream: pieces("application/json", len(invalidJSON), invalidJSON[:10], invalidJSON[10:]),
		Check: func(t *testing.T, r *sdktest.Result) {
			wantBody(t, r, invalidJSON)
		},
	}},
}

func gzipped(s string) []byte {
	var b bytes.Buffer
	z := gzip.NewWriter(&b)
	_, _ = io.WriteString(z, s)
	_ = z.Close()
	return b.Bytes()
}

// The filter's logic, natively: no Wasm. (The emulator hands the filter a
// response body in one chunk; TestInjectorChunks covers the splits.)
func TestBodyRewrite(t *testing.T) {
	t.Parallel()
	sdktest.Run(t, suite)
}

// The same cases against the built module in a real Caddy, where the
// upstream's flushed pieces reach the filter as separate chunks.
func TestBodyRewriteInCaddy(t *testing.T) {
	t.Parallel()
	sdktest.RunCaddy(t, sdktest.Build(t, "."), suite)
}

func TestInvalidJSONIsLogged(t *testing.T) {
	t.Parallel()
	s := suite
	s.Cases = []sdktest.Case{{
		Name:     "logged",
		Upstream: pieces("application/json", -1, invalidJSON),
		Check: func(t *testing.T, r *sdktest.Result) {
			if !strings.Contains(strings.Join(r.Logs, "\n"), "not valid JSON") {
				t.Errorf("logs %q", r.Logs)
			}
		},
	}}
	sdktest.Run(t, s)
}

// TestInjectorChunks feeds pages to the injector split at every one or two
// places: the output is the same whatever the split, and the injector never
// holds back a whole marker's length.
func TestInjectorChunks(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ in, want string }{
		{page, "<html><body><p>hi</p>" + snippet + "</body></html>"},
		{"<p></BoDy>x</body>", "<p>" + snippet + "</BoDy>x</body>"},
		{"a</b</bo</body", "a</b</bo</body" + snippet},
		{"</body>", snippet + "</body>"},
		{"<<//</</body>>", "<<//</" + snippet + "</body>>"},
	} {
		n := len(tc.in)
		for i := 0; i <= n; i++ {
			for j := i; j <= n; j++ {
				chunks := []string{tc.in[:i], tc.in[i:j], tc.in[j:]}
				in := injector{snippet: []byte(snippet)}
				var out []byte
				fed := 0
				for k, c := range chunks {
					got, _ := in.feed([]byte(c), k == len(chunks)-1)
					out = append(out, got...)
					fed += len(c)
					if k < len(chunks)-1 && !in.done && fed-len(out) >= len(marker) {
						t.Errorf("%q split %v: %d bytes held back", tc.in, chunks, fed-len(out))
					}
				}
				if string(out) != tc.want {
					t.Errorf("%q split %v: %q, want %q", tc.in, chunks, out, tc.want)
				}
			}
		}
	}
}

func TestRedact(t *testing.T) {
	t.Parallel()
	fields := map[string]bool{"password": true, "token": true}
	for _, tc := range []struct {
		in, want string // want "" for unchanged
	}{
		{nestedJSON, redactedJSON},
		{`{"password":"x","password":"y"}`, `{"password":"[redacted]","password":"[redacted]"}`},
		{`{"\ud83d\ude00":1,"tok\u0065n":-0.5E-3}`, `{"\ud83d\ude00":1,"tok\u0065n":"[redacted]"}`},
		{`"password"`, ""},
		{` [] `, ""},
		{`{"a":"\"password\"","b":"\\"}`, ""},
	} {
		out, ok := redact([]byte(tc.in), fields)
		if !ok {
			t.Errorf("%s: not valid", tc.in)
			continue
		}
		if tc.want == "" && out != nil || tc.want != "" && string(out) != tc.want {
			t.Errorf("%s: %s, want %s", tc.in, out, tc.want)
		}
	}
	for _, in := range []string{``, ` `, `{`, `{"password":}`, `{"a":1,}`, `[1,]`, `[1 2]`, `{"a" 1}`, `{a:1}`,
		`01`, `1.`, `-`, `1e`, `.5`, `+1`, `tru`, `nul`, `"\x"`, `"\u12g4"`, "\"a\nb\"", `"abc`, `{} {}`, `{}]`,
		`{"password":"x"}x`, strings.Repeat("[", maxDepth+1) + strings.Repeat("]", maxDepth+1)} {
		if out, ok := redact([]byte(in), fields); ok {
			t.Errorf("%q: accepted (%q)", in, out)
		}
	}
}

func TestBadConfigurationIsRefused(t *testing.T) {
	t.Parallel()
	for config, want := range map[string]string{
		"inject_html":               "line 1",
		"# comment\nredact_json":    "line 2",
		"redact_json a b":           "line 1",
		"redact_jsn password":       "line 1",
		"":                          "no rules",
		"# only a comment\n\n":      "no rules",
		"inject_html <p>\nfrob a b": "line 2",
	} {
		err := sdktest.ConfigError(config, suite)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want an error with %q", config, err, want)
		}
	}
	if err := sdktest.ConfigError(suite.Config, suite); err != nil {
		t.Errorf("the suite's config: %v", err)
	}
}

// TestStreamingInCaddy serves the example's Caddyfile and checks that the
// page streams: the client has the first piece before the upstream sends
// the rest.
func TestStreamingInCaddy(t *testing.T) {
	t.Parallel()
	firstSeen := make(chan struct{})
	waited := make(chan bool, 1)
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/api" {
			pieces("application/json", -1, `{"id":7,"pass`, `word":"hunter2"}`)(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/html")
		_, _ = io.WriteString(w, "<html><body><p>first</p>")
		http.NewResponseController(w).Flush()
		select {
		case <-firstSeen:
			waited <- true
		case <-time.After(5 * time.Second):
			waited <- false
		}
		pieces("text/html", -1, "</bo", "dy></html>")(w, r)
	}))
	defer upstream.Close()

	site, log := sdktest.ServeCaddyfile(t, "Caddyfile",
		[2]string{" body_rewrite.wasm", " " + sdktest.Build(t, ".")},
		[2]string{"localhost:9000", upstream.Listener.Addr().String()})
	client := &http.Client{Timeout: 20 * time.Second}

	resp, err := client.Get("http://" + site + "/")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var got []byte
	buf := make([]byte, 4096)
	for !bytes.Contains(got, []byte("<p>first</p>")) {
		n, err := resp.Body.Read(buf)
		got = append(got, buf[:n]...)
		if err != nil {
			t.Fatalf("read %q, then %v\n%s", got, err, log.String())
		}
	}
	close(firstSeen)
	rest, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if !<-waited {
		t.Error("the first piece reached the client only after the upstream gave up waiting: the page was buffered")
	}
	if got, want := string(append(got, rest...)), "<html><body><p>first</p>"+snippet+"</body></html>"; got != want {
		t.Errorf("page %q, want %q", got, want)
	}

	resp, err = client.Get("http://" + site + "/api")
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || string(body) != `{"id":7,"password":"[redacted]"}` || resp.ContentLength != int64(len(body)) {
		t.Errorf("api: %q (length %d), %v\n%s", body, resp.ContentLength, err, log.String())
	}
}
