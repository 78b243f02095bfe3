package main

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sluice-edge/sluice/sdk/sdktest"
)

// Keys made for this test run.
var (
	rsaKey      = newRSAKey(2048)
	otherRSAKey = newRSAKey(2048)
	hsSecret    = randomSecret()
)

func newRSAKey(bits int) *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, bits)
	if err != nil {
		panic(err)
	}
	return k
}

func randomSecret() []byte {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return []byte(base64.RawURLEncoding.EncodeToString(b))
}

// pkixPEM and pkcs1PEM encode k's public key as the configuration takes it.
func pkixPEM(k *rsa.PublicKey) string {
	der, err := x509.MarshalPKIXPublicKey(k)
	if err != nil {
		panic(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
}

func pkcs1PEM(k *rsa.PublicKey) string {
	return string(pem.EncodeToMemory(&pem.Block{Type: "RSA PUBLIC KEY", Bytes: x509.MarshalPKCS1PublicKey(k)}))
}

// sign makes a compact JWS of claims with header {"alg": alg} plus extra:
// HS256 and HS512 with key []byte, RS256 with key *rsa.PrivateKey, anything
// else (none) unsigned.
func sign(alg string, key any, claims map[string]any, extra ...map[string]any) string {
	header := map[string]any{"alg": alg, "typ": "JWT"}
	for _, e := range extra {
		for k, v := range e {
			header[k] = v
		}
	}
	signed := part(header) + "." + part(claims)
	var sig []byte
	switch alg {
	case "HS256", "HS512":
		hash := sha256.New
		if alg == "HS512" {
			hash = sha512.New
		}
		mac := hmac.New(hash, key.([]byte))
		mac.Write([]byte(signed))
		sig = mac.Sum(nil)
	case "RS256":
		digest := sha256.Sum256([]byte(signed))
		var err error
		if sig, err = rsa.SignPKCS1v15(rand.Reader, key.(*rsa.PrivateKey), crypto.SHA256, digest[:]); err != nil {
			panic(err)
		}
	}
	return signed + "." + base64.RawURLEncoding.EncodeToString(sig)
}

func part(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// claimsAt are claims valid from an hour before now to an hour after, with
// changes: a nil value removes the claim.
func claimsAt(now time.Time, changes map[string]any) map[string]any {
	c := map[string]any{
		"sub": "alice",
		"iss": "https://idp.example",
		"aud": "api",
		"iat": now.Unix(),
		"nbf": now.Add(-time.Hour).Unix(),
		"exp": now.Add(time.Hour).Unix(),
	}
	for k, v := range changes {
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
	}
	return c
}

func mustJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(b)
}

func bearer(token string) http.Header { return http.Header{"Authorization": {"Bearer " + token}} }

// signJSON signs a header and claims given as JSON text, byte for byte,
// with hsSecret: for what a map cannot hold (a name twice, an order).
func signJSON(header, claims string) string {
	return signRaw(base64.RawURLEncoding.EncodeToString([]byte(header)), base64.RawURLEncoding.EncodeToString([]byte(claims)))
}

// identityLike says whether a header name is, or could be read as,
// x-auth-subject or x-auth-method: case ignored, '_' and '.' as '-'.
func identityLike(name string) bool {
	n := strings.NewReplacer("_", "-", ".", "-").Replace(strings.ToLower(name))
	return n == "x-auth-subject" || n == "x-auth-method"
}

// allowed checks the request reached the upstream as subject (none if
// ""), by method.
func allowed(subject, method string) func(*testing.T, *sdktest.Result) {
	return func(t *testing.T, r *sdktest.Result) {
		t.Helper()
		if r.Upstream == nil {
			t.Fatalf("refused: %d %q, www-authenticate %q", r.Response.Status, r.Response.Body, r.Response.Header.Get("WWW-Authenticate"))
		}
		h := r.Upstream.Header
		if got := h.Values("X-Auth-Subject"); len(got) != 1 || got[0] != subject {
			t.Errorf("x-auth-subject = %q, want just %q", got, subject)
		}
		if got := h.Values("X-Auth-Method"); len(got) != 1 || got[0] != method {
			t.Errorf("x-auth-method = %q, want just %q", got, method)
		}
		if got := h.Get("X-Api-Key"); got != "" {
			t.Errorf("x-api-key %q reached the upstream", got)
		}
		for name, values := range h {
			if identityLike(name) && name != "X-Auth-Subject" && name != "X-Auth-Method" {
				t.Errorf("%s %q reached the upstream", name, values)
			}
		}
		for _, v := range h.Values("Connection") {
			for _, option := range strings.Split(v, ",") {
				if identityLike(strings.TrimSpace(option)) {
					t.Errorf("connection %q reached the upstream: a proxy would drop the filter's %s", v, strings.TrimSpace(option))
				}
			}
		}
		if r.Response.Status != 200 || string(r.Response.Body) != "upstream" {
			t.Errorf("response %d %q, want the upstream's", r.Response.Status, r.Response.Body)
		}
	}
}

// refused checks the request got 401 with exactly the challenge, and did
// not reach the upstream.
func refused(challenge string) func(*testing.T, *sdktest.Result) {
	return func(t *testing.T, r *sdktest.Result) {
		t.Helper()
		if r.Upstream != nil {
			t.Fatalf("the upstream was reached, as %q/%q", r.Upstream.Header.Get("X-Auth-Subject"), r.Upstream.Header.Get("X-Auth-Method"))
		}
		if r.Response.Status != 401 {
			t.Errorf("status %d, want 401", r.Response.Status)
		}
		if got := r.Response.Header.Values("WWW-Authenticate"); len(got) != 1 || got[0] != challenge {
			t.Errorf("www-authenticate = %q, want %q", got, challenge)
		}
		if !strings.HasPrefix(string(r.Response.Body), "401 Unauthorized: ") {
			t.Errorf("body %q", r.Response.Body)
		}
	}
}

// badToken checks a refusal for a bad token: invalid_token, and why.
func badToken(realm, why string) func(*testing.T, *sdktest.Result) {
	return refused(`Bearer realm="` + realm + `", error="invalid_token", error_description="` + why + `"`)
}

// mainSuite accepts HS256 and RS256 tokens for issuer and audience, and a
// named API key.
func mainSuite() sdktest.Suite {
	now := time.Now()
	valid := func(changes map[string]any) map[string]any { return claimsAt(now, changes) }
	hs := func(changes map[string]any) http.Header { return bearer(sign("HS256", hsSecret, valid(changes))) }
	validHS := sign("HS256", hsSecret, valid(nil))
	const realm = "api"
	suite := sdktest.Suite{
		Config: mustJSON(map[string]any{
			"realm":            realm,
			"hs256_secret":     string(hsSecret),
			"rs256_public_key": pkixPEM(&rsaKey.PublicKey),
			"api_keys":         map[string]string{"k-billing-123": "billing", "k-reports-456": "reports"},
			"issuer":           "https://idp.example",
			"audience":         "api",
		}),
		Cases: []sdktest.Case{{
			Name:    "valid HS256 token",
			Request: sdktest.Request{Header: bearer(validHS)},
			Check: func(t *testing.T, r *sdktest.Result) {
				allowed("alice", "jwt")(t, r)
				if got := r.Upstream.Header.Get("Authorization"); got != "Bearer "+validHS {
					t.Errorf("authorization = %q, want the client's (strip_authorization is off)", got)
				}
			},
		}, {
			Name: "valid RS256 token, aud a list, scheme in lower case",
			Request: sdktest.Request{Header: http.Header{"Authorization": {"bearer " +
				sign("RS256", rsaKey, valid(map[string]any{"sub": "bob", "aud": []string{"other", "api"}}))}}},
			Check: allowed("bob", "jwt"),
		}, {
			Name:    "nbf within the leeway",
			Request: sdktest.Request{Header: hs(map[string]any{"nbf": now.Add(10 * time.Second).Unix()})},
			Check:   allowed("alice", "jwt"),
		}, {
			Name:    "expired",
			Request: sdktest.Request{Header: hs(map[string]any{"exp": now.Add(-time.Hour).Unix()})},
			Check:   badToken(realm, "the token has expired"),
		}, {
			Name:    "not yet valid",
			Request: sdktest.Request{Header: hs(map[string]any{"nbf": now.Add(time.Hour).Unix()})},
			Check:   badToken(realm, "the token is not valid yet"),
		}, {
			Name:    "no exp",
			Request: sdktest.Request{Header: hs(map[string]any{"exp": nil})},
			Check:   badToken(realm, "the token has no exp"),
		}, {
			Name:    "HS256 signed with another secret",
			Request: sdktest.Request{Header: bearer(sign("HS256", []byte("another-secret-another-secret-xx"), valid(nil)))},
			Check:   badToken(realm, "the token's signature is invalid"),
		}, {
			Name:    "RS256 signed with another key",
			Request: sdktest.Request{Header: bearer(sign("RS256", otherRSAKey, valid(nil)))},
			Check:   badToken(realm, "the token's signature is invalid"),
		}, {
			Name: "claims changed after signing",
			Request: sdktest.Request{Header: bearer(func() string {
				p := strings.Split(validHS, ".")
				return p[0] + "." + part(valid(map[string]any{"sub": "admin"})) + "." + p[2]
			}())},
			Check: badToken(realm, "the token's signature is invalid"),
		}, {
			Name:    "wrong issuer",
			Request: sdktest.Request{Header: hs(map[string]any{"iss": "https://evil.example"})},
			Check:   badToken(realm, "the token's issuer is not accepted"),
		}, {
			Name:    "no issuer",
			Request: sdktest.Request{Header: hs(map[string]any{"iss": nil})},
			Check:   badToken(realm, "the token's issuer is not accepted"),
		}, {
			Name:    "wrong audience",
			Request: sdktest.Request{Header: hs(map[string]any{"aud": []string{"web", "admin"}})},
			Check:   badToken(realm, "the token's audience is not accepted"),
		}, {
			Name:    "no audience",
			Request: sdktest.Request{Header: hs(map[string]any{"aud": nil})},
			Check:   badToken(realm, "the token's audience is not accepted"),
		}, {
			Name:    "alg none",
			Request: sdktest.Request{Header: bearer(sign("none", nil, valid(nil)))},
			Check:   badToken(realm, "the token's alg is not accepted"),
		}, {
			Name: "alg none with a signature",
			Request: sdktest.Request{Header: bearer(func() string {
				p := strings.Split(validHS, ".")
				return part(map[string]any{"alg": "none"}) + "." + p[1] + "." + p[2]
			}())},
			Check: badToken(realm, "the token's alg is not accepted"),
		}, {
			Name:    "alg confusion: HS256 keyed with the RSA public key",
			Request: sdktest.Request{Header: bearer(sign("HS256", []byte(pkixPEM(&rsaKey.PublicKey)), valid(nil)))},
			Check:   badToken(realm, "the token's signature is invalid"),
		}, {
			Name:    "an algorithm not configured",
			Request: sdktest.Request{Header: bearer(sign("HS512", hsSecret, valid(nil)))},
			Check:   badToken(realm, "the token's alg is not accepted"),
		}, {
			Name:    "critical header parameters",
			Request: sdktest.Request{Header: bearer(sign("HS256", hsSecret, valid(nil), map[string]any{"crit": []string{"exp"}}))},
			Check:   badToken(realm, "the token has critical header parameters"),
		}, {
			Name:    "critical header parameters: an empty list",
			Request: sdktest.Request{Header: bearer(sign("HS256", hsSecret, valid(nil), map[string]any{"crit": []string{}}))},
			Check:   badToken(realm, "the token has critical header parameters"),
		}, {
			Name:    "a sub with control characters",
			Request: sdktest.Request{Header: hs(map[string]any{"sub": "alice\u0001"})},
			Check:   badToken(realm, "the token's sub has control characters"),
		}, {
			Name:    "a sub with a C1 control character",
			Request: sdktest.Request{Header: hs(map[string]any{"sub": "alice\u0085"})},
			Check:   badToken(realm, "the token's sub has control characters"),
		}, {
			Name:    "a sub with a leading space",
			Request: sdktest.Request{Header: hs(map[string]any{"sub": " admin"})},
			Check:   badToken(realm, "the token's sub has surrounding whitespace"),
		}, {
			Name:    "a sub with a trailing space",
			Request: sdktest.Request{Header: hs(map[string]any{"sub": "admin "})},
			Check:   badToken(realm, "the token's sub has surrounding whitespace"),
		}, {
			Name:    "no sub",
			Request: sdktest.Request{Header: hs(map[string]any{"sub": nil})},
			Check:   badToken(realm, "the token has no subject"),
		}, {
			Name:    "an empty sub",
			Request: sdktest.Request{Header: hs(map[string]any{"sub": ""})},
			Check:   badToken(realm, "the token has no subject"),
		}, {
			Name:    "a null sub",
			Request: sdktest.Request{Header: hs(map[string]any{"sub": json.RawMessage("null")})},
			Check:   badToken(realm, "the token has no subject"),
		}, {
			Name:    "claim names are case-sensitive: SUB is not sub",
			Request: sdktest.Request{Header: bearer(signJSON(`{"alg":"HS256"}`, `{"sub":"alice","SUB":"admin",`+claimsTail(now)+`}`))},
			Check:   allowed("alice", "jwt"),
		}, {
			Name:    "claim names are case-sensitive: Sub alone is no sub",
			Request: sdktest.Request{Header: bearer(signJSON(`{"alg":"HS256"}`, `{"Sub":"admin",`+claimsTail(now)+`}`))},
			Check:   badToken(realm, "the token has no subject"),
		}, {
			Name: "claim names are case-sensitive: Exp is not exp",
			Request: sdktest.Request{Header: bearer(signJSON(`{"alg":"HS256"}`, `{"sub":"alice","iss":"https://idp.example","aud":"api",`+
				`"exp":1,"Exp":`+strconv.FormatInt(now.Add(time.Hour).Unix(), 10)+`}`))},
			Check: badToken(realm, "the token has expired"),
		}, {
			Name:    "header names are case-sensitive: ALG is not alg",
			Request: sdktest.Request{Header: bearer(signJSON(`{"ALG":"HS256"}`, `{"sub":"alice",`+claimsTail(now)+`}`))},
			Check:   badToken(realm, "the token's alg is not accepted"),
		}, {
			Name:    "header names are case-sensitive: Alg is not alg",
			Request: sdktest.Request{Header: bearer(signJSON(`{"alg":"HS256","Alg":"none"}`, `{"sub":"alice",`+claimsTail(now)+`}`))},
			Check:   allowed("alice", "jwt"),
		}, {
			Name:    "a claim given twice",
			Request: sdktest.Request{Header: bearer(signJSON(`{"alg":"HS256"}`, `{"sub":"alice","sub":"admin",`+claimsTail(now)+`}`))},
			Check:   badToken(realm, "the token's claims have a member name twice"),
		}, {
			Name:    "a claim given twice, once escaped",
			Request: sdktest.Request{Header: bearer(signJSON(`{"alg":"HS256"}`, `{"sub":"alice","s\u0075b":"admin",`+claimsTail(now)+`}`))},
			Check:   badToken(realm, "the token's claims have a member name twice"),
		}, {
			Name:    "a header parameter given twice",
			Request: sdktest.Request{Header: bearer(signJSON(`{"alg":"RS256","alg":"HS256"}`, `{"sub":"alice",`+claimsTail(now)+`}`))},
			Check:   badToken(realm, "the token's header has a member name twice"),
		}, {
			Name:    "valid API key",
			Request: sdktest.Request{Header: http.Header{"X-Api-Key": {"k-reports-456"}}},
			Check:   allowed("reports", "api_key"),
		}, {
			Name:    "wrong API key",
			Request: sdktest.Request{Header: http.Header{"X-Api-Key": {"k-billing-124"}}},
			Check:   refused(`Bearer realm="api"`),
		}, {
			Name:    "no credentials",
			Request: sdktest.Request{},
			Check: func(t *testing.T, r *sdktest.Result) {
				refused(`Bearer realm="api"`)(t, r)
				if string(r.Response.Body) != "401 Unauthorized: credentials required\n" {
					t.Errorf("body %q", r.Response.Body)
				}
			},
		}, {
			Name: "spoofed x-auth-subject and x-auth-method with a valid token",
			Request: sdktest.Request{Header: http.Header{"Authorization": {"Bearer " + validHS},
				"X-Auth-Subject": {"root"}, "X-Auth-Method": {"api_key"}}},
			Check: allowed("alice", "jwt"),
		}, {
			Name: "spoofed x-auth-subject with a valid token that has no sub",
			Request: sdktest.Request{Header: http.Header{"Authorization": {"Bearer " + sign("HS256", hsSecret, valid(map[string]any{"sub": nil}))},
				"X-Auth-Subject": {"root"}}},
			Check: badToken(realm, "the token has no subject"),
		}, {
			Name: "spoofed variants of x-auth-subject and x-auth-method with a valid token",
			Request: sdktest.Request{Header: http.Header{"Authorization": {"Bearer " + validHS},
				"X_Auth_Subject": {"root"}, "X.Auth.Method": {"api_key"}, "x_AUTH.subject": {"root"}, "X-Auth_Method": {"api_key"}}},
			Check: allowed("alice", "jwt"),
		}, {
			Name: "spoofed variants of x-auth-subject with an API key",
			Request: sdktest.Request{Header: http.Header{"X-Api-Key": {"k-billing-123"},
				"X_AUTH_SUBJECT": {"root"}, "x.auth.subject": {"root"}}},
			Check: allowed("billing", "api_key"),
		}, {
			Name: "Connection naming the identity headers, with a valid token",
			Request: sdktest.Request{Header: http.Header{"Authorization": {"Bearer " + validHS},
				"Connection": {"keep-alive, X-Auth-Subject, X-Auth-Method"}}},
			Check: allowed("alice", "jwt"),
		}, {
			Name: "Connection naming the identity headers and variants, with an API key",
			Request: sdktest.Request{Header: http.Header{"X-Api-Key": {"k-reports-456"},
				"Connection": {"x-auth-method,X_Auth_Subject , keep-alive"}}},
			Check: allowed("reports", "api_key"),
		}, {
			Name: "spoofed x-auth-subject with an API key",
			Request: sdktest.Request{Header: http.Header{"X-Api-Key": {"k-billing-123"},
				"X-Auth-Subject": {"root"}, "X-Auth-Method": {"jwt"}}},
			Check: allowed("billing", "api_key"),
		}, {
			Name:    "spoofed x-auth-subject alone",
			Request: sdktest.Request{Header: http.Header{"X-Auth-Subject": {"alice"}, "X-Auth-Method": {"jwt"}}},
			Check:   refused(`Bearer realm="api"`),
		}, {
			Name:    "Basic authorization is left alone; the API key decides",
			Request: sdktest.Request{Header: http.Header{"Authorization": {"Basic dXNlcjpwYXNz"}, "X-Api-Key": {"k-billing-123"}}},
			Check: func(t *testing.T, r *sdktest.Result) {
				allowed("billing", "api_key")(t, r)
				if got := r.Upstream.Header.Get("Authorization"); got != "Basic dXNlcjpwYXNz" {
					t.Errorf("authorization = %q", got)
				}
			},
		}, {
			Name:    "an empty bearer token is no token: the API key decides",
			Request: sdktest.Request{Header: http.Header{"Authorization": {"Bearer"}, "X-Api-Key": {"k-billing-123"}}},
			Check:   allowed("billing", "api_key"),
		}, {
			Name:    "an empty bearer token with spaces is no token: the API key decides",
			Request: sdktest.Request{Header: http.Header{"Authorization": {"Bearer   "}, "X-Api-Key": {"k-reports-456"}}},
			Check:   allowed("reports", "api_key"),
		}, {
			Name:    "an empty bearer token alone: no credentials",
			Request: sdktest.Request{Header: bearer("")},
			Check: func(t *testing.T, r *sdktest.Result) {
				refused(`Bearer realm="api"`)(t, r)
				if string(r.Response.Body) != "401 Unauthorized: credentials required\n" {
					t.Errorf("body %q", r.Response.Body)
				}
			},
		}, {
			Name:    "a bad token with a good API key: the token decides",
			Request: sdktest.Request{Header: http.Header{"Authorization": {"Bearer x.y.z"}, "X-Api-Key": {"k-billing-123"}}},
			Check:   badToken(realm, "the token's header is not base64url JSON"),
		}},
	}
	for _, m := range []struct{ name, token, why string }{
		{"one part", "abc", "the token is not a compact JWS (three dot-separated parts)"},
		{"two parts", "abc.def", "the token is not a compact JWS (three dot-separated parts)"},
		{"four parts", validHS + ".x", "the token is not a compact JWS (three dot-separated parts)"},
		{"dots only", "..", "the token's header is not base64url JSON"},
		{"empty signature", strings.Join(strings.Split(validHS, ".")[:2], ".") + ".", "the token's signature is missing or not base64url"},
		{"header not base64url", "e30+." + strings.SplitN(validHS, ".", 2)[1], "the token's header is not base64url JSON"},
		{"header not an object", part("HS256") + "." + strings.SplitN(validHS, ".", 2)[1], "the token's header is not base64url JSON"},
		{"padded signature", validHS + "=", "the token's signature is missing or not base64url"},
		{"claims not JSON", signRaw(part(map[string]any{"alg": "HS256"}), base64.RawURLEncoding.EncodeToString([]byte("{not json"))),
			"the token's claims are not base64url JSON"},
		{"too long", sign("HS256", hsSecret, valid(map[string]any{"pad": strings.Repeat("x", maxTokenSize)})), "the token is too long"},
	} {
		suite.Cases = append(suite.Cases, sdktest.Case{
			Name:    "malformed token: " + m.name,
			Request: sdktest.Request{Header: bearer(m.token)},
			Check:   badToken(realm, m.why),
		})
	}
	return suite
}

// claimsTail is the JSON of valid claims but sub at now, for signJSON.
func claimsTail(now time.Time) string {
	c := mustJSON(claimsAt(now, map[string]any{"sub": nil}))
	return c[1 : len(c)-1]
}

// signRaw signs already encoded header and payload parts with hsSecret.
func signRaw(header, payload string) string {
	mac := hmac.New(sha256.New, hsSecret)
	mac.Write([]byte(header + "." + payload))
	return header + "." + payload + "." + base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
}

// rsaOnlySuite accepts RS256 tokens (a PKCS #1 key) with any issuer and
// audience, and a list of API keys, and strips Authorization.
func rsaOnlySuite() sdktest.Suite {
	now := time.Now()
	const realm = "internal"
	pub := &rsaKey.PublicKey
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		panic(err)
	}
	return sdktest.Suite{
		Config: mustJSON(map[string]any{
			"realm":               realm,
			"rs256_public_key":    pkcs1PEM(pub),
			"api_keys":            []string{"key-1", "key-2"},
			"strip_authorization": true,
		}),
		Cases: []sdktest.Case{{
			Name:    "valid RS256 token, Authorization stripped",
			Request: sdktest.Request{Header: bearer(sign("RS256", rsaKey, claimsAt(now, map[string]any{"iss": nil, "aud": nil})))},
			Check: func(t *testing.T, r *sdktest.Result) {
				allowed("alice", "jwt")(t, r)
				if got, ok := r.Upstream.Header["Authorization"]; ok {
					t.Errorf("authorization %q reached the upstream", got)
				}
			},
		}, {
			Name:    "alg confusion: HS256 keyed with the public key's PEM",
			Request: sdktest.Request{Header: bearer(sign("HS256", []byte(pkcs1PEM(pub)), claimsAt(now, nil)))},
			Check:   badToken(realm, "the token's alg is not accepted"),
		}, {
			Name:    "alg confusion: HS256 keyed with the public key's DER",
			Request: sdktest.Request{Header: bearer(sign("HS256", der, claimsAt(now, nil)))},
			Check:   badToken(realm, "the token's alg is not accepted"),
		}, {
			Name:    "alg none",
			Request: sdktest.Request{Header: bearer(sign("none", nil, claimsAt(now, nil)))},
			Check:   badToken(realm, "the token's alg is not accepted"),
		}, {
			Name:    "second key of the list",
			Request: sdktest.Request{Header: http.Header{"X-Api-Key": {"key-2"}}},
			Check:   allowed("api-key-2", "api_key"),
		}, {
			Name:    "no credentials",
			Request: sdktest.Request{Header: http.Header{"X-Api-Key": {""}}},
			Check:   refused(`Bearer realm="internal"`),
		}},
	}
}

// apiKeysOnlySuite accepts only API keys: a bearer token is no credential.
func apiKeysOnlySuite() sdktest.Suite {
	return sdktest.Suite{
		Config: `{"api_keys": {"s3cret": "ci"}}`,
		Cases: []sdktest.Case{{
			Name:    "valid API key, default realm",
			Request: sdktest.Request{Header: http.Header{"X-Api-Key": {"s3cret"}}},
			Check:   allowed("ci", "api_key"),
		}, {
			Name:    "a bearer token is not a credential here; the challenge is ApiKey",
			Request: sdktest.Request{Header: bearer(sign("HS256", hsSecret, claimsAt(time.Now(), nil)))},
			Check:   refused(`ApiKey realm="api"`),
		}, {
			Name:    "an API key prefix",
			Request: sdktest.Request{Header: http.Header{"X-Api-Key": {"s3cre"}}},
			Check:   refused(`ApiKey realm="api"`),
		}, {
			Name:    "no credentials",
			Request: sdktest.Request{},
			Check:   refused(`ApiKey realm="api"`),
		}, {
			Name: "Connection naming the identity headers, spoofed variants",
			Request: sdktest.Request{Header: http.Header{"X-Api-Key": {"s3cret"}, "Connection": {"X-Auth-Subject, X-Auth-Method"},
				"X_Auth_Subject": {"root"}, "X_Auth_Method": {"jwt"}}},
			Check: allowed("ci", "api_key"),
		}},
	}
}

var suites = map[string]func() sdktest.Suite{
	"main":          mainSuite,
	"rsa-only":      rsaOnlySuite,
	"api-keys-only": apiKeysOnlySuite,
}

// The filter's logic, natively: no Wasm.
func TestAuth(t *testing.T) {
	t.Parallel()
	for name, suite := range suites {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			sdktest.Run(t, suite())
		})
	}
}

