// Package auth decides who a request comes from and whether that caller may
// use a route: API keys, JWTs (compact JWS on static JWK sets) and HTTP
// Basic, then group ACLs. A Table is built once per snapshot at swap from a
// Config; Authenticate runs per request, without locks, and without heap
// allocations for API keys and for JWTs and Basic credentials seen before
// (a bounded cache of verified credentials). See docs/auth.md.
package auth

import (
	"bytes"
	"crypto/subtle"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"github.com/snapgate/snapgate/edge/h1"
	"github.com/snapgate/snapgate/fbs"
	"github.com/snapgate/snapgate/fbs/jwk"
	"math"
	"slices"
	"strings"
	"time"
)

// Method is a set of authentication methods.
type Method uint8

const (
	MethodAPIKey Method = 1 << iota
	MethodJWT
	MethodBasic
)

// DefaultAPIKeyHeader is where API keys are read when a policy names no header.
const DefaultAPIKeyHeader = fbs.DefaultAPIKeyHeader

// DefaultCacheSize is the number of verdict-cache slots for JWT and for Basic.
const DefaultCacheSize = 4096

// HeaderSource looks up a request header by lowercase name (first field).
// fbs.HeaderSource has the same method, so the proxy passes the same value.
type HeaderSource interface {
	Header(name []byte) ([]byte, bool)
}

// Config is everything the snapshot says about authentication. Consumers
// are referred to by index.
type Config struct {
	Consumers []Consumer
	APIKeys   []APIKey
	Basic     []BasicCredential
	Issuers   []Issuer
	Policies  []Policy
	// CacheSize is the slot count of each verdict cache; 0 = DefaultCacheSize.
	CacheSize int
	// PasswordCheckCPU bounds the CPU time per second that the PBKDF2
	// runs of Basic checks take (kdf.go); 0 = DefaultPasswordCheckCPU.
	PasswordCheckCPU time.Duration
}

type Consumer struct {
	ID     string
	Groups []string
}

// APIKey is the SHA-256 of a key (ctrl never ships the key itself).
type APIKey struct {
	Hash     [32]byte
	Consumer int
}

// BasicCredential is a username with a PBKDF2 PHC string (see HashPassword
// in ctrl/model): $pbkdf2-sha256$i=<iterations>$<salt>$<hash>.
type BasicCredential struct {
	Username     string
	PasswordHash string
	Consumer     int
}

// Issuer is one trusted JWT issuer.
type Issuer struct {
	ID             string
	Issuer         string   // the "iss" value
	Audiences      []string // empty = any
	Algorithms     []string // empty = whatever the keys declare
	KeySet         []byte   // JWK set JSON
	ClockSkew      time.Duration
	RequiredClaims []string
	// Subjects maps "sub" values to consumers; Subject "" matches any sub.
	Subjects []Subject
}

type Subject struct {
	Subject  string
	Consumer int
}

// Policy is one compiled auth policy.
type Policy struct {
	ID       string
	Methods  Method
	Required bool
	// APIKeyHeader is the lowercase header carrying API keys; "" = x-api-key.
	APIKeyHeader   string
	AllowGroups    []string
	DenyGroups     []string
	Issuers        []string // issuer IDs accepted; empty = all
	Audiences      []string // audiences required in addition to the issuer's
	RequiredClaims []string
	Realm          string // WWW-Authenticate realm; "" = "snapgate"
}

// Decision is the outcome of Authenticate. Status is 0 when the request
// may proceed, else 401 or 403 with Reason (short, static, never a
// secret) and, for 401, Challenge as the WWW-Authenticate value.
type Decision struct {
	Status     int
	Reason     string
	Challenge  string
	Method     Method // the method that authenticated, 0 for anonymous
	Consumer   int    // index into Config.Consumers, -1 for anonymous
	ConsumerID string
	Groups     []string
	// Credential is the lowercase header that carried the credential, for
	// the proxy to strip unless the policy keeps credentials.
	Credential []byte
	// RetryAfter is set with Status 429: when a password check is due.
	RetryAfter time.Duration
}

