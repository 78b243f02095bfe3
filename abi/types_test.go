package abi

import (
	"bytes"
	"reflect"
	"testing"

	"github.com/tetratelabs/wazero/api"
)

func TestParseAction(t *testing.T) {
	for _, tc := range []struct {
		raw    uint32
		want   Action
		wantOK bool
	}{
		{0, ActionContinue, true},
		{1, ActionPause, true},
		{2, ActionPause, true}, // Envoy C++ SDK: StopIteration... values
		{3, ActionPause, true},
		{4, ActionPause, true},
		{5, 0, false},
		{100, 0, false},
		{0x80000000, 0, false},
		{0xffffffff, 0, false},
	} {
		got, ok := ParseAction(tc.raw)
		if ok != tc.wantOK || (ok && got != tc.want) {
			t.Errorf("ParseAction(%d) = %v, %v; want %v, %v", tc.raw, got, ok, tc.want, tc.wantOK)
		}
	}
}

func TestStatusString(t *testing.T) {
	for _, tc := range []struct {
		s    Status
		want string
	}{
		{0, "OK"},
		{1, "NOT_FOUND"},
		{2, "BAD_ARGUMENT"},
		{3, "SERIALIZATION_FAILURE"},
		{4, "PARSE_FAILURE"},
		{6, "INVALID_MEMORY_ACCESS"},
		{7, "EMPTY"},
		{8, "CAS_MISMATCH"},
		{10, "INTERNAL_FAILURE"},
		{12, "UNIMPLEMENTED"},
		{5, "Status(5)"}, // unused in the spec
		{9, "Status(9)"},
		{11, "Status(11)"},
		{0xffffffff, "Status(4294967295)"},
	} {
		if got := tc.s.String(); got != tc.want {
			t.Errorf("Status(%d).String() = %q, want %q", uint32(tc.s), got, tc.want)
		}
	}
}

// TestStatusConstantsMatchSpec pins every named status to the value of
// proxy_status_t, and checks that the package names no other status.
func TestStatusConstantsMatchSpec(t *testing.T) {
	named := []Status{StatusOK, StatusNotFound, StatusBadArgument, StatusSerializationFailure,
		StatusParseFailure, StatusInvalidMemoryAccess, StatusEmpty, StatusCASMismatch,
		StatusInternalFailure, StatusUnimplemented}
	if !reflect.DeepEqual(named, specStatuses) {
		t.Errorf("status constants = %v, want %v", named, specStatuses)
	}
	if len(statusNames) != len(specStatuses) {
		t.Errorf("statusNames has %d entries, the spec %d", len(statusNames), len(specStatuses))
	}
}

func TestEnumValid(t *testing.T) {
	for v := uint32(0); v < 12; v++ {
		if got, want := MapType(v).Valid(), v <= 7; got != want {
			t.Errorf("MapType(%d).Valid() = %v", v, got)
		}
		if got, want := BufferType(v).Valid(), v <= 8; got != want {
			t.Errorf("BufferType(%d).Valid() = %v", v, got)
		}
		if got, want := LogLevel(v).Valid(), v <= 5; got != want {
			t.Errorf("LogLevel(%d).Valid() = %v", v, got)
		}
		if got, want := StreamType(v).Valid(), v <= 3; got != want {
			t.Errorf("StreamType(%d).Valid() = %v", v, got)
		}
	}
	if MapType(0xffffffff).Valid() || BufferType(0xffffffff).Valid() ||
		LogLevel(0xffffffff).Valid() || StreamType(0xffffffff).Valid() {
		t.Error("0xffffffff is a valid enum value")
	}
}

func TestActionAndLogLevelString(t *testing.T) {
	for v, want := range map[Action]string{ActionContinue: "continue", ActionPause: "pause", 7: "Action(7)"} {
		if got := v.String(); got != want {
			t.Errorf("Action(%d).String() = %q, want %q", uint32(v), got, want)
		}
	}
	for v, want := range map[LogLevel]string{LogTrace: "trace", LogDebug: "debug", LogInfo: "info",
		LogWarn: "warn", LogError: "error", LogCritical: "critical", 6: "LogLevel(6)"} {
		if got := v.String(); got != want {
			t.Errorf("LogLevel(%d).String() = %q, want %q", uint32(v), got, want)
		}
	}
}

