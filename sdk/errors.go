package sdk

import "github.com/sluice-edge/sluice/sdk/internal/abi"

// Error is a status the host returned for a call that did not succeed.
// Compare with the Err values: errors.Is(err, sdk.ErrNotFound).
type Error uint32

// The statuses a filter can act on.
const (
	ErrNotFound    = Error(abi.NotFound)        // no such header, property, key or upstream
	ErrBadArgument = Error(abi.BadArgument)     // the host refused the arguments (e.g. an undeclared upstream)
	ErrCASMismatch = Error(abi.CASMismatch)     // shared data changed since it was read
	ErrUnsupported = Error(abi.Unimplemented)   // the host does not have this function
	ErrInternal    = Error(abi.InternalFailure) // the host failed, or the call is not allowed now
)

func (e Error) Error() string {
	switch abi.Status(e) {
	case abi.NotFound:
		return "sluice: not found"
	case abi.BadArgument:
		return "sluice: bad argument"
	case abi.SerializationFailure:
		return "sluice: serialization failure"
	case abi.ParseFailure:
		return "sluice: parse failure"
	case abi.Empty:
		return "sluice: empty"
	case abi.CASMismatch:
		return "sluice: compare-and-swap mismatch"
	case abi.InternalFailure:
		return "sluice: internal failure"
	case abi.Unimplemented:
		return "sluice: unimplemented"
	}
	return "sluice: host status " + itoa(int(e))
}

// errorOf is nil for OK and the status as an Error otherwise.
func errorOf(s abi.Status) error {
	if s == abi.OK {
		return nil
	}
	return Error(s)
}

// itoa formats n without strconv or fmt, which would grow every filter.
func itoa(n int) string {
	if n == 0 {
		return "0"
	}
	var buf [20]byte
	i := len(buf)
	neg := n < 0
	if neg {
		n = -n
	}
	for n > 0 {
		i--
		buf[i] = byte('0' + n%10)
		n /= 10
	}
	if neg {
		i--
		buf[i] = '-'
	}
	return string(buf[i:])
}
