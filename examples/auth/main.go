// Command auth is an example Sluice filter that authenticates requests,
// with an API key in the x-api-key header or a JWT in
// `Authorization: Bearer <token>` (HS256 or RS256), before they reach the
// upstream. A request that fails gets 401 with a WWW-Authenticate challenge
// (RFC 6750's Bearer, or ApiKey when only API keys are configured) and never
// reaches the upstream. A request that passes reaches it with x-auth-subject
// (the token's sub, or the API key's client name) and x-auth-method (jwt or
// api_key) set by the filter. A client's own x-auth-subject and
// x-auth-method are removed, and so is any header a server could take for
// them (X_Auth_Subject, x.auth.method: case ignored, '_' and '.' read as
// '-'), and so is x-api-key; a Connection header naming them loses those
// names, or the proxy after the filter would drop the filter's headers as
// hop-by-hop.
//
// Configuration, a JSON object (unknown fields refuse it; at least one of
// hs256_secret, rs256_public_key and api_keys is required):
//
//	{
//	  "realm": "api",                          // the challenge's realm; default "api"
//	  "hs256_secret": "a long random secret",  // accept HS256 tokens signed with it
//	  "rs256_public_key": "-----BEGIN PUBLIC KEY-----\n...",  // accept RS256 tokens: PEM
//	                                           // "PUBLIC KEY" (PKIX) or "RSA PUBLIC KEY" (PKCS #1)
//	  "api_keys": {"key-1": "billing", "key-2": "reports"},  // API key → client name;
//	                                           // or a list ["key-1", "key-2"]: clients api-key-1, api-key-2, ...
//	  "issuer": "https://idp.example.com",     // optional: tokens' iss must equal it
//	  "audience": "api",                       // optional: tokens' aud (string or list) must hold it
//	  "strip_authorization": true              // optional: remove Authorization before the upstream
//	}
//
// A token is accepted only with an alg the configuration has a key for
// (never none, and an HS256 token is checked with hs256_secret only, never
// with the RSA key), no crit, a valid signature, an exp in the future and an
// nbf (if any) in the past, both give or take 30 seconds, the iss and aud the
// configuration asks for, and a sub (without control characters or
// surrounding whitespace) to pass on as x-auth-subject. Header and claim
// names are case-sensitive, as JOSE has them, and a name given twice refuses
// the token. When a request has a bearer token (a non-empty one) and tokens
// are configured, the token decides; otherwise the API key does.
//
// Keys are parsed once, when the filter is configured: in Sluice every
// request's instance starts with them decoded.
package main

import (
	"bytes"
	"crypto"
	"crypto/hmac"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"math/big"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/sluice-edge/sluice/sdk"
)

func main() {}

func init() { sdk.Register(configure) }

const (
	// leeway is the clock skew allowed when checking exp and nbf.
	leeway = 30 * time.Second
	// maxTokenSize bounds the work a token can cause.
	maxTokenSize = 8 << 10
	// minRSABits and maxRSABits bound the RS256 key's size.
	minRSABits, maxRSABits = 2048, 8192
)

// auth is a configured filter. It has no per-request state, so every
// request shares it.
type auth struct {
	challenge          string         // WWW-Authenticate without an error: Bearer, or ApiKey without tokens
	hsKey              []byte         // nil: HS256 tokens are refused
	rsKey              *rsa.PublicKey // nil: RS256 tokens are refused
	apiKeys            []apiKey
	issuer, audience   string
	stripAuthorization bool
}

// apiKey is a configured API key, kept as its SHA-256 so that every
// comparison takes the same time whatever the key presented.
type apiKey struct {
	sum    [sha256.Size]byte
	client string
}

// config is the JSON configuration.
type config struct {
	Realm              *string         `json:"realm"`
	HS256Secret        *string         `json:"hs256_secret"`
	RS256PublicKey     *string         `json:"rs256_public_key"`
	APIKeys            json.RawMessage `json:"api_keys"`
	Issuer             string          `json:"issuer"`
	Audience           string          `json:"audience"`
	StripAuthorization bool            `json:"strip_authorization"`
}

