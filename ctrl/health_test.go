package ctrl

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/snapgate/snapgate/ctrl/admin"
	"github.com/snapgate/snapgate/ctrl/health"
	"github.com/snapgate/snapgate/ctrl/model"
	"github.com/snapgate/snapgate/fbs"
	"github.com/snapgate/snapgate/store"
)

// healthBackend is a real HTTP server on 127.0.0.1 whose /healthz answers
// 200 or 503 as set.
type healthBackend struct {
	addr    string
	failing atomic.Bool
}

func startHealthBackend(t *testing.T) *healthBackend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &healthBackend{addr: ln.Addr().String()}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if b.failing.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusOK)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return b
}

// endpointUnhealthy reads the snapshot's verdict on addr in cluster.
func endpointUnhealthy(t *testing.T, snap *fbs.Snapshot, cluster, addr string) bool {
	t.Helper()
	unhealthy, ok := endpointState(snap, cluster, addr)
	if !ok {
		t.Fatalf("snapshot %d: cluster %q has no endpoint %q", snap.Version(), cluster, addr)
	}
	return unhealthy
}

// endpointState reads addr's verdict; ok is false while the snapshot does
// not have the endpoint yet.
func endpointState(snap *fbs.Snapshot, cluster, addr string) (unhealthy, ok bool) {
	cv := snap.ClusterAt(snap.ClusterIndex([]byte(cluster)))
	for j := range cv.NumEndpoints() {
		if string(cv.Endpoint(j)) == addr {
			return cv.EndpointUnhealthy(j), true
		}
	}
	return false, false
}

