package abi

import (
	"bytes"
	"encoding/binary"
	"errors"
	"reflect"
	"testing"
)

// buildMap serializes a map by hand (independently of AppendHeaderMap): the
// count, the given raw lengths, then the given raw data.
func buildMap(count uint32, sizes []uint32, data []byte) []byte {
	b := binary.LittleEndian.AppendUint32(nil, count)
	for _, s := range sizes {
		b = binary.LittleEndian.AppendUint32(b, s)
	}
	return append(b, data...)
}

func TestHeaderMapRoundTrip(t *testing.T) {
	binaryKey := string([]byte{0x00, 0xff, 0x80, '\r', '\n', 0x7f})
	many := make([][2]string, 100)
	for i := range many {
		many[i] = [2]string{string(rune('a' + i%26)), string(bytes.Repeat([]byte{'v'}, i))}
	}
	for _, tc := range []struct {
		name  string
		pairs [][2]string
	}{
		{"empty", [][2]string{}},
		{"one pair", [][2]string{{"content-type", "text/plain"}}},
		{"many pairs keep order and duplicates", append([][2]string{{"x", "1"}, {"x", "2"}}, many...)},
		{"empty key and value", [][2]string{{"", ""}, {"k", ""}, {"", "v"}}},
		{"binary bytes including NUL", [][2]string{{binaryKey, binaryKey + "\x00"}}},
		{"pseudo-headers", [][2]string{{":path", "/"}, {":method", "GET"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			enc := AppendHeaderMap(nil, tc.pairs)
			if got := HeaderMapSize(tc.pairs); got != len(enc) {
				t.Errorf("HeaderMapSize = %d, len(AppendHeaderMap) = %d", got, len(enc))
			}
			dec, err := DecodeHeaderMap(enc, len(tc.pairs))
			if err != nil {
				t.Fatalf("DecodeHeaderMap(%x): %v", enc, err)
			}
			if len(dec) != len(tc.pairs) || (len(dec) > 0 && !reflect.DeepEqual(dec, tc.pairs)) {
				t.Errorf("round trip = %q, want %q", dec, tc.pairs)
			}
		})
	}
}

func TestAppendHeaderMapAppendsToDst(t *testing.T) {
	prefix := []byte("prefix")
	got := AppendHeaderMap(append([]byte(nil), prefix...), [][2]string{{"a", "b"}})
	if !bytes.HasPrefix(got, prefix) {
		t.Fatalf("AppendHeaderMap dropped dst: %q", got)
	}
	if want := buildMap(1, []uint32{1, 1}, []byte("a\x00b\x00")); !bytes.Equal(got[len(prefix):], want) {
		t.Errorf("encoding = %x, want %x", got[len(prefix):], want)
	}
}

// TestHeaderMapSpecExample uses the example of the specification's
// Serialization section. The spec prints the value bytes as 0x49 and 0x50,
// which are the decimal codes of '1' and '2' (0x31, 0x32): the map holds
// "1" and "22", so those are the bytes here.
func TestHeaderMapSpecExample(t *testing.T) {
	pairs := [][2]string{{"a", "1"}, {"b", "22"}}
	want := []byte{
		0x02, 0, 0, 0,
		0x01, 0, 0, 0, 0x01, 0, 0, 0, 0x01, 0, 0, 0, 0x02, 0, 0, 0,
		0x61, 0x00, 0x31, 0x00, 0x62, 0x00, 0x32, 0x32, 0x00,
	}
	if got := AppendHeaderMap(nil, pairs); !bytes.Equal(got, want) {
		t.Errorf("AppendHeaderMap = %x, want %x", got, want)
	}
	if got := HeaderMapSize(pairs); got != len(want) {
		t.Errorf("HeaderMapSize = %d, want %d", got, len(want))
	}
	got, err := DecodeHeaderMap(want, 10)
	if err != nil || !reflect.DeepEqual(got, pairs) {
		t.Errorf("DecodeHeaderMap = %q, %v; want %q", got, err, pairs)
	}
}

func TestDecodeHeaderMapEmptyEncodings(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   []byte
	}{
		{"size 0", nil},
		{"size 0, non-nil", []byte{}},
		{"single NUL byte", []byte{0}},
		{"count 0", []byte{0, 0, 0, 0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// maxPairs 0: an empty map must be accepted even when no pair is.
			got, err := DecodeHeaderMap(tc.in, 0)
			if err != nil {
				t.Fatalf("DecodeHeaderMap(%x): %v", tc.in, err)
			}
			if len(got) != 0 {
				t.Errorf("DecodeHeaderMap(%x) = %q, want no pairs", tc.in, got)
			}
		})
	}
}

