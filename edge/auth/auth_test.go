package auth

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/snapgate/snapgate/fbs/jwk"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

type headers map[string]string

func (h headers) Header(name []byte) ([]byte, bool) {
	v, ok := h[string(name)]
	return []byte(v), ok
}

var (
	rsaOnce         sync.Once
	rsaKey          *rsa.PrivateKey
	ecKey, _        = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	edPub, edKey, _ = ed25519.GenerateKey(rand.Reader)
	hsSecret        = []byte("0123456789abcdef0123456789abcdef")
)

func rsaPriv() *rsa.PrivateKey {
	rsaOnce.Do(func() { rsaKey, _ = rsa.GenerateKey(rand.Reader, 2048) })
	return rsaKey
}

func enc(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func jwkRSA(kid string) string {
	p := rsaPriv().PublicKey
	return fmt.Sprintf(`{"kty":"RSA","alg":"RS256","kid":%q,"n":%q,"e":"AQAB"}`, kid, enc(p.N.Bytes()))
}

func jwkEC(kid string) string {
	// The uncompressed point is 0x04 || X || Y, 32 bytes each for P-256.
	pt, err := ecKey.PublicKey.Bytes()
	if err != nil {
		panic(err)
	}
	b, c := pt[1:33], pt[33:65]
	return fmt.Sprintf(`{"kty":"EC","alg":"ES256","crv":"P-256","kid":%q,"x":%q,"y":%q}`, kid, enc(b), enc(c))
}

func jwkEd(kid string) string {
	return fmt.Sprintf(`{"kty":"OKP","alg":"EdDSA","crv":"Ed25519","kid":%q,"x":%q}`, kid, enc(edPub))
}

func jwkHS(kid string) string {
	return fmt.Sprintf(`{"kty":"oct","alg":"HS256","kid":%q,"k":%q}`, kid, enc(hsSecret))
}

// sign makes a compact JWS over header and claims with alg.
func sign(t testing.TB, hdr, claims string, alg string) string {
	t.Helper()
	in := enc([]byte(hdr)) + "." + enc([]byte(claims))
	h := sha256.Sum256([]byte(in))
	var sig []byte
	var err error
	switch alg {
	case "HS256":
		m := hmac.New(sha256.New, hsSecret)
		m.Write([]byte(in))
		sig = m.Sum(nil)
	case "RS256":
		sig, err = rsa.SignPKCS1v15(rand.Reader, rsaPriv(), crypto.SHA256, h[:])
	case "PS256":
		sig, err = rsa.SignPSS(rand.Reader, rsaPriv(), crypto.SHA256, h[:], &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash})
	case "ES256":
		var r, s *big.Int
		r, s, err = ecdsa.Sign(rand.Reader, ecKey, h[:])
		if err == nil {
			sig = append(r.FillBytes(make([]byte, 32)), s.FillBytes(make([]byte, 32))...)
		}
	case "EdDSA":
		sig = ed25519.Sign(edKey, []byte(in))
	case "none":
	}
	if err != nil {
		t.Fatal(err)
	}
	return in + "." + enc(sig)
}

var t0 = time.Unix(1_700_000_000, 0)

func claimsJSON(extra string) string {
	c := `{"iss":"https://idp.example","sub":"alice","aud":["api","other"],"exp":1700000600,"nbf":1699999990,"scope":"read"`
	if extra != "" {
		c += "," + extra
	}
	return c + "}"
}

