package abi

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/tetratelabs/wazero/sys"
)

func TestArgsAndEnvironAreEmpty(t *testing.T) {
	for _, module := range []string{ModuleWASI, ModuleWASIUnstable} {
		for _, name := range []string{"args_sizes_get", "environ_sizes_get"} {
			t.Run(module+"."+name, func(t *testing.T) {
				g := newTestGuest(t, nil)
				g.writeU32(slotA, 0xffffffff)
				g.writeU32(slotB, 0xffffffff)
				if e := g.wasi(module, name, slotA, slotB); e != ErrnoSuccess {
					t.Fatalf("errno %d", e)
				}
				if g.u32(slotA) != 0 || g.u32(slotB) != 0 {
					t.Errorf("count %d, size %d; want 0 and 0", g.u32(slotA), g.u32(slotB))
				}
				g.fillTail(4)
				for _, args := range [][2]uint64{{pageSize - 3, slotB}, {slotA, pageSize}, {0xffffffff, slotB}} {
					if e := g.wasi(module, name, args[0], args[1]); e != ErrnoFault {
						t.Errorf("%s(%#x, %#x) = %d, want FAULT", name, args[0], args[1], e)
					}
				}
				g.checkTail(4)
			})
		}
	}
	g := newTestGuest(t, nil)
	g.write(dataA, bytesRepeat(0xee, 16))
	for _, name := range []string{"args_get", "environ_get"} {
		if e := g.wasi(ModuleWASI, name, dataA, dataA+8); e != ErrnoSuccess {
			t.Errorf("%s = %d", name, e)
		}
	}
	if !bytes.Equal(g.bytes(dataA, 16), bytesRepeat(0xee, 16)) {
		t.Error("args_get/environ_get wrote something for an empty list")
	}
}

func TestClockTimeGet(t *testing.T) {
	g := newTestGuest(t, nil)
	before := time.Now()
	if e := g.wasi(ModuleWASI, "clock_time_get", clockRealtime, 1, slotA); e != ErrnoSuccess {
		t.Fatal(e)
	}
	if got := time.Unix(0, int64(g.u64(slotA))); got.Before(before.Add(-time.Second)) || got.After(time.Now().Add(time.Second)) {
		t.Errorf("realtime = %v, now %v", got, before)
	}

	var last uint64
	for i := range 3 {
		if e := g.wasi(ModuleWASI, "clock_time_get", clockMonotonic, 0, slotA); e != ErrnoSuccess {
			t.Fatal(e)
		}
		now := g.u64(slotA)
		if i > 0 && now <= last {
			t.Errorf("monotonic clock went from %d to %d", last, now)
		}
		last = now
		time.Sleep(time.Millisecond)
	}

	for _, id := range []uint64{2, 3, 4, 0xffffffff} { // process and thread CPU time, unknown
		g.writeU32(slotA, 0xaaaaaaaa)
		if e := g.wasi(ModuleWASI, "clock_time_get", id, 0, slotA); e != ErrnoNotsup {
			t.Errorf("clock %d: errno %d, want NOTSUP (58)", id, e)
		}
		if g.u32(slotA) != 0xaaaaaaaa {
			t.Errorf("clock %d wrote a time", id)
		}
	}
	g.fillTail(8)
	for _, ptr := range []uint64{pageSize - 7, pageSize, 0xfffffffc} {
		if e := g.wasi(ModuleWASI, "clock_time_get", clockRealtime, 0, ptr); e != ErrnoFault {
			t.Errorf("result at %#x: errno %d, want FAULT", ptr, e)
		}
	}
	g.checkTail(8)

	for _, id := range []uint64{clockRealtime, clockMonotonic} {
		if e := g.wasi(ModuleWASIUnstable, "clock_res_get", id, slotA); e != ErrnoSuccess || g.u64(slotA) == 0 {
			t.Errorf("clock_res_get(%d) = %d, resolution %d", id, e, g.u64(slotA))
		}
	}
	if e := g.wasi(ModuleWASI, "clock_res_get", 2, slotA); e != ErrnoNotsup {
		t.Errorf("clock_res_get(2) = %d, want NOTSUP", e)
	}
	if e := g.wasi(ModuleWASI, "clock_res_get", clockRealtime, pageSize-4); e != ErrnoFault {
		t.Errorf("clock_res_get out of bounds = %d, want FAULT", e)
	}
}

