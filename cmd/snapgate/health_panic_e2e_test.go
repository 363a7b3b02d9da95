package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/snapgate/snapgate/ctrl/admin"
)

// TestHealthPanicAndSlowStartEndToEnd: a cluster of four real backends
// with a panic threshold of 50 % and slow start. Three fail their health
// check: ctrl says panic (ctl health, metrics) and the edge sends requests
// to all four. One comes back: the panic ends and the returning endpoint's
// share of the requests ramps up over the slow-start window. Shares are
// counted at the backends; the loops are bounded by time, the assertions
// are on counts only.
func TestHealthPanicAndSlowStartEndToEnd(t *testing.T) {
	names := []string{"A", "B", "C", "D"}
	bs := make([]*healthTarget, len(names))
	var eps []string
	for i, n := range names {
		bs[i] = healthBackend(t, n)
		eps = append(eps, fmt.Sprintf(`{"address":%q}`, bs[i].addr))
	}
	g := newGateway(t)
	g.startCtrl()
	g.startEdge()

	// A probe that times out counts as a failure: on a busy machine a
	// short timeout could take A out and give it a ramp of its own, so the
	// probe is patient and needs three failures.
	const slowStart = 6 * time.Second
	doc := fmt.Sprintf(`{"id":"api","endpoints":[%s],
		"health":{"type":"http","path":"/healthz","interval_ms":500,"timeout_ms":500,"unhealthy_threshold":3,"healthy_threshold":2,
		"panic_threshold_percent":50,"slow_start_ms":%d}}`, strings.Join(eps, ","), slowStart.Milliseconds())
	file := filepath.Join(g.dir, "cluster.json")
	if err := os.WriteFile(file, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	g.mustCtl("cluster", "put", "-f", file)
	g.mustCtl("route", "put", "--id", "all", "--prefix", "/", "--cluster", "api")
	for _, n := range names {
		g.waitBody(5*time.Second, "/x", n+" /x")
	}

	// Panic: one healthy of four is below 50 %.
	for _, b := range bs[1:] {
		b.failing.Store(true)
	}
	var st admin.ClusterHealth
	waitFor(t, 15*time.Second, "ctl health to report the cluster in panic", func() bool {
		st = clusterHealth(t, g)
		return st.PublishedPanic && st.Healthy == 1
	})
	for _, e := range st.Endpoints {
		if !e.Routable {
			t.Errorf("in panic, %s is not routable: %+v", e.Address, e)
		}
	}
	out := g.mustCtl("health", "api")
	if !strings.Contains(out, "1 of 4 healthy") || !strings.Contains(out, "panic below 50%") || strings.Count(out, " YES ") != 4 {
		t.Errorf("ctl health in panic:\n%s", out)
	}
	if v := ctrlMetric(t, g, "snapgate_ctrl_health_panic_clusters"); v != "1" {
		t.Errorf("snapgate_ctrl_health_panic_clusters = %q, want 1", v)
	}
	// The edge may still run the snapshot before the panic: wait for a
	// batch in which every endpoint, failing or not, gets its share.
	waitFor(t, 15*time.Second, "the edge to spread requests over all four endpoints", func() bool {
		got := sendBatch(t, g, bs, 200)
		for _, n := range got {
			if n < int64(200/len(bs)/2) {
				return false
			}
		}
		return true
	})

	// D comes back: two of four healthy is no panic, B and C get nothing,
	// and D ramps up from 10 % of its share.
	d := bs[3]
	d.failing.Store(false)
	waitFor(t, 15*time.Second, "ctl health to report D healthy and no panic", func() bool {
		st = clusterHealth(t, g)
		return !st.PublishedPanic && st.Healthy == 2
	})
	var recovered time.Time
	for _, e := range st.Endpoints {
		switch e.Address {
		case d.addr:
			recovered = e.RecoveredAt
		case bs[0].addr:
			if !e.RecoveredAt.IsZero() {
				t.Fatalf("A was taken out and ramps too (probe timeouts on a busy machine?): %+v", e)
			}
		}
	}
	if recovered.IsZero() {
		t.Fatalf("ctl health gives no recovery time for D: %+v", st)
	}
	// Batches of requests until the window has passed, counting D's
	// share of each once the edge has dropped the panic (B and C idle).
	var shares []float64
	var at []string // time since the recovery, per batch, for the log
	end := recovered.Add(slowStart + time.Second)
	for deadline := time.Now().Add(slowStart + 30*time.Second); time.Now().Before(deadline); {
		got := sendBatch(t, g, bs, 200)
		if got[1]+got[2] > 0 {
			if len(shares) > 0 {
				t.Fatalf("B or C got requests after the panic ended: %v", got)
			}
			continue
		}
		shares = append(shares, float64(got[3])/float64(got[0]+got[3]))
		at = append(at, time.Since(recovered).Round(100*time.Millisecond).String())
		if time.Now().After(end) && len(shares) >= 6 {
			break
		}
	}
	t.Logf("D's share per batch of 200 requests: %.2f, at %v after its recovery", shares, at)
	if len(shares) < 6 || time.Now().Before(end) {
		t.Fatalf("only %d batches before the deadline: %.2f", len(shares), shares)
	}
	third := len(shares) / 3
	early, late := mean(shares[:third]), mean(shares[len(shares)-third:])
	full := shares[len(shares)-1]
	if shares[0] > full/2 || early > late-0.15 || full < 0.2 {
		t.Errorf("no ramp: first batch %.2f, first third %.2f, last third %.2f, last %.2f", shares[0], early, late, full)
	}
	peak := 0.0
	for i, s := range shares {
		if s < peak-0.25 {
			t.Errorf("batch %d: share %.2f fell far below the earlier %.2f: %.2f", i, s, peak, shares)
		}
		peak = max(peak, s)
	}
}

// clusterHealth returns ctl health's view of cluster api.
func clusterHealth(t *testing.T, g *gateway) admin.ClusterHealth {
	t.Helper()
	var st admin.HealthStatus
	if err := json.Unmarshal([]byte(g.mustCtl("-o", "json", "health", "api")), &st); err != nil || len(st.Clusters) != 1 {
		t.Fatalf("ctl -o json health api: %+v, %v", st, err)
	}
	return st.Clusters[0]
}

// sendBatch sends n requests through the edge and returns how many each
// backend served meanwhile.
func sendBatch(t *testing.T, g *gateway, bs []*healthTarget, n int) []int64 {
	t.Helper()
	before := make([]int64, len(bs))
	for i, b := range bs {
		before[i] = b.served.Load()
	}
	for i := range n {
		if code, body, err := g.get("", "/r"); err != nil || code != 200 {
			t.Fatalf("request %d: %d %q %v", i, code, body, err)
		}
	}
	got := make([]int64, len(bs))
	for i, b := range bs {
		got[i] = b.served.Load() - before[i]
	}
	return got
}

// ctrlMetric returns the value of series on ctrl's /metrics, "" if absent.
func ctrlMetric(t *testing.T, g *gateway, series string) string {
	t.Helper()
	resp, err := http.Get("http://" + g.ctrlMetrics + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

func mean(xs []float64) float64 {
	sum := 0.0
	for _, x := range xs {
		sum += x
	}
	return sum / float64(len(xs))
}
