package tests

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluice-edge/sluice/tests/guestbuild"
)

// A filter written for Envoy with the official Go SDK changes headers in
// both directions behind wasm_filter, unmodified.
func TestOfficialSDKFilterRewritesHeadersBothWays(t *testing.T) {
	mustLoad(t, fmt.Sprintf("wasm_filter %s\n%s", guestbuild.Go(t, "headers"), proxyTo()))

	resp, body := do(t, "GET", "/anything?q=1", nil, http.Header{
		"X-Removed": {"gone"}, "X-Replaced": {"old"},
	})
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	seen := decodeEcho(t, body)
	if got := seen.Header.Get("X-Added"); got != "req" {
		t.Errorf("upstream saw x-added %q, want req", got)
	}
	if got := seen.Header.Get("X-Replaced"); got != "new" {
		t.Errorf("upstream saw x-replaced %q, want new", got)
	}
	if _, ok := seen.Header["X-Removed"]; ok {
		t.Errorf("upstream saw x-removed, which the filter removed")
	}
	if seen.URI != "/anything?q=1" {
		t.Errorf("upstream saw URI %q", seen.URI)
	}
	if got := resp.Header.Get("X-Added"); got != "resp" {
		t.Errorf("client saw x-added %q, want resp", got)
	}
	if got := resp.Header.Get("X-Upstream-Secret"); got != "" {
		t.Errorf("client saw x-upstream-secret %q, which the filter removed", got)
	}
}

// Every request runs in an instance nothing else touched: the filter's global
// request counter reads 1 every time, sequentially and concurrently, whether
// isolates are recycled (the default: an earlier request's module, reset to
// the snapshot) or not; the metrics say which they were.
func TestEveryRequestGetsAFreshInstance(t *testing.T) {
	for _, recycle := range []string{"on", "off"} {
		t.Run("recycle "+recycle, func(t *testing.T) {
			name := "fresh-recycle-" + recycle
			mustLoad(t, fmt.Sprintf("wasm_filter %s {\n name %s\n recycle %s\n}\n%s",
				guestbuild.Go(t, "headers"), name, recycle, proxyTo()))
			requestsCountOne(t)
			recycled := scrape(t, "caddy_wasm_filter_isolate_creation_seconds_count", "filter", name, "origin", "recycle")
			t.Logf("%v of 50 requests served by recycled isolates", recycled)
			switch {
			case os.Getenv("SLUICE_SNAPSHOT") == "off" || os.Getenv("SLUICE_RECYCLE") == "off" || recycle == "off":
				if recycled != 0 {
					t.Errorf("%v requests served by recycled isolates, want none", recycled)
				}
			case recycled < 10: // the sequential ones at least
				t.Errorf("%v requests served by recycled isolates, want 10 or more of 50", recycled)
			}
		})
	}
}

// requestsCountOne sends 10 requests one after another, then 40 at once,
// and checks that the headers guest's request counter reads 1 in each.
func requestsCountOne(t *testing.T) {
	t.Helper()
	for i := range 10 {
		resp, _ := do(t, "GET", "/", nil, nil)
		if got := resp.Header.Get("X-Count"); got != "1" {
			t.Fatalf("request %d: the guest's counter read %q, want 1", i, got)
		}
	}
	var wg sync.WaitGroup
	counts := make(chan string, 40)
	for range 40 {
		wg.Go(func() {
			resp, err := httpClient.Get(siteURL("/"))
			if err != nil {
				counts <- err.Error()
				return
			}
			resp.Body.Close()
			counts <- resp.Header.Get("X-Count")
		})
	}
	wg.Wait()
	close(counts)
	for c := range counts {
		if c != "1" {
			t.Fatalf("a concurrent request's counter read %q, want 1", c)
		}
	}
}

// Filters built with other toolchains run too: hand-written WebAssembly text
// and C compiled with clang and wasi-libc.
func TestWATAndCFilters(t *testing.T) {
	mustLoad(t, fmt.Sprintf("wasm_filter %s\nwasm_filter %s\n%s",
		guestbuild.WAT(t, "add_header"), guestbuild.C(t, "add_header"), proxyTo()))

	resp, _ := do(t, "GET", "/", nil, http.Header{"X-From-Client": {"copied"}})
	if got := resp.Header.Get("X-Wat"); got != "hello" {
		t.Errorf("x-wat = %q, want hello", got)
	}
	if got := resp.Header.Get("X-C-Filter"); got != "copied" {
		t.Errorf("x-c-filter = %q, want the request's x-from-client", got)
	}
}

