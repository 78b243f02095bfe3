package main

import (
	"hash/fnv"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sluice-edge/sluice/sdk/sdktest"
)

// bucket is a client's bucket by the standard library's FNV-1a, a second
// implementation of the hash the filter uses.
func bucket(client string) int {
	h := fnv.New32a()
	_, _ = io.WriteString(h, client)
	return int(h.Sum32() % 100)
}

// userIn returns the first user id whose bucket is in [lo, hi).
func userIn(lo, hi int) string {
	for i := 0; ; i++ {
		id := "user-" + strconv.Itoa(i)
		if b := bucket(id); lo <= b && b < hi {
			return id
		}
	}
}

const percent = 30

var (
	canaryUser = userIn(0, percent)
	stableUser = userIn(percent, 100)
)

// wantRoute checks the route the filter chose: the property and the
// x-route header the upstream got.
func wantRoute(t *testing.T, r *sdktest.Result, want string) {
	t.Helper()
	if r.Upstream == nil {
		t.Fatalf("the request did not reach the upstream: %d %q", r.Response.Status, r.Response.Body)
	}
	if got := r.Properties["route"]; got != want {
		t.Errorf("route property %q, want %q", got, want)
	}
	if got := r.Upstream.Header.Values("X-Route"); len(got) != 1 || got[0] != want {
		t.Errorf("x-route %q, want just %q", got, want)
	}
}

// clientIP is the client's IP as the upstream knows it: Caddy's
// X-Forwarded-For, or natively the request's remote address.
func clientIP(r *http.Request) string {
	if ip := r.Header.Get("X-Forwarded-For"); ip != "" {
		return ip
	}
	ip, _, _ := net.SplitHostPort(r.RemoteAddr)
	return ip
}

func user(id string, more ...string) sdktest.Request {
	h := http.Header{}
	if id != "" {
		h.Set("X-User-Id", id)
	}
	for i := 0; i+1 < len(more); i += 2 {
		h.Add(more[i], more[i+1])
	}
	return sdktest.Request{Header: h}
}

func routeCase(name string, req sdktest.Request, want string) sdktest.Case {
	return sdktest.Case{Name: name, Request: req, Check: func(t *testing.T, r *sdktest.Result) { wantRoute(t, r, want) }}
}

var suite = sdktest.Suite{
	Config: `header x-canary 1   # testers opt in
cookie canary 1
percent ` + strconv.Itoa(percent) + `
sticky_header x-user-id`,
	Properties: []string{"route"},
	Cases: []sdktest.Case{
		routeCase("a user in a canary bucket goes canary", user(canaryUser), canary),
		routeCase("a user in a stable bucket stays stable", user(stableUser), stable),
		routeCase("every time", user(stableUser), stable),
		routeCase("and the canary user every time", user(canaryUser), canary),
		routeCase("the header overrides the percentage", user(stableUser, "X-Canary", "1"), canary),
		routeCase("only with its value", user(stableUser, "X-Canary", "0"), stable),
		routeCase("the cookie overrides the percentage", user(stableUser, "Cookie", "theme=dark; canary=1"), canary),
		routeCase("only with its name and value", user(stableUser, "Cookie", "xcanary=1; canary=0"), stable),
		routeCase("the client cannot choose x-route", user(stableUser, "X-Route", "canary"), stable),
		{
			Name: "without the sticky header, the client's IP decides",
			Check: func(t *testing.T, r *sdktest.Result) {
				want := stable
				if bucket(clientIP(r.Upstream)) < percent {
					want = canary
				}
				wantRoute(t, r, want)
			},
		},
	},
}

// edge is a suite whose percentage is exactly the bucket of the client
// (its sticky id, or ip without one): that client is stable, and one more
// percent makes it canary.
func edge(id, ip string) []sdktest.Suite {
	client, sticky := id, "\nsticky_header x-user-id"
	if id == "" {
		client, sticky = ip, ""
	}
	b := bucket(client)
	var suites []sdktest.Suite
	for _, tc := range []struct {
		percent int
		want    string
	}{{b, stable}, {b + 1, canary}} {
		suites = append(suites, sdktest.Suite{
			Config:     "percent " + strconv.Itoa(tc.percent) + sticky,
			Properties: []string{"route"},
			Cases:      []sdktest.Case{routeCase("percent "+strconv.Itoa(tc.percent)+" for bucket "+strconv.Itoa(b), user(id), tc.want)},
		})
	}
	return suites
}

// The filter's logic, natively: no Wasm.
func TestCanary(t *testing.T) {
	t.Parallel()
	sdktest.Run(t, suite)
}

