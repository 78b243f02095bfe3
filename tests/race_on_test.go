//go:build race

package tests

// raceFlags builds Caddy with the race detector when the tests run with it,
// so that races in real request flows fail the suite too.
var raceFlags = []string{"-race"}