// Several wasm_filter directives in one route form a chain: requests pass
// them in order, responses in reverse, as in Envoy.
func TestFiltersChainInOrder(t *testing.T) {
	tag := guestbuild.Go(t, "tag")
	mustLoad(t, fmt.Sprintf(`
	wasm_filter %[1]s {
		name first
		config first
	}
	wasm_filter %[1]s {
		name second
		config second
	}
	%[2]s`, tag, proxyTo()))

	resp, body := do(t, "GET", "/", nil, nil)
	if got := decodeEcho(t, body).Header.Values("X-Chain"); strings.Join(got, ",") != "first,second" {
		t.Errorf("upstream saw x-chain %q, want first,second", got)
	}
	if got := resp.Header.Values("X-Chain"); strings.Join(got, ",") != "second,first" {
		t.Errorf("client saw x-chain %q, want second,first", got)
	}
}

// A filter that buffers bodies rewrites them in both directions; the next
// handler and the client get consistent framing.
func TestBodyRewriteWithBuffering(t *testing.T) {
	mustLoad(t, fmt.Sprintf("wasm_filter %s\n%s", guestbuild.Go(t, "body"), proxyTo()))

	resp, body := do(t, "POST", "/echo", strings.NewReader("hello upstream"), nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	if strings.Contains(body, "upstream") {
		t.Errorf("response body still says upstream: %s", body)
	}
	seen := decodeEcho(t, strings.ReplaceAll(body, "filtered", "upstream"))
	if seen.Body != "HELLO UPSTREAM" {
		t.Errorf("upstream got body %q, want it upper-cased", seen.Body)
	}

	// A streamed response of many chunks is held to its end, rewritten, and
	// sent with the length of the new body.
	resp, body = do(t, "GET", "/stream?chunks=50&delay=0s", nil, nil)
	if strings.Count(body, "filtered chunk") != 50 || strings.Contains(body, "upstream") {
		t.Errorf("streamed body not rewritten whole: %.200q", body)
	}
	if resp.ContentLength != -1 || len(resp.TransferEncoding) == 0 {
		// The filter removed content-length and let the headers go before
		// the body: the rewritten body must go out chunked.
		t.Errorf("Content-Length %d, Transfer-Encoding %q: want chunked", resp.ContentLength, resp.TransferEncoding)
	}
}

// A filter answers the request itself (403) from the request phase; the
// upstream never sees the request.
func TestLocalResponseFromRequestPhase(t *testing.T) {
	mustLoad(t, fmt.Sprintf("wasm_filter %s {\n config s3cret\n}\n%s", guestbuild.Go(t, "auth"), proxyTo()))

	before := upstream.hits.Load()
	resp, body := do(t, "GET", "/private", nil, nil)
	if resp.StatusCode != http.StatusForbidden || body != "forbidden\n" || resp.Header.Get("X-Auth") != "denied" {
		t.Errorf("got %d %q x-auth=%q, want 403 forbidden denied", resp.StatusCode, body, resp.Header.Get("X-Auth"))
	}
	if upstream.hits.Load() != before {
		t.Errorf("the upstream was called for a request the filter answered")
	}

	resp, body = do(t, "GET", "/private", nil, http.Header{"X-Api-Key": {"s3cret"}})
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("with the key: status %d: %s", resp.StatusCode, body)
	}
	if key := decodeEcho(t, body).Header.Get("X-Api-Key"); key != "" {
		t.Errorf("upstream saw the API key %q", key)
	}
}

