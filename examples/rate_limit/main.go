// Command rate_limit is an example Sluice filter: a token bucket per
// client, kept in the tenant's shared data so that every request's fresh
// instance sees the tokens the others took.
//
// Configuration, one setting per line (blank lines and # comments ignored):
//
//	rate <tokens per second>   # refill rate, > 0; fractions allowed (0.5 = one every 2 s)
//	burst <n>                  # bucket size: requests a client may send at once, >= 1
//	key ip                     # one bucket per client IP, an IPv6 client's /64 (the default)
//	key header <name>          # one per value of the header; without it, the client IP
//	buckets <n>                # shared-data keys the clients hash into (default 1024)
//
// rate and burst are required. A request that finds no token is answered
// 429 with Retry-After (whole seconds until a token, at least 1),
// x-ratelimit-limit and x-ratelimit-remaining; a request let through gets
// both x-ratelimit headers on its response. The counter metric
// rate_limit_rejected counts the 429s, rate_limit_failed_open the requests
// let through unlimited because the filter could not do its job.
//
// Shared data has no delete, so clients are hashed into a fixed set of
// buckets, created when the filter is configured: clients whose keys hash
// alike share a bucket. The hash is SipHash-2-4 keyed with 16 random bytes
// (the seed) that the first configuration makes and keeps in shared data,
// so that a client picking its key cannot aim at another client's bucket.
// Each bucket is 16 bytes (tokens as a float64, the last refill in Unix
// nanoseconds) updated with compare-and-swap. If the store fails or stays
// contended, the request goes through (fail open) and the filter logs why.
package main

import (
	"errors"
	"math"
	"math/bits"
	"strconv"
	"strings"

	"github.com/sluice-edge/sluice/sdk"
)

func main() {}

func init() { sdk.Register(configureWith(sdk.RandomBytes)) }

const (
	// defaultBuckets is small since shared data has no delete: every
	// distinct configuration keeps its buckets+2 keys until Caddy restarts.
	defaultBuckets = 1024
	// maxBuckets keeps the filter within a tenant's shared-data quota in
	// Sluice (10,000 keys per vm_id, shared with the tenant's other filters
	// and with the buckets of configurations loaded before).
	maxBuckets = 8192
	// attempts bounds the compare-and-swap retries of one request. A retry
	// is needed only when another request took a token in between, so a
	// request fails open only under that many concurrent successes.
	attempts = 16
	// valueSize is a bucket's encoding: float64 tokens, int64 nanoseconds.
	valueSize = 16
	// seedSize is the hash key's size: SipHash's 128 bits.
	seedSize = 16
	// createOnly is the cas of a write meant to create a key only if it is
	// absent. A write to a new key ignores cas, and one to an existing key
	// whose version is not this is refused. Sluice and Envoy number versions
	// with a counter, so only a key last written by the 4,294,967,295th write
	// of its namespace (Sluice) or process (Envoy) could have it.
	createOnly = ^uint32(0)
)

// limiter is a configured rate limit, shared by every request.
type limiter struct {
	rate    float64 // tokens per second
	burst   float64
	header  string // the key header; "" means key by IP
	buckets uint32
	// prefix is the shared-data key prefix:
	// "rate_limit/<filter name>/<digest of the configuration>/".
	prefix string
	k0, k1 uint64 // the seed, SipHash's key

	limit      string // burst, formatted for x-ratelimit-limit
	rejected   counter
	failedOpen counter
}

// counter is a metric that only goes up: an sdk.Counter, or a test's.
type counter interface{ Add(n uint64) error }

// configureWith is the filter's configure function, with random as the
// source of the seed (the host's randomness; a test's fixed bytes).
func configureWith(random func([]byte) error) sdk.Configure {
	return func(p *sdk.Plugin) (sdk.NewFilter, error) {
		l, err := parse(string(p.Config()))
		if err != nil {
			return nil, err
		}
		name, _ := p.Property("plugin_name")
		if err := l.setUp(p, string(name), random); err != nil {
			return nil, err
		}
		l.rejected = defineCounter(p, "rate_limit_rejected")
		l.failedOpen = defineCounter(p, "rate_limit_failed_open")
		return func() sdk.Filter { return &request{l: l, remaining: -1} }, nil
	}
}

