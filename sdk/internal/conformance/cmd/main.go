// Command cmd is the conformance filter as a Proxy-Wasm module.
package main

import (
	"github.com/sluice-edge/sluice/sdk"
	"github.com/sluice-edge/sluice/sdk/internal/conformance"
)

func main() {}

func init() { sdk.Register(conformance.Configure) }
