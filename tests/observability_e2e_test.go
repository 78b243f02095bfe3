package tests

import (
	"bufio"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"

	"github.com/sluice-edge/sluice/tests/guestbuild"
)

// One trace shows a request from the client's traceparent through Caddy's
// server span, each filter and its phases, the filter's outbound call, the
// auth service and the upstream: Caddy exports it over OTLP/HTTP to a
// receiver the test runs, and every service along the way got the trace.
func TestTraceFromClientThroughFiltersToUpstream(t *testing.T) {
	var mu sync.Mutex
	var authTraceparent string
	auth := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		authTraceparent = r.Header.Get("Traceparent")
		mu.Unlock()
		w.Header().Set("X-User", "alice")
	}))
	defer auth.Close()
	mustLoad(t, fmt.Sprintf(`
	tracing
	wasm_filter %s {
		name auth
		upstream auth %s
	}
	wasm_filter %s {
		name headers
	}
	%s`, guestbuild.Go(t, "authcall"), auth.URL, guestbuild.Go(t, "headers"), proxyTo()))

	const traceID, clientSpan = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	resp, body := do(t, "GET", "/traced", nil, http.Header{
		"Traceparent":   {"00-" + traceID + "-" + clientSpan + "-01"},
		"Authorization": {"Bearer good"},
	})
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}

	// The spans: Caddy's server span, and per filter its span with
	// children for the isolate, the phases and (auth) the outbound call.
	var spans []*tracepb.Span
	want := []string{"wasm_filter auth", "wasm_filter headers", "create isolate", "request_headers", "response_headers", "log", "GET"}
	// Each filter has its own isolate and phase spans: two of each.
	perFilter := []string{"create isolate", "request_headers", "response_headers", "log"}
	eventually(t, "the trace reaching the OTLP receiver", func() string {
		spans = otlp.trace(traceID)
		for _, name := range want {
			count := 0
			for _, s := range spans {
				if s.GetName() == name {
					count++
				}
			}
			if need := map[bool]int{true: 2, false: 1}[slices.Contains(perFilter, name)]; count < need {
				return fmt.Sprintf("%d %q spans among %d, want %d: %v", count, name, len(spans), need, spanNames(spans))
			}
		}
		return ""
	})
	byID := map[string]*tracepb.Span{}
	for _, s := range spans {
		byID[hex.EncodeToString(s.GetSpanId())] = s
	}
	parentOf := func(s *tracepb.Span) *tracepb.Span { return byID[hex.EncodeToString(s.GetParentSpanId())] }
	var server *tracepb.Span
	for _, s := range spans {
		if hex.EncodeToString(s.GetParentSpanId()) == clientSpan {
			server = s
		}
	}
	if server == nil || server.GetKind() != tracepb.Span_SPAN_KIND_SERVER {
		t.Fatalf("no server span whose parent is the client's: %v", spanNames(spans))
	}
	filters := map[string]*tracepb.Span{}
	for _, s := range spans {
		if strings.HasPrefix(s.GetName(), "wasm_filter ") {
			filters[spanAttr(s, "sluice.filter.name")] = s
			if parentOf(s) != server {
				t.Errorf("%q is not a child of the server span", s.GetName())
			}
			if spanAttr(s, "sluice.outcome") != "continued" || !strings.HasPrefix(spanAttr(s, "sluice.filter.digest"), "sha256:") {
				t.Errorf("%q attributes: %v", s.GetName(), s.GetAttributes())
			}
		}
	}
	children := map[*tracepb.Span][]string{}
	for _, s := range spans {
		children[parentOf(s)] = append(children[parentOf(s)], s.GetName())
	}
	for name, f := range filters {
		for _, phase := range perFilter {
			if !slices.Contains(children[f], phase) {
				t.Errorf("filter %s has no %q span: %v", name, phase, children[f])
			}
		}
	}
	for _, s := range spans {
		parent := parentOf(s)
		switch s.GetName() {
		case "create isolate", "request_headers", "response_headers", "log":
			if parent == nil || !strings.HasPrefix(parent.GetName(), "wasm_filter ") {
				t.Errorf("%q's parent is %v, not a filter span", s.GetName(), parent.GetName())
			}
		case "GET":
			if parent != filters["auth"] || s.GetKind() != tracepb.Span_SPAN_KIND_CLIENT || spanAttr(s, "sluice.upstream") != "auth" {
				t.Errorf("outbound call span: parent %v, kind %v, attributes %v", parent.GetName(), s.GetKind(), s.GetAttributes())
			}
			mu.Lock()
			got := authTraceparent
			mu.Unlock()
			if wantTP := "00-" + traceID + "-" + hex.EncodeToString(s.GetSpanId()) + "-01"; got != wantTP {
				t.Errorf("the auth service got traceparent %q, want %q", got, wantTP)
			}
		}
	}
	// Caddy hands the server span's context to the upstream.
	wantUp := "00-" + traceID + "-" + hex.EncodeToString(server.GetSpanId()) + "-01"
	if got := decodeEcho(t, body).Header.Get("Traceparent"); got != wantUp {
		t.Errorf("the upstream got traceparent %q, want %q", got, wantUp)
	}
	otlp.mu.Lock()
	defer otlp.mu.Unlock()
	if len(otlp.bad) > 0 {
		t.Errorf("the receiver could not decode: %v", otlp.bad)
	}
}

