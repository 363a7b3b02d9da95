package routing

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/snapgate/snapgate/edge/auth"
	"github.com/snapgate/snapgate/edge/ratelimit"
	"github.com/snapgate/snapgate/fbs"
)

// DefaultConsumerHeader carries the consumer id upstream when a policy
// names no header.
const DefaultConsumerHeader = "X-Consumer-Id"

// Policy is one of the snapshot's policies, compiled at swap. Everything
// the request path needs is resolved here: the auth policy index, the
// rate limits with their header names, the upstream header to set.
type Policy struct {
	ID string
	// AuthIndex is the policy's index in the table's auth.Table, -1 when
	// the policy accepts no credentials (rate limits only): its requests
	// are anonymous and credential headers pass untouched.
	AuthIndex int
	Limits    []Limit
	// ConsumerHeader is the field that carries the consumer id upstream
	// (DefaultConsumerHeader unless the policy names one). A client's own
	// fields of that name are removed on every request, whatever policy
	// applies (Table.ConsumerHeaders).
	ConsumerHeader []byte
	// KeepCredentials forwards the credential header upstream; by default
	// it is removed once it has been checked.
	KeepCredentials bool
}

// Limit is one compiled rate limit of a policy: the bucket parameters
// (per-edge already for cluster-scope limits) and what keys a bucket.
type Limit struct {
	*ratelimit.Limit
	Key    uint8  // fbs.LimitByConsumer, LimitByRoute, LimitByIP or LimitByHeader
	Header []byte // lowercase header name for fbs.LimitByHeader
}

// policies is the compiled Auth of a snapshot.
type policies struct {
	auth *auth.Table // nil when the snapshot has no auth
	list []Policy
	// byCluster is the policy of a route that has none of its own: its
	// cluster's, else the global one, else -1. Resolved per cluster at
	// swap so the request path reads one slice element.
	byCluster []int32
	global    int
	// consumerHeaders are the distinct consumer headers the policies name
	// besides DefaultConsumerHeader, lowercase.
	consumerHeaders [][]byte
}

// ErrPolicy marks a snapshot whose policies the edge cannot enforce
// exactly; such a snapshot is refused (NACKed), never served open.
var ErrPolicy = errors.New("routing: snapshot policies cannot be enforced")

// compilePolicies turns the snapshot's Auth into an auth.Table and compiled
// rate limits. Cluster-scope limits get this edge's share of the fleet.
func compilePolicies(snap *fbs.Snapshot) (policies, error) {
	p := policies{global: snap.GlobalPolicy(), byCluster: make([]int32, snap.NumClusters())}
	for i := range p.byCluster {
		ci := snap.ClusterAt(i).Policy()
		if ci < 0 {
			ci = p.global
		}
		p.byCluster[i] = int32(ci)
	}
	a := snap.Auth()
	if a == nil {
		return p, nil
	}
	cfg, authIndex, err := authConfig(a)
	if err != nil {
		return p, err
	}
	if p.auth, err = auth.NewTable(cfg); err != nil {
		return p, fmt.Errorf("%w: %w", ErrPolicy, err)
	}
	fleet := snap.FleetSize()
	p.list = make([]Policy, len(a.Policies))
	for i := range a.Policies {
		fp := &a.Policies[i]
		if !visibleASCII(fp.ID) {
			return p, fmt.Errorf("%w: policy %q: id must be visible ASCII without quotes or backslashes", ErrPolicy, fp.ID)
		}
		cp := Policy{ID: fp.ID, AuthIndex: authIndex[i], KeepCredentials: fp.KeepCredentials}
		h := fp.ConsumerHeader
		if h == "" {
			h = DefaultConsumerHeader
		}
		if !isToken(h) {
			return p, fmt.Errorf("%w: policy %q: consumer header %q is not a header name", ErrPolicy, fp.ID, h)
		}
		// fbs.Open refused reserved fields (fbs.ReservedHeader) already.
		cp.ConsumerHeader = []byte(h)
		if lower := strings.ToLower(h); lower != strings.ToLower(DefaultConsumerHeader) &&
			!slices.ContainsFunc(p.consumerHeaders, func(b []byte) bool { return string(b) == lower }) {
			p.consumerHeaders = append(p.consumerHeaders, []byte(lower))
		}
		seen := make(map[string]bool, len(fp.RateLimits))
		for _, l := range fp.RateLimits {
			id := limitIdentity(fp.ID, l)
			if seen[id] {
				continue // listed twice: one limit, one token per request
			}
			seen[id] = true
			rate, burst := float64(l.Rate), float64(l.Burst)
			if l.ClusterScope {
				rate, burst = ratelimit.Share(rate, burst, fleet)
			}
			cl := Limit{Limit: ratelimit.NewLimit(limitName(fp.ID, l), id, rate, int(burst)), Key: l.Key}
			if l.Key == fbs.LimitByHeader {
				cl.Header = []byte(l.Header)
			}
			cp.Limits = append(cp.Limits, cl)
		}
		p.list[i] = cp
	}
	return p, nil
}

