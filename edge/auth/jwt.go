package auth

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"encoding/json"
	"errors"
	"math"
	"slices"
	"sync/atomic"
	"time"
)

// Claim failures; like the verification errors they are safe to show.
var (
	ErrClaims         = errors.New("token claims are not a JSON object")
	ErrIssuer         = errors.New("token issuer is not accepted")
	ErrAudience       = errors.New("token audience is not accepted")
	ErrExpired        = errors.New("token is expired")
	ErrNotYetValid    = errors.New("token is not yet valid")
	ErrNoExpiry       = errors.New(`token has no "exp"`)
	ErrMissingClaim   = errors.New("token lacks a required claim")
	ErrUnknownSubject = errors.New("token subject is not a known consumer")
)

// claims are the registered claims the edge checks, decoded once per
// first-seen token.
type claims struct {
	iss, sub string
	aud      []string
	exp, nbf float64
	hasExp   bool
	hasNbf   bool
	members  map[string]json.RawMessage
}

func parseClaims(payload []byte) (*claims, error) {
	m, err := decodeObject(payload)
	if err != nil {
		return nil, ErrClaims
	}
	// A null registered claim is not its type (RFC 7519 §4.1), though
	// json.Unmarshal would take it as the zero value: nbf 0, aud [""].
	// Another null claim counts as absent, for required claims.
	for name, v := range m {
		if string(bytes.TrimSpace(v)) != "null" {
			continue
		}
		switch name {
		case "iss", "sub", "aud", "exp", "nbf", "iat", "jti":
			return nil, ErrClaims
		}
		delete(m, name)
	}
	c := &claims{members: m}
	str := func(name string, dst *string) error {
		if v, ok := m[name]; ok && json.Unmarshal(v, dst) != nil {
			return ErrClaims
		}
		return nil
	}
	num := func(name string, dst *float64, has *bool) error {
		v, ok := m[name]
		if !ok {
			return nil
		}
		if json.Unmarshal(v, dst) != nil || math.IsNaN(*dst) || math.IsInf(*dst, 0) {
			return ErrClaims
		}
		*has = true
		return nil
	}
	if err := errors.Join(str("iss", &c.iss), str("sub", &c.sub),
		num("exp", &c.exp, &c.hasExp), num("nbf", &c.nbf, &c.hasNbf)); err != nil {
		return nil, ErrClaims
	}
	if v, ok := m["aud"]; ok {
		var one string
		if json.Unmarshal(v, &one) == nil {
			c.aud = []string{one}
		} else if json.Unmarshal(v, &c.aud) != nil {
			return nil, ErrClaims
		}
	}
	return c, nil
}

// peekIssuer reads the unverified "iss" to choose the issuer whose keys
// verify the token; everything is checked again after verification.
func peekIssuer(tok []byte) (string, error) {
	_, pseg, _, err := jwsParts(tok)
	if err != nil {
		return "", err
	}
	raw := make([]byte, b64.DecodedLen(len(pseg)))
	n, err := b64.Decode(raw, pseg)
	if err != nil {
		return "", ErrMalformed
	}
	var p struct {
		Iss string `json:"iss"`
	}
	if json.Unmarshal(raw[:n], &p) != nil {
		return "", ErrClaims
	}
	return p.Iss, nil
}

