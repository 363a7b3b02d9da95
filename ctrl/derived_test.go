package ctrl

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/snapgate/snapgate/ctrl/admin"
	"github.com/snapgate/snapgate/ctrl/health"
	"github.com/snapgate/snapgate/ctrl/model"
	"github.com/snapgate/snapgate/fbs"
)

// scratchState derives the builder's input from the whole model, the way
// ctrl did before it kept the derived state: the reference the incremental
// state is checked against.
func scratchState(m *state, version, parent uint64, clusters []fbs.Cluster) fbs.State {
	st := fbs.State{Version: version, ParentVersion: parent, Clusters: clusters}
	for _, r := range m.routes {
		out := fbsRoute(&r.doc)
		out.Policy = m.byScope[scopeRoute+r.doc.ID]
		st.Routes = append(st.Routes, out)
	}
	for _, c := range m.consumers {
		st.Auth.Consumers = append(st.Auth.Consumers, fbsConsumer(&c.doc))
	}
	for _, j := range m.issuers {
		st.Auth.Issuers = append(st.Auth.Issuers, fbsIssuer(&j.doc))
	}
	for _, p := range m.policies {
		st.Auth.Policies = append(st.Auth.Policies, fbsPolicy(&p.doc))
	}
	st.GlobalPolicy = m.byScope[scopeGlobal]
	for i := range st.Clusters {
		st.Clusters[i].Policy = m.byScope[scopeCluster+st.Clusters[i].Name]
	}
	st.FleetSize = m.fleetSize()
	return st
}

// buildOrError is the snapshot of st, or its build error as bytes, so two
// derivations can be compared in one step.
func buildOrError(st fbs.State) []byte {
	data, err := fbs.Build(st)
	if err != nil {
		return []byte("error: " + err.Error())
	}
	return data
}

