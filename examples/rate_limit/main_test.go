package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/netip"
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
//
// Natively the seed is testRandom's, under which the clients' keys have
// buckets of their own (TestSuiteKeysHaveTheirOwnBuckets). In Caddy it is
// random, as deployed: with 8192 buckets the 4 clients (alice, bob, carol,
// 127.0.0.1) all have their own with probability 1 - 6/8192 (a 0.07 %
// chance of a collision failing the run; no seed can rule it out).
const config = `# one token every 100 s, bursts of 3, per API key
rate 0.01
burst 3
key header x-api-key
buckets 8192`

// testRandom is the native suites' randomness: a fixed seed, so that which
// keys share a bucket is the same every run.
func testRandom(b []byte) error {
	for i := range b {
		b[i] = byte(0x5a + 31*i)
	}
	return nil
}

// testConfigure is the filter's configure function with testRandom.
var testConfigure = configureWith(testRandom)

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
	Config:    config,
	Configure: testConfigure,
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

// setUpLimiter is the limiter config configures natively (with testRandom,
// as the sdktest host names the filter), over store f.
func setUpLimiter(t *testing.T, config string, f *fakeStore) *limiter {
	t.Helper()
	l, err := parse(config)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.setUp(f, "sdktest", testRandom); err != nil {
		t.Fatal(err)
	}
	return l
}

