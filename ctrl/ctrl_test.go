package ctrl

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/snapgate/snapgate/ctrl/admin"
	"github.com/snapgate/snapgate/ctrl/health"
	"github.com/snapgate/snapgate/ctrl/model"
	"github.com/snapgate/snapgate/fbs"
	"github.com/snapgate/snapgate/store"
)

// buildCounter is a slog handler that counts "snapshot built" records, so
// tests can see how many snapshots a burst produced without a test-only hook.
type buildCounter struct{ n *atomic.Int64 }

func (h buildCounter) Enabled(context.Context, slog.Level) bool { return true }
func (h buildCounter) Handle(_ context.Context, r slog.Record) error {
	if r.Message == "snapshot built" {
		h.n.Add(1)
	}
	return nil
}
func (h buildCounter) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h buildCounter) WithGroup(string) slog.Handler      { return h }

type harness struct {
	t      *testing.T
	s      *Server
	c      *admin.Client
	builds *atomic.Int64
	stop   func()
}

// startCtrl runs a ctrl on dataDir until the returned harness is stopped
// (also at test cleanup).
func startCtrl(t *testing.T, dataDir string, mod func(*Config)) *harness {
	t.Helper()
	builds := new(atomic.Int64)
	cfg := Config{InsecureStream: true,
		DataDir:     dataDir,
		AdminSocket: filepath.Join(dataDir, "admin.sock"),
		PublishAddr: "127.0.0.1:0",
		Logger:      slog.New(buildCounter{builds}),
	}
	if mod != nil {
		mod(&cfg)
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	c, err := admin.Dial(s.AdminSocket())
	if err != nil {
		cancel()
		<-done
		t.Fatal(err)
	}
	var once sync.Once
	h := &harness{t: t, s: s, c: c, builds: builds}
	h.stop = func() {
		once.Do(func() {
			c.Close()
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run: %v", err)
				}
			case <-time.After(10 * time.Second):
				t.Error("Run did not return after cancel")
			}
			if _, err := os.Lstat(cfg.AdminSocket); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("admin socket still present after Run returned: %v", err)
			}
		})
	}
	t.Cleanup(h.stop)
	return h
}

// settled waits until ctrl is quiet: the store revision and the latest
// snapshot stayed put for a window longer than a health flush plus a
// debounce, so background health writes of earlier cluster writes are
// done. It returns the store revision.
func (h *harness) settled() uint64 {
	h.t.Helper()
	quiet := 3*h.s.cfg.Debounce + 100*time.Millisecond
	deadline := time.Now().Add(10 * time.Second)
	rev, ver, since := h.s.store.Revision(), h.s.lastSnap().version, time.Now()
	for time.Since(since) < quiet {
		if time.Now().After(deadline) {
			h.t.Fatal("ctrl did not settle within 10s")
		}
		time.Sleep(5 * time.Millisecond)
		if r, v := h.s.store.Revision(), h.s.lastSnap().version; r != rev || v != ver {
			rev, ver, since = r, v, time.Now()
		}
	}
	return rev
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return c
}

// waitSnapshot waits until the latest built snapshot has version v or
// above and returns it, opened. Above: the health tracker writes its
// documents to the store too, so a build may take a later revision than
// the write it waits for (docs/health.md).
func (h *harness) waitSnapshot(v uint64) *fbs.Snapshot {
	h.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for h.s.lastSnap().version < v {
		if time.Now().After(deadline) {
			h.t.Fatalf("no snapshot of version %d within 10s; latest is %d", v, h.s.lastSnap().version)
		}
		time.Sleep(2 * time.Millisecond)
	}
	v = h.s.lastSnap().version
	data, err := h.s.store.Snapshot(v)
	if err != nil {
		h.t.Fatalf("stored snapshot %d: %v", v, err)
	}
	snap, err := fbs.Open(data)
	if err != nil {
		h.t.Fatalf("fbs.Open(snapshot %d): %v", v, err)
	}
	if snap.Version() != v {
		h.t.Fatalf("snapshot stored as %d says version %d", v, snap.Version())
	}
	// The publisher may already carry a later build (health keeps building).
	if pv := h.s.pub.LatestVersion(); pv < v {
		h.t.Fatalf("publisher latest = %d, want at least %d", pv, v)
	}
	return snap
}

func cluster(id string, addrs ...string) model.Cluster {
	c := model.Cluster{ID: id}
	for _, a := range addrs {
		c.Endpoints = append(c.Endpoints, model.Endpoint{Address: a})
	}
	return c
}

func u64(v uint64) *uint64 { return &v }