func spanNames(spans []*tracepb.Span) []string {
	var names []string
	for _, s := range spans {
		names = append(names, s.GetName())
	}
	return names
}

// scrape fetches Caddy's Prometheus endpoint (on the admin API) and returns
// the value of the sample whose name is name and whose labels include all
// of labels ("filter", "x", ...); -1 when there is none.
func scrape(t *testing.T, name string, labels ...string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + adminAddr + "/metrics")
	if err != nil {
		t.Fatalf("scraping: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("scraping: status %d: %s", resp.StatusCode, b)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name+"{") {
			continue
		}
		series, value, _ := strings.Cut(line, "} ")
		match := true
		for i := 0; i+1 < len(labels); i += 2 {
			match = match && strings.Contains(series, fmt.Sprintf("%s=%q", labels[i], labels[i+1]))
		}
		if match {
			v, err := strconv.ParseFloat(value, 64)
			if err != nil {
				t.Fatalf("sample %q: %v", line, err)
			}
			return v
		}
	}
	return -1
}

// Caddy's /metrics endpoint counts each filter's requests by outcome,
// failures by reason, local responses by status, times isolates and guest
// phases, and exports what filters define themselves; the counts go on
// across a config reload.
func TestMetricsOnCaddysPrometheusEndpoint(t *testing.T) {
	name := uniqueID(t)
	site := fmt.Sprintf(`
	handle /deny {
		wasm_filter %[1]s {
			name %[2]s-deny
			config s3cret
		}
		respond "never"
	}
	handle {
		wasm_filter %[3]s {
			name %[2]s
		}
		%[4]s
	}`, guestbuild.Go(t, "auth"), name, guestbuild.Go(t, "metrics"), proxyTo())
	mustLoad(t, site)
	for range 3 {
		do(t, "GET", "/ok", nil, nil)
	}
	do(t, "GET", "/deny", nil, nil)
	mustLoad(t, site) // a reload: a new registry
	do(t, "GET", "/ok", nil, nil)

	for _, c := range []struct {
		metric string
		labels []string
		want   float64
	}{
		{"caddy_wasm_filter_requests_total", []string{"filter", name, "outcome", "continued"}, 4},
		{"caddy_wasm_filter_requests_total", []string{"filter", name + "-deny", "outcome", "local_response"}, 1},
		{"caddy_wasm_filter_local_responses_total", []string{"filter", name + "-deny", "code", "403"}, 1},
		{"caddy_wasm_filter_isolate_creation_seconds_count", []string{"filter", name}, 4},
		{"caddy_wasm_filter_guest_seconds_count", []string{"filter", name, "phase", "request_headers"}, 4},
		{"caddy_wasm_filter_guest_counter_total", []string{"filter", name, "metric", "requests_total"}, 4},
		{"caddy_wasm_filter_guest_gauge", []string{"filter", name, "metric", "inflight"}, 0},
		{"caddy_wasm_filter_guest_histogram_count", []string{"filter", name, "metric", "path_length"}, 4},
	} {
		// isolate_creation_seconds has a series per origin; sum them.
		if got := scrapeSum(t, c.metric, c.labels...); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.metric, c.labels, got, c.want)
		}
	}
}

