package abi

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tetratelabs/wazero/api"
)

// Inputs the status tests place in guest memory.
const (
	keyAddr   = dataA  // "k"
	valueAddr = dataB  // "value"
	mapAddr   = dataC  // serialized {"a": "b"}
	pathAddr  = 0x1800 // "request.path"
)

var serializedAB = AppendHeaderMap(nil, [][2]string{{"a", "b"}})

// statusGuest is a generic guest whose host answers every baseline call of
// the status tests with OK.
func statusGuest(t *testing.T) *testGuest {
	t.Helper()
	host := newFakeHost()
	for mt := MapRequestHeaders; mt <= MapHTTPCallResponseTrailers; mt++ {
		host.maps[mt] = newFakeMap([2]string{"k", "v"})
	}
	host.buffers[BufferRequestBody] = &fakeBuffer{data: []byte("body-bytes")}
	host.buffers[BufferPluginConfiguration] = &fakeBuffer{data: []byte("plugin-config")}
	host.props["request/path"] = []byte("/x")
	host.callCode, host.callMsg = 200, []byte("msg")
	host.data["k"] = []byte("shared")
	host.queueItem = []byte("item")
	host.foreignOut = []byte("result")
	g := newTestGuest(t, host)
	g.writeString(keyAddr, "k")
	g.writeString(valueAddr, "value")
	g.write(mapAddr, serializedAB)
	g.writeString(pathAddr, "request.path")
	return g
}

// sideEffects summarizes everything the fake host changes, so a test can
// check that a refused call changed nothing.
func (h *fakeHost) sideEffects() string {
	var changes, sets int
	for _, m := range h.maps {
		changes += m.changes
	}
	for _, b := range h.buffers {
		sets += b.sets
	}
	return fmt.Sprintf("logs=%d mapChanges=%d bufferSets=%d local=%d propSets=%d continued=%d closed=%d effective=%d dones=%d services=%q",
		len(h.logs), changes, sets, len(h.local), len(h.propSets), len(h.continued), len(h.closed), len(h.effective), h.dones,
		h.svcCalls)
}

// inPair is a (pointer, size) argument pair a host function reads; limit is
// the size above which it answers BAD_ARGUMENT before touching memory (0:
// none).
type inPair struct {
	ptr, size int
	limit     uint32
}

// outSlot is an argument a host function writes width bytes to.
type outSlot struct {
	idx   int
	width uint32
}

type pointerCase struct {
	name string
	args []uint64 // arguments for which the call returns OK
	in   []inPair
	out  []outSlot
}

var pointerCases = []pointerCase{
	{"proxy_log", []uint64{uint64(LogInfo), valueAddr, 5},
		[]inPair{{1, 2, 0}}, nil},
	{"proxy_get_log_level", []uint64{slotA},
		nil, []outSlot{{0, 4}}},
	{"proxy_get_current_time_nanoseconds", []uint64{slotA},
		nil, []outSlot{{0, 8}}},
	{"proxy_get_buffer_bytes", []uint64{uint64(BufferRequestBody), 0, 100, slotA, slotB},
		nil, []outSlot{{3, 4}, {4, 4}}},
	{"proxy_set_buffer_bytes", []uint64{uint64(BufferRequestBody), 0, 0, valueAddr, 5},
		[]inPair{{3, 4, 0}}, nil},
	{"proxy_get_buffer_status", []uint64{uint64(BufferRequestBody), slotA, slotB},
		nil, []outSlot{{1, 4}, {2, 4}}},
	{"proxy_get_configuration", []uint64{slotA, slotB},
		nil, []outSlot{{0, 4}, {1, 4}}},
	{"proxy_get_header_map_size", []uint64{uint64(MapRequestHeaders), slotA},
		nil, []outSlot{{1, 4}}},
	{"proxy_get_header_map_pairs", []uint64{uint64(MapRequestHeaders), slotA, slotB},
		nil, []outSlot{{1, 4}, {2, 4}}},
	{"proxy_set_header_map_pairs", []uint64{uint64(MapRequestHeaders), mapAddr, uint64(len(serializedAB))},
		[]inPair{{1, 2, MaxHeaderBytes}}, nil},
	{"proxy_get_header_map_value", []uint64{uint64(MapRequestHeaders), keyAddr, 1, slotA, slotB},
		[]inPair{{1, 2, MaxHeaderBytes}}, []outSlot{{3, 4}, {4, 4}}},
	{"proxy_add_header_map_value", []uint64{uint64(MapRequestHeaders), keyAddr, 1, valueAddr, 5},
		[]inPair{{1, 2, MaxHeaderBytes}, {3, 4, MaxHeaderBytes}}, nil},
	{"proxy_replace_header_map_value", []uint64{uint64(MapRequestHeaders), keyAddr, 1, valueAddr, 5},
		[]inPair{{1, 2, MaxHeaderBytes}, {3, 4, MaxHeaderBytes}}, nil},
	{"proxy_remove_header_map_value", []uint64{uint64(MapRequestHeaders), keyAddr, 1},
		[]inPair{{1, 2, MaxHeaderBytes}}, nil},
	{"proxy_send_local_response",
		[]uint64{403, valueAddr, 5, valueAddr, 5, mapAddr, uint64(len(serializedAB)), 0xffffffff},
		[]inPair{{1, 2, 0}, {3, 4, 0}, {5, 6, MaxHeaderBytes}}, nil},
	{"proxy_get_status", []uint64{slotA, slotB, slotC},
		nil, []outSlot{{0, 4}, {1, 4}, {2, 4}}},
	{"proxy_get_property", []uint64{pathAddr, 12, slotA, slotB},
		[]inPair{{0, 1, MaxPropertyPath}}, []outSlot{{2, 4}, {3, 4}}},
	{"proxy_set_property", []uint64{pathAddr, 12, valueAddr, 5},
		[]inPair{{0, 1, MaxPropertyPath}, {2, 3, 0}}, nil},
	{"proxy_get_shared_data", []uint64{keyAddr, 1, slotA, slotB, slotC},
		[]inPair{{0, 1, MaxNameSize}}, []outSlot{{2, 4}, {3, 4}, {4, 4}}},
	{"proxy_set_shared_data", []uint64{keyAddr, 1, valueAddr, 5, 0},
		[]inPair{{0, 1, MaxNameSize}, {2, 3, 0}}, nil},
	{"proxy_register_shared_queue", []uint64{keyAddr, 1, slotA},
		[]inPair{{0, 1, MaxNameSize}}, []outSlot{{2, 4}}},
	{"proxy_resolve_shared_queue", []uint64{keyAddr, 1, keyAddr, 1, slotA},
		[]inPair{{0, 1, MaxNameSize}, {2, 3, MaxNameSize}}, []outSlot{{4, 4}}},
	{"proxy_enqueue_shared_queue", []uint64{7, valueAddr, 5},
		[]inPair{{1, 2, 0}}, nil},
	{"proxy_dequeue_shared_queue", []uint64{7, slotA, slotB},
		nil, []outSlot{{1, 4}, {2, 4}}},
	{"proxy_http_call", []uint64{keyAddr, 1, mapAddr, uint64(len(serializedAB)), valueAddr, 5,
		mapAddr, uint64(len(serializedAB)), 1000, slotA},
		[]inPair{{0, 1, MaxNameSize}, {2, 3, MaxHeaderBytes}, {4, 5, 0}, {6, 7, MaxHeaderBytes}}, []outSlot{{9, 4}}},
	{"proxy_define_metric", []uint64{uint64(MetricCounter), keyAddr, 1, slotA},
		[]inPair{{1, 2, MaxNameSize}}, []outSlot{{3, 4}}},
	{"proxy_get_metric", []uint64{7, slotA},
		nil, []outSlot{{1, 8}}},
	{"proxy_call_foreign_function", []uint64{keyAddr, 1, valueAddr, 5, slotA, slotB},
		[]inPair{{0, 1, MaxNameSize}, {2, 3, 0}}, []outSlot{{4, 4}, {5, 4}}},
}

