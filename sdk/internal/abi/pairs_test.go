package abi

import (
	"reflect"
	"testing"
)

func TestPairsRoundTrip(t *testing.T) {
	for _, pairs := range [][][2]string{
		{},
		{{"a", "b"}},
		{{":path", "/x"}, {"empty", ""}, {"", "no name"}, {"x-long", string(make([]byte, 300))}},
	} {
		got, ok := DecodePairs(EncodePairs(pairs))
		if !ok || !reflect.DeepEqual(got, pairs) {
			t.Errorf("round trip of %q: %q, %v", pairs, got, ok)
		}
	}
}

// The wire format is the one Proxy-Wasm hosts write: count, lengths, then
// NUL-terminated names and values.
func TestEncodePairsWireFormat(t *testing.T) {
	got := EncodePairs([][2]string{{"ab", "c"}})
	want := []byte{1, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 'a', 'b', 0, 'c', 0}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
}

func TestDecodePairsRejectsMalformedInput(t *testing.T) {
	good := EncodePairs([][2]string{{"name", "value"}})
	for name, buf := range map[string][]byte{
		"short":          {1, 0},
		"count too big":  {200, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 'a', 0, 'b', 0},
		"truncated":      good[:len(good)-1],
		"missing NUL":    append(append([]byte{}, good[:len(good)-1]...), 'x'),
		"length too big": {1, 0, 0, 0, 9, 0, 0, 0, 1, 0, 0, 0, 'a', 0, 'b', 0},
	} {
		if pairs, ok := DecodePairs(buf); ok {
			t.Errorf("%s: decoded %q", name, pairs)
		}
	}
	if pairs, ok := DecodePairs(nil); !ok || len(pairs) != 0 {
		t.Errorf("empty buffer: %q, %v", pairs, ok)
	}
}

func TestEncodePath(t *testing.T) {
	if got := string(EncodePath("request.path")); got != "request\x00path" {
		t.Errorf("got %q", got)
	}
	if got := EncodePath(""); got != nil {
		t.Errorf("empty path: %q", got)
	}
}