// The same cases against the built module in a real Caddy.
func TestAuthInCaddy(t *testing.T) {
	t.Parallel()
	wasm := sdktest.Build(t, ".")
	for name, suite := range suites {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			sdktest.RunCaddy(t, wasm, suite())
		})
	}
}

// verify's clock checks at their edges, with a fixed clock.
func TestVerifyTimes(t *testing.T) {
	t.Parallel()
	a, _, err := parseConfig([]byte(mustJSON(map[string]any{"hs256_secret": string(hsSecret)})))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1_800_000_000, 0)
	for _, c := range []struct {
		claims map[string]any
		want   string // "" accepted
	}{
		{map[string]any{"exp": now.Unix() - 29}, ""},
		{map[string]any{"exp": now.Unix() - 30}, "the token has expired"},
		{map[string]any{"exp": float64(now.Unix()) - 29.5}, ""},
		{map[string]any{"exp": now.Unix() + 1, "nbf": now.Unix() + 30}, ""},
		{map[string]any{"exp": now.Unix() + 60, "nbf": now.Unix() + 31}, "the token is not valid yet"},
		{map[string]any{"exp": "1800000060"}, "the token's claims are not base64url JSON"},
	} {
		c.claims["sub"] = "alice"
		_, err := a.verify(sign("HS256", hsSecret, c.claims), now)
		if got := errString(err); got != c.want {
			t.Errorf("%v: %q, want %q", c.claims, got, c.want)
		}
	}
}

