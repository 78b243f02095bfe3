package filters

import (
	"bytes"
	"compress/zlib"
	"io"

	"github.com/sluice-edge/sluice/abi"
)

// foreignFunction is a host function filters call by name with
// proxy_call_foreign_function. limit bounds what it may return.
type foreignFunction func(args []byte, limit int64) ([]byte, abi.Status)

// foreignFunctions are the ones Sluice offers: Envoy's "compress" and
// "uncompress" (zlib), so that filters written for Envoy that use them run
// unchanged, and because compressing in the host is many times faster than
// in a Wasm guest. Their inputs and outputs are bounded by max_body_size.
var foreignFunctions = map[string]foreignFunction{
	"compress":   compress,
	"uncompress": uncompress,
}

func compress(args []byte, limit int64) ([]byte, abi.Status) {
	if int64(len(args)) > limit {
		return nil, abi.StatusBadArgument
	}
	var out bytes.Buffer
	w := zlib.NewWriter(&out)
	_, _ = w.Write(args) // writes to a bytes.Buffer cannot fail
	_ = w.Close()
	return out.Bytes(), abi.StatusOK
}

// uncompress inflates zlib data, refusing output past limit (a small input
// may claim gigabytes).
func uncompress(args []byte, limit int64) ([]byte, abi.Status) {
	r, err := zlib.NewReader(bytes.NewReader(args))
	if err != nil {
		return nil, abi.StatusSerializationFailure
	}
	out, err := io.ReadAll(io.LimitReader(r, limit+1))
	switch {
	case err != nil:
		return nil, abi.StatusSerializationFailure
	case int64(len(out)) > limit:
		return nil, abi.StatusBadArgument
	}
	return out, abi.StatusOK
}