// waitHealth waits up to bound for a snapshot in which addr's verdict is
// unhealthy == want, checking that versions only grow, and returns it.
func (h *harness) waitHealth(cluster, addr string, want bool, bound time.Duration) *fbs.Snapshot {
	h.t.Helper()
	deadline := time.Now().Add(bound)
	var prev uint64
	for {
		v := h.s.lastSnap().version
		if v < prev {
			h.t.Fatalf("snapshot version went back from %d to %d", prev, v)
		}
		prev = v
		snap := h.waitSnapshot(v)
		// Snapshots built before the cluster was put lack the endpoint.
		if unhealthy, ok := endpointState(snap, cluster, addr); ok && unhealthy == want {
			return snap
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("endpoint %s: no snapshot with unhealthy=%v within %v (latest %d)", addr, want, bound, v)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestProbeTakesEndpointOutAndBack: ctrl probes a real backend; when its
// health path fails, the next snapshots mark it unhealthy within
// interval × (N + 1) plus slack, and healthy again after M successes.
// The other endpoint stays routable throughout.
func TestProbeTakesEndpointOutAndBack(t *testing.T) {
	bad, good := startHealthBackend(t), startHealthBackend(t)
	h := startCtrl(t, t.TempDir(), nil)
	cx := ctx(t)
	c := cluster("api", bad.addr, good.addr)
	const interval, n, m = 100, 2, 2
	c.Health = &model.HealthCheck{Type: model.ProbeHTTP, Path: "/healthz", IntervalMs: interval, UnhealthyThreshold: n, HealthyThreshold: m}
	res, err := h.c.PutCluster(cx, c, nil)
	if err != nil {
		t.Fatal(err)
	}
	if snap := h.waitSnapshot(res.Revision); endpointUnhealthy(t, snap, "api", bad.addr) {
		t.Fatal("a new endpoint started unhealthy")
	}
	// The bound is what docs/health.md promises, with a generous slack for
	// a loaded machine; it is a deadline, not a speed measurement.
	bound := time.Duration(interval*(n+1))*time.Millisecond + 5*time.Second
	bad.failing.Store(true)
	snap := h.waitHealth("api", bad.addr, true, bound)
	if endpointUnhealthy(t, snap, "api", good.addr) {
		t.Fatal("the healthy endpoint was marked unhealthy too")
	}
	cv := snap.ClusterAt(snap.ClusterIndex([]byte("api")))
	if cv.Panic() {
		t.Fatal("panic mode without a panic threshold")
	}
	st, err := h.c.HealthStatus(cx, "api")
	if err != nil || len(st.Clusters) != 1 || st.Clusters[0].Healthy != 1 || st.Clusters[0].Endpoints[0].Healthy || st.Clusters[0].Endpoints[0].Published {
		t.Fatalf("HealthStatus = %+v, %v", st, err)
	}

	bad.failing.Store(false)
	h.waitHealth("api", bad.addr, false, time.Duration(interval*(m+1))*time.Millisecond+5*time.Second)
	text, err := h.c.ExplainHealth(cx, "", bad.addr)
	if err != nil || !strings.Contains(text, "HEALTHY since") || !strings.Contains(text, "probe revision") {
		t.Fatalf("ExplainHealth = %q, %v", text, err)
	}
}

// TestReportHealthOrderedAndDurable: external reports are ordered per
// source (stale and duplicate ones change nothing), reach the snapshot,
// and survive a restart, after which a retry is still a duplicate.
func TestReportHealthOrderedAndDurable(t *testing.T) {
	dir := t.TempDir()
	h := startCtrl(t, dir, nil)
	cx := ctx(t)
	c := cluster("api", "10.0.0.1:80", "10.0.0.2:80")
	c.Health = &model.HealthCheck{UnhealthyThreshold: 1, HealthyThreshold: 1}
	if _, err := h.c.PutCluster(cx, c, nil); err != nil {
		t.Fatal(err)
	}
	report := func(h *harness, state string, rev uint64) admin.HealthReportResult {
		t.Helper()
		res, err := h.c.ReportHealth(cx, admin.HealthReport{Cluster: "api", Endpoint: "10.0.0.1:80", State: state, Revision: rev, Source: "checker", Detail: "status 503"})
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	if r := report(h, admin.StateUnhealthy, 5); r.Result != "accepted" || r.Healthy || !r.Changed || r.Source != "external:checker" {
		t.Fatalf("first report: %+v", r)
	}
	h.waitHealth("api", "10.0.0.1:80", true, 10*time.Second)
	if r := report(h, admin.StateHealthy, 4); r.Result != "stale" || r.Healthy || r.LastRevision != 5 {
		t.Fatalf("older report: %+v", r)
	}
	if r := report(h, admin.StateHealthy, 5); r.Result != "duplicate" || r.Healthy {
		t.Fatalf("repeated report: %+v", r)
	}
	base := h.settled()
	if snap := h.waitSnapshot(base); !endpointUnhealthy(t, snap, "api", "10.0.0.1:80") {
		t.Fatal("a stale or duplicate report changed the snapshot")
	}
	before := h.s.lastSnap().version
	h.stop()

	h2 := startCtrl(t, dir, nil)
	if v := h2.s.lastSnap().version; v < before {
		t.Fatalf("restart published version %d, below %d", v, before)
	}
	if snap := h2.waitSnapshot(before); !endpointUnhealthy(t, snap, "api", "10.0.0.1:80") {
		t.Fatal("the health verdict did not survive a restart")
	}
	if r := report(h2, admin.StateHealthy, 5); r.Result != "duplicate" {
		t.Fatalf("retry after restart: %+v", r)
	}
	if r := report(h2, admin.StateHealthy, 6); r.Result != "accepted" || !r.Healthy {
		t.Fatalf("newer report after restart: %+v", r)
	}
	h2.waitHealth("api", "10.0.0.1:80", false, 10*time.Second)

	_, err := h2.c.ReportHealth(cx, admin.HealthReport{Cluster: "api", Endpoint: "10.9.9.9:80", State: admin.StateHealthy, Revision: 1})
	wantAdminErr(t, err, admin.CodeNotFound, "report.endpoint", `cluster "api" has no endpoint "10.9.9.9:80"`)
	_, err = h2.c.ReportHealth(cx, admin.HealthReport{Cluster: "web", Endpoint: "10.0.0.1:80", State: admin.StateHealthy, Revision: 1})
	wantAdminErr(t, err, admin.CodeNotFound, "report.cluster", `cluster "web" does not exist`)
	_, err = h2.c.ReportHealth(cx, admin.HealthReport{Cluster: "api", Endpoint: "10.0.0.1:80", State: admin.StateHealthy, Revision: 9, Source: "bad name"})
	wantAdminErr(t, err, admin.CodeInvalid, "report.source", "visible ASCII")
	_, err = h2.c.ReportHealth(cx, admin.HealthReport{Cluster: "api", Endpoint: "10.0.0.1:80", State: admin.StateHealthy, Revision: 9, Detail: "a\nb"})
	wantAdminErr(t, err, admin.CodeInvalid, "report.detail", "control character")
	// Queries about what does not exist say so in the operator's terms,
	// without the tracker's wording ("unknown endpoint" for a cluster).
	for _, c := range []struct {
		err          error
		field, whole string
	}{
		{second(h2.c.HealthStatus(cx, "web")), "id", `cluster "web" does not exist`},
		{second(h2.c.ExplainHealth(cx, "web", "10.0.0.1:80")), "id", `cluster "web" does not exist`},
		{second(h2.c.ExplainHealth(cx, "api", "10.9.9.9:80")), "endpoint", `cluster "api" has no endpoint "10.9.9.9:80"`},
		{second(h2.c.ExplainHealth(cx, "", "10.9.9.9:80")), "endpoint", `no cluster has endpoint "10.9.9.9:80"`},
	} {
		wantAdminErr(t, c.err, admin.CodeNotFound, c.field, c.whole)
		if msg := c.err.(*admin.Error).Message; msg != c.whole {
			t.Errorf("message %q, want exactly %q", msg, c.whole)
		}
	}
}

// second returns the error of a two-result call.
func second[T any](_ T, err error) error { return err }

// TestHealthOnlyChangeGetsItsOwnRevision drives the case the health marker
// exists for: the flush of a health change precedes a build that does not
// carry it yet (the publication cap holds it back), so when it is
// published the store has no newer revision; ctrl writes one, and the
// version still grows.
func TestHealthOnlyChangeGetsItsOwnRevision(t *testing.T) {
	dir := t.TempDir()
	s := buildWithHeldBackHealth(t, dir)
	first := s.lastSnap().version
	if first != s.store.Revision() {
		t.Fatalf("build took version %d, store at %d", first, s.store.Revision())
	}
	snap := openLatest(t, s)
	if endpointUnhealthy(t, snap, "api", "10.0.0.1:80") {
		t.Skip("the publication cap did not hold the change back (a slow machine); nothing to test")
	}
	select {
	case <-s.health.Changes():
	case <-time.After(10 * time.Second):
		t.Fatal("the held-back health change was not published")
	}
	if err := s.build(); err != nil {
		t.Fatal(err)
	}
	snap = openLatest(t, s)
	if !endpointUnhealthy(t, snap, "api", "10.0.0.1:80") || snap.Version() <= first || snap.ParentVersion() != first {
		t.Fatalf("after publication: version %d (parent %d, previous %d), unhealthy %v", snap.Version(), snap.ParentVersion(), first, endpointUnhealthy(t, snap, "api", "10.0.0.1:80"))
	}
	if d, err := s.store.Get(kindMeta, healthMarkerID); err != nil || d.Revision != snap.Version() {
		t.Fatalf("health marker %+v, %v; want it at revision %d", d, err, snap.Version())
	}
	// Nothing changed since: no build, no version.
	if err := s.build(); err != nil || s.lastSnap().version != snap.Version() {
		t.Fatalf("an idle build moved the version to %d (%v)", s.lastSnap().version, err)
	}
}

func drain(c <-chan struct{}) {
	select {
	case <-c:
	default:
	}
}

func openLatest(t *testing.T, s *Server) *fbs.Snapshot {
	t.Helper()
	_, data, err := s.store.LatestSnapshot()
	if err != nil {
		t.Fatal(err)
	}
	snap, err := fbs.Open(data)
	if err != nil {
		t.Fatal(err)
	}
	return snap
}

// TestClusterCacheReusesUnchanged: a build converts only the clusters
// whose document or published health changed.
func TestClusterCacheReusesUnchanged(t *testing.T) {
	m := newState(1)
	for i := range 3 {
		id := fmt.Sprintf("c%d", i)
		m.clusters[id] = versioned[model.Cluster]{doc: cluster(id, "10.0.0.1:80", "10.0.0.2:80"), revision: uint64(i + 1)}
	}
	views := map[string]*health.ClusterRouting{}
	for id := range m.clusters {
		views[id] = &health.ClusterRouting{Cluster: id, Total: 2, Healthy: 2, Endpoints: []health.EndpointRouting{
			{Address: "10.0.0.1:80", Healthy: true, Routable: true}, {Address: "10.0.0.2:80", Healthy: true, Routable: true}}}
	}
	r := &health.Routing{Generation: 1, Clusters: views}
	_, cc := clusterCache(nil).convert(&m, r)
	if cc.healthChanged(&m, r) {
		t.Fatal("unchanged views reported as changed")
	}
	down := &health.ClusterRouting{Cluster: "c1", Total: 2, Healthy: 1, Panic: false, SlowStart: time.Minute, Endpoints: []health.EndpointRouting{
		{Address: "10.0.0.2:80", Healthy: true, Routable: true, RecoveredAt: time.UnixMilli(1234)}, {Address: "10.0.0.1:80"}}}
	r2 := &health.Routing{Generation: 2, Clusters: map[string]*health.ClusterRouting{"c0": views["c0"], "c1": down, "c2": views["c2"]}}
	if !cc.healthChanged(&m, r2) {
		t.Fatal("a changed view was not noticed")
	}
	out, next := cc.convert(&m, r2)
	for _, c := range out {
		reused := &c.Endpoints[0] == &cc[c.Name].out.Endpoints[0]
		if reused != (c.Name != "c1") {
			t.Errorf("cluster %s: conversion reused %v", c.Name, reused)
		}
	}
	got := next["c1"].out
	// The view lists the endpoints in another order: matched by address.
	if !got.Endpoints[0].Unhealthy || got.Endpoints[1].Unhealthy || got.Endpoints[1].RecoveredAtMs != 1234 || got.SlowStartMs != 60000 {
		t.Fatalf("c1 converted as %+v", got)
	}
}

// newIdleWith is newIdle with a configuration change and a data dir.
func newIdleWith(t *testing.T, dir string, mod func(*Config)) *Server {
	t.Helper()
	cfg := Config{InsecureStream: true, DataDir: dir, AdminSocket: dir + "/admin.sock", PublishAddr: "127.0.0.1:0",
		Logger: slog.New(slog.DiscardHandler)}
	mod(&cfg)
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// BenchmarkHealthOnlyBuild: at 10k routes, a build after one endpoint's
// health flipped reuses every route shard (the routes did not change), so
// it costs the root and clusters, not a table rebuild. "route-edit" (one
// shard re-encoded) and "full" (fbs.Build) are the baselines.
func BenchmarkHealthOnlyBuild(b *testing.B) {
	m := newState(1)
	views := map[string]*health.ClusterRouting{}
	for i := range 100 {
		id := fmt.Sprintf("c%d", i)
		m.clusters[id] = versioned[model.Cluster]{doc: cluster(id, "10.0.0.1:80", "10.0.0.2:80"), revision: 1}
	}
	for i := range 10_000 {
		id := fmt.Sprintf("r%d", i)
		routes.put(&m, versioned[model.Route]{doc: model.Route{ID: id, Host: "*", Prefix: "/" + id, Cluster: fmt.Sprintf("c%d", i%100)}})
	}
	flip := func(i int) *health.Routing {
		up := i%2 == 0
		views["c7"] = &health.ClusterRouting{Cluster: "c7", Endpoints: []health.EndpointRouting{
			{Address: "10.0.0.1:80", Healthy: up, Routable: up}, {Address: "10.0.0.2:80", Healthy: true, Routable: true}}}
		return &health.Routing{Generation: uint64(i), Clusters: views}
	}
	var cc clusterCache
	var builder fbs.Builder
	cs, cc := cc.convert(&m, flip(0))
	if _, err := builder.Build(m.fbsState(1, 0, 0, cs)); err != nil {
		b.Fatal(err)
	}
	b.Run("health-flip", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			var cs []fbs.Cluster
			cs, cc = cc.convert(&m, flip(i+1))
			if _, err := builder.Build(m.fbsState(uint64(i+2), 1, 0, cs)); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("route-edit", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			routes.put(&m, versioned[model.Route]{doc: model.Route{ID: "r5", Host: "*", Prefix: "/r5", Cluster: "c5", TimeoutMs: uint32(i%2 + 1)}})
			cs, _ := cc.convert(&m, flip(0))
			if _, err := builder.Build(m.fbsState(uint64(i+2), 1, 0, cs)); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("full", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			cs, _ := cc.convert(&m, flip(i))
			if _, err := fbs.Build(m.fbsState(uint64(i+2), 1, 0, cs)); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// TestHealthOfClusterThatNoLongerValidates: a stored cluster that breaks
// today's rules is kept, but health does not track it; asking about it
// says so, rather than that it does not exist.
func TestHealthOfClusterThatNoLongerValidates(t *testing.T) {
	dir := t.TempDir()
	st, err := store.OpenPebble(filepath.Join(dir, "store"), store.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := st.Apply(store.Mutation{Kind: kindCluster, ID: "old", Body: []byte(`{"id":"old","endpoints":[{"address":"10.0.0.1"}]}`)}); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	h := startCtrl(t, dir, nil)
	cx := context.Background()
	if _, err := h.c.GetCluster(cx, "old"); err != nil {
		t.Fatalf("the stored cluster was not loaded: %v", err)
	}
	_, err = h.c.HealthStatus(cx, "old")
	wantAdminErr(t, err, admin.CodeNotFound, "id", `cluster "old" exists but its health is not tracked: its stored document no longer validates`)
	_, err = h.c.ExplainHealth(cx, "old", "10.0.0.1")
	wantAdminErr(t, err, admin.CodeNotFound, "id", `cluster "old" exists but its health is not tracked`)
	_, err = h.c.ExplainHealth(cx, "old", "10.0.0.2:80")
	wantAdminErr(t, err, admin.CodeNotFound, "endpoint", `cluster "old" has no endpoint "10.0.0.2:80"`)
}

// TestLostVersionNotReusedWithOtherHealth: a version published with health
// that lags the durable health (the publication cap held a change back) and
// lost to a crash before its commit must not come back after the restart
// under the same number with other bytes: edges holding it would be told
// they diverged. The restart builds on a revision of its own instead.
func TestLostVersionNotReusedWithOtherHealth(t *testing.T) {
	dir := t.TempDir()
	s := buildWithHeldBackHealth(t, dir)
	lost := openLatest(t, s)
	if endpointUnhealthy(t, lost, "api", "10.0.0.1:80") {
		t.Skip("the publication cap did not hold the change back (a slow machine); nothing to test")
	}
	lostBytes := bytes.Clone(lost.Bytes())
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	unstore(t, dir, lost.Version())

	s2 := newIdleWith(t, dir, func(c *Config) { c.Health.MaxVersionsPerSecond = 1 })
	got := s2.lastSnap()
	if got.version == lost.Version() {
		data, err := s2.store.Snapshot(got.version)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(data, lostBytes) {
			t.Fatalf("restart published v%d again with other bytes (edges holding the lost v%d are diverged)", got.version, lost.Version())
		}
		return
	}
	if got.version < lost.Version() {
		t.Fatalf("restart published v%d, below the lost v%d edges may hold", got.version, lost.Version())
	}
}

// buildWithHeldBackHealth starts an idle ctrl in dir whose health cap is
// one version a second, puts cluster "api" (health-checked, two endpoints),
// reports 10.0.0.1:80 unhealthy right after the cluster's publication
// fired the cap, puts a route and builds: the build carries the route
// while the cap usually still holds the health change back.
func buildWithHeldBackHealth(t *testing.T, dir string) *Server {
	t.Helper()
	s := newIdleWith(t, dir, func(c *Config) { c.Health.MaxVersionsPerSecond = 1 })
	hd := handler{s}
	cx := context.Background()
	c := cluster("api", "10.0.0.1:80", "10.0.0.2:80")
	c.Health = &model.HealthCheck{UnhealthyThreshold: 1, HealthyThreshold: 1}
	if _, err := hd.PutCluster(cx, c, nil); err != nil {
		t.Fatal(err)
	}
	// The cluster write published (and fired the one-per-second gate).
	drain(s.health.Changes())
	if _, err := hd.ReportHealth(cx, admin.HealthReport{Cluster: "api", Endpoint: "10.0.0.1:80", State: admin.StateUnhealthy, Revision: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := hd.PutRoute(cx, model.Route{ID: "r", Host: "*", Prefix: "/", Cluster: "api"}, nil); err != nil {
		t.Fatal(err)
	}
	if err := s.build(); err != nil {
		t.Fatal(err)
	}
	return s
}
