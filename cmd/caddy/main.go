// Command caddy is Caddy with its standard modules and Sluice's wasm_filter:
// the binary `xcaddy build --with github.com/sluice-edge/sluice` produces.
package main

import (
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/sluice-edge/sluice/caddymodule"
)

func main() {
	caddycmd.Main()
}