// TestHostFunctionsBaseline checks that the baseline arguments of the
// pointer tests succeed, so each refusal below is caused by the one bad
// argument it changes.
func TestHostFunctionsBaseline(t *testing.T) {
	for _, tc := range pointerCases {
		t.Run(tc.name, func(t *testing.T) {
			g := statusGuest(t)
			if st := g.proxy(tc.name, tc.args...); st != StatusOK {
				t.Errorf("%s(%#x) = %v, want OK", tc.name, tc.args, st)
			}
		})
	}
}

// TestHostFunctionsCoverEveryPointer makes sure pointerCases lists every
// env function that takes pointers: all but the unimplemented ones, the
// pointer-free ones, and the Emscripten helpers.
func TestHostFunctionsCoverEveryPointer(t *testing.T) {
	noPointers := []string{"proxy_set_effective_context", "proxy_done", "proxy_continue_stream",
		"proxy_close_stream", "proxy_continue_request", "proxy_continue_response",
		"proxy_clear_route_cache", "emscripten_notify_memory_growth", "pthread_equal",
		"proxy_set_tick_period_milliseconds", "proxy_record_metric", "proxy_increment_metric"}
	for name := range hostFunctions[ModuleEnv] {
		covered := slices.ContainsFunc(pointerCases, func(c pointerCase) bool { return c.name == name })
		if !covered && !slices.Contains(noPointers, name) && !slices.Contains(unimplementedFuncs, name) {
			t.Errorf("%s is not covered by the pointer tests", name)
		}
	}
}

// TestHostFunctionsRefuseBadInputPointers is H10 for data the guest hands
// in: out-of-bounds and wrap-around ranges give INVALID_MEMORY_ACCESS (or
// BAD_ARGUMENT for sizes above a documented limit), and nothing happens.
func TestHostFunctionsRefuseBadInputPointers(t *testing.T) {
	ranges := []struct {
		name      string
		ptr, size uint32
	}{
		{"one past the end", pageSize, 1},
		{"straddles the end", pageSize - 1, 2},
		{"wraps past 2^32", 0xfffffff0, 0x20},
		{"pointer 0xffffffff", 0xffffffff, 1},
		{"size runs past the end", dataA, pageSize},
		{"size 0xffffffff", dataA, 0xffffffff},
	}
	for _, tc := range pointerCases {
		for pi, pair := range tc.in {
			for _, r := range ranges {
				t.Run(fmt.Sprintf("%s/pair%d/%s", tc.name, pi, r.name), func(t *testing.T) {
					g := statusGuest(t)
					g.writeU32(slotA, 0xaaaaaaaa)
					args := slices.Clone(tc.args)
					args[pair.ptr], args[pair.size] = uint64(r.ptr), uint64(r.size)
					want := StatusInvalidMemoryAccess
					if pair.limit != 0 && r.size > pair.limit {
						want = StatusBadArgument
					}
					before := g.host.sideEffects()
					if st := g.proxy(tc.name, args...); st != want {
						t.Errorf("%s(%#x) = %v, want %v", tc.name, args, st, want)
					}
					if after := g.host.sideEffects(); after != before {
						t.Errorf("refused call acted on the host: %s, was %s", after, before)
					}
					if n := g.allocCalls(); n != 0 {
						t.Errorf("allocator called %d times", n)
					}
					if g.u32(slotA) != 0xaaaaaaaa {
						t.Error("return slot written by a refused call")
					}
				})
			}
		}
	}
}

// TestHostFunctionsRefuseBadReturnSlots is H10 for the slots the host
// writes results to: nothing is written, inside or outside memory.
func TestHostFunctionsRefuseBadReturnSlots(t *testing.T) {
	for _, tc := range pointerCases {
		for _, slot := range tc.out {
			for _, ptr := range []uint32{pageSize - slot.width + 1, pageSize - 1, pageSize, 0xfffffffc, 0xffffffff} {
				t.Run(fmt.Sprintf("%s/arg%d/%#x", tc.name, slot.idx, ptr), func(t *testing.T) {
					g := statusGuest(t)
					for _, s := range []uint32{slotA, slotB, slotC} {
						g.writeU32(s, 0xaaaaaaaa)
					}
					g.fillTail(8)
					args := slices.Clone(tc.args)
					args[slot.idx] = uint64(ptr)
					before := g.host.sideEffects()
					if st := g.proxy(tc.name, args...); st != StatusInvalidMemoryAccess {
						t.Errorf("%s(%#x) = %v, want INVALID_MEMORY_ACCESS", tc.name, args, st)
					}
					g.checkTail(8)
					for _, s := range []uint32{slotA, slotB, slotC} {
						if g.u32(s) != 0xaaaaaaaa {
							t.Errorf("slot %#x written by a refused call", s)
						}
					}
					if n := g.allocCalls(); n != 0 {
						t.Errorf("allocator called %d times", n)
					}
					if after := g.host.sideEffects(); after != before {
						t.Errorf("refused call acted on the host: %s, was %s", after, before)
					}
				})
			}
		}
	}
}

func TestUnimplementedFunctions(t *testing.T) {
	g := statusGuest(t)
	for _, name := range unimplementedFuncs {
		params, _ := parseSig(envSpec[name])
		zeros := make([]uint64, len(params))
		hostile := make([]uint64, len(params))
		for i := range hostile {
			hostile[i] = 0xffffffff
		}
		for _, args := range [][]uint64{zeros, hostile} {
			if st := g.proxy(name, args...); st != StatusUnimplemented {
				t.Errorf("%s(%#x) = %v, want UNIMPLEMENTED", name, args, st)
			}
		}
	}
	if got := g.host.sideEffects(); got != newFakeHost().sideEffects() {
		t.Errorf("unimplemented functions acted: %s", got)
	}
}