func configure(p *sdk.Plugin) (sdk.NewFilter, error) {
	a, warnings, err := parseConfig(p.Config())
	if err != nil {
		return nil, err
	}
	for _, w := range warnings {
		p.Log(sdk.LevelWarn, w)
	}
	if err := a.warmUp(); err != nil {
		return nil, err
	}
	return func() sdk.Filter { return a }, nil
}

// warmUp runs, once at configuration, what checking a token does the first
// time only: encoding/json works out and caches how to decode the header and
// claims types, crypto/rsa sets up on first use. In Sluice every request's
// instance starts from the state after configuration, so it would otherwise
// redo that on every request (measured: half a millisecond per token).
//
// It also tries the RSA key: a key crypto/rsa cannot verify with (an even
// modulus, say) would refuse every token, so it refuses the configuration.
func (a *auth) warmUp() error {
	if h, err := decodePart(b64.EncodeToString([]byte(`{"alg":"none","crit":["x"]}`))); err == nil {
		var alg string
		_ = member(h, "alg", &alg)
	}
	if m, err := decodePart(b64.EncodeToString([]byte(`{"sub":"x","iss":"x","aud":["x"],"exp":0,"nbf":0}`))); err == nil {
		c, _ := readClaims(m)
		_ = hasAudience(c.Aud, "x")
		_ = hasAudience(json.RawMessage(`"x"`), "x")
	}
	if a.rsKey != nil {
		var digest [sha256.Size]byte
		err := rsa.VerifyPKCS1v15(a.rsKey, crypto.SHA256, digest[:], make([]byte, a.rsKey.Size()))
		if err != nil && !errors.Is(err, rsa.ErrVerification) {
			return errors.New("auth: rs256_public_key cannot verify signatures: " + err.Error())
		}
	}
	return nil
}

func parseConfig(text []byte) (*auth, []string, error) {
	var c config
	d := json.NewDecoder(bytes.NewReader(text))
	d.DisallowUnknownFields()
	if err := d.Decode(&c); err != nil {
		return nil, nil, errors.New("auth: the configuration is not a JSON object of known fields: " + err.Error())
	}
	if _, err := d.Token(); err == nil {
		return nil, nil, errors.New("auth: the configuration has something after its JSON object")
	}

	a := &auth{issuer: c.Issuer, audience: c.Audience, stripAuthorization: c.StripAuthorization}
	var warnings []string
	realm := "api"
	if c.Realm != nil {
		realm = *c.Realm
	}
	if realm == "" || strings.ContainsFunc(realm, func(r rune) bool { return r < 0x20 || r == 0x7f || r == '"' || r == '\\' }) {
		return nil, nil, errors.New(`auth: realm must be non-empty, without quotes, backslashes or control characters`)
	}

	if c.HS256Secret != nil {
		if *c.HS256Secret == "" {
			return nil, nil, errors.New("auth: hs256_secret is empty")
		}
		a.hsKey = []byte(*c.HS256Secret)
		if len(a.hsKey) < sha256.Size {
			warnings = append(warnings, "auth: hs256_secret is shorter than 32 bytes; RFC 7518 asks for at least 32 random bytes")
		}
	}
	if c.RS256PublicKey != nil {
		k, err := parseRSAPublicKey(*c.RS256PublicKey)
		if err != nil {
			return nil, nil, errors.New("auth: rs256_public_key: " + err.Error())
		}
		a.rsKey = k
	}
	keys, err := parseAPIKeys(c.APIKeys)
	if err != nil {
		return nil, nil, errors.New("auth: api_keys: " + err.Error())
	}
	a.apiKeys = keys
	if a.hsKey == nil && a.rsKey == nil && len(a.apiKeys) == 0 {
		return nil, nil, errors.New("auth: no credentials configured: give hs256_secret, rs256_public_key or api_keys")
	}
	tokens := a.hsKey != nil || a.rsKey != nil
	if (c.Issuer != "" || c.Audience != "") && !tokens {
		return nil, nil, errors.New("auth: issuer and audience need hs256_secret or rs256_public_key")
	}
	if tokens && c.Audience == "" {
		warnings = append(warnings, "auth: audience is not set: a token the key signed for any other service is accepted too")
	}
	// The challenge names the scheme the filter takes: a client with only
	// API keys to offer should not be told to get a bearer token.
	scheme := "Bearer"
	if !tokens {
		scheme = "ApiKey"
	}
	a.challenge = scheme + ` realm="` + realm + `"`
	return a, warnings, nil
}

