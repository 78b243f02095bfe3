package main

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluice-edge/sluice/sdk"
	"github.com/sluice-edge/sluice/sdk/sdktest"
)

// Requests from one client over its burst: 3 go through, the 4th is 429.
// The rate (one token per 100 s) keeps refills out of the way.
const config = `# one token every 100 s, bursts of 3, per API key
rate 0.01
burst 3
key header x-api-key`

func withKey(key string) sdktest.Request {
	return sdktest.Request{Header: http.Header{"X-Api-Key": {key}}}
}

// allowed checks a request went through with remaining tokens left.
func allowed(remaining int) func(*testing.T, *sdktest.Result) {
	return func(t *testing.T, r *sdktest.Result) {
		t.Helper()
		if r.Upstream == nil || r.Response.Status != 200 || string(r.Response.Body) != "upstream" {
			t.Fatalf("status %d %q, upstream reached: %v; want it let through", r.Response.Status, r.Response.Body, r.Upstream != nil)
		}
		h := r.Response.Header
		if got := h.Get("X-Ratelimit-Remaining"); got != strconv.Itoa(remaining) {
			t.Errorf("x-ratelimit-remaining = %q, want %d", got, remaining)
		}
		if got := h.Get("X-Ratelimit-Limit"); got != "3" {
			t.Errorf("x-ratelimit-limit = %q, want 3", got)
		}
	}
}

// limited checks a request was refused with 429 and when to come back:
// about 100 s, the time the rate takes to give one token.
func limited(t *testing.T, r *sdktest.Result) {
	t.Helper()
	if r.Upstream != nil {
		t.Error("the upstream was reached")
	}
	if r.Response.Status != 429 {
		t.Fatalf("status %d %q, want 429", r.Response.Status, r.Response.Body)
	}
	h := r.Response.Header
	if s, err := strconv.Atoi(h.Get("Retry-After")); err != nil || s < 90 || s > 100 {
		t.Errorf("retry-after = %q, want 90 to 100 seconds", h.Get("Retry-After"))
	}
	if h.Get("X-Ratelimit-Limit") != "3" || h.Get("X-Ratelimit-Remaining") != "0" {
		t.Errorf("x-ratelimit-limit %q, -remaining %q; want 3 and 0",
			h.Get("X-Ratelimit-Limit"), h.Get("X-Ratelimit-Remaining"))
	}
}

var suite = sdktest.Suite{
	Config: config,
	Cases: []sdktest.Case{
		{Name: "alice 1", Request: withKey("alice"), Check: allowed(2)},
		{Name: "alice 2", Request: withKey("alice"), Check: allowed(1)},
		{Name: "alice 3", Request: withKey("alice"), Check: allowed(0)},
		{Name: "alice over her burst", Request: withKey("alice"), Check: limited},
		{Name: "bob has his own bucket", Request: withKey("bob"), Check: allowed(2)},
		{Name: "no key: the client IP's bucket", Check: allowed(2)},
		{Name: "no key 2", Check: allowed(1)},
		{Name: "no key 3", Check: allowed(0)},
		{Name: "no key over the IP's burst", Check: limited},
		{Name: "an empty key is the IP too", Request: withKey(""), Check: limited},
		{Name: "a key from that IP is not limited by it", Request: withKey("carol"), Check: allowed(2)},
		{Name: "alice still limited", Request: withKey("alice"), Check: limited},
	},
}

// The test's keys must land in buckets of their own, or the cases above
// would test collisions instead.
func TestSuiteKeysHaveTheirOwnBuckets(t *testing.T) {
	seen := map[uint32]string{}
	for _, k := range []string{"h:alice", "h:bob", "h:carol", "ip:192.0.2.10", "ip:127.0.0.1"} {
		b := fnv1a(k) % defaultBuckets
		if other, ok := seen[b]; ok {
			t.Fatalf("%s and %s share bucket %d", k, other, b)
		}
		seen[b] = k
	}
}

func TestRateLimit(t *testing.T) {
	t.Parallel()
	sdktest.Run(t, suite)
}

func TestRateLimitInCaddy(t *testing.T) {
	t.Parallel()
	sdktest.RunCaddy(t, sdktest.Build(t, "."), suite)
}