// TestDerivedStateMatchesScratch drives a real ctrl (Pebble store, health
// tracker, publisher) through a fixed-seed random sequence of puts and
// deletes of every document kind and health reports, running the
// recompute loop's build itself every few changes so that no build races
// the checks. After each build it checks two properties:
//
//   - the derived state in the model builds the same bytes as a derivation
//     from the whole model;
//   - the snapshot ctrl built and stored is byte for byte the one a
//     from-scratch derivation of the store's documents builds, which also
//     covers the builder's shard cache and the cluster cache.
func TestDerivedStateMatchesScratch(t *testing.T) {
	dir := t.TempDir()
	s, err := New(Config{InsecureStream: true, DataDir: dir, AdminSocket: filepath.Join(dir, "admin.sock"),
		PublishAddr: "127.0.0.1:0", Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	hd := handler{s}
	cx := ctx(t)
	rng := rand.New(rand.NewPCG(5, 2026))
	pick := func(prefix string, n int) string { return fmt.Sprintf("%s%d", prefix, rng.IntN(n)) }
	const (
		nClusters, nRoutes, nIssuers, nConsumers, nPolicies = 4, 40, 3, 6, 8
		steps                                               = 600
	)
	hosts := []string{"*", "a.example", "*.b.example"}
	methods := []string{"GET", "POST", "PUT"}
	healthRev := uint64(0)

	// build runs the recompute loop's build until no health publication
	// lands during it, and returns the view it used.
	build := func(step int) *health.Routing {
		t.Helper()
		for range 100 {
			r := s.health.Routing()
			if err := s.build(); err != nil {
				t.Fatalf("step %d: build: %v", step, err)
			}
			if s.health.Routing() == r {
				return r
			}
		}
		t.Fatalf("step %d: health publications kept landing during builds", step)
		return nil
	}
	check := func(step int) {
		t.Helper()
		r := build(step)
		inc, _ := clusterCache(nil).convert(&s.model, r)
		ref, _ := clusterCache(nil).convert(&s.model, r)
		got := buildOrError(s.model.fbsState(7, 6, 0, inc))
		want := buildOrError(scratchState(&s.model, 7, 6, ref))
		if !bytes.Equal(got, want) {
			t.Fatalf("step %d: derived state builds %d bytes (%.80q), the whole model %d (%.80q)", step, len(got), got, len(want), want)
		}

		last := s.lastSnap()
		stored, err := s.store.Snapshot(last.version)
		if err != nil {
			t.Fatal(err)
		}
		_, docs, err := s.store.Load()
		if err != nil {
			t.Fatal(err)
		}
		fresh := newState(0)
		if err := s.loadDocs(&fresh, docs); err != nil {
			t.Fatal(err)
		}
		cs, _ := clusterCache(nil).convert(&fresh, r)
		want = buildOrError(scratchState(&fresh, last.version, last.parent, cs))
		if !bytes.Equal(stored, want) {
			t.Fatalf("step %d: stored snapshot v%d (%d bytes) differs from a build of the store's documents from scratch (%d bytes, %.80q)", step, last.version, len(stored), len(want), want)
		}
	}

	applied := map[string]int{}
	for step := range steps {
		var err error
		op := rng.IntN(14)
		switch op {
		case 0, 1, 2, 3:
			rt := model.Route{ID: pick("r", nRoutes), Host: hosts[rng.IntN(len(hosts))], Prefix: "/" + pick("p", 12),
				Cluster: pick("c", nClusters), TimeoutMs: uint32(rng.IntN(3)) * 1000, Priority: uint32(rng.IntN(2))}
			if rng.IntN(3) == 0 {
				rt.Methods = []string{methods[rng.IntN(len(methods))]}
			}
			if rng.IntN(4) == 0 {
				rt.Headers = []model.HeaderMatch{{Name: "x-" + pick("h", 2), Value: "v"}}
			}
			_, err = hd.PutRoute(cx, rt, nil)
		case 4:
			_, err = hd.DeleteRoute(cx, pick("r", nRoutes), nil)
		case 5:
			c := cluster(pick("c", nClusters), "10.0.0.1:80")
			if rng.IntN(2) == 0 {
				c.Endpoints = append(c.Endpoints, model.Endpoint{Address: "10.0.0.2:80"})
			}
			c.ConnectTimeoutMs = uint32(rng.IntN(3)) * 100
			_, err = hd.PutCluster(cx, c, nil)
		case 6:
			_, err = hd.DeleteCluster(cx, pick("c", nClusters), nil)
		case 7, 8:
			p := model.Policy{ID: pick("p", nPolicies), RateLimits: []model.RateLimit{{Key: "ip", Rate: uint32(1 + rng.IntN(100)), Burst: 5}}}
			switch rng.IntN(3) {
			case 0:
				p.Scope.Global = true
			case 1:
				p.Scope.Cluster = pick("c", nClusters)
			default:
				p.Scope.Route = pick("r", nRoutes)
			}
			if rng.IntN(3) == 0 {
				p.RateLimits[0].Scope = model.LimitScopeCluster
			}
			_, err = hd.PutPolicy(cx, p, nil)
		case 9:
			_, err = hd.DeletePolicy(cx, pick("p", nPolicies), nil)
		case 10:
			id := pick("i", nIssuers)
			_, err = hd.PutJWTIssuer(cx, issuer(id, "https://"+id+".example/"+pick("v", 2)), nil)
		case 11:
			c := model.Consumer{ID: pick("u", nConsumers), Groups: []string{pick("g", 3)}}
			if rng.IntN(2) == 0 {
				c.Credentials.JWT = []model.JWTIdentity{{Issuer: pick("i", nIssuers), Subject: c.ID}}
			}
			if rng.IntN(2) == 0 {
				c.Credentials.APIKeys = []model.APIKeyCredential{{ID: "k", Hash: model.HashAPIKey(c.ID + pick("key", 3))}}
			}
			_, err = hd.PutConsumer(cx, c, nil, false)
		case 12:
			if rng.IntN(2) == 0 {
				_, err = hd.DeleteConsumer(cx, pick("u", nConsumers), nil)
			} else {
				_, err = hd.DeleteJWTIssuer(cx, pick("i", nIssuers), nil)
			}
		case 13:
			healthRev++
			state := admin.StateHealthy
			if rng.IntN(2) == 0 {
				state = admin.StateUnhealthy
			}
			_, err = hd.ReportHealth(cx, admin.HealthReport{Cluster: pick("c", nClusters), Endpoint: "10.0.0.1:80", State: state, Revision: healthRev})
		}
		var ae *admin.Error
		switch {
		case err == nil:
			applied[fmt.Sprint(op)]++
		case !errors.As(err, &ae):
			t.Fatalf("step %d, op %d: %v", step, op, err)
		}
		if step%10 == 9 {
			check(step)
		}
	}
	// The sequence must have exercised every kind of change, not only
	// refused ones.
	for op := range 14 {
		if applied[fmt.Sprint(op)] == 0 {
			t.Errorf("op %d never succeeded in %d steps: the sequence no longer covers it", op, steps)
		}
	}
	t.Logf("applied changes by op: %v", applied)
}

// TestBuildRecyclesFiles checks that in steady state a version is written
// into the memory of a file the publisher let go (publish.Config.Recycle,
// wired to the Builder) rather than into fresh memory: a build allocates
// well under the file's size.
func TestBuildRecyclesFiles(t *testing.T) {
	dir := t.TempDir()
	seedStore(t, filepath.Join(dir, "store"), 2000)
	s, err := New(Config{InsecureStream: true, DataDir: dir, AdminSocket: filepath.Join(dir, "admin.sock"),
		PublishAddr: "127.0.0.1:0", Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	cx := ctx(t)
	version := func(n int) {
		t.Helper()
		id := fmt.Sprintf("r%07d", n%2000)
		if _, err := (handler{s}).PutRoute(cx, model.Route{ID: id, Host: "*", Prefix: "/" + id, Cluster: "c1", TimeoutMs: uint32(n)}, nil); err != nil {
			t.Fatal(err)
		}
		if err := s.build(); err != nil {
			t.Fatal(err)
		}
	}
	// Past the publisher's delta bases, so that files come back.
	for i := range 8 {
		version(i)
	}
	const n = 10
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	before := ms.TotalAlloc
	for i := range n {
		version(100 + i)
	}
	runtime.ReadMemStats(&ms)
	if per, file := (ms.TotalAlloc-before)/n, uint64(s.lastSnap().bytes); per > file/2 {
		t.Fatalf("a version allocates %d bytes with a %d-byte file: the file went into fresh memory", per, file)
	}
}
