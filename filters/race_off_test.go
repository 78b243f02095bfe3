//go:build !race

package filters

const raceSlowdown = 1
