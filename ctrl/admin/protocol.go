// Package admin is ctrl's operator interface: a unix socket speaking
// newline-delimited JSON (one request object per line, one reply object per
// line, any number of requests per connection), the Server that dispatches
// requests to a Handler (implemented by ctrl), and the Client used by
// `snapgate ctl`.
package admin

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/snapgate/snapgate/ctrl/model"
)

// Commands.
const (
	CmdRoutePut      = "route.put"
	CmdRouteGet      = "route.get"
	CmdRouteList     = "route.list"
	CmdRouteDelete   = "route.delete"
	CmdClusterPut    = "cluster.put"
	CmdClusterGet    = "cluster.get"
	CmdClusterList   = "cluster.list"
	CmdClusterDelete = "cluster.delete"

	CmdConsumerPut         = "consumer.put"
	CmdConsumerGet         = "consumer.get"
	CmdConsumerList        = "consumer.list"
	CmdConsumerDelete      = "consumer.delete"
	CmdConsumerAddKey      = "consumer.add_key"      // ctrl generates an API key, stores its hash, replies the key once
	CmdConsumerRemoveKey   = "consumer.remove_key"   // drops the API key KeyID
	CmdConsumerSetPassword = "consumer.set_password" // sets Username's PasswordHash (hashed by the caller)

	CmdJWTIssuerPut    = "jwt_issuer.put"
	CmdJWTIssuerGet    = "jwt_issuer.get"
	CmdJWTIssuerList   = "jwt_issuer.list"
	CmdJWTIssuerDelete = "jwt_issuer.delete"

	CmdPolicyPut    = "policy.put"
	CmdPolicyGet    = "policy.get"
	CmdPolicyList   = "policy.list"
	CmdPolicyDelete = "policy.delete"

	CmdHealthReport  = "health.report"  // an external checker's verdict; replies once it is durable
	CmdHealthStatus  = "health.status"  // every tracked endpoint, or one cluster's (id)
	CmdHealthExplain = "health.explain" // why endpoint is in its state, in one cluster (id) or all

	CmdStatus = "status"
	// CmdEdgeForget drops a disconnected edge (node_id) from status and
	// from ctrl's store, for an edge that was decommissioned.
	CmdEdgeForget = "edge.forget"
)

// Endpoint states in a HealthReport.
const (
	StateHealthy   = "healthy"
	StateUnhealthy = "unhealthy"
)

// Error codes.
const (
	CodeInvalid    = "invalid"     // the document breaks a validation or cross-document rule
	CodeConflict   = "conflict"    // expected_version does not match, the (host, prefix) is taken, or the edge to forget is connected
	CodeNotFound   = "not_found"   // no document (or edge) with that id
	CodeBadRequest = "bad_request" // the request line itself is malformed
	CodeInternal   = "internal"    // ctrl failed; the write did not happen
)

// DefaultMaxLine bounds one request line (and, on the client, one reply is
// allowed to be much larger because lists grow with the config).
const DefaultMaxLine = 1 << 20

// Request is one admin command. ExpectedVersion is optional on every write:
// nil means no check, 0 means "must not exist yet", n means the current
// version must be n.
type Request struct {
	Cmd       string           `json:"cmd"`
	ID        string           `json:"id,omitempty"`
	Route     *model.Route     `json:"route,omitempty"`
	Cluster   *model.Cluster   `json:"cluster,omitempty"`
	Consumer  *model.Consumer  `json:"consumer,omitempty"`
	JWTIssuer *model.JWTIssuer `json:"jwt_issuer,omitempty"`
	Policy    *model.Policy    `json:"policy,omitempty"`
	// KeyID names an API key: optional for consumer.add_key (ctrl picks
	// "key-<n>"), required for consumer.remove_key.
	KeyID string `json:"key_id,omitempty"`
	// Username and PasswordHash (model.HashPassword, computed by the caller
	// so the password never reaches ctrl) for consumer.set_password.
	Username        string  `json:"username,omitempty"`
	PasswordHash    string  `json:"password_hash,omitempty"`
	ExpectedVersion *uint64 `json:"expected_version,omitempty"`
	// KeepCredentials makes consumer.put keep the stored consumer's
	// credentials (none for a new one) in place of the request's, which
	// must be empty. ctrl copies them under its write lock: a put that read
	// them first could restore revoked keys after a delete and re-create,
	// which restarts the version.
	KeepCredentials bool `json:"keep_credentials,omitempty"`
	// Report is health.report's observation.
	Report *HealthReport `json:"report,omitempty"`
	// Endpoint is the address health.explain explains (host:port).
	Endpoint string `json:"endpoint,omitempty"`
	// NodeID names an edge by its --node-id, for edge.forget: 1 to
	// wire.MaxNodeID bytes of visible ASCII, a wider set than document ids.
	NodeID string `json:"node_id,omitempty"`
}

