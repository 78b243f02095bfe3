package sdktest

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
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
)

// propertyHeader carries a property the filter set to the upstream, where
// RunCaddy reads it back.
const propertyHeader = "X-Sdktest-Property-"

// RunCaddy runs the suite's cases against the built module wasm in a real
// Caddy with Sluice: a Caddy process serving the filter in front of an
// upstream that answers with each case's Upstream, on loopback. The Caddy
// binary is $SLUICE_CADDY, or caddy on $PATH; it must have the wasm_filter
// module (build one with xcaddy or Sluice's `make build`).
func RunCaddy(t *testing.T, wasm string, s Suite) {
	t.Helper()
	// Servers close after Caddy stops (cleanups run last first), so that no
	// connection Caddy holds keeps Close waiting.
	up := &caseUpstream{}
	upstream := httptest.NewServer(up)
	t.Cleanup(upstream.Close)

	var declared strings.Builder
	for name, handler := range s.Upstreams {
		srv := httptest.NewServer(handler)
		t.Cleanup(srv.Close)
		fmt.Fprintf(&declared, "\t\t\tupstream %s %s\n", name, srv.URL)
	}
	var props strings.Builder
	for _, name := range s.Properties {
		fmt.Fprintf(&props, "\t\trequest_header %s%s {http.wasm_filter.%s}\n", propertyHeader, name, name)
	}

	dir := t.TempDir()
	configFile := filepath.Join(dir, "filter.config")
	if err := os.WriteFile(configFile, []byte(s.Config), 0o600); err != nil {
		t.Fatal(err)
	}
	configOption := ""
	if s.Config != "" {
		configOption = "config_file " + configFile
	}
	site := FreeAddr(t)
	caddyfile := globalOptions + fmt.Sprintf(`http://%s {
	route {
		wasm_filter %s {
			name sdktest
			vm_id sdktest
			%s
%s%s
		}
%s		reverse_proxy %s
	}
}
`, site, wasm, configOption, declared.String(), s.Options, props.String(), upstream.Listener.Addr())
	log := StartCaddy(t, caddyfile, site)

	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 30 * time.Second}
	for _, c := range s.Cases {
		t.Run(c.Name, func(t *testing.T) {
			if c.Check == nil {
				t.Fatal("case has no Check")
			}
			r, err := up.exchange(c, func() (*http.Response, error) {
				return client.Do(clientRequest(t, site, c.Request))
			})
			if err != nil {
				t.Fatalf("%v\ncaddy log:\n%s", err, log.String())
			}
			r.Properties = map[string]string{}
			for _, name := range s.Properties {
				if r.Upstream != nil {
					r.Properties[name] = r.Upstream.Header.Get(propertyHeader + name)
					r.Upstream.Header.Del(propertyHeader + name)
				}
			}
			c.Check(t, r)
			if t.Failed() {
				t.Logf("caddy log:\n%s", log.String())
			}
		})
	}
}

// caseUpstream answers with the running case's Upstream and records what
// it received.
type caseUpstream struct {
	mu      sync.Mutex
	handler http.HandlerFunc
	got     *http.Request
	body    []byte
}

