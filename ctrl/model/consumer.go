package model

import (
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"github.com/snapgate/snapgate/fbs/jwk"
	"strings"
)

// Document kinds of the auth model.
const (
	KindConsumer  = "consumer"
	KindJWTIssuer = "jwt_issuer"
	KindPolicy    = "policy"
)

// Auth limits.
const (
	MaxGroups          = 64
	MaxCredentials     = 64
	MaxClockSkewMs     = 300_000
	MaxRequiredClaims  = 16
	PasswordIterations = 600_000 // OWASP 2023 figure for PBKDF2-HMAC-SHA256
	minPasswordIter    = 100_000 // what the edge accepts (edge/auth.MinPBKDF2Iterations)
	maxPasswordIter    = 10_000_000
	apiKeyPrefix       = "sg_"
	apiKeyHashPrefix   = "sha256:"
)

// Consumer is a caller of the gateway: its groups (for ACLs) and its
// credentials. Only hashes of secrets are stored and shipped.
type Consumer struct {
	ID          string      `json:"id"`
	Groups      []string    `json:"groups,omitempty"`
	Credentials Credentials `json:"credentials"`
}

type Credentials struct {
	APIKeys []APIKeyCredential `json:"api_keys,omitempty"`
	JWT     []JWTIdentity      `json:"jwt,omitempty"`
	Basic   []BasicCredential  `json:"basic,omitempty"`
}

// APIKeyCredential is one API key by hash: "sha256:<64 lowercase hex>" of
// the key bytes (HashAPIKey). ID names the key for rotation and audit.
type APIKeyCredential struct {
	ID   string `json:"id"`
	Hash string `json:"hash"`
}

// JWTIdentity links tokens of Issuer (a JWTIssuer id) with "sub" equal to
// Subject, or any subject when Subject is empty, to the consumer.
type JWTIdentity struct {
	Issuer  string `json:"issuer"`
	Subject string `json:"subject,omitempty"`
}

// BasicCredential is a username with a HashPassword string.
type BasicCredential struct {
	Username     string `json:"username"`
	PasswordHash string `json:"password_hash"`
}

// GenerateAPIKey returns a new random key ("sg_" + 43 base64url characters,
// 256 bits) and its stored hash. ctl shows the key once; ctrl keeps the hash.
func GenerateAPIKey() (key, hash string, err error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", "", fmt.Errorf("generating api key: %w", err)
	}
	key = apiKeyPrefix + base64.RawURLEncoding.EncodeToString(b[:])
	return key, HashAPIKey(key), nil
}

// HashAPIKey is the stored form of an API key: "sha256:<hex>".
func HashAPIKey(key string) string {
	s := sha256.Sum256([]byte(key))
	return apiKeyHashPrefix + hex.EncodeToString(s[:])
}

// ParseAPIKeyHash returns the digest of a HashAPIKey string, for the snapshot.
func ParseAPIKeyHash(h string) ([32]byte, error) {
	var d [32]byte
	rest, ok := strings.CutPrefix(h, apiKeyHashPrefix)
	if !ok || len(rest) != 64 || strings.ToLower(rest) != rest {
		return d, fmt.Errorf(`must be "sha256:" followed by 64 lowercase hex digits`)
	}
	if _, err := hex.Decode(d[:], []byte(rest)); err != nil {
		return d, fmt.Errorf(`must be "sha256:" followed by 64 lowercase hex digits`)
	}
	return d, nil
}

// HashPassword hashes a password for BasicCredential with PBKDF2-HMAC-SHA256,
// a random 16-byte salt and PasswordIterations, as a PHC-style string:
// $pbkdf2-sha256$i=<iterations>$<salt>$<hash> (unpadded standard base64).
func HashPassword(password string) (string, error) {
	return hashPassword(password, PasswordIterations)
}

func hashPassword(password string, iter int) (string, error) {
	salt := make([]byte, 16)
	if _, err := rand.Read(salt); err != nil {
		return "", fmt.Errorf("generating salt: %w", err)
	}
	dk, err := pbkdf2.Key(sha256.New, password, salt, iter, 32)
	if err != nil {
		return "", fmt.Errorf("hashing password: %w", err)
	}
	e := base64.RawStdEncoding
	return fmt.Sprintf("$pbkdf2-sha256$i=%d$%s$%s", iter, e.EncodeToString(salt), e.EncodeToString(dk)), nil
}

