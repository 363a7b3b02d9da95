package proxy

import (
	"bufio"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/snapgate/snapgate/edge/telemetry"
	"github.com/snapgate/snapgate/fbs"
)

// settableFreshness is a freshness source the test moves by hand: what
// feed.Client.Freshness reports after a heartbeat (Confirm) or after a
// boot from disk with ctrl unreachable (Never).
type settableFreshness struct{ at atomic.Int64 } // unix nanos, 0 = never

func (f *settableFreshness) Confirm(at time.Time) { f.at.Store(at.UnixNano()) }
func (f *settableFreshness) Never()               { f.at.Store(0) }
func (f *settableFreshness) Freshness() (uint64, time.Time) {
	if n := f.at.Load(); n != 0 {
		return 1, time.Unix(0, n)
	}
	return 1, time.Time{}
}

// stalenessFixture serves three routes over one backend that also tries
// to set the staleness field itself:
// /reject (bound 100 ms, reject), /serve (bound 100 ms, serve, header) and
// /plain (no bound, no header).
func stalenessFixture(t *testing.T, fresh FreshnessFunc) (dial func() *client, hits *atomic.Int64, m *telemetry.Metrics) {
	t.Helper()
	hits = new(atomic.Int64)
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.Header().Set("X-Snapgate-Staleness", "0") // spoof attempt
		w.Write([]byte("ok " + r.URL.Path))
	}))
	t.Cleanup(be.Close)
	st := fbs.State{Version: 1,
		Clusters: []fbs.Cluster{{Name: "c", Endpoints: []fbs.Endpoint{{Address: be.Listener.Addr().String()}}}},
		Routes: []fbs.Route{
			{ID: "reject", Host: "*", Prefix: "/reject", Cluster: "c", MaxStalenessMs: 100, OnStaleReject: true},
			{ID: "serve", Host: "*", Prefix: "/serve", Cluster: "c", MaxStalenessMs: 100, StaleHeader: true},
			{ID: "plain", Host: "*", Prefix: "/plain", Cluster: "c"},
		}}
	addr, m := startProxy(t, st, func(c *Config) { c.Freshness = fresh })
	dial = func() *client {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		t.Cleanup(func() { c.Close() })
		return &client{t: t, c: c, br: bufio.NewReader(c)}
	}
	return dial, hits, m
}

func hasSample(t *testing.T, m *telemetry.Metrics, sample string) {
	t.Helper()
	var b strings.Builder
	m.WritePrometheus(&b)
	if !strings.Contains(b.String(), sample+"\n") {
		t.Errorf("metrics lack %s:\n%s", sample, b.String())
	}
}

func stalenessMs(t *testing.T, r result) int64 {
	t.Helper()
	vs := r.header.Values("X-Snapgate-Staleness")
	if len(vs) != 1 {
		t.Fatalf("X-Snapgate-Staleness = %q, want exactly one", vs)
	}
	n, err := strconv.ParseInt(vs[0], 10, 64)
	if err != nil {
		t.Fatalf("X-Snapgate-Staleness %q is not milliseconds", vs[0])
	}
	return n
}

