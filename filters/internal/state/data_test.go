package state

import (
	"errors"
	"math"
	"strings"
	"sync"
	"testing"
	"unsafe"
)

// get is GetData for tests, failing on an error other than ErrNotFound.
func get(t *testing.T, s *Store, ns, key string) (string, uint32, bool) {
	t.Helper()
	v, cas, err := s.GetData(ns, key)
	if errors.Is(err, ErrNotFound) {
		return "", 0, false
	}
	if err != nil {
		t.Fatalf("GetData(%q, %q): %v", ns, key, err)
	}
	return string(v), cas, true
}

func set(t *testing.T, s *Store, ns, key, value string, cas uint32) {
	t.Helper()
	if err := s.SetData(ns, key, []byte(value), cas); err != nil {
		t.Fatalf("SetData(%q, %q, %q, %d): %v", ns, key, value, cas, err)
	}
}

// nsBytes is the bytes namespace ns is charged for.
func nsBytes(s *Store, ns string) int64 {
	n := s.namespaces.get(ns)
	if n == nil {
		return 0
	}
	n.mu.RLock()
	defer n.mu.RUnlock()
	return n.bytes
}

func TestZeroLimitsTakeTheDefaults(t *testing.T) {
	if got := NewStore(Limits{}).Limits(); got != DefaultLimits {
		t.Fatalf("Limits() = %+v, want %+v", got, DefaultLimits)
	}
	want := DefaultLimits
	want.MaxKeys, want.MaxBytes = 3, 100
	if got := NewStore(Limits{MaxKeys: 3, MaxBytes: 100, MaxQueues: -1}).Limits(); got != want {
		t.Fatalf("Limits() = %+v, want %+v", got, want)
	}
}

func TestGetDataOfAnUnknownKeyIsNotFound(t *testing.T) {
	s := NewStore(Limits{})
	if _, _, err := s.GetData("ns", "k"); err != ErrNotFound {
		t.Fatalf("unknown namespace: err %v, want ErrNotFound", err)
	}
	set(t, s, "ns", "other", "v", 0)
	if _, _, err := s.GetData("ns", "k"); err != ErrNotFound {
		t.Fatalf("unknown key: err %v, want ErrNotFound", err)
	}
}

// The CAS rules of Proxy-Wasm, step by step on one key. A step's cas is
// symbolic: the key's current cas, an older one, or a fixed number.
func TestSetDataCompareAndSwap(t *testing.T) {
	const (
		current = iota // the cas GetData returns now
		stale          // the cas the key had before the last set
		zero           // 0: no cas
		bogus          // a number no set gave
	)
	type step struct {
		value   string
		cas     int
		wantErr error
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"a new key ignores cas", []step{{"a", bogus, nil}}},
		{"a new key with no cas", []step{{"a", zero, nil}}},
		{"no cas overwrites", []step{{"a", zero, nil}, {"b", zero, nil}, {"c", zero, nil}}},
		{"the current cas overwrites", []step{{"a", zero, nil}, {"b", current, nil}, {"c", current, nil}}},
		{"a stale cas is refused", []step{{"a", zero, nil}, {"b", zero, nil}, {"c", stale, ErrCASMismatch}}},
		{"a bogus cas is refused", []step{{"a", zero, nil}, {"b", bogus, ErrCASMismatch}}},
		{"after a refusal the current cas still works", []step{{"a", zero, nil}, {"b", bogus, ErrCASMismatch}, {"c", current, nil}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := NewStore(Limits{})
			var casNow, casBefore uint32
			want := ""
			for i, st := range tt.steps {
				cas := map[int]uint32{current: casNow, stale: casBefore, zero: 0, bogus: 0xdead}[st.cas]
				err := s.SetData("ns", "k", []byte(st.value), cas)
				if err != st.wantErr {
					t.Fatalf("step %d: SetData(%q, cas %d): err %v, want %v", i, st.value, cas, err, st.wantErr)
				}
				if err == nil {
					want = st.value
				}
				v, got, ok := get(t, s, "ns", "k")
				switch {
				case !ok:
					t.Fatalf("step %d: key not found", i)
				case v != want:
					t.Fatalf("step %d: value %q, want %q", i, v, want)
				case got == 0:
					t.Fatalf("step %d: cas 0", i)
				case err == nil && got == casNow:
					t.Fatalf("step %d: a successful set kept cas %d", i, got)
				case err != nil && got != casNow:
					t.Fatalf("step %d: a refused set changed cas %d to %d", i, casNow, got)
				}
				if err == nil {
					casBefore, casNow = casNow, got
				}
			}
		})
	}
}