// parseAPIKeys reads api_keys, an object mapping each key to its client's
// name or a list of keys (clients api-key-1, api-key-2, ... in order).
func parseAPIKeys(raw json.RawMessage) ([]apiKey, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	var named map[string]string
	var clients []string
	var keys []string
	if raw[0] == '[' {
		if err := json.Unmarshal(raw, &keys); err != nil {
			return nil, errors.New("want an object of key → client name or a list of keys: " + err.Error())
		}
		for i := range keys {
			clients = append(clients, "api-key-"+strconv.Itoa(i+1))
		}
	} else {
		if err := json.Unmarshal(raw, &named); err != nil {
			return nil, errors.New("want an object of key → client name or a list of keys: " + err.Error())
		}
		for k := range named {
			keys = append(keys, k)
		}
		for _, k := range keys {
			clients = append(clients, named[k])
		}
	}
	out := make([]apiKey, len(keys))
	seen := map[string]bool{}
	for i, k := range keys {
		// Errors name the client, never the key.
		if k == "" || strings.TrimSpace(k) != k {
			return nil, errors.New("the key of " + strconv.Quote(clients[i]) + " is empty or has surrounding spaces")
		}
		if seen[k] {
			return nil, errors.New("the key of " + strconv.Quote(clients[i]) + " is listed twice")
		}
		seen[k] = true
		if !validSubject(clients[i]) {
			return nil, errors.New("the client name " + strconv.Quote(clients[i]) + " is empty or has control characters or surrounding whitespace")
		}
		out[i] = apiKey{sum: sha256.Sum256([]byte(k)), client: clients[i]}
	}
	return out, nil
}

// validSubject accepts what can go in x-auth-subject as it is: not empty,
// no control characters, and no surrounding whitespace, which HTTP drops
// (the upstream would see "admin" for "admin ").
func validSubject(s string) bool {
	return s != "" && !hasControl(s) && strings.TrimSpace(s) == s
}

func hasControl(s string) bool { return strings.ContainsFunc(s, unicode.IsControl) }

// parseRSAPublicKey decodes a PEM "PUBLIC KEY" (PKIX SubjectPublicKeyInfo)
// or "RSA PUBLIC KEY" (PKCS #1) holding an RSA key. It reads the DER itself:
// crypto/x509 would add 1.6 MB to the module.
func parseRSAPublicKey(text string) (*rsa.PublicKey, error) {
	block, rest := pem.Decode([]byte(text))
	if block == nil {
		return nil, errors.New("no PEM block")
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return nil, errors.New("more than one PEM block")
	}
	if len(block.Headers) != 0 {
		return nil, errors.New("PEM headers (an encrypted key?) are not supported")
	}
	der := block.Bytes
	switch block.Type {
	case "PUBLIC KEY":
		var err error
		if der, err = pkixRSAKey(der); err != nil {
			return nil, err
		}
	case "RSA PUBLIC KEY":
	default:
		return nil, errors.New("the PEM block is a " + strconv.Quote(block.Type) + `, want "PUBLIC KEY" or "RSA PUBLIC KEY"`)
	}
	k, err := pkcs1RSAKey(der)
	if err != nil {
		return nil, err
	}
	if bits := k.N.BitLen(); bits < minRSABits || bits > maxRSABits {
		return nil, errors.New("the key has " + strconv.Itoa(bits) + " bits, want 2048 to 8192")
	}
	return k, nil
}

