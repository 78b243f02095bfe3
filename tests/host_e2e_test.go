package tests

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluice-edge/sluice/tests/guestbuild"
)

// End-to-end tests of the host beyond one request, through the real Caddy,
// with filters written against the official Go SDK: shared data, queues,
// outbound calls, timers, metrics, routing and foreign functions. Shared
// state lives as long as the Caddy process, so each test names its own
// vm_id or filter.

// uniqueID names a test's namespace: the suite may run twice against one
// Caddy process.
func uniqueID(t *testing.T) string {
	return fmt.Sprintf("%s-%d", strings.ReplaceAll(t.Name(), "/", "-"), time.Now().UnixNano())
}

// eventually retries check until it returns "" or the deadline passes,
// then fails with its last complaint.
func eventually(t *testing.T, what string, check func() string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		problem := check()
		if problem == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %s", what, problem)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Concurrent requests, each in its own instance, count in shared data
// with compare-and-swap: every increment lands exactly once. Two tenants
// using the same key do not see each other's counter.
func TestSharedDataCounterWithCAS(t *testing.T) {
	counter := guestbuild.Go(t, "shareddata")
	a, b := uniqueID(t)+"-a", uniqueID(t)+"-b"
	mustLoad(t, fmt.Sprintf(`
	handle /a/* {
		wasm_filter %[1]s {
			vm_id %[2]s
		}
		respond "a"
	}
	handle /b/* {
		wasm_filter %[1]s {
			vm_id %[3]s
		}
		respond "b"
	}`, counter, a, b))

	// The first request creates the key (a set without CAS), the rest race.
	if resp, _ := do(t, "GET", "/a/first", nil, nil); resp.Header.Get("X-Count") != "1" {
		t.Fatalf("first request counted %q", resp.Header.Get("X-Count"))
	}
	const n = 48
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		counts  []int
		retries atomic.Int64
	)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, body := do(t, "GET", "/a/race", nil, nil)
			c, err := strconv.Atoi(resp.Header.Get("X-Count"))
			if err != nil {
				t.Errorf("status %d, x-count %q: %s", resp.StatusCode, resp.Header.Get("X-Count"), body)
				return
			}
			r, _ := strconv.Atoi(resp.Header.Get("X-Cas-Retries"))
			retries.Add(int64(r))
			mu.Lock()
			counts = append(counts, c)
			mu.Unlock()
		}()
	}
	wg.Wait()
	slices.Sort(counts)
	for i, c := range counts {
		if c != i+2 {
			t.Fatalf("counts %v: want each of 2..%d once (a lost or doubled increment)", counts, n+1)
		}
	}
	t.Logf("%d concurrent increments, %d CAS retries", n, retries.Load())

	// Tenant b's counter is its own.
	for want := 1; want <= 2; want++ {
		if resp, _ := do(t, "GET", "/b/x", nil, nil); resp.Header.Get("X-Count") != strconv.Itoa(want) {
			t.Errorf("tenant b counted %q, want %d", resp.Header.Get("X-Count"), want)
		}
	}
}

// Shared data survives a config reload, even one that changes the filter's
// settings (so the reload makes a new plugin rather than keeping the old):
// the tenant's data is the host's, not the plugin's.
func TestSharedDataSurvivesAReload(t *testing.T) {
	site := func(option, extra string) string {
		return fmt.Sprintf("wasm_filter %s {\n vm_id %s\n %s\n}\n%s\nrespond \"ok\"",
			guestbuild.Go(t, "shareddata"), t.Name(), option, extra)
	}
	mustLoad(t, site("timeout 500ms", ""))
	do(t, "GET", "/", nil, nil)
	resp, _ := do(t, "GET", "/", nil, nil)
	before, err := strconv.Atoi(resp.Header.Get("X-Count"))
	if err != nil {
		t.Fatalf("x-count %q", resp.Header.Get("X-Count"))
	}
	mustLoad(t, site("timeout 1s", "header X-Reloaded yes"))
	resp, _ = do(t, "GET", "/", nil, nil)
	if resp.Header.Get("X-Reloaded") != "yes" {
		t.Fatal("the new config is not serving")
	}
	if got := resp.Header.Get("X-Count"); got != strconv.Itoa(before+1) {
		t.Errorf("after the reload the counter read %s, want %d", got, before+1)
	}
}