// TestBadEnumValues is H13: unknown map, buffer, log-level and stream values
// give BAD_ARGUMENT before the host is asked for anything.
func TestBadEnumValues(t *testing.T) {
	mapCalls := []struct {
		name string
		args func(id uint64) []uint64
	}{
		{"proxy_get_header_map_size", func(id uint64) []uint64 { return []uint64{id, slotA} }},
		{"proxy_get_header_map_pairs", func(id uint64) []uint64 { return []uint64{id, slotA, slotB} }},
		{"proxy_set_header_map_pairs", func(id uint64) []uint64 { return []uint64{id, mapAddr, uint64(len(serializedAB))} }},
		{"proxy_get_header_map_value", func(id uint64) []uint64 { return []uint64{id, keyAddr, 1, slotA, slotB} }},
		{"proxy_add_header_map_value", func(id uint64) []uint64 { return []uint64{id, keyAddr, 1, valueAddr, 5} }},
		{"proxy_replace_header_map_value", func(id uint64) []uint64 { return []uint64{id, keyAddr, 1, valueAddr, 5} }},
		{"proxy_remove_header_map_value", func(id uint64) []uint64 { return []uint64{id, keyAddr, 1} }},
	}
	for _, c := range mapCalls {
		for _, id := range []uint64{8, 9, 0x80000000, 0xffffffff} {
			t.Run(fmt.Sprintf("%s/map%d", c.name, id), func(t *testing.T) {
				g := statusGuest(t)
				g.writeU32(slotA, 0xaaaaaaaa)
				if st := g.proxy(c.name, c.args(id)...); st != StatusBadArgument {
					t.Errorf("status %v, want BAD_ARGUMENT", st)
				}
				if g.host.mapLookups != 0 {
					t.Error("host asked for an unknown map type")
				}
				if g.u32(slotA) != 0xaaaaaaaa || g.allocCalls() != 0 {
					t.Error("refused call wrote a result")
				}
			})
		}
		t.Run(c.name+"/every valid map type reaches the host", func(t *testing.T) {
			g := statusGuest(t)
			for id := uint64(0); id <= 7; id++ {
				if st := g.proxy(c.name, c.args(id)...); st != StatusOK {
					t.Errorf("map %d: %v, want OK", id, st)
				}
			}
			if g.host.mapLookups != 8 {
				t.Errorf("host asked %d times for 8 valid map types", g.host.mapLookups)
			}
		})
	}

	bufferCalls := []struct {
		name string
		args func(id uint64) []uint64
	}{
		{"proxy_get_buffer_bytes", func(id uint64) []uint64 { return []uint64{id, 0, 10, slotA, slotB} }},
		{"proxy_set_buffer_bytes", func(id uint64) []uint64 { return []uint64{id, 0, 0, valueAddr, 5} }},
		{"proxy_get_buffer_status", func(id uint64) []uint64 { return []uint64{id, slotA, slotB} }},
	}
	for _, c := range bufferCalls {
		for _, id := range []uint64{9, 10, 0xffffffff} {
			t.Run(fmt.Sprintf("%s/buffer%d", c.name, id), func(t *testing.T) {
				g := statusGuest(t)
				if st := g.proxy(c.name, c.args(id)...); st != StatusBadArgument {
					t.Errorf("status %v, want BAD_ARGUMENT", st)
				}
				if g.host.bufferLookups != 0 {
					t.Error("host asked for an unknown buffer type")
				}
			})
		}
		t.Run(c.name+"/valid buffer 8 reaches the host", func(t *testing.T) {
			g := statusGuest(t)
			if st := g.proxy(c.name, c.args(uint64(BufferForeignFunctionArg))...); st != StatusNotFound {
				t.Errorf("status %v, want the host's NOT_FOUND", st)
			}
			if g.host.bufferLookups != 1 {
				t.Error("host not asked for a valid buffer type")
			}
		})
	}

	for _, level := range []uint64{6, 7, 0xffffffff} {
		g := statusGuest(t)
		if st := g.proxy("proxy_log", level, valueAddr, 5); st != StatusBadArgument {
			t.Errorf("proxy_log level %d: %v, want BAD_ARGUMENT", level, st)
		}
		if len(g.host.logs) != 0 {
			t.Errorf("log level %d logged", level)
		}
	}
	g := statusGuest(t)
	for level := uint64(0); level <= 5; level++ {
		if st := g.proxy("proxy_log", level, valueAddr, 5); st != StatusOK {
			t.Errorf("proxy_log level %d: %v", level, st)
		}
	}
	if len(g.host.logs) != 6 || g.host.logs[5] != (logEntry{LogCritical, "value"}) {
		t.Errorf("logs = %v", g.host.logs)
	}

	for _, name := range []string{"proxy_continue_stream", "proxy_close_stream"} {
		for _, st := range []uint64{4, 5, 0xffffffff} {
			g := statusGuest(t)
			if got := g.proxy(name, st); got != StatusBadArgument {
				t.Errorf("%s(%d) = %v, want BAD_ARGUMENT", name, st, got)
			}
			if len(g.host.continued)+len(g.host.closed) != 0 {
				t.Errorf("%s(%d) reached the host", name, st)
			}
		}
	}
}

// malformedMaps are serialized maps proxy_set_header_map_pairs and
// proxy_send_local_response must reject whole (H14).
var malformedMaps = []struct {
	name string
	data []byte
}{
	{"short", []byte{1, 0}},
	{"count past the end", buildMap(3, []uint32{1, 1}, []byte("a\x00b\x00"))},
	{"huge count", buildMap(0xffffffff, nil, nil)},
	{"missing NUL", buildMap(1, []uint32{1, 1}, []byte("a\x00bb"))},
	{"trailing bytes", append(AppendHeaderMap(nil, [][2]string{{"a", "b"}}), 'x')},
	{"length 0xffffffff", buildMap(1, []uint32{0xffffffff, 1}, []byte("a\x00b\x00"))},
	{"second pair runs past the end", buildMap(2, []uint32{1, 1, 1, 9}, []byte("a\x00b\x00c\x00d\x00"))},
	{"too many pairs", AppendHeaderMap(nil, make([][2]string, MaxHeaderPairs+1))},
}

func TestSetHeaderMapPairsRejectsMalformedWhole(t *testing.T) {
	for _, tc := range malformedMaps {
		t.Run(tc.name, func(t *testing.T) {
			g := statusGuest(t)
			g.write(dataC, tc.data)
			m := g.host.maps[MapRequestHeaders]
			if st := g.proxy("proxy_set_header_map_pairs", uint64(MapRequestHeaders), dataC, uint64(len(tc.data))); st != StatusBadArgument {
				t.Errorf("status %v, want BAD_ARGUMENT", st)
			}
			if m.changes != 0 || !reflect.DeepEqual(m.pairs, [][2]string{{"k", "v"}}) {
				t.Errorf("map changed to %q by a malformed map", m.pairs)
			}
		})
	}
}