func testConfig(t testing.TB, keys string) Config {
	t.Helper()
	salt := []byte("0123456789abcdef")
	dk, err := pbkdf2.Key(sha256.New, "s3cret", salt, MinPBKDF2Iterations, 32)
	if err != nil {
		t.Fatal(err)
	}
	phc := "$pbkdf2-sha256$i=100000$" + base64.RawStdEncoding.EncodeToString(salt) + "$" + base64.RawStdEncoding.EncodeToString(dk)
	return Config{
		// The check budget is not under test here (kdf_test.go): under
		// -race on a loaded machine three checks at 100,000 iterations
		// took more than the default's burst (one second of checks).
		PasswordCheckCPU: time.Second,
		Consumers:        []Consumer{{ID: "alice", Groups: []string{"staff"}}, {ID: "mallory", Groups: []string{"staff", "banned"}}, {ID: "guest"}},
		APIKeys: []APIKey{{Hash: sha256.Sum256([]byte("key-alice")), Consumer: 0},
			{Hash: sha256.Sum256([]byte("key-mallory")), Consumer: 1}, {Hash: sha256.Sum256([]byte("key-guest")), Consumer: 2}},
		Basic: []BasicCredential{{Username: "alice", PasswordHash: phc, Consumer: 0}},
		Issuers: []Issuer{{ID: "idp", Issuer: "https://idp.example", Audiences: []string{"api"}, KeySet: []byte(keys),
			ClockSkew: 5 * time.Second, RequiredClaims: []string{"scope"}, Subjects: []Subject{{Subject: "alice", Consumer: 0}}}},
		Policies: []Policy{
			{ID: "all", Methods: MethodAPIKey | MethodJWT | MethodBasic, Required: true, AllowGroups: []string{"staff"}, DenyGroups: []string{"banned"}},
			{ID: "optional", Methods: MethodAPIKey},
			{ID: "strict-aud", Methods: MethodJWT, Required: true, Audiences: []string{"billing"}, RequiredClaims: []string{"tenant"}},
		},
	}
}

func newTable(t testing.TB, keys string) *Table {
	t.Helper()
	tb, err := NewTable(testConfig(t, keys))
	if err != nil {
		t.Fatal(err)
	}
	return tb
}

func TestAPIKeyAndACL(t *testing.T) {
	tb := newTable(t, `{"keys":[`+jwkRSA("r1")+`]}`)
	var d Decision
	cases := []struct {
		name   string
		pi     int
		h      headers
		status int
		reason string
		cons   string
	}{
		{"alice", 0, headers{"x-api-key": "key-alice"}, 0, "", "alice"},
		{"wrong key", 0, headers{"x-api-key": "key-nobody"}, 401, ReasonBadAPIKey, ""},
		{"empty key", 0, headers{"x-api-key": ""}, 401, ReasonBadAPIKey, ""},
		{"denied group", 0, headers{"x-api-key": "key-mallory"}, 403, ReasonDenied, "mallory"},
		{"not allowed", 0, headers{"x-api-key": "key-guest"}, 403, ReasonNotAllowed, "guest"},
		{"anonymous required", 0, headers{}, 401, ReasonNoCredentials, ""},
		{"anonymous optional", 1, headers{}, 0, "", ""},
		{"optional with key", 1, headers{"x-api-key": "key-guest"}, 0, "", "guest"},
		{"method not accepted", 1, headers{"authorization": "Basic YWxpY2U6czNjcmV0"}, 401, ReasonMethod, ""},
		{"basic ok", 0, headers{"authorization": "Basic YWxpY2U6czNjcmV0"}, 0, "", "alice"},
		{"basic wrong password", 0, headers{"authorization": "Basic YWxpY2U6d3Jvbmc="}, 401, ReasonBadBasic, ""},
		{"basic unknown user", 0, headers{"authorization": "basic Ym9iOnMzY3JldA=="}, 401, ReasonBadBasic, ""},
		{"basic not base64", 0, headers{"authorization": "Basic !!!"}, 401, ReasonBadBasic, ""},
		// A key and an Authorization field where both are credentials:
		// one would go upstream unverified.
		{"key and bearer", 0, headers{"x-api-key": "key-alice", "authorization": "Bearer forged.token.x"}, 401, ReasonTwoCredentials, ""},
		{"key and basic", 0, headers{"x-api-key": "key-alice", "authorization": "Basic YWxpY2U6czNjcmV0"}, 401, ReasonTwoCredentials, ""},
		// Where only keys are credentials, Authorization is the backend's.
		{"key and backend auth", 1, headers{"x-api-key": "key-guest", "authorization": "Bearer for-the-backend"}, 0, "", "guest"},
	}
	for _, tc := range cases {
		tb.Authenticate(tc.pi, tc.h, t0, &d)
		if d.Status != tc.status || d.Reason != tc.reason || d.ConsumerID != tc.cons {
			t.Errorf("%s: got %d %q consumer %q, want %d %q %q", tc.name, d.Status, d.Reason, d.ConsumerID, tc.status, tc.reason, tc.cons)
		}
		if d.Status == 401 && d.Challenge == "" {
			t.Errorf("%s: 401 without WWW-Authenticate", tc.name)
		}
	}
	tb.Authenticate(0, headers{}, t0, &d)
	if want := `Bearer realm="snapgate", Basic realm="snapgate", charset="UTF-8"`; d.Challenge != want {
		t.Errorf("challenge %q, want %q", d.Challenge, want)
	}
	tb.Authenticate(0, headers{"x-api-key": "key-alice"}, t0, &d)
	if string(d.Credential) != "x-api-key" || d.Method != MethodAPIKey || d.Groups[0] != "staff" {
		t.Errorf("decision %+v", d)
	}
}

