package ctrl

import (
	"strconv"
	"strings"

	"github.com/snapgate/snapgate/ctrl/model"
	"github.com/snapgate/snapgate/fbs"
)

// versioned is a document with the store's version and revision for it.
type versioned[T any] struct {
	doc      T
	version  uint64
	revision uint64
}

// routeKey is what must be unique across routes: host, exact path or
// prefix, methods and header conditions (model.Route.MatchKey). Two routes
// that agree on all of them could never both be reachable.
type routeKey string

// state is ctrl's in-memory model: every document as of revision. Only
// the writer (under Server.wmu, then Server.mu) changes it.
type state struct {
	revision  uint64
	routes    map[string]versioned[model.Route]
	clusters  map[string]versioned[model.Cluster]
	consumers map[string]versioned[model.Consumer]
	issuers   map[string]versioned[model.JWTIssuer]
	policies  map[string]versioned[model.Policy]
	// fleet is the recorded count of connected edges (meta "fleet").
	fleet versioned[uint32]

	// Indexes of what must be unique across documents.
	byKey    map[routeKey]string          // route match key -> route id
	byScope  map[string]string            // model.Policy.ScopeKey -> policy id
	keys     map[string]string            // API key hash -> consumer id
	users    map[string]string            // basic-auth username -> consumer id
	subjects map[model.JWTIdentity]string // JWT issuer and subject -> consumer id
	iss      map[string]string            // issuer "iss" value -> jwt_issuer id

	// derived is the model in snapshot form, kept current by the same
	// hooks as the indexes (derived.go).
	derived derived
}

func newState(rev uint64) state {
	return state{
		revision:  rev,
		routes:    make(map[string]versioned[model.Route]),
		clusters:  make(map[string]versioned[model.Cluster]),
		consumers: make(map[string]versioned[model.Consumer]),
		issuers:   make(map[string]versioned[model.JWTIssuer]),
		policies:  make(map[string]versioned[model.Policy]),
		byKey:     make(map[routeKey]string),
		byScope:   make(map[string]string),
		keys:      make(map[string]string),
		users:     make(map[string]string),
		subjects:  make(map[model.JWTIdentity]string),
		iss:       make(map[string]string),
		derived:   newDerived(),
	}
}

func keyOf(r model.Route) routeKey { return routeKey(r.MatchKey()) }

// fbsRoute converts a validated route.
func fbsRoute(r *model.Route) fbs.Route {
	p, exact := r.ExactPath()
	out := fbs.Route{
		ID: r.ID, Host: r.Host, Prefix: p, Exact: exact, Cluster: r.Cluster, TimeoutMs: r.TimeoutMs,
		Methods: r.Methods, Priority: r.Priority, RewritePrefix: r.RewritePrefix,
		MaxStalenessMs: r.MaxStalenessMs, OnStaleReject: r.OnStale == model.OnStaleReject, StaleHeader: r.StaleHeader,
	}
	for _, h := range r.Headers {
		out.Headers = append(out.Headers, fbs.HeaderMatch{Name: h.Name, Value: h.Value, Present: h.Present})
	}
	if r.Retry != nil {
		out.RetryAttempts = r.Retry.Attempts
		out.RetryStatuses = r.Retry.RetryStatuses()
		for _, on := range r.Retry.On {
			switch on {
			case model.RetryConnectFailure:
				out.RetryOn |= fbs.RetryOnConnectFailure
			case model.RetryReset:
				out.RetryOn |= fbs.RetryOnReset
			}
		}
	}
	return out
}

// lbCodes maps model policies to snapshot codes; "" is round robin.
var lbCodes = map[string]uint8{
	"":                         fbs.LBRoundRobin,
	model.LBRoundRobin:         fbs.LBRoundRobin,
	model.LBWeightedRoundRobin: fbs.LBWeightedRoundRobin,
	model.LBLeastRequest:       fbs.LBLeastRequest,
	model.LBHash:               fbs.LBHash,
}

// fbsCluster converts a validated cluster.
func fbsCluster(c *model.Cluster) fbs.Cluster {
	eps := make([]fbs.Endpoint, len(c.Endpoints))
	for i, e := range c.Endpoints {
		eps[i] = fbs.Endpoint{Address: e.Address, Weight: e.Weight}
	}
	out := fbs.Cluster{Name: c.ID, Endpoints: eps, ConnectTimeoutMs: c.ConnectTimeoutMs, LB: lbCodes[c.LB]}
	if h := c.HashOn; h != nil && out.LB == fbs.LBHash {
		switch {
		case h.Header != "":
			out.HashOn, out.HashOnName = fbs.HashOnHeader, h.Header
		case h.Cookie != "":
			out.HashOn, out.HashOnName = fbs.HashOnCookie, h.Cookie
		case h.SourceIP:
			out.HashOn = fbs.HashOnSourceIP
		}
	}
	return out
}

// listIDs formats ids for an error message, naming at most a handful.
func listIDs(ids []string) string {
	const show = 5
	quoted := make([]string, 0, min(len(ids), show))
	for _, id := range ids[:min(len(ids), show)] {
		quoted = append(quoted, `"`+id+`"`)
	}
	s := strings.Join(quoted, ", ")
	if len(ids) > show {
		s += " and " + strconv.Itoa(len(ids)-show) + " more"
	}
	return s
}