// rsaEncryption is the DER of the AlgorithmIdentifier of an RSA key: the OID
// 1.2.840.113549.1.1.1 and NULL parameters.
var rsaEncryption = []byte{0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00}

// pkixRSAKey returns the PKCS #1 key inside a SubjectPublicKeyInfo:
// SEQUENCE { SEQUENCE { OID rsaEncryption, NULL }, BIT STRING { key } }.
func pkixRSAKey(der []byte) ([]byte, error) {
	spki, rest, ok := derElement(der, 0x30)
	if !ok || len(rest) != 0 {
		return nil, errors.New("not a DER SubjectPublicKeyInfo")
	}
	alg, spki, ok := derElement(spki, 0x30)
	if !ok {
		return nil, errors.New("not a DER SubjectPublicKeyInfo")
	}
	if !bytes.Equal(alg, rsaEncryption) {
		return nil, errors.New("not an RSA key (only RS256 is supported)")
	}
	bits, rest, ok := derElement(spki, 0x03)
	if !ok || len(rest) != 0 || len(bits) < 1 || bits[0] != 0 {
		return nil, errors.New("not a DER SubjectPublicKeyInfo")
	}
	return bits[1:], nil
}

// pkcs1RSAKey decodes SEQUENCE { INTEGER n, INTEGER e }.
func pkcs1RSAKey(der []byte) (*rsa.PublicKey, error) {
	bad := errors.New("not a DER RSA public key")
	seq, rest, ok := derElement(der, 0x30)
	if !ok || len(rest) != 0 {
		return nil, bad
	}
	n, seq, ok := derInteger(seq)
	if !ok {
		return nil, bad
	}
	e, seq, ok := derInteger(seq)
	if !ok || len(seq) != 0 {
		return nil, bad
	}
	if !e.IsInt64() || e.Int64() < 3 || e.Int64() > 1<<31-1 || e.Bit(0) == 0 {
		return nil, errors.New("the key's public exponent is not an odd number from 3 to 2³¹-1")
	}
	return &rsa.PublicKey{N: n, E: int(e.Int64())}, nil
}

// derElement splits the DER element with tag off der: its contents and
// what follows. Only definite, minimally encoded lengths are DER.
func derElement(der []byte, tag byte) (content, rest []byte, ok bool) {
	if len(der) < 2 || der[0] != tag {
		return nil, nil, false
	}
	n, der := int(der[1]), der[2:]
	if n >= 0x80 {
		size := n & 0x7f
		if size == 0 || size > 3 || len(der) < size || der[0] == 0 {
			return nil, nil, false
		}
		n = 0
		for _, b := range der[:size] {
			n = n<<8 | int(b)
		}
		if n < 0x80 {
			return nil, nil, false
		}
		der = der[size:]
	}
	if n > len(der) {
		return nil, nil, false
	}
	return der[:n], der[n:], true
}

// derInteger reads a positive, minimally encoded INTEGER.
func derInteger(der []byte) (*big.Int, []byte, bool) {
	b, rest, ok := derElement(der, 0x02)
	if !ok || len(b) == 0 || b[0]&0x80 != 0 || (len(b) > 1 && b[0] == 0 && b[1]&0x80 == 0) {
		return nil, nil, false
	}
	return new(big.Int).SetBytes(b), rest, true
}

// identityHeaders are the headers the filter sets for the upstream.
var identityHeaders = [...]string{"x-auth-subject", "x-auth-method"}

// isIdentityHeader says whether a header name is one of identityHeaders or
// could be taken for one: case is ignored, and '_' and '.' are read as '-',
// as servers and frameworks that map headers to variables do (CGI's
// HTTP_X_AUTH_SUBJECT is X-Auth-Subject and X_Auth_Subject alike).
func isIdentityHeader(name string) bool {
	if len(name) != len("x-auth-subject") && len(name) != len("x-auth-method") {
		return false
	}
	b := []byte(name)
	for i, c := range b {
		switch {
		case c == '_' || c == '.':
			b[i] = '-'
		case 'A' <= c && c <= 'Z':
			b[i] = c + 'a' - 'A'
		}
	}
	for _, h := range identityHeaders {
		if string(b) == h {
			return true
		}
	}
	return false
}