func TestJWTAlgorithms(t *testing.T) {
	keys := `{"keys":[` + jwkRSA("r1") + `,` + jwkEC("e1") + `,` + jwkEd("d1") + `]}`
	tb := newTable(t, keys)
	for _, tc := range []struct{ alg, kid string }{{"RS256", "r1"}, {"ES256", "e1"}, {"EdDSA", "d1"}} {
		tok := sign(t, fmt.Sprintf(`{"alg":%q,"kid":%q,"typ":"JWT"}`, tc.alg, tc.kid), claimsJSON(""), tc.alg)
		if c, err := tb.VerifyToken(0, []byte(tok), t0); err != nil || c != 0 {
			t.Errorf("%s: consumer %d, err %v", tc.alg, c, err)
		}
		var d Decision
		tb.Authenticate(0, headers{"authorization": "Bearer " + tok}, t0, &d)
		if d.Status != 0 || d.ConsumerID != "alice" || d.Method != MethodJWT {
			t.Errorf("%s: decision %+v", tc.alg, d)
		}
	}
	hs := newTable(t, `{"keys":[`+jwkHS("h1")+`]}`)
	tok := sign(t, `{"alg":"HS256"}`, claimsJSON(""), "HS256") // one key: kid optional
	if _, err := hs.VerifyToken(0, []byte(tok), t0); err != nil {
		t.Errorf("HS256: %v", err)
	}
}

