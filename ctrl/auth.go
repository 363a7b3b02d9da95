package ctrl

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/snapgate/snapgate/ctrl/admin"
	"github.com/snapgate/snapgate/ctrl/model"
	"github.com/snapgate/snapgate/fbs"
)

// Store kinds of the auth documents.
const (
	kindConsumer  = model.KindConsumer
	kindJWTIssuer = model.KindJWTIssuer
	kindPolicy    = model.KindPolicy
)

// Policy scopes as model.Policy.ScopeKey spells them.
const (
	scopeGlobal  = "global"
	scopeRoute   = "route:"
	scopeCluster = "cluster:"
)

var (
	consumers = kind[model.Consumer]{
		name:     kindConsumer,
		id:       func(c *model.Consumer) string { return c.ID },
		decode:   model.DecodeConsumer,
		validate: (*model.Consumer).Validate,
		table:    func(m *state) map[string]versioned[model.Consumer] { return m.consumers },
		keep:     keepPasswordHashes,
		check:    checkConsumer,
		index: func(m *state, c *model.Consumer) {
			for _, k := range c.Credentials.APIKeys {
				m.keys[k.Hash] = c.ID
			}
			for _, b := range c.Credentials.Basic {
				m.users[b.Username] = c.ID
			}
			for _, j := range c.Credentials.JWT {
				m.subjects[j] = c.ID
			}
			m.derived.consumers[c.ID] = fbsConsumer(c)
		},
		unindex: func(m *state, c *model.Consumer) {
			for _, k := range c.Credentials.APIKeys {
				delete(m.keys, k.Hash)
			}
			for _, b := range c.Credentials.Basic {
				delete(m.users, b.Username)
			}
			for _, j := range c.Credentials.JWT {
				delete(m.subjects, j)
			}
			delete(m.derived.consumers, c.ID)
		},
		view: func(c model.Consumer, r *admin.Result) {
			c.Credentials.Basic = slices.Clone(c.Credentials.Basic)
			for i := range c.Credentials.Basic {
				c.Credentials.Basic[i].PasswordHash = ""
			}
			r.Consumer = &c
		},
	}
	issuers = kind[model.JWTIssuer]{
		name:     kindJWTIssuer,
		id:       func(j *model.JWTIssuer) string { return j.ID },
		decode:   model.DecodeJWTIssuer,
		validate: (*model.JWTIssuer).Validate,
		table:    func(m *state) map[string]versioned[model.JWTIssuer] { return m.issuers },
		keep:     keepHMACKeys,
		check: func(m *state, j *model.JWTIssuer) error {
			if other, ok := m.iss[j.Issuer]; ok && other != j.ID {
				return admin.Errorf(admin.CodeConflict, "issuer", "%q is already the issuer of jwt_issuer %q; tokens could not tell the two apart", j.Issuer, other)
			}
			return nil
		},
		index: func(m *state, j *model.JWTIssuer) {
			m.iss[j.Issuer] = j.ID
			m.derived.issuers[j.ID] = fbsIssuer(j)
		},
		unindex: func(m *state, j *model.JWTIssuer) {
			delete(m.iss, j.Issuer)
			delete(m.derived.issuers, j.ID)
		},
		inUse: func(m *state, id string) error {
			cs := matching(m.consumers, func(c *model.Consumer) bool {
				return slices.ContainsFunc(c.Credentials.JWT, func(l model.JWTIdentity) bool { return l.Issuer == id })
			})
			ps := matching(m.policies, func(p *model.Policy) bool { return p.Claims != nil && slices.Contains(p.Claims.Iss, id) })
			return usedBy(kindJWTIssuer, id, referrers{"consumer", "consumers", cs}, referrers{"policy", "policies", ps})
		},
		view: func(j model.JWTIssuer, r *admin.Result) {
			j.Keys.Keys = slices.Clone(j.Keys.Keys)
			for i := range j.Keys.Keys {
				j.Keys.Keys[i].K = "" // an HMAC key is a shared secret
			}
			r.JWTIssuer = &j
		},
	}
	policies = kind[model.Policy]{
		name:     kindPolicy,
		id:       func(p *model.Policy) string { return p.ID },
		decode:   model.DecodePolicy,
		validate: (*model.Policy).Validate,
		table:    func(m *state) map[string]versioned[model.Policy] { return m.policies },
		check:    checkPolicy,
		index:    (*state).indexPolicy,
		unindex:  (*state).unindexPolicy,
		fleet:    (*Server).fleetWithPolicy,
		view:     func(p model.Policy, r *admin.Result) { r.Policy = &p },
	}
)