// A filter stuck in a loop is stopped at its timeout; the failure policy
// decides, and other requests keep flowing meanwhile.
func TestLoopingFilterIsStoppedAtItsTimeout(t *testing.T) {
	loop := guestbuild.Go(t, "loop")
	mustLoad(t, fmt.Sprintf(`
	handle /closed/* {
		wasm_filter %[1]s {
			config request_headers
			timeout 100ms
		}
		%[2]s
	}
	handle /open/* {
		wasm_filter %[1]s {
			config request_headers
			timeout 100ms
			failure_policy fail_open
		}
		%[2]s
	}
	handle {
		wasm_filter %[3]s
		%[2]s
	}`, loop, proxyTo(), guestbuild.WAT(t, "add_header")))

	mark := caddyLog.mark()
	start := time.Now()
	resp, _ := do(t, "GET", "/closed/x", nil, nil)
	if resp.StatusCode != http.StatusInternalServerError {
		t.Errorf("fail_closed: status %d, want 500", resp.StatusCode)
	}
	if elapsed := time.Since(start); elapsed > 3*time.Second {
		t.Errorf("the looping filter held the request %v", elapsed)
	}
	waitForLog(t, mark, "filter failed", `"reason":"timeout"`, "fail_closed")

	// fail_open serves the request as the client sent it: not even the
	// header the filter added before it looped reaches the upstream.
	resp, body := do(t, "GET", "/open/x", nil, nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("fail_open: status %d: %s", resp.StatusCode, body)
	}
	if got := decodeEcho(t, body).Header.Get("X-Loop-Was-Here"); got != "" {
		t.Errorf("fail_open forwarded the failed filter's header change")
	}

	// While looping requests burn their budgets, the other route answers
	// quickly.
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			if r, err := httpClient.Get(siteURL("/closed/x")); err == nil {
				r.Body.Close()
			}
		})
	}
	time.Sleep(20 * time.Millisecond)
	for range 20 {
		start := time.Now()
		resp, _ := do(t, "GET", "/fine", nil, nil)
		if resp.StatusCode != http.StatusOK || resp.Header.Get("X-Wat") != "hello" {
			t.Fatalf("healthy route: status %d, x-wat %q", resp.StatusCode, resp.Header.Get("X-Wat"))
		}
		if elapsed := time.Since(start); elapsed > 2*time.Second {
			t.Errorf("healthy request took %v next to looping ones", elapsed)
		}
	}
	wg.Wait()
}

// A loop in proxy_on_log comes after the response: the client gets the
// whole response, and the instance is still stopped and freed.
func TestLoopInLogDoesNotHoldTheResponse(t *testing.T) {
	mustLoad(t, fmt.Sprintf("wasm_filter %s {\n config log\n timeout 100ms\n}\n%s", guestbuild.Go(t, "loop"), proxyTo()))
	mark := caddyLog.mark()
	resp, body := do(t, "GET", "/", nil, nil)
	if resp.StatusCode != http.StatusOK || decodeEcho(t, body).URI != "/" {
		t.Errorf("status %d body %q", resp.StatusCode, body)
	}
	waitForLog(t, mark, "filter failed", `"reason":"timeout"`, "proxy_on_log")
}

// A trap before the response starts is settled by the failure policy: 500,
// or the upstream's response untouched.
func TestTrapInResponseHeadersFollowsThePolicy(t *testing.T) {
	trap := guestbuild.Go(t, "trap")
	mustLoad(t, fmt.Sprintf(`
	handle /closed {
		wasm_filter %[1]s {
			config response_headers
		}
		%[2]s
	}
	handle /open {
		wasm_filter %[1]s {
			config response_headers
			failure_policy fail_open
		}
		%[2]s
	}`, trap, proxyTo()))

	mark := caddyLog.mark()
	resp, _ := do(t, "GET", "/closed", nil, nil)
	if resp.StatusCode != http.StatusInternalServerError {
		t.Errorf("fail_closed: status %d, want 500", resp.StatusCode)
	}
	waitForLog(t, mark, "filter failed", `"reason":"trap"`, "proxy_on_response_headers")

	resp, body := do(t, "GET", "/open", nil, nil)
	if resp.StatusCode != http.StatusOK || resp.Header.Get("X-Upstream-Secret") != "s3cret" {
		t.Errorf("fail_open: status %d, x-upstream-secret %q: want the upstream's response", resp.StatusCode,
			resp.Header.Get("X-Upstream-Secret"))
	}
	if decodeEcho(t, body).URI != "/open" {
		t.Errorf("fail_open body: %s", body)
	}
}

