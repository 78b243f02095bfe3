package caddymodule

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	// The standard directives the order and golden tests use.
	_ "github.com/caddyserver/caddy/v2/modules/caddyhttp/encode"
	_ "github.com/caddyserver/caddy/v2/modules/caddyhttp/encode/gzip"
	_ "github.com/caddyserver/caddy/v2/modules/caddyhttp/fileserver"
	_ "github.com/caddyserver/caddy/v2/modules/caddyhttp/headers"
	_ "github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
	_ "github.com/caddyserver/caddy/v2/modules/caddyhttp/templates"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

func TestUnmarshalCaddyfileAcceptsEveryOption(t *testing.T) {
	tests := []struct {
		name  string
		input string
		want  Handler
	}{
		{
			name:  "path only",
			input: `wasm_filter filter.wasm`,
			want:  Handler{Path: "filter.wasm"},
		},
		{
			name:  "absolute path",
			input: `wasm_filter /srv/f.wasm`,
			want:  Handler{Path: "/srv/f.wasm"},
		},
		{
			name: "every option",
			input: `wasm_filter /srv/f.wasm {
				name           auth
				config         "{\"k\": 1}"
				vm_config      vm-settings
				root_id        my_root
				timeout        250ms
				memory_limit   64MiB
				max_body_size  1MB
				failure_policy fail_open
			}`,
			want: Handler{
				Path: "/srv/f.wasm", Name: "auth", Config: `{"k": 1}`, VMConfig: "vm-settings",
				RootID: "my_root", Timeout: caddy.Duration(250 * time.Millisecond),
				MemoryLimit: 64 << 20, MaxBodySize: 1_000_000, FailurePolicy: FailOpen,
			},
		},
		{
			name: "tenant, outbound calls and isolation",
			input: `wasm_filter f.wasm {
				vm_id             tenant-a
				upstream          auth http://127.0.0.1:9000
				upstream          keys https://keys.internal
				max_http_calls    4
				http_call_timeout 2s
				isolation         shared
			}`,
			want: Handler{
				Path: "f.wasm", VMID: "tenant-a",
				Upstreams:    map[string]string{"auth": "http://127.0.0.1:9000", "keys": "https://keys.internal"},
				MaxHTTPCalls: 4, HTTPCallTimeout: caddy.Duration(2 * time.Second), Isolation: "shared",
			},
		},
		{
			name:  "config_file",
			input: "wasm_filter f.wasm {\n config_file /etc/f.json\n}",
			want:  Handler{Path: "f.wasm", ConfigFile: "/etc/f.json"},
		},
		{
			name:  "fail_closed",
			input: "wasm_filter f.wasm {\n failure_policy fail_closed\n}",
			want:  Handler{Path: "f.wasm", FailurePolicy: FailClosed},
		},
		{
			name:  "snapshot off",
			input: "wasm_filter f.wasm {\n snapshot off\n}",
			want:  Handler{Path: "f.wasm", DisableSnapshot: true},
		},
		{
			name:  "prewarm",
			input: "wasm_filter f.wasm {\n prewarm 0\n}",
			want:  Handler{Path: "f.wasm", Prewarm: new(int)},
		},
		{
			name:  "recycle off",
			input: "wasm_filter f.wasm {\n recycle off\n}",
			want:  Handler{Path: "f.wasm", DisableRecycling: true},
		},
		{
			name:  "recycle on",
			input: "wasm_filter f.wasm {\n recycle on\n}",
			want:  Handler{Path: "f.wasm"},
		},
		{
			name:  "snapshot on",
			input: "wasm_filter f.wasm {\n snapshot on\n}",
			want:  Handler{Path: "f.wasm"},
		},
		{
			name:  "duration in minutes and seconds",
			input: "wasm_filter f.wasm {\n timeout 1m30s\n}",
			want:  Handler{Path: "f.wasm", Timeout: caddy.Duration(90 * time.Second)},
		},
		{
			name:  "duration in days",
			input: "wasm_filter f.wasm {\n timeout 1d\n}",
			want:  Handler{Path: "f.wasm", Timeout: caddy.Duration(24 * time.Hour)},
		},
		{
			name:  "sizes in KiB and plain bytes",
			input: "wasm_filter f.wasm {\n memory_limit 512KiB\n max_body_size 4096\n}",
			want:  Handler{Path: "f.wasm", MemoryLimit: 512 << 10, MaxBodySize: 4096},
		},
		{
			name:  "size in GiB",
			input: "wasm_filter f.wasm {\n max_body_size 1GiB\n}",
			want:  Handler{Path: "f.wasm", MaxBodySize: 1 << 30},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got Handler
			if err := got.UnmarshalCaddyfile(caddyfile.NewTestDispenser(tt.input)); err != nil {
				t.Fatalf("UnmarshalCaddyfile: %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got  %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestUnmarshalCaddyfileRejectsBadInputNamingTheLine(t *testing.T) {
	tests := []struct {
		name  string
		input string
		want  []string // substrings of the error
	}{
		{"no path", `wasm_filter`, []string{"wrong argument count", "Testfile:1"}},
		{"no path before a block", "wasm_filter {\n timeout 1s\n}", []string{"Testfile:1"}},
		{"extra argument", `wasm_filter a.wasm b.wasm`, []string{"wrong argument count", "'b.wasm'", "Testfile:1"}},
		{"unknown option", "wasm_filter f.wasm {\n name x\n bogus 1\n}", []string{`unknown wasm_filter option "bogus"`, "Testfile:3"}},
		{"option without value", "wasm_filter f.wasm {\n timeout\n}", []string{"wrong argument count", "'timeout'", "Testfile:2"}},
		{"option with two values", "wasm_filter f.wasm {\n\n name a b\n}", []string{"wrong argument count", "Testfile:3"}},
		{"bad duration", "wasm_filter f.wasm {\n timeout soon\n}", []string{`timeout "soon"`, "Testfile:2"}},
		{"zero timeout", "wasm_filter f.wasm {\n timeout 0s\n}", []string{`timeout "0s"`, "must be positive", "Testfile:2"}},
		{"negative timeout", "wasm_filter f.wasm {\n timeout -5s\n}", []string{`timeout "-5s"`, "must be positive", "Testfile:2"}},
		{"bad size", "wasm_filter f.wasm {\n memory_limit lots\n}", []string{`memory_limit "lots"`, "positive size", "Testfile:2"}},
		{"zero size", "wasm_filter f.wasm {\n max_body_size 0\n}", []string{`max_body_size "0"`, "Testfile:2"}},
		{"negative size", "wasm_filter f.wasm {\n max_body_size -1MB\n}", []string{`max_body_size "-1MB"`, "Testfile:2"}},
		{"size over 1 TiB", "wasm_filter f.wasm {\n memory_limit 2TiB\n}", []string{`memory_limit "2TiB"`, "Testfile:2"}},
		{"bad failure_policy", "wasm_filter f.wasm {\n failure_policy maybe\n}", []string{`failure_policy "maybe"`, "fail_closed", "fail_open", "Testfile:2"}},
		{"failure_policy is case sensitive", "wasm_filter f.wasm {\n failure_policy FAIL_OPEN\n}", []string{`failure_policy "FAIL_OPEN"`, "Testfile:2"}},
		{"bad snapshot", "wasm_filter f.wasm {\n snapshot maybe\n}", []string{`snapshot "maybe"`, "on or off", "Testfile:2"}},
		{"bad recycle", "wasm_filter f.wasm {\n recycle always\n}", []string{`recycle "always"`, "on or off", "Testfile:2"}},
		{"prewarm not a count", "wasm_filter f.wasm {\n prewarm some\n}", []string{`prewarm "some"`, "Testfile:2"}},
		{"prewarm too many", "wasm_filter f.wasm {\n prewarm 65\n}", []string{`prewarm "65"`, "0 to 64", "Testfile:2"}},
		{"upstream without a URL", "wasm_filter f.wasm {\n upstream auth\n}", []string{"upstream: want a name and a URL", "Testfile:2"}},
		{"upstream declared twice", "wasm_filter f.wasm {\n upstream a http://x\n upstream a http://y\n}", []string{`upstream "a" declared twice`, "Testfile:3"}},
		{"max_http_calls zero", "wasm_filter f.wasm {\n max_http_calls 0\n}", []string{`max_http_calls "0"`, "1 to 1000", "Testfile:2"}},
		{"max_http_calls too many", "wasm_filter f.wasm {\n max_http_calls 1001\n}", []string{`max_http_calls "1001"`, "Testfile:2"}},
		{"bad http_call_timeout", "wasm_filter f.wasm {\n http_call_timeout soon\n}", []string{`http_call_timeout "soon"`, "Testfile:2"}},
		{"bad isolation", "wasm_filter f.wasm {\n isolation tenant\n}", []string{`isolation "tenant"`, "request or shared", "Testfile:2"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var h Handler
			err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser(tt.input))
			if err == nil {
				t.Fatalf("accepted %q: %+v", tt.input, h)
			}
			for _, want := range tt.want {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not mention %q", err, want)
				}
			}
		})
	}
}

// adapt runs the real Caddyfile adapter, as `caddy adapt` does.
func adapt(t *testing.T, input string) ([]byte, []caddyconfig.Warning, error) {
	t.Helper()
	adapter := caddyconfig.GetAdapter("caddyfile")
	if adapter == nil {
		t.Fatal("no caddyfile adapter registered")
	}
	return adapter.Adapt([]byte(input), map[string]any{"filename": "Caddyfile"})
}

// route is one route holding a wasm_filter handler, as adapted.
type route struct {
	Match   []map[string]any
	Handler map[string]any
}

// walkHandlers calls fn for every handler object in an adapted config, in
// order, with the matchers of the route holding it.
func walkHandlers(v any, match []map[string]any, fn func(handler map[string]any, match []map[string]any)) {
	switch v := v.(type) {
	case map[string]any:
		if handles, ok := v["handle"].([]any); ok {
			var m []map[string]any
			if raw, ok := v["match"].([]any); ok {
				for _, x := range raw {
					m = append(m, x.(map[string]any))
				}
			}
			for _, h := range handles {
				hm := h.(map[string]any)
				fn(hm, m)
				walkHandlers(hm, m, fn)
			}
			return
		}
		for _, k := range sortedKeys(v) {
			walkHandlers(v[k], match, fn)
		}
	case []any:
		for _, x := range v {
			walkHandlers(x, match, fn)
		}
	}
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func wasmRoutes(t *testing.T, config []byte) []route {
	t.Helper()
	var v any
	if err := json.Unmarshal(config, &v); err != nil {
		t.Fatal(err)
	}
	var routes []route
	walkHandlers(v, nil, func(h map[string]any, m []map[string]any) {
		if h["handler"] == "wasm_filter" {
			routes = append(routes, route{Match: m, Handler: h})
		}
	})
	return routes
}

func TestCaddyfileAdapterOneArgumentIsAlwaysThePath(t *testing.T) {
	tests := []struct {
		name      string
		directive string
		defs      string // named matcher definitions
		wantPath  string
		wantMatch string // JSON of the route's matchers, "" for none
		wantMore  map[string]any
	}{
		{name: "absolute path alone", directive: `wasm_filter /srv/f.wasm`, wantPath: "/srv/f.wasm"},
		{name: "relative path alone", directive: `wasm_filter filters/f.wasm`, wantPath: "filters/f.wasm"},
		{name: "absolute path with a block", directive: "wasm_filter /srv/f.wasm {\n\t\ttimeout 2s\n\t}",
			wantPath: "/srv/f.wasm", wantMore: map[string]any{"timeout": float64(2 * time.Second)}},
		{name: "path matcher then path", directive: `wasm_filter /api/* /srv/f.wasm`,
			wantPath: "/srv/f.wasm", wantMatch: `[{"path":["/api/*"]}]`},
		{name: "named matcher then path", directive: `wasm_filter @tenant /srv/f.wasm`,
			defs:     "@tenant header X-Tenant acme",
			wantPath: "/srv/f.wasm", wantMatch: `[{"header":{"X-Tenant":["acme"]}}]`},
		{name: "wildcard matcher then path", directive: `wasm_filter * /srv/f.wasm`, wantPath: "/srv/f.wasm"},
		{name: "path matcher, path and block", directive: "wasm_filter /api/* /srv/f.wasm {\n\t\tfailure_policy fail_open\n\t}",
			wantPath: "/srv/f.wasm", wantMatch: `[{"path":["/api/*"]}]`,
			wantMore: map[string]any{"failure_policy": "fail_open"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			input := ":8080 {\n\t" + tt.directive + "\n}\n"
			if tt.defs != "" {
				input = ":8080 {\n\t" + tt.defs + "\n\t" + tt.directive + "\n}\n"
			}
			out, warnings, err := adapt(t, input)
			if err != nil {
				t.Fatalf("adapt: %v", err)
			}
			if len(warnings) > 0 {
				t.Errorf("warnings: %v", warnings)
			}
			routes := wasmRoutes(t, out)
			if len(routes) != 1 {
				t.Fatalf("%d wasm_filter handlers in %s", len(routes), out)
			}
			r := routes[0]
			if r.Handler["path"] != tt.wantPath {
				t.Errorf("path %v, want %q in %s", r.Handler["path"], tt.wantPath, out)
			}
			gotMatch := ""
			if r.Match != nil {
				b, _ := json.Marshal(r.Match)
				gotMatch = string(b)
			}
			if gotMatch != tt.wantMatch {
				t.Errorf("matchers %s, want %q", gotMatch, tt.wantMatch)
			}
			for k, want := range tt.wantMore {
				if r.Handler[k] != want {
					t.Errorf("%s = %v, want %v", k, r.Handler[k], want)
				}
			}
		})
	}
}

func TestCaddyfileAdapterErrorsNameTheLine(t *testing.T) {
	tests := []struct {
		name  string
		input string
		want  []string
	}{
		{"no path", ":8080 {\n\twasm_filter\n}\n", []string{"wrong argument count", "Caddyfile:2"}},
		{"matcher, path and an extra argument", ":8080 {\n\twasm_filter /api/* /srv/f.wasm extra\n}\n",
			[]string{"wrong argument count", "Caddyfile:2"}},
		{"two paths without a matcher", ":8080 {\n\twasm_filter a.wasm b.wasm\n}\n",
			[]string{"wrong argument count", "Caddyfile:2"}},
		{"undefined named matcher", ":8080 {\n\twasm_filter @nope /srv/f.wasm\n}\n", []string{"nope"}},
		{"bad option value", ":8080 {\n\twasm_filter /srv/f.wasm {\n\t\tname x\n\t\ttimeout 0\n\t}\n}\n",
			[]string{`timeout "0"`, "must be positive", "Caddyfile:4"}},
		{"unknown option after a matcher", ":8080 {\n\twasm_filter /api/* /srv/f.wasm {\n\t\tbogus 1\n\t}\n}\n",
			[]string{`unknown wasm_filter option "bogus"`, "Caddyfile:3"}},
		{"bad failure_policy", ":8080 {\n\n\twasm_filter /srv/f.wasm {\n\t\tfailure_policy open\n\t}\n}\n",
			[]string{`failure_policy "open"`, "Caddyfile:4"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, _, err := adapt(t, tt.input)
			if err == nil {
				t.Fatalf("adapted without error: %s", out)
			}
			for _, want := range tt.want {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not mention %q", err, want)
				}
			}
		})
	}
}

// The directive needs no `order` global option: it sits after templates and
// before the handlers that respond, wherever it is written in the site.
func TestCaddyfileAdapterPlacesDirectiveAfterTemplatesBeforeReverseProxy(t *testing.T) {
	out, _, err := adapt(t, `:8080 {
	reverse_proxy localhost:9000
	wasm_filter /srv/f.wasm
	encode gzip
	templates
}
`)
	if err != nil {
		t.Fatal(err)
	}
	var v any
	if err := json.Unmarshal(out, &v); err != nil {
		t.Fatal(err)
	}
	var order []string
	walkHandlers(v, nil, func(h map[string]any, _ []map[string]any) {
		order = append(order, h["handler"].(string))
	})
	want := []string{"encode", "templates", "wasm_filter", "reverse_proxy"}
	if !slices.Equal(order, want) {
		t.Errorf("handler order %v, want %v", order, want)
	}
}

// Golden files: testdata/adapt/<name>.caddyfile adapts to <name>.json.
// Run with -update to rewrite them after an intended change.
func TestCaddyfileAdaptsToGoldenJSON(t *testing.T) {
	inputs, err := filepath.Glob(filepath.Join("testdata", "adapt", "*.caddyfile"))
	if err != nil {
		t.Fatal(err)
	}
	if len(inputs) == 0 {
		t.Fatal("no golden inputs in testdata/adapt")
	}
	for _, in := range inputs {
		name := strings.TrimSuffix(filepath.Base(in), ".caddyfile")
		t.Run(name, func(t *testing.T) {
			src, err := os.ReadFile(in)
			if err != nil {
				t.Fatal(err)
			}
			out, warnings, err := adapt(t, string(src))
			if err != nil {
				t.Fatalf("adapt: %v", err)
			}
			if len(warnings) > 0 {
				t.Errorf("warnings: %v", warnings)
			}
			var got bytes.Buffer
			if err := json.Indent(&got, out, "", "\t"); err != nil {
				t.Fatal(err)
			}
			got.WriteByte('\n')
			golden := strings.TrimSuffix(in, ".caddyfile") + ".json"
			if *update {
				if err := os.WriteFile(golden, got.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if !bytes.Equal(got.Bytes(), want) {
				t.Errorf("%s adapts to\n%s\nwant (%s)\n%s", in, got.Bytes(), golden, want)
			}
		})
	}
}