// TestJWTRejections covers the attacks and claim failures issue 6 lists.
func TestJWTRejections(t *testing.T) {
	keys := `{"keys":[` + jwkRSA("r1") + `,` + jwkEC("e1") + `]}`
	tb := newTable(t, keys)
	pubDER := rsaPriv().PublicKey.N.Bytes()
	// RS↔HS confusion: HMAC the token with the RSA public key as secret.
	confused := func() string {
		in := enc([]byte(`{"alg":"HS256","kid":"r1"}`)) + "." + enc([]byte(claimsJSON("")))
		m := hmac.New(sha256.New, pubDER)
		m.Write([]byte(in))
		return in + "." + enc(m.Sum(nil))
	}()
	good := sign(t, `{"alg":"RS256","kid":"r1"}`, claimsJSON(""), "RS256")
	parts := strings.Split(good, ".")
	cases := []struct {
		name string
		tok  string
		pi   int
		want error
	}{
		{"alg none", sign(t, `{"alg":"none","kid":"r1"}`, claimsJSON(""), "none") + "AAAA", 0, ErrAlgNone},
		{"alg none no sig", enc([]byte(`{"alg":"none"}`)) + "." + parts[1] + ".", 0, ErrMalformed},
		{"RS to HS confusion", confused, 0, ErrAlgMismatch},
		{"key of another type", sign(t, `{"alg":"ES256","kid":"r1"}`, claimsJSON(""), "ES256"), 0, ErrAlgMismatch},
		{"PS with RS key", sign(t, `{"alg":"PS256","kid":"r1"}`, claimsJSON(""), "PS256"), 0, ErrAlgMismatch},
		{"kid missing from set", sign(t, `{"alg":"RS256","kid":"nope"}`, claimsJSON(""), "RS256"), 0, ErrUnknownKey},
		{"no kid with two keys", sign(t, `{"alg":"RS256"}`, claimsJSON(""), "RS256"), 0, ErrUnknownKey},
		{"embedded jwk", sign(t, `{"alg":"RS256","kid":"r1","jwk":`+jwkRSA("r1")+`}`, claimsJSON(""), "RS256"), 0, ErrForbiddenHdr},
		{"jku", sign(t, `{"alg":"RS256","kid":"r1","jku":"https://evil/keys"}`, claimsJSON(""), "RS256"), 0, ErrForbiddenHdr},
		{"x5u", sign(t, `{"alg":"RS256","kid":"r1","x5u":"https://evil/c"}`, claimsJSON(""), "RS256"), 0, ErrForbiddenHdr},
		{"crit", sign(t, `{"alg":"RS256","kid":"r1","crit":["b64"],"b64":false}`, claimsJSON(""), "RS256"), 0, ErrForbiddenHdr},
		{"duplicate alg", sign(t, `{"alg":"RS256","kid":"r1","alg":"none"}`, claimsJSON(""), "RS256"), 0, ErrHeader},
		{"JSON serialization", `{"payload":"` + parts[1] + `","protected":"` + parts[0] + `","signature":"` + parts[2] + `"}`, 0, ErrJSONSerial},
		{"expired", sign(t, `{"alg":"RS256","kid":"r1"}`, strings.Replace(claimsJSON(""), "1700000600", "1699999990", 1), "RS256"), 0, ErrExpired},
		{"no exp", sign(t, `{"alg":"RS256","kid":"r1"}`, `{"iss":"https://idp.example","sub":"alice","aud":"api","scope":"x"}`, "RS256"), 0, ErrNoExpiry},
		{"not yet valid", sign(t, `{"alg":"RS256","kid":"r1"}`, strings.Replace(claimsJSON(""), "1699999990", "1700000100", 1), "RS256"), 0, ErrNotYetValid},
		{"wrong audience", sign(t, `{"alg":"RS256","kid":"r1"}`, strings.Replace(claimsJSON(""), `["api","other"]`, `"web"`, 1), "RS256"), 0, ErrAudience},
		{"policy audience", good, 2, ErrAudience},
		{"wrong issuer", sign(t, `{"alg":"RS256","kid":"r1"}`, strings.Replace(claimsJSON(""), "idp.example", "evil.example", 1), "RS256"), 0, ErrIssuer},
		{"missing required claim", sign(t, `{"alg":"RS256","kid":"r1"}`, strings.Replace(claimsJSON(""), `,"scope":"read"`, "", 1), "RS256"), 0, ErrMissingClaim},
		{"unknown subject", sign(t, `{"alg":"RS256","kid":"r1"}`, strings.Replace(claimsJSON(""), `"alice"`, `"bob"`, 1), "RS256"), 0, ErrUnknownSubject},
		{"modified payload", parts[0] + "." + enc([]byte(strings.Replace(claimsJSON(""), "alice", "alicf", 1))) + "." + parts[2], 0, ErrSignature},
		{"padded base64", parts[0] + "=." + parts[1] + "." + parts[2], 0, ErrHeader},
		{"four segments", good + ".x", 0, ErrMalformed},
		// Not a completely valid JSON object (RFC 7515 §5.2): bytes after
		// the header's object used to pass unless they began a value.
		{"header trailing bytes", sign(t, `{"alg":"RS256","kid":"r1"}garbage`, claimsJSON(""), "RS256"), 0, ErrHeader},
		{"header trailing bracket", sign(t, `{"alg":"RS256","kid":"r1"}]`, claimsJSON(""), "RS256"), 0, ErrHeader},
		// A registered claim must have its type: a null nbf read as 0.
		{"null nbf", sign(t, `{"alg":"RS256","kid":"r1"}`, strings.Replace(claimsJSON(""), `"nbf":1699999990`, `"nbf":null`, 1), "RS256"), 0, ErrClaims},
		{"null aud", sign(t, `{"alg":"RS256","kid":"r1"}`, strings.Replace(claimsJSON(""), `["api","other"]`, `null`, 1), "RS256"), 0, ErrClaims},
		// A null claim is not there for required_claims.
		{"null required claim", sign(t, `{"alg":"RS256","kid":"r1"}`, strings.Replace(claimsJSON(""), `"scope":"read"`, `"scope":null`, 1), "RS256"), 0, ErrMissingClaim},
	}
	for _, tc := range cases {
		_, err := tb.VerifyToken(tc.pi, []byte(tc.tok), t0)
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: err %v, want %v", tc.name, err, tc.want)
		}
		var d Decision
		tb.Authenticate(tc.pi, headers{"authorization": "Bearer " + tc.tok}, t0, &d)
		want := 401
		if tc.want == ErrUnknownSubject {
			want = 403
		}
		if d.Status != want {
			t.Errorf("%s: status %d, want %d", tc.name, d.Status, want)
		}
		if want == 401 && !strings.Contains(d.Challenge, `error="invalid_token"`) {
			t.Errorf("%s: challenge %q", tc.name, d.Challenge)
		}
	}
	// The skew admits a token expired 4s ago, and a cached verdict expires.
	tok := sign(t, `{"alg":"RS256","kid":"r1"}`, claimsJSON(""), "RS256")
	var d Decision
	for _, at := range []time.Time{t0, time.Unix(1700000604, 0)} {
		if tb.Authenticate(0, headers{"authorization": "Bearer " + tok}, at, &d); d.Status != 0 {
			t.Fatalf("at %v: %+v", at, d)
		}
	}
	if tb.Authenticate(0, headers{"authorization": "Bearer " + tok}, time.Unix(1700000605, 0), &d); d.Status != 401 {
		t.Fatalf("cached token served past exp+skew: %+v", d)
	}
}