// The test's keys must land in buckets of their own under the native
// suites' seed, or the cases above would test collisions instead.
func TestSuiteKeysHaveTheirOwnBuckets(t *testing.T) {
	l := setUpLimiter(t, config, newFakeStore())
	seen := map[string]string{}
	for _, k := range []string{"h:alice", "h:bob", "h:carol", "ip:192.0.2.10"} {
		b := l.bucket(k)
		if other, ok := seen[b]; ok {
			t.Fatalf("%s and %s share bucket %s", k, other, b)
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
	Config:    "rate 0.01\nburst 2\nkey ip\nbuckets 16",
	Configure: testConfigure,
	Cases: []sdktest.Case{
		{Name: "key a", Request: withKey("a"), Check: statusRemaining(200, "1")},
		{Name: "key b, same IP", Request: withKey("b"), Check: statusRemaining(200, "0")},
		{Name: "key c, same IP", Request: withKey("c"), Check: statusRemaining(429, "0")},
	},
}

// statusRemaining checks the status and x-ratelimit-remaining, and that a
// refused request did not reach the upstream.
func statusRemaining(status int, remaining string) func(*testing.T, *sdktest.Result) {
	return func(t *testing.T, r *sdktest.Result) {
		t.Helper()
		if got := r.Response.Header.Get("X-Ratelimit-Remaining"); r.Response.Status != status || got != remaining {
			t.Errorf("status %d, remaining %q; want %d, %s", r.Response.Status, got, status, remaining)
		}
		if status == 429 && r.Upstream != nil {
			t.Error("the upstream was reached")
		}
	}
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
	Config:    "rate 10\nburst 1",
	Configure: testConfigure,
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
// update is a race, so the test runs rounds, and the filters' counters must
// say 40 per round, and no request failed open. Each round has a filter of
// its own (its own name, so its own buckets): with a random seed, rounds
// sharing a filter could not be sure their clients' buckets differ.
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
	wasm := sdktest.Build(t, ".")
	var handles strings.Builder
	for round := range rounds {
		fmt.Fprintf(&handles, `	handle /%d {
		wasm_filter %s {
			name concurrent-%d
			vm_id concurrent
			config "rate 0.001
burst %d
key header x-client"
		}
		reverse_proxy %s
	}
`, round, wasm, round, burst, upstream.Listener.Addr())
	}
	log := sdktest.StartCaddy(t, fmt.Sprintf(`{
	admin %s
	auto_https off
	persist_config off
}

http://%s {
	handle /warm {
		respond "warm"
	}
%s}
`, admin, site, handles.String()), site)

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

	for round := range rounds {
		client := "client-" + strconv.Itoa(round)
		hits.Store(0)
		var wg sync.WaitGroup
		var mu sync.Mutex
		statuses := map[int]int{}
		start := make(chan struct{})
		for _, c := range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				req, _ := http.NewRequest("GET", "http://"+site+"/"+strconv.Itoa(round), nil)
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
	if got := scrape(t, admin, `metric="rate_limit_failed_open"`); got > 0 {
		t.Errorf("rate_limit_failed_open = %v, want none\ncaddy log:\n%s", got, log.String())
	}
}

// scrape reads the guest counters whose labels include label from Caddy's
// Prometheus endpoint and returns their sum, -1 if there is none.
func scrape(t *testing.T, admin, label string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	sum, found := 0.0, false
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "caddy_wasm_filter_guest_counter_total{") && strings.Contains(line, label) {
			_, value, _ := strings.Cut(line, "} ")
			v, err := strconv.ParseFloat(value, 64)
			if err != nil {
				t.Fatalf("sample %q: %v", line, err)
			}
			sum, found = sum+v, true
		}
	}
	if !found {
		return -1
	}
	return sum
}

// A bucket last refilled in the future (the clock stepped back, by an hour
// here) restarts its refill from now: a refused request stores the reset,
// so the client gets tokens back at the rate, not only once the clock has
// caught up, which Retry-After: 1 would keep telling it to wait for.
func TestClockSteppedBack(t *testing.T) {
	l := &limiter{rate: 10, burst: 1}
	f := newFakeStore()
	future := time.Now().Add(time.Hour).UnixNano()
	_ = f.SetSharedData("b", encode(0, future), 0)
	before := time.Now().UnixNano()
	if ok, tokens, err := l.take(f, "b"); ok || err != nil || tokens != 0 {
		t.Fatalf("take: %v, %v tokens, %v; want refused with the bucket's 0 tokens (no refill for the hour)", ok, tokens, err)
	}
	if tokens, last := decode(f.data["b"]); tokens != 0 || last < before || last > time.Now().UnixNano() {
		t.Fatalf("bucket %v tokens, last refill %v; want 0 tokens and the refill time reset to now",
			tokens, time.Unix(0, last))
	}
	time.Sleep(150 * time.Millisecond) // a token at 10 a second
	if ok, _, err := l.take(f, "b"); !ok || err != nil {
		t.Errorf("take 150 ms later: %v, %v; want a token", ok, err)
	}

	// A bucket with a token, in the future: the token is taken, and the
	// refill time reset as well.
	_ = f.SetSharedData("c", encode(1, future), 0)
	if ok, _, err := l.take(f, "c"); !ok || err != nil {
		t.Fatalf("take: %v, %v; want the bucket's token", ok, err)
	}
	if _, last := decode(f.data["c"]); last > time.Now().UnixNano() {
		t.Errorf("last refill %v, want now", time.Unix(0, last))
	}

	// Resetting races like taking: after another request's write, read again.
	_ = f.SetSharedData("d", encode(0, future), 0)
	raced := false
	f.onSet = func(f *fakeStore, key string) {
		if !raced {
			raced = true
			_ = f.SetSharedData(key, encode(0, future+1), 0)
		}
	}
	if ok, _, err := l.take(f, "d"); ok || err != nil || !raced {
		t.Errorf("take: %v, %v; want refused", ok, err)
	}
	if _, last := decode(f.data["d"]); last > time.Now().UnixNano() {
		t.Errorf("last refill %v after a race, want now", time.Unix(0, last))
	}
}

// SipHash-2-4's reference vectors (the SipHash paper's key 00 01 ... 0f,
// messages 00 01 ... of each length).
func TestSiphash(t *testing.T) {
	want := []uint64{
		0x726fdb47dd0e0e31, 0x74f839c593dc67fd, 0x0d6c8009d9a94f5a, 0x85676696d7fb7e2d,
		0xcf2794e0277187b7, 0x18765564cd99a68d, 0xcbc9466e58fee3ce, 0xab0200f58b01d137,
		0x93f5f5799a932462, 0x9e0082df0ba9e4b0, 0x7a5dbbc594ddb9f3, 0xf4b32f46226bada7,
		0x751e8fbc860ee5fb, 0x14ea5627c0843d90, 0xf723ca908e7af2ee, 0xa129ca6149be45e5,
	}
	var msg []byte
	for n, w := range want {
		if got := siphash(0x0706050403020100, 0x0f0e0d0c0b0a0908, string(msg)); got != w {
			t.Errorf("length %d: %#x, want %#x", n, got, w)
		}
		msg = append(msg, byte(n))
	}
}

// With FNV-1a, anyone could compute which bucket a client's key lands in:
// a client choosing its key header found one sharing the bucket of
// 192.0.2.10 in about 1,000 tries, and spent that IP's tokens. Keyed with
// the seed, the bucket of that header value is unrelated to the IP's, and
// so are the buckets of all keys under another seed.
func TestBucketsAreKeyedBySeed(t *testing.T) {
	l := setUpLimiter(t, "rate 1\nburst 1\nkey header x-api-key", newFakeStore())
	victim := "ip:192.0.2.10"
	aimed := ""
	for i := 0; aimed == ""; i++ {
		if k := "h:" + strconv.Itoa(i); fnv1a(k)%l.buckets == fnv1a(victim)%l.buckets {
			aimed = k
		}
	}
	if l.bucket(aimed) == l.bucket(victim) {
		t.Errorf("%s, aimed with FNV-1a, is in %s's bucket, %s", aimed, victim, l.bucket(victim))
	}

	other := *l
	other.k0 ^= 1
	same := 0
	for i := range 10000 {
		k := "h:" + strconv.Itoa(i)
		if l.bucket(k) == other.bucket(k) {
			same++
		}
	}
	if same > 30 { // 10,000/1024 ≈ 10 by chance
		t.Errorf("%d of 10000 keys in the same bucket under another seed; want about 10", same)
	}
}

// The seed is made once, from the randomness, and kept: a configuration
// that finds it uses it.
func TestLoadSeed(t *testing.T) {
	f := newFakeStore()
	first, err := loadSeed(f, "s", sdk.RandomBytes)
	if err != nil || first == [seedSize]byte{} || !bytes.Equal(f.data["s"], first[:]) {
		t.Fatalf("seed %x (stored %x), %v; want random bytes, stored", first, f.data["s"], err)
	}
	again, err := loadSeed(f, "s", func([]byte) error { return errors.New("not called") })
	if err != nil || again != first {
		t.Errorf("seed %x, %v; want the stored %x", again, err, first)
	}
	if other, err := loadSeed(newFakeStore(), "s", sdk.RandomBytes); err != nil || other == first {
		t.Errorf("another store's seed %x, %v; want other random bytes", other, err)
	}
}

// Two configurations both find no seed and both write one: the second to
// write must not overwrite the first's (a write to a new key ignores cas,
// so a plain write would), or they would hash clients apart. It takes the
// first's instead.
func TestLoadSeedRace(t *testing.T) {
	f := newFakeStore()
	theirs := bytes.Repeat([]byte{7}, seedSize)
	f.onSet = func(f *fakeStore, key string) {
		if _, ok := f.data[key]; !ok { // the other configuration's write lands first
			_ = f.SetSharedData(key, theirs, 0)
		}
	}
	ours, err := loadSeed(f, "s", sdk.RandomBytes)
	if err != nil || !bytes.Equal(ours[:], theirs) || !bytes.Equal(f.data["s"], theirs) {
		t.Errorf("seed %x (stored %x), %v; want the other configuration's %x in both", ours, f.data["s"], err, theirs)
	}
}

func TestLoadSeedRepairsAndFails(t *testing.T) {
	f := newFakeStore()
	_ = f.SetSharedData("s", []byte("junk"), 0)
	seed, err := loadSeed(f, "s", testRandom)
	if err != nil || !bytes.Equal(f.data["s"], seed[:]) || seed == [seedSize]byte{} {
		t.Errorf("seed %x (stored %x), %v; want a new seed stored", seed, f.data["s"], err)
	}
	if len(f.logs) != 1 || !strings.Contains(f.logs[0], "4 bytes, not a seed") {
		t.Errorf("logs %q, want one about the 4-byte value", f.logs)
	}

	f = newFakeStore()
	f.getErr = sdk.ErrInternal
	if _, err := loadSeed(f, "s", testRandom); err != sdk.ErrInternal {
		t.Errorf("with the store failing: %v, want its error", err)
	}
	if _, err := loadSeed(newFakeStore(), "s", func([]byte) error { return errors.New("no entropy") }); err == nil ||
		!strings.Contains(err.Error(), "no entropy") {
		t.Errorf("with no randomness: %v, want the error", err)
	}
	// A configuration that fails has the filter refused: configure says why.
	err = sdktest.ConfigError("rate 1\nburst 1", sdktest.Suite{Configure: configureWith(func([]byte) error { return errors.New("no entropy") })})
	if err == nil || !strings.Contains(err.Error(), "seed: no randomness: no entropy") {
		t.Errorf("configure: %v, want it refused for the seed", err)
	}
}

// Two filters of one vm_id with the same name (the .wasm file's, by
// default) and different settings never share buckets: the prefix has a
// digest of the settings. The same settings, however written, share them.
func TestPrefixHasTheSettingsDigest(t *testing.T) {
	base := "rate 10\nburst 5\nkey header x-api-key\nbuckets 64"
	prefix := func(config string) string {
		return setUpLimiter(t, config, newFakeStore()).prefix
	}
	p := prefix(base)
	if !strings.HasPrefix(p, "rate_limit/sdktest/") || len(p) != len("rate_limit/sdktest/01234567/") {
		t.Errorf("prefix %q, want rate_limit/sdktest/<8 hex digits>/", p)
	}
	for _, same := range []string{
		"# the same\nbuckets 64\nkey header X-API-Key\nburst +5\nrate 10.0",
		"rate 1e1\nburst 05\nkey header x-api-key\nbuckets 64",
	} {
		if got := prefix(same); got != p {
			t.Errorf("%q: prefix %q, want %q as for %q", same, got, p, base)
		}
	}
	for _, other := range []string{
		"rate 11\nburst 5\nkey header x-api-key\nbuckets 64",
		"rate 10\nburst 6\nkey header x-api-key\nbuckets 64",
		"rate 10\nburst 5\nkey header x-user\nbuckets 64",
		"rate 10\nburst 5\nkey ip\nbuckets 64",
		"rate 10\nburst 5\nkey header x-api-key\nbuckets 65",
		"rate 10\nburst 5\nkey header x-api-key",
	} {
		if got := prefix(other); got == p {
			t.Errorf("%q: prefix %q, the same as %q's", other, got, base)
		}
	}
}

// In Caddy: two rate_limit filters with no name (both named rate_limit, in
// vm_id rate_limit) and different bursts keep their own buckets; a third
// with the first's settings shares the first's buckets. Its memory_limit
// differs, so Sluice loads and configures it apart from the first (it pools
// filters identical in every option): it hashes the client to the same
// bucket only since it took the seed the first stored (but for a 1/1024
// chance with one of its own).
func TestUnnamedFiltersInCaddy(t *testing.T) {
	t.Parallel()
	wasm := sdktest.Build(t, ".")
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("upstream"))
	}))
	defer upstream.Close()
	site := sdktest.FreeAddr(t)
	_, port, _ := strings.Cut(site, ":")
	block := func(host string, burst int, memory string) string {
		return fmt.Sprintf(`http://%s.localhost:%s {
	wasm_filter %s {
		config "rate 0.001
burst %d"
		memory_limit %s
	}
	reverse_proxy %s
}
`, host, port, wasm, burst, memory, upstream.Listener.Addr())
	}
	log := sdktest.StartCaddy(t, "{\n\tadmin off\n\tauto_https off\n}\n"+
		block("x", 1, "16MiB")+block("y", 2, "16MiB")+block("z", 1, "17MiB"), site)
	client := &http.Client{Timeout: 30 * time.Second}
	for i, step := range []struct {
		host      string
		status    int
		remaining string
	}{
		{"x", 200, "0"}, {"x", 429, "0"}, // burst 1: spent
		{"y", 200, "1"}, // burst 2: buckets of its own
		{"z", 429, "0"}, // burst 1 again, loaded apart: x's buckets, x's seed
	} {
		req, _ := http.NewRequest("GET", "http://"+site+"/", nil)
		req.Host = step.host + ".localhost:" + port
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != step.status || resp.Header.Get("X-Ratelimit-Remaining") != step.remaining {
			t.Errorf("request %d to %s: %d, remaining %q; want %d, %s\ncaddy log:\n%s", i+1, step.host,
				resp.StatusCode, resp.Header.Get("X-Ratelimit-Remaining"), step.status, step.remaining, log.String())
		}
	}
}

