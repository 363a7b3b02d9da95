package fbs

import (
	"bytes"
	"cmp"
	"fmt"
	"slices"
	"strings"

	"github.com/cespare/xxhash/v2"
	flatbuffers "github.com/google/flatbuffers/go"

	"github.com/snapgate/snapgate/fbs/snapfb"
)

// Auth is what a snapshot says about callers: consumers and their
// credentials, trusted JWT issuers and policies. Routes, clusters and
// State.GlobalPolicy refer to policies by id. It travels as one nested
// FlatBuffer, so an edit to it leaves the route shards' bytes alone.
type Auth struct {
	Consumers []Consumer
	Issuers   []Issuer
	Policies  []Policy
}

// Consumer is a caller with its groups and credentials.
type Consumer struct {
	ID           string
	Groups       []string
	APIKeyHashes [][32]byte // SHA-256 of each API key; the keys never ship
	Basic        []BasicCredential
	JWT          []JWTLink
}

// BasicCredential is a username and its PBKDF2 PHC string.
type BasicCredential struct {
	Username, PasswordHash string
}

// JWTLink maps tokens of Issuer (an Issuer id) with subject Subject to the
// consumer; an empty Subject maps every subject of the issuer.
type JWTLink struct {
	Issuer, Subject string
}

// Issuer is a trusted JWT issuer with a static JWK set.
type Issuer struct {
	ID             string
	Iss            string // the "iss" claim value
	Audiences      []string
	Algorithms     []string
	KeySet         []byte // JWK set JSON
	ClockSkewMs    uint32
	RequiredClaims []string
}

// Policy methods (Policy.Methods bits).
const (
	AuthAPIKey uint8 = 1 << iota
	AuthJWT
	AuthBasic
)

// Rate-limit keys (RateLimit.Key).
const (
	LimitByConsumer uint8 = iota
	LimitByRoute
	LimitByIP
	LimitByHeader // RateLimit.Header names the header
)

// RateLimit is one token bucket of a policy: Rate per second, Burst at once,
// per key value. ClusterScope makes both fleet-wide: each edge enforces its
// share of State.FleetSize edges.
type RateLimit struct {
	Key          uint8
	Header       string // lowercase, for LimitByHeader only
	Rate, Burst  uint32
	ClusterScope bool
}

// Policy is the authentication, authorization and rate limits of a scope.
type Policy struct {
	ID              string
	Methods         uint8 // AuthAPIKey | AuthJWT | AuthBasic
	Required        bool  // reject anonymous requests
	APIKeyHeader    string
	AllowGroups     []string
	DenyGroups      []string
	Issuers         []string // Issuer ids accepted; empty = all
	Audiences       []string
	RequiredClaims  []string
	RateLimits      []RateLimit
	ConsumerHeader  string
	KeepCredentials bool
}

// reservedHeaders may not carry the consumer id upstream: replacing a
// framing, connection or proxy-set field would let a consumer id rewrite
// how the upstream reads the request, and a credential field would be
// stripped and re-added with another meaning.
var reservedHeaders = []string{
	"host", "content-length", "transfer-encoding", "connection", "keep-alive",
	"proxy-connection", "te", "trailer", "upgrade", "expect", "authorization",
	"forwarded", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-request-id",
	// Dropped by the edge as request-line overrides (docs/http.md).
	"x-original-url", "x-rewrite-url", "x-http-method-override", "x-http-method", "x-method-override",
}

// DefaultAPIKeyHeader is where API keys are read when a policy names none.
const DefaultAPIKeyHeader = "x-api-key"

// ReservedHeader reports whether name may not be a policy's consumer
// header: a field the proxy sets or reads for framing, or the policy's
// credential field (apiKeyHeader, "" = DefaultAPIKeyHeader). Names are
// compared as the edge strips them: any case, '_' taken for '-' (CGI-style
// backends read both spellings as one field), so "Content_Length" is
// Content-Length.
func ReservedHeader(name, apiKeyHeader string) bool {
	if apiKeyHeader == "" {
		apiKeyHeader = DefaultAPIKeyHeader
	}
	return ProxyField(name) || fieldKey(name) == fieldKey(apiKeyHeader)
}

