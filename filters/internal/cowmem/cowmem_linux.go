//go:build linux

package cowmem

import (
	"encoding/binary"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

var pageSize = uint64(os.Getpagesize())

// maxMapCount is the kernel's limit on a process's mappings.
func maxMapCount() int {
	b, err := os.ReadFile("/proc/sys/vm/max_map_count")
	if n, perr := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && perr == nil && n > 0 {
		return n
	}
	return 65530 // the kernel's default
}

// image is a sealed memfd holding the contents every memory starts as.
type image struct {
	fd   int
	size uint64
	view []byte // the memfd mapped shared and read-only: what a reset copies back
}

func newImage(contents []byte) (*image, error) {
	size := (uint64(len(contents)) + pageSize - 1) / pageSize * pageSize
	img := &image{fd: -1, size: size}
	if size == 0 {
		return img, nil
	}
	fd, err := unix.MemfdCreate("sluice-memory-image", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return nil, fmt.Errorf("cowmem: memfd_create: %w", err)
	}
	img.fd = fd
	if err := unix.Ftruncate(fd, int64(size)); err != nil {
		img.close()
		return nil, fmt.Errorf("cowmem: ftruncate: %w", err)
	}
	for off := 0; off < len(contents); {
		n, err := unix.Pwrite(fd, contents[off:], int64(off))
		if err != nil {
			img.close()
			return nil, fmt.Errorf("cowmem: writing image: %w", err)
		}
		off += n
	}
	// Sealed, the image can never change under the memories mapping it.
	seals := unix.F_SEAL_SHRINK | unix.F_SEAL_GROW | unix.F_SEAL_WRITE | unix.F_SEAL_SEAL
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, seals); err != nil {
		img.close()
		return nil, fmt.Errorf("cowmem: sealing image: %w", err)
	}
	if img.view, err = unix.Mmap(fd, 0, int(size), unix.PROT_READ, unix.MAP_SHARED); err != nil {
		img.close()
		return nil, fmt.Errorf("cowmem: mapping image: %w", err)
	}
	return img, nil
}

func (img *image) close() {
	if img.view != nil {
		_ = unix.Munmap(img.view)
		img.view = nil
	}
	if img.fd >= 0 {
		_ = unix.Close(img.fd)
		img.fd = -1
	}
}

// osMemory is empty on Linux: the mapping is all there is.
type osMemory struct{}

// mapMemory reserves reserve bytes of private, zero-filled address space and
// maps the image privately over its start.
func (img *image) mapMemory(reserve uint64) (*Memory, error) {
	reserve = max((reserve+pageSize-1)/pageSize*pageSize, pageSize)
	buf, err := unix.Mmap(-1, 0, int(reserve), unix.PROT_READ|unix.PROT_WRITE,
		unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_NORESERVE)
	if err != nil {
		return nil, fmt.Errorf("cowmem: reserving %d bytes: %w", reserve, err)
	}
	// Where transparent huge pages are always on, a write past the image
	// would fault in (and a reset drop) 2 MiB of zeros.
	_ = unix.Madvise(buf, unix.MADV_NOHUGEPAGE)
	if img.size > 0 {
		_, _, errno := unix.Syscall6(unix.SYS_MMAP, uintptr(unsafe.Pointer(&buf[0])), uintptr(img.size),
			unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_FIXED, uintptr(img.fd), 0)
		if errno != 0 {
			_ = unix.Munmap(buf)
			return nil, fmt.Errorf("cowmem: mapping image: %w", errno)
		}
	}
	return &Memory{buf: buf}, nil
}

// dropPages drops the pages the memory wrote: the image part reads the image
// again, the rest reads zeros.
func (m *Memory) dropPages() error {
	if m.high > 0 {
		length := (m.high + pageSize - 1) / pageSize * pageSize
		if err := unix.Madvise(m.buf[:length], unix.MADV_DONTNEED); err != nil {
			return err
		}
	}
	m.high = 0
	return nil
}

func (m *Memory) release() { _ = unix.Munmap(m.buf) }

// pagemap is /proc/self/pagemap, or nil where it cannot be read.
var pagemap = sync.OnceValue(func() *os.File {
	f, err := os.Open("/proc/self/pagemap")
	if err != nil {
		return nil
	}
	return f
})

// Flags of a pagemap entry (see the kernel's admin-guide/mm/pagemap).
const (
	pmPresent   = 1 << 63
	pmSwapped   = 1 << 62
	pmFile      = 1 << 61 // a page of the file (the image, unwritten), or shared
	pmExclusive = 1 << 56 // mapped only here
)

// restoreWritten resets the memory by copying the image back over the
// pages it wrote, and zeros over those it wrote past the image, keeping them
// resident. The kernel's page table tells which they are: a page the memory
// wrote is its own anonymous copy, where one it only read is the image's
// page or the shared zero page. It reports false, leaving the caller to drop
// the pages, when it cannot tell (no pagemap, a page swapped out or
// migrating) or when more than maxPages were written.
func (m *Memory) restoreWritten(img *image, maxPages int) bool {
	f := pagemap()
	if f == nil {
		return false
	}
	if !noPagemapScan.Load() {
		if restored, ok := m.scanWritten(f, img, maxPages); ok {
			return restored
		}
		noPagemapScan.Store(true)
	}
	return m.readWritten(f, img, maxPages)
}