// The cas counter wraps past 2^32 and skips 0, which means "no cas".
func TestCASIsNeverZeroWhenTheCounterWraps(t *testing.T) {
	s := NewStore(Limits{})
	set(t, s, "ns", "k", "v", 0)
	s.namespaces.get("ns").cas = math.MaxUint32 - 1
	var seen []uint32
	for range 3 {
		set(t, s, "ns", "k", "v", 0)
		_, cas, _ := get(t, s, "ns", "k")
		seen = append(seen, cas)
	}
	want := []uint32{math.MaxUint32, 1, 2}
	for i := range want {
		if seen[i] != want[i] {
			t.Fatalf("cas values %v, want %v", seen, want)
		}
	}
	// The cas after the wrap works as any other.
	if err := s.SetData("ns", "k", []byte("w"), 2); err != nil {
		t.Fatalf("set with cas 2: %v", err)
	}
	if err := s.SetData("ns", "k", []byte("w"), math.MaxUint32); err != ErrCASMismatch {
		t.Fatalf("set with the pre-wrap cas: err %v, want ErrCASMismatch", err)
	}
}

func TestSetDataCopiesAndNeverWritesAReturnedValue(t *testing.T) {
	s := NewStore(Limits{})
	in := []byte("first")
	if err := s.SetData("ns", "k", in, 0); err != nil {
		t.Fatal(err)
	}
	copy(in, "XXXXX")
	got, _, _ := s.GetData("ns", "k")
	if string(got) != "first" {
		t.Fatalf("value %q after the caller changed its slice, want %q", got, "first")
	}
	set(t, s, "ns", "k", "again", 0)
	if string(got) != "first" {
		t.Fatalf("a value returned earlier became %q after a set", got)
	}
}

func TestEmptyKeysAndValuesAreAllowed(t *testing.T) {
	s := NewStore(Limits{})
	set(t, s, "ns", "", "", 0)
	v, cas, err := s.GetData("ns", "")
	if err != nil || v == nil || len(v) != 0 || cas == 0 {
		t.Fatalf("GetData of the empty key = %q (nil %v), cas %d, err %v; want an empty value", v, v == nil, cas, err)
	}
}

// The store keeps copies of keys and namespace names: a caller may pass
// strings aliasing memory it then reuses (a guest's linear memory).
func TestKeysMayAliasTheCallersMemory(t *testing.T) {
	s := NewStore(Limits{})
	buf := []byte("ns/key")
	ns := unsafe.String(&buf[0], 2)
	key := unsafe.String(&buf[3], 3)
	if err := s.SetData(ns, key, []byte("v1"), 0); err != nil {
		t.Fatal(err)
	}
	// A second set of the existing key must not store the aliasing string.
	if err := s.SetData(ns, key, []byte("v2"), 0); err != nil {
		t.Fatal(err)
	}
	copy(buf, "XX/YYY")
	if v, _, ok := get(t, s, "ns", "key"); !ok || v != "v2" {
		t.Fatalf("after the caller's memory changed: %q, found %v; want %q", v, ok, "v2")
	}
	if _, _, ok := get(t, s, "XX", "YYY"); ok {
		t.Fatal("the key changed with the caller's memory")
	}
}

func TestNamespacesDoNotShareData(t *testing.T) {
	s := NewStore(Limits{MaxKeys: 1})
	set(t, s, "a", "k", "in a", 0)
	if _, _, ok := get(t, s, "b", "k"); ok {
		t.Fatal("namespace b sees a's key")
	}
	set(t, s, "b", "k", "in b", 0) // a's key count is not b's
	_, casA, _ := get(t, s, "a", "k")
	// Each namespace counts its own cas: one namespace cannot observe the
	// sets of another through the numbers it gets.
	set(t, s, "b", "k", "in b again", 0)
	set(t, s, "b", "k", "in b again", 0)
	set(t, s, "a", "k", "in a", casA)
	if _, cas, _ := get(t, s, "a", "k"); cas != casA+1 {
		t.Fatalf("a's cas went from %d to %d: it counts b's sets", casA, cas)
	}
	if v, _, _ := get(t, s, "a", "k"); v != "in a" {
		t.Fatalf("a's value is %q", v)
	}
	if v, _, _ := get(t, s, "b", "k"); v != "in b again" {
		t.Fatalf("b's value is %q", v)
	}
}