// key ip ignores the header: every request from one address shares a
// bucket, whatever key it sends.
var ipSuite = sdktest.Suite{
	Config: "rate 0.01\nburst 2\nkey ip\nbuckets 16",
	Cases: []sdktest.Case{
		{Name: "key a", Request: withKey("a"), Check: func(t *testing.T, r *sdktest.Result) {
			if r.Response.Status != 200 || r.Response.Header.Get("X-Ratelimit-Remaining") != "1" {
				t.Errorf("status %d, remaining %q; want 200, 1", r.Response.Status, r.Response.Header.Get("X-Ratelimit-Remaining"))
			}
		}},
		{Name: "key b, same IP", Request: withKey("b"), Check: func(t *testing.T, r *sdktest.Result) {
			if r.Response.Status != 200 || r.Response.Header.Get("X-Ratelimit-Remaining") != "0" {
				t.Errorf("status %d, remaining %q; want 200, 0", r.Response.Status, r.Response.Header.Get("X-Ratelimit-Remaining"))
			}
		}},
		{Name: "key c, same IP", Request: withKey("c"), Check: func(t *testing.T, r *sdktest.Result) {
			if r.Response.Status != 429 || r.Upstream != nil {
				t.Errorf("status %d, upstream reached %v; want 429", r.Response.Status, r.Upstream != nil)
			}
		}},
	},
}

func TestKeyIP(t *testing.T) {
	t.Parallel()
	sdktest.Run(t, ipSuite)
}

func TestKeyIPInCaddy(t *testing.T) {
	t.Parallel()
	sdktest.RunCaddy(t, sdktest.Build(t, "."), ipSuite)
}

// Tokens come back at the configured rate, by the request's real clock: at
// 10 per second, a client that spent its burst has one again 150 ms later,
// and none right after.
var refillSuite = sdktest.Suite{
	Config: "rate 10\nburst 1",
	Cases: []sdktest.Case{
		{Name: "the token", Check: status(200)},
		{Name: "none left", Check: func(t *testing.T, r *sdktest.Result) {
			if r.Response.Status != 429 || r.Response.Header.Get("Retry-After") != "1" {
				t.Errorf("status %d, retry-after %q; want 429 and the minimum, 1", r.Response.Status, r.Response.Header.Get("Retry-After"))
			}
			time.Sleep(150 * time.Millisecond)
		}},
		{Name: "a token again 150 ms later", Check: status(200)},
		{Name: "and none again", Check: status(429)},
	},
}

func status(want int) func(*testing.T, *sdktest.Result) {
	return func(t *testing.T, r *sdktest.Result) {
		if r.Response.Status != want {
			t.Errorf("status %d, want %d", r.Response.Status, want)
		}
	}
}

func TestRefill(t *testing.T) {
	t.Parallel()
	sdktest.Run(t, refillSuite)
}

func TestRefillInCaddy(t *testing.T) {
	t.Parallel()
	sdktest.RunCaddy(t, sdktest.Build(t, "."), refillSuite)
}

// fakeStore is shared data with Sluice's compare-and-swap (a new key
// ignores cas), where a test can play other requests' writes.
type fakeStore struct {
	data   map[string][]byte
	cas    map[string]uint32
	next   uint32
	getErr error
	sets   int
	onSet  func(f *fakeStore, key string) // before each set: another request's write
	logs   []string
}

func newFakeStore() *fakeStore {
	return &fakeStore{data: map[string][]byte{}, cas: map[string]uint32{}}
}

func (f *fakeStore) SharedData(key string) ([]byte, uint32, error) {
	if f.getErr != nil {
		return nil, 0, f.getErr
	}
	v, ok := f.data[key]
	if !ok {
		return nil, 0, sdk.ErrNotFound
	}
	return v, f.cas[key], nil
}

func (f *fakeStore) SetSharedData(key string, value []byte, cas uint32) error {
	f.sets++
	if f.onSet != nil {
		onSet := f.onSet
		f.onSet = nil // the other request's write is not intercepted itself
		onSet(f, key)
		f.onSet = onSet
	}
	if _, ok := f.data[key]; ok && cas != 0 && cas != f.cas[key] {
		return sdk.ErrCASMismatch
	}
	f.next++
	f.data[key], f.cas[key] = value, f.next
	return nil
}

func (f *fakeStore) Log(_ sdk.Level, msg string) { f.logs = append(f.logs, msg) }

func (f *fakeStore) tokens(key string) float64 {
	tokens, _ := decode(f.data[key])
	return tokens
}

