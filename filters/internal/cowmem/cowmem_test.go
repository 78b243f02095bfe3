package cowmem

import (
	"bytes"
	"sync"
	"testing"
	"unsafe"
)

// newTestPool is NewPool for a test, closed when it ends.
func newTestPool(t *testing.T, contents []byte, reserve uint64, keep int) *Pool {
	t.Helper()
	p, err := NewPool(contents, reserve, keep)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

func testImage(t *testing.T, size int) []byte {
	t.Helper()
	b := make([]byte, size)
	for i := range b {
		b[i] = byte(i*7 + 1)
	}
	return b
}

// Every memory starts as the image; writes stay private to their memory.
func TestMemoriesStartAsTheImageAndWritesStayPrivate(t *testing.T) {
	contents := testImage(t, 3*65536+100)
	p := newTestPool(t, contents, 1<<20, 4)
	if p.Size() != 4*65536 && p.Size() < uint64(len(contents)) {
		t.Fatalf("size %d", p.Size())
	}
	a, _ := p.Get()
	b, _ := p.Get()
	bufA := a.Reallocate(4 * 65536)
	bufB := b.Reallocate(4 * 65536)
	if !bytes.Equal(bufA[:len(contents)], contents) || !bytes.Equal(bufB[:len(contents)], contents) {
		t.Fatal("a memory does not start as the image")
	}
	if !bytes.Equal(bufA[len(contents):], make([]byte, len(bufA)-len(contents))) {
		t.Fatal("the padding past the image is not zero")
	}
	bufA[0], bufA[65536*2] = 0xAA, 0xBB
	if bufB[0] != contents[0] || bufB[65536*2] != contents[65536*2] {
		t.Fatal("a write to one memory shows in another")
	}
	p.Put(a)
	p.Put(b)
	c, _ := p.Get()
	if got := c.Reallocate(4 * 65536); !bytes.Equal(got[:len(contents)], contents) {
		t.Fatal("a reused memory does not start as the image")
	}
	p.Put(c)
}

// Growth past the image reads zeros, keeps the address, and stops at the
// reservation; a reset memory's grown part is zero again.
func TestGrowthKeepsTheAddressAndResetZeroes(t *testing.T) {
	p := newTestPool(t, testImage(t, 65536), 8*65536, 1)
	m, _ := p.Get()
	small := m.Reallocate(65536)
	big := m.Reallocate(8 * 65536)
	if unsafe.SliceData(small) != unsafe.SliceData(big) {
		t.Fatal("growing moved the memory")
	}
	big[7*65536] = 9
	if m.Reallocate(8*65536+1) != nil {
		t.Fatal("grew past the reservation")
	}
	p.Put(m)
	m, _ = p.Get()
	if got := m.Reallocate(8 * 65536); got[7*65536] != 0 {
		t.Fatal("the grown part kept a write across a reset")
	}
	p.Put(m)
}

func TestImageLargerThanReservationIsRefused(t *testing.T) {
	if _, err := NewPool(make([]byte, 100), 99, 1); err != ErrTooLarge {
		t.Fatalf("err = %v", err)
	}
}

// Memories in use when the pool closes stay valid until they are put back.
func TestCloseWithMemoriesInUse(t *testing.T) {
	contents := testImage(t, 65536)
	p, _ := NewPool(contents, 65536, 2)
	m, _ := p.Get()
	spare, _ := p.Get()
	p.Put(spare)
	p.Close()
	if buf := m.Reallocate(65536); !bytes.Equal(buf, contents) {
		t.Fatal("a memory in use lost its contents when the pool closed")
	}
	p.Put(m) // released, not pooled
}

// Many goroutines getting, writing and putting memories never see each
// other's writes.
func TestConcurrentMemoriesStayIsolated(t *testing.T) {
	contents := testImage(t, 2*65536)
	p, _ := NewPool(contents, 4*65536, 8)
	defer p.Close()
	var wg sync.WaitGroup
	for g := range 16 {
		wg.Go(func() {
			for range 50 {
				m, err := p.Get()
				if err != nil {
					t.Error(err)
					return
				}
				buf := m.Reallocate(4 * 65536)
				if !bytes.Equal(buf[:len(contents)], contents) || buf[3*65536] != 0 {
					t.Error("memory did not start fresh")
				}
				buf[100], buf[3*65536] = byte(g), byte(g)
				p.Put(m)
			}
		})
	}
	wg.Wait()
}

// Get after Close fails, even while another goroutine closes the pool
// (run with -race): an image's descriptor is never closed under a mapping.
func TestGetRacingClose(t *testing.T) {
	for range 20 {
		p, _ := NewPool(testImage(t, 65536), 65536, 0)
		var wg sync.WaitGroup
		wg.Go(func() {
			for range 20 {
				if m, err := p.Get(); err == nil {
					p.Put(m)
				} else if err != ErrClosed {
					t.Error(err)
				}
			}
		})
		p.Close()
		wg.Wait()
		if _, err := p.Get(); err != ErrClosed {
			t.Fatalf("Get after Close: %v", err)
		}
	}
}

// Past the process's mapping limit, Get refuses instead of mapping; a
// memory released for good makes room again, and an idle one handed out
// again needs none.
func TestGetRefusesPastTheMappingLimit(t *testing.T) {
	p := newTestPool(t, testImage(t, 100), 1<<20, 1)
	defer SetMappedLimit(SetMappedLimit(mapped.Load() + 2))
	a, errA := p.Get()
	b, errB := p.Get()
	if errA != nil || errB != nil {
		t.Fatal(errA, errB)
	}
	if _, err := p.Get(); err != ErrTooManyMemories {
		t.Fatalf("a third memory: %v, want ErrTooManyMemories", err)
	}
	p.Put(a) // kept idle: still mapped
	a, err := p.Get()
	if err != nil {
		t.Fatalf("the idle memory: %v", err)
	}
	p.Put(a)
	p.Put(b) // the pool keeps one: b is released
	c, err := p.Get()
	if err != nil {
		t.Fatal(err)
	}
	d, err := p.Get()
	if err != nil {
		t.Fatalf("after a release: %v", err)
	}
	p.Put(c)
	p.Put(d)
}

// Park resets a memory in place: contents back to the image (zeros past
// it) whether it is reset by copying (a small image), warm or by dropping
// its pages (a large one), with its size and address kept; Unpark hands it
// back for use and Put releases it as any other.
func TestParkResetsInPlaceKeepingTheSize(t *testing.T) {
	for _, tc := range []struct {
		name   string
		image  int
		size   int // the memory's
		writes int // pages written
		warm   bool
	}{
		{"small image", 65536 + 10, copyResetLimit, 20, false},
		{"large image, warm", 1<<20 + 123, 2 << 20, 20, true},
		{"large image, pages dropped", 1<<20 + 123, 2 << 20, maxWarmPages + 1, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			contents := testImage(t, tc.image)
			p := newTestPool(t, contents, 4<<20, 4)
			m, _ := p.Get()
			size := tc.size
			buf := m.Reallocate(uint64(size))
			for round := range 3 {
				for i := range tc.writes {
					buf[i*int(pageSize)*3%size+round] = 0xEE
				}
				if !p.Park(m) {
					t.Fatalf("round %d: Park refused", round)
				}
				if want := tc.warm && pagemapReadable(); m.warm != want {
					t.Fatalf("round %d: warm %v, want %v", round, m.warm, want)
				}
				got := m.Bytes()
				if len(got) != size || &got[0] != &buf[0] {
					t.Fatalf("round %d: parked memory has %d bytes at a new address, want %d", round, len(got), size)
				}
				if !bytes.Equal(got[:len(contents)], contents) || !bytes.Equal(got[len(contents):], make([]byte, size-len(contents))) {
					t.Fatalf("round %d: a parked memory is not the image", round)
				}
				p.Unpark(m)
			}
			p.Put(m)
			if n := len(p.cold) + len(p.warm); n != 1 {
				t.Errorf("the pool keeps %d memories after Put, want 1", n)
			}
		})
	}
}