// restoreRun copies the image back over buf[from:to] and zeros over what
// lies past the image.
func (m *Memory) restoreRun(img *image, from, to uint64) {
	if from < img.size {
		copy(m.buf[from:min(to, img.size)], img.view[from:min(to, img.size)])
	}
	if to > img.size {
		clear(m.buf[max(from, img.size):to])
	}
}

// readWritten is restoreWritten for kernels without PAGEMAP_SCAN: it reads
// the /proc/self/pagemap entry of every page.
func (m *Memory) readWritten(f *os.File, img *image, maxPages int) bool {
	pages := int((m.high + pageSize - 1) / pageSize)
	offset := int64(uintptr(unsafe.Pointer(&m.buf[0])) / uintptr(pageSize) * 8)
	var entries [512 * 8]byte
	restored := 0
	for first := 0; first < pages; first += 512 {
		n := min(512, pages-first)
		if _, err := f.ReadAt(entries[:n*8], offset+int64(first)*8); err != nil {
			return false
		}
		for i := range n {
			e := binary.LittleEndian.Uint64(entries[i*8:])
			if e&pmSwapped != 0 {
				return false // the page's contents are elsewhere
			}
			if e&pmPresent == 0 || e&pmFile != 0 {
				continue // never written
			}
			at := uint64(first+i) * pageSize
			// Not exclusive: the shared zero page, or a page the kernel
			// merged (KSM). Writing it would copy it: compare first.
			if e&pmExclusive == 0 && m.holdsImage(img, at) {
				continue
			}
			if restored++; restored > maxPages {
				return false
			}
			m.restoreRun(img, at, at+pageSize)
		}
	}
	return true
}

// holdsImage reports whether the page at at holds what the image (or the
// zeros past it) holds there.
func (m *Memory) holdsImage(img *image, at uint64) bool {
	page := m.buf[at : at+pageSize]
	if at < img.size {
		return string(page) == string(img.view[at:at+pageSize])
	}
	for _, b := range page {
		if b != 0 {
			return false
		}
	}
	return true
}

// PAGEMAP_SCAN (Linux 6.7) finds the written pages for restoreWritten
// without reading an entry per page: the kernel reports only the runs of
// pages in the categories asked for (include/uapi/linux/fs.h).
const (
	pagemapScan   = 0xc0606610 // _IOWR('f', 16, struct pm_scan_arg)
	pageIsFile    = 1 << 2
	pageIsPresent = 1 << 3
	pageIsSwapped = 1 << 4
	pageIsPFNZero = 1 << 5
)

type pmScanArg struct {
	size, flags, start, end, walkEnd, vec, vecLen, maxPages   uint64
	categoryInverted, categoryMask, categoryAnyOf, returnMask uint64
}

type pageRegion struct{ start, end, categories uint64 }

// noPagemapScan is set once the kernel refused PAGEMAP_SCAN.
var noPagemapScan atomic.Bool

// regionBuffers hold what PAGEMAP_SCAN writes: on the heap, which does not
// move, since the kernel gets their address as a number.
var regionBuffers = sync.Pool{New: func() any { return new([64]pageRegion) }}

// scanWritten is restoreWritten through PAGEMAP_SCAN. ok is false when the
// kernel does not have it.
func (m *Memory) scanWritten(f *os.File, img *image, maxPages int) (restored, ok bool) {
	regions := regionBuffers.Get().(*[64]pageRegion)
	defer regionBuffers.Put(regions)
	base := uint64(uintptr(unsafe.Pointer(&m.buf[0])))
	end := base + (m.high+pageSize-1)/pageSize*pageSize
	count := uint64(0)
	for start := base; start < end; {
		arg := pmScanArg{
			size: uint64(unsafe.Sizeof(pmScanArg{})), start: start, end: end,
			vec: uint64(uintptr(unsafe.Pointer(regions))), vecLen: uint64(len(regions)),
			// Present or swapped, and not the image's page: a page this
			// memory wrote, or the zero page.
			categoryInverted: pageIsFile,
			categoryMask:     pageIsFile,
			categoryAnyOf:    pageIsPresent | pageIsSwapped,
			returnMask:       pageIsSwapped | pageIsPFNZero,
		}
		n, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), pagemapScan, uintptr(unsafe.Pointer(&arg)))
		if errno == unix.ENOTTY || errno == unix.EINVAL {
			return false, false
		}
		if errno != 0 || arg.walkEnd <= start {
			return false, true
		}
		// The zero page is what the memory holds past the image; within
		// it, only a page the kernel merged (KSM) after it was zeroed can
		// be the zero page, and it must get the image back.
		written := func(r pageRegion) (from, to uint64) {
			from, to = r.start-base, r.end-base
			if r.categories&pageIsPFNZero != 0 {
				to = min(to, max(from, img.size))
			}
			return from, to
		}
		for _, r := range regions[:n] {
			if r.categories&pageIsSwapped != 0 {
				return false, true // its contents are elsewhere
			}
			from, to := written(r)
			count += (to - from) / pageSize
		}
		if count > uint64(maxPages) {
			return false, true
		}
		for _, r := range regions[:n] {
			from, to := written(r)
			m.restoreRun(img, from, to)
		}
		start = arg.walkEnd
	}
	return true, true
}
