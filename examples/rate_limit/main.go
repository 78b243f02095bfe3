// Command rate_limit is an example Sluice filter: a token bucket per
// client, kept in the tenant's shared data so that every request's fresh
// instance sees the tokens the others took.
//
// Configuration, one setting per line (blank lines and # comments ignored):
//
//	rate <tokens per second>   # refill rate, > 0; fractions allowed (0.5 = one every 2 s)
//	burst <n>                  # bucket size: requests a client may send at once, >= 1
//	key ip                     # one bucket per client IP (the default)
//	key header <name>          # one per value of the header; without it, the client IP
//	buckets <n>                # shared-data keys the clients hash into (default 4096)
//
// rate and burst are required. A request that finds no token is answered
// 429 with Retry-After (whole seconds until a token, at least 1),
// x-ratelimit-limit and x-ratelimit-remaining; a request let through gets
// both x-ratelimit headers on its response. The counter metric
// rate_limit_rejected counts the 429s.
//
// Shared data has no delete, so clients are hashed (FNV-1a) into a fixed
// set of buckets, created when the filter is configured: clients whose keys
// hash alike share a bucket. Each bucket is 16 bytes (tokens as a float64,
// the last refill in Unix nanoseconds) updated with compare-and-swap. If
// the store fails or stays contended, the request goes through (fail open)
// and the filter logs why.
package main

import (
	"errors"
	"math"
	"strconv"
	"strings"

	"github.com/sluice-edge/sluice/sdk"
)

func main() {}

func init() { sdk.Register(configure) }

const (
	defaultBuckets = 4096
	// maxBuckets keeps the filter within a tenant's shared-data quota in
	// Sluice (10,000 keys per vm_id, shared with the tenant's other filters).
	maxBuckets = 8192
	// attempts bounds the compare-and-swap retries of one request. A retry
	// is needed only when another request took a token in between, so a
	// request fails open only under that many concurrent successes.
	attempts = 16
	// valueSize is a bucket's encoding: float64 tokens, int64 nanoseconds.
	valueSize = 16
)

// limiter is a configured rate limit, shared by every request.
type limiter struct {
	rate    float64 // tokens per second
	burst   float64
	header  string // the key header; "" means key by IP
	buckets uint32
	prefix  string // shared-data key prefix: "rate_limit/<filter name>/"

	limit    string // burst, formatted for x-ratelimit-limit
	rejected sdk.Counter
}

func configure(p *sdk.Plugin) (sdk.NewFilter, error) {
	l, err := parse(string(p.Config()))
	if err != nil {
		return nil, err
	}
	// Filters of one vm_id share its data: the filter's name keeps two
	// limiters of a tenant apart.
	name, _ := p.Property("plugin_name")
	l.prefix = "rate_limit/" + string(name) + "/"
	if err := l.createBuckets(p); err != nil {
		return nil, err
	}
	if l.rejected, err = p.Counter("rate_limit_rejected"); err != nil {
		p.Log(sdk.LevelWarn, "rate_limit: defining the metric rate_limit_rejected: "+err.Error())
	}
	return func() sdk.Filter { return &request{l: l} }, nil
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
			l.limit = f[1]
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

// createBuckets makes sure every bucket exists, full, before any request
// uses it. Shared data cannot create a key only if it is absent (a write to
// a new key ignores cas), so requests racing to create a bucket could each
// take a token from their own copy; here, at configuration, no request runs
// on these buckets yet. A marker key makes it one read once done (Sluice
// configures once per load; with snapshot off, once per request).
func (l *limiter) createBuckets(p *sdk.Plugin) error {
	marker := l.prefix + "buckets"
	count := strconv.Itoa(int(l.buckets))
	if v, _, err := p.SharedData(marker); err == nil && string(v) == count {
		return nil
	}
	t := sdk.Now()
	if t == 0 {
		return errors.New("the host has no clock")
	}
	full := encode(l.burst, t)
	for b := uint32(0); b < l.buckets; b++ {
		key := l.prefix + strconv.Itoa(int(b))
		_, _, err := p.SharedData(key)
		if errors.Is(err, sdk.ErrNotFound) {
			err = p.SetSharedData(key, full, 0)
		}
		if err != nil {
			return errors.New("creating the bucket " + key + " in shared data: " + err.Error())
		}
	}
	if err := p.SetSharedData(marker, []byte(count), 0); err != nil {
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
	r.remaining = -1
	key, ok := l.clientKey(s)
	if !ok {
		s.Log(sdk.LevelWarn, "rate_limit: the request has no client address; not limited")
		return sdk.Continue
	}
	bucket := l.prefix + strconv.Itoa(int(fnv1a(key)%l.buckets))
	allowed, tokens, err := l.take(s, bucket)
	if err != nil {
		s.Log(sdk.LevelWarn, "rate_limit: "+bucket+": "+err.Error()+"; not limited")
		return sdk.Continue
	}
	if allowed {
		r.remaining = int(tokens)
		return sdk.Continue
	}
	_ = l.rejected.Add(1)
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

// clientKey is the client the request counts for: "h:<value>" of the key
// header, or "ip:<address>", so a header value cannot name an IP's bucket.
func (l *limiter) clientKey(s *sdk.Stream) (string, bool) {
	if l.header != "" {
		if v := s.RequestHeaders().Get(l.header); v != "" {
			return "h:" + v, true
		}
	}
	addr, ok := s.Property("source.address")
	if !ok || len(addr) == 0 {
		return "", false
	}
	return "ip:" + hostOf(string(addr)), true
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

// store is the shared data take uses: a *sdk.Stream, or a test's.
type store interface {
	SharedData(key string) ([]byte, uint32, error)
	SetSharedData(key string, value []byte, cas uint32) error
	Log(level sdk.Level, msg string)
}

// take refills the bucket for the time passed and takes a token if there is
// one, with compare-and-swap. It returns whether a token was taken and the
// tokens left. A refused request writes nothing: the refill it computed is
// computed again, the same, by the next request.
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
		if elapsed := t - last; elapsed > 0 {
			tokens += float64(elapsed) * l.rate / 1e9
			last = t
		}
		if !(tokens <= l.burst) { // also a NaN, or a burst lowered by a reload
			tokens = l.burst
		}
		if tokens < 1 {
			return false, tokens, nil
		}
		tokens--
		err = s.SetSharedData(key, encode(tokens, last), cas)
		if err == nil {
			return true, tokens, nil
		}
		if !errors.Is(err, sdk.ErrCASMismatch) {
			return false, 0, err
		}
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

// fnv1a is the 32-bit FNV-1a hash of s.
func fnv1a(s string) uint32 {
	h := uint32(2166136261)
	for i := 0; i < len(s); i++ {
		h ^= uint32(s[i])
		h *= 16777619
	}
	return h
}
