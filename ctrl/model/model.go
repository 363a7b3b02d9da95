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
	// WildcardHost is the Route.Host that matches any host; exact-host routes win over it.
	WildcardHost = "*"
)

// Route sends requests whose Host equals Host (or any host when Host is "*")
// and whose path lies under Prefix to Cluster.
type Route struct {
	ID      string `json:"id"`
	Host    string `json:"host"`
	Prefix  string `json:"prefix"`
	Cluster string `json:"cluster"`
	// TimeoutMs bounds the whole upstream exchange; 0 means the edge default.
	TimeoutMs uint32 `json:"timeout_ms,omitempty"`
}

// Cluster is a named set of backend endpoints.
type Cluster struct {
	ID        string     `json:"id"`
	Endpoints []Endpoint `json:"endpoints"`
	// ConnectTimeoutMs bounds dialing one endpoint; 0 means the edge default.
	ConnectTimeoutMs uint32 `json:"connect_timeout_ms,omitempty"`
}

// Endpoint is one backend address, "host:port".
type Endpoint struct {
	Address string `json:"address"`
}
