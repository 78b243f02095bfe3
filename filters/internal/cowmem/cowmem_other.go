//go:build !linux

package cowmem

// image holds the contents every memory starts as; without memfd and
// private file mappings, each memory copies it.
type image struct {
	contents []byte
	size     uint64
}

const pageSize = 64 << 10

// maxMapCount is unlimited: memories are plain allocations here.
func maxMapCount() int { return 1 << 40 }

func newImage(contents []byte) (*image, error) {
	size := (uint64(len(contents)) + pageSize - 1) / pageSize * pageSize
	padded := make([]byte, size)
	copy(padded, contents)
	return &image{contents: padded, size: size}, nil
}

func (img *image) close() {}

// osMemory remembers the image, to reset a memory by copying it again.
type osMemory struct{ image *image }

func (img *image) mapMemory(reserve uint64) (*Memory, error) {
	buf := make([]byte, reserve)
	copy(buf, img.contents)
	return &Memory{buf: buf, osMemory: osMemory{image: img}}, nil
}

func (m *Memory) dropPages() error {
	clear(m.buf[:m.high])
	copy(m.buf, m.image.contents)
	m.high = 0
	return nil
}

func (m *Memory) release() { m.buf = nil }

// restoreWritten is Linux's; here every reset copies (see dropPages).
func (m *Memory) restoreWritten(*image, int) bool { return false }