func defineCounter(p *sdk.Plugin, name string) counter {
	c, err := p.Counter(name)
	if err != nil {
		p.Log(sdk.LevelWarn, "rate_limit: defining the metric "+name+": "+err.Error())
	}
	return c // a zero Counter if the definition failed: it ignores Add
}

func parse(config string) (*limiter, error) {
	l := &limiter{buckets: defaultBuckets}
	seen := map[string]bool{}
	for n, line := range strings.Split(config, "\n") {
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		if seen[f[0]] {
			return nil, lineError(n, f[0]+" given twice")
		}
		seen[f[0]] = true
		switch {
		case f[0] == "rate" && len(f) == 2:
			r, err := strconv.ParseFloat(f[1], 64)
			if err != nil || !(r > 0) || math.IsInf(r, 0) {
				return nil, lineError(n, "rate must be a number of tokens per second above 0, not "+f[1])
			}
			l.rate = r
		case f[0] == "burst" && len(f) == 2:
			b, err := strconv.Atoi(f[1])
			if err != nil || b < 1 || b > 1<<30 {
				return nil, lineError(n, "burst must be a whole number of tokens, at least 1, not "+f[1])
			}
			l.burst = float64(b)
			l.limit = strconv.Itoa(b) // "5" for "+5" or "05"
		case f[0] == "key" && len(f) == 2 && f[1] == "ip":
		case f[0] == "key" && len(f) == 3 && f[1] == "header":
			l.header = strings.ToLower(f[2])
		case f[0] == "buckets" && len(f) == 2:
			b, err := strconv.Atoi(f[1])
			if err != nil || b < 1 || b > maxBuckets {
				return nil, lineError(n, "buckets must be between 1 and "+strconv.Itoa(maxBuckets)+", not "+f[1])
			}
			l.buckets = uint32(b)
		case f[0] == "key":
			return nil, lineError(n, "want key ip or key header <name>")
		case f[0] == "rate" || f[0] == "burst" || f[0] == "buckets":
			return nil, lineError(n, f[0]+" takes one value")
		default:
			return nil, lineError(n, "unknown setting "+f[0]+": want rate, burst, key or buckets")
		}
	}
	if l.rate == 0 || l.burst == 0 {
		return nil, errors.New("rate and burst are required")
	}
	return l, nil
}

func lineError(n int, msg string) error {
	return errors.New("line " + strconv.Itoa(n+1) + ": " + msg)
}

// setUp readies the limiter's shared data for the filter named name: its
// key prefix, its seed and its buckets.
//
// Filters of one vm_id share its data. The filter's name alone does not
// keep two limiters apart: it defaults to the .wasm file's name (and vm_id
// to the name), so two unnamed rate_limit filters would share buckets with
// different rates and bursts. The prefix also has a digest of the
// settings, so that limiters configured differently never share buckets;
// two filters with the same name and settings in a vm_id do share them.
func (l *limiter) setUp(s store, name string, random func([]byte) error) error {
	l.prefix = "rate_limit/" + name + "/" + l.digest() + "/"
	seed, err := loadSeed(s, l.prefix+"seed", random)
	if err != nil {
		return errors.New("the hash seed " + l.prefix + "seed: " + err.Error())
	}
	l.k0, l.k1 = get64(seed[:8]), get64(seed[8:])
	return l.createBuckets(s)
}

// digest is 8 hex digits that differ, but for one pair in 2^32, between
// limiters whose rate, burst, key or buckets differ.
func (l *limiter) digest() string {
	key := "ip"
	if l.header != "" {
		key = "header " + l.header
	}
	h := fnv1a("rate " + strconv.FormatFloat(l.rate, 'g', -1, 64) +
		"\nburst " + l.limit + "\nkey " + key + "\nbuckets " + strconv.Itoa(int(l.buckets)))
	var b [8]byte
	for i := len(b) - 1; i >= 0; i-- {
		b[i] = hexDigits[h&15]
		h >>= 4
	}
	return string(b[:])
}