func wantAdminErr(t *testing.T, err error, code, field, msg string) {
	t.Helper()
	var ae *admin.Error
	if !errors.As(err, &ae) {
		t.Fatalf("error = %v, want an *admin.Error %s on %q", err, code, field)
	}
	if ae.Code != code || ae.Field != field || !strings.Contains(ae.Message, msg) {
		t.Fatalf("error = %+v, want code %q field %q message containing %q", ae, code, field, msg)
	}
}

func TestEmptyConfigPublishesEmptySnapshot(t *testing.T) {
	h := startCtrl(t, t.TempDir(), nil)
	snap := h.waitSnapshot(1)
	if snap.NumRoutes() != 0 || snap.NumClusters() != 0 || snap.ParentVersion() != 0 {
		t.Fatalf("empty snapshot: %d routes, %d clusters, parent %d", snap.NumRoutes(), snap.NumClusters(), snap.ParentVersion())
	}
	st, err := h.c.Status(ctx(t))
	if err != nil || st.SnapshotVersion != 1 || st.StoreRevision != 1 || st.Routes != 0 || st.SnapshotBytes == 0 || st.SnapshotBuiltAt.IsZero() {
		t.Fatalf("Status = %+v, %v", st, err)
	}
}

func TestPutClusterAndRouteBuildsMatchingSnapshot(t *testing.T) {
	h := startCtrl(t, t.TempDir(), nil)
	cx := ctx(t)
	cres, err := h.c.PutCluster(cx, cluster("backend", "10.0.0.1:8080", "10.0.0.2:8080"), u64(0))
	if err != nil {
		t.Fatal(err)
	}
	res, err := h.c.PutRoute(cx, model.Route{ID: "api", Host: "example.com", Prefix: "/api", Cluster: "backend", TimeoutMs: 1500}, u64(0))
	if err != nil {
		t.Fatal(err)
	}
	// A document is created at the version of its revision.
	if res.Version != res.Revision || res.Revision <= cres.Revision || res.Kind != "route" {
		t.Fatalf("PutRoute result = %+v", res)
	}
	snap := h.waitSnapshot(res.Revision)
	var m fbs.Match
	if !snap.Match([]byte("example.com"), []byte("/api/users?x=1"), &m) {
		t.Fatal("route did not match /api/users")
	}
	if string(m.ID()) != "api" || m.TimeoutMs() != 1500 {
		t.Fatalf("matched route %q timeout %d", m.ID(), m.TimeoutMs())
	}
	cv := snap.ClusterAt(m.ClusterIndex())
	if string(cv.Name()) != "backend" || cv.NumEndpoints() != 2 || string(cv.Endpoint(1)) != "10.0.0.2:8080" {
		t.Fatalf("cluster %q with %d endpoints", cv.Name(), cv.NumEndpoints())
	}
	if snap.Match([]byte("other.com"), []byte("/api"), &m) {
		t.Fatal("route matched another host")
	}

	got, err := h.c.GetRoute(cx, "api")
	if err != nil || got.Version != res.Version || got.Route.Prefix != "/api" {
		t.Fatalf("GetRoute = %+v, %v", got, err)
	}
	l, err := h.c.ListClusters(cx)
	if err != nil || len(l.Items) != 1 || l.Items[0].ID != "backend" || l.Revision != res.Revision {
		t.Fatalf("ListClusters = %+v, %v", l, err)
	}
	st, err := h.c.Status(cx)
	if err != nil || st.SnapshotVersion < res.Revision || st.Routes != 1 || st.Clusters != 1 || st.StoreRevision < st.SnapshotVersion || st.ConfigRevision != res.Revision {
		t.Fatalf("Status = %+v, %v", st, err)
	}
}

