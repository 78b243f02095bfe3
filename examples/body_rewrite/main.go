// Command body_rewrite is an example Sluice filter that edits response
// bodies: it injects an HTML snippet into HTML pages, streaming, and
// redacts fields of JSON documents.
//
// Configuration, one rule per line (blank lines and lines starting with #
// ignored):
//
//	inject_html <snippet>   # text/html: insert the snippet before </body>
//	redact_json <field>     # application/json: every member named field, at any depth, becomes "[redacted]"; repeatable
//
// inject_html streams: each chunk goes on as it arrives, except for a tail
// that might be the start of a </body> split across chunks, held until the
// next one. The snippet goes before the first </body> (in any case), or at
// the end of a page that has none. The rest of the line after inject_html is
// the snippet, spaces and # included; several inject_html lines are
// injected one after another.
//
// redact_json holds the whole body (up to the host's max_body_size), so it
// can send it with its real length. A body that is not valid JSON passes
// unchanged, and the filter logs it. Types ending in +json
// (application/problem+json) count as JSON.
//
// A response with a content-encoding (gzip, ...) passes untouched and is
// logged: ask the upstream for uncompressed bodies (reverse_proxy's
// header_up -Accept-Encoding); Caddy's encode compresses them afterwards.
package main

import (
	"errors"
	"strconv"
	"strings"

	"github.com/sluice-edge/sluice/sdk"
)

func main() {}

func init() { sdk.Register(configure) }

// config is the parsed configuration.
type config struct {
	snippet []byte          // inject_html's snippet; nil for none
	redact  map[string]bool // redact_json's field names
}

func configure(p *sdk.Plugin) (sdk.NewFilter, error) {
	c, err := parse(string(p.Config()))
	if err != nil {
		return nil, err
	}
	return func() sdk.Filter { return &filter{config: c} }, nil
}

func parse(text string) (*config, error) {
	c := &config{redact: map[string]bool{}}
	var snippets []string
	for n, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' {
			continue
		}
		rule, arg, _ := strings.Cut(line, " ")
		arg = strings.TrimSpace(arg)
		switch rule {
		case "inject_html":
			if arg == "" {
				return nil, lineError(n, "inject_html needs a snippet")
			}
			snippets = append(snippets, arg)
		case "redact_json":
			if arg == "" || strings.ContainsAny(arg, " \t") {
				return nil, lineError(n, "redact_json takes one field name")
			}
			c.redact[arg] = true
		default:
			return nil, lineError(n, "unknown rule "+strconv.Quote(rule)+": want inject_html or redact_json")
		}
	}
	if snippets != nil {
		c.snippet = []byte(strings.Join(snippets, "\n"))
	}
	if c.snippet == nil && len(c.redact) == 0 {
		return nil, errors.New("no rules: give inject_html <snippet> or redact_json <field>")
	}
	return c, nil
}

func lineError(n int, msg string) error {
	return errors.New("line " + strconv.Itoa(n+1) + ": " + msg)
}

// mode is what the filter does to a response's body.
type mode int

const (
	passThrough mode = iota
	injectHTML
	redactJSON
)

// filter is one response's state.
type filter struct {
	*config
	mode   mode
	inject injector
}

func (f *filter) OnResponseHeaders(s *sdk.Stream, end bool) sdk.Action {
	if end { // no body
		return sdk.Continue
	}
	h := s.ResponseHeaders()
	ctype := mediaType(h.Get("content-type"))
	switch {
	case f.snippet != nil && ctype == "text/html":
		f.mode = injectHTML
	case len(f.redact) > 0 && (ctype == "application/json" || strings.HasSuffix(ctype, "+json")):
		f.mode = redactJSON
	default:
		return sdk.Continue
	}
	if enc := strings.ToLower(strings.TrimSpace(h.Get("content-encoding"))); enc != "" && enc != "identity" {
		s.Log(sdk.LevelWarn, "body_rewrite: leaving a "+ctype+" body encoded with "+enc+" untouched")
		f.mode = passThrough
		return sdk.Continue
	}
	// The body's length changes: the old one must go before the headers do.
	if err := h.Del("content-length"); err != nil {
		s.Log(sdk.LevelError, "body_rewrite: removing content-length: "+err.Error())
	}
	if f.mode == redactJSON {
		// Hold the headers with the body: Sluice then sends the body
		// with its real Content-Length (other hosts send it chunked).
		return sdk.Pause
	}
	f.inject.snippet = f.snippet
	return sdk.Continue
}