// A producer filter enqueues every request's path on a queue that a
// consumer filter of the same tenant registered; the consumer's background
// instance drains it as items arrive.
func TestQueueProducerAndConsumer(t *testing.T) {
	tenant := uniqueID(t)
	mustLoad(t, fmt.Sprintf(`
	handle /send/* {
		wasm_filter %[1]s {
			vm_id %[3]s
			config paths
		}
		%[4]s
	}
	handle /inspect {
		wasm_filter %[2]s {
			vm_id %[3]s
			config paths
		}
	}`, guestbuild.Go(t, "queuesender"), guestbuild.Go(t, "queuereceiver"), tenant, proxyTo()))

	var queueID string
	for _, path := range []string{"/send/one", "/send/two", "/send/three"} {
		resp, body := do(t, "GET", path, nil, nil)
		if resp.StatusCode != http.StatusOK || resp.Header.Get("X-Enqueued") == "" {
			t.Fatalf("%s: status %d, x-enqueued %q: %s", path, resp.StatusCode, resp.Header.Get("X-Enqueued"), body)
		}
		queueID = resp.Header.Get("X-Enqueued")
	}
	eventually(t, "the consumer drains the queue", func() string {
		resp, body := do(t, "GET", "/inspect", nil, nil)
		if resp.Header.Get("X-Queue-Id") != queueID {
			return fmt.Sprintf("consumer's queue %q, producer's %q", resp.Header.Get("X-Queue-Id"), queueID)
		}
		if body != "received=3 last=/send/three" {
			return "consumer says " + body
		}
		return ""
	})

	// Another tenant's producer cannot find the queue.
	mustLoad(t, fmt.Sprintf("wasm_filter %s {\n vm_id %s-other\n config paths\n}\n%s",
		guestbuild.Go(t, "queuesender"), tenant, proxyTo()))
	resp, body := do(t, "GET", "/send/four", nil, nil)
	if resp.StatusCode != http.StatusInternalServerError || !strings.Contains(body, "resolve:") {
		t.Errorf("another tenant's producer: status %d: %s", resp.StatusCode, body)
	}
}

// An auth filter asks a local auth service about every request with an
// outbound call, and lets it through or rejects it on the answer.
func TestAuthFilterCallsAnAuthService(t *testing.T) {
	var checks atomic.Int64
	auth := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		checks.Add(1)
		if r.URL.Path != "/check" || r.Host != "auth.internal" {
			http.Error(w, "unexpected request "+r.Host+r.URL.Path, http.StatusBadRequest)
			return
		}
		if r.Header.Get("Authorization") != "Bearer good" {
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = io.WriteString(w, "bad token")
			return
		}
		w.Header().Set("X-User", "alice")
	}))
	defer auth.Close()
	load := func(url string) {
		mustLoad(t, fmt.Sprintf("wasm_filter %s {\n upstream auth %s\n}\n%s", guestbuild.Go(t, "authcall"), url, proxyTo()))
	}
	load(auth.URL)

	resp, body := do(t, "GET", "/private", nil, http.Header{"Authorization": {"Bearer good"}})
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("good token: status %d: %s", resp.StatusCode, body)
	}
	if got := decodeEcho(t, body).Header.Get("X-Auth-User"); got != "alice" {
		t.Errorf("upstream saw x-auth-user %q", got)
	}
	resp, body = do(t, "GET", "/private", nil, http.Header{"Authorization": {"Bearer bad"}})
	if resp.StatusCode != http.StatusForbidden || body != "bad token" || resp.Header.Get("X-Auth-Status") != "401" {
		t.Errorf("bad token: status %d, x-auth-status %q: %s", resp.StatusCode, resp.Header.Get("X-Auth-Status"), body)
	}
	if checks.Load() != 2 {
		t.Errorf("the auth service got %d checks", checks.Load())
	}

	// The auth service is down: the filter answers 503.
	down := httptest.NewServer(http.NotFoundHandler())
	down.Close()
	load(down.URL)
	resp, body = do(t, "GET", "/private", nil, http.Header{"Authorization": {"Bearer good"}})
	if resp.StatusCode != http.StatusServiceUnavailable || body != "auth unavailable" {
		t.Errorf("auth service down: status %d: %s", resp.StatusCode, body)
	}
}

