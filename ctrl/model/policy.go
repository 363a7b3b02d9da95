package model

import (
	"fmt"
	"slices"
	"strings"

	"github.com/snapgate/snapgate/fbs"
)

// Auth methods (PolicyAuth.Methods).
const (
	AuthAPIKey = "api_key"
	AuthJWT    = "jwt"
	AuthBasic  = "basic"
)

// Rate-limit keys and scopes.
const (
	LimitKeyConsumer  = "consumer"
	LimitKeyRoute     = "route"
	LimitKeyIP        = "ip"
	LimitHeaderPrefix = "header:"
	LimitScopeEdge    = "edge"
	LimitScopeCluster = "cluster"
	MaxRateLimits     = 8
	MaxRate           = 1_000_000 // per second; the edge's bucket resolution is 1 µs
	MaxBurst          = 1 << 20
	// DefaultConsumerHeader carries the consumer id upstream.
	DefaultConsumerHeader = "X-Consumer-Id"
)

// Policy attaches authentication, authorization and rate limits to a scope.
type Policy struct {
	ID         string       `json:"id"`
	Scope      PolicyScope  `json:"scope"`
	Auth       *PolicyAuth  `json:"auth,omitempty"`
	ACL        *ACL         `json:"acl,omitempty"`
	Claims     *ClaimChecks `json:"claims,omitempty"`
	RateLimits []RateLimit  `json:"rate_limits,omitempty"`
	Forward    *Forward     `json:"forward,omitempty"`
}

// PolicyScope: exactly one of Global, Cluster (a cluster id), Route (a route id).
type PolicyScope struct {
	Global  bool   `json:"global,omitempty"`
	Cluster string `json:"cluster,omitempty"`
	Route   string `json:"route,omitempty"`
}

// PolicyAuth says which methods are accepted; Required rejects anonymous
// requests. APIKeyHeader (lowercase, default "x-api-key") carries API keys.
type PolicyAuth struct {
	Methods      []string `json:"methods"`
	Required     bool     `json:"required,omitempty"`
	APIKeyHeader string   `json:"api_key_header,omitempty"`
}

type ACL struct {
	AllowGroups []string `json:"allow_groups,omitempty"`
	DenyGroups  []string `json:"deny_groups,omitempty"`
}

// ClaimChecks narrow JWTs beyond their issuer's own rules: Iss lists the
// jwt_issuer ids accepted (empty = all), Aud audiences of which one must be
// present, Required claims that must be present.
type ClaimChecks struct {
	Iss      []string `json:"iss,omitempty"`
	Aud      []string `json:"aud,omitempty"`
	Required []string `json:"required,omitempty"`
}

// RateLimit is a token bucket: Rate requests per second, Burst at once,
// per Key value. Scope "cluster" makes Rate/Burst fleet-wide numbers that
// ctrl divides among connected edges.
type RateLimit struct {
	Key   string `json:"key"`
	Rate  uint32 `json:"rate"`
	Burst uint32 `json:"burst"`
	Scope string `json:"scope,omitempty"` // "" = edge
}

type Forward struct {
	ConsumerHeader  string `json:"consumer_header,omitempty"`
	KeepCredentials bool   `json:"keep_credentials,omitempty"`
}

// ScopeKey is the policy's scope as a string ("global", "cluster:<id>",
// "route:<id>"): at most one policy per scope.
func (p *Policy) ScopeKey() string {
	switch {
	case p.Scope.Cluster != "":
		return "cluster:" + p.Scope.Cluster
	case p.Scope.Route != "":
		return "route:" + p.Scope.Route
	}
	return "global"
}

