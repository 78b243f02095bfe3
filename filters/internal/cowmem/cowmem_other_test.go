//go:build !linux

package cowmem

// pagemapReadable reports whether resets can tell the pages a memory wrote:
// only Linux can.
func pagemapReadable() bool { return false }
