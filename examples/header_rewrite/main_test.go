package main

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/sluice-edge/sluice/sdk/sdktest"
)

var suite = sdktest.Suite{
	Config: `# tag requests, tidy responses
request set x-served-by sluice
request remove x-debug
request rename x-user x-client-user
request add x-tag edge
response add cache-control no-transform
response rename x-upstream-id x-origin-id
security_headers`,
	Cases: []sdktest.Case{{
		Name: "request headers set, removed and renamed",
		Request: sdktest.Request{Header: http.Header{
			"X-Served-By": {"client"}, "X-Debug": {"1"}, "X-User": {"ann"}, "X-Tag": {"client"},
		}},
		Check: func(t *testing.T, r *sdktest.Result) {
			got := r.Upstream.Header
			if v := got.Values("X-Served-By"); len(v) != 1 || v[0] != "sluice" {
				t.Errorf("x-served-by = %q, want just sluice", v)
			}
			if got.Get("X-Debug") != "" || got.Get("X-User") != "" {
				t.Errorf("x-debug or x-user reached the upstream: %v", got)
			}
			if got.Get("X-Client-User") != "ann" {
				t.Errorf("x-client-user = %q", got.Get("X-Client-User"))
			}
			if v := got.Values("X-Tag"); strings.Join(v, ",") != "client,edge" {
				t.Errorf("x-tag = %q, want the client's value and edge", v)
			}
		},
	}, {
		Name: "security headers replace the upstream's",
		Upstream: func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Server", "upstream/1.0")
			w.Header().Set("X-Powered-By", "php")
			w.Header().Set("X-Frame-Options", "ALLOW")
			w.Header().Set("Cache-Control", "max-age=60")
			w.Header().Set("X-Upstream-Id", "u7")
			_, _ = w.Write([]byte("hello"))
		},
		Check: func(t *testing.T, r *sdktest.Result) {
			h := r.Response.Header
			for name, want := range map[string]string{
				"X-Frame-Options":           "DENY",
				"X-Content-Type-Options":    "nosniff",
				"Strict-Transport-Security": "max-age=63072000; includeSubDomains",
				"Referrer-Policy":           "strict-origin-when-cross-origin",
				"Server":                    "",
				"X-Powered-By":              "",
				"X-Upstream-Id":             "",
				"X-Origin-Id":               "u7",
			} {
				if got := h.Get(name); got != want {
					t.Errorf("%s = %q, want %q", name, got, want)
				}
			}
			if got := h.Values("Cache-Control"); strings.Join(got, ",") != "max-age=60,no-transform" {
				t.Errorf("cache-control = %q", got)
			}
			if r.Response.Status != 200 || string(r.Response.Body) != "hello" {
				t.Errorf("response %d %q", r.Response.Status, r.Response.Body)
			}
		},
	}},
}

// The filter's logic, natively: no Wasm.
func TestHeaderRewrite(t *testing.T) {
	t.Parallel()
	sdktest.Run(t, suite)
}

// The same cases against the built module in a real Caddy.
func TestHeaderRewriteInCaddy(t *testing.T) {
	t.Parallel()
	sdktest.RunCaddy(t, sdktest.Build(t, "."), suite)
}

func TestBadConfigurationIsRefused(t *testing.T) {
	for _, config := range []string{"request set x-a", "upstream set a b", "response rename a", "request frob a b"} {
		err := sdktest.ConfigError(config, suite)
		if err == nil || !strings.Contains(err.Error(), "line 1") {
			t.Errorf("%q: %v, want an error naming line 1", config, err)
		}
	}
	if err := sdktest.ConfigError(suite.Config, suite); err != nil {
		t.Errorf("the suite's config: %v", err)
	}
}

// The example Caddyfile works as shipped, with the module built from here.
func TestExampleCaddyfile(t *testing.T) {
	t.Parallel()
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Server", "upstream/1.0")
		_, _ = io.WriteString(w, "x-served-by: "+r.Header.Get("X-Served-By"))
	}))
	defer upstream.Close()
	site, log := sdktest.ServeCaddyfile(t, "Caddyfile",
		[2]string{"wasm_filter header_rewrite.wasm", "wasm_filter " + sdktest.Build(t, ".")},
		[2]string{"localhost:9000", upstream.Listener.Addr().String()})
	resp, err := http.Get("http://" + site + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "x-served-by: sluice" || resp.Header.Get("Server") != "" ||
		resp.Header.Get("X-Frame-Options") != "DENY" || resp.Header.Get("Cache-Control") != "no-transform" {
		t.Errorf("got %q with headers %v\n%s", body, resp.Header, log.String())
	}
}
