package health

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/snapgate/snapgate/ctrl/model"
	"github.com/snapgate/snapgate/store"
)

// fakeClock is a manual clock: Advance moves it and runs the timers due.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	timers []*fakeTimer
}

type fakeTimer struct {
	at   time.Time
	f    func()
	dead bool
}

func newFakeClock() *fakeClock { return &fakeClock{now: t0} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) AfterFunc(d time.Duration, f func()) func() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	ft := &fakeTimer{at: c.now.Add(d), f: f}
	c.timers = append(c.timers, ft)
	return func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		was := !ft.dead
		ft.dead = true
		return was
	}
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	var due []func()
	live := c.timers[:0]
	for _, ft := range c.timers {
		switch {
		case ft.dead:
		case !ft.at.After(c.now):
			ft.dead = true
			due = append(due, ft.f)
		default:
			live = append(live, ft)
		}
	}
	c.timers = live
	c.mu.Unlock()
	for _, f := range due {
		f()
	}
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func openStore(t testing.TB, dir string) *store.Pebble {
	t.Helper()
	s, err := store.OpenPebble(dir, store.Options{Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// testCluster is a cluster of n endpoints 10.0.0.1:80 ... with hc.
func testCluster(id string, n int, hc *model.HealthCheck) model.Cluster {
	c := model.Cluster{ID: id, Health: hc}
	for i := range n {
		c.Endpoints = append(c.Endpoints, model.Endpoint{Address: "10.0.0." + strconv.Itoa(i+1) + ":80"})
	}
	return c
}

// manual is a tracker without its loop, on a fake clock: the test calls
// step, so flushes and publications happen exactly when it says.
type manual struct {
	*Tracker
	clock *fakeClock
	st    *store.Pebble
}

func newManual(t *testing.T, cfg Config, clusters ...model.Cluster) *manual {
	t.Helper()
	clock := newFakeClock()
	st := openStore(t, t.TempDir())
	t.Cleanup(func() { _ = st.Close() })
	cfg.Store, cfg.Clock, cfg.Logger = st, clock, quietLogger()
	tr, err := newTracker(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tr.Close() })
	if err := tr.SetClusters(clusters); err != nil {
		t.Fatal(err)
	}
	return &manual{Tracker: tr, clock: clock, st: st}
}

// advance moves the clock and runs the loop's work for that moment.
func (m *manual) advance(d time.Duration) {
	m.clock.Advance(d)
	m.step()
}

func ext(t testing.TB, name string) Source {
	t.Helper()
	s, err := ExternalSource(name)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func mustObserve(t testing.TB, tr *Tracker, o Observation) Outcome {
	t.Helper()
	out, err := tr.Observe(o)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func endpointStatus(t testing.TB, tr *Tracker, cluster, addr string) EndpointStatus {
	t.Helper()
	cs, err := tr.Status(cluster)
	if err != nil {
		t.Fatal(err)
	}
	for _, es := range cs[0].Endpoints {
		if es.Address == addr {
			return es
		}
	}
	t.Fatalf("no endpoint %s in %s", addr, cluster)
	return EndpointStatus{}
}

func publishedOf(t testing.TB, tr *Tracker, cluster, addr string) EndpointRouting {
	t.Helper()
	cr := tr.Routing().Clusters[cluster]
	if cr == nil {
		t.Fatalf("cluster %s not published", cluster)
	}
	e, ok := cr.Lookup(addr)
	if !ok {
		t.Fatalf("endpoint %s not published in %s", addr, cluster)
	}
	return e
}

const ep1 = "10.0.0.1:80"

func TestOrderingIgnoresStaleAndDuplicates(t *testing.T) {
	m := newManual(t, Config{}, testCluster("api", 2, &model.HealthCheck{UnhealthyThreshold: 2, HealthyThreshold: 2}))
	src := ext(t, "checker")
	obs := func(rev uint64, ok bool) Observation {
		return Observation{Cluster: "api", Endpoint: ep1, OK: ok, Source: src, Revision: rev}
	}
	mustObserve(t, m.Tracker, obs(10, false))
	if out := mustObserve(t, m.Tracker, obs(11, false)); out.Result != Accepted || out.Healthy || !out.Changed {
		t.Fatalf("second failure: %+v, want accepted and unhealthy", out)
	}
	// Older successes arrive late, and the newest one again: none counts.
	for _, rev := range []uint64{3, 9, 11, 1, 11} {
		out := mustObserve(t, m.Tracker, obs(rev, true))
		want := Stale
		if rev == 11 {
			want = Duplicate
		}
		if out.Result != want || out.LastRevision != 11 || out.Healthy {
			t.Fatalf("rev %d: %+v, want %v with last revision 11, unhealthy", rev, out, want)
		}
	}
	es := endpointStatus(t, m.Tracker, "api", ep1)
	if es.Healthy || es.OKStreak != 0 || es.Stale != 3 || es.Duplicate != 2 || es.Accepted != 2 {
		t.Fatalf("status after replays: %+v", es)
	}
	// Another source has its own order: its revision 1 counts.
	if out := mustObserve(t, m.Tracker, Observation{Cluster: "api", Endpoint: ep1, OK: true, Source: ext(t, "other"), Revision: 1}); out.Result != Accepted {
		t.Fatalf("other source: %+v", out)
	}
	c := m.Counters()
	if c.Stale != 3 || c.Duplicate != 2 || c.Accepted != 3 {
		t.Fatalf("counters %+v", c)
	}
}

// TestReorderingNeverMovesBackwards delivers one source's observations in
// random order with duplicates, and checks after each one that replaying
// anything at or below the newest accepted revision changes nothing.
func TestReorderingNeverMovesBackwards(t *testing.T) {
	m := newManual(t, Config{}, testCluster("api", 1, &model.HealthCheck{UnhealthyThreshold: 1, HealthyThreshold: 1}))
	src := ext(t, "checker")
	rng := rand.New(rand.NewPCG(1, 2))
	verdict := func(rev uint64) bool { return rev%3 != 0 }
	var maxRev uint64
	for i := 0; i < 500; i++ {
		rev := uint64(rng.IntN(400) + 1)
		out := mustObserve(t, m.Tracker, Observation{Cluster: "api", Endpoint: ep1, OK: verdict(rev), Source: src, Revision: rev})
		if (out.Result == Accepted) != (rev > maxRev) {
			t.Fatalf("rev %d with max %d: %v", rev, maxRev, out.Result)
		}
		maxRev = max(maxRev, rev)
		// With thresholds of 1 the state is the newest accepted verdict.
		if out.Healthy != verdict(maxRev) {
			t.Fatalf("after rev %d (max %d): healthy=%v, want %v", rev, maxRev, out.Healthy, verdict(maxRev))
		}
		before := endpointStatus(t, m.Tracker, "api", ep1)
		old := uint64(rng.IntN(int(maxRev)) + 1)
		if out := mustObserve(t, m.Tracker, Observation{Cluster: "api", Endpoint: ep1, OK: !verdict(old), Source: src, Revision: old}); out.Result == Accepted {
			t.Fatalf("replayed rev %d <= %d was accepted", old, maxRev)
		}
		after := endpointStatus(t, m.Tracker, "api", ep1)
		if after.Healthy != before.Healthy || !after.Since.Equal(before.Since) || after.OKStreak != before.OKStreak || after.FailStreak != before.FailStreak {
			t.Fatalf("replaying rev %d moved the state: %+v -> %+v", old, before, after)
		}
	}
}

func TestObserveErrors(t *testing.T) {
	m := newManual(t, Config{}, testCluster("api", 1, nil))
	src := ext(t, "c")
	for _, tc := range []struct {
		o    Observation
		want error
		msg  string
	}{
		{Observation{Cluster: "nope", Endpoint: ep1, Source: src, Revision: 1}, ErrUnknownEndpoint, `no cluster "nope"`},
		{Observation{Cluster: "api", Endpoint: "10.9.9.9:80", Source: src, Revision: 1}, ErrUnknownEndpoint, `has no endpoint "10.9.9.9:80"`},
		{Observation{Cluster: "api", Endpoint: ep1, Source: src}, ErrInvalid, "revision must be at least 1"},
		{Observation{Cluster: "api", Endpoint: ep1, Source: "checker", Revision: 1}, ErrInvalid, `want "probe"`},
		{Observation{Cluster: "api", Endpoint: ep1, Source: "edge:", Revision: 1}, ErrInvalid, "1..128"},
		{Observation{Cluster: "api", Endpoint: ep1, Source: "edge:a b", Revision: 1}, ErrInvalid, "visible ASCII"},
		{Observation{Cluster: "api", Endpoint: ep1, Source: src, Revision: 1, Detail: "a\nb"}, ErrInvalid, "control character"},
		{Observation{Cluster: "api", Endpoint: ep1, Source: src, Revision: 1, Detail: strings.Repeat("x", MaxDetailLen+1)}, ErrInvalid, "at most 256"},
	} {
		_, err := m.Observe(tc.o)
		if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("Observe(%+v) = %v, want %v containing %q", tc.o, err, tc.want, tc.msg)
		}
	}
	if err := m.SetClusters([]model.Cluster{testCluster("a", 1, nil), testCluster("a", 1, nil)}); !errors.Is(err, ErrInvalid) {
		t.Errorf("duplicate cluster: %v", err)
	}
	bad := testCluster("b", 1, &model.HealthCheck{Type: "udp"})
	if err := m.SetClusters([]model.Cluster{bad}); err == nil || !strings.Contains(err.Error(), "health.type") {
		t.Errorf("invalid cluster: %v", err)
	}
	if _, err := m.Status("zzz"); !errors.Is(err, ErrUnknownEndpoint) {
		t.Errorf("Status(unknown) = %v", err)
	}
	if _, err := m.Explain("", "1.1.1.1:1"); !errors.Is(err, ErrUnknownEndpoint) {
		t.Errorf("Explain(unknown) = %v", err)
	}
}

// TestFlapStormIsCapped drives a backend that flips every 100 ms for a
// minute on a fake clock: the published view changes at most
// MaxVersionsPerSecond times per second, yet keeps up with the flapping.
func TestFlapStormIsCapped(t *testing.T) {
	const perSecond = 4
	m := newManual(t, Config{MaxVersionsPerSecond: perSecond, FlushInterval: 100 * time.Millisecond},
		testCluster("api", 3, &model.HealthCheck{UnhealthyThreshold: 1, HealthyThreshold: 1}))
	start := m.Routing().Generation
	src := ext(t, "flapper")
	var publishTimes []time.Time
	last := start
	rev := uint64(0)
	for elapsed := time.Duration(0); elapsed < time.Minute; elapsed += 50 * time.Millisecond {
		if elapsed%(100*time.Millisecond) == 0 {
			rev++
			mustObserve(t, m.Tracker, Observation{Cluster: "api", Endpoint: ep1, OK: rev%2 == 0, Source: src, Revision: rev})
		}
		m.advance(50 * time.Millisecond)
		if g := m.Routing().Generation; g != last {
			publishTimes = append(publishTimes, m.clock.Now())
			last = g
		}
	}
	versions := int(last - start)
	if versions > 60*perSecond+1 {
		t.Fatalf("%d publications in a minute, cap is %d/s", versions, perSecond)
	}
	// Any one-second window holds at most perSecond of them.
	for i := perSecond; i < len(publishTimes); i++ {
		if publishTimes[i].Sub(publishTimes[i-perSecond]) < time.Second {
			t.Fatalf("publications %d..%d within %v", i-perSecond, i, publishTimes[i].Sub(publishTimes[i-perSecond]))
		}
	}
	if versions < 60*perSecond/2 {
		t.Fatalf("only %d publications for 600 flips: the cap should be reached", versions)
	}
	c := m.Counters()
	t.Logf("600 flips -> %d transitions, %d flushes, %d publications", c.Transitions, c.Flushes, versions)
	// Once the storm stops, the published view catches up with the live state.
	for range 20 {
		m.advance(100 * time.Millisecond)
	}
	if live, pub := endpointStatus(t, m.Tracker, "api", ep1).Healthy, publishedOf(t, m.Tracker, "api", ep1).Healthy; live != pub {
		t.Fatalf("after the storm live=%v published=%v", live, pub)
	}
}

// TestFlapStormRealTime is the same storm on the real clock and loop:
// bounded, with slack, never a tight timing assertion.
func TestFlapStormRealTime(t *testing.T) {
	const perSecond = 5
	st := openStore(t, t.TempDir())
	defer st.Close()
	tr, err := Open(Config{Store: st, MaxVersionsPerSecond: perSecond, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	if err := tr.SetClusters([]model.Cluster{testCluster("api", 2, &model.HealthCheck{UnhealthyThreshold: 1, HealthyThreshold: 1})}); err != nil {
		t.Fatal(err)
	}
	<-tr.Changes() // SetClusters published
	src := ext(t, "flapper")
	const storm = 1500 * time.Millisecond
	began := time.Now()
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for rev := uint64(1); ; rev++ {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			if _, err := tr.Observe(Observation{Cluster: "api", Endpoint: ep1, OK: rev%2 == 0, Source: src, Revision: rev}); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	changes := 0
	deadline := time.After(storm)
loop:
	for {
		select {
		case <-tr.Changes():
			changes++
		case <-deadline:
			break loop
		}
	}
	close(stop)
	<-done
	elapsed := time.Since(began)
	// One Changes value may be pending from before the storm window ends.
	limit := int(elapsed.Seconds()*perSecond) + 2
	if changes > limit || changes < 1 {
		t.Fatalf("%d changes in %v, want 1..%d", changes, elapsed, limit)
	}
	t.Logf("%d changes in %v (cap %d/s)", changes, elapsed, perSecond)
}

func TestPanicModeAndSlowStart(t *testing.T) {
	hc := &model.HealthCheck{UnhealthyThreshold: 1, HealthyThreshold: 1, PanicThresholdPercent: 50, SlowStartMs: 30_000}
	m := newManual(t, Config{}, testCluster("api", 4, hc))
	src := ext(t, "c")
	fail := func(addr string, rev uint64, ok bool) {
		mustObserve(t, m.Tracker, Observation{Cluster: "api", Endpoint: addr, OK: ok, Source: src, Revision: rev, Detail: "status 503"})
		m.advance(time.Second)
	}
	fail("10.0.0.1:80", 1, false)
	fail("10.0.0.2:80", 1, false)
	cr := m.Routing().Clusters["api"]
	if cr.Panic || cr.Healthy != 2 {
		t.Fatalf("2 of 4 healthy (50%%, threshold 50): %+v", cr)
	}
	if e, _ := cr.Lookup("10.0.0.1:80"); e.Routable || e.Healthy {
		t.Fatalf("unhealthy endpoint routable outside panic: %+v", e)
	}
	fail("10.0.0.3:80", 1, false)
	cr = m.Routing().Clusters["api"]
	if !cr.Panic || cr.Healthy != 1 {
		t.Fatalf("1 of 4 healthy: %+v, want panic", cr)
	}
	for _, e := range cr.Endpoints {
		if !e.Routable {
			t.Fatalf("panic mode: %+v not routable", e)
		}
	}
	cs, _ := m.Status("api")
	if !cs[0].Panic || !cs[0].PublishedPanic {
		t.Fatalf("status does not say panic: %+v", cs[0])
	}
	text, err := m.Explain("api", "10.0.0.1:80")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"UNHEALTHY since", "routable: yes, only because the cluster is in panic mode", "PANIC", "10.0.0.1:80"} {
		if !strings.Contains(text, want) {
			t.Fatalf("explain lacks %q:\n%s", want, text)
		}
	}
	// Recovery: the endpoint carries its recovery time for slow start.
	fail("10.0.0.1:80", 2, true)
	recovered := m.clock.Now().Add(-time.Second)
	e := publishedOf(t, m.Tracker, "api", "10.0.0.1:80")
	if !e.Healthy || !e.RecoveredAt.Equal(recovered) || m.Routing().Clusters["api"].SlowStart != 30*time.Second {
		t.Fatalf("recovered endpoint %+v, want RecoveredAt %v and 30s slow start", e, recovered)
	}
	if e := publishedOf(t, m.Tracker, "api", "10.0.0.4:80"); !e.RecoveredAt.IsZero() {
		t.Fatalf("never-failed endpoint has a recovery time: %+v", e)
	}
	text, _ = m.Explain("", "10.0.0.1:80")
	if !strings.Contains(text, "slow start: recovered") || !strings.Contains(text, "HEALTHY since") {
		t.Fatalf("explain after recovery:\n%s", text)
	}
}

// TestHoldAndExpiryRunOnTheClock: transitions held back by min_hold_ms and
// passive expiry happen without further observations, when the clock says.
func TestHoldAndExpiryRunOnTheClock(t *testing.T) {
	hc := &model.HealthCheck{UnhealthyThreshold: 1, HealthyThreshold: 1, MinHoldMs: 2000, PassiveExpiryMs: 10_000}
	m := newManual(t, Config{}, testCluster("api", 2, hc))
	src, _ := EdgeSource("edge-1")
	mustObserve(t, m.Tracker, Observation{Cluster: "api", Endpoint: ep1, OK: false, Source: src, Revision: 1, Detail: "connect refused"})
	m.advance(time.Second)
	if es := endpointStatus(t, m.Tracker, "api", ep1); !es.Healthy || !es.PendingAt.Equal(t0.Add(2*time.Second)) {
		t.Fatalf("within the hold: %+v", es)
	}
	m.advance(time.Second)
	if es := endpointStatus(t, m.Tracker, "api", ep1); es.Healthy || !strings.Contains(es.Reason, "connect refused") {
		t.Fatalf("after the hold: %+v", es)
	}
	if publishedOf(t, m.Tracker, "api", ep1).Healthy {
		t.Fatal("unhealthy state not published after the hold")
	}
	// No report for passive_expiry_ms (counted from the failure at 0).
	m.advance(7 * time.Second)
	if endpointStatus(t, m.Tracker, "api", ep1).Healthy {
		t.Fatal("expired before passive_expiry_ms")
	}
	m.advance(2 * time.Second)
	es := endpointStatus(t, m.Tracker, "api", ep1)
	if !es.Healthy || !strings.Contains(es.Reason, "passive_expiry_ms") || !publishedOf(t, m.Tracker, "api", ep1).Healthy {
		t.Fatalf("after passive expiry: %+v", es)
	}
}

func TestReportWaitsUntilDurable(t *testing.T) {
	st := openStore(t, t.TempDir())
	defer st.Close()
	tr, err := Open(Config{Store: st, Logger: quietLogger(), FlushInterval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	if err := tr.SetClusters([]model.Cluster{testCluster("api", 1, nil)}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	src := ext(t, "checker")
	for rev := uint64(1); rev <= 5; rev++ {
		if _, err := tr.Report(ctx, Observation{Cluster: "api", Endpoint: ep1, OK: false, Source: src, Revision: rev}); err != nil {
			t.Fatal(err)
		}
		d, err := st.Get(Kind, docID("api", ep1))
		if err != nil {
			t.Fatal(err)
		}
		r, err := decodeStored(d.ID, d.Body)
		if err != nil {
			t.Fatal(err)
		}
		if len(r.Sources) != 1 || r.Sources[0].Revision != rev {
			t.Fatalf("after Report(rev %d) the store holds %+v", rev, r.Sources)
		}
	}
	// A duplicate is answered only once what made it one is durable: here
	// at once.
	if out, err := tr.Report(ctx, Observation{Cluster: "api", Endpoint: ep1, Source: src, Revision: 5}); err != nil || out.Result != Duplicate {
		t.Fatalf("duplicate Report = %+v, %v", out, err)
	}
	short, cancel2 := context.WithCancel(ctx)
	cancel2()
	if _, err := tr.Report(short, Observation{Cluster: "api", Endpoint: ep1, Source: src, Revision: 6}); !errors.Is(err, context.Canceled) {
		t.Fatalf("Report with a cancelled context = %v", err)
	}
}

// failingStore makes Apply fail while fail is set: a full disk.
type failingStore struct {
	store.Store
	mu   sync.Mutex
	fail bool
}

func (f *failingStore) Apply(muts ...store.Mutation) (uint64, []store.Doc, error) {
	f.mu.Lock()
	fail := f.fail
	f.mu.Unlock()
	if fail {
		return 0, nil, errors.New("no space left on device")
	}
	return f.Store.Apply(muts...)
}

func (f *failingStore) setFail(v bool) {
	f.mu.Lock()
	f.fail = v
	f.mu.Unlock()
}

// TestPublishesOnlyDurableState: while the store fails, a change stays
// live-only; edges never route on state a crash could take back.
func TestPublishesOnlyDurableState(t *testing.T) {
	clock := newFakeClock()
	st := openStore(t, t.TempDir())
	defer st.Close()
	fs := &failingStore{Store: st}
	tr, err := newTracker(Config{Store: fs, Clock: clock, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	if err := tr.SetClusters([]model.Cluster{testCluster("api", 2, &model.HealthCheck{UnhealthyThreshold: 1})}); err != nil {
		t.Fatal(err)
	}
	fs.setFail(true)
	mustObserve(t, tr, Observation{Cluster: "api", Endpoint: ep1, Source: ext(t, "c"), Revision: 1})
	for range 3 {
		clock.Advance(time.Second)
		tr.step()
	}
	if !publishedOf(t, tr, "api", ep1).Healthy {
		t.Fatal("a change that is not durable was published")
	}
	es := endpointStatus(t, tr, "api", ep1)
	if es.Healthy || !es.Published {
		t.Fatalf("status while the store fails: %+v", es)
	}
	if c := tr.Counters(); c.FlushErrors < 2 {
		t.Fatalf("counters %+v: want retried flushes", c)
	}
	if text, _ := tr.Explain("api", ep1); !strings.Contains(text, "not published yet") {
		t.Fatalf("explain does not say the state is unpublished:\n%s", text)
	}
	fs.setFail(false)
	clock.Advance(time.Second)
	tr.step()
	if publishedOf(t, tr, "api", ep1).Healthy {
		t.Fatal("the change was not published once durable")
	}
}

func TestSetClustersKeepsAndDropsState(t *testing.T) {
	m := newManual(t, Config{}, testCluster("api", 2, &model.HealthCheck{UnhealthyThreshold: 1}), testCluster("web", 1, nil))
	src := ext(t, "c")
	mustObserve(t, m.Tracker, Observation{Cluster: "api", Endpoint: ep1, Source: src, Revision: 7})
	m.advance(time.Second)
	webView := m.Routing().Clusters["web"]
	// api loses its second endpoint and gains another; web is unchanged.
	api := testCluster("api", 1, &model.HealthCheck{UnhealthyThreshold: 1})
	api.Endpoints = append(api.Endpoints, model.Endpoint{Address: "10.0.0.9:80"})
	if err := m.SetClusters([]model.Cluster{api, testCluster("web", 1, nil)}); err != nil {
		t.Fatal(err)
	}
	m.advance(time.Second)
	r := m.Routing()
	if r.Clusters["web"] != webView {
		t.Fatal("an unchanged cluster got a new view")
	}
	if e := publishedOf(t, m.Tracker, "api", ep1); e.Healthy {
		t.Fatal("a kept endpoint lost its state")
	}
	if _, ok := r.Clusters["api"].Lookup("10.0.0.2:80"); ok {
		t.Fatal("a removed endpoint is still published")
	}
	if _, err := m.st.Get(Kind, docID("api", "10.0.0.2:80")); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("removed endpoint's document: %v", err)
	}
	if _, err := m.st.Get(Kind, docID("api", "10.0.0.9:80")); err != nil {
		t.Fatalf("new endpoint's document: %v", err)
	}
	// Raising the threshold does not re-judge the unhealthy endpoint, and
	// removing the cluster forgets it.
	if err := m.SetClusters([]model.Cluster{testCluster("web", 1, nil)}); err != nil {
		t.Fatal(err)
	}
	m.advance(time.Second)
	if _, ok := m.Routing().Clusters["api"]; ok {
		t.Fatal("removed cluster still published")
	}
	docs, err := m.st.List(Kind)
	if err != nil || len(docs) != 1 || docs[0].ID != docID("web", ep1) {
		t.Fatalf("documents after removing api: %v %v", docs, err)
	}
	if _, err := m.Observe(Observation{Cluster: "api", Endpoint: ep1, Source: src, Revision: 8}); !errors.Is(err, ErrUnknownEndpoint) {
		t.Fatalf("observation of a removed cluster: %v", err)
	}
}

func TestStateSurvivesReopen(t *testing.T) {
	dir := t.TempDir()
	clusters := []model.Cluster{testCluster("api", 2, &model.HealthCheck{UnhealthyThreshold: 2, HealthyThreshold: 3})}
	src := ext(t, "checker")
	edge, _ := EdgeSource("edge-7")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	st := openStore(t, dir)
	tr, err := Open(Config{Store: st, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	if err := tr.SetClusters(clusters); err != nil {
		t.Fatal(err)
	}
	for rev := uint64(1); rev <= 2; rev++ {
		if _, err := tr.Report(ctx, Observation{Cluster: "api", Endpoint: ep1, Source: src, Revision: rev}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := tr.Report(ctx, Observation{Cluster: "api", Endpoint: ep1, OK: true, Source: edge, Revision: 40}); err != nil {
		t.Fatal(err)
	}
	before := endpointStatus(t, tr, "api", ep1)
	if err := tr.Close(); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}

	st = openStore(t, dir)
	defer st.Close()
	tr, err = Open(Config{Store: st, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	if err := tr.SetClusters(clusters); err != nil {
		t.Fatal(err)
	}
	after := endpointStatus(t, tr, "api", ep1)
	if after.Healthy || !after.Since.Equal(before.Since) || after.Reason != before.Reason || after.OKStreak != 1 || after.Accepted != 3 {
		t.Fatalf("restored %+v, want as before %+v", after, before)
	}
	if e := publishedOf(t, tr, "api", ep1); e.Healthy {
		t.Fatal("restored unhealthy endpoint published as healthy")
	}
	// Both sources' orders survived.
	if out := mustObserve(t, tr, Observation{Cluster: "api", Endpoint: ep1, OK: true, Source: src, Revision: 2}); out.Result != Duplicate {
		t.Fatalf("checker rev 2 after reopen: %v", out.Result)
	}
	if out := mustObserve(t, tr, Observation{Cluster: "api", Endpoint: ep1, OK: true, Source: edge, Revision: 39}); out.Result != Stale {
		t.Fatalf("edge rev 39 after reopen: %v", out.Result)
	}
	// The resumed success streak needs two more, not three.
	for rev := uint64(41); rev <= 42; rev++ {
		mustObserve(t, tr, Observation{Cluster: "api", Endpoint: ep1, OK: true, Source: edge, Revision: rev})
	}
	if !endpointStatus(t, tr, "api", ep1).Healthy {
		t.Fatal("the restored success streak did not resume")
	}
}

func TestOpenRejectsCorruptState(t *testing.T) {
	st := openStore(t, t.TempDir())
	defer st.Close()
	if _, _, err := st.Apply(store.Mutation{Kind: Kind, ID: "api/10.0.0.1:80", Body: []byte(`{"format":1,"cluster":"api","endpoint":"10.0.0.2:80","since":"2030-01-01T00:00:00Z"}`)}); err != nil {
		t.Fatal(err)
	}
	_, err := Open(Config{Store: st, Logger: quietLogger()})
	if err == nil || !strings.Contains(err.Error(), `stored health "api/10.0.0.1:80"`) || !strings.Contains(err.Error(), "another id") {
		t.Fatalf("Open on a mismatched record = %v", err)
	}
}

func TestDocIDFitsTheStore(t *testing.T) {
	long := strings.Repeat("a", 63) + "." + strings.Repeat("b", 63) + "." + strings.Repeat("c", 63) + "." + strings.Repeat("d", 61) + ":65535"
	id := docID(strings.Repeat("x", 64), long)
	if err := store.ValidateID(Kind, id); err != nil || !strings.Contains(id, "/sha256:") {
		t.Fatalf("docID for a %d-byte address = %q: %v", len(long), id, err)
	}
	if id2 := docID(strings.Repeat("x", 64), long[:len(long)-1]+"4"); id2 == id {
		t.Fatal("hashed ids collide")
	}
	if got := docID("api", ep1); got != "api/10.0.0.1:80" {
		t.Fatalf("docID = %q", got)
	}
}

func TestSourceLimitForgetsTheOldest(t *testing.T) {
	m := newManual(t, Config{MaxSourcesPerEndpoint: 2}, testCluster("api", 1, nil))
	for i, name := range []string{"a", "b", "c"} {
		mustObserve(t, m.Tracker, Observation{Cluster: "api", Endpoint: ep1, OK: true, Source: ext(t, name), Revision: 5})
		if i < 2 {
			m.clock.Advance(time.Millisecond)
		}
	}
	es := endpointStatus(t, m.Tracker, "api", ep1)
	if len(es.Sources) != 2 || es.Sources[0].Source != "external:b" || es.Evicted != 1 {
		t.Fatalf("sources %+v evicted %d", es.Sources, es.Evicted)
	}
	// The forgotten source starts a new order.
	if out := mustObserve(t, m.Tracker, Observation{Cluster: "api", Endpoint: ep1, OK: true, Source: ext(t, "a"), Revision: 1}); out.Result != Accepted {
		t.Fatalf("forgotten source: %v", out.Result)
	}
}

func TestCloseIsFinal(t *testing.T) {
	m := newManual(t, Config{}, testCluster("api", 1, nil))
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); !errors.Is(err, ErrClosed) {
		t.Fatalf("second Close = %v", err)
	}
	if _, err := m.Observe(Observation{Cluster: "api", Endpoint: ep1, Source: ext(t, "c"), Revision: 1}); !errors.Is(err, ErrClosed) {
		t.Fatalf("Observe after Close = %v", err)
	}
	if err := m.SetClusters(nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("SetClusters after Close = %v", err)
	}
}

func BenchmarkObserve(b *testing.B) {
	st := openStore(b, b.TempDir())
	defer st.Close()
	tr, err := newTracker(Config{Store: st, Clock: newFakeClock(), Logger: quietLogger()})
	if err != nil {
		b.Fatal(err)
	}
	defer tr.Close()
	if err := tr.SetClusters([]model.Cluster{testCluster("api", 1, nil)}); err != nil {
		b.Fatal(err)
	}
	src := ext(b, "c")
	o := Observation{Cluster: "api", Endpoint: ep1, OK: true, Source: src, Detail: "status 200"}
	b.ReportAllocs()
	for b.Loop() {
		o.Revision++
		if _, err := tr.Observe(o); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkObserveStale(b *testing.B) {
	st := openStore(b, b.TempDir())
	defer st.Close()
	tr, err := newTracker(Config{Store: st, Clock: newFakeClock(), Logger: quietLogger()})
	if err != nil {
		b.Fatal(err)
	}
	defer tr.Close()
	if err := tr.SetClusters([]model.Cluster{testCluster("api", 1, nil)}); err != nil {
		b.Fatal(err)
	}
	o := Observation{Cluster: "api", Endpoint: ep1, OK: true, Source: ext(b, "c"), Revision: 100}
	if _, err := tr.Observe(o); err != nil {
		b.Fatal(err)
	}
	o.Revision = 50
	b.ReportAllocs()
	for b.Loop() {
		if _, err := tr.Observe(o); err != nil {
			b.Fatal(err)
		}
	}
}