func TestStaleExpectedVersionChangesNothing(t *testing.T) {
	h := startCtrl(t, t.TempDir(), nil)
	cx := ctx(t)
	r1, err := h.c.PutCluster(cx, cluster("c", "10.0.0.1:80"), u64(0))
	if err != nil {
		t.Fatal(err)
	}
	r2, err := h.c.PutCluster(cx, cluster("c", "10.0.0.2:80"), u64(r1.Version))
	if err != nil || r2.Version != r1.Version+1 {
		t.Fatalf("PutCluster at version %d = %+v, %v", r1.Version, r2, err)
	}
	h.waitSnapshot(r2.Revision)
	base := h.settled()
	built := h.s.lastSnap().version
	builds := h.builds.Load()

	v := r2.Version
	_, err = h.c.PutCluster(cx, cluster("c", "10.0.0.3:80"), u64(r1.Version))
	wantAdminErr(t, err, admin.CodeConflict, "expected_version", fmt.Sprintf(`cluster "c" is at version %d, expected %d`, v, r1.Version))
	_, err = h.c.PutCluster(cx, cluster("c", "10.0.0.3:80"), u64(0))
	wantAdminErr(t, err, admin.CodeConflict, "expected_version", fmt.Sprintf("already exists at version %d", v))
	_, err = h.c.DeleteCluster(cx, "c", u64(v+5))
	wantAdminErr(t, err, admin.CodeConflict, "expected_version", fmt.Sprintf("is at version %d, expected %d", v, v+5))
	_, err = h.c.PutRoute(cx, model.Route{ID: "r", Host: "*", Prefix: "/", Cluster: "c"}, u64(4))
	wantAdminErr(t, err, admin.CodeConflict, "expected_version", `route "r" does not exist, expected version 4`)

	if rev := h.s.store.Revision(); rev != base {
		t.Fatalf("store revision moved from %d to %d on rejected writes", base, rev)
	}
	got, err := h.c.GetCluster(cx, "c")
	if err != nil || got.Version != v || got.Cluster.Endpoints[0].Address != "10.0.0.2:80" {
		t.Fatalf("GetCluster after conflicts = %+v, %v", got, err)
	}
	// Give a (wrongly) poked recompute loop time to act, then check nothing was built.
	time.Sleep(3 * h.s.cfg.Debounce)
	if v := h.s.lastSnap().version; v != built || h.builds.Load() != builds {
		t.Fatalf("snapshot moved to %d (%d builds, had %d) after rejected writes", v, h.builds.Load(), builds)
	}
}

func TestCrossDocumentRules(t *testing.T) {
	h := startCtrl(t, t.TempDir(), nil)
	cx := ctx(t)
	_, err := h.c.PutRoute(cx, model.Route{ID: "r1", Host: "*", Prefix: "/", Cluster: "missing"}, nil)
	wantAdminErr(t, err, admin.CodeInvalid, "cluster", `cluster "missing" does not exist`)

	cres, err := h.c.PutCluster(cx, cluster("c", "10.0.0.1:80"), nil)
	if err != nil {
		t.Fatal(err)
	}
	r1 := map[string]admin.Result{}
	for _, id := range []string{"r1", "r2"} {
		if r1[id], err = h.c.PutRoute(cx, model.Route{ID: id, Host: "a.example", Prefix: "/" + id, Cluster: "c"}, nil); err != nil {
			t.Fatal(err)
		}
	}
	_, err = h.c.PutRoute(cx, model.Route{ID: "r3", Host: "a.example", Prefix: "/r1", Cluster: "c"}, nil)
	wantAdminErr(t, err, admin.CodeConflict, "prefix", `route "r1" already matches host "a.example" prefix "/r1" with the same methods and headers`)
	// Exact-path routes conflict on their path, and the error says so.
	if _, err := h.c.PutRoute(cx, model.Route{ID: "p1", Host: "*", Path: "/exact", Cluster: "c"}, nil); err != nil {
		t.Fatal(err)
	}
	_, err = h.c.PutRoute(cx, model.Route{ID: "p2", Host: "*", Path: "/exact", Cluster: "c"}, nil)
	wantAdminErr(t, err, admin.CodeConflict, "path", `route "p1" already matches host "*" path "/exact" with the same methods and headers; two routes cannot share host, path, methods and headers`)
	if _, err := h.c.DeleteRoute(cx, "p1", nil); err != nil {
		t.Fatal(err)
	}
	// The same route may keep its own (host, prefix).
	if _, err := h.c.PutRoute(cx, model.Route{ID: "r1", Host: "a.example", Prefix: "/r1", Cluster: "c", TimeoutMs: 9}, u64(r1["r1"].Version)); err != nil {
		t.Fatal(err)
	}

	_, err = h.c.DeleteCluster(cx, "c", nil)
	wantAdminErr(t, err, admin.CodeInvalid, "id", `cluster "c" is used by routes "r1", "r2"`)
	_, err = h.c.PutRoute(cx, model.Route{ID: "bad", Host: "A", Prefix: "/x/../y", Cluster: "c"}, nil)
	wantAdminErr(t, err, admin.CodeInvalid, "host", "prefix:") // first field named, every problem listed
	var ae *admin.Error
	if errors.As(err, &ae) && strings.HasPrefix(ae.Message, "host:") {
		t.Fatalf("message repeats the field: %q", ae.Message)
	}
	_, err = h.c.PutCluster(cx, cluster("bad", "10.0.0.1:0"), nil)
	wantAdminErr(t, err, admin.CodeInvalid, "endpoints[0].address", "port")
	if errors.As(err, &ae) && strings.Contains(ae.Message, "endpoints[0].address") {
		t.Fatalf("message repeats the field: %q", ae.Message)
	}
	_, err = h.c.DeleteRoute(cx, "nope", nil)
	wantAdminErr(t, err, admin.CodeNotFound, "id", `route "nope" does not exist`)

	for _, id := range []string{"r1", "r2"} {
		res, err := h.c.DeleteRoute(cx, id, nil)
		if err != nil || res.ID != id {
			t.Fatalf("DeleteRoute(%s) = %+v, %v", id, res, err)
		}
	}
	res, err := h.c.DeleteCluster(cx, "c", u64(cres.Version))
	if err != nil || res.Version != cres.Version {
		t.Fatalf("DeleteCluster = %+v, %v", res, err)
	}
	snap := h.waitSnapshot(res.Revision)
	if snap.NumRoutes() != 0 || snap.NumClusters() != 0 {
		t.Fatalf("after deleting everything: %d routes, %d clusters", snap.NumRoutes(), snap.NumClusters())
	}
	if _, err := h.c.GetRoute(cx, "r1"); !admin.IsCode(err, admin.CodeNotFound) {
		t.Fatalf("GetRoute after delete: %v", err)
	}
}