// TestCookbook verifies the compact RFC 7520 §4 examples (ietf-jose/cookbook,
// Unlicense) and rejects their JSON serializations.
func TestCookbook(t *testing.T) {
	files, _ := filepath.Glob(filepath.Join(vectorDir, "jose-cookbook/jws/*.json"))
	if len(files) != 8 {
		t.Fatalf("found %d cookbook files, want 8", len(files))
	}
	verified := 0
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var c struct {
			Input struct {
				Key json.RawMessage `json:"key"`
				Alg json.RawMessage `json:"alg"`
			} `json:"input"`
			Output struct {
				Compact string          `json:"compact"`
				JSON    json.RawMessage `json:"json"`
			} `json:"output"`
		}
		if err := json.Unmarshal(b, &c); err != nil {
			t.Fatal(err)
		}
		if len(c.Output.JSON) > 0 {
			ks, _ := jwk.ParseKeySet([]byte(`{"keys":[` + string(c.Input.Key) + `]}`))
			if ks != nil {
				if _, _, err := VerifyJWS(c.Output.JSON, ks, nil); !errors.Is(err, ErrJSONSerial) {
					t.Errorf("%s: JSON serialization: %v", filepath.Base(f), err)
				}
			}
		}
		base := filepath.Base(f)
		positive := base < "4_5"
		if c.Output.Compact == "" || !positive {
			// 4_5 (detached payload) has a compact form with an empty
			// payload segment: it must not verify; 4_6-4_8 are JSON only.
			if c.Output.Compact != "" {
				ks, _ := jwk.ParseKeySet(publicSet(t, c.Input.Key, c.Input.Alg))
				if _, _, err := VerifyJWS([]byte(c.Output.Compact), ks, nil); err == nil {
					t.Errorf("%s: detached-content token verified", base)
				}
			}
			continue
		}
		ks, err := jwk.ParseKeySet(publicSet(t, c.Input.Key, c.Input.Alg))
		if err != nil {
			t.Errorf("%s: key: %v", filepath.Base(f), err)
			continue
		}
		if _, _, err := VerifyJWS([]byte(c.Output.Compact), ks, nil); err != nil {
			t.Errorf("%s: %v", filepath.Base(f), err)
			continue
		}
		verified++
	}
	if verified != 4 {
		t.Errorf("verified %d compact cookbook tokens, want 4 (RS256, PS384, ES512, HS256)", verified)
	}
}

