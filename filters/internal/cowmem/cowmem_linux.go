//go:build linux

package cowmem

import (
	"fmt"
	"os"
	"strconv"
	"strings"
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
	return img, nil
}

func (img *image) close() {
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

// reset drops the pages the memory wrote: the image part reads the image
// again, the rest reads zeros.
func (m *Memory) reset() error {
	if m.high > 0 {
		length := (m.high + pageSize - 1) / pageSize * pageSize
		if err := unix.Madvise(m.buf[:length], unix.MADV_DONTNEED); err != nil {
			return err
		}
	}
	m.size, m.high = 0, 0
	return nil
}

func (m *Memory) release() { _ = unix.Munmap(m.buf) }