func TestRandomGet(t *testing.T) {
	g := newTestGuest(t, nil)
	read := func(g *testGuest) []byte {
		t.Helper()
		g.write(dataA, make([]byte, 64))
		if e := g.wasi(ModuleWASI, "random_get", dataA, 64); e != ErrnoSuccess {
			t.Fatalf("errno %d", e)
		}
		return g.bytes(dataA, 64)
	}
	a, b := read(g), read(g)
	if bytes.Equal(a, make([]byte, 64)) {
		t.Error("random_get left the buffer zero")
	}
	if bytes.Equal(a, b) {
		t.Error("two random_get calls returned the same bytes")
	}
	// H25: two fresh instances never see the same bytes.
	if c := read(newTestGuest(t, nil)); bytes.Equal(a, c) {
		t.Error("two instances got the same random bytes")
	}

	for _, size := range []uint64{MaxRandomBytes + 1, 0xffffffff} {
		if e := g.wasi(ModuleWASI, "random_get", 0, size); e != ErrnoInval {
			t.Errorf("random_get of %d bytes: errno %d, want INVAL (28)", size, e)
		}
	}
	if e := g.wasi(ModuleWASI, "random_get", 0, MaxRandomBytes); e != ErrnoFault {
		t.Errorf("MaxRandomBytes into one page: errno %d, want FAULT", e)
	}
	g.fillTail(4)
	for _, r := range [][2]uint64{{pageSize - 3, 4}, {pageSize, 1}, {0xfffffff0, 0x20}} {
		if e := g.wasi(ModuleWASI, "random_get", r[0], r[1]); e != ErrnoFault {
			t.Errorf("random_get(%#x, %d): errno %d, want FAULT", r[0], r[1], e)
		}
	}
	g.checkTail(4)
	if e := g.wasi(ModuleWASI, "random_get", pageSize, 0); e != ErrnoSuccess {
		t.Errorf("random_get of 0 bytes at the end: %d", e)
	}
	if _, ok := g.mem.Grow(16); !ok {
		t.Fatal("grow")
	}
	if e := g.wasi(ModuleWASI, "random_get", 0, MaxRandomBytes); e != ErrnoSuccess {
		t.Errorf("MaxRandomBytes with room: errno %d, want SUCCESS", e)
	}
}

// writeIovecs stores iovecs (pointer, length) at addr.
func writeIovecs(g *testGuest, addr uint32, vecs ...[2]uint32) {
	g.t.Helper()
	var b []byte
	for _, v := range vecs {
		b = binary.LittleEndian.AppendUint32(b, v[0])
		b = binary.LittleEndian.AppendUint32(b, v[1])
	}
	g.write(addr, b)
}

func TestFdWrite(t *testing.T) {
	for _, module := range []string{ModuleWASI, ModuleWASIUnstable} {
		for _, fd := range []uint32{1, 2} {
			t.Run(fmt.Sprintf("%s/fd%d", module, fd), func(t *testing.T) {
				g := newTestGuest(t, nil)
				g.writeString(dataA, "hello ")
				g.writeString(dataB, "world")
				writeIovecs(g, dataC, [2]uint32{dataA, 6}, [2]uint32{dataB, 5}, [2]uint32{0, 0})
				if e := g.wasi(module, "fd_write", uint64(fd), dataC, 3, slotA); e != ErrnoSuccess {
					t.Fatalf("errno %d", e)
				}
				if want := []outputEntry{{fd, []byte("hello world")}}; !reflect.DeepEqual(g.host.outputs, want) {
					t.Errorf("outputs = %v, want %v", g.host.outputs, want)
				}
				if g.u32(slotA) != 11 {
					t.Errorf("nwritten = %d, want 11", g.u32(slotA))
				}
			})
		}
	}
}

