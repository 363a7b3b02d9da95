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

	CmdStatus = "status"
)

// Error codes.
const (
	CodeInvalid    = "invalid"     // the document breaks a validation or cross-document rule
	CodeConflict   = "conflict"    // expected_version does not match, or the (host, prefix) is taken
	CodeNotFound   = "not_found"   // no document with that id
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
	FleetSize     uint32       `json:"fleet_size"`
	StoreRevision uint64       `json:"store_revision"`
	Edges         []EdgeStatus `json:"edges"`
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
