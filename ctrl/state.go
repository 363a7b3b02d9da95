package ctrl

import (
	"slices"
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

// state is ctrl's in-memory model: every route and cluster as of revision.
// Only the writer (under Server.wmu, then Server.mu) changes it.
type state struct {
	revision uint64
	routes   map[string]versioned[model.Route]
	clusters map[string]versioned[model.Cluster]
	byKey    map[routeKey]string // match key -> route id
}

func newState(rev uint64) state {
	return state{
		revision: rev,
		routes:   make(map[string]versioned[model.Route]),
		clusters: make(map[string]versioned[model.Cluster]),
		byKey:    make(map[routeKey]string),
	}
}

func keyOf(r model.Route) routeKey { return routeKey(r.MatchKey()) }

func (m *state) putRoute(v versioned[model.Route]) {
	if old, ok := m.routes[v.doc.ID]; ok {
		delete(m.byKey, keyOf(old.doc))
	}
	m.routes[v.doc.ID] = v
	m.byKey[keyOf(v.doc)] = v.doc.ID
}

func (m *state) deleteRoute(id string) {
	if old, ok := m.routes[id]; ok {
		delete(m.byKey, keyOf(old.doc))
		delete(m.routes, id)
	}
}

// routesUsing returns the ids of the routes that reference cluster id, sorted.
func (m *state) routesUsing(cluster string) []string {
	var ids []string
	for id, r := range m.routes {
		if r.doc.Cluster == cluster {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	return ids
}

// fbsState converts the model into the builder's input. fbs.Build sorts, so
// map iteration order does not reach the bytes.
func (m *state) fbsState(parent uint64, shards int) fbs.State {
	st := fbs.State{
		Version:       m.revision,
		ParentVersion: parent,
		Routes:        make([]fbs.Route, 0, len(m.routes)),
		Clusters:      make([]fbs.Cluster, 0, len(m.clusters)),
		Shards:        shards,
	}
	for _, r := range m.routes {
		st.Routes = append(st.Routes, fbsRoute(&r.doc))
	}
	for _, c := range m.clusters {
		st.Clusters = append(st.Clusters, fbsCluster(&c.doc))
	}
	return st
}

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