// TestFdWriteCapsOutput: one fd_write hands at most 64 KiB to the host but
// tells the guest everything was written, so it does not retry forever.
func TestFdWriteCapsOutput(t *testing.T) {
	for _, tc := range []struct {
		name  string
		sizes []uint32
	}{
		{"one large iovec", []uint32{maxOutputBytes + 100}},
		{"iovecs crossing the cap", []uint32{30000, 30000, 30000}},
		{"exactly the cap", []uint32{maxOutputBytes}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := newTestGuest(t, nil)
			if _, ok := g.mem.Grow(2); !ok {
				t.Fatal("grow")
			}
			src := make([]byte, 2*pageSize)
			for i := range src {
				src[i] = byte(i * 7)
			}
			g.write(pageSize, src)
			var vecs [][2]uint32
			var total uint32
			var want []byte
			for _, s := range tc.sizes {
				vecs = append(vecs, [2]uint32{pageSize, s})
				total += s
				want = append(want, src[:s]...)
			}
			want = want[:min(len(want), maxOutputBytes)]
			writeIovecs(g, dataC, vecs...)
			if e := g.wasi(ModuleWASI, "fd_write", 1, dataC, uint64(len(vecs)), slotA); e != ErrnoSuccess {
				t.Fatalf("errno %d", e)
			}
			if g.u32(slotA) != total {
				t.Errorf("nwritten = %d, want all %d bytes", g.u32(slotA), total)
			}
			if len(g.host.outputs) != 1 || !bytes.Equal(g.host.outputs[0].data, want) {
				var got int
				if len(g.host.outputs) > 0 {
					got = len(g.host.outputs[0].data)
				}
				t.Errorf("%d outputs, first of %d bytes; want one of the first %d bytes", len(g.host.outputs), got, len(want))
			}
		})
	}
}

