// Package wasmbin reads the section structure of a WebAssembly binary: just
// enough to size up a module before handing it to the compiler, so that
// modules which would cost every instance too much are refused with a clear
// error instead of being instantiated.
//
// See https://webassembly.github.io/spec/core/binary/modules.html
package wasmbin

import (
	"bytes"
	"errors"
	"fmt"
)

// ErrMalformed is wrapped by every parse error.
var ErrMalformed = errors.New("malformed wasm binary")

var header = []byte{0x00, 'a', 's', 'm', 0x01, 0x00, 0x00, 0x00}

// Section IDs.
const (
	SectionCustom   = 0
	SectionImport   = 2
	SectionFunction = 3
	SectionTable    = 4
	SectionMemory   = 5
	SectionGlobal   = 6
	SectionData     = 11
)

// Summary counts what a module would cost each instance.
type Summary struct {
	Functions    uint32 // defined functions
	Globals      uint32 // defined globals
	TableMin     uint64 // sum of the minimum sizes of defined and imported tables
	DataBytes    uint64 // size of the data section
	CustomBytes  uint64 // size of all custom sections
	ImportsTable bool
	ImportsMem   bool
}

// Summarize walks the sections of a module. It checks the structure it reads
// (header, section sizes, counts, limits) and leaves everything else to the
// compiler.
func Summarize(b []byte) (*Summary, error) {
	if !bytes.HasPrefix(b, header) {
		if len(b) >= 4 && bytes.Equal(b[:4], header[:4]) {
			return nil, fmt.Errorf("%w: unsupported version %x", ErrMalformed, b[4:min(8, len(b))])
		}
		return nil, fmt.Errorf("%w: missing \\0asm header", ErrMalformed)
	}
	s := &Summary{}
	r := reader{b: b, pos: len(header)}
	for !r.done() {
		id := r.byte()
		size := r.u32()
		if r.err != nil {
			return nil, r.err
		}
		if uint64(size) > uint64(len(r.b)-r.pos) {
			return nil, fmt.Errorf("%w: section %d of %d bytes runs past the end", ErrMalformed, id, size)
		}
		body := reader{b: r.b[r.pos : r.pos+int(size)]}
		r.pos += int(size)
		switch id {
		case SectionCustom:
			s.CustomBytes += uint64(size)
		case SectionImport:
			s.readImports(&body)
		case SectionFunction:
			s.Functions = body.u32()
		case SectionTable:
			for n := body.u32(); n > 0 && body.err == nil; n-- {
				body.byte() // reference type
				s.TableMin += uint64(body.limits())
			}
		case SectionGlobal:
			s.Globals = body.u32()
		case SectionData:
			s.DataBytes = uint64(size)
		}
		if body.err != nil {
			return nil, fmt.Errorf("section %d: %w", id, body.err)
		}
	}
	return s, r.err
}

func (s *Summary) readImports(r *reader) {
	for n := r.u32(); n > 0 && r.err == nil; n-- {
		r.name() // module
		r.name() // field
		switch kind := r.byte(); kind {
		case 0x00: // function: type index
			r.u32()
		case 0x01: // table: reference type, limits
			r.byte()
			s.TableMin += uint64(r.limits())
			s.ImportsTable = true
		case 0x02: // memory: limits
			r.limits()
			s.ImportsMem = true
		case 0x03: // global: value type, mutability
			r.byte()
			r.byte()
		case 0x04: // tag: attribute, type index
			r.byte()
			r.u32()
		default:
			r.fail(fmt.Sprintf("unknown import kind %#x", kind))
		}
	}
}

// reader decodes the binary format; the first error sticks and later reads
// return zero values.
type reader struct {
	b   []byte
	pos int
	err error
}

func (r *reader) done() bool { return r.err != nil || r.pos >= len(r.b) }

func (r *reader) fail(msg string) {
	if r.err == nil {
		r.err = fmt.Errorf("%w: %s at offset %d", ErrMalformed, msg, r.pos)
	}
}

func (r *reader) byte() byte {
	if r.err != nil {
		return 0
	}
	if r.pos >= len(r.b) {
		r.fail("unexpected end")
		return 0
	}
	c := r.b[r.pos]
	r.pos++
	return c
}

// u32 reads an unsigned LEB128 of at most 5 bytes.
func (r *reader) u32() uint32 {
	var v uint64
	for shift := 0; shift < 35; shift += 7 {
		c := r.byte()
		if r.err != nil {
			return 0
		}
		v |= uint64(c&0x7f) << shift
		if c&0x80 == 0 {
			if v > 0xffffffff {
				r.fail("integer too large")
				return 0
			}
			return uint32(v)
		}
	}
	r.fail("integer representation too long")
	return 0
}

func (r *reader) name() {
	n := r.u32()
	if r.err == nil && uint64(n) > uint64(len(r.b)-r.pos) {
		r.fail("name runs past the end")
		return
	}
	r.pos += int(n)
}

// limits reads a limits structure and returns its minimum.
func (r *reader) limits() uint32 {
	flags := r.byte()
	minimum := r.u32()
	if flags&0x01 != 0 {
		r.u32() // maximum
	}
	if flags&^0x07 != 0 {
		r.fail(fmt.Sprintf("unknown limits flags %#x", flags))
	}
	return minimum
}
