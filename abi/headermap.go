package abi

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// ErrMalformedMap is returned (wrapped) for serialized header maps that do
// not follow the specification's layout. A malformed map is rejected whole.
var ErrMalformedMap = errors.New("malformed serialized header map")

// HeaderMapSize is the length of the serialized form of pairs.
//
// See https://github.com/proxy-wasm/spec/tree/main/abi-versions/v0.2.1#serialization
func HeaderMapSize(pairs [][2]string) int {
	n := 4 + 8*len(pairs)
	for _, p := range pairs {
		n += len(p[0]) + 1 + len(p[1]) + 1
	}
	return n
}

// AppendHeaderMap appends the serialized form of pairs to dst: the number of
// pairs, then each pair's key and value lengths, then each key and value
// followed by a NUL byte; integers are little-endian 32-bit.
func AppendHeaderMap(dst []byte, pairs [][2]string) []byte {
	dst = binary.LittleEndian.AppendUint32(dst, uint32(len(pairs)))
	for _, p := range pairs {
		dst = binary.LittleEndian.AppendUint32(dst, uint32(len(p[0])))
		dst = binary.LittleEndian.AppendUint32(dst, uint32(len(p[1])))
	}
	for _, p := range pairs {
		dst = append(dst, p[0]...)
		dst = append(dst, 0)
		dst = append(dst, p[1]...)
		dst = append(dst, 0)
	}
	return dst
}

// DecodeHeaderMap parses a serialized header map. An empty map may be empty
// input or a single NUL byte. Any count that runs past the end, a missing NUL
// terminator, trailing bytes, or more than maxPairs pairs is an error wrapping
// ErrMalformedMap, and no pairs are returned.
func DecodeHeaderMap(b []byte, maxPairs int) ([][2]string, error) {
	if len(b) == 0 || (len(b) == 1 && b[0] == 0) {
		return nil, nil
	}
	if len(b) < 4 {
		return nil, fmt.Errorf("%w: %d bytes is shorter than the pair count", ErrMalformedMap, len(b))
	}
	count := uint64(binary.LittleEndian.Uint32(b))
	if count > uint64(maxPairs) {
		return nil, fmt.Errorf("%w: %d pairs, limit %d", ErrMalformedMap, count, maxPairs)
	}
	sizesEnd := 4 + 8*count
	if sizesEnd > uint64(len(b)) {
		return nil, fmt.Errorf("%w: %d pairs need %d bytes of lengths, have %d", ErrMalformedMap, count, sizesEnd, len(b))
	}
	pairs := make([][2]string, count)
	data := sizesEnd // offset of the next key or value
	for i := range pairs {
		sizes := b[4+8*i:]
		for j, size := range [2]uint64{
			uint64(binary.LittleEndian.Uint32(sizes)),
			uint64(binary.LittleEndian.Uint32(sizes[4:])),
		} {
			end := data + size // fits: both terms are below 2^33
			if end >= uint64(len(b)) {
				return nil, fmt.Errorf("%w: pair %d runs past the end", ErrMalformedMap, i)
			}
			if b[end] != 0 {
				return nil, fmt.Errorf("%w: pair %d is not NUL-terminated", ErrMalformedMap, i)
			}
			pairs[i][j] = string(b[data:end])
			data = end + 1
		}
	}
	if data != uint64(len(b)) {
		return nil, fmt.Errorf("%w: %d trailing bytes", ErrMalformedMap, uint64(len(b))-data)
	}
	return pairs, nil
}