func (a *auth) OnRequestHeaders(s *sdk.Stream, _ bool) sdk.Action {
	h := s.RequestHeaders()
	authorization := h.Get("authorization")
	key := h.Get("x-api-key")
	// Never let a client's own copy of what the filter asserts through, nor
	// a header an upstream could read as one.
	if err := h.Del("x-api-key"); err != nil {
		return a.fail(s, "removing x-api-key", err)
	}
	if err := scrubIdentity(h); err != nil {
		return a.fail(s, "removing the client's identity headers", err)
	}

	subject, method, denied := a.authenticate(authorization, key, time.Now())
	if denied != nil {
		return a.deny(s, denied)
	}
	if a.stripAuthorization {
		if err := h.Del("authorization"); err != nil {
			return a.fail(s, "removing authorization", err)
		}
	}
	// subject is never empty: tokens without a sub and clients without a
	// name are refused.
	if err := h.Set("x-auth-subject", subject); err != nil {
		return a.fail(s, "setting x-auth-subject", err)
	}
	if err := h.Set("x-auth-method", method); err != nil {
		return a.fail(s, "setting x-auth-method", err)
	}
	return sdk.Continue
}

// scrubIdentity removes every request header isIdentityHeader matches, and
// the names it matches from Connection: a proxy removes the headers
// Connection names as hop-by-hop (RFC 9110 §7.6.1), so a client could
// otherwise have the filter's own x-auth-subject and x-auth-method dropped
// before the upstream.
func scrubIdentity(h sdk.Headers) error {
	pairs, err := h.All()
	if err != nil {
		return err
	}
	for _, p := range pairs {
		if isIdentityHeader(p[0]) {
			if err := h.Del(p[0]); err != nil {
				return err
			}
		}
	}
	connection, ok := h.Lookup("connection")
	if !ok {
		return nil
	}
	var keep []string
	dropped := false
	for _, option := range strings.Split(connection, ",") {
		option = strings.TrimSpace(option)
		if isIdentityHeader(option) {
			dropped = true
		} else if option != "" {
			keep = append(keep, option)
		}
	}
	switch {
	case !dropped:
		return nil
	case len(keep) == 0:
		return h.Del("connection")
	default:
		return h.Set("connection", strings.Join(keep, ", "))
	}
}

// tokenError is why a bearer token was refused, reported in the challenge
// as RFC 6750's invalid_token. Other refusals (credentialError) get the bare
// challenge.
type tokenError string

func (e tokenError) Error() string { return string(e) }

type credentialError string

func (e credentialError) Error() string { return string(e) }

// authenticate decides on the request's credentials: the bearer token from
// authorization if tokens are configured and there is one, otherwise the
// API key.
func (a *auth) authenticate(authorization, key string, now time.Time) (subject, method string, denied error) {
	if token, ok := bearerToken(authorization); ok && (a.hsKey != nil || a.rsKey != nil) {
		c, err := a.verify(token, now)
		if err != nil {
			return "", "", err
		}
		return c.Sub, "jwt", nil // verify refuses a token without a sub
	}
	if key != "" && len(a.apiKeys) > 0 {
		if client, ok := a.lookupKey(key); ok {
			return client, "api_key", nil
		}
		return "", "", credentialError("invalid API key")
	}
	return "", "", credentialError("credentials required")
}

// bearerToken returns the token of an `Authorization: Bearer <token>`. A
// Bearer without a token is no token: ok is false, and an API key decides.
func bearerToken(authorization string) (token string, ok bool) {
	scheme, token, _ := strings.Cut(strings.TrimSpace(authorization), " ")
	token = strings.TrimSpace(token)
	if !strings.EqualFold(scheme, "bearer") || token == "" {
		return "", false
	}
	return token, true
}