// Table is the per-snapshot auth state. Safe for concurrent use.
type Table struct {
	consumers   []consumer
	keys        []apiSlot
	keyMask     uint64
	basic       map[string]basicUser
	issuers     []issuer
	issuerByIss map[string]int
	policies    []policy
	jwtCache    *verdictCache
	basicCache  *verdictCache // verified Basic credentials
	// basicFailed holds recently failed Basic credentials apart from
	// basicCache, so that a stream of wrong passwords cannot evict the
	// verified ones and send their users back to the password-check budget
	// it keeps spending.
	basicFailed *verdictCache
	// dummy is checked for unknown usernames, at the iteration count of
	// the stored hashes: a different count would tell by its time whether
	// a username exists.
	dummy basicUser
	kdf   *kdfBudget
}

type consumer struct {
	id     string
	groups []string
	gids   []int32 // sorted interned group ids
}

type apiSlot struct {
	hash     [32]byte
	consumer int32
	used     bool
}

type issuer struct {
	iss       string
	keys      *jwk.KeySet
	algs      []string
	audiences []string
	skew      time.Duration
	required  []string
	subjects  map[string]int32
}

func (i *issuer) allowAlg(alg string) bool { return len(i.algs) == 0 || slices.Contains(i.algs, alg) }

type policy struct {
	methods        Method
	required       bool
	keyHeader      []byte
	allow, deny    []int32
	issuers        []int
	audiences      []string
	requiredClaims []string
	challenge      string
	challengeBad   string // with error="invalid_token" for a rejected bearer token
}

// CredentialField reports whether name (lowercase, '_' read as '-') is a
// field policy pi reads a credential from: its API key header (which may
// be spelled with '_') or Authorization.
func (t *Table) CredentialField(pi int, name []byte) bool {
	if pi < 0 || pi >= len(t.policies) {
		return false
	}
	return h1.NameIs(name, t.policies[pi].keyHeader) || bytes.Equal(name, hdrAuthorization)
}

// Well-known header names, package-level so lookups do not allocate.
var hdrAuthorization = []byte("authorization")

