// Native tests of the foreign guest with the SDK's proxytest emulator. Notes:
// zlib compress and uncompress are registered as Envoy's are; the emulator
// exits the process on an unknown function, so the tests wrap
// callForeignFunction to answer not found for any other name.

package main

import (
	"bytes"
	"compress/zlib"
	"io"
	"strconv"
	"strings"
	"testing"

	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm/proxytest"
	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm/types"
)

// newHost registers zlib compress and uncompress, as Envoy's are, and makes
// any other function name fail with not found (the emulator would exit the
// process).
func newHost(t *testing.T, uncompress func([]byte) []byte) proxytest.HostEmulator {
	t.Helper()
	orig := callForeignFunction
	t.Cleanup(func() { callForeignFunction = orig })
	callForeignFunction = func(name string, param []byte) ([]byte, error) {
		if name != "compress" && name != "uncompress" {
			return nil, types.ErrorStatusNotFound
		}
		return orig(name, param)
	}
	host, reset := proxytest.NewHostEmulator(proxytest.NewEmulatorOption().WithVMContext(&vm{}))
	t.Cleanup(reset)
	host.RegisterForeignFunction("compress", func(in []byte) []byte {
		var b bytes.Buffer
		w := zlib.NewWriter(&b)
		w.Write(in)
		w.Close()
		return b.Bytes()
	})
	host.RegisterForeignFunction("uncompress", uncompress)
	return host
}

func unzlib(in []byte) []byte {
	r, err := zlib.NewReader(bytes.NewReader(in))
	if err != nil {
		return []byte("corrupt")
	}
	out, err := io.ReadAll(r)
	if err != nil {
		return []byte("corrupt")
	}
	return out
}

func answer(t *testing.T, host proxytest.HostEmulator, path string) *proxytest.LocalHttpResponse {
	t.Helper()
	id := host.InitializeHttpContext()
	if a := host.CallOnRequestHeaders(id, [][2]string{{":path", path}}, true); a != types.ActionPause {
		t.Fatalf("request headers: %v, want Pause", a)
	}
	r := host.GetSentLocalResponse(id)
	if r == nil {
		t.Fatal("no local response")
	}
	if len(r.Headers) != 1 || r.Headers[0] != [2]string{"x-missing", "error status returned by host: not found"} {
		t.Errorf("headers %q, want x-missing: not found", r.Headers)
	}
	return r
}

func TestRoundTrip(t *testing.T) {
	host := newHost(t, unzlib)
	r := answer(t, host, "/hello")
	var b bytes.Buffer
	w := zlib.NewWriter(&b)
	w.Write([]byte(strings.Repeat("/hello", 50)))
	w.Close()
	if want := "ok 300 " + strconv.Itoa(b.Len()) + " true"; r.StatusCode != 200 || string(r.Data) != want {
		t.Errorf("%d %q, want 200 %q", r.StatusCode, r.Data, want)
	}
}

func TestMismatch(t *testing.T) {
	host := newHost(t, func([]byte) []byte { return []byte("something else") })
	if r := answer(t, host, "/x"); r.StatusCode != 200 || !strings.HasSuffix(string(r.Data), " false") || !strings.HasPrefix(string(r.Data), "ok 100 ") {
		t.Errorf("%d %q, want 200 ok 100 <n> false", r.StatusCode, r.Data)
	}
}

func TestFails(t *testing.T) {
	for _, name := range []string{"compress", "uncompress"} {
		t.Run(name, func(t *testing.T) {
			host := newHost(t, unzlib)
			wrapped := callForeignFunction // restored by newHost's cleanup
			callForeignFunction = func(n string, param []byte) ([]byte, error) {
				if n == name {
					return nil, types.ErrorStatusBadArgument
				}
				return wrapped(n, param)
			}
			r := answer(t, host, "/x")
			if want := name + ": error status returned by host: bad argument"; r.StatusCode != 500 || string(r.Data) != want {
				t.Errorf("%d %q, want 500 %q", r.StatusCode, r.Data, want)
			}
		})
	}
}
