// Command random is a test filter written against the official Proxy-Wasm
// Go SDK that reports randomness: 8 bytes from crypto/rand (the host's
// random_get, fresh for every call) and a number from math/rand's global
// source (seeded by the Go runtime when it starts), in response headers.
package main

import (
	crand "crypto/rand"
	"encoding/hex"
	"math/rand"
	"strconv"

	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm"
	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm/types"
)

func main() {}

func init() { proxywasm.SetVMContext(&vm{}) }

type vm struct{ types.DefaultVMContext }

func (*vm) NewPluginContext(uint32) types.PluginContext { return &plugin{} }

type plugin struct{ types.DefaultPluginContext }

func (*plugin) NewHttpContext(uint32) types.HttpContext { return &filter{} }

type filter struct{ types.DefaultHttpContext }

func (*filter) OnHttpResponseHeaders(int, bool) types.Action {
	b := make([]byte, 8)
	_, _ = crand.Read(b)
	_ = proxywasm.AddHttpResponseHeader("x-crypto-rand", hex.EncodeToString(b))
	_ = proxywasm.AddHttpResponseHeader("x-math-rand", strconv.FormatInt(rand.Int63(), 10))
	return types.ActionContinue
}
