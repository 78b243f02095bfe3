// Package sluice plugs Sluice's wasm_filter handler into Caddy:
//
//	xcaddy build --with github.com/sluice-edge/sluice
//
// The handler lives in package caddymodule; the Proxy-Wasm runtime in
// packages filters and abi.
package sluice

import (
	// Registers the http.handlers.wasm_filter module and the wasm_filter
	// Caddyfile directive.
	_ "github.com/sluice-edge/sluice/caddymodule"
)