func (f *filter) OnResponseBody(s *sdk.Stream, body sdk.Body, end bool) sdk.Action {
	switch f.mode {
	case injectHTML:
		chunk, err := body.Bytes()
		if err != nil {
			s.Log(sdk.LevelError, "body_rewrite: reading the body: "+err.Error())
			return sdk.Continue
		}
		if out, changed := f.inject.feed(chunk, end); changed {
			if err := body.Replace(out); err != nil {
				s.Log(sdk.LevelError, "body_rewrite: replacing the body: "+err.Error())
			}
		}
	case redactJSON:
		if !end {
			return sdk.Pause // the host buffers; the last call has it all
		}
		doc, err := body.Bytes()
		if err != nil {
			s.Log(sdk.LevelError, "body_rewrite: reading the body: "+err.Error())
			return sdk.Continue
		}
		out, ok := redact(doc, f.redact)
		switch {
		case !ok:
			s.Log(sdk.LevelWarn, "body_rewrite: the JSON body is not valid JSON ("+strconv.Itoa(len(doc))+" bytes): left unredacted")
		case out != nil:
			if err := body.Replace(out); err != nil {
				s.Log(sdk.LevelError, "body_rewrite: replacing the body: "+err.Error())
			}
		}
	}
	return sdk.Continue
}

// mediaType is the lower-case media type of a content-type, without
// parameters.
func mediaType(contentType string) string {
	t, _, _ := strings.Cut(contentType, ";")
	return strings.ToLower(strings.TrimSpace(t))
}

// marker is what the snippet goes before.
const marker = "</body>"

// injector inserts a snippet before the first marker of a stream of chunks,
// holding back only a tail that may be the marker's beginning.
type injector struct {
	snippet []byte
	held    []byte // the end of the last chunk, a proper prefix of the marker
	done    bool   // the snippet went out
}

// feed takes the next chunk (end: the last one) and returns what goes out
// in its place; changed is false if that is chunk itself.
func (in *injector) feed(chunk []byte, end bool) (out []byte, changed bool) {
	if in.done {
		return chunk, false
	}
	data := chunk
	if len(in.held) > 0 {
		data = append(in.held, chunk...)
		in.held = nil
	}
	if i := indexFold(data, marker); i >= 0 {
		in.done = true
		out = make([]byte, 0, len(data)+len(in.snippet))
		out = append(append(append(out, data[:i]...), in.snippet...), data[i:]...)
		return out, true
	}
	if end {
		in.done = true
		return append(data[:len(data):len(data)], in.snippet...), true
	}
	k := partialSuffix(data, marker)
	if k == 0 && len(data) == len(chunk) {
		return chunk, false
	}
	in.held = append([]byte(nil), data[len(data)-k:]...)
	return data[:len(data)-k], true
}

// indexFold is the index of the first ASCII-case-insensitive match of
// lower (a lower-case string) in b, or -1.
func indexFold(b []byte, lower string) int {
	for i := 0; i+len(lower) <= len(b); i++ {
		if hasPrefixFold(b[i:], lower) {
			return i
		}
	}
	return -1
}

// partialSuffix is the length of the longest suffix of b that is a proper
// prefix of lower, ignoring ASCII case: what may continue into the marker in
// the next chunk.
func partialSuffix(b []byte, lower string) int {
	for k := min(len(lower)-1, len(b)); k > 0; k-- {
		if hasPrefixFold(b[len(b)-k:], lower[:k]) {
			return k
		}
	}
	return 0
}

func hasPrefixFold(b []byte, lower string) bool {
	if len(b) < len(lower) {
		return false
	}
	for i := 0; i < len(lower); i++ {
		c := b[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != lower[i] {
			return false
		}
	}
	return true
}