// Member names at the top level of the header and claims are exact and
// unique; what is inside their values is not looked at.
func TestMemberNames(t *testing.T) {
	t.Parallel()
	a, _, err := parseConfig([]byte(mustJSON(map[string]any{"hs256_secret": string(hsSecret)})))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1_800_000_000, 0)
	exp := `"exp":1800000060`
	for _, c := range []struct {
		header, claims string
		want           string // "" accepted
	}{
		{`{"alg":"HS256"}`, `{"sub":"alice",` + exp + `}`, ""},
		{`{ "alg" : "HS256" } `, `{ "sub" : "alice" , ` + exp + ` }`, ""},
		{`{"alg":"HS256"}`, `{"sub":"alice",` + exp + `,"x":{"sub":"b","sub":"c"}}`, ""},
		{`{"alg":"HS256"}`, `{"sub":"alice",` + exp + `,"x":["sub","sub",{"sub":1}]}`, ""},
		{`{"alg":"HS256"}`, `{"sub":"a,\"sub\":\"b\\",` + exp + `}`, ""},
		{`{"alg":"HS256","x":{"alg":"none","crit":[]}}`, `{"sub":"alice",` + exp + `}`, ""},
		{`{"alg":"HS256"}`, `{"sub":"alice",` + exp + `,"exp":1}`, "the token's claims have a member name twice"},
		{`{"alg":"HS256"}`, `{"sub":"alice","sub":"alice",` + exp + `}`, "the token's claims have a member name twice"},
		{`{"alg":"HS256"}`, `{ "sub" : "alice" , "sub" : "bob" , ` + exp + `}`, "the token's claims have a member name twice"},
		{`{"alg":"HS256","typ":"JWT","typ":"JWT"}`, `{"sub":"alice",` + exp + `}`, "the token's header has a member name twice"},
		{`{"alg":"HS256","crit":null}`, `{"sub":"alice",` + exp + `}`, "the token has critical header parameters"},
		{`{"alg":"HS256"}`, `{"sub":"alice",` + exp + `} {}`, "the token's claims are not base64url JSON"},
		{`{"alg":"HS256"}`, `{"sub":"alice",` + exp + `,}`, "the token's claims are not base64url JSON"},
		{`{"alg":"HS256"}`, `{"sub":["alice"],` + exp + `}`, "the token's claims are not base64url JSON"},
		{`{"alg":"HS256"}`, `{"sub":"alice","EXP":1800000060}`, "the token has no exp"},
		{`{"alg":["HS256"]}`, `{"sub":"alice",` + exp + `}`, "the token's alg is not accepted"},
	} {
		_, err := a.verify(signJSON(c.header, c.claims), now)
		if got := errString(err); got != c.want {
			t.Errorf("%s.%s: %q, want %q", c.header, c.claims, got, c.want)
		}
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// The DER reader agrees with crypto/x509 on real keys of several sizes.
func TestParseRSAPublicKey(t *testing.T) {
	t.Parallel()
	for _, k := range []*rsa.PublicKey{&rsaKey.PublicKey, &newRSAKey(3072).PublicKey, {N: rsaKey.N, E: 3}} {
		for _, text := range []string{pkixPEM(k), pkcs1PEM(k), "\n\n" + pkixPEM(k) + "\n\n"} {
			got, err := parseRSAPublicKey(text)
			if err != nil {
				t.Fatalf("%s: %v", text, err)
			}
			if got.N.Cmp(k.N) != 0 || got.E != k.E {
				t.Errorf("%d-bit key, e %d: read e %d and a different modulus", k.N.BitLen(), k.E, got.E)
			}
		}
	}
	// Every truncation of a good key is refused.
	der, _ := x509.MarshalPKIXPublicKey(&rsaKey.PublicKey)
	for n := range len(der) {
		text := string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der[:n]}))
		if _, err := parseRSAPublicKey(text); err == nil {
			t.Fatalf("a key truncated to %d of %d bytes was accepted", n, len(der))
		}
	}
	if _, err := parseRSAPublicKey(string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: append(der, 0)}))); err == nil {
		t.Error("a key with a trailing byte was accepted")
	}
}