// Shared data has no delete: each distinct configuration keeps buckets+2
// keys (the buckets, their marker, the seed), 1,026 by default, until Caddy
// restarts.
func TestKeyBudget(t *testing.T) {
	l, err := parse("rate 1\nburst 1")
	if err != nil || l.buckets != 1024 {
		t.Fatalf("buckets %v (%v), want 1024 by default", l.buckets, err)
	}
	f := newFakeStore()
	l = setUpLimiter(t, "rate 1\nburst 1", f)
	if len(f.data) != 1026 {
		t.Errorf("%d keys, want 1026", len(f.data))
	}
	for k := range f.data {
		if !strings.HasPrefix(k, l.prefix) {
			t.Errorf("key %q outside the prefix %q", k, l.prefix)
		}
	}
	// Configured again (a reload, or a request with snapshot off), the same
	// settings use the same keys and write none.
	f.sets = 0
	if again := setUpLimiter(t, "rate 1\nburst 1", f); again.prefix != l.prefix || f.sets != 0 || len(f.data) != 1026 {
		t.Errorf("configured again: prefix %q, %d writes, %d keys; want %q, none, 1026", again.prefix, f.sets, len(f.data), l.prefix)
	}
}

// The client an address counts for: an IPv4 address, an IPv6 address's
// /64 (a client may use any address of its /64).
func TestClientKey(t *testing.T) {
	for _, c := range []struct{ header, addr, want string }{
		{"", "192.0.2.10:40000", "ip:192.0.2.10"},
		{"", "192.0.2.10", "ip:192.0.2.10"},
		{"", "[2001:db8:1:2:3:4:5:6]:443", "ip:2001:0db8:0001:0002::/64"},
		{"", "[2001:db8:1:2:ffff::1]:80", "ip:2001:0db8:0001:0002::/64"},
		{"", "[2001:DB8:1:2::]:80", "ip:2001:0db8:0001:0002::/64"},
		{"", "2001:db8:1:2::99", "ip:2001:0db8:0001:0002::/64"},
		{"", "[2001:db8:1:3::1]:80", "ip:2001:0db8:0001:0003::/64"},
		{"", "[fe80::1%eth0]:80", "ip:fe80:0000:0000:0000::/64"},
		{"", "[::1]:80", "ip:0000:0000:0000:0000::/64"},
		{"", "[::ffff:192.0.2.10]:80", "ip:192.0.2.10"},
		{"", "[::ffff:c000:20a]:80", "ip:192.0.2.10"},
		{"", "@unix-socket", "ip:@unix-socket"},
		{"alice", "192.0.2.10:1", "h:alice"},
		{"", "", ""},
	} {
		if got := clientKey(c.header, c.addr); got != c.want {
			t.Errorf("clientKey(%q, %q) = %q, want %q", c.header, c.addr, got, c.want)
		}
	}
}