// NewTable compiles cfg. It fails, naming the item, on anything the edge
// cannot enforce exactly (an unparsable key set, a dangling consumer
// index, a duplicate username or issuer); ctrl validates the same rules
// earlier, so this is a second line for bytes that came over the network.
func NewTable(cfg Config) (*Table, error) {
	t := &Table{basic: map[string]basicUser{}, issuerByIss: map[string]int{}}
	groupIDs := map[string]int32{}
	intern := func(g string) int32 {
		id, ok := groupIDs[g]
		if !ok {
			id = int32(len(groupIDs))
			groupIDs[g] = id
		}
		return id
	}
	nc := len(cfg.Consumers)
	if nc > math.MaxInt32 {
		return nil, errors.New("too many consumers")
	}
	validConsumer := func(i int) bool { return i >= 0 && i < nc }
	for _, c := range cfg.Consumers {
		cc := consumer{id: c.ID, groups: c.Groups}
		for _, g := range c.Groups {
			cc.gids = append(cc.gids, intern(g))
		}
		slices.Sort(cc.gids)
		t.consumers = append(t.consumers, cc)
	}

	size := 1
	for size < 2*len(cfg.APIKeys) {
		size <<= 1
	}
	t.keys, t.keyMask = make([]apiSlot, size), uint64(size-1)
	for i, k := range cfg.APIKeys {
		if !validConsumer(k.Consumer) {
			return nil, fmt.Errorf("api key %d: consumer index %d out of range", i, k.Consumer)
		}
		j := binary.LittleEndian.Uint64(k.Hash[:8]) & t.keyMask
		for t.keys[j].used {
			if t.keys[j].hash == k.Hash {
				return nil, fmt.Errorf("api key %d: the same key hash is listed twice", i)
			}
			j = (j + 1) & t.keyMask
		}
		t.keys[j] = apiSlot{hash: k.Hash, consumer: int32(k.Consumer), used: true}
	}

	for i, b := range cfg.Basic {
		if !validConsumer(b.Consumer) {
			return nil, fmt.Errorf("basic credential %d: consumer index %d out of range", i, b.Consumer)
		}
		if _, dup := t.basic[b.Username]; dup {
			return nil, fmt.Errorf("basic credential %d: username %q is listed twice", i, b.Username)
		}
		u, err := parsePHC(b.PasswordHash)
		if err != nil {
			return nil, fmt.Errorf("basic credential %d (%q): %v", i, b.Username, err)
		}
		u.consumer = int32(b.Consumer)
		t.basic[b.Username] = u
	}

	issuerIdx := map[string]int{}
	for i, is := range cfg.Issuers {
		ks, err := jwk.ParseKeySet(is.KeySet)
		if err != nil {
			return nil, fmt.Errorf("issuer %q: keys: %v", is.ID, err)
		}
		if _, dup := t.issuerByIss[is.Issuer]; dup || is.Issuer == "" {
			return nil, fmt.Errorf("issuer %q: iss %q is empty or used by another issuer", is.ID, is.Issuer)
		}
		for _, a := range is.Algorithms {
			if !jwk.SupportedAlg(a) {
				return nil, fmt.Errorf("issuer %q: algorithm %q is not supported", is.ID, a)
			}
		}
		ti := issuer{iss: is.Issuer, keys: ks, algs: is.Algorithms, audiences: is.Audiences,
			skew: is.ClockSkew, required: is.RequiredClaims, subjects: map[string]int32{}}
		for _, s := range is.Subjects {
			if !validConsumer(s.Consumer) {
				return nil, fmt.Errorf("issuer %q: subject %q: consumer index %d out of range", is.ID, s.Subject, s.Consumer)
			}
			if _, dup := ti.subjects[s.Subject]; dup {
				return nil, fmt.Errorf("issuer %q: subject %q is linked to two consumers", is.ID, s.Subject)
			}
			ti.subjects[s.Subject] = int32(s.Consumer)
		}
		t.issuerByIss[is.Issuer] = i
		issuerIdx[is.ID] = i
		t.issuers = append(t.issuers, ti)
	}

	for _, p := range cfg.Policies {
		cp := policy{methods: p.Methods, required: p.Required, audiences: p.Audiences, requiredClaims: p.RequiredClaims}
		if p.Methods == 0 || p.Methods&^(MethodAPIKey|MethodJWT|MethodBasic) != 0 {
			return nil, fmt.Errorf("policy %q: methods %#x: want a non-empty set of api_key, jwt, basic", p.ID, p.Methods)
		}
		h := p.APIKeyHeader
		if h == "" {
			h = DefaultAPIKeyHeader
		}
		if h != strings.ToLower(h) || h == "authorization" {
			return nil, fmt.Errorf("policy %q: api key header %q must be lowercase and not authorization", p.ID, h)
		}
		cp.keyHeader = []byte(h)
		for _, g := range p.AllowGroups {
			cp.allow = append(cp.allow, intern(g))
		}
		for _, g := range p.DenyGroups {
			cp.deny = append(cp.deny, intern(g))
		}
		slices.Sort(cp.allow)
		slices.Sort(cp.deny)
		for _, id := range p.Issuers {
			i, ok := issuerIdx[id]
			if !ok {
				return nil, fmt.Errorf("policy %q: issuer %q does not exist", p.ID, id)
			}
			cp.issuers = append(cp.issuers, i)
		}
		cp.challenge, cp.challengeBad = challenges(p)
		t.policies = append(t.policies, cp)
	}
	n := cfg.CacheSize
	if n <= 0 {
		n = DefaultCacheSize
	}
	t.jwtCache, t.basicCache, t.basicFailed = newVerdictCache(n), newVerdictCache(n), newVerdictCache(n)
	t.dummy = dummyUser(t.basic)
	t.kdf = newKDFBudget(cfg.PasswordCheckCPU)
	return t, nil
}

// challenges builds the WWW-Authenticate values (RFC 9110 §11.6.1) once.
// API keys have no registered scheme, so they get no challenge of their own.
func challenges(p Policy) (plain, badToken string) {
	realm := p.Realm
	if realm == "" {
		realm = "snapgate"
	}
	realm = strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(realm)
	var a, b []string
	if p.Methods&MethodJWT != 0 {
		a = append(a, `Bearer realm="`+realm+`"`)
		b = append(b, `Bearer realm="`+realm+`", error="invalid_token"`)
	}
	if p.Methods&MethodBasic != 0 {
		a = append(a, `Basic realm="`+realm+`", charset="UTF-8"`)
		b = append(b, `Basic realm="`+realm+`", charset="UTF-8"`)
	}
	if len(a) == 0 {
		a = append(a, `ApiKey realm="`+realm+`", header="`+headerCase(p.APIKeyHeader)+`"`)
		b = a
	}
	return strings.Join(a, ", "), strings.Join(b, ", ")
}

func headerCase(h string) string {
	if h == "" {
		h = DefaultAPIKeyHeader
	}
	return h
}

// NumPolicies is the number of compiled policies; policy indexes follow Config.Policies.
func (t *Table) NumPolicies() int { return len(t.policies) }