// A request that read the bucket, then lost the race to write it, reads it
// again: both requests' tokens are spent, deterministically (the Caddy test
// above catches a lost update only when the race happens).
func TestTakeRetriesAfterAnotherRequestsWrite(t *testing.T) {
	l := &limiter{rate: 0.001, burst: 3}
	f := newFakeStore()
	_ = f.SetSharedData("b", encode(3, time.Now().UnixNano()), 0)
	raced := false
	f.onSet = func(f *fakeStore, key string) {
		if !raced {
			raced = true
			_ = f.SetSharedData(key, encode(2, time.Now().UnixNano()), 0)
		}
	}
	ok, tokens, err := l.take(f, "b")
	if !ok || err != nil || tokens < 0.99 || tokens > 1.01 || f.tokens("b") != tokens {
		t.Errorf("take: %v, %v tokens (stored %v), %v; want a token taken from the 2 the other request left",
			ok, tokens, f.tokens("b"), err)
	}
}

func TestTakeFailsUnderEndlessContention(t *testing.T) {
	l := &limiter{rate: 1, burst: 3}
	f := newFakeStore()
	_ = f.SetSharedData("b", encode(3, time.Now().UnixNano()), 0)
	f.onSet = func(f *fakeStore, key string) { _ = f.SetSharedData(key, f.data[key], 0) }
	f.sets = 0
	if ok, _, err := l.take(f, "b"); ok || err == nil || !strings.Contains(err.Error(), "contended") {
		t.Errorf("take: %v, %v; want an error saying it stayed contended", ok, err)
	}
	if f.sets != 2*attempts { // each attempt, and the other request's write before it
		t.Errorf("%d writes, want %d", f.sets, 2*attempts)
	}
}

func TestTakeHostError(t *testing.T) {
	f := newFakeStore()
	f.getErr = sdk.ErrInternal
	if ok, _, err := (&limiter{rate: 1, burst: 3}).take(f, "b"); ok || err != sdk.ErrInternal {
		t.Errorf("take: %v, %v; want the host's error", ok, err)
	}
}

func TestTakeRepairsABucket(t *testing.T) {
	l := &limiter{rate: 0.001, burst: 3}
	f := newFakeStore()
	// Missing (created at configuration, normally), then not 16 bytes, then
	// more tokens than a (lowered) burst, then NaN: each is a full bucket.
	for _, v := range [][]byte{nil, []byte("junk"), encode(50, time.Now().UnixNano()), encode(math.NaN(), 0)} {
		if v != nil {
			_ = f.SetSharedData("b", v, 0)
		}
		if ok, tokens, err := l.take(f, "b"); !ok || err != nil || tokens < 1.99 || tokens > 2.01 {
			t.Errorf("bucket %q: take %v, %v tokens, %v; want a token from a full bucket of 3", v, ok, tokens, err)
		}
		delete(f.data, "b")
	}
	if len(f.logs) != 1 || !strings.Contains(f.logs[0], "4 bytes") {
		t.Errorf("logs %q, want one about the 4-byte value", f.logs)
	}
}

func TestRetryAfter(t *testing.T) {
	for _, c := range []struct {
		tokens, rate float64
		want         int64
	}{
		{0, 0.01, 100}, {0.5, 0.01, 50}, {1, 5, 1}, {0.999, 0.01, 1}, {0, 1000, 1}, {0, 0.3, 4}, {0, 1e-300, 1<<31 - 1},
	} {
		if got := retryAfter(c.tokens, c.rate); got != c.want {
			t.Errorf("retryAfter(%v, %v) = %d, want %d", c.tokens, c.rate, got, c.want)
		}
	}
}

func TestHostOf(t *testing.T) {
	for addr, want := range map[string]string{
		"192.0.2.10:40000":  "192.0.2.10",
		"[2001:db8::1]:443": "2001:db8::1",
		"2001:db8::1":       "2001:db8::1",
		"192.0.2.10":        "192.0.2.10",
	} {
		if got := hostOf(addr); got != want {
			t.Errorf("hostOf(%q) = %q, want %q", addr, got, want)
		}
	}
}