func TestSetHeaderMapPairs(t *testing.T) {
	maxPairs := make([][2]string, MaxHeaderPairs)
	for i := range maxPairs {
		maxPairs[i] = [2]string{"h", "v"}
	}
	for _, tc := range []struct {
		name string
		data []byte
		want [][2]string
	}{
		{"two pairs", AppendHeaderMap(nil, [][2]string{{":status", "200"}, {"x", "\xff\x01"}}),
			[][2]string{{":status", "200"}, {"x", "\xff\x01"}}},
		{"size 0 clears", nil, nil},
		{"a single NUL clears", []byte{0}, nil},
		{"count 0 clears", []byte{0, 0, 0, 0}, nil},
		{"exactly MaxHeaderPairs", AppendHeaderMap(nil, maxPairs), maxPairs},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := statusGuest(t)
			g.write(dataC, tc.data)
			m := g.host.maps[MapResponseHeaders]
			if st := g.proxy("proxy_set_header_map_pairs", uint64(MapResponseHeaders), dataC, uint64(len(tc.data))); st != StatusOK {
				t.Fatalf("status %v", st)
			}
			if m.changes != 1 || len(m.pairs) != len(tc.want) || (len(tc.want) > 0 && !reflect.DeepEqual(m.pairs, tc.want)) {
				t.Errorf("map = %q after %d changes, want %q", m.pairs, m.changes, tc.want)
			}
		})
	}
	t.Run("MaxHeaderBytes boundary", func(t *testing.T) {
		g := statusGuest(t)
		if _, ok := g.mem.Grow(17); !ok {
			t.Fatal("grow")
		}
		m := g.host.maps[MapRequestHeaders]
		// Both maps are well-formed: only the size of the larger is refused.
		over := mapOfSize(MaxHeaderBytes + 1)
		g.write(0, over)
		if st := g.proxy("proxy_set_header_map_pairs", uint64(MapRequestHeaders), 0, uint64(len(over))); st != StatusBadArgument {
			t.Errorf("map of MaxHeaderBytes+1: %v, want BAD_ARGUMENT", st)
		}
		if m.changes != 0 {
			t.Error("map changed")
		}
		at := mapOfSize(MaxHeaderBytes)
		g.write(0, at)
		if st := g.proxy("proxy_set_header_map_pairs", uint64(MapRequestHeaders), 0, uint64(len(at))); st != StatusOK || m.changes != 1 {
			t.Errorf("map of MaxHeaderBytes: %v, want OK", st)
		}
	})
	t.Run("map refuses the pairs", func(t *testing.T) {
		g := statusGuest(t)
		g.host.maps[MapRequestHeaders].fail = StatusBadArgument
		if st := g.proxy("proxy_set_header_map_pairs", uint64(MapRequestHeaders), mapAddr, uint64(len(serializedAB))); st != StatusBadArgument {
			t.Errorf("status %v, want the map's BAD_ARGUMENT", st)
		}
	})
	t.Run("read-only map", func(t *testing.T) {
		g := statusGuest(t)
		g.host.maps[MapRequestHeaders].readOnly = true
		if st := g.proxy("proxy_set_header_map_pairs", uint64(MapRequestHeaders), mapAddr, uint64(len(serializedAB))); st != StatusBadArgument {
			t.Errorf("status %v, want the host's BAD_ARGUMENT", st)
		}
	})
}

func TestHeaderMapReads(t *testing.T) {
	pairs := [][2]string{{":path", "/a"}, {"x", "1"}, {"x", "2"}, {"bin", "\x00\xff"}}
	g := statusGuest(t)
	g.host.maps[MapRequestHeaders] = newFakeMap(pairs...)
	g.host.maps[MapRequestTrailers] = newFakeMap()

	if st := g.proxy("proxy_get_header_map_size", uint64(MapRequestHeaders), slotA); st != StatusOK {
		t.Fatal(st)
	}
	if got := g.u32(slotA); got != uint32(HeaderMapSize(pairs)) {
		t.Errorf("size = %d, want %d", got, HeaderMapSize(pairs))
	}

	if st := g.proxy("proxy_get_header_map_pairs", uint64(MapRequestHeaders), slotA, slotB); st != StatusOK {
		t.Fatal(st)
	}
	_, _, data := g.returned(slotA, slotB)
	if got, err := DecodeHeaderMap(data, 100); err != nil || !reflect.DeepEqual(got, pairs) {
		t.Errorf("pairs = %q, %v; want %q", got, err, pairs)
	}

	// An empty map must decode as empty in every SDK: 4 zero bytes do.
	if st := g.proxy("proxy_get_header_map_pairs", uint64(MapRequestTrailers), slotA, slotB); st != StatusOK {
		t.Fatal(st)
	}
	_, _, data = g.returned(slotA, slotB)
	if got, err := DecodeHeaderMap(data, 0); err != nil || len(got) != 0 {
		t.Errorf("empty map returned as %x", data)
	}

	for _, tc := range []struct {
		key, want string
		st        Status
	}{
		{"x", "1,2", StatusOK},
		{":path", "/a", StatusOK},
		{"bin", "\x00\xff", StatusOK},
		{"missing", "", StatusNotFound},
		{"X", "", StatusNotFound}, // the host's map decides case; the ABI passes bytes
	} {
		g.writeString(dataA, tc.key)
		g.writeU32(slotA, 0xaaaaaaaa)
		calls := g.allocCalls()
		st := g.proxy("proxy_get_header_map_value", uint64(MapRequestHeaders), dataA, uint64(len(tc.key)), slotA, slotB)
		if st != tc.st {
			t.Errorf("get %q: %v, want %v", tc.key, st, tc.st)
			continue
		}
		if st != StatusOK {
			if g.u32(slotA) != 0xaaaaaaaa || g.allocCalls() != calls {
				t.Errorf("get %q: NOT_FOUND still returned a value", tc.key)
			}
			continue
		}
		if _, _, v := g.returned(slotA, slotB); string(v) != tc.want {
			t.Errorf("get %q = %q, want %q", tc.key, v, tc.want)
		}
	}
}

func TestHeaderMapWrites(t *testing.T) {
	g := statusGuest(t)
	m := newFakeMap([2]string{"a", "1"}, [2]string{"b", "2"})
	g.host.maps[MapResponseHeaders] = m
	set := func(fn, key, value string) {
		t.Helper()
		g.writeString(dataA, key)
		g.writeString(dataB, value)
		if st := g.proxy(fn, uint64(MapResponseHeaders), dataA, uint64(len(key)), dataB, uint64(len(value))); st != StatusOK {
			t.Fatalf("%s(%q, %q): %v", fn, key, value, st)
		}
	}
	set("proxy_add_header_map_value", "a", "3")
	set("proxy_replace_header_map_value", "b", "4")
	set("proxy_add_header_map_value", "", "") // empty key and value pass through
	g.writeString(dataA, "a")
	if st := g.proxy("proxy_remove_header_map_value", uint64(MapResponseHeaders), dataA, 1); st != StatusOK {
		t.Fatal(st)
	}
	g.writeString(dataA, "nope")
	if st := g.proxy("proxy_remove_header_map_value", uint64(MapResponseHeaders), dataA, 4); st != StatusOK {
		t.Errorf("removing a missing key: %v, want OK", st)
	}
	if want := [][2]string{{"b", "4"}, {"", ""}}; !reflect.DeepEqual(m.pairs, want) {
		t.Errorf("map = %q, want %q", m.pairs, want)
	}

	m.fail = StatusBadArgument // e.g. a CR/LF the runtime's map refuses
	g.writeString(dataA, "x")
	if st := g.proxy("proxy_add_header_map_value", uint64(MapResponseHeaders), dataA, 1, dataB, 1); st != StatusBadArgument {
		t.Errorf("the map's refusal became %v", st)
	}
}

// TestHeaderKeyLimit pins the boundary of MaxHeaderBytes: a key of exactly
// the limit is read, one byte more is refused without reading memory.
func TestHeaderKeyLimit(t *testing.T) {
	g := statusGuest(t)
	if _, ok := g.mem.Grow(16); !ok {
		t.Fatal("grow")
	}
	if st := g.proxy("proxy_get_header_map_value", uint64(MapRequestHeaders), 0, MaxHeaderBytes, slotA, slotB); st != StatusNotFound {
		t.Errorf("key of MaxHeaderBytes: %v, want NOT_FOUND (read and looked up)", st)
	}
	if st := g.proxy("proxy_get_header_map_value", uint64(MapRequestHeaders), 0, MaxHeaderBytes+1, slotA, slotB); st != StatusBadArgument {
		t.Errorf("key of MaxHeaderBytes+1: %v, want BAD_ARGUMENT", st)
	}
	if st := g.proxy("proxy_add_header_map_value", uint64(MapRequestHeaders), keyAddr, 1, 0, MaxHeaderBytes+1); st != StatusBadArgument {
		t.Errorf("value of MaxHeaderBytes+1: %v, want BAD_ARGUMENT", st)
	}
	if g.host.maps[MapRequestHeaders].changes != 0 {
		t.Error("an oversize value was added")
	}
}