// ProxyField reports whether name is a field the proxy sets or reads for
// framing, connection handling or forwarding (reservedHeaders), compared
// as ReservedHeader compares.
func ProxyField(name string) bool { return slices.Contains(reservedHeaders, fieldKey(name)) }

// SameField reports whether a and b name one field as the edge strips
// them (ReservedHeader).
func SameField(a, b string) bool { return fieldKey(a) == fieldKey(b) }

// fieldKey is name lowercased with '_' as '-'.
func fieldKey(name string) string {
	return strings.ReplaceAll(strings.ToLower(name), "_", "-")
}

// empty reports whether a holds nothing; such a snapshot has no auth buffer.
func (a *Auth) empty() bool {
	return len(a.Consumers) == 0 && len(a.Issuers) == 0 && len(a.Policies) == 0
}

// policyRefs is a validated Auth ready to encode, with the positions that
// routes, clusters and the root use to refer to policies (index + 1).
type policyRefs struct {
	auth     Auth // sorted copy
	bytes    []byte
	byID     map[string]uint32
	global   uint32
	clusters []uint32 // per sorted cluster
	fleet    uint32
}

// prepareAuth validates s.Auth and the policy references of the root and of
// the sorted clusters, and encodes the auth buffer.
func prepareAuth(s *State, clusters []Cluster) (*policyRefs, error) {
	p := &policyRefs{auth: sortedAuth(&s.Auth), fleet: s.FleetSize}
	if err := checkAuth(&p.auth); err != nil {
		return nil, fmt.Errorf("%w: %s", ErrInvalidState, err)
	}
	p.byID = make(map[string]uint32, len(p.auth.Policies))
	for i := range p.auth.Policies {
		p.byID[p.auth.Policies[i].ID] = uint32(i) + 1
	}
	var err error
	if p.global, err = p.ref("field global_policy", s.GlobalPolicy); err != nil {
		return nil, err
	}
	p.clusters = make([]uint32, len(clusters))
	for i := range clusters {
		if p.clusters[i], err = p.ref(fmt.Sprintf("cluster %q: field policy", clusters[i].Name), clusters[i].Policy); err != nil {
			return nil, err
		}
	}
	if !p.auth.empty() {
		p.bytes = encodeAuth(&p.auth)
	}
	return p, nil
}

// ref resolves a policy id ("" = none) to its stored reference.
func (p *policyRefs) ref(where, id string) (uint32, error) {
	if id == "" {
		return 0, nil
	}
	n, ok := p.byID[id]
	if !ok {
		return 0, fmt.Errorf("%w: %s: policy %q does not exist", ErrInvalidState, where, id)
	}
	return n, nil
}

// routeRef resolves a route's policy reference. It runs for every route of
// every build, so the error's location is formatted only on failure.
func (p *policyRefs) routeRef(r *Route) (uint32, error) {
	if r.Policy == "" {
		return 0, nil
	}
	if n, ok := p.byID[r.Policy]; ok {
		return n, nil
	}
	return p.ref(fmt.Sprintf("route %q: field policy", r.ID), r.Policy)
}

// sortedAuth returns a copy of a with consumers, issuers and policies sorted
// by id and each consumer's key hashes ascending, the order they are stored in.
func sortedAuth(a *Auth) Auth {
	out := Auth{
		Consumers: slices.Clone(a.Consumers),
		Issuers:   slices.Clone(a.Issuers),
		Policies:  slices.Clone(a.Policies),
	}
	slices.SortFunc(out.Consumers, func(x, y Consumer) int { return strings.Compare(x.ID, y.ID) })
	slices.SortFunc(out.Issuers, func(x, y Issuer) int { return strings.Compare(x.ID, y.ID) })
	slices.SortFunc(out.Policies, func(x, y Policy) int { return strings.Compare(x.ID, y.ID) })
	for i := range out.Consumers {
		c := &out.Consumers[i]
		if !slices.IsSortedFunc(c.APIKeyHashes, compareHash) {
			c.APIKeyHashes = slices.Clone(c.APIKeyHashes)
			slices.SortFunc(c.APIKeyHashes, compareHash)
		}
	}
	return out
}