func TestBadConfigurationIsRefused(t *testing.T) {
	for config, want := range map[string]string{
		"rate 1":                           "rate and burst are required",
		"burst 1":                          "rate and burst are required",
		"rate 0\nburst 1":                  "line 1: rate must be",
		"rate -2\nburst 1":                 "line 1: rate must be",
		"rate NaN\nburst 1":                "line 1: rate must be",
		"rate Inf\nburst 1":                "line 1: rate must be",
		"rate fast\nburst 1":               "line 1: rate must be",
		"rate 1 2\nburst 1":                "line 1: rate takes one value",
		"rate 1\nburst 0":                  "line 2: burst must be",
		"rate 1\nburst 2.5":                "line 2: burst must be",
		"rate 1\nburst 1\nkey":             "line 3: want key ip or key header",
		"rate 1\nburst 1\nkey cookie c":    "line 3: want key ip or key header",
		"rate 1\nburst 1\nkey header":      "line 3: want key ip or key header",
		"rate 1\nburst 1\nbuckets 0":       "line 3: buckets must be between 1 and 8192",
		"rate 1\nburst 1\nbuckets 9000":    "line 3: buckets must be between 1 and 8192",
		"rate 1\nburst 1\nrate 2":          "line 3: rate given twice",
		"# limits\nrate 1\nburst 1\nper 1": "line 4: unknown setting per",
	} {
		err := sdktest.ConfigError(config, suite)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want an error with %q", config, err, want)
		}
	}
	for _, config := range []string{suite.Config, ipSuite.Config, "rate 50\nburst 100\nkey header x-api-key", "rate 10\nburst 20\nkey ip"} {
		if err := sdktest.ConfigError(config, suite); err != nil {
			t.Errorf("%q: %v", config, err)
		}
	}
}

// Every request runs in an instance of its own, all at once: only
// compare-and-swap on the shared bucket keeps them from spending the same
// token. 50 requests at once from one client with a burst of 10 (and a
// token every 1000 s): exactly 10 reach the upstream and 40 get 429. A lost
// update is a race, so the test runs rounds, each a client (key) of its
// own, and the filter's counter must say 40 per round.
func TestConcurrentRequestsShareOneBucket(t *testing.T) {
	t.Parallel()
	const rounds, requests, burst = 6, 50, 10
	var hits atomic.Int32
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		hits.Add(1)
		_, _ = w.Write([]byte("upstream"))
	}))
	defer upstream.Close()

	admin, site := sdktest.FreeAddr(t), sdktest.FreeAddr(t)
	log := sdktest.StartCaddy(t, fmt.Sprintf(`{
	admin %s
	auto_https off
	persist_config off
}

http://%s {
	handle /warm {
		respond "warm"
	}
	handle {
		wasm_filter %s {
			name concurrent
			vm_id concurrent
			config "rate 0.001
burst %d
key header x-client"
		}
		reverse_proxy %s
	}
}
`, admin, site, sdktest.Build(t, "."), burst, upstream.Listener.Addr()), site)

	// A connection per request, open before the requests start, so that
	// they arrive together.
	clients := make([]*http.Client, requests)
	for i := range clients {
		clients[i] = &http.Client{Transport: &http.Transport{}, Timeout: 30 * time.Second}
		defer clients[i].CloseIdleConnections()
		resp, err := clients[i].Get("http://" + site + "/warm")
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}

	buckets := map[uint32]bool{}
	for round := range rounds {
		client := "client-" + strconv.Itoa(round)
		if b := fnv1a("h:"+client) % defaultBuckets; buckets[b] {
			t.Fatalf("%s shares a bucket with an earlier round's client", client)
		} else {
			buckets[b] = true
		}
		hits.Store(0)
		var wg sync.WaitGroup
		var mu sync.Mutex
		statuses := map[int]int{}
		start := make(chan struct{})
		for _, c := range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				req, _ := http.NewRequest("GET", "http://"+site+"/", nil)
				req.Header.Set("X-Client", client)
				<-start
				resp, err := c.Do(req)
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					statuses[-1]++
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				statuses[resp.StatusCode]++
				if resp.StatusCode == 429 {
					if s, _ := strconv.Atoi(resp.Header.Get("Retry-After")); s < 900 || s > 1000 {
						t.Errorf("retry-after %q, want about 1000 s", resp.Header.Get("Retry-After"))
					}
				}
			}()
		}
		close(start)
		wg.Wait()
		if statuses[200] != burst || statuses[429] != requests-burst || hits.Load() != burst {
			t.Fatalf("round %d: statuses %v, upstream hits %d; want %d × 200, %d × 429 and %d hits\ncaddy log:\n%s",
				round, statuses, hits.Load(), burst, requests-burst, burst, log.String())
		}
	}
	if got := scrape(t, admin, `metric="rate_limit_rejected"`); got != rounds*(requests-burst) {
		t.Errorf("rate_limit_rejected = %v, want %d", got, rounds*(requests-burst))
	}
}

// scrape reads the guest counter whose labels include label from Caddy's
// Prometheus endpoint, -1 if there is none.
func scrape(t *testing.T, admin, label string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "caddy_wasm_filter_guest_counter_total{") && strings.Contains(line, label) {
			_, value, _ := strings.Cut(line, "} ")
			v, err := strconv.ParseFloat(value, 64)
			if err != nil {
				t.Fatalf("sample %q: %v", line, err)
			}
			return v
		}
	}
	return -1
}
