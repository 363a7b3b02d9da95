package fbs

// RouteTable is a route set kept by id, for a Builder to read as
// State.Table instead of State.Routes. Besides the routes it keeps what the
// last successful build from it derived from each one (shard, cluster and
// policy positions, digest) and which routes were put or deleted since.
// The next build by the same Builder, if the shard count, the cluster names
// and the policy ids are what they were, then validates, places and
// digests only those routes, instead of all of them: at 100,000 routes
// that pass was most of a one-route version's build.
//
// The zero value is not ready; use NewRouteTable. A RouteTable is not safe
// for concurrent use: nothing may change it while a build that reads it
// runs (builds write its bookkeeping), and it is meant to be built by one
// Builder (another Builder's build is correct but takes a full pass, and
// makes the first one's next build take one too).
type RouteTable struct {
	// routes holds one route per id in no particular order (builds sort);
	// a delete moves the last route into the gap. placed runs parallel to
	// it: what owner's shard sums hold for each route.
	routes []Route
	placed []placement
	at     map[string]int

	// owner is the Builder whose shard sums hold placed and removed: the
	// one whose build from this table last succeeded, nil before that and
	// after a failed full pass. changed and removed are kept only while
	// there is an owner (without one the next build is a full pass).
	owner *Builder
	// changed holds the ids put since owner's last build from the table.
	changed map[string]struct{}
	// removed holds the placements of routes deleted since then that
	// owner's sums still count.
	removed []placement
}

// NewRouteTable returns an empty RouteTable.
func NewRouteTable() *RouteTable {
	return &RouteTable{at: make(map[string]int), changed: make(map[string]struct{})}
}

// Len is the number of routes.
func (t *RouteTable) Len() int { return len(t.routes) }

// Put adds r, or replaces the route with r.ID. The table keeps r as it
// is: its slices must not be modified afterwards. Validation is the
// build's, so Put takes any route.
func (t *RouteTable) Put(r Route) {
	i, ok := t.at[r.ID]
	if !ok {
		i = len(t.routes)
		t.at[r.ID] = i
		t.routes = append(t.routes, Route{})
		t.placed = append(t.placed, placement{})
	}
	t.routes[i] = r
	if t.owner != nil {
		t.changed[r.ID] = struct{}{}
	}
}

// Delete removes the route with the given id, if there is one.
func (t *RouteTable) Delete(id string) {
	i, ok := t.at[id]
	if !ok {
		return
	}
	if t.owner != nil {
		if t.placed[i].counted {
			t.removed = append(t.removed, t.placed[i])
		}
		delete(t.changed, id)
	}
	last := len(t.routes) - 1
	if i != last {
		t.routes[i], t.placed[i] = t.routes[last], t.placed[last]
		t.at[t.routes[i].ID] = i
	}
	t.routes[last] = Route{} // do not pin the removed route's strings
	t.routes, t.placed = t.routes[:last], t.placed[:last]
	delete(t.at, id)
}

// settled marks every route as placed by owner b: the end of a successful
// build.
func (t *RouteTable) settled(b *Builder) {
	t.owner = b
	clear(t.changed)
	t.removed = t.removed[:0]
}