func TestBadConfigurationIsRefused(t *testing.T) {
	t.Parallel()
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ecDER, _ := x509.MarshalPKIXPublicKey(&ecKey.PublicKey)
	smallKey := newRSAKey(1024)
	pub := pkixPEM(&rsaKey.PublicKey)
	privPEM := string(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rsaKey)}))
	for _, c := range []struct{ config, want string }{
		{``, "not a JSON object"},
		{`{"hs256_secret": "x",}`, "not a JSON object"},
		{`["hs256_secret"]`, "not a JSON object"},
		{`{"hs256_secret": "x"} {}`, "something after its JSON object"},
		{`{"hs256_secret": "x", "hs512_secret": "y"}`, `unknown field "hs512_secret"`},
		{`{"realm": "api"}`, "no credentials configured"},
		{`{"api_keys": {}}`, "no credentials configured"},
		{`{"hs256_secret": ""}`, "hs256_secret is empty"},
		{`{"hs256_secret": "x", "realm": "a\"b"}`, "realm must be"},
		{`{"hs256_secret": "x", "realm": ""}`, "realm must be"},
		{`{"api_keys": {"k": "c"}, "issuer": "i"}`, "issuer and audience need"},
		{`{"api_keys": "k"}`, "api_keys: want an object"},
		{`{"api_keys": {"": "c"}}`, `the key of "c" is empty`},
		{`{"api_keys": {"k": ""}}`, `the client name "" is empty`},
		{`{"api_keys": ["a", "a"]}`, `the key of "api-key-2" is listed twice`},
		{mustJSON(map[string]string{"rs256_public_key": "not PEM"}), "rs256_public_key: no PEM block"},
		{mustJSON(map[string]string{"rs256_public_key": pub + pub}), "more than one PEM block"},
		{mustJSON(map[string]string{"rs256_public_key": privPEM}), `the PEM block is a "RSA PRIVATE KEY"`},
		{mustJSON(map[string]string{"rs256_public_key": string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: ecDER}))}), "not an RSA key"},
		{mustJSON(map[string]string{"rs256_public_key": pkixPEM(&smallKey.PublicKey)}), "the key has 1024 bits"},
		{mustJSON(map[string]string{"rs256_public_key": string(pem.EncodeToMemory(&pem.Block{Type: "RSA PUBLIC KEY", Bytes: ecDER}))}), "not a DER RSA public key"},
		{mustJSON(map[string]string{"rs256_public_key": pkcs1PEM(&rsa.PublicKey{N: rsaKey.N, E: 65536})}), "public exponent"},
		// A key of the right size that crypto/rsa cannot verify with would
		// refuse every token.
		{mustJSON(map[string]string{"rs256_public_key": pkcs1PEM(&rsa.PublicKey{N: new(big.Int).SetBit(rsaKey.N, 0, 0), E: 65537})}),
			"rs256_public_key cannot verify signatures"},
		{`{"api_keys": {"k": " c"}}`, `the client name " c" is empty or has control characters or surrounding whitespace`},
	} {
		err := sdktest.ConfigError(c.config, sdktest.Suite{})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%.60q: %v, want an error with %q", c.config, err, c.want)
		}
	}
	for name, suite := range suites {
		if err := sdktest.ConfigError(suite().Config, sdktest.Suite{}); err != nil {
			t.Errorf("the %s suite's config: %v", name, err)
		}
	}
}