func TestSplitPropertyPath(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
	}{
		{"a\x00b", []string{"a", "b"}},
		{"a\x00b\x00", []string{"a", "b"}}, // SDKs may end the path with NUL
		{"request.path", []string{"request", "path"}},
		{"plugin_root_id", []string{"plugin_root_id"}},
		{"single\x00", []string{"single"}},
		{"filter_state\x00x.y.z", []string{"filter_state", "x.y.z"}}, // dots inside NUL-separated segments stay
		{"a\x00\x00b", []string{"a", "", "b"}},
	} {
		if got := SplitPropertyPath(tc.in); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("SplitPropertyPath(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestSpliceBuffer(t *testing.T) {
	old := []byte("hello world")
	for _, tc := range []struct {
		name        string
		start, size uint32
		value       string
		want        string
	}{
		{"prepend", 0, 0, ">> ", ">> hello world"},
		{"append at the end", 11, 0, "!", "hello world!"},
		{"append with start past the end", 1000, 0, "!", "hello world!"},
		{"append with start 0xffffffff", 0xffffffff, 0, "!", "hello world!"},
		{"append with start and size 0xffffffff", 0xffffffff, 0xffffffff, "!", "hello world!"},
		{"replace all", 0, 11, "bye", "bye"},
		{"replace all with size past the end", 0, 1000, "bye", "bye"},
		{"replace all with size 0xffffffff", 0, 0xffffffff, "bye", "bye"},
		{"replace the middle", 6, 5, "there", "hello there"},
		{"replace the tail, size past the end", 5, 0xffffffff, "!", "hello!"},
		{"inject", 5, 0, ",", "hello, world"},
		{"delete", 5, 6, "", "hello"},
		{"clear", 0, 0xffffffff, "", ""},
		{"no-op", 3, 0, "", "hello world"},
		{"shrink a range", 0, 5, "HI", "HI world"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := append([]byte(nil), old...)
			got := SpliceBuffer(in, tc.start, tc.size, []byte(tc.value))
			if string(got) != tc.want {
				t.Errorf("SpliceBuffer(%q, %d, %d, %q) = %q, want %q", old, tc.start, tc.size, tc.value, got, tc.want)
			}
			if !bytes.Equal(in, old) {
				t.Errorf("SpliceBuffer changed its input to %q", in)
			}
			if len(got) > 0 && len(in) > 0 && &got[0] == &in[0] {
				t.Error("SpliceBuffer returned a slice aliasing its input")
			}
		})
	}
	if got := SpliceBuffer(nil, 5, 5, []byte("x")); string(got) != "x" {
		t.Errorf("SpliceBuffer on an empty buffer = %q, want %q", got, "x")
	}
	if got := SpliceBuffer(nil, 0, 0, nil); len(got) != 0 {
		t.Errorf("SpliceBuffer of nothing = %q", got)
	}
}

func TestFormatSignature(t *testing.T) {
	for _, tc := range []struct {
		params, results []api.ValueType
		want            string
	}{
		{nil, nil, "() -> ()"},
		{[]api.ValueType{i32, i32}, []api.ValueType{i32}, "(i32, i32) -> i32"},
		{[]api.ValueType{i32, i64, i32}, nil, "(i32, i64, i32) -> ()"},
		{[]api.ValueType{i32}, []api.ValueType{i32, i64}, "(i32) -> (i32, i64)"},
	} {
		if got := FormatSignature(tc.params, tc.results); got != tc.want {
			t.Errorf("FormatSignature = %q, want %q", got, tc.want)
		}
	}
	if got := (Signature{Params: []api.ValueType{i32}}).String(); got != "(i32) -> ()" {
		t.Errorf("Signature.String = %q", got)
	}
}

func TestCallbackSignature(t *testing.T) {
	for _, tc := range []struct {
		v    Version
		c    Callback
		want string
	}{
		{Version010, OnRequestHeaders, "ii>i"}, // no end_of_stream in v0.1.0
		{Version020, OnRequestHeaders, "iii>i"},
		{Version021, OnResponseHeaders, "iii>i"},
		{Version010, OnResponseHeaders, "ii>i"},
		{Version021, OnRequestBody, "iii>i"},
		{Version021, OnRequestTrailers, "ii>i"},
		{Version021, OnVMStart, "ii>i"},
		{Version021, OnConfigure, "ii>i"},
		{Version021, OnContextCreate, "ii>"},
		{Version021, OnDone, "i>i"},
		{Version021, OnLog, "i>"},
		{Version021, OnDelete, "i>"},
		{Version021, OnTick, "i>"},
		{Version021, OnQueueReady, "ii>"},
		{Version021, OnHTTPCallResponse, "iiiii>"},
		{Version021, OnForeignFunction, "iii>"},
	} {
		s, ok := CallbackSignature(tc.v, tc.c)
		params, results := parseSig(tc.want)
		if !ok || !s.Equal(params, results) {
			t.Errorf("CallbackSignature(%s, %s) = %v, %v; want %s", tc.v, tc.c, s, ok, FormatSignature(params, results))
		}
	}
	for _, c := range Callbacks {
		if _, ok := CallbackSignature(Version021, c); !ok {
			t.Errorf("Callbacks lists %s, CallbackSignature does not know it", c)
		}
	}
	if _, ok := CallbackSignature(Version021, "proxy_on_new_connection"); ok {
		t.Error("CallbackSignature knows a TCP callback the HTTP host does not drive")
	}
}

func TestSignatureEqualDistinguishesTypes(t *testing.T) {
	s := sig([]api.ValueType{i32, i64}, i32)
	if !s.Equal([]api.ValueType{i32, i64}, []api.ValueType{i32}) {
		t.Error("identical signatures differ")
	}
	for _, other := range [][2][]api.ValueType{
		{{i32, i32}, {i32}},
		{{i32, i64}, nil},
		{{i32, i64}, {i64}},
		{{i32}, {i32}},
		{{i32, i64, i32}, {i32}},
	} {
		if s.Equal(other[0], other[1]) {
			t.Errorf("%v equals %s", s, FormatSignature(other[0], other[1]))
		}
	}
}