// limitIdentity is what a limit's buckets belong to (ratelimit.NewLimit):
// its name, scope and configured rate and burst. Two limits that differ in
// any of them are two limits, each taking its token; an edge-wide and a
// cluster-wide limit on one key used to share a bucket whenever the
// fleet's share came to the edge-wide numbers, and rates rounded to the
// same interval shared one too. The fleet size is not part of it: when
// edges join or leave, a cluster-wide limit's buckets keep their state at
// the new share instead of starting full on every edge.
func limitIdentity(policy string, l fbs.RateLimit) string {
	scope := "edge"
	if l.ClusterScope {
		scope = "cluster"
	}
	return fmt.Sprintf("%s %s %d/s burst %d", limitName(policy, l), scope, l.Rate, l.Burst)
}

// limitName is a limit's name in RateLimit headers: "<policy>/<key>",
// e.g. "api/consumer" or "api/header:x-tenant".
func limitName(policy string, l fbs.RateLimit) string {
	switch l.Key {
	case fbs.LimitByConsumer:
		return policy + "/consumer"
	case fbs.LimitByRoute:
		return policy + "/route"
	case fbs.LimitByIP:
		return policy + "/ip"
	}
	return policy + "/header:" + l.Header
}

// authConfig converts the snapshot's Auth into an auth.Config. Policies
// without methods (rate limits only) have no auth policy; authIndex maps
// each snapshot policy to its auth policy index or -1.
func authConfig(a *fbs.Auth) (cfg auth.Config, authIndex []int, err error) {
	issuer := make(map[string]int, len(a.Issuers))
	for i, is := range a.Issuers {
		issuer[is.ID] = i
		cfg.Issuers = append(cfg.Issuers, auth.Issuer{
			ID: is.ID, Issuer: is.Iss, Audiences: is.Audiences, Algorithms: is.Algorithms,
			KeySet: is.KeySet, ClockSkew: time.Duration(is.ClockSkewMs) * time.Millisecond,
			RequiredClaims: is.RequiredClaims,
		})
	}
	for ci, c := range a.Consumers {
		if !visibleASCII(c.ID) {
			return cfg, nil, fmt.Errorf("%w: consumer %q: id must be visible ASCII without quotes or backslashes (it is sent upstream in a header)", ErrPolicy, c.ID)
		}
		cfg.Consumers = append(cfg.Consumers, auth.Consumer{ID: c.ID, Groups: c.Groups})
		for _, h := range c.APIKeyHashes {
			cfg.APIKeys = append(cfg.APIKeys, auth.APIKey{Hash: h, Consumer: ci})
		}
		for _, b := range c.Basic {
			cfg.Basic = append(cfg.Basic, auth.BasicCredential{Username: b.Username, PasswordHash: b.PasswordHash, Consumer: ci})
		}
		for _, l := range c.JWT {
			ii, ok := issuer[l.Issuer]
			if !ok {
				return cfg, nil, fmt.Errorf("%w: consumer %q: issuer %q does not exist", ErrPolicy, c.ID, l.Issuer)
			}
			is := &cfg.Issuers[ii]
			is.Subjects = append(is.Subjects, auth.Subject{Subject: l.Subject, Consumer: ci})
		}
	}
	authIndex = make([]int, len(a.Policies))
	for i, p := range a.Policies {
		authIndex[i] = -1
		if p.Methods == 0 {
			continue
		}
		var m auth.Method
		for _, b := range []struct {
			fbs  uint8
			auth auth.Method
		}{{fbs.AuthAPIKey, auth.MethodAPIKey}, {fbs.AuthJWT, auth.MethodJWT}, {fbs.AuthBasic, auth.MethodBasic}} {
			if p.Methods&b.fbs != 0 {
				m |= b.auth
			}
		}
		authIndex[i] = len(cfg.Policies)
		cfg.Policies = append(cfg.Policies, auth.Policy{
			ID: p.ID, Methods: m, Required: p.Required, APIKeyHeader: p.APIKeyHeader,
			AllowGroups: p.AllowGroups, DenyGroups: p.DenyGroups, Issuers: p.Issuers,
			Audiences: p.Audiences, RequiredClaims: p.RequiredClaims,
		})
	}
	return cfg, authIndex, nil
}