func compareHash(x, y [32]byte) int { return bytes.Compare(x[:], y[:]) }

// checkAuth returns why a sorted Auth cannot be enforced exactly, or nil.
// Build runs it on its input and Open on what it decoded, so a snapshot
// that reaches an edge holds to the same rules ctrl built it by. Key sets
// are parsed by the edge's auth table, which NACKs a snapshot it cannot use.
func checkAuth(a *Auth) error {
	issuers := make(map[string]bool, len(a.Issuers))
	iss := make(map[string]string, len(a.Issuers))
	for i := range a.Issuers {
		is := &a.Issuers[i]
		switch {
		case is.ID == "":
			return fmt.Errorf("issuer #%d: field id: must not be empty", i)
		case i > 0 && a.Issuers[i-1].ID == is.ID:
			return fmt.Errorf("issuer %q: field id: duplicate issuer id", is.ID)
		case is.Iss == "":
			return fmt.Errorf("issuer %q: field iss: must not be empty", is.ID)
		case len(is.KeySet) == 0:
			return fmt.Errorf("issuer %q: field key_set: must not be empty", is.ID)
		}
		if other, dup := iss[is.Iss]; dup {
			return fmt.Errorf("issuer %q: field iss: %q is also the iss of issuer %q", is.ID, is.Iss, other)
		}
		iss[is.Iss] = is.ID
		issuers[is.ID] = true
	}
	keys := make(map[[32]byte]string)
	users := make(map[string]string)
	links := make(map[JWTLink]string)
	for i := range a.Consumers {
		c := &a.Consumers[i]
		switch {
		case c.ID == "":
			return fmt.Errorf("consumer #%d: field id: must not be empty", i)
		case i > 0 && a.Consumers[i-1].ID == c.ID:
			return fmt.Errorf("consumer %q: field id: duplicate consumer id", c.ID)
		}
		for _, h := range c.APIKeyHashes {
			if other, dup := keys[h]; dup {
				return fmt.Errorf("consumer %q: field api_key_hashes: a key hash is also listed for consumer %q", c.ID, other)
			}
			keys[h] = c.ID
		}
		for j, b := range c.Basic {
			switch {
			case b.Username == "" || strings.IndexByte(b.Username, ':') >= 0:
				return fmt.Errorf("consumer %q: field basic[%d].username: must be non-empty without ':'", c.ID, j)
			case b.PasswordHash == "":
				return fmt.Errorf("consumer %q: field basic[%d].password_hash: must not be empty", c.ID, j)
			}
			if other, dup := users[b.Username]; dup {
				return fmt.Errorf("consumer %q: field basic[%d].username: %q is also a username of consumer %q", c.ID, j, b.Username, other)
			}
			users[b.Username] = c.ID
		}
		for j, l := range c.JWT {
			if !issuers[l.Issuer] {
				return fmt.Errorf("consumer %q: field jwt[%d].issuer: issuer %q does not exist", c.ID, j, l.Issuer)
			}
			if other, dup := links[l]; dup {
				return fmt.Errorf("consumer %q: field jwt[%d]: subject %q of issuer %q is also linked to consumer %q", c.ID, j, l.Subject, l.Issuer, other)
			}
			links[l] = c.ID
		}
	}
	for i := range a.Policies {
		p := &a.Policies[i]
		switch {
		case p.ID == "":
			return fmt.Errorf("policy #%d: field id: must not be empty", i)
		case i > 0 && a.Policies[i-1].ID == p.ID:
			return fmt.Errorf("policy %q: field id: duplicate policy id", p.ID)
		case p.Methods&^(AuthAPIKey|AuthJWT|AuthBasic) != 0:
			return fmt.Errorf("policy %q: field methods: unknown method bits %#x", p.ID, p.Methods)
		case p.APIKeyHeader != strings.ToLower(p.APIKeyHeader):
			return fmt.Errorf("policy %q: field api_key_header: %q must be lowercase", p.ID, p.APIKeyHeader)
		case p.Methods == 0 && (p.Required || p.APIKeyHeader != "" || len(p.AllowGroups)+len(p.DenyGroups)+len(p.Issuers)+len(p.Audiences)+len(p.RequiredClaims) > 0):
			// Enforcing these without authenticating anyone would have to
			// guess: refuse instead of serving the route open.
			return fmt.Errorf("policy %q: field methods: authentication settings (required, groups, issuers, audiences, claims, api_key_header) need at least one method", p.ID)
		case p.ConsumerHeader != "" && ReservedHeader(p.ConsumerHeader, p.APIKeyHeader):
			return fmt.Errorf("policy %q: field consumer_header: %q is a field the proxy or the credentials use", p.ID, p.ConsumerHeader)
		}
		for j, id := range p.Issuers {
			if !issuers[id] {
				return fmt.Errorf("policy %q: field issuers[%d]: issuer %q does not exist", p.ID, j, id)
			}
		}
		for j, l := range p.RateLimits {
			switch {
			case l.Key > LimitByHeader:
				return fmt.Errorf("policy %q: field rate_limits[%d].key: unknown key %d", p.ID, j, l.Key)
			case (l.Key == LimitByHeader) != (l.Header != ""):
				return fmt.Errorf("policy %q: field rate_limits[%d].header: required for header keys, and only for them", p.ID, j)
			case l.Header != strings.ToLower(l.Header):
				return fmt.Errorf("policy %q: field rate_limits[%d].header: %q must be lowercase", p.ID, j, l.Header)
			case l.Rate == 0 || l.Burst == 0:
				return fmt.Errorf("policy %q: field rate_limits[%d]: rate and burst must be at least 1", p.ID, j)
			}
		}
	}
	return nil
}

