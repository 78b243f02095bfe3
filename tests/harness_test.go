// Package tests holds Sluice's end-to-end tests: a real Caddy binary (built
// from cmd/caddy, or the one SLUICE_CADDY names, e.g. an xcaddy build) in
// front of a real upstream on loopback, running filters built from source by
// the real toolchains. Each test loads its own Caddyfile through Caddy's
// admin API; the tests run one after another against the same process.
package tests

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

var (
	caddyBin  string
	adminAddr string // Caddy's admin endpoint, host:port
	siteAddr  string // where the test sites listen, host:port
	dataDir   string // Caddy's XDG_DATA_HOME
	upstream  *echoServer
	otlp      *otlpReceiver // where Caddy exports traces
	caddyLog  = &logBuffer{}
)

func TestMain(m *testing.M) {
	code, err := run(m)
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e setup:", err)
		os.Exit(1)
	}
	os.Exit(code)
}

func run(m *testing.M) (int, error) {
	work, err := os.MkdirTemp("", "sluice-e2e-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(work)

	if caddyBin = os.Getenv("SLUICE_CADDY"); caddyBin == "" {
		caddyBin = filepath.Join(work, "caddy")
		args := append(append([]string{"build"}, raceFlags...), "-o", caddyBin, "./cmd/caddy")
		build := exec.Command("go", args...)
		build.Dir = ".."
		if out, err := build.CombinedOutput(); err != nil {
			return 0, fmt.Errorf("building caddy: %v\n%s", err, out)
		}
	}

	upstream = newEchoServer()
	defer upstream.Close()
	otlp = newOTLPReceiver()
	defer otlp.Close()
	adminAddr = freeAddr()

	cmd := exec.Command(caddyBin, "run", "--config", "-")
	cmd.Stdin = strings.NewReader(fmt.Sprintf(`{"admin":{"listen":%q}}`, adminAddr))
	cmd.Stdout, cmd.Stderr = caddyLog, caddyLog
	dataDir = filepath.Join(work, "data")
	cmd.Env = append(os.Environ(), "HOME="+work, "XDG_DATA_HOME="+dataDir,
		"XDG_CONFIG_HOME="+filepath.Join(work, "config"),
		// Traces go to the test's OTLP/HTTP receiver, exported every
		// 100ms, as an operator would configure the tracing directive.
		"OTEL_TRACES_EXPORTER=otlp", "OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf",
		"OTEL_EXPORTER_OTLP_ENDPOINT="+otlp.URL, "OTEL_BSP_SCHEDULE_DELAY=100",
		"OTEL_SERVICE_NAME=sluice-e2e")
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	defer func() {
		_ = cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
		}
	}()
	if err := waitFor("http://" + adminAddr + "/config/"); err != nil {
		return 0, fmt.Errorf("caddy did not start: %v\n%s", err, caddyLog.String())
	}
	code := m.Run()
	if code != 0 {
		fmt.Fprintf(os.Stderr, "--- caddy log (last 60 lines) ---\n%s\n", caddyLog.tail(60))
	}
	if log := caddyLog.String(); strings.Contains(log, "WARNING: DATA RACE") || strings.Contains(log, "panic serving") {
		fmt.Fprintf(os.Stderr, "--- caddy reported a data race or an unrecovered panic ---\n%s\n", log)
		code = 1
	}
	return code, nil
}

func freeAddr() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func waitFor(url string) error {
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// loadCaddyfile replaces Caddy's config with one site whose body is site.
// The global options keep the admin endpoint where the tests find it. Each
// config listens on a fresh port, which siteAddr names once the config is
// in place: a request can never reach the server a reload is retiring. It
// returns Caddy's error text when the config is refused.
func loadCaddyfile(t *testing.T, site string) error {
	t.Helper()
	addr := freeAddr()
	caddyfile := fmt.Sprintf(`{
	admin %s
	auto_https off
	persist_config off
}

http://%s {
%s
}
`, adminAddr, addr, site)
	req, _ := http.NewRequest(http.MethodPost, "http://"+adminAddr+"/load", strings.NewReader(caddyfile))
	req.Header.Set("Content-Type", "text/caddyfile")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("posting config: %v", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s", body)
	}
	siteAddr = addr
	return nil
}

// mustLoad is loadCaddyfile for configs that must load.
func mustLoad(t *testing.T, site string) {
	t.Helper()
	if err := loadCaddyfile(t, site); err != nil {
		t.Fatalf("config refused: %v", err)
	}
}

// siteURL is the URL of path on the test site.
func siteURL(path string) string { return "http://" + siteAddr + path }

// proxyTo is the reverse_proxy directive to the echo upstream.
func proxyTo() string { return "reverse_proxy " + upstream.Addr() }

// do sends a request to the test site and returns the response with its body
// read.
func do(t *testing.T, method, path string, body io.Reader, header http.Header) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, siteURL(path), body)
	if err != nil {
		t.Fatal(err)
	}
	for k, vs := range header {
		req.Header[k] = vs
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", method, path, err)
	}
	return resp, string(b)
}