// visibleASCII: ids go into header values and quoted structured-field
// strings upstream and to clients, so they may not carry controls, quotes
// or backslashes. ctrl's id rules are stricter; this guards the wire.
func visibleASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c >= 0x7f || c == '"' || c == '\\' {
			return false
		}
	}
	return s != ""
}

// isToken reports an RFC 9110 §5.6.2 token (a field name).
func isToken(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case c < 0x80 && c != 0 && contains("!#$%&'*+-.^_`|~", c):
		default:
			return false
		}
	}
	return s != ""
}

func contains(set string, c byte) bool {
	for i := 0; i < len(set); i++ {
		if set[i] == c {
			return true
		}
	}
	return false
}

// Auth is the snapshot's compiled authentication, nil when it has none.
func (t *Table) Auth() *auth.Table { return t.pol.auth }

// keepAuth gives t old's authentication table when both snapshots carry
// the same auth section, so that its verdict caches and its password-check
// budget outlive the swap. Snapshots change for routes and health up to 10
// times a second; with a fresh table each time, every Basic credential
// cost a PBKDF2 run (~0.1 s) per version, and the budget started over.
// The auth table holds no bytes of its snapshot (authConfig's strings and
// the parsed keys are copies), so old's may retire. Runs at swap, before t
// serves.
func (t *Table) keepAuth(old *Table) {
	if t.pol.auth != nil && old.pol.auth != nil && bytes.Equal(t.snap.AuthBytes(), old.snap.AuthBytes()) {
		t.pol.auth = old.pol.auth
	}
}

// NumPolicies is the number of policies; policy indexes are below it.
func (t *Table) NumPolicies() int { return len(t.pol.list) }

// Policy returns compiled policy i (0 <= i < NumPolicies).
func (t *Table) Policy(i int) *Policy { return &t.pol.list[i] }

// ConsumerHeaders lists, lowercase, every consumer header a policy of the
// snapshot names other than DefaultConsumerHeader. A backend behind
// several routes trusts the header its policy names, so no client copy of
// any of them goes upstream, whichever policy (or none) the request gets.
func (t *Table) ConsumerHeaders() [][]byte { return t.pol.consumerHeaders }

// PolicyFor is the policy that applies to a matched route, whole: the
// route's own, else its cluster's, else the global one; -1 for none.
func (t *Table) PolicyFor(m *fbs.Match) int {
	if p := m.Policy(); p >= 0 {
		return p
	}
	if ci := m.ClusterIndex(); uint(ci) < uint(len(t.pol.byCluster)) {
		return int(t.pol.byCluster[ci])
	}
	return t.pol.global
}

// Err is why the snapshot's policies could not be compiled, nil if they
// were. Holder refuses to install a table with an error.
func (t *Table) Err() error { return t.err }