// A call to anything but a declared upstream is refused at dispatch: an
// address (even a live one, even Caddy's admin endpoint) is not a name the
// operator declared.
func TestUndeclaredCallsAreRefused(t *testing.T) {
	var hits atomic.Int64
	target := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { hits.Add(1) }))
	defer target.Close()
	declared := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { hits.Add(1) }))
	defer declared.Close()
	refused := guestbuild.Go(t, "callrefused")
	for _, callee := range []string{adminAddr, target.Listener.Addr().String(), "http://" + adminAddr + "/config/", "admin"} {
		for _, upstreams := range []string{"", "upstream declared " + declared.URL} {
			mustLoad(t, fmt.Sprintf("wasm_filter %s {\n config %q\n %s\n}\n%s", refused, callee, upstreams, proxyTo()))
			resp, body := do(t, "GET", "/", nil, nil)
			if resp.StatusCode != http.StatusBadGateway || body != "refused: error status returned by host: bad argument" {
				t.Errorf("call to %q (%s): status %d: %s", callee, upstreams, resp.StatusCode, body)
			}
		}
	}
	if hits.Load() != 0 {
		t.Errorf("%d requests reached a server the filter named", hits.Load())
	}
}

// A filter's timer ticks in its background instance, which refreshes keys
// from a service with outbound calls; requests read the latest keys from
// shared data. The timer stops when the config drops the filter.
func TestTickDrivenRefresher(t *testing.T) {
	var (
		keys  atomic.Value
		calls atomic.Int64
	)
	keys.Store("k1")
	svc := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		_, _ = io.WriteString(w, keys.Load().(string))
	}))
	defer svc.Close()
	mustLoad(t, fmt.Sprintf("wasm_filter %s {\n vm_id %s\n config 20\n upstream keys %s\n}\n%s",
		guestbuild.Go(t, "refresher"), uniqueID(t), svc.URL, proxyTo()))

	wantKeys := func(want string) {
		eventually(t, "keys "+want+" reach requests", func() string {
			resp, body := do(t, "GET", "/", nil, nil)
			if got := resp.Header.Get("X-Keys"); got != want {
				return "response x-keys " + got
			}
			if got := decodeEcho(t, body).Header.Get("X-Keys"); got != want {
				return "upstream saw x-keys " + got
			}
			return ""
		})
	}
	wantKeys("k1")
	keys.Store("k2")
	wantKeys("k2")
	resp, _ := do(t, "GET", "/", nil, nil)
	if ticks, _ := strconv.Atoi(resp.Header.Get("X-Ticks")); ticks < 2 {
		t.Errorf("x-ticks %q", resp.Header.Get("X-Ticks"))
	}

	mustLoad(t, proxyTo())
	time.Sleep(100 * time.Millisecond) // a tick in flight may still finish
	stopped := calls.Load()
	time.Sleep(300 * time.Millisecond)
	if n := calls.Load() - stopped; n != 0 {
		t.Errorf("%d refreshes after the filter was unloaded", n)
	}
}

// Metrics a filter defines outlive each request's instance: the counter
// counts every request.
func TestGuestMetricsAccumulate(t *testing.T) {
	mustLoad(t, fmt.Sprintf("wasm_filter %s {\n name %s\n}\n%s", guestbuild.Go(t, "metrics"), uniqueID(t), proxyTo()))
	for want := 1; want <= 5; want++ {
		resp, body := do(t, "GET", "/some/path", nil, nil)
		if resp.StatusCode != http.StatusOK || resp.Header.Get("X-Requests-Total") != strconv.Itoa(want) {
			t.Fatalf("request %d: status %d, x-requests-total %q: %s", want, resp.StatusCode,
				resp.Header.Get("X-Requests-Total"), body)
		}
		if got := resp.Header.Get("X-Inflight"); got != "1" {
			t.Errorf("request %d: x-inflight %q, want 1 (only itself)", want, got)
		}
	}
}