// parseIPv6 takes what net/netip takes as an IPv6 address (zone aside),
// to the same bytes, and refuses the rest.
func FuzzParseIPv6(f *testing.F) {
	for _, s := range []string{
		"::", "::1", "1::", "1::2", "2001:db8::1", "1:2:3:4:5:6:7:8", "1:2:3:4:5:6:7::", "::2:3:4:5:6:7:8",
		"1:2:3:4:5:6:7:8:9", "1:2:3:4:5:6::7:8", "1::2::3", ":::", ":1", "1:", "1:::2", "12345::", "0000::",
		"::ffff:1.2.3.4", "::1.2.3.4", "1:2:3:4:5:6:1.2.3.4", "1:2:3:4:5:6:7:1.2.3.4", "::1.2.3", "::1.2.3.4.5",
		"::01.2.3.4", "::256.2.3.4", "::1.2.3.4:5", "1.2.3.4", "", "fe80::1%eth0", "FE80::ABCD", "::g", "1:2:3:4:5:6:7:8::",
		"::\x11", "\x10::", ":", "::ffff:1.2.3.4%x",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ip, ok := parseIPv6(s)
		if strings.Contains(s, "%") {
			return // zones: netip keeps them, parseIPv6 drops them
		}
		a, err := netip.ParseAddr(s)
		want := err == nil && a.Is6()
		if ok != want || ok && ip != a.As16() {
			t.Errorf("parseIPv6(%q) = %x, %v; netip: %v, %v", s, ip, ok, a, err)
		}
	})
}

