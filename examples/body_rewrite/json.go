package main

import (
	"unicode/utf16"
	"unicode/utf8"
)

// redacted replaces the value of each redacted member.
const redacted = `"[redacted]"`

// maxDepth bounds the nesting of arrays and objects, as encoding/json does.
const maxDepth = 10000

// redact replaces the value of every object member whose name is in fields,
// at any depth, with "[redacted]", and keeps every other byte of doc as it
// is. ok is false if doc is not valid JSON (RFC 8259); out is nil if
// nothing was redacted.
func redact(doc []byte, fields map[string]bool) (out []byte, ok bool) {
	p := &jsonScanner{doc: doc, fields: fields}
	p.space()
	if !p.value(0) {
		return nil, false
	}
	p.space()
	if p.pos != len(doc) {
		return nil, false
	}
	if len(p.spans) == 0 {
		return nil, true
	}
	out = make([]byte, 0, len(doc))
	last := 0
	for _, s := range p.spans {
		out = append(append(out, doc[last:s[0]]...), redacted...)
		last = s[1]
	}
	return append(out, doc[last:]...), true
}

// jsonScanner validates a JSON document and notes the spans of the values
// to redact.
type jsonScanner struct {
	doc    []byte
	pos    int
	fields map[string]bool
	spans  [][2]int
	name   []byte // scratch for member names
}

func (p *jsonScanner) space() {
	for p.pos < len(p.doc) {
		switch p.doc[p.pos] {
		case ' ', '\t', '\n', '\r':
			p.pos++
		default:
			return
		}
	}
}

// value scans one value at p.pos.
func (p *jsonScanner) value(depth int) bool {
	if p.pos >= len(p.doc) {
		return false
	}
	switch c := p.doc[p.pos]; {
	case c == '{':
		return depth < maxDepth && p.object(depth+1)
	case c == '[':
		return depth < maxDepth && p.array(depth+1)
	case c == '"':
		_, ok := p.str(false)
		return ok
	case c == 't':
		return p.literal("true")
	case c == 'f':
		return p.literal("false")
	case c == 'n':
		return p.literal("null")
	case c == '-' || '0' <= c && c <= '9':
		return p.number()
	}
	return false
}

func (p *jsonScanner) object(depth int) bool {
	p.pos++ // {
	p.space()
	if p.pos < len(p.doc) && p.doc[p.pos] == '}' {
		p.pos++
		return true
	}
	for {
		if p.pos >= len(p.doc) || p.doc[p.pos] != '"' {
			return false
		}
		name, ok := p.str(true)
		if !ok {
			return false
		}
		redactIt := p.fields[string(name)] // before the value's strings reuse name
		p.space()
		if p.pos >= len(p.doc) || p.doc[p.pos] != ':' {
			return false
		}
		p.pos++
		p.space()
		start := p.pos
		if !p.value(depth) {
			return false
		}
		if redactIt {
			// Spans inside this value (noted first, as they ended first)
			// go: this one covers them.
			for n := len(p.spans); n > 0 && p.spans[n-1][0] >= start; n-- {
				p.spans = p.spans[:n-1]
			}
			p.spans = append(p.spans, [2]int{start, p.pos})
		}
		p.space()
		if p.pos >= len(p.doc) {
			return false
		}
		switch p.doc[p.pos] {
		case ',':
			p.pos++
			p.space()
		case '}':
			p.pos++
			return true
		default:
			return false
		}
	}
}

func (p *jsonScanner) array(depth int) bool {
	p.pos++ // [
	p.space()
	if p.pos < len(p.doc) && p.doc[p.pos] == ']' {
		p.pos++
		return true
	}
	for {
		if !p.value(depth) {
			return false
		}
		p.space()
		if p.pos >= len(p.doc) {
			return false
		}
		switch p.doc[p.pos] {
		case ',':
			p.pos++
			p.space()
		case ']':
			p.pos++
			return true
		default:
			return false
		}
	}
}

// str scans a string; with decode, it returns its decoded text (valid
// until the next call).
func (p *jsonScanner) str(decode bool) ([]byte, bool) {
	p.pos++ // "
	p.name = p.name[:0]
	for p.pos < len(p.doc) {
		c := p.doc[p.pos]
		switch {
		case c == '"':
			p.pos++
			return p.name, true
		case c < 0x20:
			return nil, false
		case c == '\\':
			if p.pos+1 >= len(p.doc) {
				return nil, false
			}
			esc := p.doc[p.pos+1]
			p.pos += 2
			var r rune
			switch esc {
			case '"', '\\', '/':
				r = rune(esc)
			case 'b':
				r = '\b'
			case 'f':
				r = '\f'
			case 'n':
				r = '\n'
			case 'r':
				r = '\r'
			case 't':
				r = '\t'
			case 'u':
				var ok bool
				if r, ok = p.hex4(); !ok {
					return nil, false
				}
				if utf16.IsSurrogate(r) {
					r2 := rune(-1)
					if p.pos+1 < len(p.doc) && p.doc[p.pos] == '\\' && p.doc[p.pos+1] == 'u' {
						save := p.pos
						p.pos += 2
						if r2, ok = p.hex4(); !ok {
							return nil, false
						}
						if d := utf16.DecodeRune(r, r2); d != utf8.RuneError {
							r = d
							break
						}
						p.pos = save // not a pair: the second escape stands alone
					}
					r = utf8.RuneError
				}
			default:
				return nil, false
			}
			if decode {
				p.name = utf8.AppendRune(p.name, r)
			}
		default:
			if decode {
				p.name = append(p.name, c)
			}
			p.pos++
		}
	}
	return nil, false
}

func (p *jsonScanner) hex4() (rune, bool) {
	if p.pos+4 > len(p.doc) {
		return 0, false
	}
	var r rune
	for _, c := range p.doc[p.pos : p.pos+4] {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c -= 'a' - 10
		case 'A' <= c && c <= 'F':
			c -= 'A' - 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	p.pos += 4
	return r, true
}

func (p *jsonScanner) literal(word string) bool {
	if len(p.doc)-p.pos < len(word) || string(p.doc[p.pos:p.pos+len(word)]) != word {
		return false
	}
	p.pos += len(word)
	return true
}

// number scans -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func (p *jsonScanner) number() bool {
	if p.doc[p.pos] == '-' {
		p.pos++
	}
	switch {
	case p.pos < len(p.doc) && p.doc[p.pos] == '0':
		p.pos++
	case p.digits() == 0:
		return false
	}
	if p.pos < len(p.doc) && p.doc[p.pos] == '.' {
		p.pos++
		if p.digits() == 0 {
			return false
		}
	}
	if p.pos < len(p.doc) && (p.doc[p.pos] == 'e' || p.doc[p.pos] == 'E') {
		p.pos++
		if p.pos < len(p.doc) && (p.doc[p.pos] == '+' || p.doc[p.pos] == '-') {
			p.pos++
		}
		if p.digits() == 0 {
			return false
		}
	}
	return true
}

func (p *jsonScanner) digits() int {
	start := p.pos
	for p.pos < len(p.doc) && '0' <= p.doc[p.pos] && p.doc[p.pos] <= '9' {
		p.pos++
	}
	return p.pos - start
}