// The buckets are FNV-1a of the sticky id or the client IP (natively
// 192.0.2.10), compared with the percentage.
func TestBucketEdges(t *testing.T) {
	t.Parallel()
	for _, s := range append(edge("edge-user", ""), edge("", "192.0.2.10")...) {
		sdktest.Run(t, s)
	}
}

// The same cases against the built module in a real Caddy, where the
// client is 127.0.0.1.
func TestCanaryInCaddy(t *testing.T) {
	t.Parallel()
	wasm := sdktest.Build(t, ".")
	t.Run("suite", func(t *testing.T) {
		t.Parallel()
		sdktest.RunCaddy(t, wasm, suite)
	})
	for i, s := range edge("", "127.0.0.1") {
		t.Run("edge"+strconv.Itoa(i), func(t *testing.T) {
			t.Parallel()
			sdktest.RunCaddy(t, wasm, s)
		})
	}
}

func TestBadConfigurationIsRefused(t *testing.T) {
	t.Parallel()
	for config, want := range map[string]string{
		"header x-canary":                  "line 1",
		"cookie canary 1 2":                "line 1",
		"percent 101":                      "line 1",
		"percent -1":                       "line 1",
		"percent ten":                      "line 1",
		"percent":                          "line 1",
		"sticky_header":                    "line 1",
		"percent 10\npercent 20":           "line 2",
		"sticky_header a\nsticky_header b": "line 2",
		"# ok\nweight 10":                  "line 2",
	} {
		err := sdktest.ConfigError(config, suite)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want an error with %q", config, err, want)
		}
	}
	for _, config := range []string{suite.Config, "", "percent 100", "percent 5%"} {
		if err := sdktest.ConfigError(config, suite); err != nil {
			t.Errorf("%q: %v", config, err)
		}
	}
}

// TestRoutingInCaddy serves the example's Caddyfile (at percent 30) in
// front of two backends that say which they are, and sends requests for
// many users.
func TestRoutingInCaddy(t *testing.T) {
	t.Parallel()
	backend := func(name string) *httptest.Server {
		return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("X-Got-Route", r.Header.Get("X-Route"))
			_, _ = io.WriteString(w, name)
		}))
	}
	canaryBackend, stableBackend := backend(canary), backend(stable)
	defer canaryBackend.Close()
	defer stableBackend.Close()

	site, log := sdktest.ServeCaddyfile(t, "Caddyfile",
		[2]string{" canary.wasm", " " + sdktest.Build(t, ".")},
		[2]string{"localhost:9001", canaryBackend.Listener.Addr().String()},
		[2]string{"localhost:9000", stableBackend.Listener.Addr().String()},
		[2]string{"percent 10", "percent " + strconv.Itoa(percent)})
	client := &http.Client{Timeout: 20 * time.Second}

	// get sends a request with the header pairs and returns the backend
	// that answered.
	get := func(header ...string) string {
		t.Helper()
		req, err := http.NewRequest(http.MethodGet, "http://"+site+"/", nil)
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i+1 < len(header); i += 2 {
			req.Header.Set(header[i], header[i+1])
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("%d %q %v\n%s", resp.StatusCode, body, err, log.String())
		}
		if got := resp.Header.Get("X-Got-Route"); got != string(body) {
			t.Errorf("the %s backend got x-route %q", body, got)
		}
		return string(body)
	}

	const users = 200
	canaries := 0
	for i := range users {
		id := "id-" + strconv.Itoa(i)
		want := stable
		if bucket(id) < percent {
			want = canary
		}
		first := get("X-User-Id", id)
		if first == canary {
			canaries++
		}
		if first != want {
			t.Errorf("%s (bucket %d) went to %s", id, bucket(id), first)
		}
		for range 2 {
			if again := get("X-User-Id", id); again != first {
				t.Errorf("%s went to %s, then to %s", id, first, again)
			}
		}
	}
	// Each user's route is checked exactly above; this checks the test's
	// own data, that its users spread over both routes as the percentage
	// says, so the test exercises both.
	if share := canaries * 100 / users; share < percent/2 || share > percent*3/2 {
		t.Errorf("%d of %d users (%d%%) went canary at percent %d", canaries, users, share, percent)
	}
	t.Logf("%d of %d users went canary at percent %d", canaries, users, percent)

	if got := get("X-User-Id", stableUser, "X-Canary", "1"); got != canary {
		t.Errorf("x-canary: 1 went to %s", got)
	}
	if got := get("X-User-Id", stableUser, "Cookie", "canary=1"); got != canary {
		t.Errorf("the canary cookie went to %s", got)
	}
	if got := get("X-User-Id", stableUser); got != stable {
		t.Errorf("%s went to %s", stableUser, got)
	}
}