// publicSet turns a cookbook key into the set an operator would configure:
// public members only, and the alg the example uses (the cookbook keys
// carry none, and snapgate binds each key to one alg).
func publicSet(t *testing.T, key, alg json.RawMessage) []byte {
	var k map[string]any
	if err := json.Unmarshal(key, &k); err != nil {
		t.Fatal(err)
	}
	var a string
	if json.Unmarshal(alg, &a) == nil {
		k["alg"] = a
	}
	for _, p := range []string{"d", "p", "q", "dp", "dq", "qi"} {
		delete(k, p)
	}
	pub, _ := json.Marshal(map[string]any{"keys": []any{k}})
	return pub
}

func TestNewTableRejects(t *testing.T) {
	for name, mod := range map[string]func(*Config){
		"bad keys":     func(c *Config) { c.Issuers[0].KeySet = []byte(`{"keys":[{"kty":"oct","alg":"HS256","k":"c2hvcnQ"}]}`) },
		"dangling key": func(c *Config) { c.APIKeys[0].Consumer = 9 },
		"dup user":     func(c *Config) { c.Basic = append(c.Basic, c.Basic[0]) },
		"weak hash": func(c *Config) {
			c.Basic[0].PasswordHash = "$pbkdf2-sha256$i=1000$MDEyMzQ1Njc4OWFiY2RlZg$" + enc(make([]byte, 32))
		},
		"unknown issuer": func(c *Config) { c.Policies[0].Issuers = []string{"nope"} },
		"no methods":     func(c *Config) { c.Policies[0].Methods = 0 },
		"auth header":    func(c *Config) { c.Policies[0].APIKeyHeader = "authorization" },
		"bad alg":        func(c *Config) { c.Issuers[0].Algorithms = []string{"none"} },
		"dup subject":    func(c *Config) { c.Issuers[0].Subjects = append(c.Issuers[0].Subjects, c.Issuers[0].Subjects[0]) },
	} {
		cfg := testConfig(t, `{"keys":[`+jwkRSA("r1")+`]}`)
		mod(&cfg)
		if _, err := NewTable(cfg); err == nil {
			t.Errorf("%s: NewTable accepted it", name)
		}
	}
}

// CredentialField names the fields a policy reads credentials from, for
// the proxy's trailer filter, which hands it names with '_' read as '-':
// an api_key_header spelled with '_' never matched, so a second key in a
// trailer passed.
func TestCredentialField(t *testing.T) {
	tab, err := NewTable(Config{Policies: []Policy{{ID: "p", Methods: MethodAPIKey, APIKeyHeader: "x_api_key"}}})
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]bool{"x-api-key": true, "x_api_key": true, "authorization": true, "x-api-keys": false, "x-other": false} {
		if got := tab.CredentialField(0, []byte(name)); got != want {
			t.Errorf("CredentialField(%q) = %v, want %v", name, got, want)
		}
	}
	if tab.CredentialField(1, []byte("authorization")) {
		t.Error("a policy index out of range reads credentials")
	}
}
