package multi_tenant_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluice-edge/sluice/sdk/sdktest"
)

// The filters the example's tenants use, built from the other examples.
var filters = []string{"rate_limit", "header_rewrite", "body_rewrite", "auth", "canary"}

// upstream is a tenant's backend: it answers per path and records what it
// received.
type upstream struct {
	name string
	srv  *httptest.Server

	mu   sync.Mutex
	hits int
	last http.Header
}

func newUpstream(t *testing.T, name string) *upstream {
	u := &upstream{name: name}
	u.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.mu.Lock()
		u.hits++
		u.last = r.Header.Clone()
		u.mu.Unlock()
		switch r.URL.Path {
		case "/page":
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			_, _ = io.WriteString(w, "<html><body><h1>"+name+"</h1></body></html>")
		case "/user.json":
			w.Header().Set("Content-Type", "application/json")
			_, _ = io.WriteString(w, `{"user":"ann","password":"hunter2"}`)
		default:
			w.Header().Set("Content-Type", "text/plain")
			_, _ = io.WriteString(w, name)
		}
	}))
	t.Cleanup(u.srv.Close)
	return u
}

// take returns the hits since the last take and the headers of the last.
func (u *upstream) take() (int, http.Header) {
	u.mu.Lock()
	defer u.mu.Unlock()
	hits, last := u.hits, u.last
	u.hits, u.last = 0, nil
	return hits, last
}

// tenantCaddy is the example's Caddyfile served by a real Caddy, with the
// filters built from source, test ports and httptest upstreams.
type tenantCaddy struct {
	port, admin string
	caddyfile   string // the Caddyfile it runs
	log         *sdktest.Log
	upstreams   map[string]*upstream // by the example's upstream address
	client      *http.Client
}

// testCaddyfile is the example's Caddyfile with every address and path the
// test runs it with put in. Each replacement must find what it replaces, so
// the test follows the example or fails saying what changed.
func testCaddyfile(t *testing.T, wasm map[string]string, port, admin string, upstreams map[string]*upstream) string {
	t.Helper()
	example, err := os.ReadFile("Caddyfile")
	if err != nil {
		t.Fatal(err)
	}
	authConfig, err := filepath.Abs("tenant-b-auth.json")
	if err != nil {
		t.Fatal(err)
	}
	text := string(example)
	replace := func(old, new string) {
		t.Helper()
		if !strings.Contains(text, old) {
			t.Fatalf("the example's Caddyfile has no %q any more: update the test", old)
		}
		text = strings.ReplaceAll(text, old, new)
	}
	replace("admin localhost:2019", "admin "+admin)
	replace(".localhost:8080 {", ".localhost:"+port+" {")
	for name, path := range wasm {
		replace("build/"+name+".wasm", path)
	}
	replace("config_file tenant-b-auth.json", "config_file "+authConfig)
	for addr, u := range upstreams {
		replace(addr, u.srv.Listener.Addr().String())
	}
	return text
}

func buildFilters(t *testing.T) map[string]string {
	wasm := map[string]string{}
	for _, name := range filters {
		wasm[name] = sdktest.Build(t, filepath.Join("..", name))
	}
	return wasm
}

func startTenants(t *testing.T, wasm map[string]string) *tenantCaddy {
	t.Helper()
	addr, admin := sdktest.FreeAddr(t), sdktest.FreeAddr(t)
	_, port, _ := strings.Cut(addr, ":")
	c := &tenantCaddy{
		port: port, admin: admin,
		upstreams: map[string]*upstream{
			"localhost:9001": newUpstream(t, "tenant-a"),
			"localhost:9002": newUpstream(t, "tenant-b"),
			"localhost:9003": newUpstream(t, "tenant-c-stable"),
			"localhost:9004": newUpstream(t, "tenant-c-canary"),
		},
		client: &http.Client{Timeout: 30 * time.Second},
	}
	c.caddyfile = testCaddyfile(t, wasm, port, admin, c.upstreams)
	c.log = sdktest.StartCaddy(t, c.caddyfile, addr)
	return c
}

// get sends a request to a tenant's site.
func (c *tenantCaddy) get(t *testing.T, tenant, path string, header http.Header) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest("GET", "http://127.0.0.1:"+c.port+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = tenant + ".localhost:" + c.port
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := c.client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v\ncaddy log:\n%s", tenant, path, err, c.log.String())
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(body)
}