// verifyJWT verifies tok against the table's issuers and checks its claims
// for policy p. It returns the consumer index and the time after which the
// verdict no longer holds (exp plus skew) for the cache.
func (t *Table) verifyJWT(p *policy, tok []byte, now time.Time) (consumer int32, until int64, notBefore int64, err error) {
	iss, err := peekIssuer(tok)
	if err != nil {
		return -1, 0, 0, err
	}
	is, ok := t.issuerByIss[iss]
	if !ok || (len(p.issuers) > 0 && !slices.Contains(p.issuers, is)) {
		return -1, 0, 0, ErrIssuer
	}
	ti := &t.issuers[is]
	payload, _, err := VerifyJWS(tok, ti.keys, ti.allowAlg)
	if err != nil {
		return -1, 0, 0, err
	}
	c, err := parseClaims(payload)
	if err != nil {
		return -1, 0, 0, err
	}
	if c.iss != ti.iss {
		return -1, 0, 0, ErrIssuer
	}
	if !audOK(c.aud, ti.audiences) || !audOK(c.aud, p.audiences) {
		return -1, 0, 0, ErrAudience
	}
	if !c.hasExp {
		return -1, 0, 0, ErrNoExpiry
	}
	skew := ti.skew.Nanoseconds()
	until = secondsToNanos(c.exp) + skew
	nowNs := now.UnixNano()
	if nowNs >= until {
		return -1, 0, 0, ErrExpired
	}
	notBefore = math.MinInt64
	if c.hasNbf {
		notBefore = secondsToNanos(c.nbf) - skew
		if nowNs < notBefore {
			return -1, 0, 0, ErrNotYetValid
		}
	}
	for _, name := range ti.required {
		if _, ok := c.members[name]; !ok {
			return -1, 0, 0, ErrMissingClaim
		}
	}
	for _, name := range p.requiredClaims {
		if _, ok := c.members[name]; !ok {
			return -1, 0, 0, ErrMissingClaim
		}
	}
	cons, ok := ti.subjects[c.sub]
	if !ok {
		if cons, ok = ti.subjects[""]; !ok {
			return -1, 0, 0, ErrUnknownSubject
		}
	}
	return cons, until, notBefore, nil
}

func secondsToNanos(s float64) int64 {
	const limit = float64(math.MaxInt64 / int64(time.Second))
	switch {
	case s >= limit:
		return math.MaxInt64
	case s <= -limit:
		return math.MinInt64
	}
	return int64(s * float64(time.Second))
}

// audOK: with no configured audiences any token passes; otherwise the
// token's aud (string or array) must contain one of them.
func audOK(tokenAud, want []string) bool {
	if len(want) == 0 {
		return true
	}
	for _, a := range tokenAud {
		if slices.Contains(want, a) {
			return true
		}
	}
	return false
}

// verdictCache remembers successful verifications, keyed by SHA-256 of the
// credential bytes, so a repeat request costs one hash and one atomic load.
// It is direct-mapped: a new entry overwrites whatever occupied its slot, so
// memory is fixed at its size and an attacker flooding new credentials can
// only cause misses (full verification), never a false hit, because the
// full 32-byte digest is compared. Entries are immutable; a slot is
// replaced by swapping its pointer, so readers need no lock.
type verdictCache struct {
	slots []atomic.Pointer[verdict]
	mask  uint64
}

type verdict struct {
	digest    [32]byte
	policy    int32 // claims checks depend on the policy; -1 for basic auth
	consumer  int32
	until     int64 // unix nanos after which the verdict is void
	notBefore int64
}

func newVerdictCache(size int) *verdictCache {
	n := 1
	for n < size {
		n <<= 1
	}
	return &verdictCache{slots: make([]atomic.Pointer[verdict], n), mask: uint64(n - 1)}
}

func (c *verdictCache) slot(d *[32]byte) *atomic.Pointer[verdict] {
	return &c.slots[binary.LittleEndian.Uint64(d[:8])&c.mask]
}

// get returns the consumer for a cached, still valid verdict.
func (c *verdictCache) get(d *[32]byte, policy int32, nowNs int64) (int32, bool) {
	v := c.slot(d).Load()
	if v == nil || v.policy != policy || subtle.ConstantTimeCompare(v.digest[:], d[:]) != 1 {
		return -1, false
	}
	if nowNs >= v.until || nowNs < v.notBefore {
		return -1, false
	}
	return v.consumer, true
}

func (c *verdictCache) put(v *verdict) { c.slot(&v.digest).Store(v) }

// digest hashes a credential on the stack.
func digest(b []byte) [32]byte { return sha256.Sum256(b) }