func TestFdWriteRefusals(t *testing.T) {
	for _, tc := range []struct {
		name                    string
		fd, iovs, n, resultPtr  uint32
		vecs                    [][2]uint32
		want                    Errno
		alsoAccept              Errno // 0: none
		resultSlotMayBeModified bool
	}{
		{name: "stdin", fd: 0, iovs: dataC, n: 1, resultPtr: slotA, vecs: [][2]uint32{{dataA, 1}}, want: ErrnoBadf},
		{name: "fd 3", fd: 3, iovs: dataC, n: 1, resultPtr: slotA, vecs: [][2]uint32{{dataA, 1}}, want: ErrnoBadf},
		{name: "fd 0xffffffff", fd: 0xffffffff, iovs: dataC, n: 1, resultPtr: slotA, vecs: [][2]uint32{{dataA, 1}}, want: ErrnoBadf},
		{name: "iovec data past the end", fd: 1, iovs: dataC, n: 1, resultPtr: slotA, vecs: [][2]uint32{{pageSize - 1, 2}}, want: ErrnoFault},
		{name: "iovec data wraps past 2^32", fd: 1, iovs: dataC, n: 1, resultPtr: slotA, vecs: [][2]uint32{{0xfffffff0, 0x20}}, want: ErrnoFault},
		{name: "iovec length 0xffffffff", fd: 1, iovs: dataC, n: 1, resultPtr: slotA, vecs: [][2]uint32{{dataA, 0xffffffff}}, want: ErrnoFault},
		{name: "second iovec bad: nothing written", fd: 2, iovs: dataC, n: 2, resultPtr: slotA, vecs: [][2]uint32{{dataA, 5}, {pageSize, 1}}, want: ErrnoFault},
		{name: "iovec array past the end", fd: 1, iovs: pageSize - 4, n: 1, resultPtr: slotA, want: ErrnoFault},
		{name: "iovec array wraps past 2^32", fd: 1, iovs: 0xfffffff8, n: 2, resultPtr: slotA, want: ErrnoFault},
		// More iovecs than any memory holds: INVAL by a count limit, or FAULT.
		{name: "iovec count 0xffffffff", fd: 1, iovs: 0, n: 0xffffffff, resultPtr: slotA, want: ErrnoInval, alsoAccept: ErrnoFault},
		{name: "nwritten past the end", fd: 1, iovs: dataC, n: 1, resultPtr: pageSize - 3, vecs: [][2]uint32{{dataA, 1}}, want: ErrnoFault},
		{name: "nwritten at 0xffffffff", fd: 1, iovs: dataC, n: 1, resultPtr: 0xffffffff, vecs: [][2]uint32{{dataA, 1}}, want: ErrnoFault},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := newTestGuest(t, nil)
			g.writeString(dataA, "hello")
			writeIovecs(g, dataC, tc.vecs...)
			g.writeU32(slotA, 0xaaaaaaaa)
			g.fillTail(3)
			e := g.wasi(ModuleWASI, "fd_write", uint64(tc.fd), uint64(tc.iovs), uint64(tc.n), uint64(tc.resultPtr))
			if e != tc.want && (tc.alsoAccept == 0 || e != tc.alsoAccept) {
				t.Errorf("errno %d, want %d", e, tc.want)
			}
			if len(g.host.outputs) != 0 {
				t.Errorf("refused fd_write reached the host: %v", g.host.outputs)
			}
			if g.u32(slotA) != 0xaaaaaaaa {
				t.Error("nwritten written by a refused call")
			}
			g.checkTail(3)
		})
	}
	// 4096 iovecs of the same 1 MiB add up to 2^32 bytes: nwritten cannot
	// hold that, and a wrapped count (0) would make libc retry forever.
	t.Run("lengths summing past 2^32", func(t *testing.T) {
		g := newTestGuest(t, nil)
		if _, ok := g.mem.Grow(15); !ok {
			t.Fatal("grow")
		}
		const n = 4096
		vecs := make([][2]uint32, n)
		for i := range vecs {
			vecs[i] = [2]uint32{0, 16 * pageSize}
		}
		writeIovecs(g, 0x10000, vecs...)
		g.writeU32(slotA, 0xaaaaaaaa)
		if e := g.wasi(ModuleWASI, "fd_write", 1, 0x10000, n, slotA); e != ErrnoInval {
			t.Errorf("errno %d, nwritten %d; want INVAL", e, g.u32(slotA))
		}
		if len(g.host.outputs) != 0 || g.u32(slotA) != 0xaaaaaaaa {
			t.Error("an overflowing fd_write wrote something")
		}
	})
	t.Run("no iovecs", func(t *testing.T) {
		g := newTestGuest(t, nil)
		if e := g.wasi(ModuleWASI, "fd_write", 1, dataC, 0, slotA); e != ErrnoSuccess || g.u32(slotA) != 0 {
			t.Errorf("errno %d, nwritten %d", e, g.u32(slotA))
		}
		if len(g.host.outputs) != 0 {
			t.Error("empty write reached the host")
		}
	})
}

func TestFdRead(t *testing.T) {
	g := newTestGuest(t, nil)
	g.write(dataA, bytesRepeat(0xee, 8))
	writeIovecs(g, dataC, [2]uint32{dataA, 8})
	g.writeU32(slotA, 0xaaaaaaaa)
	if e := g.wasi(ModuleWASI, "fd_read", 0, dataC, 1, slotA); e != ErrnoSuccess || g.u32(slotA) != 0 {
		t.Errorf("stdin: errno %d, nread %d; want end of file", e, g.u32(slotA))
	}
	if !bytes.Equal(g.bytes(dataA, 8), bytesRepeat(0xee, 8)) {
		t.Error("reading stdin wrote into the buffer")
	}
	for _, fd := range []uint64{1, 2, 3, 0xffffffff} {
		if e := g.wasi(ModuleWASI, "fd_read", fd, dataC, 1, slotA); e != ErrnoBadf {
			t.Errorf("fd %d: errno %d, want BADF", fd, e)
		}
	}
	if e := g.wasi(ModuleWASI, "fd_read", 0, dataC, 1, pageSize-3); e != ErrnoFault {
		t.Errorf("nread out of bounds: errno %d, want FAULT", e)
	}
}

