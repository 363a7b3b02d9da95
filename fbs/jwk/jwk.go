// Package jwk parses static JWK sets (RFC 7517) into verification keys, with
// the standard library only. JWK sets travel inside snapshots: ctrl parses
// them to reject a bad set at put time, and the edge parses the same bytes at
// swap, so both sides apply exactly these rules.
package jwk

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"slices"
)

// Algorithms a key may declare. "none" is deliberately absent.
var supportedAlgs = []string{
	"HS256", "HS384", "HS512",
	"RS256", "RS384", "RS512",
	"PS256", "PS384", "PS512",
	"ES256", "ES384", "ES512",
	"EdDSA",
}

// SupportedAlg reports whether alg is a JWS algorithm snapgate verifies.
func SupportedAlg(alg string) bool { return slices.Contains(supportedAlgs, alg) }

// SupportedAlgs lists the JWS algorithms snapgate verifies, for error messages.
func SupportedAlgs() []string { return slices.Clone(supportedAlgs) }

// Limits on what a static key set may hold.
const (
	maxKeySetBytes = 64 << 10
	maxKeys        = 32
	minRSABits     = 2048
	maxRSABits     = 8192
)

// Key is one parsed verification key. Exactly one of HMAC, RSA, EC, Ed is set.
type Key struct {
	ID   string // "kid", may be empty in a one-key set
	Alg  string // the only algorithm this key verifies
	HMAC []byte
	RSA  *rsa.PublicKey
	EC   *ecdsa.PublicKey
	Ed   ed25519.PublicKey
}

// KeySet is a parsed JWK set. Keys are looked up by kid.
type KeySet struct {
	Keys []Key
}

// jwk is the wire form. Private members are captured only to reject them.
type jwk struct {
	Kty    string   `json:"kty"`
	Kid    string   `json:"kid"`
	Alg    string   `json:"alg"`
	Use    string   `json:"use"`
	KeyOps []string `json:"key_ops"`
	K      *string  `json:"k"`
	N      string   `json:"n"`
	E      string   `json:"e"`
	Crv    string   `json:"crv"`
	X      string   `json:"x"`
	Y      string   `json:"y"`
	D      *string  `json:"d"`
	P      *string  `json:"p"`
	Q      *string  `json:"q"`
}

// ParseKeySet parses a JWK set ({"keys":[...]}) for JWS verification. It
// rejects, with an error naming the key: a set holding private asymmetric
// keys or mixing symmetric and asymmetric keys (either invites algorithm
// confusion), duplicate or missing kids in a multi-key set, keys without
// "alg" or with an alg the key type or curve does not fit, "use" other
// than "sig", "key_ops" without "verify", HMAC keys shorter than the hash,
// RSA keys under 2048 bits, with a bad exponent or the ROCA fingerprint,
// and EC points not on their curve.
func ParseKeySet(data []byte) (*KeySet, error) {
	if len(data) > maxKeySetBytes {
		return nil, fmt.Errorf("key set is %d bytes, at most %d allowed", len(data), maxKeySetBytes)
	}
	var raw struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, fmt.Errorf("key set is not a JWK set: %v", err)
	}
	if len(raw.Keys) == 0 {
		return nil, errors.New(`key set has no keys: want {"keys":[...]}`)
	}
	if len(raw.Keys) > maxKeys {
		return nil, fmt.Errorf("key set has %d keys, at most %d allowed", len(raw.Keys), maxKeys)
	}
	ks := &KeySet{Keys: make([]Key, 0, len(raw.Keys))}
	sym, asym := false, false
	for i, r := range raw.Keys {
		var j jwk
		if err := json.Unmarshal(r, &j); err != nil {
			return nil, fmt.Errorf("keys[%d]: not a JWK: %v", i, err)
		}
		k, err := parseKey(&j)
		if err != nil {
			return nil, fmt.Errorf("keys[%d]: %v", i, err)
		}
		if k.HMAC != nil {
			sym = true
		} else {
			asym = true
		}
		if len(raw.Keys) > 1 && k.ID == "" {
			return nil, fmt.Errorf(`keys[%d]: "kid" is required when the set has several keys`, i)
		}
		for p := range ks.Keys {
			if ks.Keys[p].ID == k.ID {
				return nil, fmt.Errorf("keys[%d]: kid %q duplicates keys[%d]", i, k.ID, p)
			}
		}
		ks.Keys = append(ks.Keys, k)
	}
	if sym && asym {
		return nil, errors.New("key set mixes symmetric (oct) and asymmetric keys; use one kind per issuer")
	}
	return ks, nil
}