// reached checks that exactly the upstream named got the last request, and
// returns the headers it got.
func (c *tenantCaddy) reached(t *testing.T, want string) http.Header {
	t.Helper()
	var got http.Header
	for _, u := range c.upstreams {
		hits, last := u.take()
		switch {
		case u.name == want && hits != 1:
			t.Errorf("%s got %d requests, want 1", u.name, hits)
		case u.name == want:
			got = last
		case hits != 0:
			t.Errorf("%s got %d requests, want none: they were %s's", u.name, hits, want)
		}
	}
	if got == nil {
		return http.Header{}
	}
	return got
}

// The example, end to end: each tenant's requests go through its own chain
// to its own upstream; tenant A's rate limit does not spend tenant B's or
// C's tokens; a broken filter config in one tenant is refused whole while
// the running config keeps serving.
func TestTenants(t *testing.T) {
	t.Parallel()
	c := startTenants(t, buildFilters(t))
	billing := http.Header{"X-Api-Key": {"b-key-billing"}}

	t.Run("tenant A: its headers, its upstream", func(t *testing.T) {
		resp, body := c.get(t, "tenant-a", "/", nil)
		up := c.reached(t, "tenant-a")
		if resp.StatusCode != 200 || body != "tenant-a" {
			t.Fatalf("%d %q", resp.StatusCode, body)
		}
		if up.Get("X-Tenant") != "a" || up.Get("X-Auth-Subject") != "" {
			t.Errorf("upstream got x-tenant %q, x-auth-subject %q: want a and none (auth is B's)", up.Get("X-Tenant"), up.Get("X-Auth-Subject"))
		}
		for name, want := range map[string]string{
			"X-Served-By": "tenant-a", "X-Frame-Options": "DENY", "X-Ratelimit-Limit": "10",
		} {
			if got := resp.Header.Get(name); got != want {
				t.Errorf("%s = %q, want %q", name, got, want)
			}
		}
	})

	t.Run("tenant A: HTML gets its script, JSON loses passwords", func(t *testing.T) {
		_, page := c.get(t, "tenant-a", "/page", nil)
		c.reached(t, "tenant-a")
		if page != `<html><body><h1>tenant-a</h1><script src="/rum.js"></script></body></html>` {
			t.Errorf("page %q, want the script injected", page)
		}
		_, doc := c.get(t, "tenant-a", "/user.json", nil)
		c.reached(t, "tenant-a")
		var user map[string]string
		if err := json.Unmarshal([]byte(doc), &user); err != nil || user["user"] != "ann" || user["password"] != "[redacted]" {
			t.Errorf("json %q (%v), want the password redacted", doc, err)
		}
	})

	t.Run("tenant B: an API key is required", func(t *testing.T) {
		resp, _ := c.get(t, "tenant-b", "/", nil)
		c.reached(t, "")
		if resp.StatusCode != 401 || !strings.Contains(resp.Header.Get("Www-Authenticate"), `realm="tenant-b"`) {
			t.Errorf("%d, www-authenticate %q; want 401 with tenant B's realm", resp.StatusCode, resp.Header.Get("Www-Authenticate"))
		}
	})

	t.Run("tenant B: its headers, its upstream", func(t *testing.T) {
		resp, body := c.get(t, "tenant-b", "/page", billing)
		up := c.reached(t, "tenant-b")
		if resp.StatusCode != 200 || !strings.Contains(body, "<h1>tenant-b</h1></body>") {
			t.Fatalf("%d %q, want tenant B's page untouched (body_rewrite is A's)", resp.StatusCode, body)
		}
		if up.Get("X-Tenant") != "b" || up.Get("X-Auth-Subject") != "billing" || up.Get("X-Api-Key") != "" {
			t.Errorf("upstream got x-tenant %q, x-auth-subject %q, x-api-key %q; want b, billing, none",
				up.Get("X-Tenant"), up.Get("X-Auth-Subject"), up.Get("X-Api-Key"))
		}
		if resp.Header.Get("X-Served-By") != "tenant-b" || resp.Header.Get("X-Frame-Options") != "" ||
			resp.Header.Get("X-Ratelimit-Limit") != "100" {
			t.Errorf("x-served-by %q, x-frame-options %q, x-ratelimit-limit %q; want tenant-b, none (A's), 100",
				resp.Header.Get("X-Served-By"), resp.Header.Get("X-Frame-Options"), resp.Header.Get("X-Ratelimit-Limit"))
		}
	})

	t.Run("tenant C: the canary filter routes", func(t *testing.T) {
		resp, body := c.get(t, "tenant-c", "/", http.Header{"X-Canary": {"1"}})
		up := c.reached(t, "tenant-c-canary")
		if resp.StatusCode != 200 || body != "tenant-c-canary" || up.Get("X-Route") != "canary" {
			t.Errorf("%d %q, x-route %q; want the canary", resp.StatusCode, body, up.Get("X-Route"))
		}
		if resp.Header.Get("X-Served-By") != "" || resp.Header.Get("X-Ratelimit-Limit") != "20" {
			t.Errorf("x-served-by %q, x-ratelimit-limit %q; want none (A's and B's) and 20",
				resp.Header.Get("X-Served-By"), resp.Header.Get("X-Ratelimit-Limit"))
		}
		// Users are canaries (10%) or not by their id: every one goes where
		// the filter said, and most to the stable backend.
		stable := 0
		for i := range 20 {
			_, body := c.get(t, "tenant-c", "/", http.Header{"X-User-Id": {"user-" + strconv.Itoa(i)}})
			var up http.Header
			switch body {
			case "tenant-c-stable":
				stable++
				up = c.reached(t, "tenant-c-stable")
			case "tenant-c-canary":
				up = c.reached(t, "tenant-c-canary")
			default:
				t.Fatalf("user-%d: %q", i, body)
			}
			if route := up.Get("X-Route"); "tenant-c-"+route != body {
				t.Errorf("user-%d reached %s with x-route %q", i, body, route)
			}
		}
		if stable < 10 {
			t.Errorf("%d of 20 users stable, want most", stable)
		}
	})

	t.Run("a broken tenant config is refused whole", func(t *testing.T) {
		broken := strings.Replace(c.caddyfile, "rate 50\nburst 100", "rate 50\nburst lots", 1)
		if broken == c.caddyfile {
			t.Fatal("tenant B's rate limit config not found")
		}
		file := filepath.Join(t.TempDir(), "Caddyfile")
		if err := os.WriteFile(file, []byte(broken), 0o600); err != nil {
			t.Fatal(err)
		}
		out, err := caddy(t, "validate", "--config", file, "--adapter", "caddyfile")
		if err == nil {
			t.Fatalf("caddy validate took the broken config:\n%s", out)
		}
		for _, want := range []string{"tenant-b-rate-limit", "line 2: burst must be", "rate_limit"} {
			if !strings.Contains(out, want) {
				t.Errorf("caddy validate's error does not name %q:\n%s", want, out)
			}
		}
		// Loaded into the running Caddy, it is refused and every tenant
		// keeps being served by the config before it.
		out, err = caddy(t, "reload", "--config", file, "--adapter", "caddyfile", "--address", c.admin)
		if err == nil || !strings.Contains(out, "tenant-b-rate-limit") {
			t.Errorf("caddy reload: %v, want it refused naming tenant B's filter:\n%s", err, out)
		}
		for tenant, want := range map[string]string{"tenant-a": "tenant-a", "tenant-b": "tenant-b", "tenant-c": "tenant-c-canary"} {
			resp, body := c.get(t, tenant, "/", http.Header{"X-Api-Key": {"b-key-billing"}, "X-Canary": {"1"}})
			c.reached(t, want)
			if resp.StatusCode != 200 || body != want {
				t.Errorf("%s after the refused reload: %d %q", tenant, resp.StatusCode, body)
			}
		}
	})

	// Last: it spends tenant A's tokens for this client.
	t.Run("tenant A's rate limit is not B's or C's", func(t *testing.T) {
		limited := false
		for i := 0; i < 40 && !limited; i++ {
			resp, _ := c.get(t, "tenant-a", "/", nil)
			limited = resp.StatusCode == 429
		}
		c.upstreams["localhost:9001"].take()
		if !limited {
			t.Fatal("tenant A never answered 429 (burst 10)")
		}
		// The same client, at once, at the other tenants: their own buckets.
		resp, _ := c.get(t, "tenant-b", "/", billing)
		c.reached(t, "tenant-b")
		if resp.StatusCode != 200 || resp.Header.Get("X-Ratelimit-Remaining") == "" {
			t.Errorf("tenant B: %d, remaining %q; want 200 with tokens left", resp.StatusCode, resp.Header.Get("X-Ratelimit-Remaining"))
		}
		resp, _ = c.get(t, "tenant-c", "/", http.Header{"X-Canary": {"1"}}) // no x-user-id: keyed by IP, like A
		c.reached(t, "tenant-c-canary")
		if resp.StatusCode != 200 || resp.Header.Get("X-Ratelimit-Remaining") == "" {
			t.Errorf("tenant C: %d, remaining %q; want 200 with tokens left for this IP",
				resp.StatusCode, resp.Header.Get("X-Ratelimit-Remaining"))
		}
	})
	if t.Failed() {
		t.Logf("caddy log:\n%s", c.log.String())
	}
}

