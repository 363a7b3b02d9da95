package ctrl

import (
	"maps"
	"slices"
	"strings"

	"github.com/snapgate/snapgate/ctrl/model"
	"github.com/snapgate/snapgate/fbs"
)

// derived is the model in snapshot form: every route, consumer, issuer and
// policy already converted for fbs.State. Builds take it as it is instead
// of converting every document: at 100,000 routes that conversion cost
// ~100 ms per version, more than encoding the changed shards. Clusters are
// converted per build by clusterCache, with their published health; the
// root's and the clusters' policies and the fleet size come from the
// model's small indexes at build time (fbsState).
//
// Routes are kept in step lazily. The kinds' hooks (below) only mark a
// route id dirty; fbsState converts the dirty routes from the model into
// the route table, under wmu, and hands the table to the build, which
// reads it after wmu is released. Writers never touch the table, and
// builds run one at a time (the recompute loop; startSnapshot before it),
// so the next fbsState cannot change it under a running build, and no
// copy is needed. (Writers updating a route slice themselves would need a
// 20 MB copy per version at 100,000 routes, which measured ~80 ms inside
// a put.) The table tells the Builder which routes changed since its last
// build, so the Builder validates, places and digests only those.
type derived struct {
	// routes holds one entry per route; only fbsState changes it.
	routes *fbs.RouteTable
	// dirty holds the ids of routes put or deleted, or whose route policy
	// changed, since the last fbsState.
	dirty map[string]struct{}

	// Converted on every put, by id; builds copy the values into slices.
	consumers map[string]fbs.Consumer
	issuers   map[string]fbs.Issuer
	policies  map[string]fbs.Policy
}

func newDerived() derived {
	return derived{
		routes:    fbs.NewRouteTable(),
		dirty:     make(map[string]struct{}),
		consumers: make(map[string]fbs.Consumer),
		issuers:   make(map[string]fbs.Issuer),
		policies:  make(map[string]fbs.Policy),
	}
}

// syncRoutes brings routes up to date with the model's dirty routes.
func (m *state) syncRoutes() {
	d := &m.derived
	for id := range d.dirty {
		v, ok := m.routes[id]
		if !ok {
			d.routes.Delete(id)
			continue
		}
		r := fbsRoute(&v.doc)
		r.Policy = m.byScope[scopeRoute+id]
		d.routes.Put(r)
	}
	clear(d.dirty)
}

// Hooks of the kinds (documents.go, auth.go): what a put or delete of each
// document changes in the derived state besides the model's indexes.

func (m *state) indexRoute(r *model.Route) {
	m.byKey[keyOf(*r)] = r.ID
	m.derived.dirty[r.ID] = struct{}{}
}

func (m *state) unindexRoute(r *model.Route) {
	delete(m.byKey, keyOf(*r))
	m.derived.dirty[r.ID] = struct{}{}
}

func (m *state) indexPolicy(p *model.Policy) {
	key := p.ScopeKey()
	m.byScope[key] = p.ID
	m.derived.policies[p.ID] = fbsPolicy(p)
	if route, ok := strings.CutPrefix(key, scopeRoute); ok {
		m.derived.dirty[route] = struct{}{}
	}
}

func (m *state) unindexPolicy(p *model.Policy) {
	key := p.ScopeKey()
	delete(m.byScope, key)
	delete(m.derived.policies, p.ID)
	if route, ok := strings.CutPrefix(key, scopeRoute); ok {
		m.derived.dirty[route] = struct{}{}
	}
}

// fbsState returns the builder's input at version: the derived route table
// and auth documents, the clusters already converted (clusterCache.convert
// adds their health) and the policy references of the root and the
// clusters. The caller holds wmu. The table stays unchanged until the next
// fbsState: the build that uses it must end before it (see derived).
// fbs.Build sorts, so map iteration order does not reach the bytes.
func (m *state) fbsState(version, parent uint64, shards int, clusters []fbs.Cluster) fbs.State {
	m.syncRoutes()
	d := &m.derived
	st := fbs.State{
		Version:       version,
		ParentVersion: parent,
		Table:         d.routes,
		Clusters:      clusters,
		Shards:        shards,
		Auth: fbs.Auth{
			Consumers: slices.Collect(maps.Values(d.consumers)),
			Issuers:   slices.Collect(maps.Values(d.issuers)),
			Policies:  slices.Collect(maps.Values(d.policies)),
		},
		GlobalPolicy: m.byScope[scopeGlobal],
		FleetSize:    m.fleetSize(),
	}
	for i := range st.Clusters {
		st.Clusters[i].Policy = m.byScope[scopeCluster+st.Clusters[i].Name]
	}
	return st
}
