package abi

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"time"

	"github.com/tetratelabs/wazero/api"
)

// The WASI preview1 functions stock-Go and wasi-libc filters import. A filter
// gets real clocks, randomness from crypto/rand, stdout and stderr into the
// log, and nothing else: no arguments, no environment, no files, no sockets.
// Sleeping (poll_oneoff) ends when the guest call's context ends, so no
// guest can sleep past its time budget.
//
// See https://github.com/WebAssembly/WASI/blob/snapshot-01/phases/snapshot/docs.md

const (
	// MaxRandomBytes bounds one random_get; larger requests get INVAL, as
	// the Proxy-Wasm specification allows.
	MaxRandomBytes = 1 << 20
	// maxOutputBytes bounds what one fd_write hands to the log; the guest
	// is told everything was written.
	maxOutputBytes = 64 << 10
	// maxPollSubscriptions bounds one poll_oneoff.
	maxPollSubscriptions = 64

	fdStdin, fdStdout, fdStderr = 0, 1, 2

	filetypeCharacterDevice = 2
	rightFdRead             = 1 << 1
	rightFdFdstatSetFlags   = 1 << 3
	rightFdWrite            = 1 << 6
	rightPollFdReadwrite    = 1 << 27

	clockRealtime  = 0
	clockMonotonic = 1

	eventClock   = 0
	eventFdRead  = 1
	eventFdWrite = 2

	subscriptionSize = 48
	eventSize        = 32
)

// monotonicEpoch anchors the monotonic clock guests see.
var monotonicEpoch = time.Now()

// wasiFunc declares a WASI function returning an errno. Unlike Proxy-Wasm
// functions, the guest allocator may call these: Go's allocator reads clocks
// and may sleep.
func wasiFunc(module, name string, params []string, types []api.ValueType, fn func(ctx context.Context, c *call, s []uint64) Errno) *hostFunction {
	return &hostFunction{
		module: module, name: name, params: params, types: types, results: []api.ValueType{i32},
		fn: func(ctx context.Context, mod api.Module, s []uint64) {
			s[0] = uint64(fn(ctx, callFrom(ctx, mod), s))
		},
	}
}

// errnoFunc declares a WASI function that always answers errno: the
// capabilities filters do not get.
func errnoFunc(module, name string, errno Errno, params []string, types ...api.ValueType) *hostFunction {
	if len(types) == 0 {
		types = nil
	}
	return wasiFunc(module, name, params, types, func(context.Context, *call, []uint64) Errno { return errno })
}

// stdioFunc declares a function on a file descriptor: errno for stdin,
// stdout and stderr, BADF for every other descriptor (there are none).
func stdioFunc(module, name string, errno Errno, params []string, types ...api.ValueType) *hostFunction {
	if len(types) == 0 {
		types = nil
	}
	return wasiFunc(module, name, params, types, func(_ context.Context, _ *call, s []uint64) Errno {
		if u32(s[0]) <= fdStderr {
			return errno
		}
		return ErrnoBadf
	})
}