// loadSeed returns the seed stored at key, first storing one from random
// if there is none. Every configuration of the same prefix (every request's
// instance, a reload, another site with the same filter) must hash alike,
// so what is stored wins: a configuration that finds none writes its own
// with a cas only a new key accepts (see createOnly), and whether or not
// the write went in, reads again and uses what is there. Two
// configurations racing to create the seed thus agree.
func loadSeed(s store, key string, random func([]byte) error) (seed [seedSize]byte, err error) {
	for range attempts {
		v, cas, err := s.SharedData(key)
		switch {
		case err == nil && len(v) == seedSize:
			copy(seed[:], v)
			return seed, nil
		case err == nil: // replaced, with the cas just read: racing repairs agree too
			s.Log(sdk.LevelWarn, "rate_limit: "+key+" holds "+strconv.Itoa(len(v))+" bytes, not a seed; replaced")
		case errors.Is(err, sdk.ErrNotFound):
			cas = createOnly
		default:
			return seed, err
		}
		var fresh [seedSize]byte
		if err := random(fresh[:]); err != nil {
			return seed, errors.New("no randomness: " + err.Error())
		}
		if err := s.SetSharedData(key, fresh[:], cas); err != nil && !errors.Is(err, sdk.ErrCASMismatch) {
			return seed, err
		}
	}
	return seed, errors.New("still contended after " + strconv.Itoa(attempts) + " attempts")
}

// createBuckets makes sure every bucket exists, full, before any request
// uses it. Shared data cannot reliably create a key only if it is absent (a
// write to a new key ignores cas), so requests racing to create a bucket
// could each take a token from their own copy; here, at configuration, no
// request runs on these buckets yet. A marker key makes it one read once
// done (Sluice configures once per load; with snapshot off, once per
// request).
func (l *limiter) createBuckets(s store) error {
	marker := l.prefix + "buckets"
	count := strconv.Itoa(int(l.buckets))
	if v, _, err := s.SharedData(marker); err == nil && string(v) == count {
		return nil
	}
	t := sdk.Now()
	if t == 0 {
		return errors.New("the host has no clock")
	}
	full := encode(l.burst, t)
	for b := uint32(0); b < l.buckets; b++ {
		key := l.prefix + strconv.Itoa(int(b))
		_, _, err := s.SharedData(key)
		if errors.Is(err, sdk.ErrNotFound) {
			err = s.SetSharedData(key, full, 0)
		}
		if err != nil {
			return errors.New("creating the bucket " + key + " in shared data: " + err.Error())
		}
	}
	if err := s.SetSharedData(marker, []byte(count), 0); err != nil {
		return errors.New("writing " + marker + " in shared data: " + err.Error())
	}
	return nil
}

// request is one request's limiter state: what to tell the client.
type request struct {
	l         *limiter
	remaining int // tokens left after this request's; -1: not limited (failed open)
}

func (r *request) OnRequestHeaders(s *sdk.Stream, _ bool) sdk.Action {
	l := r.l
	header := ""
	if l.header != "" {
		header = s.RequestHeaders().Get(l.header)
	}
	var addr []byte
	if header == "" {
		addr, _ = s.Property("source.address")
	}
	allowed, tokens := l.admit(s, clientKey(header, string(addr)))
	if allowed {
		r.remaining = int(tokens)
		return sdk.Continue
	}
	return s.Respond(429, [][2]string{
		{"retry-after", strconv.FormatInt(retryAfter(tokens, l.rate), 10)},
		{"x-ratelimit-limit", l.limit},
		{"x-ratelimit-remaining", "0"},
		{"content-type", "text/plain; charset=utf-8"},
	}, []byte("rate limit exceeded\n"))
}