// HealthReport is one external checker's verdict on one endpoint
// (docs/health.md). ctrl records it under the source "external:<Source>"
// and ignores it, saying so, when Revision is not above the last revision
// accepted from that source for that endpoint.
type HealthReport struct {
	Cluster  string `json:"cluster"`
	Endpoint string `json:"endpoint"` // host:port as in the cluster document
	State    string `json:"state"`    // StateHealthy or StateUnhealthy
	Revision uint64 `json:"revision"` // the checker's own order, at least 1
	// Source names the checker, 1..128 bytes of visible ASCII; "" is "ctl".
	Source string `json:"source,omitempty"`
	Detail string `json:"detail,omitempty"` // what was seen; at most 256 bytes
}

// DefaultReportSource is the checker name of a HealthReport without one.
const DefaultReportSource = "ctl"

// HealthReportResult is the reply to health.report, sent once the
// endpoint's state is durable.
type HealthReportResult struct {
	// Result is "accepted", "stale" (revision below the last accepted one)
	// or "duplicate" (equal to it); the latter two changed nothing.
	Result       string `json:"result"`
	Source       string `json:"source"`
	LastRevision uint64 `json:"last_revision"` // the source's, after this report
	Healthy      bool   `json:"healthy"`       // the endpoint's damped state
	Changed      bool   `json:"changed"`       // this report flipped it
}

// HealthStatus is the reply to health.status: clusters sorted by id.
type HealthStatus struct {
	Clusters []ClusterHealth `json:"clusters"`
}

// ClusterHealth is one cluster's health as ctrl tracks it.
type ClusterHealth struct {
	Cluster string `json:"cluster"`
	// Probe summarises the active probe ("http GET /healthz every 2000ms"),
	// "none" without one.
	Probe                 string `json:"probe"`
	Healthy               int    `json:"healthy"`
	Total                 int    `json:"total"`
	PanicThresholdPercent uint32 `json:"panic_threshold_percent"`
	SlowStartMs           uint32 `json:"slow_start_ms"`
	// Panic is the live state, PublishedPanic what edges route on.
	Panic          bool             `json:"panic"`
	PublishedPanic bool             `json:"published_panic"`
	Endpoints      []EndpointHealth `json:"endpoints"`
}

// EndpointHealth is one endpoint's health as ctrl tracks it.
type EndpointHealth struct {
	Address string `json:"address"`
	// Healthy is the live damped state, since Since, for Reason.
	Healthy bool      `json:"healthy"`
	Since   time.Time `json:"since"`
	Reason  string    `json:"reason"`
	// Published is the state edges route on; Routable adds panic mode.
	Published    bool                `json:"published"`
	Routable     bool                `json:"routable"`
	OKStreak     uint32              `json:"ok_streak"`
	FailStreak   uint32              `json:"fail_streak"`
	RecoveredAt  time.Time           `json:"recovered_at,omitzero"`
	PendingAt    time.Time           `json:"pending_at,omitzero"` // a held transition or expiry is due
	Sources      []HealthSource      `json:"sources"`
	Observations []HealthObservation `json:"observations"` // oldest first
	Accepted     uint64              `json:"accepted"`
	Stale        uint64              `json:"stale"`
	Duplicate    uint64              `json:"duplicate"`
	Evicted      uint64              `json:"evicted"`
}

// HealthSource is a source's last accepted revision for an endpoint.
type HealthSource struct {
	Source   string    `json:"source"`
	Revision uint64    `json:"revision"`
	At       time.Time `json:"at"` // when ctrl accepted it
}

// HealthObservation is one accepted observation.
type HealthObservation struct {
	Source   string    `json:"source"`
	Revision uint64    `json:"revision"`
	OK       bool      `json:"ok"`
	Detail   string    `json:"detail,omitempty"`
	At       time.Time `json:"at"`       // when the observer saw it
	Received time.Time `json:"received"` // when ctrl accepted it
}

// HealthExplanation is the reply to health.explain.
type HealthExplanation struct {
	Text string `json:"text"`
}