// lookupKey finds key's client, comparing with every configured key in
// constant time.
func (a *auth) lookupKey(key string) (string, bool) {
	sum := sha256.Sum256([]byte(key))
	found := -1
	for i := range a.apiKeys {
		if subtle.ConstantTimeCompare(sum[:], a.apiKeys[i].sum[:]) == 1 {
			found = i
		}
	}
	if found < 0 {
		return "", false
	}
	return a.apiKeys[found].client, true
}

// claims are the claims the filter checks; nil and "" for those absent.
type claims struct {
	Sub string
	Iss *string
	Aud json.RawMessage
	Exp *float64
	Nbf *float64
}

// readClaims reads the claims the filter checks from a JWT's members. A
// claim of the wrong type is an error; null is absent.
func readClaims(m map[string]json.RawMessage) (claims, error) {
	c := claims{Aud: m["aud"]}
	return c, errors.Join(member(m, "iss", &c.Iss), member(m, "exp", &c.Exp),
		member(m, "nbf", &c.Nbf), member(m, "sub", &c.Sub))
}

// verify checks a compact JWT at time now and returns its claims.
func (a *auth) verify(token string, now time.Time) (*claims, error) {
	if len(token) > maxTokenSize {
		return nil, tokenError("the token is too long")
	}
	headerPart, rest, ok1 := strings.Cut(token, ".")
	payloadPart, sigPart, ok2 := strings.Cut(rest, ".")
	if !ok1 || !ok2 || strings.Contains(sigPart, ".") {
		return nil, tokenError("the token is not a compact JWS (three dot-separated parts)")
	}
	h, err := decodePart(headerPart)
	if err == errDuplicate {
		return nil, tokenError("the token's header has a member name twice")
	} else if err != nil {
		return nil, tokenError("the token's header is not base64url JSON")
	}
	// The filter understands no extension, and crit must not be empty (RFC
	// 7515 §4.1.11): any crit refuses the token.
	if _, ok := h["crit"]; ok {
		return nil, tokenError("the token has critical header parameters")
	}
	var alg string
	_ = member(h, "alg", &alg) // a failed decode leaves alg empty, refused below
	// The key is the one configured for the alg, and only that one: an HS256
	// token is never checked against the RSA key's bytes.
	if !(alg == "HS256" && a.hsKey != nil) && !(alg == "RS256" && a.rsKey != nil) {
		return nil, tokenError("the token's alg is not accepted")
	}
	sig, err := b64.DecodeString(sigPart)
	if err != nil || len(sig) == 0 {
		return nil, tokenError("the token's signature is missing or not base64url")
	}
	signed := token[:len(headerPart)+1+len(payloadPart)]
	if alg == "HS256" {
		mac := hmac.New(sha256.New, a.hsKey)
		mac.Write([]byte(signed))
		if !hmac.Equal(mac.Sum(nil), sig) {
			return nil, tokenError("the token's signature is invalid")
		}
	} else {
		digest := sha256.Sum256([]byte(signed))
		if rsa.VerifyPKCS1v15(a.rsKey, crypto.SHA256, digest[:], sig) != nil {
			return nil, tokenError("the token's signature is invalid")
		}
	}

	m, err := decodePart(payloadPart)
	if err == errDuplicate {
		return nil, tokenError("the token's claims have a member name twice")
	} else if err != nil {
		return nil, tokenError("the token's claims are not base64url JSON")
	}
	c, err := readClaims(m)
	if err != nil {
		return nil, tokenError("the token's claims are not base64url JSON")
	}
	t := float64(now.Unix())
	skew := leeway.Seconds()
	if c.Exp == nil {
		return nil, tokenError("the token has no exp")
	}
	if t >= *c.Exp+skew {
		return nil, tokenError("the token has expired")
	}
	if c.Nbf != nil && t+skew < *c.Nbf {
		return nil, tokenError("the token is not valid yet")
	}
	if a.issuer != "" && (c.Iss == nil || *c.Iss != a.issuer) {
		return nil, tokenError("the token's issuer is not accepted")
	}
	if a.audience != "" && !hasAudience(c.Aud, a.audience) {
		return nil, tokenError("the token's audience is not accepted")
	}
	// The upstream is told who the request is: a token that does not say
	// is no identity.
	switch {
	case c.Sub == "":
		return nil, tokenError("the token has no subject")
	case hasControl(c.Sub):
		return nil, tokenError("the token's sub has control characters")
	case !validSubject(c.Sub):
		return nil, tokenError("the token's sub has surrounding whitespace")
	}
	return &c, nil
}

