//go:build linux

package cowmem

import (
	"os"
	"strconv"
	"strings"
	"testing"
)

// A process may hold a quarter of the kernel's mapping limit in memories.
func TestMappedLimitIsAQuarterOfTheKernels(t *testing.T) {
	b, err := os.ReadFile("/proc/sys/vm/max_map_count")
	if err != nil {
		t.Fatal(err)
	}
	kernel, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	limit := SetMappedLimit(0)
	SetMappedLimit(limit)
	if limit != int64(kernel/4) {
		t.Errorf("mapped limit %d, want a quarter of %d", limit, kernel)
	}
}
