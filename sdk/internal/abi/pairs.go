package abi

// EncodePairs serializes header pairs the way Proxy-Wasm passes maps: a
// count, the length of every name and value, then each name and value
// followed by a NUL.
func EncodePairs(pairs [][2]string) []byte {
	size := 4
	for _, p := range pairs {
		size += 8 + len(p[0]) + len(p[1]) + 2
	}
	buf := make([]byte, size)
	putUint32(buf, uint32(len(pairs)))
	lengths, data := buf[4:], buf[4+8*len(pairs):]
	for _, p := range pairs {
		putUint32(lengths, uint32(len(p[0])))
		putUint32(lengths[4:], uint32(len(p[1])))
		lengths = lengths[8:]
		n := copy(data, p[0])
		data[n] = 0
		data = data[n+1:]
		n = copy(data, p[1])
		data[n] = 0
		data = data[n+1:]
	}
	return buf
}

// DecodePairs parses a serialized map; ok is false if buf is malformed.
func DecodePairs(buf []byte) (pairs [][2]string, ok bool) {
	if len(buf) < 4 {
		return nil, len(buf) == 0
	}
	count := int(uint32At(buf))
	if count > (len(buf)-4)/10 { // each pair takes at least 8 bytes of lengths and 2 NULs
		return nil, false
	}
	lengths, data := buf[4:4+8*count], buf[4+8*count:]
	pairs = make([][2]string, count)
	for i := range pairs {
		for j := 0; j < 2; j++ {
			n := int(uint32At(lengths[8*i+4*j:]))
			if n >= len(data) || data[n] != 0 {
				return nil, false
			}
			pairs[i][j] = string(data[:n])
			data = data[n+1:]
		}
	}
	return pairs, true
}

// EncodePath serializes a dot-separated property path as Proxy-Wasm wants
// it: its segments joined by NULs.
func EncodePath(path string) []byte {
	if path == "" {
		return nil
	}
	buf := []byte(path)
	for i, c := range buf {
		if c == '.' {
			buf[i] = 0
		}
	}
	return buf
}

// putUint32 and uint32At are encoding/binary's little-endian helpers,
// written out because that package brings reflect into every filter.
func putUint32(b []byte, v uint32) {
	_ = b[3]
	b[0], b[1], b[2], b[3] = byte(v), byte(v>>8), byte(v>>16), byte(v>>24)
}

func uint32At(b []byte) uint32 {
	_ = b[3]
	return uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24
}