// A short hs256_secret is taken, with a warning in the log.
func TestShortSecretWarns(t *testing.T) {
	t.Parallel()
	suite := sdktest.Suite{
		Config: `{"hs256_secret": "change-me"}`,
		Cases: []sdktest.Case{{
			Name:    "token signed with the short secret",
			Request: sdktest.Request{Header: bearer(sign("HS256", []byte("change-me"), claimsAt(time.Now(), nil)))},
			Check:   allowed("alice", "jwt"),
		}},
	}
	logs, err := sdktest.ConfigLogs(suite)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(strings.Join(logs, "\n"), "hs256_secret is shorter than 32 bytes") {
		t.Errorf("no warning in %q", logs)
	}
	sdktest.Run(t, suite)
}

// Tokens without an audience to check are taken, with a warning in the log.
func TestNoAudienceWarns(t *testing.T) {
	t.Parallel()
	const warning = "audience is not set"
	for _, c := range []struct {
		config string
		warns  bool
	}{
		{mustJSON(map[string]string{"hs256_secret": string(hsSecret)}), true},
		{mustJSON(map[string]string{"rs256_public_key": pkixPEM(&rsaKey.PublicKey)}), true},
		{mustJSON(map[string]any{"hs256_secret": string(hsSecret), "issuer": "https://idp.example"}), true},
		{mustJSON(map[string]any{"hs256_secret": string(hsSecret), "audience": "api"}), false},
		{`{"api_keys": ["k"]}`, false},
	} {
		logs, err := sdktest.ConfigLogs(sdktest.Suite{Config: c.config})
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.Contains(strings.Join(logs, "\n"), warning); got != c.warns {
			t.Errorf("%.60s: logs %q; want a warning %t", c.config, logs, c.warns)
		}
	}
}