// A trap after the response headers went out aborts the response, so the
// client cannot mistake a truncated body for a complete one.
func TestTrapAfterHeadersAbortsTheResponse(t *testing.T) {
	mustLoad(t, fmt.Sprintf("wasm_filter %s {\n config response_body\n}\n%s", guestbuild.Go(t, "trap"), proxyTo()))

	for _, path := range []string{"/stream?chunks=3&delay=10ms", "/big?size=100000"} {
		resp, err := httpClient.Get(siteURL(path))
		if err != nil {
			// Aborted before the headers left: also not a complete
			// response, if the connection was cut rather than refused.
			if !aborted(err) {
				t.Errorf("%s: %v, want the response aborted", path, err)
			}
			continue
		}
		_, err = io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || err == nil {
			t.Errorf("%s: status %d, read error %v: the client read a complete response from a filter that trapped mid-body", path, resp.StatusCode, err)
		} else if !aborted(err) {
			t.Errorf("%s: ended with %v, want an abort", path, err)
		}
	}
}

// aborted reports whether err is a connection cut mid-response.
func aborted(err error) bool {
	return errors.Is(err, io.ErrUnexpectedEOF) || strings.Contains(err.Error(), "EOF") ||
		strings.Contains(err.Error(), "connection reset")
}

// Out-of-bounds and wrapping pointers and bad enum values in host calls get
// INVALID_MEMORY_ACCESS (6) and BAD_ARGUMENT (2), never a crash.
func TestOutOfBoundsPointersAreRefused(t *testing.T) {
	mustLoad(t, fmt.Sprintf("wasm_filter %s\n%s", guestbuild.WAT(t, "oob"), proxyTo()))
	resp, body := do(t, "GET", "/", nil, nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	if got := resp.Header.Get("X-Oob-Statuses"); got != "666666226" {
		t.Errorf("statuses %q, want 666666226 (6 = INVALID_MEMORY_ACCESS, 2 = BAD_ARGUMENT)", got)
	}
}

// A filter that grows its memory without end stops at memory_limit and its
// out-of-bounds write traps; the request fails closed and Caddy lives on.
func TestMemoryHogStopsAtTheLimit(t *testing.T) {
	mustLoad(t, fmt.Sprintf("wasm_filter %s {\n memory_limit 2MiB\n}\n%s", guestbuild.WAT(t, "memory_hog"), proxyTo()))
	mark := caddyLog.mark()
	resp, _ := do(t, "GET", "/", nil, nil)
	if resp.StatusCode != http.StatusInternalServerError {
		t.Errorf("status %d, want 500", resp.StatusCode)
	}
	waitForLog(t, mark, "filter failed", `"reason":"memory_limit"`)
}

// A request body larger than the filter may buffer is refused with 413.
func TestRequestBodyOverTheCapGets413(t *testing.T) {
	mustLoad(t, fmt.Sprintf("wasm_filter %s {\n max_body_size 1KiB\n}\n%s", guestbuild.Go(t, "body"), proxyTo()))
	// The filter lets the headers go at once (as Envoy would forward them),
	// then holds the body: the upstream request is cut when the body
	// passes the cap, and the client gets 413, not the upstream's error.
	resp, body := do(t, "POST", "/", strings.NewReader(strings.Repeat("a", 4096)), nil)
	if resp.StatusCode != http.StatusRequestEntityTooLarge || resp.Header.Get("X-Upstream-Secret") != "" {
		t.Errorf("status %d, x-upstream-secret %q: want a bare 413", resp.StatusCode, resp.Header.Get("X-Upstream-Secret"))
	}
	resp, body = do(t, "POST", "/", strings.NewReader("small"), nil)
	if resp.StatusCode != http.StatusOK || decodeEcho(t, strings.ReplaceAll(body, "filtered", "upstream")).Body != "SMALL" {
		t.Errorf("small body: %d %s", resp.StatusCode, body)
	}
}

// A large streamed response goes through a filter that inspects every chunk
// without holding it back.
func TestLargeResponseStreamsThroughABodyFilter(t *testing.T) {
	mustLoad(t, fmt.Sprintf("wasm_filter %s {\n config stream\n}\n%s", guestbuild.Go(t, "tag"), proxyTo()))
	const size = 32 << 20
	resp, body := do(t, "GET", fmt.Sprintf("/big?size=%d", size), nil, nil)
	if resp.StatusCode != http.StatusOK || len(body) != size {
		t.Errorf("status %d, %d bytes, want %d", resp.StatusCode, len(body), size)
	}
}

// Filters work in front of Caddy's own responders, not just reverse_proxy.
func TestFilterInFrontOfRespondAndFileServer(t *testing.T) {
	root := t.TempDir()
	if err := os.WriteFile(filepath.Join(root, "index.html"), []byte("<p>static</p>"), 0o644); err != nil {
		t.Fatal(err)
	}
	headers := guestbuild.Go(t, "headers")
	mustLoad(t, fmt.Sprintf(`
	handle /static/* {
		wasm_filter %[1]s
		root * %[2]s
		uri strip_prefix /static
		file_server
	}
	handle {
		wasm_filter %[1]s
		respond "from respond" 202
	}`, headers, root))

	resp, body := do(t, "GET", "/static/index.html", nil, nil)
	if resp.StatusCode != http.StatusOK || body != "<p>static</p>" || resp.Header.Get("X-Added") != "resp" {
		t.Errorf("file_server: %d %q x-added=%q", resp.StatusCode, body, resp.Header.Get("X-Added"))
	}
	resp, body = do(t, "GET", "/other", nil, nil)
	if resp.StatusCode != http.StatusAccepted || body != "from respond" || resp.Header.Get("X-Count") != "1" {
		t.Errorf("respond: %d %q x-count=%q", resp.StatusCode, body, resp.Header.Get("X-Count"))
	}
	resp, body = do(t, "HEAD", "/other", nil, nil)
	if resp.StatusCode != http.StatusAccepted || body != "" || resp.Header.Get("X-Added") != "resp" {
		t.Errorf("HEAD: %d %q x-added=%q", resp.StatusCode, body, resp.Header.Get("X-Added"))
	}
}

// Properties a filter reads use Envoy's names and encodings.
func TestPropertiesUseEnvoyNames(t *testing.T) {
	mustLoad(t, fmt.Sprintf("wasm_filter %s {\n name props\n root_id my_root\n vm_id tenant-props\n}\n%s",
		guestbuild.Go(t, "properties"), proxyTo()))
	resp, _ := do(t, "GET", "/p/a?x=1", nil, nil)
	want := map[string]string{
		"X-Prop-Request-Path":     "/p/a?x=1",
		"X-Prop-Request-Url_path": "/p/a",
		"X-Prop-Request-Method":   "GET",
		"X-Prop-Request-Host":     siteAddr,
		"X-Prop-Request-Scheme":   "http",
		"X-Prop-Request-Protocol": "HTTP/1.1",
		"X-Prop-Plugin_name":      "props",
		"X-Prop-Plugin_root_id":   "my_root",
		"X-Prop-Destination-Port": siteAddr[strings.LastIndex(siteAddr, ":")+1:],
		"X-Prop-Response-Code":    "200",
		"X-Prop-Plugin_vm_id":     "tenant-props",
		"X-Prop-Upstream-Address": upstream.Addr(),
		"X-Prop-Missing":          "error status returned by host: not found",
	}
	for name, value := range want {
		if got := resp.Header.Get(name); got != value {
			t.Errorf("%s = %q, want %q", name, got, value)
		}
	}
	if got := resp.Header.Get("X-Prop-Source-Address"); !strings.HasPrefix(got, "127.0.0.1:") {
		t.Errorf("source.address = %q", got)
	}
	if got := resp.Header.Get("X-Prop-Request-Id"); len(got) != 36 {
		t.Errorf("request.id = %q, want a UUID", got)
	}
	if host, _ := os.Hostname(); resp.Header.Get("X-Prop-Node-Id") != host {
		t.Errorf("node.id = %q, want the host name %q", resp.Header.Get("X-Prop-Node-Id"), host)
	}
}

// A bad filter fails the config load with an error naming the file and the
// problem, and the running config stays in place.
func TestBadFilterFailsTheLoadAndKeepsTheOldConfig(t *testing.T) {
	mustLoad(t, fmt.Sprintf("wasm_filter %s\n%s", guestbuild.WAT(t, "add_header"), proxyTo()))

	notWasm := filepath.Join(t.TempDir(), "notes.wasm")
	if err := os.WriteFile(notWasm, []byte("this is text"), 0o644); err != nil {
		t.Fatal(err)
	}
	auth := guestbuild.Go(t, "auth")
	for _, tc := range []struct{ name, path, block, want string }{
		{"missing file", "/no/such/filter.wasm", "", "no such file"},
		{"not wasm", notWasm, "", "not a WebAssembly module"},
		{"no ABI version", guestbuild.WAT(t, "no_abi_version"), "", "no Proxy-Wasm ABI version"},
		{"unknown import", guestbuild.WAT(t, "unknown_import"), "", "env.proxy_launch_missiles"},
		{"configuration rejected", auth, "", "the plugin configuration must be the API key"},
		{"looping configure", guestbuild.WAT(t, "configure_loop"), "timeout 200ms", "proxy_on_configure: time budget exceeded"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := loadCaddyfile(t, fmt.Sprintf("wasm_filter %s {\n %s\n}\n%s", tc.path, tc.block, proxyTo()))
			if err == nil {
				t.Fatal("config loaded")
			}
			if !strings.Contains(err.Error(), tc.path) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error does not name the file and %q:\n%v", tc.want, err)
			}
			if resp, _ := do(t, "GET", "/", nil, nil); resp.Header.Get("X-Wat") != "hello" {
				t.Errorf("the previous config stopped serving after a refused load")
			}
		})
	}
}