// Random addresses in netip's forms, and damaged ones, against netip.
func TestParseIPv6LikeNetip(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for range 20000 {
		var b [16]byte
		for i := range b {
			if r.IntN(3) > 0 { // zeros often, for "::"
				b[i] = byte(r.Uint32())
			}
		}
		a := netip.AddrFrom16(b)
		for _, s := range []string{a.String(), a.StringExpanded(), strings.ToUpper(a.String())} {
			if r.IntN(4) == 0 { // damage it
				i := r.IntN(len(s) + 1)
				s = s[:i] + string(":.0fg"[r.IntN(5)]) + s[i:]
			}
			ip, ok := parseIPv6(s)
			p, err := netip.ParseAddr(s)
			if want := err == nil && p.Is6(); ok != want || ok && ip != p.As16() {
				t.Fatalf("parseIPv6(%q) = %x, %v; netip: %v, %v", s, ip, ok, p, err)
			}
		}
	}
}

// burst +5 is 5: x-ratelimit-limit says 5, not the configuration's token.
var limitSuite = sdktest.Suite{
	Config:    "rate 0.001\nburst +2",
	Configure: testConfigure,
	Cases: []sdktest.Case{
		{Name: "allowed", Check: limitIs(200, "2")},
		{Name: "allowed 2", Check: limitIs(200, "2")},
		{Name: "refused", Check: limitIs(429, "2")},
	},
}