func (r *request) OnResponseHeaders(s *sdk.Stream, _ bool) sdk.Action {
	if r.remaining >= 0 {
		h := s.ResponseHeaders()
		_ = h.Set("x-ratelimit-limit", r.l.limit)
		_ = h.Set("x-ratelimit-remaining", strconv.Itoa(r.remaining))
	}
	return sdk.Continue
}

// admit decides a request of the client key ("": no client known). Let
// through, tokens is what is left after its token, or -1 if the filter
// failed open; refused, it is the fraction of a token the bucket has.
func (l *limiter) admit(s store, key string) (allowed bool, tokens float64) {
	if key == "" {
		l.failOpen(s, "the request has no client address")
		return true, -1
	}
	bucket := l.bucket(key)
	allowed, tokens, err := l.take(s, bucket)
	if err != nil {
		l.failOpen(s, bucket+": "+err.Error())
		return true, -1
	}
	if !allowed {
		_ = l.rejected.Add(1)
	}
	return allowed, tokens
}

// failOpen lets a request through unlimited, saying why.
func (l *limiter) failOpen(s store, why string) {
	s.Log(sdk.LevelWarn, "rate_limit: "+why+"; not limited")
	_ = l.failedOpen.Add(1)
}

// bucket is the shared-data key of the client key's bucket.
func (l *limiter) bucket(key string) string {
	return l.prefix + strconv.FormatUint(siphash(l.k0, l.k1, key)%uint64(l.buckets), 10)
}

// clientKey is the client a request counts for, from the key header's
// value (if the filter keys on one) and source.address: "h:<value>", or
// "ip:<client IP>", so that a header value cannot name an IP's key. "" if
// there is neither.
func clientKey(header, addr string) string {
	switch {
	case header != "":
		return "h:" + header
	case addr != "":
		return "ip:" + clientIP(hostOf(addr))
	}
	return ""
}

// hostOf is the host part of "ip:port" or "[ipv6]:port"; an address
// without a port is returned whole.
func hostOf(addr string) string {
	if strings.HasPrefix(addr, "[") {
		if i := strings.IndexByte(addr, ']'); i > 0 {
			return addr[1:i]
		}
		return addr
	}
	if i := strings.LastIndexByte(addr, ':'); i >= 0 && strings.IndexByte(addr, ':') == i {
		return addr[:i]
	}
	return addr // a bare IPv6 address, or no port
}

// clientIP is what identifies a client in its IP address: an IPv4 address
// whole, but only the /64 of an IPv6 one (written "2001:0db8:0000:0001::/64"),
// since a single host commonly has a /64 and may use any address in it. An
// IPv4-mapped IPv6 address is its IPv4 address; anything else (not an IP
// address) is returned as it is.
func clientIP(host string) string {
	ip, ok := parseIPv6(host)
	switch {
	case !ok:
		return host
	case get64(ip[:8]) == 0 && ip[8]|ip[9] == 0 && ip[10]&ip[11] == 0xff:
		return strconv.Itoa(int(ip[12])) + "." + strconv.Itoa(int(ip[13])) + "." +
			strconv.Itoa(int(ip[14])) + "." + strconv.Itoa(int(ip[15]))
	}
	b := []byte("xxxx:xxxx:xxxx:xxxx::/64")
	for i, c := range ip[:8] {
		j := i/2*5 + i%2*2
		b[j], b[j+1] = hexDigits[c>>4], hexDigits[c&15]
	}
	return string(b)
}

const hexDigits = "0123456789abcdef"