// httpClient opens a connection per request, so that no request reuses a
// connection of a config that was replaced.
var httpClient = &http.Client{
	Timeout:   20 * time.Second,
	Transport: &http.Transport{DisableKeepAlives: true},
}

// echoed is what the echo upstream saw of a request.
type echoed struct {
	Method  string      `json:"method"`
	URI     string      `json:"uri"`
	Host    string      `json:"host"`
	Header  http.Header `json:"header"`
	Body    string      `json:"body"`
	Length  int64       `json:"content_length"`
	Chunked bool        `json:"chunked"`
}

func decodeEcho(t *testing.T, body string) echoed {
	t.Helper()
	var e echoed
	if err := json.Unmarshal([]byte(body), &e); err != nil {
		t.Fatalf("upstream reply is not the echo JSON: %v\n%s", err, body)
	}
	return e
}

// echoServer is the upstream: by default it answers with a JSON account of
// the request it got (method, URI, headers, body), plus a few response
// headers a filter may change. Special paths:
//
//	/stream?chunks=N&delay=D  N flushed chunks of "upstream chunk i\n", D apart
//	/big?size=N               N bytes of 'x' with a Content-Length
//	/text                     "hello from upstream" as text/plain
//	/upgrade                  101 to protocol "echo", then echoes the bytes
type echoServer struct {
	*httptest.Server
	hits atomic.Int64
}

func newEchoServer() *echoServer {
	e := &echoServer{}
	e.Server = httptest.NewServer(http.HandlerFunc(e.serve))
	return e
}

func (e *echoServer) Addr() string { return e.Listener.Addr().String() }

func (e *echoServer) serve(w http.ResponseWriter, r *http.Request) {
	e.hits.Add(1)
	w.Header().Set("X-Upstream-Secret", "s3cret")
	w.Header().Set("X-Replaced", "old")
	switch r.URL.Path {
	case "/stream":
		var chunks int
		var delay time.Duration
		fmt.Sscan(r.URL.Query().Get("chunks"), &chunks)
		delay, _ = time.ParseDuration(r.URL.Query().Get("delay"))
		w.Header().Set("Content-Type", "text/plain")
		for i := range chunks {
			fmt.Fprintf(w, "upstream chunk %d\n", i)
			http.NewResponseController(w).Flush()
			time.Sleep(delay)
		}
		return
	case "/big":
		var size int
		fmt.Sscan(r.URL.Query().Get("size"), &size)
		w.Header().Set("Content-Length", fmt.Sprint(size))
		_, _ = io.CopyN(w, zeros{}, int64(size))
		return
	case "/text":
		w.Header().Set("Content-Type", "text/plain")
		_, _ = io.WriteString(w, "hello from upstream")
		return
	case "/upgrade":
		echoUpgraded(w, r)
		return
	}
	body, _ := io.ReadAll(r.Body)
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(echoed{
		Method: r.Method, URI: r.RequestURI, Host: r.Host, Header: r.Header, Body: string(body),
		Length: r.ContentLength, Chunked: len(r.TransferEncoding) > 0 && r.TransferEncoding[0] == "chunked",
	})
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = 'x'
	}
	return len(p), nil
}

// logBuffer collects Caddy's log lines for assertions.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// mark returns a position; since returns what was logged after it.
func (l *logBuffer) mark() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Len()
}

func (l *logBuffer) since(mark int) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()[mark:]
}

func (l *logBuffer) tail(n int) string {
	lines := strings.Split(strings.TrimSpace(l.String()), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// waitForLog waits until a line logged after mark contains every part.
func waitForLog(t *testing.T, mark int, parts ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for {
		for _, line := range strings.Split(caddyLog.since(mark), "\n") {
			if containsAll(line, parts) {
				return line
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("no log line with %q; logged since:\n%s", parts, caddyLog.since(mark))
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func containsAll(s string, parts []string) bool {
	for _, p := range parts {
		if !strings.Contains(s, p) {
			return false
		}
	}
	return true
}

// echoUpgraded switches the connection to protocol "echo" (101), then
// sends back whatever arrives until the client closes.
func echoUpgraded(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Upgrade") != "echo" {
		http.Error(w, "want Upgrade: echo", http.StatusBadRequest)
		return
	}
	conn, buf, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return
	}
	defer conn.Close()
	_, _ = buf.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
	if buf.Flush() != nil {
		return
	}
	_, _ = io.Copy(conn, buf)
}
