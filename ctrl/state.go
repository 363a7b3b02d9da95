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

// routeKey is what must be unique across routes: the edge can only send a
// (host, prefix) to one cluster.
type routeKey struct{ host, prefix string }

// state is ctrl's in-memory model: every route and cluster as of revision.
// Only the writer (under Server.wmu, then Server.mu) changes it.
type state struct {
	revision uint64
	routes   map[string]versioned[model.Route]
	clusters map[string]versioned[model.Cluster]
	byKey    map[routeKey]string // (host, prefix) -> route id
}

func newState(rev uint64) state {
	return state{
		revision: rev,
		routes:   make(map[string]versioned[model.Route]),
		clusters: make(map[string]versioned[model.Cluster]),
		byKey:    make(map[routeKey]string),
	}
}

func keyOf(r model.Route) routeKey { return routeKey{r.Host, r.Prefix} }

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
		st.Routes = append(st.Routes, fbs.Route{
			ID: r.doc.ID, Host: r.doc.Host, Prefix: r.doc.Prefix, Cluster: r.doc.Cluster, TimeoutMs: r.doc.TimeoutMs,
		})
	}
	for _, c := range m.clusters {
		eps := make([]fbs.Endpoint, len(c.doc.Endpoints))
		for i, e := range c.doc.Endpoints {
			eps[i] = fbs.Endpoint{Address: e.Address}
		}
		st.Clusters = append(st.Clusters, fbs.Cluster{Name: c.doc.ID, Endpoints: eps, ConnectTimeoutMs: c.doc.ConnectTimeoutMs})
	}
	return st
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