// parseIPv6 parses an IPv6 address in any of its textual forms (RFC 4291:
// "::" for zero groups, an IPv4 address for the last 32 bits), without a
// zone ("%eth0", which names the host's interface, is ignored). ok is false
// for anything else, an IPv4 address too. (net/netip would add 180 KB to
// the module.)
func parseIPv6(s string) (ip [16]byte, ok bool) {
	if i := strings.IndexByte(s, '%'); i >= 0 {
		s = s[:i]
	}
	if strings.IndexByte(s, ':') < 0 {
		return ip, false
	}
	n, ellipsis := 0, -1 // bytes of ip parsed; where "::" is, -1 if nowhere
	if strings.HasPrefix(s, "::") {
		ellipsis, s = 0, s[2:]
	}
	for s != "" {
		if strings.IndexByte(s, ':') < 0 && strings.IndexByte(s, '.') >= 0 { // an IPv4 tail
			if n > 12 || !parseIPv4(s, ip[n:n+4]) {
				return ip, false
			}
			n += 4
			break
		}
		if n == 16 {
			return ip, false
		}
		v, i := 0, 0
		for ; i < len(s) && i < 5; i++ {
			d := hexDigit(s[i])
			if d < 0 {
				break
			}
			v = v<<4 | d
		}
		if i == 0 || i == 5 { // no digit, or more than 4
			return ip, false
		}
		ip[n], ip[n+1] = byte(v>>8), byte(v)
		n += 2
		if s = s[i:]; s == "" {
			break
		}
		if s[0] != ':' || len(s) == 1 { // a group ends with ':', followed by more
			return ip, false
		}
		if s = s[1:]; s[0] == ':' {
			if ellipsis >= 0 {
				return ip, false
			}
			ellipsis, s = n, s[1:]
		}
	}
	switch {
	case ellipsis < 0 && n < 16, ellipsis >= 0 && n == 16: // "::" stands for 1 group or more
		return ip, false
	case ellipsis >= 0:
		gap := 16 - n
		copy(ip[ellipsis+gap:], ip[ellipsis:n])
		clear(ip[ellipsis : ellipsis+gap])
	}
	return ip, true
}

func hexDigit(c byte) int {
	switch {
	case '0' <= c && c <= '9':
		return int(c - '0')
	case 'a' <= c && c <= 'f':
		return int(c-'a') + 10
	case 'A' <= c && c <= 'F':
		return int(c-'A') + 10
	}
	return -1
}

// parseIPv4 parses dotted-decimal s (4 numbers of 0 to 255, no leading
// zeros) into b's 4 bytes.
func parseIPv4(s string, b []byte) bool {
	for i := range 4 {
		if i > 0 {
			if s == "" || s[0] != '.' {
				return false
			}
			s = s[1:]
		}
		v, n := 0, 0
		for ; n < len(s) && n < 4 && '0' <= s[n] && s[n] <= '9'; n++ {
			v = v*10 + int(s[n]-'0')
		}
		if n == 0 || n > 3 || v > 255 || (n > 1 && s[0] == '0') {
			return false
		}
		b[i], s = byte(v), s[n:]
	}
	return s == ""
}

// store is the shared data the limiter uses: a *sdk.Plugin or *sdk.Stream,
// or a test's.
type store interface {
	SharedData(key string) ([]byte, uint32, error)
	SetSharedData(key string, value []byte, cas uint32) error
	Log(level sdk.Level, msg string)
}

