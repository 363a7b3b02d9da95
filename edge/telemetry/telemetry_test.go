package telemetry

import (
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/snapgate/snapgate/edge/upstream"
)

// serveAdmin starts m's admin listener on 127.0.0.1 and stops it at the
// end of the test.
func serveAdmin(t *testing.T, m *Metrics) string {
	t.Helper()
	a, err := m.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- a.Serve() }()
	t.Cleanup(func() {
		a.Close()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return "http://" + a.Addr().String()
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// value returns the sample value of the series named exactly series.
func value(t *testing.T, text, series string) float64 {
	t.Helper()
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`)
	m := re.FindStringSubmatch(text)
	if m == nil {
		t.Fatalf("series %s missing from:\n%s", series, text)
	}
	v, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		t.Fatalf("series %s: %v", series, err)
	}
	return v
}

func TestMetricsOverHTTP(t *testing.T) {
	m := New()
	base := serveAdmin(t, m)

	if code, body := get(t, base+"/healthz"); code != 503 || !strings.Contains(body, "no snapshot") {
		t.Fatalf("healthz before a snapshot: %d %q", code, body)
	}
	_, text := get(t, base+"/metrics")
	allocs0 := value(t, text, "snapgate_edge_heap_allocs_objects_total")
	for _, s := range []string{
		`snapgate_edge_errors_total{cause="no_route"}`,
		`snapgate_edge_requests_total{route="",class="4xx"}`,
		"snapgate_edge_client_connections",
		"snapgate_edge_snapshot_version",
		`snapgate_edge_upstream_response_seconds_count`,
	} {
		if v := value(t, text, s); v != 0 {
			t.Fatalf("%s = %v before any traffic", s, v)
		}
	}

	rc := m.Route([]byte(`api "v1"`))
	if m.Route([]byte(`api "v1"`)) != rc {
		t.Fatal("Route must return the same counters for the same id")
	}
	rc.Observe(200)
	rc.Observe(204)
	rc.Observe(503)
	m.Route(nil).Observe(404)
	m.Error(CauseNoRoute)
	m.ObserveUpstream(3 * time.Millisecond)
	m.ConnOpened()
	m.ConnOpened()
	m.ConnClosed()
	m.SetVersion(42)

	if code, body := get(t, base+"/healthz"); code != 200 || !strings.Contains(body, "version 42") {
		t.Fatalf("healthz: %d %q", code, body)
	}
	_, text = get(t, base+"/metrics")
	for series, want := range map[string]float64{
		`snapgate_edge_requests_total{route="api \"v1\"",class="2xx"}`: 2,
		`snapgate_edge_requests_total{route="api \"v1\"",class="5xx"}`: 1,
		`snapgate_edge_requests_total{route="",class="4xx"}`:           1,
		`snapgate_edge_errors_total{cause="no_route"}`:                 1,
		`snapgate_edge_upstream_response_seconds_count`:                1,
		`snapgate_edge_upstream_response_seconds_bucket{le="0.0016"}`:  0,
		`snapgate_edge_upstream_response_seconds_bucket{le="0.0032"}`:  1,
		"snapgate_edge_client_connections":                             1,
		"snapgate_edge_snapshot_version":                               42,
	} {
		if v := value(t, text, series); v != want {
			t.Errorf("%s = %v, want %v", series, v, want)
		}
	}
	if v := value(t, text, "snapgate_edge_heap_allocs_objects_total"); v <= allocs0 {
		t.Errorf("heap allocations did not move: %v then %v", allocs0, v)
	}
	if code, _ := get(t, base+"/debug/pprof/"); code != 404 {
		t.Fatalf("pprof served without EnablePprof: %d", code)
	}
}

func TestPprofOptIn(t *testing.T) {
	m := New()
	m.EnablePprof()
	base := serveAdmin(t, m)
	if code, body := get(t, base+"/debug/pprof/"); code != 200 || !strings.Contains(body, "goroutine") {
		t.Fatalf("pprof index: %d", code)
	}
}

func TestRouteCountersDoNotAllocate(t *testing.T) {
	m := New()
	id := []byte("r1")
	m.Route(id)
	if n := testing.AllocsPerRun(100, func() { m.Route(id).Observe(200) }); n != 0 {
		t.Fatalf("%v allocs per lookup and count", n)
	}
}

func TestStalenessMetrics(t *testing.T) {
	m := New()
	base := serveAdmin(t, m)

	// No source, or a source that never confirmed: infinitely stale.
	_, text := get(t, base+"/metrics")
	if v := value(t, text, "snapgate_edge_staleness_seconds"); !math.IsInf(v, 1) {
		t.Fatalf("staleness without a source = %v, want +Inf", v)
	}
	var confirmed atomic.Int64 // unix nanos, 0 = never
	m.SetFreshness(func() (uint64, time.Time) {
		if n := confirmed.Load(); n != 0 {
			return 7, time.Unix(0, n)
		}
		return 7, time.Time{}
	})
	m.SetVersion(7)
	_, text = get(t, base+"/metrics")
	if v := value(t, text, "snapgate_edge_staleness_seconds"); !math.IsInf(v, 1) {
		t.Fatalf("staleness before any confirmation = %v, want +Inf", v)
	}
	if v := value(t, text, "snapgate_edge_snapshot_confirmed_timestamp_seconds"); v != 0 {
		t.Fatalf("confirmed timestamp before any confirmation = %v, want 0", v)
	}

	// Confirmed 90 s ago: the gauge is computed at scrape time.
	at := time.Now().Add(-90 * time.Second)
	confirmed.Store(at.UnixNano())
	_, text = get(t, base+"/metrics")
	if v := value(t, text, "snapgate_edge_staleness_seconds"); v < 90 || v > 150 {
		t.Fatalf("staleness = %v s, want about 90", v)
	}
	if v := value(t, text, "snapgate_edge_snapshot_confirmed_timestamp_seconds"); math.Abs(v-float64(at.UnixNano())/1e9) > 0.01 {
		t.Fatalf("confirmed timestamp = %v, want %v", v, float64(at.Unix()))
	}
	if v := value(t, text, "snapgate_edge_snapshot_version"); v != 7 {
		t.Fatalf("version = %v, want 7", v)
	}

	m.Error(CauseStale)
	m.StaleServed()
	m.StaleServed()
	_, text = get(t, base+"/metrics")
	if v := value(t, text, `snapgate_edge_errors_total{cause="stale_snapshot"}`); v != 1 {
		t.Fatalf("stale rejections = %v, want 1", v)
	}
	if v := value(t, text, "snapgate_edge_stale_served_total"); v != 2 {
		t.Fatalf("stale served = %v, want 2", v)
	}
	// A confirmation in the (clock-skewed) future never reads negative.
	confirmed.Store(time.Now().Add(time.Hour).UnixNano())
	if d := m.Staleness(time.Now()); d != 0 {
		t.Fatalf("staleness with a future confirmation = %v, want 0", d)
	}
}

// TestEjectionsOverHTTP: an endpoint ejected in a real upstream.Registry
// shows on /metrics while ejected, with its cause and end time, and its
// series disappear when a success ends the ejection.
func TestEjectionsOverHTTP(t *testing.T) {
	reg := upstream.NewRegistry(upstream.Options{EjectBase: time.Minute, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	defer reg.Close()
	m := New()
	m.SetEjections(reg.Ejections)
	base := serveAdmin(t, m)

	_, body := get(t, base+"/metrics")
	if v := value(t, body, "snapgate_edge_endpoints_ejected"); v != 0 {
		t.Fatalf("ejected endpoints before any failure: %v", v)
	}
	if strings.Contains(body, "snapgate_edge_endpoint_ejected{") {
		t.Fatalf("per-endpoint series before any ejection:\n%s", body)
	}

	p := reg.Acquire("127.0.0.1:9")
	defer reg.Release(p)
	before := time.Now()
	p.ReportFailure(upstream.FailConnect)
	_, body = get(t, base+"/metrics")
	if v := value(t, body, "snapgate_edge_endpoints_ejected"); v != 1 {
		t.Fatalf("snapgate_edge_endpoints_ejected = %v, want 1", v)
	}
	if v := value(t, body, `snapgate_edge_endpoint_ejected{addr="127.0.0.1:9",cause="connect-failure"}`); v != 1 {
		t.Fatalf("ejected series = %v, want 1", v)
	}
	until := value(t, body, `snapgate_edge_endpoint_ejected_until_timestamp_seconds{addr="127.0.0.1:9"}`)
	if lo, hi := float64(before.Add(time.Minute).Unix())-1, float64(time.Now().Add(time.Minute).Unix())+1; until < lo || until > hi {
		t.Fatalf("ejected until %v, want within [%v, %v]", until, lo, hi)
	}

	p.ReportSuccess()
	_, body = get(t, base+"/metrics")
	if v := value(t, body, "snapgate_edge_endpoints_ejected"); v != 0 || strings.Contains(body, "snapgate_edge_endpoint_ejected{") {
		t.Fatalf("after a success the ejection still shows (count %v):\n%s", v, body)
	}
}

// TestPolicyCounters: a policy keeps its series across snapshots (the same
// counters for the same id), and counting a decision does not allocate.
func TestPolicyCounters(t *testing.T) {
	m := New()
	first := m.Policies([]string{"api", `we"ird`})
	again := m.Policies([]string{"other", "api"})
	if again[1] != first[0] {
		t.Fatal("policy api got new counters in a later snapshot")
	}
	first[0].Observe(OutcomeOK)
	first[0].Observe(OutcomeRateLimited)
	first[1].Observe(OutcomeUnauthorized)
	if n := testing.AllocsPerRun(100, func() { first[0].Observe(OutcomeForbidden) }); n != 0 {
		t.Fatalf("Observe: %v allocs", n)
	}
	var b strings.Builder
	m.WritePrometheus(&b)
	for _, want := range []string{
		`snapgate_edge_auth_decisions_total{policy="api",outcome="ok"} 1`,
		`snapgate_edge_auth_decisions_total{policy="api",outcome="429"} 1`,
		`snapgate_edge_auth_decisions_total{policy="api",outcome="403"} 101`,
		`snapgate_edge_auth_decisions_total{policy="we\"ird",outcome="401"} 1`,
		`snapgate_edge_auth_decisions_total{policy="other",outcome="ok"} 0`,
		`snapgate_edge_errors_total{cause="rate_limited"} 0`,
	} {
		if !strings.Contains(b.String(), want+"\n") {
			t.Errorf("missing %s", want)
		}
	}
}

// BenchmarkRouteFirstRequest is a route's first request ever: its counters
// are made. The cost must not grow with the routes seen before (it did
// with a copy-on-write map: each new route copied all the others).
func BenchmarkRouteFirstRequest(b *testing.B) {
	for _, seen := range []int{1000, 20000} {
		b.Run(fmt.Sprintf("seen=%d", seen), func(b *testing.B) {
			m := New()
			for i := range seen {
				m.Route([]byte("seen-" + strconv.Itoa(i)))
			}
			ids := make([][]byte, b.N)
			for i := range ids {
				ids[i] = []byte("new-" + strconv.Itoa(i))
			}
			b.ResetTimer()
			for i := range b.N {
				m.Route(ids[i])
			}
		})
	}
}