// Every data limit at its exact boundary: at the limit is accepted, one
// past it refused, and a refusal changes nothing.
func TestDataLimits(t *testing.T) {
	lim := Limits{MaxKeySize: 8, MaxValueSize: 16, MaxKeys: 3, MaxBytes: 40}
	type op struct {
		key     string
		size    int // of the value
		wantErr error
	}
	tests := []struct {
		name string
		ops  []op
	}{
		{"key at MaxKeySize", []op{{strings.Repeat("k", 8), 1, nil}}},
		{"key over MaxKeySize", []op{{strings.Repeat("k", 9), 1, ErrTooLarge}}},
		{"value at MaxValueSize", []op{{"k", 16, nil}}},
		{"value over MaxValueSize", []op{{"k", 17, ErrTooLarge}}},
		{"replacing with a value over MaxValueSize", []op{{"k", 1, nil}, {"k", 17, ErrTooLarge}}},
		{"MaxKeys keys", []op{{"a", 0, nil}, {"b", 0, nil}, {"c", 0, nil}}},
		{"a key past MaxKeys", []op{{"a", 0, nil}, {"b", 0, nil}, {"c", 0, nil}, {"d", 0, ErrQuota}}},
		{"replacing at MaxKeys", []op{{"a", 0, nil}, {"b", 0, nil}, {"c", 0, nil}, {"c", 5, nil}}},
		// 3 keys of 1 byte: 3 + 16 + 16 + 5 = 40 bytes.
		{"exactly MaxBytes", []op{{"a", 16, nil}, {"b", 16, nil}, {"c", 5, nil}}},
		{"one byte past MaxBytes", []op{{"a", 16, nil}, {"b", 16, nil}, {"c", 6, ErrQuota}}},
		{"a replacement counts the new size minus the old", []op{{"a", 16, nil}, {"b", 16, nil}, {"c", 5, nil}, {"a", 10, nil}, {"c", 11, nil}}},
		{"a replacement past MaxBytes", []op{{"a", 16, nil}, {"b", 16, nil}, {"c", 5, nil}, {"c", 6, ErrQuota}}},
		{"shrinking frees bytes", []op{{"a", 16, nil}, {"b", 16, nil}, {"a", 0, nil}, {"c", 16, nil}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := NewStore(lim)
			want := map[string]string{} // the store's contents, as they should be
			for i, o := range tt.ops {
				value := strings.Repeat(string(rune('0'+i)), o.size)
				_, casBefore, _ := get(t, s, "ns", o.key)
				err := s.SetData("ns", o.key, []byte(value), 0)
				if err != o.wantErr {
					t.Fatalf("op %d: SetData(%q, %d bytes): err %v, want %v", i, o.key, o.size, err, o.wantErr)
				}
				if err == nil {
					want[o.key] = value
				} else if _, cas, _ := get(t, s, "ns", o.key); cas != casBefore {
					t.Fatalf("op %d: a refused set changed cas %d to %d", i, casBefore, cas)
				}
				var wantBytes int64
				for k, v := range want {
					if got, _, ok := get(t, s, "ns", k); !ok || got != v {
						t.Fatalf("op %d: %q = %q (found %v), want %q", i, k, got, ok, v)
					}
					wantBytes += int64(len(k) + len(v))
				}
				if got := nsBytes(s, "ns"); got != wantBytes {
					t.Fatalf("op %d: namespace charged %d bytes, want %d", i, got, wantBytes)
				}
				if n := s.namespaces.get("ns"); n != nil && len(n.data) != len(want) {
					t.Fatalf("op %d: %d keys, want %d", i, len(n.data), len(want))
				}
			}
		})
	}
}

// Many goroutines incrementing one counter with CAS, retrying on a
// mismatch, must end with the exact total: no update lost, none doubled.
func TestConcurrentCASIncrementsAreExact(t *testing.T) {
	const goroutines, increments = 8, 1000
	s := NewStore(Limits{})
	// Created first: a set of a missing key ignores cas, so two goroutines
	// both finding it missing would both "create" it, losing an increment
	// (which is why a rate limiter must create its keys up front).
	set(t, s, "ns", "n", string(encode(0)), 0)
	var wg sync.WaitGroup
	for range goroutines {
		wg.Go(func() {
			for range increments {
				for {
					v, cas, err := s.GetData("ns", "n")
					if err != nil {
						t.Error(err)
						return
					}
					err = s.SetData("ns", "n", encode(decode(v)+1), cas)
					if err == nil {
						break
					}
					if err != ErrCASMismatch {
						t.Error(err)
						return
					}
				}
			}
		})
	}
	wg.Wait()
	v, _, err := s.GetData("ns", "n")
	if err != nil {
		t.Fatal(err)
	}
	if got := decode(v); got != goroutines*increments {
		t.Fatalf("counter %d, want %d", got, goroutines*increments)
	}
}

func encode(n int) []byte {
	return []byte{byte(n), byte(n >> 8), byte(n >> 16), byte(n >> 24)}
}

func decode(b []byte) int {
	return int(b[0]) | int(b[1])<<8 | int(b[2])<<16 | int(b[3])<<24
}

// GetData of an existing key allocates nothing; SetData of an existing key
// allocates the copy of the value only.
func TestDataAllocations(t *testing.T) {
	s := NewStore(Limits{})
	set(t, s, "ns", "key", "value", 0)
	value := []byte("other")
	if n := testing.AllocsPerRun(100, func() { s.GetData("ns", "key") }); n != 0 {
		t.Errorf("GetData: %v allocations, want 0", n)
	}
	if n := testing.AllocsPerRun(100, func() { s.SetData("ns", "key", value, 0) }); n != 1 {
		t.Errorf("SetData: %v allocations, want 1", n)
	}
}