func wasiFunctions(module string) []*hostFunction {
	zeroPair := func(_ context.Context, c *call, s []uint64) Errno {
		if !c.guest.inBounds(u32(s[0]), 4) || !c.guest.inBounds(u32(s[1]), 4) {
			return ErrnoFault
		}
		c.guest.writeUint32(u32(s[0]), 0)
		c.guest.writeUint32(u32(s[1]), 0)
		return ErrnoSuccess
	}
	nothing := func(context.Context, *call, []uint64) Errno { return ErrnoSuccess }

	fs := []*hostFunction{
		// Arguments and environment: empty.
		wasiFunc(module, "args_sizes_get", []string{"result.argc", "result.argv_len"}, nil, zeroPair),
		wasiFunc(module, "args_get", []string{"argv", "argv_buf"}, nil, nothing),
		wasiFunc(module, "environ_sizes_get", []string{"result.environc", "result.environv_len"}, nil, zeroPair),
		wasiFunc(module, "environ_get", []string{"environ", "environ_buf"}, nil, nothing),

		// Clocks, randomness, scheduling.
		wasiFunc(module, "clock_res_get", []string{"id", "result.resolution"}, nil,
			func(_ context.Context, c *call, s []uint64) Errno {
				if id := u32(s[0]); id != clockRealtime && id != clockMonotonic {
					return ErrnoNotsup
				}
				if !c.guest.writeUint64(u32(s[1]), 1) {
					return ErrnoFault
				}
				return ErrnoSuccess
			}),
		wasiFunc(module, "clock_time_get", []string{"id", "precision", "result.timestamp"}, []api.ValueType{i32, i64, i32},
			func(_ context.Context, c *call, s []uint64) Errno {
				var now uint64
				switch u32(s[0]) {
				case clockRealtime:
					now = uint64(time.Now().UnixNano())
				case clockMonotonic:
					now = uint64(time.Since(monotonicEpoch))
				default:
					return ErrnoNotsup
				}
				if !c.guest.writeUint64(u32(s[2]), now) {
					return ErrnoFault
				}
				return ErrnoSuccess
			}),
		wasiFunc(module, "random_get", []string{"buf", "buf_len"}, nil,
			func(_ context.Context, c *call, s []uint64) Errno {
				if u32(s[1]) > MaxRandomBytes {
					return ErrnoInval
				}
				buf, ok := c.guest.read(u32(s[0]), u32(s[1]))
				if !ok {
					return ErrnoFault
				}
				_, _ = rand.Read(buf) // never fails since Go 1.24
				return ErrnoSuccess
			}),
		wasiFunc(module, "sched_yield", nil, nil, nothing),
		wasiFunc(module, "poll_oneoff", []string{"in", "out", "nsubscriptions", "result.nevents"}, nil,
			func(ctx context.Context, c *call, s []uint64) Errno {
				if module == ModuleWASIUnstable { // its subscription layout differs
					return ErrnoNotsup
				}
				return pollOneoff(ctx, c.guest, u32(s[0]), u32(s[1]), u32(s[2]), u32(s[3]))
			}),
		wasiFunc(module, "proc_raise", []string{"sig"}, nil,
			func(context.Context, *call, []uint64) Errno { return ErrnoNosys }),
		{
			module: module, name: "proc_exit", params: []string{"rval"},
			fn: func(_ context.Context, _ api.Module, s []uint64) { panic(&ExitError{Code: u32(s[0])}) },
		},

		// Standard streams: stdin is empty, stdout and stderr go to the log.
		wasiFunc(module, "fd_write", []string{"fd", "iovs", "iovs_len", "result.nwritten"}, nil,
			func(_ context.Context, c *call, s []uint64) Errno {
				fd := u32(s[0])
				if fd != fdStdout && fd != fdStderr {
					return ErrnoBadf
				}
				return fdWrite(c, fd, u32(s[1]), u32(s[2]), u32(s[3]))
			}),
		wasiFunc(module, "fd_read", []string{"fd", "iovs", "iovs_len", "result.nread"}, nil,
			func(_ context.Context, c *call, s []uint64) Errno {
				if u32(s[0]) != fdStdin {
					return ErrnoBadf
				}
				if !c.guest.writeUint32(u32(s[3]), 0) { // end of file
					return ErrnoFault
				}
				return ErrnoSuccess
			}),
		wasiFunc(module, "fd_fdstat_get", []string{"fd", "result.stat"}, nil,
			func(_ context.Context, c *call, s []uint64) Errno {
				fd, ptr := u32(s[0]), u32(s[1])
				if fd > fdStderr {
					return ErrnoBadf
				}
				var stat [24]byte
				stat[0] = filetypeCharacterDevice
				rights := uint64(rightFdFdstatSetFlags | rightPollFdReadwrite)
				if fd == fdStdin {
					rights |= rightFdRead
				} else {
					rights |= rightFdWrite
				}
				binary.LittleEndian.PutUint64(stat[8:], rights)
				if !c.guest.mem.Write(ptr, stat[:]) {
					return ErrnoFault
				}
				return ErrnoSuccess
			}),
		wasiFunc(module, "fd_filestat_get", []string{"fd", "result.buf"}, nil,
			func(_ context.Context, c *call, s []uint64) Errno {
				fd, ptr := u32(s[0]), u32(s[1])
				if fd > fdStderr {
					return ErrnoBadf
				}
				var stat [64]byte
				stat[16] = filetypeCharacterDevice
				if !c.guest.mem.Write(ptr, stat[:]) {
					return ErrnoFault
				}
				return ErrnoSuccess
			}),
		stdioFunc(module, "fd_fdstat_set_flags", ErrnoSuccess, []string{"fd", "flags"}),
		stdioFunc(module, "fd_fdstat_set_rights", ErrnoNotsup, []string{"fd", "fs_rights_base", "fs_rights_inheriting"}, i32, i64, i64),
		stdioFunc(module, "fd_close", ErrnoSuccess, []string{"fd"}),
		stdioFunc(module, "fd_sync", ErrnoSuccess, []string{"fd"}),
		stdioFunc(module, "fd_datasync", ErrnoSuccess, []string{"fd"}),
		stdioFunc(module, "fd_seek", ErrnoSpipe, []string{"fd", "offset", "whence", "result.newoffset"}, i32, i64, i32, i32),
		stdioFunc(module, "fd_tell", ErrnoSpipe, []string{"fd", "result.offset"}),
		stdioFunc(module, "fd_advise", ErrnoSpipe, []string{"fd", "offset", "len", "advice"}, i32, i64, i64, i32),
		stdioFunc(module, "fd_allocate", ErrnoNotsup, []string{"fd", "offset", "len"}, i32, i64, i64),
		stdioFunc(module, "fd_filestat_set_size", ErrnoNotsup, []string{"fd", "size"}, i32, i64),
		stdioFunc(module, "fd_filestat_set_times", ErrnoNotsup, []string{"fd", "atim", "mtim", "fst_flags"}, i32, i64, i64, i32),
		stdioFunc(module, "fd_pread", ErrnoSpipe, []string{"fd", "iovs", "iovs_len", "offset", "result.nread"}, i32, i32, i32, i64, i32),
		stdioFunc(module, "fd_pwrite", ErrnoSpipe, []string{"fd", "iovs", "iovs_len", "offset", "result.nwritten"}, i32, i32, i32, i64, i32),
		stdioFunc(module, "fd_readdir", ErrnoNotdir, []string{"fd", "buf", "buf_len", "cookie", "result.bufused"}, i32, i32, i32, i64, i32),
		stdioFunc(module, "fd_renumber", ErrnoNotsup, []string{"fd", "to"}),
		// No preopened directories: BADF ends wasi-libc's preopen scan.
		errnoFunc(module, "fd_prestat_get", ErrnoBadf, []string{"fd", "result.prestat"}),
		errnoFunc(module, "fd_prestat_dir_name", ErrnoBadf, []string{"fd", "path", "path_len"}),
	}

	// No file system: every path is relative to a directory descriptor that
	// does not exist.
	for _, p := range []struct {
		name   string
		params []string
		types  []api.ValueType
	}{
		{"path_create_directory", []string{"fd", "path", "path_len"}, nil},
		{"path_filestat_get", []string{"fd", "flags", "path", "path_len", "result.buf"}, nil},
		{"path_filestat_set_times", []string{"fd", "flags", "path", "path_len", "atim", "mtim", "fst_flags"},
			[]api.ValueType{i32, i32, i32, i32, i64, i64, i32}},
		{"path_link", []string{"old_fd", "old_flags", "old_path", "old_path_len", "new_fd", "new_path", "new_path_len"}, nil},
		{"path_open", []string{"fd", "dirflags", "path", "path_len", "oflags", "fs_rights_base", "fs_rights_inheriting", "fdflags", "result.opened_fd"},
			[]api.ValueType{i32, i32, i32, i32, i32, i64, i64, i32, i32}},
		{"path_readlink", []string{"fd", "path", "path_len", "buf", "buf_len", "result.bufused"}, nil},
		{"path_remove_directory", []string{"fd", "path", "path_len"}, nil},
		{"path_rename", []string{"fd", "old_path", "old_path_len", "new_fd", "new_path", "new_path_len"}, nil},
		{"path_symlink", []string{"old_path", "old_path_len", "fd", "new_path", "new_path_len"}, nil},
		{"path_unlink_file", []string{"fd", "path", "path_len"}, nil},
		// No network.
		{"sock_accept", []string{"fd", "flags", "result.fd"}, nil},
		{"sock_recv", []string{"fd", "ri_data", "ri_data_len", "ri_flags", "result.ro_datalen", "result.ro_flags"}, nil},
		{"sock_send", []string{"fd", "si_data", "si_data_len", "si_flags", "result.so_datalen"}, nil},
		{"sock_shutdown", []string{"fd", "how"}, nil},
	} {
		fs = append(fs, errnoFunc(module, p.name, ErrnoBadf, p.params, p.types...))
	}
	return fs
}