// keepPasswordHashes fills basic credentials put without a password hash
// from the stored credential of the same username: replies leave hashes
// out, so a consumer edited from `get` output keeps its passwords.
func keepPasswordHashes(c, stored *model.Consumer) {
	for i, b := range c.Credentials.Basic {
		if b.PasswordHash != "" {
			continue
		}
		for _, s := range stored.Credentials.Basic {
			if s.Username == b.Username {
				c.Credentials.Basic[i].PasswordHash = s.PasswordHash
			}
		}
	}
}

// keepHMACKeys does the same for symmetric keys, matched by kid.
func keepHMACKeys(j, stored *model.JWTIssuer) {
	for i, k := range j.Keys.Keys {
		if k.Kty != "oct" || k.K != "" {
			continue
		}
		for _, s := range stored.Keys.Keys {
			if s.Kty == "oct" && s.Kid == k.Kid {
				j.Keys.Keys[i].K = s.K
			}
		}
	}
}

// checkConsumer: linked issuers exist, and no API key, username or JWT
// subject belongs to another consumer (the edge could not tell whose it is).
func checkConsumer(m *state, c *model.Consumer) error {
	if err := model.CheckConsumerRefs(c, func(id string) bool { _, ok := m.issuers[id]; return ok }); err != nil {
		return invalid(err)
	}
	for i, k := range c.Credentials.APIKeys {
		if other, ok := m.keys[k.Hash]; ok && other != c.ID {
			return admin.Errorf(admin.CodeConflict, fmt.Sprintf("credentials.api_keys[%d].hash", i), "the same key belongs to consumer %q", other)
		}
	}
	for i, b := range c.Credentials.Basic {
		if other, ok := m.users[b.Username]; ok && other != c.ID {
			return admin.Errorf(admin.CodeConflict, fmt.Sprintf("credentials.basic[%d].username", i), "username %q belongs to consumer %q", b.Username, other)
		}
	}
	for i, j := range c.Credentials.JWT {
		if other, ok := m.subjects[j]; ok && other != c.ID {
			what := fmt.Sprintf("subject %q", j.Subject)
			if j.Subject == "" {
				what = "every subject"
			}
			return admin.Errorf(admin.CodeConflict, fmt.Sprintf("credentials.jwt[%d]", i), "%s of issuer %q is linked to consumer %q", what, j.Issuer, other)
		}
	}
	return nil
}

// checkPolicy: the scope and the issuers exist, and no other policy has
// the scope.
func checkPolicy(m *state, p *model.Policy) error {
	err := model.CheckPolicyRefs(p,
		func(id string) bool { _, ok := m.routes[id]; return ok },
		func(id string) bool { _, ok := m.clusters[id]; return ok },
		func(id string) bool { _, ok := m.issuers[id]; return ok })
	if err != nil {
		return invalid(err)
	}
	if other, ok := m.byScope[p.ScopeKey()]; ok && other != p.ID {
		return admin.Errorf(admin.CodeConflict, "scope", "policy %q already applies to %s; a scope has at most one policy", other, scopeText(p))
	}
	// The edge strips every policy's consumer header from every request
	// it forwards (after authenticating it), so one policy's consumer
	// header may not be where another reads API keys that it forwards
	// (keep_credentials): the key would never reach that policy's backend.
	for _, o := range m.policies {
		if o.doc.ID == p.ID {
			continue
		}
		if h, ok := o.doc.KeptKeyHeader(); ok && fbs.SameField(p.ConsumerHeader(), h) {
			return admin.Errorf(admin.CodeConflict, "forward.consumer_header", "%q is where policy %q reads the API keys it forwards (keep_credentials), and the edge strips every policy's consumer header from every request it forwards; choose another name", p.ConsumerHeader(), o.doc.ID)
		}
		if h, ok := p.KeptKeyHeader(); ok && fbs.SameField(o.doc.ConsumerHeader(), h) {
			return admin.Errorf(admin.CodeConflict, "auth.api_key_header", "%q is where policy %q sends the consumer id upstream, and the edge strips it from every request it forwards, so keep_credentials could not forward the key; choose another name", h, o.doc.ID)
		}
	}
	return nil
}

