//go:build tools

// Package tools pins the build tools Sluice's Makefile uses: xcaddy, built
// from this module because `go install ...xcaddy@v0.4.5` is refused by the
// module proxy here.
package tools

import _ "github.com/caddyserver/xcaddy/cmd/xcaddy"