func TestGetBufferBytes(t *testing.T) {
	for _, tc := range []struct {
		name        string
		start, max  uint32
		want        string
		st          Status
		wantNoAlloc bool
		missingBuf  bool
	}{
		{name: "whole buffer", start: 0, max: 100, want: "hello world", st: StatusOK},
		{name: "clipped by max_size", start: 0, max: 5, want: "hello", st: StatusOK},
		{name: "from the middle", start: 6, max: 100, want: "world", st: StatusOK},
		{name: "max_size 0xffffffff", start: 6, max: 0xffffffff, want: "world", st: StatusOK},
		{name: "start and max_size 0xffffffff", start: 0xffffffff, max: 0xffffffff, st: StatusBadArgument},
		{name: "start at the end is empty", start: 11, max: 10, st: StatusOK, wantNoAlloc: true},
		{name: "max_size 0 is empty", start: 3, max: 0, st: StatusOK, wantNoAlloc: true},
		{name: "start one past the end", start: 12, max: 1, st: StatusBadArgument},
		{name: "start 0xffffffff", start: 0xffffffff, max: 1, st: StatusBadArgument},
		{name: "buffer not available", start: 0, max: 1, st: StatusNotFound, missingBuf: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := statusGuest(t)
			g.host.buffers[BufferResponseBody] = &fakeBuffer{data: []byte("hello world")}
			if tc.missingBuf {
				delete(g.host.buffers, BufferResponseBody)
			}
			g.writeU32(slotA, 0xaaaaaaaa)
			g.writeU32(slotB, 0xbbbbbbbb)
			st := g.proxy("proxy_get_buffer_bytes", uint64(BufferResponseBody), uint64(tc.start), uint64(tc.max), slotA, slotB)
			if st != tc.st {
				t.Fatalf("status %v, want %v", st, tc.st)
			}
			if st != StatusOK {
				if g.u32(slotA) != 0xaaaaaaaa || g.u32(slotB) != 0xbbbbbbbb || g.allocCalls() != 0 {
					t.Error("a refused call returned data")
				}
				return
			}
			ptr, _, data := g.returned(slotA, slotB)
			if string(data) != tc.want {
				t.Errorf("bytes = %q, want %q", data, tc.want)
			}
			if tc.wantNoAlloc && (ptr != 0 || g.allocCalls() != 0) {
				t.Errorf("empty result at %#x after %d allocations, want 0 and none", ptr, g.allocCalls())
			}
		})
	}
}

func TestSetBufferBytes(t *testing.T) {
	for _, tc := range []struct {
		name        string
		start, size uint32
		value       string
		want        string
	}{
		{"prepend", 0, 0, ">", ">hello world"},
		{"append at the end", 11, 0, "!", "hello world!"},
		{"append with start 0xffffffff", 0xffffffff, 0, "!", "hello world!"},
		{"replace all", 0, 11, "bye", "bye"},
		{"replace all with size 0xffffffff", 0, 0xffffffff, "bye", "bye"},
		{"inject", 5, 0, ",", "hello, world"},
		{"replace the middle", 6, 5, "there", "hello there"},
		{"size past the end", 6, 100, "you", "hello you"},
		{"clear", 0, 0xffffffff, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := statusGuest(t)
			buf := &fakeBuffer{data: []byte("hello world")}
			g.host.buffers[BufferRequestBody] = buf
			g.writeString(dataB, tc.value)
			if st := g.proxy("proxy_set_buffer_bytes", uint64(BufferRequestBody), uint64(tc.start), uint64(tc.size), dataB, uint64(len(tc.value))); st != StatusOK {
				t.Fatalf("status %v", st)
			}
			if string(buf.data) != tc.want || buf.sets != 1 {
				t.Errorf("buffer = %q after %d sets, want %q", buf.data, buf.sets, tc.want)
			}
			// The new contents must not alias guest memory.
			g.writeString(dataB, strings.Repeat("#", len(tc.value)))
			if string(buf.data) != tc.want {
				t.Errorf("buffer changed with guest memory: %q", buf.data)
			}
		})
	}
	t.Run("read-only buffer", func(t *testing.T) {
		g := statusGuest(t)
		buf := &fakeBuffer{data: []byte("cfg"), readOnly: true}
		g.host.buffers[BufferPluginConfiguration] = buf
		if st := g.proxy("proxy_set_buffer_bytes", uint64(BufferPluginConfiguration), 0, 0, valueAddr, 5); st != StatusNotFound {
			t.Errorf("status %v, want the host's NOT_FOUND", st)
		}
		if string(buf.data) != "cfg" {
			t.Errorf("read-only buffer changed: %q", buf.data)
		}
	})
	t.Run("buffer refuses the contents", func(t *testing.T) {
		g := statusGuest(t)
		buf := &fakeBuffer{data: []byte("abc"), fail: StatusBadArgument}
		g.host.buffers[BufferRequestBody] = buf
		if st := g.proxy("proxy_set_buffer_bytes", uint64(BufferRequestBody), 0, 0, valueAddr, 5); st != StatusBadArgument {
			t.Errorf("status %v, want the buffer's BAD_ARGUMENT", st)
		}
		if string(buf.data) != "abc" {
			t.Errorf("buffer changed: %q", buf.data)
		}
	})
}

func TestGetBufferStatus(t *testing.T) {
	g := statusGuest(t)
	g.writeU32(slotA, 0xaaaaaaaa)
	g.writeU32(slotB, 0xbbbbbbbb)
	if st := g.proxy("proxy_get_buffer_status", uint64(BufferRequestBody), slotA, slotB); st != StatusOK {
		t.Fatal(st)
	}
	if got := g.u32(slotA); got != uint32(len("body-bytes")) {
		t.Errorf("size = %d", got)
	}
	if got := g.u32(slotB); got != 0 {
		t.Errorf("unused = %#x, want 0", got)
	}
	if st := g.proxy("proxy_get_buffer_status", uint64(BufferHTTPCallResponse), slotA, slotB); st != StatusNotFound {
		t.Errorf("missing buffer: %v, want NOT_FOUND", st)
	}
}

func TestGetConfiguration(t *testing.T) {
	g := statusGuest(t)
	if st := g.proxy("proxy_get_configuration", slotA, slotB); st != StatusOK {
		t.Fatal(st)
	}
	if _, _, data := g.returned(slotA, slotB); string(data) != "plugin-config" {
		t.Errorf("configuration = %q", data)
	}
	// In proxy_on_vm_start only the VM configuration exists.
	delete(g.host.buffers, BufferPluginConfiguration)
	g.host.buffers[BufferVMConfiguration] = &fakeBuffer{data: []byte("vm-config")}
	if st := g.proxy("proxy_get_configuration", slotA, slotB); st != StatusOK {
		t.Fatal(st)
	}
	if _, _, data := g.returned(slotA, slotB); string(data) != "vm-config" {
		t.Errorf("configuration = %q, want the VM's", data)
	}
	delete(g.host.buffers, BufferVMConfiguration)
	if st := g.proxy("proxy_get_configuration", slotA, slotB); st != StatusNotFound {
		t.Errorf("no configuration: %v, want NOT_FOUND", st)
	}
}

