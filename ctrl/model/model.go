// Package model defines the documents operators write to ctrl (routes and
// clusters), their strict JSON form and their validation. Validation here is
// per document; rules that span documents (a route's cluster must exist, ...)
// are checked by ctrl against its in-memory model.
package model

// Document kinds as stored and as reported by the admin socket.
const (
	KindRoute   = "route"
	KindCluster = "cluster"
)

// Limits. They bound what an edge has to hold per route and keep a single
// typo (an extra zero) from becoming a ten-hour timeout.
const (
	MaxTimeoutMs       = 600_000 // 10 minutes, for route and connect timeouts
	MaxPrefixLen       = 1024
	MaxHostLen         = 253 // RFC 1035 limit for a DNS name in text form
	MaxEndpoints       = 1024
	MaxEndpointAddrLen = 261 // 253-byte name + ":" + 5-digit port, or a bracketed IPv6 literal
	maxIDLen           = 64
	MaxPriority        = 1_000_000
	MaxRetryAttempts   = 5
	MaxWeight          = 1000
	MaxMethods         = 16
	MaxHeaderMatches   = 16
	// MinStalenessBoundMs is the smallest staleness bound: ctrl confirms the
	// latest version with a heartbeat every second, so a tighter bound
	// would flap between fresh and stale while ctrl is healthy.
	MinStalenessBoundMs = 2_000
	// MaxStalenessBoundMs is the largest staleness bound (one day); longer
	// means unbounded in practice, which is 0.
	MaxStalenessBoundMs = 86_400_000
	maxHeaderValueLen   = 1024
	// WildcardHost is the Route.Host that matches any host; exact-host and
	// "*." wildcard routes win over it.
	WildcardHost = "*"
)

// Route sends matching requests to Cluster. A request matches when its
// host equals Host ("*.example.com" matches every subdomain of
// example.com, "*" any host), its path equals Path or lies under Prefix
// (exactly one of them is set), its method is one of Methods (empty = any)
// and every Headers condition holds. docs/routing.md gives the match order.
type Route struct {
	ID      string `json:"id"`
	Host    string `json:"host"`
	Prefix  string `json:"prefix,omitempty"`
	Path    string `json:"path,omitempty"`
	Cluster string `json:"cluster"`
	// TimeoutMs bounds the whole upstream exchange; 0 means the edge default.
	TimeoutMs uint32        `json:"timeout_ms,omitempty"`
	Methods   []string      `json:"methods,omitempty"`
	Headers   []HeaderMatch `json:"headers,omitempty"`
	// Priority orders routes with the same host and path; higher wins.
	Priority uint32 `json:"priority,omitempty"`
	// RewritePrefix replaces the matched prefix (or path) before forwarding.
	RewritePrefix string `json:"rewrite_prefix,omitempty"`
	Retry         *Retry `json:"retry,omitempty"`
	// MaxStalenessMs bounds how long ago ctrl must have confirmed that the
	// edge's snapshot is the latest, in milliseconds; 0 means unbounded.
	// OnStale says what a request on this route gets past the bound.
	MaxStalenessMs uint32 `json:"max_staleness_ms,omitempty"`
	// OnStale is OnStaleServe ("" means it) or OnStaleReject.
	OnStale string `json:"on_stale,omitempty"`
	// StaleHeader adds X-Snapgate-Staleness to this route's responses.
	StaleHeader bool `json:"stale_header,omitempty"`
}

// What a route does once its snapshot is older than MaxStalenessMs.
const (
	// OnStaleServe keeps serving from the last good snapshot (the default).
	OnStaleServe = "serve"
	// OnStaleReject answers 503 "snapshot stale" instead of forwarding.
	OnStaleReject = "reject"
)

// HeaderMatch is one header condition: Name with exactly Value, or with
// any value when Present is true.
type HeaderMatch struct {
	Name    string `json:"name"`
	Value   string `json:"value,omitempty"`
	Present bool   `json:"present,omitempty"`
}

// Retry is a route's retry policy. The edge retries only idempotent
// requests, on another endpoint, and only before any response byte
// reached the client.
type Retry struct {
	Attempts uint8 `json:"attempts"`
	// On lists the conditions: "connect-failure", "reset", or an upstream
	// status code such as "503".
	On []string `json:"on"`
}

// Retry conditions accepted in Retry.On besides status codes.
const (
	RetryConnectFailure = "connect-failure"
	RetryReset          = "reset"
)

// Load-balancing policies (Cluster.LB).
const (
	LBRoundRobin         = "round_robin"
	LBWeightedRoundRobin = "weighted_round_robin"
	LBLeastRequest       = "least_request"
	LBHash               = "hash"
)

// Cluster is a named set of backend endpoints.
type Cluster struct {
	ID        string     `json:"id"`
	Endpoints []Endpoint `json:"endpoints"`
	// ConnectTimeoutMs bounds dialing one endpoint; 0 means the edge default.
	ConnectTimeoutMs uint32 `json:"connect_timeout_ms,omitempty"`
	// LB is the balancing policy; "" means round_robin.
	LB string `json:"lb,omitempty"`
	// HashOn is what policy hash is keyed on; required for it, only for it.
	HashOn *HashOn `json:"hash_on,omitempty"`
	// Health configures active probes and health damping; nil means no
	// active probe and the defaults of HealthCheck.Effective.
	Health *HealthCheck `json:"health,omitempty"`
}

// HashOn names exactly one consistent-hash key source.
type HashOn struct {
	Header   string `json:"header,omitempty"`
	Cookie   string `json:"cookie,omitempty"`
	SourceIP bool   `json:"source_ip,omitempty"`
}

// Endpoint is one backend address, "host:port".
type Endpoint struct {
	Address string `json:"address"`
	// Weight is the weighted_round_robin share, 1..1000; 0 means 1.
	Weight uint16 `json:"weight,omitempty"`
}