// Short reasons. Static strings, so a Decision never allocates.
const (
	ReasonNoCredentials = "credentials required"
	ReasonBadAPIKey     = "invalid api key"
	ReasonBadToken      = "invalid bearer token"
	ReasonBadBasic      = "invalid username or password"
	ReasonMethod        = "authentication method not accepted"
	ReasonDenied        = "consumer group denied"
	ReasonNotAllowed    = "consumer not in an allowed group"
	ReasonNoConsumer    = "token subject is not a known consumer"
	// ReasonTwoCredentials: an API key and an Authorization field under a
	// policy that accepts both. Only one would be verified, and the other
	// would reach the backend looking checked (P1: refuse the ambiguity).
	ReasonTwoCredentials = "more than one credential"
	// ReasonPasswordChecks is a 429: the edge's budget of password checks
	// is spent (kdf.go); Decision.RetryAfter says when one is due.
	ReasonPasswordChecks = "too many password checks"
)

// Authenticate evaluates policy pi for one request: authentication, then the
// ACL. Credentials are looked for in the order API key, Authorization
// (Bearer, then Basic); the first one present decides, and an invalid one
// is a 401, never a fall-back to anonymous. now is the request time.
func (t *Table) Authenticate(pi int, hs HeaderSource, now time.Time, d *Decision) {
	*d = Decision{Consumer: -1}
	if pi < 0 || pi >= len(t.policies) {
		d.Status, d.Reason = 500, "unknown auth policy"
		return
	}
	p := &t.policies[pi]
	cons := int32(-1)
	if v, ok := hs.Header(p.keyHeader); ok {
		if p.methods&MethodAPIKey == 0 {
			t.fail(d, p, 401, ReasonMethod, false)
			return
		}
		if p.methods&(MethodJWT|MethodBasic) != 0 {
			if _, both := hs.Header(hdrAuthorization); both {
				t.fail(d, p, 401, ReasonTwoCredentials, false)
				return
			}
		}
		d.Credential = p.keyHeader
		if cons = t.lookupKey(v); cons < 0 {
			t.fail(d, p, 401, ReasonBadAPIKey, false)
			return
		}
		d.Method = MethodAPIKey
	} else if v, ok := hs.Header(hdrAuthorization); ok {
		d.Credential = hdrAuthorization
		scheme, cred := splitAuth(v)
		switch {
		case asciiEqualFold(scheme, "bearer") && p.methods&MethodJWT != 0:
			c, reason := t.jwt(p, int32(pi), cred, now)
			if c < 0 {
				t.fail(d, p, 401, reason, true)
				if reason == ReasonNoConsumer {
					d.Status = 403
				}
				return
			}
			cons, d.Method = c, MethodJWT
		case asciiEqualFold(scheme, "basic") && p.methods&MethodBasic != 0:
			var wait time.Duration
			if cons, wait = t.basicAuth(cred, now.UnixNano()); cons < 0 {
				if wait > 0 {
					d.Status, d.Reason, d.RetryAfter = 429, ReasonPasswordChecks, wait
					return
				}
				t.fail(d, p, 401, ReasonBadBasic, false)
				return
			}
			d.Method = MethodBasic
		default:
			t.fail(d, p, 401, ReasonMethod, false)
			return
		}
	}
	if cons < 0 {
		d.Credential = nil
		if p.required || len(p.allow) > 0 {
			t.fail(d, p, 401, ReasonNoCredentials, false)
		}
		return
	}
	c := &t.consumers[cons]
	d.Consumer, d.ConsumerID, d.Groups = int(cons), c.id, c.groups
	if intersects(c.gids, p.deny) {
		t.fail(d, p, 403, ReasonDenied, false)
		return
	}
	if len(p.allow) > 0 && !intersects(c.gids, p.allow) {
		t.fail(d, p, 403, ReasonNotAllowed, false)
	}
}

func (t *Table) fail(d *Decision, p *policy, status int, reason string, badToken bool) {
	d.Status, d.Reason = status, reason
	if status == 401 {
		d.Challenge = p.challenge
		if badToken {
			d.Challenge = p.challengeBad
		}
	}
}