func TestSendLocalResponse(t *testing.T) {
	g := statusGuest(t)
	details := strings.Repeat("d", 300)
	g.writeString(dataA, details)
	g.writeString(dataB, "denied")
	hdrs := AppendHeaderMap(nil, [][2]string{{"x-reason", "policy"}})
	g.write(dataC, hdrs)
	if st := g.proxy("proxy_send_local_response", 403, dataA, uint64(len(details)), dataB, 6, dataC, uint64(len(hdrs)), 0xffffffff); st != StatusOK {
		t.Fatal(st)
	}
	if len(g.host.local) != 1 {
		t.Fatalf("responses = %d", len(g.host.local))
	}
	r := g.host.local[0]
	want := LocalResponse{StatusCode: 403, Details: details[:maxStatusDetails], Body: []byte("denied"),
		Headers: [][2]string{{"x-reason", "policy"}}, GRPCStatus: -1}
	if !reflect.DeepEqual(r, want) {
		t.Errorf("response = %+v, want %+v", r, want)
	}

	// No headers, a gRPC status, and the host's refusal (a second response).
	g.host.localStatus = StatusBadArgument
	if st := g.proxy("proxy_send_local_response", 200, 0, 0, 0, 0, 0, 0, 14); st != StatusBadArgument {
		t.Errorf("host refusal became %v", st)
	}
	if r := g.host.local[1]; r.StatusCode != 200 || r.GRPCStatus != 14 || len(r.Headers) != 0 || len(r.Body) != 0 || r.Details != "" {
		t.Errorf("response = %+v", r)
	}
}

func TestSendLocalResponseHeaderLimit(t *testing.T) {
	g := statusGuest(t)
	if _, ok := g.mem.Grow(17); !ok {
		t.Fatal("grow")
	}
	over := mapOfSize(MaxHeaderBytes + 1)
	g.write(0, over)
	if st := g.proxy("proxy_send_local_response", 500, 0, 0, 0, 0, 0, uint64(len(over)), 0); st != StatusBadArgument {
		t.Errorf("headers of MaxHeaderBytes+1: %v, want BAD_ARGUMENT", st)
	}
	if len(g.host.local) != 0 {
		t.Fatal("oversize headers reached the host")
	}
	at := mapOfSize(MaxHeaderBytes)
	g.write(0, at)
	if st := g.proxy("proxy_send_local_response", 500, 0, 0, 0, 0, 0, uint64(len(at)), 0); st != StatusOK || len(g.host.local) != 1 {
		t.Errorf("headers of MaxHeaderBytes: %v, want OK", st)
	}
}

// mapOfSize returns a well-formed serialized map of exactly n bytes.
func mapOfSize(n int) []byte {
	b := AppendHeaderMap(nil, [][2]string{{"k", strings.Repeat("v", n-HeaderMapSize([][2]string{{"k", ""}}))}})
	if len(b) != n {
		panic("mapOfSize")
	}
	return b
}

func TestSendLocalResponseRejectsMalformedHeaders(t *testing.T) {
	for _, tc := range malformedMaps {
		t.Run(tc.name, func(t *testing.T) {
			g := statusGuest(t)
			g.write(dataC, tc.data)
			if st := g.proxy("proxy_send_local_response", 500, 0, 0, 0, 0, dataC, uint64(len(tc.data)), 0); st != StatusBadArgument {
				t.Errorf("status %v, want BAD_ARGUMENT", st)
			}
			if len(g.host.local) != 0 {
				t.Error("a response with malformed headers reached the host")
			}
		})
	}
}

func TestStreamControl(t *testing.T) {
	g := statusGuest(t)
	for st := uint64(0); st <= 3; st++ {
		if got := g.proxy("proxy_continue_stream", st); got != StatusOK {
			t.Errorf("continue %d: %v", st, got)
		}
		if got := g.proxy("proxy_close_stream", st); got != StatusOK {
			t.Errorf("close %d: %v", st, got)
		}
	}
	g.proxy("proxy_continue_request")
	g.proxy("proxy_continue_response")
	all := []StreamType{StreamHTTPRequest, StreamHTTPResponse, StreamDownstream, StreamUpstream}
	if want := append(slices.Clone(all), StreamHTTPRequest, StreamHTTPResponse); !reflect.DeepEqual(g.host.continued, want) {
		t.Errorf("continued = %v, want %v", g.host.continued, want)
	}
	if !reflect.DeepEqual(g.host.closed, all) {
		t.Errorf("closed = %v", g.host.closed)
	}
	g.host.streamStatus = StatusUnimplemented
	if got := g.proxy("proxy_continue_stream", uint64(StreamUpstream)); got != StatusUnimplemented {
		t.Errorf("host status became %v", got)
	}
	if got := g.proxy("proxy_clear_route_cache"); got != StatusOK {
		t.Errorf("proxy_clear_route_cache: %v", got)
	}
}

func TestContextFunctions(t *testing.T) {
	g := statusGuest(t)
	if st := g.proxy("proxy_set_effective_context", 42); st != StatusOK {
		t.Error(st)
	}
	g.host.effectiveStatus = StatusBadArgument
	if st := g.proxy("proxy_set_effective_context", 0xffffffff); st != StatusBadArgument {
		t.Errorf("host status became %v", st)
	}
	if !reflect.DeepEqual(g.host.effective, []uint32{42, 0xffffffff}) {
		t.Errorf("effective = %v", g.host.effective)
	}
	g.host.doneStatus = StatusNotFound
	if st := g.proxy("proxy_done"); st != StatusNotFound || g.host.dones != 1 {
		t.Errorf("proxy_done = %v after %d calls", st, g.host.dones)
	}
}

func TestLogLevelAndTime(t *testing.T) {
	g := statusGuest(t)
	g.host.level = LogWarn
	if st := g.proxy("proxy_get_log_level", slotA); st != StatusOK || g.u32(slotA) != uint32(LogWarn) {
		t.Errorf("log level = %d, %v", g.u32(slotA), st)
	}
	before := time.Now()
	if st := g.proxy("proxy_get_current_time_nanoseconds", slotA); st != StatusOK {
		t.Fatal(st)
	}
	got := time.Unix(0, int64(g.u64(slotA)))
	if got.Before(before.Add(-time.Second)) || got.After(time.Now().Add(time.Second)) {
		t.Errorf("time = %v, now %v", got, before)
	}
}

func TestGetStatus(t *testing.T) {
	g := statusGuest(t)
	g.host.callCode, g.host.callMsg = 503, []byte("upstream reset")
	if st := g.proxy("proxy_get_status", slotA, slotB, slotC); st != StatusOK {
		t.Fatal(st)
	}
	if _, _, msg := g.returned(slotB, slotC); g.u32(slotA) != 503 || string(msg) != "upstream reset" {
		t.Errorf("status = %d %q", g.u32(slotA), msg)
	}
	g.host.callMsg = nil
	if st := g.proxy("proxy_get_status", slotA, slotB, slotC); st != StatusOK {
		t.Fatal(st)
	}
	if g.u32(slotB) != 0 || g.u32(slotC) != 0 {
		t.Errorf("empty message returned as %#x/%d", g.u32(slotB), g.u32(slotC))
	}
	g.host.callStatus = StatusNotFound // no call has completed
	g.writeU32(slotA, 0xaaaaaaaa)
	if st := g.proxy("proxy_get_status", slotA, slotB, slotC); st != StatusNotFound || g.u32(slotA) != 0xaaaaaaaa {
		t.Errorf("host status became %v, code slot %#x", st, g.u32(slotA))
	}
}

