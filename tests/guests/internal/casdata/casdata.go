// Package casdata updates Proxy-Wasm shared data with compare-and-swap,
// for the test filters that keep counters and values there.
package casdata

import (
	"errors"
	"fmt"
	"strconv"

	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm"
	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm/types"
)

// maxAttempts bounds each compare-and-swap loop.
const maxAttempts = 64

// Update replaces the shared-data value under key with next(old value),
// retrying when another writer got there first.
func Update(key string, next func(old []byte) []byte) error {
	for attempt := 0; attempt < maxAttempts; attempt++ {
		old, cas, err := proxywasm.GetSharedData(key)
		if errors.Is(err, types.ErrorStatusNotFound) {
			old, cas, err = nil, 0, nil
		}
		if err != nil {
			return fmt.Errorf("get %q: %w", key, err)
		}
		err = proxywasm.SetSharedData(key, next(old), cas)
		if err == nil {
			return nil
		}
		if !errors.Is(err, types.ErrorStatusCasMismatch) {
			return fmt.Errorf("set %q: %w", key, err)
		}
	}
	return fmt.Errorf("set %q: cas retries exhausted", key)
}

// PlusOne increments a decimal counter; a value that is not a decimal
// number is logged and counted from 0.
func PlusOne(old []byte) []byte {
	var n uint64
	if len(old) > 0 {
		var err error
		if n, err = strconv.ParseUint(string(old), 10, 64); err != nil {
			proxywasm.LogErrorf("%q is not a decimal number: counting from 0", old)
			n = 0
		}
	}
	return []byte(strconv.FormatUint(n+1, 10))
}