// One tenant's broken filter in a multi-tenant config rejects the whole
// config; the old one keeps serving every tenant (the documented choice).
func TestOneBrokenTenantRejectsTheWholeConfig(t *testing.T) {
	good := guestbuild.WAT(t, "add_header")
	mustLoad(t, fmt.Sprintf(`
	handle /a/* {
		wasm_filter %[1]s
		%[2]s
	}
	handle /b/* {
		wasm_filter %[1]s
		%[2]s
	}`, good, proxyTo()))
	err := loadCaddyfile(t, fmt.Sprintf(`
	handle /a/* {
		wasm_filter %[1]s
		%[2]s
	}
	handle /b/* {
		wasm_filter %[3]s
		%[2]s
	}`, good, proxyTo(), guestbuild.WAT(t, "unknown_import")))
	if err == nil {
		t.Fatal("a config with a broken tenant filter loaded")
	}
	for _, path := range []string{"/a/x", "/b/x"} {
		if resp, _ := do(t, "GET", path, nil, nil); resp.Header.Get("X-Wat") != "hello" {
			t.Errorf("%s: the old config no longer serves", path)
		}
	}
}

// The suite runs with instances restored from snapshots into recycled
// isolates (the default), with SLUICE_RECYCLE=off into new ones, or, with
// SLUICE_SNAPSHOT=off, started fresh for every request: the log says which,
// and this checks it is the one asked for.
func TestFiltersStartTheWayTheSuiteAsked(t *testing.T) {
	mark := caddyLog.mark()
	mustLoad(t, fmt.Sprintf("wasm_filter %s {\n name mode-probe\n}\n%s", guestbuild.Go(t, "headers"), proxyTo()))
	want := `"start":"snapshot"`
	switch {
	case os.Getenv("SLUICE_SNAPSHOT") == "off":
		want = `"start":"fresh: snapshots disabled"`
	case os.Getenv("SLUICE_RECYCLE") == "off":
		want = `"start":"snapshot, not recycled: recycling disabled"`
	}
	waitForLog(t, mark, "filter loaded", `"filter":"mode-probe"`, want)
}

