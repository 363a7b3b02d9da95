package health

import (
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/snapgate/snapgate/ctrl/model"
)

// backend is an HTTP server on 127.0.0.1 whose status the test sets, and
// which counts the probes per path.
type backend struct {
	*httptest.Server
	status atomic.Int32
	mu     sync.Mutex
	hits   map[string]int
}

func newBackend(t *testing.T) *backend {
	b := &backend{hits: make(map[string]int)}
	b.status.Store(http.StatusOK)
	b.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.mu.Lock()
		b.hits[r.URL.RequestURI()]++
		b.mu.Unlock()
		w.WriteHeader(int(b.status.Load()))
	}))
	t.Cleanup(b.Close)
	return b
}

func (b *backend) addr() string { return strings.TrimPrefix(b.URL, "http://") }

func (b *backend) hitCount(path string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.hits[path]
}

func openReal(t *testing.T, clusters ...model.Cluster) *Tracker {
	t.Helper()
	st := openStore(t, t.TempDir())
	tr, err := Open(Config{Store: st, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = tr.Close()
		_ = st.Close()
	})
	if err := tr.SetClusters(clusters); err != nil {
		t.Fatal(err)
	}
	return tr
}

// waitPublished polls the published view until cond holds or the bound passes.
func waitPublished(t *testing.T, tr *Tracker, cluster, addr string, bound time.Duration, what string, cond func(EndpointRouting) bool) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		if cr := tr.Routing().Clusters[cluster]; cr != nil {
			if e, ok := cr.Lookup(addr); ok && cond(e) {
				return time.Since(start)
			}
		}
		if time.Since(start) > bound {
			text, _ := tr.Explain(cluster, addr)
			t.Fatalf("%s: not within %v\n%s", what, bound, text)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func oneEndpoint(id, addr string, hc *model.HealthCheck) model.Cluster {
	return model.Cluster{ID: id, Endpoints: []model.Endpoint{{Address: addr}}, Health: hc}
}

// TestHTTPProbeOutAndBack: a failing endpoint leaves rotation within
// interval × N plus propagation, and comes back after M successes.
func TestHTTPProbeOutAndBack(t *testing.T) {
	b := newBackend(t)
	const interval, n, m = 100 * time.Millisecond, 3, 2
	hc := &model.HealthCheck{Type: "http", Path: "/healthz", IntervalMs: 100, TimeoutMs: 50, ExpectedStatuses: []string{"200-204"},
		UnhealthyThreshold: n, HealthyThreshold: m}
	tr := openReal(t, oneEndpoint("api", b.addr(), hc))
	// The first probe waits up to one interval, the flush up to 20 ms and
	// the publication up to 100 ms; the rest is scheduling slack.
	bound := interval*(n+1) + 2*time.Second

	b.status.Store(http.StatusServiceUnavailable)
	took := waitPublished(t, tr, "api", b.addr(), bound, "out of rotation after 503s", func(e EndpointRouting) bool { return !e.Routable })
	t.Logf("out of rotation %v after the backend started failing", took)
	es := endpointStatus(t, tr, "api", b.addr())
	if es.FailStreak < n || !strings.Contains(es.Reason, "status 503") || es.Sources[0].Source != SourceProbe {
		t.Fatalf("status %+v", es)
	}
	b.status.Store(http.StatusNoContent)
	took = waitPublished(t, tr, "api", b.addr(), interval*m+2*time.Second, "back after 204s", func(e EndpointRouting) bool { return e.Routable })
	t.Logf("back in rotation %v after the backend recovered", took)
	if es := endpointStatus(t, tr, "api", b.addr()); !strings.Contains(es.Reason, "healthy_threshold 2") {
		t.Fatalf("reason %q", es.Reason)
	}
	if b.hitCount("/healthz") < n+m {
		t.Fatalf("%d probes of /healthz", b.hitCount("/healthz"))
	}
}

func TestTCPProbe(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var accepted atomic.Int32
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			_ = c.Close()
		}
	}()
	defer func() {
		_ = ln.Close()
		wg.Wait()
	}()
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := closed.Addr().String()
	_ = closed.Close()

	hc := &model.HealthCheck{Type: "tcp", IntervalMs: 100, TimeoutMs: 100, UnhealthyThreshold: 2, HealthyThreshold: 1}
	cl := model.Cluster{ID: "db", Endpoints: []model.Endpoint{{Address: ln.Addr().String()}, {Address: deadAddr}}, Health: hc}
	tr := openReal(t, cl)
	waitPublished(t, tr, "db", deadAddr, 3*time.Second, "closed port out of rotation", func(e EndpointRouting) bool { return !e.Healthy })
	if es := endpointStatus(t, tr, "db", deadAddr); !strings.Contains(es.Reason, "connect refused") {
		t.Fatalf("reason %q", es.Reason)
	}
	// The live listener was probed and stays in.
	deadline := time.Now().Add(3 * time.Second)
	for endpointStatus(t, tr, "db", ln.Addr().String()).OKStreak < 2 {
		if time.Now().After(deadline) {
			t.Fatal("the open port was not probed twice")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if e := publishedOf(t, tr, "db", ln.Addr().String()); !e.Healthy || accepted.Load() < 2 {
		t.Fatalf("open port %+v after %d connections", e, accepted.Load())
	}
}

func TestProbeTimeout(t *testing.T) {
	// Accepts connections (the kernel backlog) but never answers.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	hc := &model.HealthCheck{Type: "http", IntervalMs: 100, TimeoutMs: 50, UnhealthyThreshold: 1}
	tr := openReal(t, oneEndpoint("slow", ln.Addr().String(), hc))
	waitPublished(t, tr, "slow", ln.Addr().String(), 3*time.Second, "silent backend out", func(e EndpointRouting) bool { return !e.Healthy })
	if es := endpointStatus(t, tr, "slow", ln.Addr().String()); !strings.Contains(es.Reason, "timeout after 50ms") {
		t.Fatalf("reason %q", es.Reason)
	}
}

// TestProbesFollowConfiguration: a changed path restarts the probe, a
// removed cluster stops it, and Close leaves no probe running.
func TestProbesFollowConfiguration(t *testing.T) {
	b := newBackend(t)
	hc := func(path string) *model.HealthCheck {
		return &model.HealthCheck{Type: "http", Path: path, IntervalMs: 100, TimeoutMs: 100}
	}
	st := openStore(t, t.TempDir())
	defer st.Close()
	tr, err := Open(Config{Store: st, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	waitHits := func(path string) {
		t.Helper()
		deadline := time.Now().Add(3 * time.Second)
		for b.hitCount(path) == 0 {
			if time.Now().After(deadline) {
				t.Fatalf("no probe of %s", path)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	if err := tr.SetClusters([]model.Cluster{oneEndpoint("api", b.addr(), hc("/a"))}); err != nil {
		t.Fatal(err)
	}
	waitHits("/a")
	if err := tr.SetClusters([]model.Cluster{oneEndpoint("api", b.addr(), hc("/b?deep=1"))}); err != nil {
		t.Fatal(err)
	}
	// SetClusters returned after the old probe stopped; a request it had
	// in flight may still reach the handler, so settle before counting.
	waitHits("/b?deep=1")
	before := b.hitCount("/a")
	time.Sleep(300 * time.Millisecond)
	if got := b.hitCount("/a"); got != before {
		t.Fatalf("old path probed %d more times after reconfiguration", got-before)
	}
	// Without a probe type the cluster is not probed.
	if err := tr.SetClusters([]model.Cluster{oneEndpoint("api", b.addr(), nil)}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	stopped := b.hitCount("/b?deep=1")
	time.Sleep(300 * time.Millisecond)
	if got := b.hitCount("/b?deep=1"); got != stopped {
		t.Fatalf("%d probes after the probe was removed", got-stopped)
	}
	if err := tr.SetClusters([]model.Cluster{oneEndpoint("api", b.addr(), hc("/c"))}); err != nil {
		t.Fatal(err)
	}
	waitHits("/c")
	if err := tr.Close(); err != nil {
		t.Fatal(err)
	}
	if n := len(tr.probers); n != 0 {
		t.Fatalf("%d probers after Close", n)
	}
	time.Sleep(100 * time.Millisecond)
	closed := b.hitCount("/c")
	time.Sleep(300 * time.Millisecond)
	if got := b.hitCount("/c"); got != closed {
		t.Fatalf("%d probes after Close", got-closed)
	}
}

func TestClip(t *testing.T) {
	if got := clip("a\nb\x7f" + strings.Repeat("x", 300)); len(got) != MaxDetailLen || strings.ContainsAny(got, "\n\x7f") {
		t.Fatalf("clip = %q", got)
	}
}

// A threshold met inside min_hold_ms by a probe result that repeats the one
// before takes effect when the hold ends, with no later observation: the
// loop used to be told only of changed results, so no timer was armed for
// the hold's end and the transition waited for the next probe (up to one
// interval_ms later; here, never, since the results come from the test).
func TestHoldEndArmedByRepeatedProbe(t *testing.T) {
	const addr = "10.0.0.1:80"
	hc := &model.HealthCheck{UnhealthyThreshold: 1, HealthyThreshold: 1, MinHoldMs: 300}
	tr := openReal(t, oneEndpoint("api", addr, hc))
	probe := func(rev uint64, ok bool) {
		t.Helper()
		if _, err := tr.Observe(Observation{Cluster: "api", Endpoint: addr, OK: ok, Source: SourceProbe, Revision: rev}); err != nil {
			t.Fatal(err)
		}
	}
	probe(1, true)
	// Past the first hold, an edge reports a failure: out at once, and a
	// new hold of 300 ms starts.
	time.Sleep(400 * time.Millisecond)
	src, _ := EdgeSource("edge-1")
	if _, err := tr.Observe(Observation{Cluster: "api", Endpoint: addr, OK: false, Source: src, Revision: 1}); err != nil {
		t.Fatal(err)
	}
	waitPublished(t, tr, "api", addr, 2*time.Second, "out", func(e EndpointRouting) bool { return !e.Healthy })
	probe(2, true) // the same result as the probe before: M=1 is met inside the hold
	waitPublished(t, tr, "api", addr, 3*time.Second, "back when the hold ends", func(e EndpointRouting) bool { return e.Healthy })
}

// Probes start interval_ms ± jitter apart whatever each one took: counted
// from a probe's end, a backend that hangs was probed every interval +
// timeout (here 2 s instead of 1 s), past the documented detection bound.
func TestProbePeriodOfHangingBackend(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var accepts []time.Time
	var conns []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			accepts, conns = append(accepts, time.Now()), append(conns, c) // never answered
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	hc := &model.HealthCheck{Type: "http", Path: "/healthz", IntervalMs: 1000, TimeoutMs: 1000, UnhealthyThreshold: 3, HealthyThreshold: 1}
	tr := openReal(t, oneEndpoint("api", ln.Addr().String(), hc))
	waitPublished(t, tr, "api", ln.Addr().String(), 10*time.Second, "out", func(e EndpointRouting) bool { return !e.Healthy })
	mu.Lock()
	defer mu.Unlock()
	for i := 1; i < len(accepts); i++ {
		if gap := accepts[i].Sub(accepts[i-1]); gap > 1500*time.Millisecond {
			t.Errorf("probes %d and %d started %v apart with interval_ms 1000", i, i+1, gap)
		}
	}
}