func scopeText(p *model.Policy) string {
	switch {
	case p.Scope.Route != "":
		return strconv.Quote(p.Scope.Route) + " (route)"
	case p.Scope.Cluster != "":
		return strconv.Quote(p.Scope.Cluster) + " (cluster)"
	}
	return "every request (global)"
}

// policiesScopedTo lists the policy of a route or cluster (scope is
// scopeRoute or scopeCluster) for a refused delete.
func (m *state) policiesScopedTo(scope, id string) referrers {
	r := referrers{noun: "policy", plural: "policies"}
	if p, ok := m.byScope[scope+id]; ok {
		r.ids = []string{p}
	}
	return r
}

// clusterLimits reports whether some policy has a cluster-scope rate
// limit, the only reason the fleet's size matters.
func (m *state) clusterLimits() bool {
	for _, p := range m.policies {
		if hasClusterLimit(&p.doc) {
			return true
		}
	}
	return false
}

func hasClusterLimit(p *model.Policy) bool {
	return slices.ContainsFunc(p.RateLimits, func(l model.RateLimit) bool { return l.Scope == model.LimitScopeCluster })
}

// fleetSize is State.FleetSize: the recorded edge count (at least 1) while
// some policy has a cluster-scope limit, else 0, so that edges coming and
// going change nothing in snapshots that do not depend on them.
func (m *state) fleetSize() uint32 {
	if !m.clusterLimits() {
		return 0
	}
	return max(m.fleet.doc, 1)
}

func fbsConsumer(c *model.Consumer) fbs.Consumer {
	out := fbs.Consumer{ID: c.ID, Groups: c.Groups}
	for _, k := range c.Credentials.APIKeys {
		// Validated when written; a hash that does not parse could match
		// no key anyway, so leaving it out enforces the same thing.
		if h, err := model.ParseAPIKeyHash(k.Hash); err == nil {
			out.APIKeyHashes = append(out.APIKeyHashes, h)
		}
	}
	for _, b := range c.Credentials.Basic {
		out.Basic = append(out.Basic, fbs.BasicCredential{Username: b.Username, PasswordHash: b.PasswordHash})
	}
	for _, j := range c.Credentials.JWT {
		out.JWT = append(out.JWT, fbs.JWTLink{Issuer: j.Issuer, Subject: j.Subject})
	}
	return out
}

func fbsIssuer(j *model.JWTIssuer) fbs.Issuer {
	return fbs.Issuer{
		ID: j.ID, Iss: j.Issuer, Audiences: j.Audiences, Algorithms: j.Algorithms,
		KeySet: j.Keys.KeySetJSON(), ClockSkewMs: j.ClockSkewMs, RequiredClaims: j.RequiredClaims,
	}
}

// methodBits maps auth methods to the snapshot's bits.
var methodBits = map[string]uint8{model.AuthAPIKey: fbs.AuthAPIKey, model.AuthJWT: fbs.AuthJWT, model.AuthBasic: fbs.AuthBasic}

// limitKeys maps rate-limit keys other than "header:<name>".
var limitKeys = map[string]uint8{model.LimitKeyConsumer: fbs.LimitByConsumer, model.LimitKeyRoute: fbs.LimitByRoute, model.LimitKeyIP: fbs.LimitByIP}