func checkPasswordHash(s string) string {
	parts := strings.Split(s, "$")
	if len(parts) != 5 || parts[0] != "" || parts[1] != "pbkdf2-sha256" || !strings.HasPrefix(parts[2], "i=") {
		return `must be "$pbkdf2-sha256$i=<iterations>$<salt>$<hash>" (use HashPassword / snapgate ctl)`
	}
	var n int
	if _, err := fmt.Sscanf(parts[2], "i=%d", &n); err != nil || fmt.Sprintf("i=%d", n) != parts[2] || n < minPasswordIter || n > maxPasswordIter {
		return fmt.Sprintf("iterations must be an integer from %d to %d", minPasswordIter, maxPasswordIter)
	}
	e := base64.RawStdEncoding.Strict()
	if salt, err := e.DecodeString(parts[3]); err != nil || len(salt) < 16 {
		return "salt must be at least 16 bytes of unpadded base64"
	}
	if h, err := e.DecodeString(parts[4]); err != nil || len(h) < 32 {
		return "hash must be at least 32 bytes of unpadded base64"
	}
	return ""
}

// Validate checks the consumer on its own; CheckConsumerRefs checks that
// its JWT issuers exist.
func (c *Consumer) Validate() error {
	var col collector
	checkID(&col, "id", c.ID)
	checkGroups(&col, "groups", c.Groups)
	cr := &c.Credentials
	if n := len(cr.APIKeys) + len(cr.JWT) + len(cr.Basic); n > MaxCredentials {
		col.add("credentials", fmt.Sprintf("at most %d credentials, got %d", MaxCredentials, n))
	}
	ids, hashes := map[string]int{}, map[string]int{}
	for i, k := range cr.APIKeys {
		f := fmt.Sprintf("credentials.api_keys[%d]", i)
		checkID(&col, f+".id", k.ID)
		if j, dup := ids[k.ID]; dup && k.ID != "" {
			col.add(f+".id", fmt.Sprintf("duplicates credentials.api_keys[%d]", j))
		}
		ids[k.ID] = i
		if _, err := ParseAPIKeyHash(k.Hash); err != nil {
			col.add(f+".hash", err.Error()+"; store the hash, never the key (snapgate ctl generates one)")
		} else if j, dup := hashes[k.Hash]; dup {
			col.add(f+".hash", fmt.Sprintf("duplicates credentials.api_keys[%d]", j))
		}
		hashes[k.Hash] = i
	}
	seen := map[JWTIdentity]int{}
	for i, j := range cr.JWT {
		f := fmt.Sprintf("credentials.jwt[%d]", i)
		if j.Issuer == "" {
			col.add(f+".issuer", "required: the id of a jwt_issuer")
		} else {
			checkID(&col, f+".issuer", j.Issuer)
		}
		if len(j.Subject) > 256 || strings.ContainsFunc(j.Subject, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
			col.add(f+".subject", "at most 256 characters, no control characters")
		}
		if p, dup := seen[j]; dup {
			col.add(f, fmt.Sprintf("duplicates credentials.jwt[%d]", p))
		}
		seen[j] = i
	}
	users := map[string]int{}
	for i, b := range cr.Basic {
		f := fmt.Sprintf("credentials.basic[%d]", i)
		if b.Username == "" || len(b.Username) > 128 || strings.ContainsAny(b.Username, ":") ||
			strings.ContainsFunc(b.Username, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
			col.add(f+".username", `required, at most 128 characters, no ":" and no control characters (RFC 7617)`)
		}
		if p, dup := users[b.Username]; dup {
			col.add(f+".username", fmt.Sprintf("duplicates credentials.basic[%d]", p))
		}
		users[b.Username] = i
		if r := checkPasswordHash(b.PasswordHash); r != "" {
			col.add(f+".password_hash", r)
		}
	}
	return col.err()
}

// CheckConsumerRefs reports JWT identities naming issuers that do not exist.
func CheckConsumerRefs(c *Consumer, issuerExists func(id string) bool) error {
	var col collector
	for i, j := range c.Credentials.JWT {
		if !issuerExists(j.Issuer) {
			col.add(fmt.Sprintf("credentials.jwt[%d].issuer", i), fmt.Sprintf("jwt_issuer %q does not exist", j.Issuer))
		}
	}
	return col.err()
}

