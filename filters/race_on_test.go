//go:build race

package filters

// raceSlowdown scales the time bounds of tests that check a refusal is
// quick: the race detector makes the scan of a large module ten times
// slower.
const raceSlowdown = 10