// Lookup selects the key for a token header's kid. With several keys a kid
// is required; with one key an absent kid selects it, a present one must match.
func (ks *KeySet) Lookup(kid []byte, hasKid bool) (*Key, bool) {
	if !hasKid {
		if len(ks.Keys) == 1 {
			return &ks.Keys[0], true
		}
		return nil, false
	}
	for i := range ks.Keys {
		if ks.Keys[i].ID == string(kid) {
			return &ks.Keys[i], true
		}
	}
	return nil, false
}

func parseKey(j *jwk) (Key, error) {
	k := Key{ID: j.Kid, Alg: j.Alg}
	if j.Alg == "" {
		return k, errors.New(`"alg" is required: each key verifies exactly one algorithm`)
	}
	if j.Alg == "none" {
		return k, errors.New(`alg "none" is never accepted`)
	}
	if !SupportedAlg(j.Alg) {
		return k, fmt.Errorf("alg %q is not a supported JWS algorithm (want one of %v)", j.Alg, supportedAlgs)
	}
	if j.Use != "" && j.Use != "sig" {
		return k, fmt.Errorf(`"use" is %q, a verification key needs "sig"`, j.Use)
	}
	if j.KeyOps != nil && !slices.Contains(j.KeyOps, "verify") {
		return k, fmt.Errorf(`"key_ops" %v lacks "verify"`, j.KeyOps)
	}
	switch j.Alg[:2] {
	case "HS":
		if j.Kty != "oct" {
			return k, fmt.Errorf("alg %s needs kty \"oct\", got %q", j.Alg, j.Kty)
		}
		if j.K == nil {
			return k, errors.New(`oct key has no "k"`)
		}
		b, err := b64uint(*j.K, false)
		if err != nil {
			return k, fmt.Errorf(`"k": %v`, err)
		}
		// RFC 7518 §3.2: a key of the same size as the hash output or larger.
		need := map[string]int{"HS256": 32, "HS384": 48, "HS512": 64}[j.Alg]
		if len(b) < need {
			return k, fmt.Errorf("%s key is %d bits, at least %d required", j.Alg, len(b)*8, need*8)
		}
		k.HMAC = b
	case "RS", "PS":
		if j.Kty != "RSA" {
			return k, fmt.Errorf("alg %s needs kty \"RSA\", got %q", j.Alg, j.Kty)
		}
		if j.D != nil || j.P != nil || j.Q != nil {
			return k, errors.New("RSA key carries private parameters; give the edge public keys only")
		}
		pub, err := parseRSA(j.N, j.E)
		if err != nil {
			return k, err
		}
		k.RSA = pub
	case "ES":
		if j.Kty != "EC" {
			return k, fmt.Errorf("alg %s needs kty \"EC\", got %q", j.Alg, j.Kty)
		}
		if j.D != nil {
			return k, errors.New(`EC key carries the private "d"; give the edge public keys only`)
		}
		pub, err := parseEC(j.Alg, j.Crv, j.X, j.Y)
		if err != nil {
			return k, err
		}
		k.EC = pub
	default: // EdDSA
		if j.Kty != "OKP" || j.Crv != "Ed25519" {
			return k, fmt.Errorf(`alg EdDSA needs kty "OKP" with crv "Ed25519", got %q/%q`, j.Kty, j.Crv)
		}
		if j.D != nil {
			return k, errors.New(`OKP key carries the private "d"; give the edge public keys only`)
		}
		x, err := b64uint(j.X, false)
		if err != nil || len(x) != ed25519.PublicKeySize {
			return k, errors.New(`Ed25519 "x" must be 32 bytes of base64url`)
		}
		k.Ed = ed25519.PublicKey(x)
	}
	return k, nil
}

