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
	"sync"
	"testing"
	"unsafe"

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
	p := newTestPool(t, contents, 4<<20, 4)
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
	last, _ := p.Get()
	wantImage(t, last, contents, size)
	p.Put(last)
}

// Pages a warm memory kept from an earlier, larger use still count towards
// maxWarmPages, and are dropped with the rest.
func TestPagesKeptFromALargerUseStillCount(t *testing.T) {
	contents := largeImage(t)
	p := newTestPool(t, contents, 8<<20, 4)
	write := func(m *Memory, size uint64, from, pages int) {
		buf := m.Reallocate(size)
		for page := from; page < from+pages; page++ {
			buf[page*int(pageSize)] ^= 0xff
		}
	}
	m, _ := p.Get()
	write(m, 4<<20, 800, maxWarmPages/2+1) // past 3 MiB
	p.Put(m)
	if !m.warm {
		t.Fatal("the first use was not reset warm")
	}
	m, _ = p.Get()
	write(m, 2<<20, 0, maxWarmPages/2+1) // a smaller memory this time
	p.Put(m)
	if m.warm {
		t.Fatal("a memory holding more than maxWarmPages written pages was kept warm")
	}
	m, _ = p.Get()
	wantImage(t, m, contents, 4<<20)
	p.Put(m)
}

// A memory that wrote more than maxWarmPages pages drops them instead, and
// starts as the image all the same.
func TestManyWrittenPagesAreDropped(t *testing.T) {
	contents := largeImage(t)
	p := newTestPool(t, contents, 4<<20, 4)
	m, _ := p.Get()
	buf := m.Reallocate(2 << 20)
	for page := range maxWarmPages + 1 {
		buf[page*int(pageSize)] ^= 0xff
	}
	before := warm.Load()
	p.Put(m)
	if m.warm {
		t.Fatal("a memory that wrote too many pages was kept warm")
	}
	if warm.Load() != before || p.warmSlots.Load() != 0 {
		t.Errorf("a failed warm reset left %d process and %d pool slots taken", warm.Load()-before, p.warmSlots.Load())
	}
	again, _ := p.Get()
	wantImage(t, again, contents, 2<<20)
	p.Put(again)
}

// A pool keeps at most warmPerPool warm memories, also when they come back
// at once, hands them out before the cold ones, and gives back their count
// when it closes with some still idle.
func TestWarmMemoriesAreCapped(t *testing.T) {
	contents := largeImage(t)
	before := warm.Load()
	p, err := NewPool(contents, 4<<20, 3*warmPerPool)
	if err != nil {
		t.Fatal(err)
	}
	var ms []*Memory
	for range 3 * warmPerPool {
		m, _ := p.Get()
		m.Reallocate(2 << 20)[0] = 1
		ms = append(ms, m)
	}
	var wg sync.WaitGroup
	for _, m := range ms {
		wg.Go(func() { p.Put(m) })
	}
	wg.Wait()
	if len(p.warm) != warmPerPool || p.warmSlots.Load() != warmPerPool || warm.Load() != before+warmPerPool {
		t.Fatalf("%d warm in the pool (%d slots), %d in all, want %d", len(p.warm), p.warmSlots.Load(), warm.Load()-before, warmPerPool)
	}
	kept := slices.Clone(p.warm)
	for range warmPerPool / 2 {
		if m, _ := p.Get(); !slices.Contains(kept, m) {
			t.Fatal("a cold memory was handed out before a warm one")
		}
	}
	p.Close()
	if warm.Load() != before {
		t.Errorf("%d warm memories counted after the pool closed", warm.Load()-before)
	}
}

// Reservations are marked MADV_NOHUGEPAGE: with transparent huge pages
// always on, one write past the image would fault in 2 MiB.
func TestReservationsTakeNoHugePages(t *testing.T) {
	p := newTestPool(t, largeImage(t), 8<<20, 1)
	m, _ := p.Get()
	defer p.Put(m)
	smaps, err := os.ReadFile("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	// The anonymous part of the reservation, past the image's mapping.
	past := uint64(uintptr(unsafe.Pointer(&m.buf[0]))) + p.Size()
	inside := false
	for _, line := range strings.Split(string(smaps), "\n") {
		var from, to uint64
		if _, err := fmt.Sscanf(line, "%x-%x ", &from, &to); err == nil {
			inside = from <= past && past < to
		} else if flags, ok := strings.CutPrefix(line, "VmFlags:"); ok && inside {
			if !slices.Contains(strings.Fields(flags), "nh") {
				t.Errorf("the reservation's flags are %q, without nh", flags)
			}
			return
		}
	}
	t.Fatal("the reservation is not in /proc/self/smaps")
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

// pagemapReadable reports whether resets can tell the pages a memory wrote.
func pagemapReadable() bool { return pagemap() != nil }

// Without /proc/self/pagemap, nothing says which pages a memory wrote: a
// small memory gets the whole image copied back, a large one drops its
// pages; each comes back as the image.
func TestResetWithoutPagemap(t *testing.T) {
	was := pagemap
	pagemap = func() *os.File { return nil }
	defer func() { pagemap = was }()
	TestParkResetsInPlaceKeepingTheSize(t)
	TestMemoriesStartAsTheImageAndWritesStayPrivate(t)
	p := newTestPool(t, largeImage(t), 4<<20, 4)
	m, _ := p.Get()
	m.Reallocate(2 << 20)[5] = 0xEE
	p.Put(m)
	if m.warm {
		t.Error("a large memory was reset warm without pagemap")
	}
}