func TestStaleRouteRejects(t *testing.T) {
	var f settableFreshness
	dial, hits, m := stalenessFixture(t, f.Freshness)
	c := dial()

	f.Confirm(time.Now())
	if r := c.do(get("a", "/reject/x")); r.status != 200 || r.body != "ok /reject/x" {
		t.Fatalf("fresh: %d %q, want the backend's 200", r.status, r.body)
	}

	f.Confirm(time.Now().Add(-time.Second))
	before := hits.Load()
	r := c.do(get("a", "/reject/x"))
	if r.status != 503 || r.body != "snapshot stale\n" || r.header.Get("Retry-After") != "5" || r.close {
		t.Fatalf("stale: %d %q Retry-After %q close %v, want 503 \"snapshot stale\", Retry-After 5, keep-alive",
			r.status, r.body, r.header.Get("Retry-After"), r.close)
	}
	if r.header.Get("X-Snapgate-Staleness") != "" {
		t.Fatalf("route without stale_header got %q", r.header.Get("X-Snapgate-Staleness"))
	}
	// A buffered body is skipped and the connection stays usable.
	r = c.do("POST /reject/x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello")
	if r.status != 503 || r.close {
		t.Fatalf("stale POST: %d close %v", r.status, r.close)
	}
	// Never confirmed since boot (booted from disk, ctrl unreachable).
	f.Never()
	if r := c.do(get("a", "/reject/x")); r.status != 503 {
		t.Fatalf("never confirmed: %d, want 503", r.status)
	}
	if hits.Load() != before {
		t.Fatalf("a stale request reached the backend (%d hits)", hits.Load()-before)
	}
	// Unbounded routes serve whatever the freshness.
	if r := c.do(get("a", "/plain")); r.status != 200 || r.header.Get("X-Snapgate-Staleness") != "" {
		t.Fatalf("plain route while stale: %d, staleness field %q (the backend's must be dropped)", r.status, r.header.Get("X-Snapgate-Staleness"))
	}
	// ctrl is back: fresh again.
	f.Confirm(time.Now())
	if r := c.do(get("a", "/reject/y")); r.status != 200 || r.body != "ok /reject/y" {
		t.Fatalf("fresh again: %d %q", r.status, r.body)
	}
	hasSample(t, m, `snapgate_edge_errors_total{cause="stale_snapshot"} 3`)
	hasSample(t, m, `snapgate_edge_requests_total{route="reject",class="5xx"} 3`)
	hasSample(t, m, `snapgate_edge_stale_served_total 0`)
}

func TestStaleRouteServesWithHeader(t *testing.T) {
	var f settableFreshness
	dial, hits, m := stalenessFixture(t, f.Freshness)
	c := dial()

	f.Confirm(time.Now())
	r := c.do(get("a", "/serve"))
	if r.status != 200 {
		t.Fatalf("fresh: %d", r.status)
	}
	if ms := stalenessMs(t, r); ms < 0 || ms >= 60_000 {
		t.Fatalf("fresh staleness %d ms", ms)
	}

	f.Confirm(time.Now().Add(-90 * time.Second))
	r = c.do(get("a", "/serve"))
	if r.status != 200 || r.body != "ok /serve" {
		t.Fatalf("stale serve route: %d %q, want the backend's answer", r.status, r.body)
	}
	if ms := stalenessMs(t, r); ms < 90_000 || ms > 150_000 {
		t.Fatalf("staleness %d ms, want about 90000", ms)
	}

	f.Never()
	r = c.do(get("a", "/serve"))
	if r.status != 200 || r.header.Values("X-Snapgate-Staleness")[0] != "unconfirmed" {
		t.Fatalf("never confirmed: %d %q", r.status, r.header.Values("X-Snapgate-Staleness"))
	}
	if hits.Load() != 3 {
		t.Fatalf("backend hits %d, want 3", hits.Load())
	}
	hasSample(t, m, `snapgate_edge_stale_served_total 2`)
	hasSample(t, m, `snapgate_edge_errors_total{cause="stale_snapshot"} 0`)
}

func TestStaleMetricsAndNilSource(t *testing.T) {
	// No source: nothing ever confirmed the snapshot, so bounded routes
	// are stale (fail closed) and the header says unconfirmed.
	st := fbs.State{Version: 1,
		Clusters: []fbs.Cluster{{Name: "c", Endpoints: []fbs.Endpoint{{Address: "127.0.0.1:1"}}}},
		Routes: []fbs.Route{
			{ID: "reject", Host: "*", Prefix: "/", Cluster: "c", MaxStalenessMs: 100, OnStaleReject: true, StaleHeader: true},
		}}
	addr, m := startProxy(t, st, func(c *Config) { c.StaleRetryAfter = 1500 * time.Millisecond })
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	c := &client{t: t, c: conn, br: bufio.NewReader(conn)}
	r := c.do(get("a", "/"))
	if r.status != 503 || r.header.Get("Retry-After") != "2" || r.header.Get("X-Snapgate-Staleness") != "unconfirmed" {
		t.Fatalf("nil source: %d Retry-After %q staleness %q, want 503, 2 (1.5s rounded up), unconfirmed",
			r.status, r.header.Get("Retry-After"), r.header.Get("X-Snapgate-Staleness"))
	}
	hasSample(t, m, `snapgate_edge_errors_total{cause="stale_snapshot"} 1`)
	hasSample(t, m, `snapgate_edge_requests_total{route="reject",class="5xx"} 1`)
}