// A memory released after its pool closed is unmapped, whatever it wrote:
// its reset must not read the image Close unmapped.
func TestPutAfterCloseWithImagePagesWritten(t *testing.T) {
	for _, size := range []int{100, 1<<20 + 123} { // reset by copying, warm
		p, err := NewPool(testImage(t, size), 4<<20, 4)
		if err != nil {
			t.Fatal(err)
		}
		mappedBefore := Mapped()
		m, _ := p.Get()
		m.Reallocate(p.Size())[10] = 0xEE // a page of the image
		p.Close()
		p.Put(m)
		if mapped := Mapped(); mapped != mappedBefore {
			t.Errorf("image of %d bytes: %d memories mapped, want %d", size, mapped, mappedBefore)
		}
	}
}

// Parked memories count among those a pool keeps: past keep, Park refuses
// and leaves the memory as it was, for Put to release; a closed pool
// refuses too. The process-wide idle count comes back where it was.
func TestParkedMemoriesCountAsKept(t *testing.T) {
	idleBefore := idle.Load()
	p, err := NewPool(testImage(t, 100), 1<<20, 2)
	if err != nil {
		t.Fatal(err)
	}
	var ms []*Memory
	for range 3 {
		m, _ := p.Get()
		m.Reallocate(65536)[5000] = 0xEE
		ms = append(ms, m)
	}
	if !p.Park(ms[0]) || !p.Park(ms[1]) {
		t.Fatal("Park refused with room in the pool")
	}
	if p.Park(ms[2]) {
		t.Fatal("a third memory parked in a pool keeping two")
	}
	if ms[2].Bytes()[5000] != 0xEE {
		t.Fatal("a refused Park changed the memory")
	}
	p.Put(ms[2])
	if n := len(p.cold) + len(p.warm); n != 0 {
		t.Errorf("the pool keeps %d memories besides two parked, want none", n)
	}
	p.Unpark(ms[0])
	p.Close()
	if p.Park(ms[0]) {
		t.Error("a closed pool parked a memory")
	}
	p.Put(ms[0])
	p.Unpark(ms[1])
	p.Put(ms[1])
	if now := idle.Load(); now != idleBefore {
		t.Errorf("idle memories: %d, %d before", now, idleBefore)
	}
}

// The process keeps at most maxIdle released memories, parked ones
// included, however many its pools would keep: past it, Put releases and
// Park refuses.
func TestIdleMemoriesAreCappedPerProcess(t *testing.T) {
	was := maxIdle
	maxIdle = idle.Load() + 2
	defer func() { maxIdle = was }()
	mappedBefore := Mapped()
	p := newTestPool(t, testImage(t, 100), 1<<20, 10)
	var ms []*Memory
	for range 4 {
		m, _ := p.Get()
		m.Reallocate(65536)
		ms = append(ms, m)
	}
	if !p.Park(ms[0]) {
		t.Fatal("Park refused under the cap")
	}
	p.Put(ms[1])
	if p.Park(ms[2]) {
		t.Error("a memory parked past the process's cap")
	}
	p.Put(ms[2])
	p.Put(ms[3])
	if n := len(p.cold) + len(p.warm); n != 1 {
		t.Errorf("the pool keeps %d released memories besides one parked, want 1", n)
	}
	if mapped := Mapped(); mapped != mappedBefore+2 {
		t.Errorf("%d memories mapped, want %d (one parked, one kept)", mapped, mappedBefore+2)
	}
	p.Unpark(ms[0])
	p.Put(ms[0])
}