func limitIs(status int, limit string) func(*testing.T, *sdktest.Result) {
	return func(t *testing.T, r *sdktest.Result) {
		if r.Response.Status != status || r.Response.Header.Get("X-Ratelimit-Limit") != limit {
			t.Errorf("status %d, x-ratelimit-limit %q; want %d, %q",
				r.Response.Status, r.Response.Header.Get("X-Ratelimit-Limit"), status, limit)
		}
		if v, ok := r.Metrics["rate_limit_failed_open"]; !ok || v != 0 {
			t.Errorf("rate_limit_failed_open = %d (defined: %v), want defined, 0", v, ok)
		}
	}
}

func TestLimitHeaderIsTheBurst(t *testing.T) {
	sdktest.Run(t, limitSuite)
	for config, want := range map[string]string{"burst +5": "5", "burst 05": "5", "burst 1000": "1000"} {
		if l, err := parse("rate 1\n" + config); err != nil || l.limit != want {
			t.Errorf("%s: limit %q (%v), want %q", config, l.limit, err, want)
		}
	}
}

// fakeCounter counts what is added.
type fakeCounter struct{ n uint64 }

func (c *fakeCounter) Add(n uint64) error {
	c.n += n
	return nil
}

// A request the filter cannot limit goes through, logged and counted in
// rate_limit_failed_open: the host failing, a bucket staying contended, no
// client address.
func TestFailOpenIsCounted(t *testing.T) {
	newLimiter := func() (*limiter, *fakeCounter, *fakeCounter) {
		rejected, failedOpen := &fakeCounter{}, &fakeCounter{}
		return &limiter{rate: 1, burst: 1, buckets: 4, prefix: "p/", rejected: rejected, failedOpen: failedOpen},
			rejected, failedOpen
	}
	contended := newFakeStore()
	for b := range 4 {
		_ = contended.SetSharedData("p/"+strconv.Itoa(b), encode(1, time.Now().UnixNano()), 0)
	}
	contended.onSet = func(f *fakeStore, key string) { _ = f.SetSharedData(key, f.data[key], 0) }
	failing := newFakeStore()
	failing.getErr = sdk.ErrInternal
	for _, c := range []struct {
		name string
		f    *fakeStore
		key  string
		log  string
	}{
		{"the host fails", failing, "h:a", "internal"},
		{"contended", contended, "h:a", "still contended"},
		{"no client address", newFakeStore(), "", "no client address"},
	} {
		l, rejected, failedOpen := newLimiter()
		ok, tokens := l.admit(c.f, c.key)
		if !ok || tokens != -1 || failedOpen.n != 1 || rejected.n != 0 {
			t.Errorf("%s: admit %v, %v; failed open %d, rejected %d; want through, unlimited, 1 and 0",
				c.name, ok, tokens, failedOpen.n, rejected.n)
		}
		if n := len(c.f.logs); n == 0 || !strings.Contains(c.f.logs[n-1], c.log) || !strings.Contains(c.f.logs[n-1], "not limited") {
			t.Errorf("%s: logs %q, want the last about %q", c.name, c.f.logs, c.log)
		}
	}
	l, rejected, failedOpen := newLimiter()
	f := newFakeStore()
	if ok, _ := l.admit(f, "h:a"); !ok {
		t.Fatal("the first request was refused")
	}
	if ok, _ := l.admit(f, "h:a"); ok || rejected.n != 1 || failedOpen.n != 0 {
		t.Errorf("the second: admit %v, rejected %d, failed open %d; want refused, 1, 0", ok, rejected.n, failedOpen.n)
	}
}

// The example Caddyfile keys on the client IP: a client sending a new
// x-api-key with every request (it had a fresh bucket each time when the
// example keyed on that header with nothing checking it) is still limited
// after its burst of 20.
func TestExampleCaddyfile(t *testing.T) {
	t.Parallel()
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("upstream"))
	}))
	defer upstream.Close()
	site, log := sdktest.ServeCaddyfile(t, "Caddyfile",
		[2]string{"rate_limit.wasm", sdktest.Build(t, ".")},
		[2]string{"localhost:9000", upstream.Listener.Addr().String()})
	client := &http.Client{Timeout: 30 * time.Second}
	statuses := map[int]int{}
	for i := range 40 { // 20 at once, and at 10 a second, a few more during the test
		req, _ := http.NewRequest("GET", "http://"+site+"/", nil)
		req.Header.Set("X-Api-Key", "key-"+strconv.Itoa(i))
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		statuses[resp.StatusCode]++
	}
	if statuses[200] < 20 || statuses[429] == 0 || statuses[200]+statuses[429] != 40 {
		t.Errorf("statuses %v; want the burst of 20 through and the rest mostly 429\ncaddy log:\n%s", statuses, log.String())
	}
}
