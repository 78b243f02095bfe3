//go:build linux

package filters

import (
	"os"
	"strconv"
	"strings"
	"testing"
)

// The default memory budget is half the machine's memory (MemTotal in
// /proc/meminfo, which sysinfo's total RAM matches).
func TestDefaultMemoryBudgetIsHalfTheMachine(t *testing.T) {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		t.Fatal(err)
	}
	var totalKiB uint64
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "MemTotal:"); ok {
			totalKiB, _ = strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		}
	}
	want := totalKiB * 1024 / 2
	if got := defaultBudgetLimit(); got < want*99/100 || got > want*101/100 {
		t.Errorf("default budget %d, want about %d (half of MemTotal)", got, want)
	}
}