// b64uint decodes a base64url field strictly (no padding, canonical bits).
// minimal additionally rejects leading zero octets (RFC 7518 §2 Base64urlUInt).
func b64uint(s string, minimal bool) ([]byte, error) {
	b, err := base64.RawURLEncoding.Strict().DecodeString(s)
	if err != nil {
		return nil, errors.New("not strict unpadded base64url")
	}
	if len(b) == 0 {
		return nil, errors.New("empty")
	}
	if minimal && len(b) > 1 && b[0] == 0 {
		return nil, errors.New("has leading zero octets")
	}
	return b, nil
}

func parseRSA(n64, e64 string) (*rsa.PublicKey, error) {
	nb, err := b64uint(n64, true)
	if err != nil {
		return nil, fmt.Errorf(`RSA "n": %v`, err)
	}
	eb, err := b64uint(e64, true)
	if err != nil {
		return nil, fmt.Errorf(`RSA "e": %v`, err)
	}
	n := new(big.Int).SetBytes(nb)
	if bits := n.BitLen(); bits < minRSABits || bits > maxRSABits {
		return nil, fmt.Errorf("RSA modulus is %d bits, want %d to %d", bits, minRSABits, maxRSABits)
	}
	if len(eb) > 4 {
		return nil, errors.New("RSA exponent is larger than 2^31")
	}
	var e int
	for _, c := range eb {
		e = e<<8 | int(c)
	}
	if e < 3 || e%2 == 0 || e > 1<<31-1 {
		return nil, fmt.Errorf("RSA exponent %d is not an odd number from 3 to 2^31-1", e)
	}
	if n.Bit(0) == 0 {
		return nil, errors.New("RSA modulus is even")
	}
	if rocaFingerprint(n) {
		return nil, errors.New("RSA modulus has the ROCA fingerprint (CVE-2017-15361); generate a new key")
	}
	return &rsa.PublicKey{N: n, E: e}, nil
}

// rocaPrimes are the small primes of the ROCA fingerprint test (Nemec et
// al., CCS 2017, and their detector crocs-muni/roca): Infineon moduli are
// congruent to a power of 65537 modulo every one of them, which a random
// modulus is with negligible probability.
var rocaPrimes = []int64{3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67, 71, 73, 79, 83, 89, 97, 101, 103, 107, 109, 113, 127, 131, 137, 139, 149, 151, 157, 163, 167}

func rocaFingerprint(n *big.Int) bool {
	var r big.Int
	for _, p := range rocaPrimes {
		x := r.Mod(n, big.NewInt(p)).Int64()
		g := int64(65537 % p)
		in := false
		v := int64(1)
		for range p { // the subgroup generated by g has at most p-1 elements
			if v == x {
				in = true
				break
			}
			v = v * g % p
		}
		if !in {
			return false
		}
	}
	return true
}

func parseEC(alg, crv, x64, y64 string) (*ecdsa.PublicKey, error) {
	want := map[string]string{"ES256": "P-256", "ES384": "P-384", "ES512": "P-521"}[alg]
	if crv != want {
		return nil, fmt.Errorf("alg %s needs crv %q, got %q", alg, want, crv)
	}
	var curve elliptic.Curve
	switch crv {
	case "P-256":
		curve = elliptic.P256()
	case "P-384":
		curve = elliptic.P384()
	default:
		curve = elliptic.P521()
	}
	size := (curve.Params().BitSize + 7) / 8
	x, err := b64uint(x64, false)
	if err != nil || len(x) != size {
		return nil, fmt.Errorf(`EC "x" must be %d bytes of base64url`, size)
	}
	y, err := b64uint(y64, false)
	if err != nil || len(y) != size {
		return nil, fmt.Errorf(`EC "y" must be %d bytes of base64url`, size)
	}
	// ParseUncompressedPublicKey rejects points not on the curve (invalid-
	// curve attacks) and coordinates not reduced modulo p.
	pub, err := ecdsa.ParseUncompressedPublicKey(curve, bytes.Join([][]byte{{4}, x, y}, nil))
	if err != nil {
		return nil, fmt.Errorf("EC point: %v", err)
	}
	return pub, nil
}
