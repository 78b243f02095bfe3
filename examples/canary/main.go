// Command canary is an example Sluice filter that picks, per request,
// whether it goes to the canary or the stable backend, and leaves the
// routing to Caddy: it sets the property "route" ({http.wasm_filter.route}
// in the Caddyfile) and the request header x-route to "canary" or "stable".
//
// Configuration, one rule per line (blank lines and # comments ignored):
//
//	header <name> <value>   # canary when the request header has this value; repeatable
//	cookie <name> <value>   # canary when the request has this cookie; repeatable
//	percent <N>             # otherwise N% of clients (0-100, default 0) go canary
//	sticky_header <name>    # a client is the value of this header; without it, its IP
//
// A header or cookie rule that matches sends the request to the canary
// whatever the percentage. The percentage is sticky: a client's value (the
// sticky header's, or its IP from source.address) is hashed with FNV-1a
// into a bucket 0-99, and buckets below N go canary, so the same client
// takes the same route every time, and raising N only adds clients.
package main

import (
	"errors"
	"strconv"
	"strings"

	"github.com/sluice-edge/sluice/sdk"
)

func main() {}

func init() { sdk.Register(configure) }

const (
	canary = "canary"
	stable = "stable"
)

// config is the parsed configuration; one value serves every request.
type config struct {
	headers [][2]string // name (lower case), value
	cookies [][2]string
	percent uint32
	sticky  string // header naming the client; "" for the IP
}

func configure(p *sdk.Plugin) (sdk.NewFilter, error) {
	c, err := parse(string(p.Config()))
	if err != nil {
		return nil, err
	}
	return func() sdk.Filter { return c }, nil
}

func parse(text string) (*config, error) {
	c := &config{}
	seen := map[string]bool{}
	for n, line := range strings.Split(text, "\n") {
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		rule := f[0]
		if (rule == "percent" || rule == "sticky_header") && seen[rule] {
			return nil, lineError(n, rule+" given twice")
		}
		seen[rule] = true
		switch {
		case rule == "header" && len(f) == 3:
			c.headers = append(c.headers, [2]string{strings.ToLower(f[1]), f[2]})
		case rule == "cookie" && len(f) == 3:
			c.cookies = append(c.cookies, [2]string{f[1], f[2]})
		case rule == "percent" && len(f) == 2:
			v, err := strconv.ParseUint(strings.TrimSuffix(f[1], "%"), 10, 32)
			if err != nil || v > 100 {
				return nil, lineError(n, "percent wants a whole number from 0 to 100, not "+f[1])
			}
			c.percent = uint32(v)
		case rule == "sticky_header" && len(f) == 2:
			c.sticky = strings.ToLower(f[1])
		case rule == "header" || rule == "cookie":
			return nil, lineError(n, rule+" wants a name and a value")
		case rule == "percent" || rule == "sticky_header":
			return nil, lineError(n, rule+" wants one value")
		default:
			return nil, lineError(n, "unknown rule "+strconv.Quote(rule)+": want header, cookie, percent or sticky_header")
		}
	}
	return c, nil
}

func lineError(n int, msg string) error {
	return errors.New("line " + strconv.Itoa(n+1) + ": " + msg)
}

func (c *config) OnRequestHeaders(s *sdk.Stream, _ bool) sdk.Action {
	route := c.route(s)
	if err := s.SetProperty("route", route); err != nil {
		s.Log(sdk.LevelError, "canary: setting the route property: "+err.Error())
	}
	if err := s.RequestHeaders().Set("x-route", route); err != nil {
		s.Log(sdk.LevelError, "canary: setting x-route: "+err.Error())
	}
	return sdk.Continue
}

// route decides the request's route.
func (c *config) route(s *sdk.Stream) string {
	h := s.RequestHeaders()
	for _, rule := range c.headers {
		if v, ok := h.Lookup(rule[0]); ok && strings.TrimSpace(v) == rule[1] {
			return canary
		}
	}
	if len(c.cookies) > 0 {
		if header, ok := h.Lookup("cookie"); ok {
			for _, rule := range c.cookies {
				if v, ok := cookie(header, rule[0]); ok && v == rule[1] {
					return canary
				}
			}
		}
	}
	switch c.percent {
	case 0:
		return stable
	case 100:
		return canary
	}
	client := ""
	if c.sticky != "" {
		client = h.Get(c.sticky)
	}
	if client == "" {
		addr, _ := s.Property("source.address")
		client = host(string(addr))
	}
	if fnv1a(client)%100 < c.percent {
		return canary
	}
	return stable
}

// cookie finds the cookie name in a Cookie header ("a=1; b=2"; several
// Cookie headers joined with "," count too, since cookie values have no
// comma).
func cookie(header, name string) (string, bool) {
	for header != "" {
		var pair string
		if i := strings.IndexAny(header, ";,"); i >= 0 {
			pair, header = header[:i], header[i+1:]
		} else {
			pair, header = header, ""
		}
		k, v, _ := strings.Cut(strings.TrimSpace(pair), "=")
		if k == name {
			return strings.Trim(v, `"`), true
		}
	}
	return "", false
}

// host is the IP of an "ip:port" or "[ipv6]:port" address (or of a bare
// IP).
func host(addr string) string {
	if strings.HasPrefix(addr, "[") {
		if i := strings.IndexByte(addr, ']'); i > 0 {
			return addr[1:i]
		}
	}
	if strings.Count(addr, ":") == 1 {
		addr, _, _ = strings.Cut(addr, ":")
	}
	return addr
}

// fnv1a is the 32-bit FNV-1a hash of s.
func fnv1a(s string) uint32 {
	h := uint32(2166136261)
	for i := 0; i < len(s); i++ {
		h ^= uint32(s[i])
		h *= 16777619
	}
	return h
}