// Tenants are told apart by vm_id, not by the filter's name: two tenants
// running the same limiter under the same name have separate buckets, and
// the same name in the same vm_id (the control) shares them.
func TestRateLimitBucketsArePerVMID(t *testing.T) {
	t.Parallel()
	wasm := sdktest.Build(t, "../rate_limit")
	up := newUpstream(t, "upstream")
	addr := sdktest.FreeAddr(t)
	_, port, _ := strings.Cut(addr, ":")
	site := func(host, vmID string) string {
		return fmt.Sprintf(`http://%s.localhost:%s {
	wasm_filter %s {
		name limiter
		vm_id %s
		config "rate 0.001
burst 2
key ip"
	}
	reverse_proxy %s
}
`, host, port, wasm, vmID, up.srv.Listener.Addr())
	}
	log := sdktest.StartCaddy(t, "{\n\tadmin off\n}\n"+site("x", "one")+site("y", "two")+site("z", "one"), addr)
	c := &tenantCaddy{port: port, log: log, client: &http.Client{Timeout: 30 * time.Second}}
	for i, step := range []struct {
		host string
		want int
	}{
		{"x", 200}, {"x", 200}, {"x", 429}, // vm_id one's bucket for this IP is spent
		{"y", 200}, // vm_id two: a bucket of its own
		{"z", 429}, // vm_id one again, another site: the same bucket
	} {
		if resp, _ := c.get(t, step.host, "/", nil); resp.StatusCode != step.want {
			t.Errorf("request %d to %s: %d, want %d", i+1, step.host, resp.StatusCode, step.want)
		}
	}
}

