// Command header_rewrite is an example Sluice filter: it adds, sets,
// removes and renames request and response headers as its configuration
// says, and can give every response a set of security headers.
//
// Configuration, one rule per line (blank lines and # comments ignored):
//
//	request  set    <name> <value>   # replace the header
//	request  add    <name> <value>   # add a value, keeping the others
//	request  remove <name>
//	request  rename <old> <new>      # move the values to a new name
//	response set|add|remove|rename ...  # the same, on the response
//	security_headers                 # HSTS, nosniff, frame DENY, referrer policy; drop server, x-powered-by
package main

import (
	"errors"
	"strconv"
	"strings"

	"github.com/sluice-edge/sluice/sdk"
)

func main() {}

func init() { sdk.Register(configure) }

// rule is one header operation.
type rule struct {
	op, name, value string
}

// rules are the operations for each direction, in order.
type rules struct{ request, response []rule }

// securityHeaders are set on every response with security_headers on.
var securityHeaders = []rule{
	{"set", "strict-transport-security", "max-age=63072000; includeSubDomains"},
	{"set", "x-content-type-options", "nosniff"},
	{"set", "x-frame-options", "DENY"},
	{"set", "referrer-policy", "strict-origin-when-cross-origin"},
	{"remove", "server", ""},
	{"remove", "x-powered-by", ""},
}

func configure(p *sdk.Plugin) (sdk.NewFilter, error) {
	r, err := parse(string(p.Config()))
	if err != nil {
		return nil, err
	}
	return func() sdk.Filter { return r }, nil
}

func parse(config string) (*rules, error) {
	r := &rules{}
	for n, line := range strings.Split(config, "\n") {
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		if len(f) == 1 && f[0] == "security_headers" {
			r.response = append(r.response, securityHeaders...)
			continue
		}
		var list *[]rule
		switch f[0] {
		case "request":
			list = &r.request
		case "response":
			list = &r.response
		default:
			return nil, lineError(n, "starts with "+f[0]+", not request, response or security_headers")
		}
		if len(f) < 3 {
			return nil, lineError(n, "needs an operation and a header name")
		}
		op, name, value := f[1], strings.ToLower(f[2]), strings.Join(f[3:], " ")
		switch {
		case op == "remove" && value == "":
		case (op == "set" || op == "add") && value != "":
		case op == "rename" && len(f) == 4:
			value = strings.ToLower(value)
		default:
			return nil, lineError(n, "bad rule: want set|add <name> <value>, remove <name> or rename <old> <new>")
		}
		*list = append(*list, rule{op, name, value})
	}
	return r, nil
}

func lineError(n int, msg string) error {
	return errors.New("line " + strconv.Itoa(n+1) + ": " + msg)
}

func (r *rules) OnRequestHeaders(s *sdk.Stream, _ bool) sdk.Action {
	apply(s, s.RequestHeaders(), r.request)
	return sdk.Continue
}

func (r *rules) OnResponseHeaders(s *sdk.Stream, _ bool) sdk.Action {
	apply(s, s.ResponseHeaders(), r.response)
	return sdk.Continue
}

func apply(s *sdk.Stream, h sdk.Headers, rules []rule) {
	for _, r := range rules {
		var err error
		switch r.op {
		case "set":
			err = h.Set(r.name, r.value)
		case "add":
			err = h.Add(r.name, r.value)
		case "remove":
			err = h.Del(r.name)
		case "rename":
			if v, ok := h.Lookup(r.name); ok {
				if err = h.Del(r.name); err == nil {
					err = h.Set(r.value, v)
				}
			}
		}
		if err != nil {
			s.Log(sdk.LevelError, r.op+" "+r.name+": "+err.Error())
		}
	}
}