func TestProperties(t *testing.T) {
	g := statusGuest(t)
	for _, path := range []string{"request.path", "request\x00path", "request\x00path\x00"} {
		g.writeString(dataA, path)
		if st := g.proxy("proxy_get_property", dataA, uint64(len(path)), slotA, slotB); st != StatusOK {
			t.Errorf("get %q: %v", path, st)
			continue
		}
		if _, _, v := g.returned(slotA, slotB); string(v) != "/x" {
			t.Errorf("get %q = %q", path, v)
		}
	}
	for _, p := range g.host.propGets {
		if !reflect.DeepEqual(p, []string{"request", "path"}) {
			t.Errorf("host asked for %q", p)
		}
	}
	g.writeString(dataA, "nope")
	if st := g.proxy("proxy_get_property", dataA, 4, slotA, slotB); st != StatusNotFound {
		t.Errorf("missing property: %v", st)
	}

	g.writeString(dataA, "filter_state\x00k")
	g.writeString(dataB, "v\x00bin")
	if st := g.proxy("proxy_set_property", dataA, 14, dataB, 5); st != StatusOK {
		t.Fatal(st)
	}
	if want := []propSet{{[]string{"filter_state", "k"}, "v\x00bin"}}; !reflect.DeepEqual(g.host.propSets, want) {
		t.Errorf("set = %q, want %q", g.host.propSets, want)
	}

	// The path limit: MaxPropertyPath bytes reach the host, one more does not.
	gets := len(g.host.propGets)
	if st := g.proxy("proxy_get_property", 0, MaxPropertyPath, slotA, slotB); st != StatusNotFound {
		t.Errorf("path of MaxPropertyPath: %v, want NOT_FOUND", st)
	}
	if st := g.proxy("proxy_get_property", 0, MaxPropertyPath+1, slotA, slotB); st != StatusBadArgument {
		t.Errorf("path of MaxPropertyPath+1: %v, want BAD_ARGUMENT", st)
	}
	if len(g.host.propGets) != gets+1 {
		t.Errorf("host asked %d times, want once", len(g.host.propGets)-gets)
	}
}

func TestEmscriptenHelpers(t *testing.T) {
	g := statusGuest(t)
	for _, tc := range []struct{ a, b, want uint64 }{{1, 1, 1}, {1, 2, 0}, {0xffffffff, 0xffffffff, 1}} {
		res, err := g.callCtx(g.ctx, "env.pthread_equal", tc.a, tc.b)
		if err != nil || res[0] != tc.want {
			t.Errorf("pthread_equal(%d, %d) = %v, %v; want %d", tc.a, tc.b, res, err, tc.want)
		}
	}
	if _, err := g.callCtx(g.ctx, "env.emscripten_notify_memory_growth", 0); err != nil {
		t.Error(err)
	}
}

// TestGuard covers guard directly: host bugs become HostPanic, the panics
// host functions raise on purpose pass through unchanged.
func TestGuard(t *testing.T) {
	run := func(fn api.GoModuleFunc, stack []uint64) (r any) {
		defer func() { r = recover() }()
		guard("proxy_test", fn)(context.Background(), nil, stack)
		return nil
	}

	for _, v := range []any{"boom", errors.New("an error"), 42} {
		r := run(func(context.Context, api.Module, []uint64) { panic(v) }, nil)
		hp, ok := r.(*HostPanic)
		if !ok {
			t.Fatalf("panic(%v) became %T %v, want *HostPanic", v, r, r)
		}
		if hp.Func != "proxy_test" || hp.Value != v || len(hp.Stack) == 0 {
			t.Errorf("HostPanic = {%q %v %d-byte stack}", hp.Func, hp.Value, len(hp.Stack))
		}
		if !strings.Contains(hp.Error(), "proxy_test") || !strings.Contains(hp.Error(), fmt.Sprint(v)) {
			t.Errorf("HostPanic.Error() = %q", hp.Error())
		}
	}

	r := run(func(context.Context, api.Module, []uint64) {
		var m map[string]int
		m["x"] = 1 // a real runtime error
	}, nil)
	if hp, ok := r.(*HostPanic); !ok || !strings.Contains(fmt.Sprint(hp.Value), "nil map") {
		t.Errorf("runtime error became %T %v", r, r)
	}

	exit := &ExitError{Code: 3}
	if r := run(func(context.Context, api.Module, []uint64) { panic(exit) }, nil); r != exit {
		t.Errorf("ExitError became %T %v", r, r)
	}
	fault := &GuestFault{Func: "f", Err: errReentered}
	if r := run(func(context.Context, api.Module, []uint64) { panic(fault) }, nil); r != fault {
		t.Errorf("GuestFault became %T %v", r, r)
	}

	stack := []uint64{1}
	if r := run(func(_ context.Context, _ api.Module, s []uint64) { s[0] = 7 }, stack); r != nil || stack[0] != 7 {
		t.Errorf("a normal call: recovered %v, result %d", r, stack[0])
	}
}

// TestHostPanicThroughGuestCall: a panic in the runtime's Host surfaces from
// the guest call as HostPanic naming the function, not as a guest trap.
func TestHostPanicThroughGuestCall(t *testing.T) {
	g := statusGuest(t)
	g.host.panicOnLog = "host bug"
	err := g.proxyErr("proxy_log", uint64(LogInfo), valueAddr, 5)
	var hp *HostPanic
	if !errors.As(err, &hp) || hp.Func != "proxy_log" || hp.Value != "host bug" {
		t.Fatalf("error %v, want a HostPanic from proxy_log", err)
	}
	var fault *GuestFault
	if errors.As(err, &fault) {
		t.Error("a host bug was reported as a guest fault")
	}
}

// TestHostCallWithoutWithCall: a guest call without WithCall is a runtime
// bug, reported as HostPanic.
func TestHostCallWithoutWithCall(t *testing.T) {
	g := statusGuest(t)
	_, err := g.callCtx(context.Background(), "env.proxy_log", uint64(LogInfo), valueAddr, 5)
	var hp *HostPanic
	if !errors.As(err, &hp) || !strings.Contains(fmt.Sprint(hp.Value), "WithCall") {
		t.Errorf("error %v, want a HostPanic about the missing WithCall", err)
	}
	_, err = g.callCtx(context.Background(), "wasi_snapshot_preview1.sched_yield")
	if !errors.As(err, &hp) {
		t.Errorf("WASI without WithCall: %v, want a HostPanic", err)
	}
}

func TestErrorTypes(t *testing.T) {
	if got := (&ExitError{Code: 7}).Error(); got != "guest exited with code 7" {
		t.Errorf("ExitError.Error() = %q", got)
	}
	f := &GuestFault{Func: "proxy_log", Err: errReentered}
	if !errors.Is(f, errReentered) || !strings.HasPrefix(f.Error(), "proxy_log: ") {
		t.Errorf("GuestFault %q does not wrap or name its cause", f)
	}
}