func fbsPolicy(p *model.Policy) fbs.Policy {
	out := fbs.Policy{ID: p.ID, ConsumerHeader: p.ConsumerHeader()}
	if a := p.Auth; a != nil {
		for _, m := range a.Methods {
			out.Methods |= methodBits[m]
		}
		out.Required, out.APIKeyHeader = a.Required, a.APIKeyHeader
	}
	if acl := p.ACL; acl != nil {
		out.AllowGroups, out.DenyGroups = acl.AllowGroups, acl.DenyGroups
	}
	if c := p.Claims; c != nil {
		out.Issuers, out.Audiences, out.RequiredClaims = c.Iss, c.Aud, c.Required
	}
	for _, l := range p.RateLimits {
		rl := fbs.RateLimit{Rate: l.Rate, Burst: l.Burst, ClusterScope: l.Scope == model.LimitScopeCluster}
		if h, ok := strings.CutPrefix(l.Key, model.LimitHeaderPrefix); ok {
			rl.Key, rl.Header = fbs.LimitByHeader, h
		} else {
			rl.Key = limitKeys[l.Key]
		}
		out.RateLimits = append(out.RateLimits, rl)
	}
	if p.Forward != nil {
		out.KeepCredentials = p.Forward.KeepCredentials
	}
	return out
}

// freeKeyID is the first "key-<n>" the consumer does not use.
func freeKeyID(keys []model.APIKeyCredential) string {
	for n := 1; ; n++ {
		id := "key-" + strconv.Itoa(n)
		if !slices.ContainsFunc(keys, func(k model.APIKeyCredential) bool { return k.ID == id }) {
			return id
		}
	}
}

// addKey generates an API key for consumer id and stores its hash; the
// key itself is in the result, and nowhere else.
func (s *Server) addKey(id, keyID string, expected *uint64) (admin.Result, error) {
	var key string
	res, err := updateDoc(s, &consumers, id, expected, func(c model.Consumer) (model.Consumer, error) {
		keys := c.Credentials.APIKeys
		switch {
		case keyID == "":
			keyID = freeKeyID(keys)
		case slices.ContainsFunc(keys, func(k model.APIKeyCredential) bool { return k.ID == keyID }):
			return c, admin.Errorf(admin.CodeConflict, "key_id", "consumer %q already has an API key %q; remove it first or choose another id", id, keyID)
		}
		k, hash, err := model.GenerateAPIKey()
		if err != nil {
			return c, err
		}
		key = k
		c.Credentials.APIKeys = append(slices.Clone(keys), model.APIKeyCredential{ID: keyID, Hash: hash})
		return c, nil
	})
	if err != nil {
		return admin.Result{}, err
	}
	res.APIKey = key
	return res, nil
}

func (s *Server) removeKey(id, keyID string, expected *uint64) (admin.Result, error) {
	return updateDoc(s, &consumers, id, expected, func(c model.Consumer) (model.Consumer, error) {
		keys := c.Credentials.APIKeys
		i := slices.IndexFunc(keys, func(k model.APIKeyCredential) bool { return k.ID == keyID })
		if i < 0 {
			return c, admin.Errorf(admin.CodeNotFound, "key_id", "consumer %q has no API key %q", id, keyID)
		}
		c.Credentials.APIKeys = slices.Delete(slices.Clone(keys), i, i+1)
		return c, nil
	})
}

func (s *Server) setPassword(id, username, hash string, expected *uint64) (admin.Result, error) {
	return updateDoc(s, &consumers, id, expected, func(c model.Consumer) (model.Consumer, error) {
		basic := slices.Clone(c.Credentials.Basic)
		if i := slices.IndexFunc(basic, func(b model.BasicCredential) bool { return b.Username == username }); i >= 0 {
			basic[i].PasswordHash = hash
		} else {
			basic = append(basic, model.BasicCredential{Username: username, PasswordHash: hash})
		}
		c.Credentials.Basic = basic
		return c, nil
	})
}
