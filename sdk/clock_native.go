//go:build !wasip1

package sdk

import "time"

// Now is the real time in Unix nanoseconds (natively, for tests; see the
// wasip1 version).
func Now() int64 { return time.Now().UnixNano() }