// TestNoFilesystemOrNetwork: every path and socket function, and the
// preopen scan, answer BADF and write nothing.
func TestNoFilesystemOrNetwork(t *testing.T) {
	g := newTestGuest(t, nil)
	g.writeString(dataA, "/etc/passwd")
	snapshot := g.bytes(0, heapStart)
	for _, module := range []string{ModuleWASI, ModuleWASIUnstable} {
		for _, tc := range []struct {
			name string
			args []uint64
		}{
			{"path_open", []uint64{3, 0, dataA, 11, 0, 0xffffffff, 0xffffffff, 0, slotA}},
			{"path_open", []uint64{0, 0, dataA, 11, 1, 0, 0, 0, slotA}}, // even relative to stdin
			{"fd_prestat_get", []uint64{3, slotA}},
			{"fd_prestat_get", []uint64{0, slotA}},
			{"fd_prestat_dir_name", []uint64{3, dataB, 16}},
			{"path_create_directory", []uint64{3, dataA, 11}},
			{"path_filestat_get", []uint64{3, 0, dataA, 11, dataB}},
			{"path_filestat_set_times", []uint64{3, 0, dataA, 11, 0, 0, 0}},
			{"path_link", []uint64{3, 0, dataA, 11, 3, dataA, 11}},
			{"path_readlink", []uint64{3, dataA, 11, dataB, 16, slotA}},
			{"path_remove_directory", []uint64{3, dataA, 11}},
			{"path_rename", []uint64{3, dataA, 11, 3, dataA, 11}},
			{"path_symlink", []uint64{dataA, 11, 3, dataA, 11}},
			{"path_unlink_file", []uint64{3, dataA, 11}},
			{"sock_accept", []uint64{3, 0, slotA}},
			{"sock_recv", []uint64{3, dataC, 1, 0, slotA, slotB}},
			{"sock_send", []uint64{3, dataC, 1, 0, slotA}},
			{"sock_shutdown", []uint64{3, 0}},
		} {
			if e := g.wasi(module, tc.name, tc.args...); e != ErrnoBadf {
				t.Errorf("%s.%s: errno %d, want BADF (8)", module, tc.name, e)
			}
		}
	}
	if !bytes.Equal(g.bytes(0, heapStart), snapshot) {
		t.Error("a refused file or socket function wrote guest memory")
	}
}

func TestStdioDescriptorFunctions(t *testing.T) {
	g := newTestGuest(t, nil)
	for _, tc := range []struct {
		name string
		args []uint64
		want Errno
	}{
		{"fd_close", []uint64{1}, ErrnoSuccess},
		{"fd_close", []uint64{3}, ErrnoBadf},
		{"fd_sync", []uint64{2}, ErrnoSuccess},
		{"fd_seek", []uint64{1, 0, 0, slotA}, ErrnoSpipe},
		{"fd_seek", []uint64{7, 0, 0, slotA}, ErrnoBadf},
		{"fd_tell", []uint64{0, slotA}, ErrnoSpipe},
		{"fd_fdstat_set_flags", []uint64{1, 0}, ErrnoSuccess},
		{"fd_renumber", []uint64{1, 2}, ErrnoNotsup},
		{"fd_readdir", []uint64{0, dataB, 16, 0, slotA}, ErrnoNotdir},
		{"fd_fdstat_get", []uint64{3, slotA}, ErrnoBadf},
		{"fd_fdstat_get", []uint64{1, pageSize - 23}, ErrnoFault},
		{"fd_filestat_get", []uint64{2, pageSize - 63}, ErrnoFault},
		{"proc_raise", []uint64{9}, ErrnoNosys},
		{"sched_yield", nil, ErrnoSuccess},
	} {
		if e := g.wasi(ModuleWASI, tc.name, tc.args...); e != tc.want {
			t.Errorf("%s(%v): errno %d, want %d", tc.name, tc.args, e, tc.want)
		}
	}
	if e := g.wasi(ModuleWASI, "fd_fdstat_get", 1, dataB); e != ErrnoSuccess {
		t.Fatal(e)
	}
	stat := g.bytes(dataB, 24)
	rights := binary.LittleEndian.Uint64(stat[8:])
	if stat[0] != filetypeCharacterDevice || rights&rightFdWrite == 0 || rights&rightFdRead != 0 {
		t.Errorf("stdout fdstat = %x", stat)
	}
}