// Every request gets fresh randomness from the host (crypto/rand reads
// random_get). A snapshot freezes what the Go runtime seeded at start-up,
// so math/rand's global source repeats in every restored instance; started
// fresh, it differs. RATIONALE.md explains the choice.
func TestRandomnessPerRequest(t *testing.T) {
	mustLoad(t, fmt.Sprintf("wasm_filter %s\n%s", guestbuild.Go(t, "random"), proxyTo()))
	first, _ := do(t, "GET", "/", nil, nil)
	second, _ := do(t, "GET", "/", nil, nil)
	if a, b := first.Header.Get("X-Crypto-Rand"), second.Header.Get("X-Crypto-Rand"); a == "" || a == b {
		t.Errorf("crypto/rand gave %q then %q: want fresh bytes per request", a, b)
	}
	sameMath := first.Header.Get("X-Math-Rand") == second.Header.Get("X-Math-Rand")
	if snapshot := os.Getenv("SLUICE_SNAPSHOT") != "off"; sameMath != snapshot {
		t.Errorf("math/rand gave %q then %q (snapshots: %v)", first.Header.Get("X-Math-Rand"),
			second.Header.Get("X-Math-Rand"), snapshot)
	}
}

// A module file changed in place is recompiled on the next load, not
// served from the compilation cache: entries are keyed by the module's
// bytes.
func TestChangedModuleFileIsRecompiled(t *testing.T) {
	path := filepath.Join(t.TempDir(), "filter.wasm")
	copyFile(t, guestbuild.WAT(t, "add_header"), path)
	mustLoad(t, fmt.Sprintf("wasm_filter %s\n%s", path, proxyTo()))
	if resp, _ := do(t, "GET", "/", nil, nil); resp.Header.Get("X-Wat") != "hello" {
		t.Fatalf("first module: x-wat %q", resp.Header.Get("X-Wat"))
	}
	copyFile(t, guestbuild.C(t, "add_header"), path)
	mustLoad(t, fmt.Sprintf("wasm_filter %s\n%s", path, proxyTo()))
	resp, _ := do(t, "GET", "/", nil, nil)
	if resp.Header.Get("X-Wat") != "" || resp.Header.Get("X-C-Filter") != "hello" {
		t.Errorf("after the file changed: x-wat %q, x-c-filter %q; want the new module's header",
			resp.Header.Get("X-Wat"), resp.Header.Get("X-C-Filter"))
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// Compiled filters are cached on disk in Caddy's data directory, so that a
// restart or a reload compiles no module twice: a module loaded for the
// first time adds an entry there.
func TestCompiledCodeIsCachedOnDisk(t *testing.T) {
	dir := filepath.Join(dataDir, "caddy", "wasm_filter", "compilation-cache")
	before := filesUnder(t, dir)
	value := uniqueID(t) // a module no test compiled before
	path := filepath.Join(t.TempDir(), "unique.wasm")
	module := guestbuild.WATText(t, fmt.Sprintf(`(module
  (import "env" "proxy_add_header_map_value" (func $add (param i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "x-probe")
  (data (i32.const 32) %q)
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_memory_allocate") (param i32) (result i32) (i32.const 1024))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32)
    (drop (call $add (i32.const 2) (i32.const 16) (i32.const 7) (i32.const 32) (i32.const %d)))
    (i32.const 0)))`, value, len(value)))
	if err := os.WriteFile(path, module, 0o644); err != nil {
		t.Fatal(err)
	}
	mustLoad(t, fmt.Sprintf("wasm_filter %s\n%s", path, proxyTo()))
	if resp, _ := do(t, "GET", "/", nil, nil); resp.Header.Get("X-Probe") != value {
		t.Fatalf("x-probe %q, want %q", resp.Header.Get("X-Probe"), value)
	}
	if after := filesUnder(t, dir); after <= before {
		t.Errorf("%s holds %d files after a new module loaded, %d before", dir, after, before)
	}
}

// filesUnder counts the regular files in the tree at dir, none if there
// is no dir.
func filesUnder(t *testing.T, dir string) int {
	t.Helper()
	n := 0
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			n++
		}
		return err
	})
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("reading the compilation cache: %v", err)
	}
	return n
}