func TestBurstIsCoalesced(t *testing.T) {
	h := startCtrl(t, t.TempDir(), func(c *Config) {
		// Generous windows keep the test meaningful on a loaded machine,
		// where one fsync can take longer than the default 20ms.
		c.Debounce = 100 * time.Millisecond
		c.MaxDelay = time.Second
	})
	cx := ctx(t)
	if _, err := h.c.PutCluster(cx, cluster("c", "10.0.0.1:80"), nil); err != nil {
		t.Fatal(err)
	}
	h.waitSnapshot(2)
	base := h.settled()
	before := h.builds.Load()

	const writers, each = 4, 25
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := admin.Dial(h.s.AdminSocket())
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			for i := range each {
				id := fmt.Sprintf("r%d-%d", w, i)
				if _, err := c.PutRoute(cx, model.Route{ID: id, Host: "*", Prefix: "/" + id, Cluster: "c"}, u64(0)); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	rev := h.s.store.Revision()
	if rev != base+writers*each {
		t.Fatalf("store revision %d, want %d", rev, base+writers*each)
	}
	snap := h.waitSnapshot(rev)
	if snap.NumRoutes() != writers*each {
		t.Fatalf("last snapshot has %d routes, want %d", snap.NumRoutes(), writers*each)
	}
	var m fbs.Match
	for w := range writers {
		for i := range each {
			id := fmt.Sprintf("r%d-%d", w, i)
			if !snap.Match([]byte("any.host"), []byte("/"+id+"/x"), &m) || string(m.ID()) != id {
				t.Fatalf("route %s missing from the last snapshot", id)
			}
		}
	}
	if n := h.builds.Load() - before; n > 20 {
		t.Fatalf("%d writes produced %d snapshots; want them coalesced", writers*each, n)
	} else {
		t.Logf("%d writes -> %d snapshots", writers*each, n)
	}
}

func TestRestartKeepsVersions(t *testing.T) {
	dir := t.TempDir()
	h := startCtrl(t, dir, nil)
	cx := ctx(t)
	if _, err := h.c.PutCluster(cx, cluster("c", "10.0.0.1:80"), nil); err != nil {
		t.Fatal(err)
	}
	res, err := h.c.PutRoute(cx, model.Route{ID: "r", Host: "*", Prefix: "/", Cluster: "c"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	first := h.waitSnapshot(res.Revision)
	firstBytes := bytes.Clone(first.Bytes())
	h.stop()
	served := h.s.lastSnap().version

	h2 := startCtrl(t, dir, nil)
	again := h2.waitSnapshot(res.Revision)
	if !bytes.Equal(again.Bytes(), firstBytes) {
		t.Fatal("restart republished different bytes for the same version")
	}
	if h2.builds.Load() != 0 {
		t.Fatalf("restart rebuilt a current snapshot (%d builds)", h2.builds.Load())
	}
	got, err := h2.c.GetRoute(cx, "r")
	if err != nil || got.Version != res.Version || got.Revision != res.Revision {
		t.Fatalf("GetRoute after restart = %+v, %v", got, err)
	}
	res2, err := h2.c.PutRoute(cx, model.Route{ID: "r2", Host: "*", Prefix: "/two", Cluster: "c"}, u64(0))
	if err != nil {
		t.Fatal(err)
	}
	if res2.Revision <= res.Revision {
		t.Fatalf("write after restart got revision %d, not above %d", res2.Revision, res.Revision)
	}
	// The parent is the version served before the restart: the route's
	// revision, or a later one when the endpoint's first health write
	// landed before that build.
	next := h2.waitSnapshot(res2.Revision)
	if next.ParentVersion() != served || next.NumRoutes() != 2 {
		t.Fatalf("snapshot after restart: parent %d (want %d), %d routes", next.ParentVersion(), served, next.NumRoutes())
	}
}

// Status compares the snapshot version with the configuration revision
// (docs/operations.md, "Fleet status"). After a restart that revision is
// the latest model change's, a delete included, not the store's, which
// health-only revisions move too.
func TestRestartKeepsConfigRevision(t *testing.T) {
	dir := t.TempDir()
	h := startCtrl(t, dir, nil)
	cx := ctx(t)
	if _, err := h.c.PutCluster(cx, cluster("c", "10.0.0.1:80"), nil); err != nil {
		t.Fatal(err)
	}
	if _, err := h.c.PutRoute(cx, model.Route{ID: "r", Host: "*", Prefix: "/", Cluster: "c"}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := h.c.PutRoute(cx, model.Route{ID: "gone", Host: "*", Prefix: "/gone", Cluster: "c"}, nil); err != nil {
		t.Fatal(err)
	}
	del, err := h.c.DeleteRoute(cx, "gone", nil)
	if err != nil {
		t.Fatal(err)
	}
	h.waitSnapshot(del.Revision)
	h.settled()
	// A health-only revision after the latest snapshot, as advanceRevision
	// records when a published health change comes after the latest build;
	// a stop can come before the build that would take it.
	h.s.wmu.Lock()
	healthRev, err := h.s.advanceRevision(0)
	h.s.wmu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	h.stop()
	if served := h.s.lastSnap().version; served >= healthRev {
		t.Fatalf("the snapshot in service (v%d) is not behind the health-only revision %d", served, healthRev)
	}

	h2 := startCtrl(t, dir, nil)
	st, err := h2.c.Status(cx)
	if err != nil {
		t.Fatal(err)
	}
	if st.ConfigRevision != del.Revision || st.SnapshotVersion < st.ConfigRevision {
		t.Fatalf("status after restart: snapshot v%d, configuration revision %d; want the delete's revision %d", st.SnapshotVersion, st.ConfigRevision, del.Revision)
	}
	res, err := h2.c.PutRoute(cx, model.Route{ID: "r2", Host: "*", Prefix: "/two", Cluster: "c"}, u64(0))
	if err != nil {
		t.Fatal(err)
	}
	if st, err := h2.c.Status(cx); err != nil || st.ConfigRevision != res.Revision {
		t.Fatalf("status after a write: configuration revision %d, want %d (%v)", st.ConfigRevision, res.Revision, err)
	}
}

// A version is published before it is stored (recompute.go), so a crash
// can lose the latest version that edges already have. The restart builds
// the same content on the same (stored) parent at a revision of its own,
// above the lost one: edges holding it are behind, never diverged
// (TestLostVersionNotReusedWithOtherHealth has the case where the content
// differs).
func TestPublishedVersionLostToCrashIsSuperseded(t *testing.T) {
	dir := t.TempDir()
	h := startCtrl(t, dir, nil)
	cx := ctx(t)
	if _, err := h.c.PutCluster(cx, cluster("c", "10.0.0.1:80"), nil); err != nil {
		t.Fatal(err)
	}
	h.settled() // the endpoint's first health writes are done
	res, err := h.c.PutRoute(cx, model.Route{ID: "r", Host: "*", Prefix: "/", Cluster: "c"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	lost := h.waitSnapshot(res.Revision)
	lostBytes := bytes.Clone(lost.Bytes())
	if rev := h.settled(); lost.Version() != res.Revision || rev != res.Revision {
		t.Fatalf("route put at revision %d built v%d, store at %d: the write was not the last", res.Revision, lost.Version(), rev)
	}
	h.stop()

	snapDir := unstore(t, dir, lost.Version())

	h2 := startCtrl(t, dir, nil)
	again := h2.waitSnapshot(lost.Version())
	lostSnap, err := fbs.Open(lostBytes)
	if err != nil {
		t.Fatal(err)
	}
	if again.Version() <= lost.Version() || again.ParentVersion() != lost.ParentVersion() || again.ContentHash() != lostSnap.ContentHash() {
		t.Fatalf("restart built v%d (parent %d, content %x), edges hold v%d (parent %d, content %x)",
			again.Version(), again.ParentVersion(), again.ContentHash(), lost.Version(), lost.ParentVersion(), lostSnap.ContentHash())
	}
	if n := h2.builds.Load(); n != 1 {
		t.Fatalf("restart built %d snapshots, want 1 (the lost content)", n)
	}
	if leftovers, _ := filepath.Glob(filepath.Join(snapDir, "*.tmp")); len(leftovers) != 0 {
		t.Fatalf("temp files after restart: %v", leftovers)
	}
}

func TestRestartBuildsWhenSnapshotIsBehind(t *testing.T) {
	dir := t.TempDir()
	h := startCtrl(t, dir, nil)
	h.waitSnapshot(1)
	h.stop()
	// A write that committed but whose snapshot was never built (a crash
	// between the two) is picked up at start.
	s, err := New(Config{DataDir: dir, AdminSocket: filepath.Join(dir, "a.sock"), PublishAddr: "127.0.0.1:0", Logger: slog.New(slog.DiscardHandler), InsecureStream: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := (handler{s}).PutCluster(context.Background(), cluster("c", "10.0.0.1:80"), nil); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	h2 := startCtrl(t, dir, nil)
	snap := h2.waitSnapshot(2)
	if snap.ParentVersion() != 1 || snap.NumClusters() != 1 {
		t.Fatalf("snapshot at start: parent %d, %d clusters", snap.ParentVersion(), snap.NumClusters())
	}
}

func TestSameDocumentsSameContent(t *testing.T) {
	a := startCtrl(t, t.TempDir(), nil)
	b := startCtrl(t, t.TempDir(), nil)
	cx := ctx(t)
	type write func(c *admin.Client) (admin.Result, error)
	writes := []write{
		func(c *admin.Client) (admin.Result, error) {
			return c.PutCluster(cx, cluster("web", "10.0.0.1:80", "[2001:db8::1]:8080"), nil)
		},
		func(c *admin.Client) (admin.Result, error) {
			return c.PutCluster(cx, cluster("api", "api.internal:9000"), nil)
		},
		func(c *admin.Client) (admin.Result, error) {
			return c.PutRoute(cx, model.Route{ID: "home", Host: "*", Prefix: "/", Cluster: "web"}, nil)
		},
		func(c *admin.Client) (admin.Result, error) {
			return c.PutRoute(cx, model.Route{ID: "v1", Host: "example.com", Prefix: "/v1/", Cluster: "api", TimeoutMs: 2000}, nil)
		},
		func(c *admin.Client) (admin.Result, error) { return c.DeleteRoute(cx, "home", nil) },
	}
	for i, w := range writes {
		ra, err := w(a.c)
		if err != nil {
			t.Fatalf("write %d on a: %v", i, err)
		}
		rb, err := w(b.c)
		if err != nil {
			t.Fatalf("write %d on b: %v", i, err)
		}
		// Revisions may differ: each tracker writes its health documents
		// when its own flush timer fires. The content may not.
		sa, sb := a.waitSnapshot(ra.Revision), b.waitSnapshot(rb.Revision)
		if sa.ContentHash() != sb.ContentHash() {
			t.Fatalf("write %d: snapshots %d and %d differ in content", i, sa.Version(), sb.Version())
		}
	}
}

func TestConfigErrors(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{AdminSocket: "x", PublishAddr: "y"}, "config: DataDir (--data-dir) is empty"},
		{Config{DataDir: dir, PublishAddr: "y"}, "config: AdminSocket (--admin-socket) is empty"},
		{Config{DataDir: dir, AdminSocket: "x"}, "config: PublishAddr (--stream-listen) is empty"},
		{Config{DataDir: dir, AdminSocket: "x", PublishAddr: "y", Debounce: -1}, "must not be negative"},
		{Config{DataDir: dir, AdminSocket: "x", PublishAddr: "y", Shards: -1, InsecureStream: true}, "Shards -1"},
		{Config{DataDir: dir, AdminSocket: "x", PublishAddr: "y"}, "no stream secret"},
	} {
		if _, err := New(tc.cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New(%+v) = %v, want %q", tc.cfg, err, tc.want)
		}
	}
}

func TestSecondCtrlOnSameSocketRefused(t *testing.T) {
	h := startCtrl(t, t.TempDir(), nil)
	_, err := New(Config{DataDir: t.TempDir(), AdminSocket: h.s.AdminSocket(), PublishAddr: "127.0.0.1:0", Logger: slog.New(slog.DiscardHandler), InsecureStream: true})
	if err == nil || !strings.Contains(err.Error(), "another process is listening") {
		t.Fatalf("second ctrl: %v", err)
	}
	// The first one is unaffected.
	if _, err := h.c.Status(ctx(t)); err != nil {
		t.Fatal(err)
	}
}

func TestContinuousWritesStillPublish(t *testing.T) {
	h := startCtrl(t, t.TempDir(), func(c *Config) {
		c.Debounce = 50 * time.Millisecond
		c.MaxDelay = 150 * time.Millisecond
	})
	cx := ctx(t)
	h.waitSnapshot(1)
	before := h.builds.Load()
	// Writes 10ms apart never leave a 50ms quiet gap, so only MaxDelay can
	// trigger builds during the ~600ms of writing.
	for i := range 60 {
		if _, err := h.c.PutCluster(cx, cluster(fmt.Sprintf("c%d", i), "10.0.0.1:80"), nil); err != nil {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if n := h.builds.Load() - before; n < 2 {
		t.Fatalf("only %d snapshots during 600ms of continuous writes with MaxDelay 150ms", n)
	}
	// The last write is published. (Not "the store revision": a health
	// write that changes nothing edges see moves the revision without a
	// build.)
	last, err := h.c.GetCluster(cx, "c59")
	if err != nil {
		t.Fatal(err)
	}
	if snap := h.waitSnapshot(last.Revision); snap.ClusterIndex([]byte("c59")) < 0 {
		t.Fatalf("snapshot %d lacks the last cluster written", snap.Version())
	}
}

func BenchmarkPutRoute(b *testing.B) {
	dir := b.TempDir()
	s, err := New(Config{DataDir: dir, AdminSocket: filepath.Join(dir, "a.sock"), PublishAddr: "127.0.0.1:0", Logger: slog.New(slog.DiscardHandler), InsecureStream: true})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			b.Error(err)
		}
	}()
	c, err := admin.Dial(s.AdminSocket())
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	if _, err := c.PutCluster(ctx, cluster("c", "10.0.0.1:80"), nil); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		id := fmt.Sprintf("r%d", i%1000)
		if _, err := c.PutRoute(ctx, model.Route{ID: id, Host: "*", Prefix: "/" + id, Cluster: "c"}, nil); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkBuild10kRoutes(b *testing.B) {
	m := newState(1)
	m.clusters["c"] = versioned[model.Cluster]{doc: cluster("c", "10.0.0.1:80")}
	for i := range 10_000 {
		id := fmt.Sprintf("r%d", i)
		routes.put(&m, versioned[model.Route]{doc: model.Route{ID: id, Host: "*", Prefix: "/" + id, Cluster: "c"}})
	}
	b.ReportAllocs()
	for b.Loop() {
		cs, _ := clusterCache(nil).convert(&m, &health.Routing{})
		if _, err := fbs.Build(m.fbsState(m.revision, 0, 0, cs)); err != nil {
			b.Fatal(err)
		}
	}
}

// TestRestartRemembersEdges: an edge that was connected before a ctrl
// restart is listed afterwards, disconnected, with its applied version,
// although it never came back.
func TestRestartRemembersEdges(t *testing.T) {
	dir := t.TempDir()
	h := startCtrl(t, dir, nil)
	stop := streamEdge(t, h.s.PublishAddr(), "edge-gone")
	h.waitEdges(1)
	var applied uint64
	deadline := time.Now().Add(10 * time.Second)
	for applied == 0 && time.Now().Before(deadline) {
		st, err := h.c.Status(ctx(t))
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range st.Edges {
			if e.NodeID == "edge-gone" {
				applied = e.AppliedVersion
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	if applied == 0 {
		t.Fatal("the edge never ACKed a version")
	}
	stop()
	h.stop()

	h = startCtrl(t, dir, nil)
	st, err := h.c.Status(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Edges) != 1 || st.Edges[0].NodeID != "edge-gone" || st.Edges[0].Connected || st.Edges[0].AppliedVersion != applied {
		t.Fatalf("after restart the edges are %+v; want edge-gone, disconnected, at v%d", st.Edges, applied)
	}
}

// Admin writes commit without an fsync and share one after releasing the
// writer lock; every reply must still come after the state it shows is
// durable: an acknowledged write, a get or list that shows a write still
// waiting for its fsync, and a write refused because of such a write.
// Builds are held off (long debounce) so that none syncs on their behalf.
func TestRepliesWaitForDurability(t *testing.T) {
	h := startCtrl(t, t.TempDir(), func(c *Config) { c.Debounce, c.MaxDelay = 10*time.Second, 20*time.Second })
	st := h.s.store
	cx := ctx(t)
	r, err := h.c.PutCluster(cx, cluster("c", "10.0.0.1:80"), u64(0))
	if err != nil {
		t.Fatal(err)
	}
	if d := st.Durable(); d < r.Revision {
		t.Fatalf("put acknowledged at revision %d, durable only up to %d", r.Revision, d)
	}

	// A write between its commit and its fsync, as a concurrent writer
	// would leave it while another command runs.
	unsynced := func(addr string) uint64 {
		t.Helper()
		res, err := writeLocked(h.s, &clusters, "c", nil, func(*model.Cluster) (model.Cluster, error) {
			return cluster("c", addr), nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if d := st.Durable(); d >= res.Revision {
			t.Fatalf("setup: revision %d already durable (%d)", res.Revision, d)
		}
		return res.Revision
	}
	rev := unsynced("10.0.0.2:80")
	if got, err := h.c.GetCluster(cx, "c"); err != nil || got.Cluster.Endpoints[0].Address != "10.0.0.2:80" {
		t.Fatalf("GetCluster = %+v, %v", got, err)
	}
	if d := st.Durable(); d < rev {
		t.Fatalf("get replied with revision %d, durable only up to %d", rev, d)
	}
	rev = unsynced("10.0.0.3:80")
	if _, err := h.c.PutCluster(cx, cluster("c", "10.0.0.4:80"), u64(0)); err == nil {
		t.Fatal("create of an existing cluster succeeded")
	}
	if d := st.Durable(); d < rev {
		t.Fatalf("a write refused because of revision %d was answered with it durable only up to %d", rev, d)
	}
}

// ForgetEdge replies only once the edge's stored record is gone: the store
// no longer holds it when the reply arrives, with nothing left to wait for.
func TestForgetEdgeDeletesRecordBeforeReply(t *testing.T) {
	h := startCtrl(t, t.TempDir(), nil)
	stop := streamEdge(t, h.s.PublishAddr(), "edge-gone")
	h.waitEdges(1)
	stop()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := h.c.ForgetEdge(ctx(t), "edge-gone"); err == nil {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("forgetting the stopped edge: %v", err)
		}
		time.Sleep(10 * time.Millisecond) // until ctrl has seen the disconnect
	}
	if v, err := h.s.store.GetMeta(edgeMetaPrefix + "edge-gone"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("the reply came before the record was deleted: %q, %v", v, err)
	}
}

// unstore leaves ctrl's data dir in dir as a kill -9 between publishing
// version v and committing it would: v's file only as a staged temp file
// (the store's open then drops its record), the earlier versions stored.
// It returns the snapshot directory.
func unstore(t *testing.T, dir string, v uint64) string {
	t.Helper()
	snapDir := filepath.Join(dir, "store-snapshots")
	files, err := filepath.Glob(filepath.Join(snapDir, fmt.Sprintf("snap-%020d-*.sgs", v)))
	if err != nil || len(files) != 1 {
		t.Fatalf("stored file of v%d: %v, %v", v, files, err)
	}
	if err := os.Rename(files[0], filepath.Join(snapDir, "snap-12345.tmp")); err != nil {
		t.Fatal(err)
	}
	return snapDir
}

// A version read before a delete never matches the document created after
// it under the same id (DESIGN P2/P3: a stale expected_version loses), so
// a writer that read "shop" cannot overwrite the "shop" someone else
// deleted and created again in between.
func TestExpectedVersionSurvivesDeleteAndRecreate(t *testing.T) {
	h := startCtrl(t, t.TempDir(), nil)
	cx := ctx(t)
	for _, c := range []string{"web", "evil"} {
		if _, err := h.c.PutCluster(cx, cluster(c, "10.0.0.1:80"), nil); err != nil {
			t.Fatal(err)
		}
	}
	read, err := h.c.PutRoute(cx, model.Route{ID: "shop", Host: "*", Prefix: "/shop", Cluster: "web"}, u64(0))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.c.DeleteRoute(cx, "shop", nil); err != nil {
		t.Fatal(err)
	}
	again, err := h.c.PutRoute(cx, model.Route{ID: "shop", Host: "*", Prefix: "/shop", Cluster: "evil"}, u64(0))
	if err != nil {
		t.Fatal(err)
	}
	if again.Version <= read.Version {
		t.Fatalf("re-created at version %d, not above the %d read before the delete", again.Version, read.Version)
	}
	_, err = h.c.PutRoute(cx, model.Route{ID: "shop", Host: "*", Prefix: "/shop", Cluster: "web", TimeoutMs: 5}, u64(read.Version))
	wantAdminErr(t, err, admin.CodeConflict, "expected_version", fmt.Sprintf(`route "shop" is at version %d, expected %d`, again.Version, read.Version))
	if got, err := h.c.GetRoute(cx, "shop"); err != nil || got.Route.Cluster != "evil" {
		t.Fatalf("GetRoute = %+v, %v: the stale write changed it", got, err)
	}
}