// encodeAuth encodes a sorted, checked Auth as a finished FlatBuffer.
func encodeAuth(a *Auth) []byte {
	b := flatbuffers.NewBuilder(1024)
	strs := func(ss []string) flatbuffers.UOffsetT {
		if len(ss) == 0 {
			return 0
		}
		offs := make([]flatbuffers.UOffsetT, len(ss))
		for i, s := range ss {
			offs[i] = b.CreateSharedString(s)
		}
		return tableVector(b, offs)
	}
	str := func(s string) flatbuffers.UOffsetT {
		if s == "" {
			return 0
		}
		return b.CreateString(s)
	}

	consumers := make([]flatbuffers.UOffsetT, len(a.Consumers))
	for i := range a.Consumers {
		c := &a.Consumers[i]
		var basic, jwt, hashes flatbuffers.UOffsetT
		if len(c.Basic) > 0 {
			offs := make([]flatbuffers.UOffsetT, len(c.Basic))
			for j, bc := range c.Basic {
				u, h := b.CreateString(bc.Username), b.CreateString(bc.PasswordHash)
				snapfb.BasicCredentialStart(b)
				snapfb.BasicCredentialAddUsername(b, u)
				snapfb.BasicCredentialAddPasswordHash(b, h)
				offs[j] = snapfb.BasicCredentialEnd(b)
			}
			basic = tableVector(b, offs)
		}
		if len(c.JWT) > 0 {
			offs := make([]flatbuffers.UOffsetT, len(c.JWT))
			for j, l := range c.JWT {
				is, sub := b.CreateSharedString(l.Issuer), str(l.Subject)
				snapfb.JwtLinkStart(b)
				snapfb.JwtLinkAddIssuer(b, is)
				if sub != 0 {
					snapfb.JwtLinkAddSubject(b, sub)
				}
				offs[j] = snapfb.JwtLinkEnd(b)
			}
			jwt = tableVector(b, offs)
		}
		if len(c.APIKeyHashes) > 0 {
			flat := make([]byte, 0, 32*len(c.APIKeyHashes))
			for _, h := range c.APIKeyHashes {
				flat = append(flat, h[:]...)
			}
			hashes = b.CreateByteVector(flat)
		}
		groups, id := strs(c.Groups), b.CreateString(c.ID)
		snapfb.ConsumerStart(b)
		snapfb.ConsumerAddId(b, id)
		if groups != 0 {
			snapfb.ConsumerAddGroups(b, groups)
		}
		if hashes != 0 {
			snapfb.ConsumerAddApiKeyHashes(b, hashes)
		}
		if basic != 0 {
			snapfb.ConsumerAddBasic(b, basic)
		}
		if jwt != 0 {
			snapfb.ConsumerAddJwt(b, jwt)
		}
		consumers[i] = snapfb.ConsumerEnd(b)
	}

	issuers := make([]flatbuffers.UOffsetT, len(a.Issuers))
	for i := range a.Issuers {
		is := &a.Issuers[i]
		id, iss := b.CreateString(is.ID), b.CreateString(is.Iss)
		aud, algs, req := strs(is.Audiences), strs(is.Algorithms), strs(is.RequiredClaims)
		keys := b.CreateByteVector(is.KeySet)
		snapfb.IssuerStart(b)
		snapfb.IssuerAddId(b, id)
		snapfb.IssuerAddIss(b, iss)
		if aud != 0 {
			snapfb.IssuerAddAudiences(b, aud)
		}
		if algs != 0 {
			snapfb.IssuerAddAlgorithms(b, algs)
		}
		snapfb.IssuerAddKeySet(b, keys)
		snapfb.IssuerAddClockSkewMs(b, is.ClockSkewMs)
		if req != 0 {
			snapfb.IssuerAddRequiredClaims(b, req)
		}
		issuers[i] = snapfb.IssuerEnd(b)
	}

	policies := make([]flatbuffers.UOffsetT, len(a.Policies))
	for i := range a.Policies {
		p := &a.Policies[i]
		var limits flatbuffers.UOffsetT
		if len(p.RateLimits) > 0 {
			offs := make([]flatbuffers.UOffsetT, len(p.RateLimits))
			for j, l := range p.RateLimits {
				h := str(l.Header)
				snapfb.RateLimitStart(b)
				snapfb.RateLimitAddKey(b, l.Key)
				if h != 0 {
					snapfb.RateLimitAddHeader(b, h)
				}
				snapfb.RateLimitAddRate(b, l.Rate)
				snapfb.RateLimitAddBurst(b, l.Burst)
				snapfb.RateLimitAddClusterScope(b, l.ClusterScope)
				offs[j] = snapfb.RateLimitEnd(b)
			}
			limits = tableVector(b, offs)
		}
		id, keyHdr, consHdr := b.CreateString(p.ID), str(p.APIKeyHeader), str(p.ConsumerHeader)
		allow, deny, iss := strs(p.AllowGroups), strs(p.DenyGroups), strs(p.Issuers)
		aud, req := strs(p.Audiences), strs(p.RequiredClaims)
		snapfb.PolicyStart(b)
		snapfb.PolicyAddId(b, id)
		snapfb.PolicyAddMethods(b, p.Methods)
		snapfb.PolicyAddRequired(b, p.Required)
		for _, f := range []struct {
			off flatbuffers.UOffsetT
			add func(*flatbuffers.Builder, flatbuffers.UOffsetT)
		}{
			{keyHdr, snapfb.PolicyAddApiKeyHeader},
			{allow, snapfb.PolicyAddAllowGroups},
			{deny, snapfb.PolicyAddDenyGroups},
			{iss, snapfb.PolicyAddIssuers},
			{aud, snapfb.PolicyAddAudiences},
			{req, snapfb.PolicyAddRequiredClaims},
			{limits, snapfb.PolicyAddRateLimits},
			{consHdr, snapfb.PolicyAddConsumerHeader},
		} {
			if f.off != 0 {
				f.add(b, f.off)
			}
		}
		snapfb.PolicyAddKeepCredentials(b, p.KeepCredentials)
		policies[i] = snapfb.PolicyEnd(b)
	}

	cv, iv, pv := tableVector(b, consumers), tableVector(b, issuers), tableVector(b, policies)
	snapfb.AuthStart(b)
	snapfb.AuthAddConsumers(b, cv)
	snapfb.AuthAddIssuers(b, iv)
	snapfb.AuthAddPolicies(b, pv)
	b.Finish(snapfb.AuthEnd(b))
	return bytes.Clone(b.FinishedBytes())
}