// take refills the bucket for the time passed and takes a token if there is
// one, with compare-and-swap. It returns whether a token was taken and the
// tokens left. A refused request writes nothing (the refill it computed is
// computed again, the same, by the next request), but for a bucket last
// refilled in the future: the clock went back, and the bucket restarts its
// refill from now, without adding tokens, since otherwise it would stay
// empty until the clock caught up.
func (l *limiter) take(s store, key string) (allowed bool, tokens float64, err error) {
	for range attempts {
		v, cas, err := s.SharedData(key)
		t := sdk.Now()
		if t == 0 {
			return false, 0, errors.New("the host has no clock")
		}
		tokens, last := l.burst, t
		switch {
		case err == nil && len(v) == valueSize:
			tokens, last = decode(v)
		case err == nil:
			s.Log(sdk.LevelWarn, "rate_limit: "+key+" holds "+strconv.Itoa(len(v))+" bytes, not a bucket; refilled")
		case errors.Is(err, sdk.ErrNotFound):
			cas = 0 // not created at configuration (lost?): create it
		default:
			return false, 0, err
		}
		elapsed := t - last
		if elapsed > 0 {
			tokens += float64(elapsed) * l.rate / 1e9
		}
		last = t
		if !(tokens <= l.burst) { // also a NaN, or a burst lowered by a reload
			tokens = l.burst
		}
		allowed := tokens >= 1
		if allowed {
			tokens--
		} else if elapsed >= 0 {
			return false, tokens, nil
		}
		err = s.SetSharedData(key, encode(tokens, last), cas)
		switch {
		case err == nil:
			return allowed, tokens, nil
		case errors.Is(err, sdk.ErrCASMismatch):
			continue
		case !allowed: // refused all the same; the next request tries the reset again
			s.Log(sdk.LevelWarn, "rate_limit: "+key+": resetting a refill time in the future: "+err.Error())
			return false, tokens, nil
		}
		return false, 0, err
	}
	return false, 0, errors.New("still contended after " + strconv.Itoa(attempts) + " attempts")
}

// retryAfter is the whole seconds until the bucket has a token again, at
// least 1.
func retryAfter(tokens, rate float64) int64 {
	secs := math.Ceil((1 - tokens) / rate)
	switch {
	case !(secs >= 1):
		return 1
	case secs > math.MaxInt32:
		return math.MaxInt32
	}
	return int64(secs)
}

func encode(tokens float64, last int64) []byte {
	var b [valueSize]byte
	put64(b[:8], math.Float64bits(tokens))
	put64(b[8:], uint64(last))
	return b[:]
}

func decode(b []byte) (tokens float64, last int64) {
	return math.Float64frombits(get64(b[:8])), int64(get64(b[8:]))
}

func put64(b []byte, v uint64) {
	for i := range 8 {
		b[i] = byte(v >> (8 * i))
	}
}

func get64(b []byte) uint64 {
	var v uint64
	for i := range 8 {
		v |= uint64(b[i]) << (8 * i)
	}
	return v
}

// siphash is SipHash-2-4 of m with the key k0, k1 (its 16 bytes read as
// two little-endian words): a keyed hash, so that who does not know the key
// cannot tell which keys land in a bucket.
func siphash(k0, k1 uint64, m string) uint64 {
	v0 := k0 ^ 0x736f6d6570736575
	v1 := k1 ^ 0x646f72616e646f6d
	v2 := k0 ^ 0x6c7967656e657261
	v3 := k1 ^ 0x7465646279746573
	round := func() {
		v0 += v1
		v1 = bits.RotateLeft64(v1, 13) ^ v0
		v0 = bits.RotateLeft64(v0, 32)
		v2 += v3
		v3 = bits.RotateLeft64(v3, 16) ^ v2
		v0 += v3
		v3 = bits.RotateLeft64(v3, 21) ^ v0
		v2 += v1
		v1 = bits.RotateLeft64(v1, 17) ^ v2
		v2 = bits.RotateLeft64(v2, 32)
	}
	last := uint64(len(m)) << 56
	for ; len(m) >= 8; m = m[8:] {
		var w uint64
		for i := 7; i >= 0; i-- {
			w = w<<8 | uint64(m[i])
		}
		v3 ^= w
		round()
		round()
		v0 ^= w
	}
	for i := len(m) - 1; i >= 0; i-- {
		last |= uint64(m[i]) << (8 * i)
	}
	v3 ^= last
	round()
	round()
	v0 ^= last
	v2 ^= 0xff
	round()
	round()
	round()
	round()
	return v0 ^ v1 ^ v2 ^ v3
}

// fnv1a is the 32-bit FNV-1a hash of s, for the configuration's digest
// (not for clients: anyone can compute it).
func fnv1a(s string) uint32 {
	h := uint32(2166136261)
	for i := 0; i < len(s); i++ {
		h ^= uint32(s[i])
		h *= 16777619
	}
	return h
}
