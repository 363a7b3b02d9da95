package proxy

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"

	"github.com/snapgate/snapgate/edge/upstream"
	"github.com/snapgate/snapgate/fbs"
)

// TestCountersIndexedAtSwap: a table's route and policy counter indexes
// are built when it goes into service, before its first request, with the
// counters of every route requested before (carried from the old table's
// index for unchanged shards, looked up by id for the rest) and nothing
// for routes never requested; the series continue across swaps.
func TestCountersIndexedAtSwap(t *testing.T) {
	be := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	defer be.Close()
	st := oneRoute(be.Listener.Addr().String())
	st.Shards = 8
	for i := range 300 {
		st.Routes = append(st.Routes, fbs.Route{ID: fmt.Sprintf("r%03d", i), Host: "*", Prefix: fmt.Sprintf("/p%03d", i), Cluster: "c"})
	}
	g := startGateway(t, st, upstream.Options{}, nil)
	get := func(path string) {
		t.Helper()
		resp, err := http.Get("http://" + g.addr + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	requested := []string{"r001", "r150", "r299"}
	for _, id := range requested {
		get("/p" + id[1:])
	}
	check := func(what string) {
		t.Helper()
		cur := g.tables.Acquire()
		defer cur.Release()
		ri := g.srv.routeIdx.Load()
		if ri == nil || ri.tab != cur {
			t.Fatalf("%s: no route counter index for the table in service", what)
		}
		if px := g.srv.policyIdx.Load(); px == nil || px.tab != cur {
			t.Fatalf("%s: no policy counter index for the table in service", what)
		}
		i := 0
		cur.Snapshot().ForEachRoute(func(r fbs.Route) bool {
			got, want := ri.rcs[i].Load(), g.metrics.KnownRoute([]byte(r.ID))
			if slices.Contains(requested, r.ID) != (want != nil) || got != want {
				t.Fatalf("%s: route %s (index %d): slot %p, its counters %p", what, r.ID, i, got, want)
			}
			i++
			return true
		})
	}
	// One route changed: the other shards' slots carry over.
	st.Version, st.Routes[len(st.Routes)-1].TimeoutMs = 2, 1000
	g.swap(st)
	check("after a one-route change")
	// One route added in an early shard: the later shards' routes move up
	// by one, and their slots with them.
	st.Version = 3
	st.Routes = append(st.Routes, earlyRoute(t, st))
	g.swap(st)
	check("after a route was added")
	// A table opened alone (a boot or a full replacement): every slot by id.
	st.Version = 4
	tab, err := g.build(st)
	if err != nil {
		t.Fatal(err)
	}
	g.tables.Close() // nothing in service: the next swap has no old table
	if _, err := g.tables.Swap(tab); err != nil {
		t.Fatal(err)
	}
	check("after a swap with no table before")
	get("/p001")
	hasSample(t, g.metrics, `snapgate_edge_requests_total{route="r001",class="2xx"} 2`)
}

// earlyRoute returns a route that, added to st, lands in its first quarter
// of dense indexes, so that the shards after it move.
func earlyRoute(t *testing.T, st fbs.State) fbs.Route {
	for k := range 1000 {
		r := fbs.Route{ID: fmt.Sprintf("new%d", k), Host: "*", Prefix: fmt.Sprintf("/new%d", k), Cluster: "c"}
		with := st
		with.Routes = append(slices.Clone(st.Routes), r)
		b, err := fbs.Build(with)
		if err != nil {
			t.Fatal(err)
		}
		snap, err := fbs.Open(b)
		if err != nil {
			t.Fatal(err)
		}
		i, at := 0, -1
		snap.ForEachRoute(func(x fbs.Route) bool {
			if x.ID == r.ID {
				at = i
			}
			i++
			return at < 0
		})
		if at >= 0 && at < snap.NumRoutes()/4 {
			return r
		}
	}
	t.Fatal("no route lands in the first quarter")
	return fbs.Route{}
}