// b64 is JWS's base64url without padding, refusing non-canonical encodings.
var b64 = base64.RawURLEncoding.Strict()

// errDuplicate is decodePart's error for an object with a name twice.
var errDuplicate = errors.New("a member name is given twice")

// decodePart decodes a base64url (unpadded) JSON object into its members,
// by their exact names. JOSE's names are case-sensitive where encoding/json
// matches struct fields in any case ({"sub":"alice","SUB":"admin"} would
// give sub admin), and an object with a name twice is refused (errDuplicate)
// rather than read as its last: RFC 7515 §4 and RFC 7519 §4 let a parser
// refuse it, and two readers of the token could pick different values.
func decodePart(part string) (map[string]json.RawMessage, error) {
	raw, err := b64.DecodeString(part)
	if err != nil {
		return nil, err
	}
	if len(raw) == 0 || raw[0] != '{' {
		return nil, errors.New("not an object")
	}
	var members map[string]json.RawMessage
	if err := json.Unmarshal(raw, &members); err != nil {
		return nil, err
	}
	// The map keeps one member per name: the object had a name twice if it
	// has more members than the map.
	if countMembers(raw) != len(members) {
		return nil, errDuplicate
	}
	return members, nil
}

// countMembers counts the members of the JSON object raw, which must be
// valid JSON: the strings at depth 1 that start the object or follow a
// comma. (A json.Decoder token walk does the same at twice the cost of
// checking an HS256 token.)
func countMembers(raw []byte) int {
	n, depth := 0, 0
	inString, escaped, wantName := false, false, false
	for _, c := range raw {
		if inString {
			switch {
			case escaped:
				escaped = false
			case c == '\\':
				escaped = true
			case c == '"':
				inString = false
			}
			continue
		}
		switch c {
		case '"':
			inString = true
			if depth == 1 && wantName {
				n++
				wantName = false
			}
		case '{', '[':
			depth++
			wantName = depth == 1
		case '}', ']':
			depth--
		case ',':
			wantName = depth == 1
		}
	}
	return n
}

// member decodes the member name of m, if there and not null, into v.
func member(m map[string]json.RawMessage, name string, v any) error {
	raw, ok := m[name]
	if !ok || string(raw) == "null" {
		return nil
	}
	return json.Unmarshal(raw, v)
}

// hasAudience says whether aud, a string or a list of strings, holds want.
func hasAudience(aud json.RawMessage, want string) bool {
	var one string
	if json.Unmarshal(aud, &one) == nil {
		return one == want
	}
	var list []string
	if json.Unmarshal(aud, &list) == nil {
		for _, a := range list {
			if a == want {
				return true
			}
		}
	}
	return false
}

// deny answers 401 with the challenge; for a bad token, with RFC 6750's
// invalid_token and the reason.
func (a *auth) deny(s *sdk.Stream, why error) sdk.Action {
	challenge := a.challenge
	if _, ok := why.(tokenError); ok {
		challenge += `, error="invalid_token", error_description="` + why.Error() + `"`
	}
	return s.Respond(401, [][2]string{
		{"www-authenticate", challenge},
		{"content-type", "text/plain; charset=utf-8"},
		{"cache-control", "no-store"},
	}, []byte("401 Unauthorized: "+why.Error()+"\n"))
}

// fail answers 500 when the filter could not edit the headers: the request
// must not go on half-authenticated.
func (a *auth) fail(s *sdk.Stream, what string, err error) sdk.Action {
	s.Log(sdk.LevelError, "auth: "+what+": "+err.Error())
	return s.Respond(500, [][2]string{{"content-type", "text/plain; charset=utf-8"}}, []byte("500 Internal Server Error\n"))
}