func (u *caseUpstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	u.mu.Lock()
	u.got, u.body = r.Clone(r.Context()), body
	handler := u.handler
	u.mu.Unlock()
	if handler == nil {
		http.Error(w, "sdktest: no case is running", http.StatusInternalServerError)
		return
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	handler(w, r)
}

func (u *caseUpstream) exchange(c Case, send func() (*http.Response, error)) (*Result, error) {
	u.mu.Lock()
	u.handler, u.got, u.body = c.handler(), nil, nil
	u.mu.Unlock()

	resp, err := send()
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("reading the response: %v", err)
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	return &Result{
		Upstream:     u.got,
		UpstreamBody: u.body,
		Response:     Response{Status: resp.StatusCode, Header: resp.Header, Body: body},
	}, nil
}

func clientRequest(t *testing.T, site string, r Request) *http.Request {
	method, path := r.methodPath()
	req, err := http.NewRequest(method, "http://"+site+path, bytes.NewReader(r.Body))
	if err != nil {
		t.Fatal(err)
	}
	for k, vs := range r.Header {
		req.Header[k] = vs
	}
	return req
}

// globalOptions open every Caddyfile the harness runs: no admin endpoint,
// no automatic HTTPS, nothing persisted, loopback only.
const globalOptions = `{
	admin off
	auto_https off
	persist_config off
	default_bind 127.0.0.1
}

`

// ServeCaddyfile runs Caddy on the Caddyfile at path as it is shipped (an
// example's), with its site ":8080 {" moved to a free loopback address and,
// for each pair, the first string replaced by the second everywhere: the
// .wasm name by a built module, upstreams by test servers. A first string
// the file does not hold fails the test: the file changed shape. It returns
// the site's address and Caddy's log.
func ServeCaddyfile(t testing.TB, path string, replace ...[2]string) (site string, log *Log) {
	t.Helper()
	text, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	site = FreeAddr(t)
	caddyfile := string(text)
	for _, r := range append([][2]string{{":8080 {", "http://" + site + " {"}}, replace...) {
		if !strings.Contains(caddyfile, r[0]) {
			t.Fatalf("%s has no %q any more: update the test", path, r[0])
		}
		caddyfile = strings.ReplaceAll(caddyfile, r[0], r[1])
	}
	return site, StartCaddy(t, globalOptions+caddyfile, site)
}

// StartCaddy runs Caddy with the Caddyfile text until the test ends, and
// returns once something listens on addr (an address the Caddyfile serves).
// The returned Log collects Caddy's output. The binary is found as RunCaddy
// finds it.
func StartCaddy(t testing.TB, caddyfile, addr string) *Log {
	t.Helper()
	bin := CaddyBinary(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(path, []byte(caddyfile), 0o600); err != nil {
		t.Fatal(err)
	}
	log := &Log{}
	cmd := exec.Command(bin, "run", "--config", path, "--adapter", "caddyfile")
	cmd.Stdout, cmd.Stderr = log, log
	stopWithTest(cmd)
	cmd.Env = append(os.Environ(), "XDG_DATA_HOME="+filepath.Join(dir, "data"), "XDG_CONFIG_HOME="+filepath.Join(dir, "config"))
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
	})
	if err := waitListening(addr, exited); err != nil {
		t.Fatalf("caddy did not start: %v\n%s", err, log.String())
	}
	return log
}

// CaddyBinary returns the path of a Caddy with the wasm_filter module
// ($SLUICE_CADDY, or caddy on $PATH), or fails the test saying how to get
// one.
func CaddyBinary(t testing.TB) string {
	bin := os.Getenv("SLUICE_CADDY")
	if bin == "" {
		bin, _ = exec.LookPath("caddy")
	}
	if bin == "" {
		t.Fatal("no Caddy: set SLUICE_CADDY to a Caddy built with Sluice (xcaddy build --with github.com/sluice-edge/sluice, or `make build` in Sluice's repository)")
	}
	out, err := exec.Command(bin, "list-modules").Output()
	if err != nil || !bytes.Contains(out, []byte("http.handlers.wasm_filter")) {
		t.Fatalf("%s has no wasm_filter module (%v): build Caddy with Sluice", bin, err)
	}
	return bin
}

// FreeAddr returns a loopback address (host:port) nothing listens on, for
// a Caddy to serve. The port is below Linux's ephemeral range, so no
// server a test starts on port 0 (an httptest upstream) can take it between
// now and Caddy binding it, and the process never hands it out twice.
func FreeAddr(t testing.TB) string {
	t.Helper()
	handed.Lock()
	defer handed.Unlock()
	for range 1000 {
		port := 20000 + rand.IntN(12000)
		if handed.ports[port] {
			continue
		}
		l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
		if err != nil {
			continue
		}
		l.Close()
		handed.ports[port] = true
		return l.Addr().String()
	}
	t.Fatal("no free port in 20000-31999")
	return ""
}

// handed are the ports FreeAddr gave out.
var handed = struct {
	sync.Mutex
	ports map[int]bool
}{ports: map[int]bool{}}

// waitListening waits until something accepts connections at addr, or
// Caddy exits.
func waitListening(addr string, exited <-chan error) error {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-exited:
			return fmt.Errorf("caddy exited: %v", err)
		default:
		}
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("nothing listens on %s", addr)
}

// Log is Caddy's output, which Caddy writes while a test reads it.
type Log struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *Log) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

// String returns the output so far.
func (l *Log) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}