// tableVector writes a vector of offsets (tables or strings) in order.
func tableVector(b *flatbuffers.Builder, offs []flatbuffers.UOffsetT) flatbuffers.UOffsetT {
	b.StartVector(flatbuffers.SizeUOffsetT, len(offs), flatbuffers.SizeUOffsetT)
	for j := len(offs) - 1; j >= 0; j-- {
		b.PrependUOffsetT(offs[j])
	}
	return b.EndVector(len(offs))
}

// decodeAuth reads an auth buffer into an Auth, copying every value, and
// checks it as Build does. Open recovers accessor panics around it.
func decodeAuth(data []byte) (*Auth, error) {
	if len(data) < 2*flatbuffers.SizeUOffsetT {
		return nil, fmt.Errorf("auth: %d bytes", len(data))
	}
	var root snapfb.Auth
	root.Init(data, flatbuffers.GetUOffsetT(data))
	limit := func(what string, n, size int) error {
		if n < 0 || n*size > len(data) {
			return fmt.Errorf("auth: %d %s exceed the buffer", n, what)
		}
		return nil
	}
	strs := func(n int, at func(int) []byte) []string {
		if n == 0 {
			return nil
		}
		out := make([]string, n)
		for j := range out {
			out[j] = string(at(j))
		}
		return out
	}
	a := &Auth{}
	nc, ni, np := root.ConsumersLength(), root.IssuersLength(), root.PoliciesLength()
	for _, l := range []struct {
		what string
		n    int
	}{{"consumers", nc}, {"issuers", ni}, {"policies", np}} {
		if err := limit(l.what, l.n, flatbuffers.SizeUOffsetT); err != nil {
			return nil, err
		}
	}

	var c snapfb.Consumer
	var bc snapfb.BasicCredential
	var jl snapfb.JwtLink
	a.Consumers = make([]Consumer, nc)
	for i := range nc {
		if !root.Consumers(&c, i) {
			return nil, fmt.Errorf("auth: consumer %d: missing", i)
		}
		out := &a.Consumers[i]
		out.ID = string(c.Id())
		if err := limit("groups", c.GroupsLength(), flatbuffers.SizeUOffsetT); err != nil {
			return nil, err
		}
		out.Groups = strs(c.GroupsLength(), c.Groups)
		hashes := c.ApiKeyHashesBytes()
		if len(hashes)%32 != 0 {
			return nil, fmt.Errorf("auth: consumer %q: api_key_hashes has %d bytes, not a multiple of 32", out.ID, len(hashes))
		}
		for j := 0; j < len(hashes); j += 32 {
			out.APIKeyHashes = append(out.APIKeyHashes, [32]byte(hashes[j:j+32]))
		}
		if !slices.IsSortedFunc(out.APIKeyHashes, compareHash) {
			return nil, fmt.Errorf("auth: consumer %q: api_key_hashes out of order", out.ID)
		}
		if err := limit("basic credentials", c.BasicLength(), flatbuffers.SizeUOffsetT); err != nil {
			return nil, err
		}
		for j := range c.BasicLength() {
			c.Basic(&bc, j)
			out.Basic = append(out.Basic, BasicCredential{Username: string(bc.Username()), PasswordHash: string(bc.PasswordHash())})
		}
		if err := limit("jwt links", c.JwtLength(), flatbuffers.SizeUOffsetT); err != nil {
			return nil, err
		}
		for j := range c.JwtLength() {
			c.Jwt(&jl, j)
			out.JWT = append(out.JWT, JWTLink{Issuer: string(jl.Issuer()), Subject: string(jl.Subject())})
		}
	}

	var is snapfb.Issuer
	a.Issuers = make([]Issuer, ni)
	for i := range ni {
		if !root.Issuers(&is, i) {
			return nil, fmt.Errorf("auth: issuer %d: missing", i)
		}
		for _, n := range []int{is.AudiencesLength(), is.AlgorithmsLength(), is.RequiredClaimsLength()} {
			if err := limit("strings", n, flatbuffers.SizeUOffsetT); err != nil {
				return nil, err
			}
		}
		a.Issuers[i] = Issuer{
			ID:             string(is.Id()),
			Iss:            string(is.Iss()),
			Audiences:      strs(is.AudiencesLength(), is.Audiences),
			Algorithms:     strs(is.AlgorithmsLength(), is.Algorithms),
			KeySet:         bytes.Clone(is.KeySetBytes()),
			ClockSkewMs:    is.ClockSkewMs(),
			RequiredClaims: strs(is.RequiredClaimsLength(), is.RequiredClaims),
		}
	}

	var p snapfb.Policy
	var rl snapfb.RateLimit
	a.Policies = make([]Policy, np)
	for i := range np {
		if !root.Policies(&p, i) {
			return nil, fmt.Errorf("auth: policy %d: missing", i)
		}
		for _, n := range []int{p.AllowGroupsLength(), p.DenyGroupsLength(), p.IssuersLength(), p.AudiencesLength(), p.RequiredClaimsLength(), p.RateLimitsLength()} {
			if err := limit("list entries", n, flatbuffers.SizeUOffsetT); err != nil {
				return nil, err
			}
		}
		out := &a.Policies[i]
		*out = Policy{
			ID:              string(p.Id()),
			Methods:         p.Methods(),
			Required:        p.Required(),
			APIKeyHeader:    string(p.ApiKeyHeader()),
			AllowGroups:     strs(p.AllowGroupsLength(), p.AllowGroups),
			DenyGroups:      strs(p.DenyGroupsLength(), p.DenyGroups),
			Issuers:         strs(p.IssuersLength(), p.Issuers),
			Audiences:       strs(p.AudiencesLength(), p.Audiences),
			RequiredClaims:  strs(p.RequiredClaimsLength(), p.RequiredClaims),
			ConsumerHeader:  string(p.ConsumerHeader()),
			KeepCredentials: p.KeepCredentials(),
		}
		for j := range p.RateLimitsLength() {
			p.RateLimits(&rl, j)
			out.RateLimits = append(out.RateLimits, RateLimit{Key: rl.Key(), Header: string(rl.Header()), Rate: rl.Rate(), Burst: rl.Burst(), ClusterScope: rl.ClusterScope()})
		}
	}
	for _, l := range []struct {
		what   string
		sorted bool
	}{
		{"consumers", slices.IsSortedFunc(a.Consumers, func(x, y Consumer) int { return cmp.Compare(x.ID, y.ID) })},
		{"issuers", slices.IsSortedFunc(a.Issuers, func(x, y Issuer) int { return cmp.Compare(x.ID, y.ID) })},
		{"policies", slices.IsSortedFunc(a.Policies, func(x, y Policy) int { return cmp.Compare(x.ID, y.ID) })},
	} {
		if !l.sorted {
			return nil, fmt.Errorf("auth: %s are not sorted by id", l.what)
		}
	}
	if err := checkAuth(a); err != nil {
		return nil, fmt.Errorf("auth: %v", err)
	}
	return a, nil
}

// hashAuth continues the content hash after the clusters with everything
// about policies. Snapshots without any skip it, so their content hash is
// what it was before policies existed.
func hashAuth(h *xxhash.Digest, scratch []byte, authBytes []byte, clusterPolicies func(i int) uint32, nClusters int, global, fleet uint32) {
	any := len(authBytes) > 0 || global != 0 || fleet != 0
	for i := 0; i < nClusters && !any; i++ {
		any = clusterPolicies(i) != 0
	}
	if !any {
		return
	}
	hashBytes(h, scratch, authBytes)
	hashU32(h, scratch, global)
	hashU32(h, scratch, fleet)
	for i := range nClusters {
		hashU32(h, scratch, clusterPolicies(i))
	}
}