func (p *Policy) Validate() error {
	var c collector
	checkID(&c, "id", p.ID)
	n := 0
	if p.Scope.Global {
		n++
	}
	if p.Scope.Cluster != "" {
		n++
		checkID(&c, "scope.cluster", p.Scope.Cluster)
	}
	if p.Scope.Route != "" {
		n++
		checkID(&c, "scope.route", p.Scope.Route)
	}
	if n != 1 {
		c.add("scope", `set exactly one of "global": true, "cluster": <id>, "route": <id>`)
	}
	if a := p.Auth; a != nil {
		if len(a.Methods) == 0 {
			c.add("auth.methods", `required: one or more of "api_key", "jwt", "basic"`)
		}
		seen := map[string]bool{}
		for i, m := range a.Methods {
			f := fmt.Sprintf("auth.methods[%d]", i)
			switch {
			case m != AuthAPIKey && m != AuthJWT && m != AuthBasic:
				c.add(f, fmt.Sprintf(`%q is not a method: want "api_key", "jwt" or "basic"`, m))
			case seen[m]:
				c.add(f, "listed twice")
			}
			seen[m] = true
		}
		if h := a.APIKeyHeader; h != "" {
			switch {
			case !isToken(h) || strings.ToLower(h) != h:
				c.add("auth.api_key_header", "a lowercase header name")
			case fbs.ProxyField(h):
				// The edge strips the credential field before forwarding:
				// a framing or proxy field would go with it.
				c.add("auth.api_key_header", fmt.Sprintf("%q is a field the proxy sets or reads; choose another name", h))
			}
		}
	}
	if p.ACL != nil {
		checkGroups(&c, "acl.allow_groups", p.ACL.AllowGroups)
		checkGroups(&c, "acl.deny_groups", p.ACL.DenyGroups)
		for i, g := range p.ACL.DenyGroups {
			if contains(p.ACL.AllowGroups, g) {
				c.add(fmt.Sprintf("acl.deny_groups[%d]", i), fmt.Sprintf("%q is also in allow_groups", g))
			}
		}
		if p.Auth == nil {
			c.add("acl", "an ACL needs auth: without authentication there are no groups")
		}
	}
	if cl := p.Claims; cl != nil {
		if p.Auth == nil || !contains(p.Auth.Methods, AuthJWT) {
			c.add("claims", `claim checks need "jwt" in auth.methods`)
		}
		for i, id := range cl.Iss {
			checkID(&c, fmt.Sprintf("claims.iss[%d]", i), id)
		}
		checkClaimNames(&c, "claims.required", cl.Required)
	}
	if len(p.RateLimits) > MaxRateLimits {
		c.add("rate_limits", fmt.Sprintf("at most %d", MaxRateLimits))
	}
	for i, rl := range p.RateLimits {
		f := fmt.Sprintf("rate_limits[%d]", i)
		switch {
		case rl.Key == LimitKeyConsumer:
			if p.Auth == nil {
				c.add(f+".key", `"consumer" needs auth in the same policy`)
			}
		case rl.Key == LimitKeyRoute || rl.Key == LimitKeyIP:
		case strings.HasPrefix(rl.Key, LimitHeaderPrefix):
			h := rl.Key[len(LimitHeaderPrefix):]
			if !isToken(h) || strings.ToLower(h) != h {
				c.add(f+".key", `"header:<name>" needs a lowercase header name`)
			}
		default:
			c.add(f+".key", `want "consumer", "route", "ip" or "header:<name>"`)
		}
		if rl.Rate == 0 || rl.Rate > MaxRate {
			c.add(f+".rate", fmt.Sprintf("requests per second, 1 to %d", MaxRate))
		}
		if rl.Burst == 0 || rl.Burst > MaxBurst {
			c.add(f+".burst", fmt.Sprintf("1 to %d", MaxBurst))
		}
		if rl.Scope != "" && rl.Scope != LimitScopeEdge && rl.Scope != LimitScopeCluster {
			c.add(f+".scope", `want "edge" or "cluster"`)
		}
	}
	apiKeyHeader := ""
	if p.Auth != nil {
		apiKeyHeader = p.Auth.APIKeyHeader
	}
	if fw := p.Forward; fw != nil && fw.ConsumerHeader != "" {
		switch {
		case !isToken(fw.ConsumerHeader):
			c.add("forward.consumer_header", "not a valid header name")
		case fbs.ReservedHeader(fw.ConsumerHeader, apiKeyHeader):
			c.add("forward.consumer_header", fmt.Sprintf("%q is a field the proxy sets or reads, or the credential field; choose another name", fw.ConsumerHeader))
		}
	} else if fbs.ReservedHeader(DefaultConsumerHeader, apiKeyHeader) {
		// The default consumer header is checked too: it is sent whether
		// or not forward names one.
		c.add("auth.api_key_header", fmt.Sprintf("%q is also where the consumer id goes upstream (forward.consumer_header, default %s); choose another name, or set forward.consumer_header", apiKeyHeader, DefaultConsumerHeader))
	}
	if h, ok := p.KeptKeyHeader(); ok && p.Forward.ConsumerHeader != "" && fbs.SameField(h, DefaultConsumerHeader) {
		// The edge strips X-Consumer-Id from every request, policy or not
		// (without forward.consumer_header the branch above refuses it).
		c.add("auth.api_key_header", fmt.Sprintf("%q is stripped from every request going upstream, so keep_credentials could never forward the key; choose another name", h))
	}
	return c.err()
}

// KeptKeyHeader is where the policy reads API keys, if it reads them and
// forwards them upstream (keep_credentials); false otherwise.
func (p *Policy) KeptKeyHeader() (string, bool) {
	if p.Auth == nil || !slices.Contains(p.Auth.Methods, AuthAPIKey) || p.Forward == nil || !p.Forward.KeepCredentials {
		return "", false
	}
	if p.Auth.APIKeyHeader != "" {
		return p.Auth.APIKeyHeader, true
	}
	return fbs.DefaultAPIKeyHeader, true
}

// ConsumerHeader is the header carrying the consumer id upstream.
func (p *Policy) ConsumerHeader() string {
	if p.Forward != nil && p.Forward.ConsumerHeader != "" {
		return p.Forward.ConsumerHeader
	}
	return DefaultConsumerHeader
}

// CheckPolicyRefs checks what the policy references across documents: its
// scope's route or cluster and the jwt issuers in claims.iss. Nil funcs
// skip that check. ctrl calls it with its in-memory model before a put.
func CheckPolicyRefs(p *Policy, routeExists, clusterExists, issuerExists func(id string) bool) error {
	var c collector
	if p.Scope.Route != "" && routeExists != nil && !routeExists(p.Scope.Route) {
		c.add("scope.route", fmt.Sprintf("route %q does not exist", p.Scope.Route))
	}
	if p.Scope.Cluster != "" && clusterExists != nil && !clusterExists(p.Scope.Cluster) {
		c.add("scope.cluster", fmt.Sprintf("cluster %q does not exist", p.Scope.Cluster))
	}
	if p.Claims != nil && issuerExists != nil {
		for i, id := range p.Claims.Iss {
			if !issuerExists(id) {
				c.add(fmt.Sprintf("claims.iss[%d]", i), fmt.Sprintf("jwt_issuer %q does not exist", id))
			}
		}
	}
	return c.err()
}

func DecodePolicy(data []byte) (Policy, error) {
	var p Policy
	err := DecodeStrict(data, &p)
	return p, err
}