// An upgraded connection (101, as WebSocket uses) goes through a filter:
// the filter sees the 101's headers and may add to them, then the bytes
// flow both ways untouched.
func TestUpgradedConnectionPassesThrough(t *testing.T) {
	mustLoad(t, fmt.Sprintf("wasm_filter %s\n%s", guestbuild.WAT(t, "add_header"), proxyTo()))
	conn, err := net.DialTimeout("tcp", siteAddr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(conn, "GET /upgrade HTTP/1.1\r\nHost: %s\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n", siteAddr)
	r := bufio.NewReader(conn)
	resp, err := http.ReadResponse(r, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols || resp.Header.Get("Upgrade") != "echo" {
		t.Fatalf("status %d, Upgrade %q; want 101 to echo", resp.StatusCode, resp.Header.Get("Upgrade"))
	}
	if resp.Header.Get("X-Wat") != "hello" {
		t.Errorf("the filter's header is missing from the 101: %v", resp.Header)
	}
	for _, msg := range []string{"ping\n", "a second message\n"} {
		if _, err := io.WriteString(conn, msg); err != nil {
			t.Fatal(err)
		}
		got, err := r.ReadString('\n')
		if err != nil || got != msg {
			t.Fatalf("echoed %q, %v; want %q", got, err, msg)
		}
	}
}