func checkGroups(col *collector, field string, gs []string) {
	if len(gs) > MaxGroups {
		col.add(field, fmt.Sprintf("at most %d groups, got %d", MaxGroups, len(gs)))
		return
	}
	seen := map[string]int{}
	for i, g := range gs {
		f := fmt.Sprintf("%s[%d]", field, i)
		checkID(col, f, g)
		if p, dup := seen[g]; dup {
			col.add(f, fmt.Sprintf("duplicates %s[%d]", field, p))
		}
		seen[g] = i
	}
}

// JWTIssuer is a trusted token issuer with a static JWK set.
type JWTIssuer struct {
	ID             string   `json:"id"`
	Issuer         string   `json:"issuer"`
	Audiences      []string `json:"audiences,omitempty"`
	Algorithms     []string `json:"algorithms,omitempty"`
	Keys           JWKSet   `json:"keys"`
	ClockSkewMs    uint32   `json:"clock_skew_ms,omitempty"`
	RequiredClaims []string `json:"required_claims,omitempty"`
}

// JWKSet is a static JWK set with public members only: the strict decoder
// rejects private members ("d", "p", ...) as unknown fields.
type JWKSet struct {
	Keys []JWK `json:"keys"`
}

type JWK struct {
	Kty    string   `json:"kty"`
	Kid    string   `json:"kid,omitempty"`
	Alg    string   `json:"alg"`
	Use    string   `json:"use,omitempty"`
	KeyOps []string `json:"key_ops,omitempty"`
	K      string   `json:"k,omitempty"`
	N      string   `json:"n,omitempty"`
	E      string   `json:"e,omitempty"`
	Crv    string   `json:"crv,omitempty"`
	X      string   `json:"x,omitempty"`
	Y      string   `json:"y,omitempty"`
}

// KeySetJSON is the set as the edge receives it.
func (s *JWKSet) KeySetJSON() []byte {
	b, _ := json.Marshal(s) // plain strings and slices: cannot fail
	return b
}

func (j *JWTIssuer) Validate() error {
	var col collector
	checkID(&col, "id", j.ID)
	if j.Issuer == "" || len(j.Issuer) > 512 {
		col.add("issuer", `required: the "iss" value of its tokens, at most 512 characters`)
	}
	for i, a := range j.Algorithms {
		if a == "none" || !jwk.SupportedAlg(a) {
			col.add(fmt.Sprintf("algorithms[%d]", i), fmt.Sprintf("%q is not a supported JWS algorithm (want one of %v)", a, jwk.SupportedAlgs()))
		}
	}
	if len(j.Audiences) > 16 {
		col.add("audiences", "at most 16")
	}
	ks, err := jwk.ParseKeySet(j.Keys.KeySetJSON())
	if err != nil {
		col.add("keys", err.Error())
	} else if len(j.Algorithms) > 0 {
		for i, k := range ks.Keys {
			if !contains(j.Algorithms, k.Alg) {
				col.add(fmt.Sprintf("keys.keys[%d].alg", i), fmt.Sprintf("%s is not in algorithms %v", k.Alg, j.Algorithms))
			}
		}
	}
	if j.ClockSkewMs > MaxClockSkewMs {
		col.add("clock_skew_ms", fmt.Sprintf("must be at most %d", MaxClockSkewMs))
	}
	checkClaimNames(&col, "required_claims", j.RequiredClaims)
	return col.err()
}

func checkClaimNames(col *collector, field string, names []string) {
	if len(names) > MaxRequiredClaims {
		col.add(field, fmt.Sprintf("at most %d claims", MaxRequiredClaims))
	}
	for i, n := range names {
		if n == "" || len(n) > 64 || strings.ContainsFunc(n, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
			col.add(fmt.Sprintf("%s[%d]", field, i), "a claim name of 1 to 64 printable characters")
		}
	}
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

// DecodeConsumer, DecodeJWTIssuer and DecodePolicy strictly decode a document.
func DecodeConsumer(data []byte) (Consumer, error) {
	var c Consumer
	err := DecodeStrict(data, &c)
	return c, err
}

func DecodeJWTIssuer(data []byte) (JWTIssuer, error) {
	var j JWTIssuer
	err := DecodeStrict(data, &j)
	return j, err
}
