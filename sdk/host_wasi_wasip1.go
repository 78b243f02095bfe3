//go:build wasip1

package sdk

// The WASI functions a filter needs most, called directly: package time
// and crypto/rand would bring their own weight into every module.

// Now is the real time in Unix nanoseconds, from WASI's clock (the host's
// real clock, read per request in Sluice), or 0 if the host refused. Use it
// instead of time.Now: package time's initialization adds 270 KB to a
// filter that imports it.
func Now() int64 {
	var t uint64
	if clockTimeGet(clockRealtime, 1, &t) != 0 {
		return 0
	}
	return int64(t)
}

const clockRealtime = 0 // WASI's CLOCKID_REALTIME

//go:wasmimport wasi_snapshot_preview1 clock_time_get
//go:noescape
func clockTimeGet(id uint32, precision uint64, time *uint64) uint32

// RandomBytes fills b with the host's randomness (WASI's random_get; Sluice
// answers it from the operating system for every call). Use it instead of
// crypto/rand, which adds 580 KB to a filter, and never math/rand's global
// source, which Sluice's snapshot freezes.
func RandomBytes(b []byte) error {
	if len(b) == 0 {
		return nil
	}
	if errno := randomGet(&b[0], uint32(len(b))); errno != 0 {
		return simpleError("random_get: WASI errno " + itoa(int(errno)))
	}
	return nil
}

//go:wasmimport wasi_snapshot_preview1 random_get
//go:noescape
func randomGet(buf *byte, size uint32) uint32