// The service functions hand the host exactly what the guest passed and the
// guest exactly what the host answered; a host refusal writes nothing.
func TestServiceFunctions(t *testing.T) {
	g := statusGuest(t)
	g.host.cas = 42
	if st := g.proxy("proxy_get_shared_data", keyAddr, 1, slotA, slotB, slotC); st != StatusOK {
		t.Fatal(st)
	}
	if _, _, v := g.returned(slotA, slotB); string(v) != "shared" || g.u32(slotC) != 42 {
		t.Errorf("get_shared_data = %q cas %d", v, g.u32(slotC))
	}
	g.writeString(keyAddr, "x") // a key the host lacks
	g.writeU32(slotC, 0xaaaaaaaa)
	if st := g.proxy("proxy_get_shared_data", keyAddr, 1, slotA, slotB, slotC); st != StatusNotFound || g.u32(slotC) != 0xaaaaaaaa {
		t.Errorf("missing key: %v, cas slot %#x", st, g.u32(slotC))
	}

	calls := []struct {
		name string
		args []uint64
		want string
	}{
		{"proxy_set_shared_data", []uint64{keyAddr, 1, valueAddr, 5, 9}, "set x=value cas=9"},
		{"proxy_register_shared_queue", []uint64{valueAddr, 5, slotA}, "register value"},
		{"proxy_resolve_shared_queue", []uint64{keyAddr, 1, valueAddr, 5, slotA}, "resolve x/value"},
		{"proxy_enqueue_shared_queue", []uint64{3, valueAddr, 5}, "enqueue 3 value"},
		{"proxy_set_tick_period_milliseconds", []uint64{250}, "tick 250ms"},
		{"proxy_define_metric", []uint64{uint64(MetricHistogram), valueAddr, 5, slotA}, "define 2 value"},
		{"proxy_increment_metric", []uint64{3, uint64(0xfffffffffffffffb)}, "increment 3 -5"},
		{"proxy_record_metric", []uint64{3, 1 << 40}, "record 3 1099511627776"},
	}
	for _, c := range calls {
		g.host.svcCalls = nil
		g.writeU32(slotA, 0)
		if st := g.proxy(c.name, c.args...); st != StatusOK || len(g.host.svcCalls) != 1 || g.host.svcCalls[0] != c.want {
			t.Errorf("%s: %v, host saw %q, want %q", c.name, st, g.host.svcCalls, c.want)
		}
		if strings.HasSuffix(envSpec[c.name], "i>i") && slices.Contains(c.args, slotA) && g.u32(slotA) != 7 {
			t.Errorf("%s: id slot holds %d, want 7", c.name, g.u32(slotA))
		}
	}

	// Refusals pass through and write nothing.
	g.host.svcStatus = StatusBadArgument
	for _, c := range calls {
		g.writeU32(slotA, 0xaaaaaaaa)
		if st := g.proxy(c.name, c.args...); st != StatusBadArgument || g.u32(slotA) != 0xaaaaaaaa {
			t.Errorf("%s refused: %v, slot %#x", c.name, st, g.u32(slotA))
		}
	}
	g.host.svcStatus = StatusOK

	// A bad metric type is refused before the host is asked.
	g.host.svcCalls = nil
	if st := g.proxy("proxy_define_metric", 3, valueAddr, 5, slotA); st != StatusBadArgument || g.host.svcCalls != nil {
		t.Errorf("metric type 3: %v, host saw %q", st, g.host.svcCalls)
	}
	g.host.metricValue = 1<<63 + 5
	if st := g.proxy("proxy_get_metric", 3, slotA); st != StatusOK || g.u64(slotA) != 1<<63+5 {
		t.Errorf("get_metric = %d, %v", g.u64(slotA), st)
	}

	g.host.queueItem = []byte("first")
	if st := g.proxy("proxy_dequeue_shared_queue", 3, slotA, slotB); st != StatusOK {
		t.Fatal(st)
	}
	if _, _, v := g.returned(slotA, slotB); string(v) != "first" {
		t.Errorf("dequeued %q", v)
	}
	g.host.svcStatus = StatusEmpty
	g.writeU32(slotA, 0xaaaaaaaa)
	if st := g.proxy("proxy_dequeue_shared_queue", 3, slotA, slotB); st != StatusEmpty || g.u32(slotA) != 0xaaaaaaaa {
		t.Errorf("empty queue: %v, slot %#x", st, g.u32(slotA))
	}
	g.host.svcStatus = StatusOK

	g.host.foreignOut = []byte("compressed")
	if st := g.proxy("proxy_call_foreign_function", valueAddr, 5, keyAddr, 1, slotA, slotB); st != StatusOK {
		t.Fatal(st)
	}
	if _, _, v := g.returned(slotA, slotB); string(v) != "compressed" || g.host.svcCalls[len(g.host.svcCalls)-1] != "foreign value(x)" {
		t.Errorf("foreign function returned %q, host saw %q", v, g.host.svcCalls)
	}
}

// proxy_http_call decodes the headers, body, trailers and timeout it hands
// the host; malformed maps are refused whole before anything is sent.
func TestHTTPCall(t *testing.T) {
	g := statusGuest(t)
	headers := AppendHeaderMap(nil, [][2]string{{":method", "GET"}, {":path", "/check"}, {":authority", "auth"}})
	trailers := AppendHeaderMap(nil, [][2]string{{"t", "1"}})
	g.write(dataC, headers)
	g.write(0x2000, trailers)
	g.writeString(0x2400, "auth")
	if st := g.proxy("proxy_http_call", 0x2400, 4, dataC, uint64(len(headers)), valueAddr, 5,
		0x2000, uint64(len(trailers)), 1500, slotA); st != StatusOK {
		t.Fatal(st)
	}
	want := HTTPCall{Upstream: "auth", Headers: [][2]string{{":method", "GET"}, {":path", "/check"}, {":authority", "auth"}},
		Body: []byte("value"), Trailers: [][2]string{{"t", "1"}}, Timeout: 1500 * time.Millisecond}
	if len(g.host.httpCalls) != 1 || !reflect.DeepEqual(g.host.httpCalls[0], want) || g.u32(slotA) != 7 {
		t.Errorf("host got %+v (id slot %d), want %+v", g.host.httpCalls, g.u32(slotA), want)
	}
	// No trailers and no body, as SDKs pass them: address 0, size 0.
	if st := g.proxy("proxy_http_call", 0x2400, 4, dataC, uint64(len(headers)), 0, 0, 0, 0, 0, slotA); st != StatusOK ||
		len(g.host.httpCalls) != 2 || g.host.httpCalls[1].Trailers != nil || len(g.host.httpCalls[1].Body) != 0 {
		t.Fatalf("empty body and trailers: %v, %+v", st, g.host.httpCalls)
	}
	g.write(dataC, []byte{9, 0, 0, 0}) // nine pairs claimed, none present
	if st := g.proxy("proxy_http_call", 0x2400, 4, dataC, 4, valueAddr, 5, 0, 0, 0, slotA); st != StatusBadArgument || len(g.host.httpCalls) != 2 {
		t.Errorf("malformed headers: %v after %d calls", st, len(g.host.httpCalls))
	}
}