// lookupKey hashes the presented key on the stack and probes the table;
// the stored digest is compared in constant time.
func (t *Table) lookupKey(key []byte) int32 {
	if len(key) == 0 || len(t.keys) == 0 {
		return -1
	}
	h := digest(key)
	j := binary.LittleEndian.Uint64(h[:8]) & t.keyMask
	for range t.keys {
		s := &t.keys[j]
		if !s.used {
			return -1
		}
		if subtle.ConstantTimeCompare(s.hash[:], h[:]) == 1 {
			return s.consumer
		}
		j = (j + 1) & t.keyMask
	}
	return -1
}

func (t *Table) jwt(p *policy, pi int32, tok []byte, now time.Time) (int32, string) {
	if len(tok) == 0 || len(tok) > MaxTokenLen {
		return -1, ReasonBadToken
	}
	h := digest(tok)
	nowNs := now.UnixNano()
	if c, ok := t.jwtCache.get(&h, pi, nowNs); ok {
		return c, ""
	}
	c, until, nbf, err := t.verifyJWT(p, tok, now)
	if err != nil {
		if errors.Is(err, ErrUnknownSubject) {
			return -1, ReasonNoConsumer
		}
		return -1, ReasonBadToken
	}
	t.jwtCache.put(&verdict{digest: h, policy: pi, consumer: c, until: until, notBefore: nbf})
	return c, ""
}

// VerifyToken verifies a bearer token for policy pi without the cache and
// returns the precise reason on failure, for logs and tests (the client
// only ever sees ReasonBadToken).
func (t *Table) VerifyToken(pi int, tok []byte, now time.Time) (consumer int, err error) {
	if pi < 0 || pi >= len(t.policies) {
		return -1, errors.New("unknown auth policy")
	}
	c, _, _, err := t.verifyJWT(&t.policies[pi], tok, now)
	return int(c), err
}

// basicAuth returns the consumer of a Basic credential, or -1 and, when
// the password-check budget is spent, how long until a check is due.
func (t *Table) basicAuth(cred []byte, nowNs int64) (int32, time.Duration) {
	// user:pass decodes into a stack buffer; RFC 7617 credentials longer
	// than this are not plausible and are refused.
	var buf [384]byte
	if base64.StdEncoding.DecodedLen(len(cred)) > len(buf) {
		return -1, 0
	}
	n, err := base64.StdEncoding.Strict().Decode(buf[:], cred)
	if err != nil {
		return -1, 0
	}
	plain := buf[:n]
	h := digest(plain)
	if c, ok := t.basicCache.get(&h, -1, nowNs); ok {
		return c, 0
	}
	if _, ok := t.basicFailed.get(&h, -1, nowNs); ok {
		return -1, 0 // failed within failedBasicTTL
	}
	colon := -1
	for i, b := range plain {
		if b == ':' {
			colon = i
			break
		}
	}
	if colon <= 0 {
		return -1, 0
	}
	u, known := t.basic[string(plain[:colon])]
	if !known {
		u = t.dummy
	}
	work := u.work()
	est := t.kdf.estimate(work)
	if ok, wait := t.kdf.take(nowNs, est); !ok {
		return -1, max(wait, 1)
	}
	start := time.Now()
	good := u.check(plain[colon+1:])
	t.kdf.settle(int64(time.Since(start)), est, work)
	if !good || !known {
		t.basicFailed.put(&verdict{digest: h, policy: -1, consumer: -1, until: nowNs + int64(failedBasicTTL), notBefore: math.MinInt64})
		return -1, 0
	}
	t.basicCache.put(&verdict{digest: h, policy: -1, consumer: u.consumer, until: math.MaxInt64, notBefore: math.MinInt64})
	return u.consumer, 0
}

// splitAuth splits "Scheme SP credentials" (RFC 9110 §11.4).
func splitAuth(v []byte) (scheme, cred []byte) {
	for i, b := range v {
		if b == ' ' {
			cred = v[i+1:]
			for len(cred) > 0 && cred[0] == ' ' {
				cred = cred[1:]
			}
			return v[:i], cred
		}
	}
	return v, nil
}

func asciiEqualFold(b []byte, lower string) bool {
	if len(b) != len(lower) {
		return false
	}
	for i := range b {
		c := b[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != lower[i] {
			return false
		}
	}
	return true
}

// intersects reports whether two sorted id lists share an element.
func intersects(a, b []int32) bool {
	i, j := 0, 0
	for i < len(a) && j < len(b) {
		switch {
		case a[i] == b[j]:
			return true
		case a[i] < b[j]:
			i++
		default:
			j++
		}
	}
	return false
}