// Reply answers one Request: OK with a Result, or not OK with an Error.
type Reply struct {
	OK     bool            `json:"ok"`
	Result json.RawMessage `json:"result,omitempty"`
	Error  *Error          `json:"error,omitempty"`
}

// Error is a failed reply. It is also the error type the Client returns for
// them, so a CLI can print Code, Field and Message and exit non-zero.
type Error struct {
	Code    string `json:"code"`
	Field   string `json:"field,omitempty"`
	Message string `json:"message"`
}

func (e *Error) Error() string {
	if e.Field != "" {
		return e.Code + ": " + e.Field + ": " + e.Message
	}
	return e.Code + ": " + e.Message
}

// Errorf builds an *Error.
func Errorf(code, field, format string, args ...any) *Error {
	return &Error{Code: code, Field: field, Message: fmt.Sprintf(format, args...)}
}

// Result is the reply to put, get and delete: the document as stored.
// For a delete, Version is the last version the document had, Revision the
// revision of the delete, and the document body is omitted.
//
// Secrets never appear: a consumer's basic password hashes and an issuer's
// HMAC keys ("k") come back empty (a put that leaves them empty keeps the
// stored ones, so a document from get can be edited and put back). API key
// hashes are shown; they cannot be turned back into keys.
type Result struct {
	Kind      string           `json:"kind"`
	ID        string           `json:"id"`
	Version   uint64           `json:"version"`
	Revision  uint64           `json:"revision"`
	Route     *model.Route     `json:"route,omitempty"`
	Cluster   *model.Cluster   `json:"cluster,omitempty"`
	Consumer  *model.Consumer  `json:"consumer,omitempty"`
	JWTIssuer *model.JWTIssuer `json:"jwt_issuer,omitempty"`
	Policy    *model.Policy    `json:"policy,omitempty"`
	// APIKey is the key consumer.add_key generated, in that reply only:
	// ctrl keeps its hash, so this is the one time anyone sees it.
	APIKey string `json:"api_key,omitempty"`
}

// List is the reply to route.list and cluster.list, sorted by id, as of
// store revision Revision.
type List struct {
	Kind     string   `json:"kind"`
	Revision uint64   `json:"revision"`
	Items    []Result `json:"items"`
}

// Status is the reply to status.
type Status struct {
	SnapshotVersion uint64    `json:"snapshot_version"` // 0 until the first snapshot is built
	SnapshotParent  uint64    `json:"snapshot_parent_version"`
	SnapshotBuiltAt time.Time `json:"snapshot_built_at,omitzero"`
	SnapshotBytes   int       `json:"snapshot_bytes"`
	Routes          int       `json:"routes"`
	Clusters        int       `json:"clusters"`
	Consumers       int       `json:"consumers"`
	JWTIssuers      int       `json:"jwt_issuers"`
	Policies        int       `json:"policies"`
	// FleetSize is the edge count cluster-scope rate limits are divided by
	// in the current configuration: 0 while no policy has one.
	FleetSize     uint32 `json:"fleet_size"`
	StoreRevision uint64 `json:"store_revision"`
	// ConfigRevision is the store revision of the latest configuration
	// write (a document, not health): a snapshot at or above it carries
	// every configuration write. Health writes move StoreRevision alone.
	ConfigRevision uint64       `json:"config_revision"`
	Edges          []EdgeStatus `json:"edges"`
}

// EdgeStatus is one edge as the publisher sees it.
type EdgeStatus struct {
	NodeID         string    `json:"node_id"`
	RemoteAddr     string    `json:"remote_addr"`
	Connected      bool      `json:"connected"`
	ConnectedSince time.Time `json:"connected_since,omitzero"`
	AppliedVersion uint64    `json:"applied_version"`
	Lag            uint64    `json:"lag"` // snapshot versions behind the latest, 0 when current
	// LagMs is how long the edge has been behind: since the first snapshot
	// newer than AppliedVersion was built; 0 when current.
	LagMs int64 `json:"lag_ms"`
	// Diverged: the edge serves a snapshot that is not from ctrl's history
	// (ctrl's data was lost or restored); AppliedVersion is the edge's own
	// claim and Lag counts every version ctrl has (at least 1) until the
	// edge ACKs ctrl's replacement.
	Diverged   bool      `json:"diverged,omitempty"`
	FullsSent  uint64    `json:"fulls_sent"`
	DeltasSent uint64    `json:"deltas_sent"`
	LastAck    time.Time `json:"last_ack,omitzero"`
	LastNack   string    `json:"last_nack,omitempty"`
}