// A filter steers routing: it sets a property that Caddy reads as the
// placeholder {http.wasm_filter.route}, here through map into
// reverse_proxy, and through an expression matcher.
func TestCanaryRouterSteersReverseProxy(t *testing.T) {
	canary := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "canary saw x-route="+r.Header.Get("X-Route"))
	}))
	defer canary.Close()
	router := guestbuild.Go(t, "canary")
	for name, site := range map[string]string{
		"map": fmt.Sprintf(`
	wasm_filter %s
	map {http.wasm_filter.route} {backend} {
		canary %s
		default %s
	}
	reverse_proxy {backend}`, router, canary.Listener.Addr(), upstream.Addr()),
		"matcher": fmt.Sprintf(`
	wasm_filter %s
	@canary expression {http.wasm_filter.route} == "canary"
	reverse_proxy @canary %s
	reverse_proxy %s`, router, canary.Listener.Addr(), upstream.Addr()),
	} {
		t.Run(name, func(t *testing.T) {
			mustLoad(t, site)
			for _, tc := range []struct {
				path   string
				header http.Header
				canary bool
			}{
				{"/", nil, false},
				{"/", http.Header{"X-Canary": {"1"}}, true},
				{"/", http.Header{"Cookie": {"a=b; canary=1"}}, true},
				{"/try-canary", nil, true},
			} {
				resp, body := do(t, "GET", tc.path, nil, tc.header)
				if resp.StatusCode != http.StatusOK {
					t.Fatalf("%s %v: status %d: %s", tc.path, tc.header, resp.StatusCode, body)
				}
				if got := body == "canary saw x-route=canary"; got != tc.canary {
					t.Errorf("%s %v: canary %v, want %v (%s)", tc.path, tc.header, got, tc.canary, body)
				}
				if !tc.canary && decodeEcho(t, body).Header.Get("X-Route") != "stable" {
					t.Errorf("%s %v: the stable upstream saw %s", tc.path, tc.header, body)
				}
			}
		})
	}
}

// Envoy's compress and uncompress foreign functions round-trip; an unknown
// one is NOT_FOUND.
func TestForeignFunctions(t *testing.T) {
	mustLoad(t, "wasm_filter "+guestbuild.Go(t, "foreign"))
	resp, body := do(t, "GET", "/abc", nil, nil)
	fields := strings.Fields(body)
	if resp.StatusCode != http.StatusOK || len(fields) != 4 || fields[0] != "ok" || fields[1] != "200" || fields[3] != "true" {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	if compressed, _ := strconv.Atoi(fields[2]); compressed >= 200 {
		t.Errorf("200 bytes compressed to %d", compressed)
	}
	if got := resp.Header.Get("X-Missing"); got != "error status returned by host: not found" {
		t.Errorf("x-missing %q", got)
	}
}

// In shared isolation a filter's memory outlives requests: the Go SDK
// guest's request counter, 1 on every request in its own instance, counts
// on across the few shared instances.
func TestSharedIsolationKeepsGuestState(t *testing.T) {
	mustLoad(t, fmt.Sprintf("wasm_filter %s {\n isolation shared\n}\n%s", guestbuild.Go(t, "headers"), proxyTo()))
	// At most one instance per core: requests six times the cores leave one
	// of them at six or more.
	requests := 6 * runtime.NumCPU()
	top := 0
	for range requests {
		resp, _ := do(t, "GET", "/", nil, nil)
		n, err := strconv.Atoi(resp.Header.Get("X-Count"))
		if err != nil {
			t.Fatalf("x-count %q", resp.Header.Get("X-Count"))
		}
		top = max(top, n)
	}
	if top < 6 {
		t.Errorf("the highest count after %d requests is %d, want at least 6", requests, top)
	}
}