// fdWrite gathers the iovecs of one fd_write and hands up to maxOutputBytes
// of them to the host. A bad iovec faults the whole call: nothing is written.
func fdWrite(c *call, fd, iovs, iovsLen, resultPtr uint32) Errno {
	if iovsLen > 1<<20 {
		return ErrnoInval
	}
	vecs, ok := c.guest.read(iovs, iovsLen*8)
	if !ok {
		return ErrnoFault
	}
	if !c.guest.inBounds(resultPtr, 4) {
		return ErrnoFault
	}
	var out []byte
	var total uint64 // iovecs may repeat a range: the sum can pass 2^32
	for i := uint32(0); i < iovsLen; i++ {
		ptr := binary.LittleEndian.Uint32(vecs[8*i:])
		size := binary.LittleEndian.Uint32(vecs[8*i+4:])
		data, ok := c.guest.read(ptr, size)
		if !ok {
			return ErrnoFault
		}
		if room := maxOutputBytes - len(out); room > 0 {
			out = append(out, data[:min(len(data), room)]...)
		}
		total += uint64(size)
	}
	if total > uint64(^uint32(0)) { // nwritten cannot hold it; writev says EINVAL
		return ErrnoInval
	}
	if len(out) > 0 {
		c.host.WriteOutput(fd, out)
	}
	c.guest.writeUint32(resultPtr, uint32(total))
	return ErrnoSuccess
}

