//go:build !wasip1

package sdk

import (
	"crypto/rand"
	"time"
)

// Now is the real time in Unix nanoseconds (natively, for tests; see the
// wasip1 version).
func Now() int64 { return time.Now().UnixNano() }

// RandomBytes fills b with the operating system's randomness (natively,
// for tests; see the wasip1 version).
func RandomBytes(b []byte) error {
	_, err := rand.Read(b)
	return err
}