// scrapeSum is scrape summed over every series matching labels.
func scrapeSum(t *testing.T, name string, labels ...string) float64 {
	t.Helper()
	var sum float64
	found := false
	for _, origin := range []string{"recycle", "restore", "prewarmed", "instantiate", "shared"} {
		if name != "caddy_wasm_filter_isolate_creation_seconds_count" {
			return scrape(t, name, labels...)
		}
		if v := scrape(t, name, append(labels, "origin", origin)...); v >= 0 {
			sum, found = sum+v, true
		}
	}
	if !found {
		return -1
	}
	return sum
}

// Traces also leave over OTLP/gRPC, the other protocol of Caddy's standard
// OTEL_* configuration: a second Caddy, started with that environment,
// exports a filtered request's spans to a gRPC receiver the test runs.
func TestTracesExportOverOTLPgRPC(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	receiver := &grpcTraceReceiver{}
	srv := grpc.NewServer()
	coltracepb.RegisterTraceServiceServer(srv, receiver)
	go func() { _ = srv.Serve(lis) }()
	defer srv.Stop()

	dir := t.TempDir()
	admin, site := freeAddr(), freeAddr()
	caddyfile := filepath.Join(dir, "Caddyfile")
	config := fmt.Sprintf(`{
	admin %s
	auto_https off
	persist_config off
}

http://%s {
	tracing
	wasm_filter %s {
		name grpc-traced
	}
	respond "ok"
}
`, admin, site, guestbuild.Go(t, "headers"))
	if err := os.WriteFile(caddyfile, []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	var out logBuffer
	cmd := exec.Command(caddyBin, "run", "--config", caddyfile, "--adapter", "caddyfile")
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.Env = append(os.Environ(), "HOME="+dir, "XDG_DATA_HOME="+filepath.Join(dir, "data"),
		"XDG_CONFIG_HOME="+filepath.Join(dir, "config"),
		"OTEL_TRACES_EXPORTER=otlp", "OTEL_EXPORTER_OTLP_PROTOCOL=grpc",
		"OTEL_EXPORTER_OTLP_ENDPOINT=http://"+lis.Addr().String(), "OTEL_EXPORTER_OTLP_INSECURE=true",
		"OTEL_BSP_SCHEDULE_DELAY=100")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = cmd.Process.Signal(os.Interrupt)
		_ = cmd.Wait()
	}()
	if err := waitFor("http://" + admin + "/config/"); err != nil {
		t.Fatalf("second caddy did not start: %v\n%s", err, out.String())
	}

	const traceID = "0af7651916cd43dd8448eb211c80319c"
	req, _ := http.NewRequest(http.MethodGet, "http://"+site+"/", nil)
	req.Header.Set("Traceparent", "00-"+traceID+"-b7ad6b7169203331-01")
	var resp *http.Response
	eventually(t, "the second caddy serving", func() string {
		if resp, err = httpClient.Do(req); err != nil {
			return err.Error()
		}
		resp.Body.Close()
		return ""
	})
	if resp.StatusCode != http.StatusOK || resp.Header.Get("X-Added") != "resp" {
		t.Fatalf("status %d, x-added %q", resp.StatusCode, resp.Header.Get("X-Added"))
	}
	id, _ := hex.DecodeString(traceID)
	eventually(t, "spans over gRPC", func() string {
		names := receiver.names(id)
		for _, want := range []string{"wasm_filter grpc-traced", "create isolate", "request_headers", "response_headers", "log"} {
			if !slices.Contains(names, want) {
				return fmt.Sprintf("no %q among %v\n%s", want, names, out.String())
			}
		}
		return ""
	})
}