// pollOneoff implements clock subscriptions by sleeping until the earliest
// one fires or the guest call's context ends, whichever comes first. File
// descriptor subscriptions are answered at once: stdout and stderr are
// always writable, stdin is at end of file, anything else is BADF.
func pollOneoff(ctx context.Context, g *Guest, in, out, nsubs, resultPtr uint32) Errno {
	if nsubs == 0 || nsubs > maxPollSubscriptions {
		return ErrnoInval
	}
	subs, ok := g.read(in, nsubs*subscriptionSize)
	if !ok || !g.inBounds(out, nsubs*eventSize) || !g.inBounds(resultPtr, 4) {
		return ErrnoFault
	}
	subs = append([]byte(nil), subs...) // sleeping must not race with memory growth

	start := time.Now()
	var events [][eventSize]byte
	var deadlines []time.Time // of the clock subscriptions, zero for the others
	var earliest time.Time
	for i := uint32(0); i < nsubs; i++ {
		sub := subs[i*subscriptionSize:]
		var ev [eventSize]byte
		copy(ev[:8], sub[:8]) // userdata
		ev[10] = sub[8]       // event type
		deadlines = append(deadlines, time.Time{})
		switch sub[8] {
		case eventClock:
			d, errno := clockTimeout(sub[16:], start)
			if errno != ErrnoSuccess {
				binary.LittleEndian.PutUint16(ev[8:], uint16(errno))
				events = append(events, ev)
				continue
			}
			deadlines[i] = start.Add(d)
			if earliest.IsZero() || deadlines[i].Before(earliest) {
				earliest = deadlines[i]
			}
		case eventFdRead, eventFdWrite:
			fd := binary.LittleEndian.Uint32(sub[16:])
			if fd > fdStderr || (fd == fdStdin) != (sub[8] == eventFdRead) {
				binary.LittleEndian.PutUint16(ev[8:], uint16(ErrnoBadf))
			}
			events = append(events, ev)
		default:
			return ErrnoInval
		}
	}
	if len(events) == 0 && !earliest.IsZero() {
		if wait := time.Until(earliest); wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-t.C:
			case <-ctx.Done(): // the call's budget ended: the guest is stopped next
				t.Stop()
			}
		}
		now := time.Now()
		for i, deadline := range deadlines {
			if !deadline.IsZero() && !deadline.After(now) {
				var ev [eventSize]byte
				copy(ev[:8], subs[uint32(i)*subscriptionSize:])
				ev[10] = eventClock
				events = append(events, ev)
			}
		}
	}
	for i, ev := range events {
		g.mem.Write(out+uint32(i)*eventSize, ev[:])
	}
	g.writeUint32(resultPtr, uint32(len(events)))
	return ErrnoSuccess
}

// clockTimeout reads a subscription_clock and returns how long from now it
// waits; absolute timeouts (flag bit 0) are turned into relative ones.
func clockTimeout(clock []byte, now time.Time) (time.Duration, Errno) {
	id := binary.LittleEndian.Uint32(clock)
	timeout := binary.LittleEndian.Uint64(clock[8:])
	absolute := binary.LittleEndian.Uint16(clock[24:])&1 != 0
	if !absolute {
		return time.Duration(min(timeout, uint64(1<<62))), ErrnoSuccess
	}
	var current uint64
	switch id {
	case clockRealtime:
		current = uint64(now.UnixNano())
	case clockMonotonic:
		current = uint64(now.Sub(monotonicEpoch))
	default:
		return 0, ErrnoNotsup
	}
	if timeout <= current {
		return 0, ErrnoSuccess
	}
	return time.Duration(min(timeout-current, uint64(1<<62))), ErrnoSuccess
}