// writeClockSub stores a subscription_clock of snapshot 01 at addr.
func writeClockSub(g *testGuest, addr uint32, userdata uint64, clock uint32, timeout uint64, absolute bool) {
	g.t.Helper()
	sub := make([]byte, subscriptionSize)
	binary.LittleEndian.PutUint64(sub, userdata)
	sub[8] = eventClock
	binary.LittleEndian.PutUint32(sub[16:], clock)
	binary.LittleEndian.PutUint64(sub[24:], timeout)
	if absolute {
		binary.LittleEndian.PutUint16(sub[40:], 1)
	}
	g.write(addr, sub)
}

// event reads event i of an output array.
func event(g *testGuest, out uint32, i uint32) (userdata uint64, errno uint16, typ byte) {
	b := g.bytes(out+i*eventSize, eventSize)
	return binary.LittleEndian.Uint64(b), binary.LittleEndian.Uint16(b[8:]), b[10]
}

// pollWatchdog bounds every poll_oneoff a test makes: a host that sleeps
// past what was asked fails the test in seconds instead of hanging it.
const pollWatchdog = 5 * time.Second

// pollCtx calls poll_oneoff with ctx, failing the test if it has not
// returned within pollWatchdog.
func pollCtx(g *testGuest, ctx context.Context, in, out, n, nevents uint32) ([]uint64, error) {
	g.t.Helper()
	f := g.mod.ExportedFunction(ModuleWASI + ".poll_oneoff")
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type result struct {
		res []uint64
		err error
	}
	done := make(chan result, 1)
	go func() {
		res, err := f.Call(ctx, uint64(in), uint64(out), uint64(n), uint64(nevents))
		done <- result{res, err}
	}()
	select {
	case r := <-done:
		return r.res, r.err
	case <-time.After(pollWatchdog):
		g.t.Fatalf("poll_oneoff still sleeping after %v", pollWatchdog)
		return nil, nil
	}
}

// poll calls poll_oneoff with the guest's context and returns its errno.
func poll(g *testGuest, in, out, n, nevents uint32) Errno {
	g.t.Helper()
	res, err := pollCtx(g, g.ctx, in, out, n, nevents)
	if err != nil {
		g.t.Fatalf("poll_oneoff: %v", err)
	}
	return Errno(res[0])
}

func TestPollOneoffSleeps(t *testing.T) {
	g := newTestGuest(t, nil)
	writeClockSub(g, dataA, 0x1122334455667788, clockMonotonic, uint64(10*time.Millisecond), false)
	start := time.Now()
	if e := poll(g, dataA, dataC, 1, slotA); e != ErrnoSuccess {
		t.Fatalf("errno %d", e)
	}
	elapsed := time.Since(start)
	if elapsed < 10*time.Millisecond || elapsed > time.Second {
		t.Errorf("slept %v, want about 10ms", elapsed)
	}
	if n := g.u32(slotA); n != 1 {
		t.Fatalf("nevents = %d, want 1", n)
	}
	if ud, errno, typ := event(g, dataC, 0); ud != 0x1122334455667788 || errno != 0 || typ != eventClock {
		t.Errorf("event = %#x errno %d type %d", ud, errno, typ)
	}
}

