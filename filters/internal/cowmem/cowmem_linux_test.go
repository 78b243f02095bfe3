//go:build linux

package cowmem

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
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

// largeImage is past copyResetLimit, so its memories are reset through the
// page table (warm) or by dropping their pages (cold).
func largeImage(t *testing.T) []byte {
	t.Helper()
	b := testImage(t, 1<<20+123)
	if len(b) <= copyResetLimit {
		t.Fatal("the image is small enough to be reset by copying it all")
	}
	return b
}

// wantImage checks that m's first size bytes are the image, then zeros.
func wantImage(t *testing.T, m *Memory, contents []byte, size uint64) {
	t.Helper()
	got := m.Reallocate(size)
	if !bytes.Equal(got[:len(contents)], contents) {
		t.Fatal("the image part differs from the image")
	}
	for i, b := range got[len(contents):] {
		if b != 0 {
			t.Fatalf("byte %d past the image is %#x, want 0", len(contents)+i, b)
		}
	}
}

// A warm reset restores every page written, in the image and past it, and
// leaves the pages only read as they were; the memory comes back warm.
func TestWarmResetRestoresEveryWrittenPage(t *testing.T) {
	contents := largeImage(t)
	p, err := NewPool(contents, 4<<20, 4)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	const size = 3 << 20
	rng := rand.New(rand.NewPCG(1, 2))
	for round := range 20 {
		m, err := p.Get()
		if err != nil {
			t.Fatal(err)
		}
		if round > 0 {
			wantImage(t, m, contents, size)
		}
		buf := m.Reallocate(size)
		var sum byte
		for range 100 {
			// Anywhere in 150 pages spread over the memory, so that the
			// pages written in all rounds (which a warm memory keeps)
			// stay under maxWarmPages.
			at := rng.IntN(150)*(size/150/int(pageSize))*int(pageSize) + rng.IntN(int(pageSize))
			if rng.IntN(3) == 0 {
				sum += buf[at] // a read: maps the image's page, or the zero page
			} else {
				buf[at] = byte(rng.IntN(255) + 1)
			}
		}
		_ = sum
		p.Put(m)
		if !m.warm {
			t.Fatalf("round %d: the memory was not reset warm", round)
		}
	}
}

// A memory that wrote more than maxWarmPages pages drops them instead, and
// starts as the image all the same.
func TestManyWrittenPagesAreDropped(t *testing.T) {
	contents := largeImage(t)
	p, err := NewPool(contents, 4<<20, 4)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	m, _ := p.Get()
	buf := m.Reallocate(2 << 20)
	for page := range maxWarmPages + 1 {
		buf[page*int(pageSize)] ^= 0xff
	}
	p.Put(m)
	if m.warm {
		t.Fatal("a memory that wrote too many pages was kept warm")
	}
	again, _ := p.Get()
	wantImage(t, again, contents, 2<<20)
	p.Put(again)
}

// A pool keeps at most warmPerPool warm memories, hands them out before
// the cold ones, and gives back their count when it closes.
func TestWarmMemoriesAreCapped(t *testing.T) {
	contents := largeImage(t)
	before := warm.Load()
	p, err := NewPool(contents, 4<<20, warmPerPool+8)
	if err != nil {
		t.Fatal(err)
	}
	var ms []*Memory
	for range warmPerPool + 4 {
		m, _ := p.Get()
		m.Reallocate(2 << 20)[0] = 1
		ms = append(ms, m)
	}
	for _, m := range ms {
		p.Put(m)
	}
	if p.warm != warmPerPool || warm.Load() != before+warmPerPool {
		t.Fatalf("%d warm in the pool, %d in all, want %d", p.warm, warm.Load()-before, warmPerPool)
	}
	for range warmPerPool {
		if m, _ := p.Get(); !slices.Contains(ms, m) || p.free[0].warm {
			t.Fatal("a cold memory was handed out before a warm one")
		}
	}
	p.Close()
	if warm.Load() != before {
		t.Errorf("%d warm memories counted after the pool closed", warm.Load()-before)
	}
}

// Where the kernel has PAGEMAP_SCAN (6.7 on), warm resets use it; the
// per-page pagemap read, for older kernels, restores the same pages.
func TestWarmResetWithAndWithoutPagemapScan(t *testing.T) {
	t.Run("scan", func(t *testing.T) {
		TestWarmResetRestoresEveryWrittenPage(t)
		var u unix.Utsname
		if err := unix.Uname(&u); err != nil {
			t.Fatal(err)
		}
		var major, minor int
		fmt.Sscanf(unix.ByteSliceToString(u.Release[:]), "%d.%d", &major, &minor)
		if scanning := !noPagemapScan.Load(); scanning != (major > 6 || major == 6 && minor >= 7) {
			t.Errorf("kernel %d.%d: PAGEMAP_SCAN used: %v", major, minor, scanning)
		}
	})
	t.Run("read", func(t *testing.T) {
		was := noPagemapScan.Swap(true)
		defer noPagemapScan.Store(was)
		TestWarmResetRestoresEveryWrittenPage(t)
		TestManyWrittenPagesAreDropped(t)
	})
}