// The example's Caddyfile, as it is, is a valid config in which every
// filter has its tenant's vm_id (the tenant of its name) and its own limits.
func TestExampleCaddyfileAdapts(t *testing.T) {
	t.Parallel()
	out, err := caddyCommand(t, "adapt", "--config", "Caddyfile", "--adapter", "caddyfile").Output()
	if err != nil {
		t.Fatalf("caddy adapt: %v\n%s", err, out)
	}
	var config any
	if err := json.Unmarshal(out, &config); err != nil {
		t.Fatalf("caddy adapt's output: %v\n%s", err, out)
	}
	var handlers []map[string]any
	var walk func(any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			if v["handler"] == "wasm_filter" {
				handlers = append(handlers, v)
			}
			for _, e := range v {
				walk(e)
			}
		case []any:
			for _, e := range v {
				walk(e)
			}
		}
	}
	walk(config)
	tenants := map[string]int{}
	for _, h := range handlers {
		name, _ := h["name"].(string)
		vmID, _ := h["vm_id"].(string)
		tenant, _, _ := strings.Cut(strings.TrimPrefix(name, "tenant-"), "-")
		if vmID != "tenant-"+tenant {
			t.Errorf("filter %q has vm_id %q, want its tenant's", name, vmID)
		}
		tenants[vmID]++
		for _, limit := range []string{"timeout", "memory_limit", "max_body_size", "failure_policy"} {
			if h[limit] == nil {
				t.Errorf("filter %q does not set %s", name, limit)
			}
		}
	}
	if len(tenants) != 3 || len(handlers) != 8 {
		t.Errorf("filters per tenant %v, want 3 tenants, 8 filters", tenants)
	}
}

// caddy runs the Caddy binary the tests use and returns its output.
func caddy(t *testing.T, args ...string) (string, error) {
	t.Helper()
	out, err := caddyCommand(t, args...).CombinedOutput()
	return string(out), err
}

// caddyCommand is a command running the Caddy binary the tests use.
func caddyCommand(t *testing.T, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(sdktest.CaddyBinary(t), args...)
	dir := t.TempDir()
	cmd.Env = append(os.Environ(), "XDG_DATA_HOME="+filepath.Join(dir, "data"), "XDG_CONFIG_HOME="+filepath.Join(dir, "config"))
	return cmd
}