func TestPollOneoffEarliestClockWins(t *testing.T) {
	g := newTestGuest(t, nil)
	writeClockSub(g, dataA, 1, clockMonotonic, uint64(time.Hour), false)
	writeClockSub(g, dataA+subscriptionSize, 2, clockRealtime, uint64(5*time.Millisecond), false)
	start := time.Now()
	if e := poll(g, dataA, dataC, 2, slotA); e != ErrnoSuccess {
		t.Fatalf("errno %d", e)
	}
	if time.Since(start) > time.Second {
		t.Errorf("waited %v for the longer clock", time.Since(start))
	}
	if n := g.u32(slotA); n != 1 {
		t.Fatalf("nevents = %d, want 1", n)
	}
	if ud, _, _ := event(g, dataC, 0); ud != 2 {
		t.Errorf("event for subscription %d, want the 5ms one", ud)
	}
}

// TestPollOneoffStopsAtDeadline is H26: a guest asking to sleep for an hour
// is woken when its call's context ends.
func TestPollOneoffStopsAtDeadline(t *testing.T) {
	g := newTestGuest(t, nil)
	writeClockSub(g, dataA, 7, clockMonotonic, uint64(time.Hour), false)
	g.writeU32(slotA, 0xaaaaaaaa)
	ctx, cancel := context.WithTimeout(g.ctx, 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	res, err := pollCtx(g, ctx, dataA, dataC, 1, slotA)
	elapsed := time.Since(start)
	if elapsed > 750*time.Millisecond {
		t.Fatalf("poll_oneoff returned after %v, the deadline was 50ms", elapsed)
	}
	if elapsed < 40*time.Millisecond {
		t.Errorf("poll_oneoff returned after %v, before the deadline", elapsed)
	}
	if err != nil {
		// wazero may stop the guest right after the host returns.
		var exit *sys.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() != sys.ExitCodeDeadlineExceeded {
			t.Errorf("error %v, want none or wazero's deadline exit", err)
		}
		return
	}
	if Errno(res[0]) != ErrnoSuccess || g.u32(slotA) != 0 {
		t.Errorf("errno %d, nevents %d; want success with no event (the hour has not passed)", res[0], g.u32(slotA))
	}
}

func TestPollOneoffImmediateAndRefused(t *testing.T) {
	t.Run("fd subscriptions answer at once", func(t *testing.T) {
		g := newTestGuest(t, nil)
		subs := make([]byte, 3*subscriptionSize)
		for i, s := range []struct {
			typ byte
			fd  uint32
		}{{eventFdWrite, 1}, {eventFdRead, 0}, {eventFdRead, 9}} {
			sub := subs[i*subscriptionSize:]
			binary.LittleEndian.PutUint64(sub, uint64(100+i))
			sub[8] = s.typ
			binary.LittleEndian.PutUint32(sub[16:], s.fd)
		}
		g.write(dataA, subs)
		if e := poll(g, dataA, dataC, 3, slotA); e != ErrnoSuccess {
			t.Fatalf("errno %d", e)
		}
		if n := g.u32(slotA); n != 3 {
			t.Fatalf("nevents = %d", n)
		}
		for i, want := range []struct {
			errno uint16
			typ   byte
		}{{0, eventFdWrite}, {0, eventFdRead}, {uint16(ErrnoBadf), eventFdRead}} {
			ud, errno, typ := event(g, dataC, uint32(i))
			if ud != uint64(100+i) || errno != want.errno || typ != want.typ {
				t.Errorf("event %d = %d errno %d type %d; want errno %d type %d", i, ud, errno, typ, want.errno, want.typ)
			}
		}
	})
	t.Run("absolute clock in the past", func(t *testing.T) {
		g := newTestGuest(t, nil)
		writeClockSub(g, dataA, 5, clockRealtime, uint64(time.Now().Add(-time.Hour).UnixNano()), true)
		start := time.Now()
		if e := poll(g, dataA, dataC, 1, slotA); e != ErrnoSuccess || g.u32(slotA) != 1 {
			t.Fatalf("errno %d, nevents %d", e, g.u32(slotA))
		}
		if time.Since(start) > 500*time.Millisecond {
			t.Errorf("slept %v for a past deadline", time.Since(start))
		}
	})
	t.Run("absolute clock 20ms ahead", func(t *testing.T) {
		g := newTestGuest(t, nil)
		writeClockSub(g, dataA, 5, clockRealtime, uint64(time.Now().Add(20*time.Millisecond).UnixNano()), true)
		start := time.Now()
		if e := poll(g, dataA, dataC, 1, slotA); e != ErrnoSuccess || g.u32(slotA) != 1 {
			t.Fatalf("errno %d, nevents %d", e, g.u32(slotA))
		}
		if d := time.Since(start); d < 10*time.Millisecond || d > time.Second {
			t.Errorf("slept %v, want about 20ms", d)
		}
	})
	for _, tc := range []struct {
		name                string
		module              string
		in, out, n, nevents uint32
		want                Errno
	}{
		{"no subscriptions", ModuleWASI, dataA, dataC, 0, slotA, ErrnoInval},
		{"too many subscriptions", ModuleWASI, dataA, dataC, 65, slotA, ErrnoInval},
		{"0xffffffff subscriptions", ModuleWASI, dataA, dataC, 0xffffffff, slotA, ErrnoInval},
		{"subscriptions past the end", ModuleWASI, pageSize - 40, dataC, 1, slotA, ErrnoFault},
		{"events past the end", ModuleWASI, dataA, pageSize - 16, 1, slotA, ErrnoFault},
		{"nevents past the end", ModuleWASI, dataA, dataC, 1, pageSize - 2, ErrnoFault},
		{"wasi_unstable's other layout", ModuleWASIUnstable, dataA, dataC, 1, slotA, ErrnoNotsup},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := newTestGuest(t, nil)
			writeClockSub(g, dataA, 1, clockMonotonic, 0, false)
			g.writeU32(slotA, 0xaaaaaaaa)
			if e := g.wasi(tc.module, "poll_oneoff", uint64(tc.in), uint64(tc.out), uint64(tc.n), uint64(tc.nevents)); e != tc.want {
				t.Errorf("errno %d, want %d", e, tc.want)
			}
			if g.u32(slotA) != 0xaaaaaaaa {
				t.Error("nevents written by a refused call")
			}
		})
	}
	t.Run("unknown subscription type", func(t *testing.T) {
		g := newTestGuest(t, nil)
		writeClockSub(g, dataA, 1, clockMonotonic, 0, false)
		g.write(dataA+8, []byte{3})
		if e := g.wasi(ModuleWASI, "poll_oneoff", dataA, dataC, 1, slotA); e != ErrnoInval {
			t.Errorf("errno %d, want INVAL", e)
		}
	})
}

// TestProcExit is H27: every exit code, including wazero's reserved ones,
// surfaces as the guest's own ExitError.
func TestProcExit(t *testing.T) {
	for _, module := range []string{ModuleWASI, ModuleWASIUnstable} {
		for _, code := range []uint32{0, 1, 0xefffffff, 0xffffffff} {
			t.Run(fmt.Sprintf("%s/%#x", module, code), func(t *testing.T) {
				g := newTestGuest(t, nil)
				_, err := g.callCtx(g.ctx, module+".proc_exit", uint64(code))
				var exit *ExitError
				if !errors.As(err, &exit) || exit.Code != code {
					t.Fatalf("error %v, want ExitError with code %d", err, code)
				}
				var wazeroExit *sys.ExitError
				if errors.As(err, &wazeroExit) {
					t.Errorf("guest exit looks like wazero's exit %d (a host timeout)", wazeroExit.ExitCode())
				}
				var hp *HostPanic
				if errors.As(err, &hp) {
					t.Error("guest exit reported as a host panic")
				}
			})
		}
	}
}