func TestDecodeHeaderMapRejectsMalformed(t *testing.T) {
	valid := buildMap(1, []uint32{1, 1}, []byte("a\x00b\x00"))
	tooMany := AppendHeaderMap(nil, make([][2]string, 5))
	for _, tc := range []struct {
		name     string
		in       []byte
		maxPairs int
	}{
		{"one non-NUL byte", []byte{1}, 10},
		{"shorter than the count", []byte{0, 0, 0}, 10},
		{"two NUL bytes", []byte{0, 0}, 10},
		{"count past the end", buildMap(2, []uint32{1, 1}, []byte("a\x00b\x00")), 10},
		{"count 1 and nothing else", buildMap(1, nil, nil), 10},
		{"huge count", buildMap(0xffffffff, []uint32{0, 0}, []byte{0, 0}), 1 << 40},
		{"count*8 wraps in 32 bits", buildMap(0x20000000, []uint32{0, 0}, []byte{0, 0}), 1 << 40},
		{"count just past maxPairs", tooMany, 4},
		{"count past maxPairs with no data", buildMap(1<<20, nil, nil), MaxHeaderPairs},
		{"missing NUL after key", buildMap(1, []uint32{1, 1}, []byte("aXb\x00")), 10},
		{"missing NUL after value", buildMap(1, []uint32{1, 1}, []byte("a\x00bX")), 10},
		{"missing final NUL", buildMap(1, []uint32{1, 1}, []byte("a\x00b")), 10},
		{"no terminators at all", buildMap(1, []uint32{1, 1}, []byte("ab")), 10},
		{"trailing byte", append(append([]byte(nil), valid...), 0), 10},
		{"trailing bytes after count 0", []byte{0, 0, 0, 0, 0}, 10},
		{"key length past the end", buildMap(1, []uint32{100, 1}, []byte("a\x00b\x00")), 10},
		{"value length past the end", buildMap(1, []uint32{1, 100}, []byte("a\x00b\x00")), 10},
		{"key length 0xffffffff", buildMap(1, []uint32{0xffffffff, 1}, []byte("a\x00b\x00")), 10},
		{"value length 0xffffffff", buildMap(1, []uint32{1, 0xffffffff}, []byte("a\x00b\x00")), 10},
		{"both lengths 0xffffffff", buildMap(1, []uint32{0xffffffff, 0xffffffff}, []byte("a\x00b\x00")), 10},
		{"lengths summing to 2^32", buildMap(2, []uint32{0x80000000, 0x80000000, 0, 0}, []byte{0, 0, 0, 0}), 10},
		{"second pair malformed", buildMap(2, []uint32{1, 1, 1, 5}, []byte("a\x00b\x00c\x00d\x00")), 10},
		{"lengths shorter than the data", buildMap(1, []uint32{0, 0}, []byte("a\x00b\x00")), 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := DecodeHeaderMap(tc.in, tc.maxPairs)
			if !errors.Is(err, ErrMalformedMap) {
				t.Errorf("DecodeHeaderMap(%x) error = %v, want one wrapping ErrMalformedMap", tc.in, err)
			}
			if got != nil {
				t.Errorf("DecodeHeaderMap(%x) returned pairs %q with the error; want none", tc.in, got)
			}
		})
	}
}

func TestDecodeHeaderMapMaxPairsBoundary(t *testing.T) {
	in := AppendHeaderMap(nil, [][2]string{{"a", "1"}, {"b", "2"}, {"c", "3"}})
	if _, err := DecodeHeaderMap(in, 3); err != nil {
		t.Errorf("exactly maxPairs pairs refused: %v", err)
	}
	if _, err := DecodeHeaderMap(in, 2); !errors.Is(err, ErrMalformedMap) {
		t.Errorf("maxPairs+1 pairs: error %v, want ErrMalformedMap", err)
	}
}

// TestDecodeHeaderMapCopies checks that decoded strings do not alias the
// input: guest memory can change after the host call.
func TestDecodeHeaderMapCopies(t *testing.T) {
	in := AppendHeaderMap(nil, [][2]string{{"key", "value"}})
	got, err := DecodeHeaderMap(in, 1)
	if err != nil {
		t.Fatal(err)
	}
	for i := range in {
		in[i] = 'X'
	}
	if got[0] != [2]string{"key", "value"} {
		t.Errorf("decoded pair changed with its input: %q", got[0])
	}
}

func FuzzDecodeHeaderMap(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{0})
	f.Add([]byte{0, 0, 0, 0})
	f.Add(AppendHeaderMap(nil, [][2]string{{"a", "1"}, {"b", "22"}}))
	f.Add(AppendHeaderMap(nil, [][2]string{{"", ""}}))
	f.Add(buildMap(1, []uint32{0xffffffff, 1}, []byte("a\x00b\x00")))
	f.Add(buildMap(0xffffffff, nil, nil))
	f.Fuzz(func(t *testing.T, in []byte) {
		pairs, err := DecodeHeaderMap(in, 64)
		if err != nil {
			if !errors.Is(err, ErrMalformedMap) {
				t.Fatalf("error %v does not wrap ErrMalformedMap", err)
			}
			if pairs != nil {
				t.Fatalf("pairs %q returned with error %v", pairs, err)
			}
			return
		}
		if len(pairs) > 64 {
			t.Fatalf("%d pairs decoded, limit 64", len(pairs))
		}
		out := AppendHeaderMap(nil, pairs)
		if HeaderMapSize(pairs) != len(out) {
			t.Fatalf("HeaderMapSize %d != encoded length %d", HeaderMapSize(pairs), len(out))
		}
		if len(in) == 0 || (len(in) == 1 && in[0] == 0) { // the canonical empty maps
			if len(pairs) != 0 {
				t.Fatalf("empty encoding %x decoded to %q", in, pairs)
			}
			return
		}
		if !bytes.Equal(out, in) {
			t.Fatalf("re-encoding %q gives %x, want the input %x", pairs, out, in)
		}
	})
}