// The example Caddyfile works as shipped: its API key gets in, nothing else
// does, and the upstream sees who it is.
func TestExampleCaddyfile(t *testing.T) {
	t.Parallel()
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, r.Header.Get("X-Auth-Method")+" "+r.Header.Get("X-Auth-Subject")+" "+r.Header.Get("X-Api-Key"))
	}))
	defer upstream.Close()
	site, log := sdktest.ServeCaddyfile(t, "Caddyfile",
		[2]string{"wasm_filter auth.wasm", "wasm_filter " + sdktest.Build(t, ".")},
		[2]string{"localhost:9000", upstream.Listener.Addr().String()})

	for _, c := range []struct {
		key, token string
		status     int
		body       string
	}{
		{key: "demo-key-123", status: 200, body: "api_key demo-client "},
		{token: sign("HS256", []byte("replace-with-at-least-32-random-bytes"), claimsAt(time.Now(), nil)), status: 200, body: "jwt alice "},
		{key: "demo-key-124", status: 401},
		{status: 401},
	} {
		req, _ := http.NewRequest("GET", "http://"+site+"/", nil)
		if c.key != "" {
			req.Header.Set("X-Api-Key", c.key)
		}
		if c.token != "" {
			req.Header.Set("Authorization", "Bearer "+c.token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != c.status || (c.status == 200 && string(body) != c.body) {
			t.Errorf("key %q token %t: %d %q, want %d %q\n%s", c.key, c.token != "", resp.StatusCode, body, c.status, c.body, log.String())
		}
		if c.status == 401 && resp.Header.Get("WWW-Authenticate") != `Bearer realm="api"` {
			t.Errorf("key %q: www-authenticate %q", c.key, resp.Header.Get("WWW-Authenticate"))
		}
	}
}

// The cost of checking one RS256 token (2048-bit key), natively.
func BenchmarkVerifyRS256(b *testing.B) {
	benchmarkVerify(b, `{"rs256_public_key": `+mustJSON(pkixPEM(&rsaKey.PublicKey))+`}`, sign("RS256", rsaKey, claimsAt(time.Now(), nil)))
}

// The same for HS256, for comparison.
func BenchmarkVerifyHS256(b *testing.B) {
	benchmarkVerify(b, `{"hs256_secret": `+mustJSON(string(hsSecret))+`}`, sign("HS256", hsSecret, claimsAt(time.Now(), nil)))
}

func benchmarkVerify(b *testing.B, config, token string) {
	a, _, err := parseConfig([]byte(config))
	if err != nil {
		b.Fatal(err)
	}
	now := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := a.verify(token, now); err != nil {
			b.Fatal(err)
		}
	}
}
