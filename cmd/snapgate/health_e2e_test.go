package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/snapgate/snapgate/ctrl/admin"
)

// healthTarget is a backend whose /healthz fails (503) while failing is
// set; every other path answers with its name and is counted in served.
type healthTarget struct {
	addr    string
	failing atomic.Bool
	served  atomic.Int64
}

func healthBackend(t *testing.T, name string) *healthTarget {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h := &healthTarget{addr: ln.Addr().String()}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		if r.URL.Path == "/healthz" {
			if h.failing.Load() {
				w.WriteHeader(http.StatusServiceUnavailable)
			}
			return
		}
		h.served.Add(1)
		fmt.Fprintf(w, "%s %s", name, r.URL.Path)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return h
}

// TestHealthEndToEnd: ctrl probes two real backends; one starts failing
// its health path and every request goes to the other within the bound
// docs/health.md gives; it recovers and gets traffic again. ctl health,
// explain-health and report-health show and take the state.
func TestHealthEndToEnd(t *testing.T) {
	ha, hb := healthBackend(t, "A"), healthBackend(t, "B")
	a, b, aFailing := ha.addr, hb.addr, &ha.failing
	g := newGateway(t)
	g.startCtrl()
	g.startEdge()

	const interval, n, m = 100, 2, 2
	doc := fmt.Sprintf(`{"id":"api","endpoints":[{"address":%q},{"address":%q}],
		"health":{"type":"http","path":"/healthz","interval_ms":%d,"timeout_ms":%d,"unhealthy_threshold":%d,"healthy_threshold":%d}}`,
		a, b, interval, interval, n, m)
	file := filepath.Join(g.dir, "cluster.json")
	if err := os.WriteFile(file, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	g.mustCtl("cluster", "put", "-f", file)
	g.mustCtl("route", "put", "--id", "all", "--prefix", "/", "--cluster", "api")
	g.waitBody(5*time.Second, "/x", "A /x")
	g.waitBody(5*time.Second, "/x", "B /x")

	// Out of rotation within interval × (N + 1) + publication and
	// propagation; the slack keeps a loaded machine from failing it.
	bound := time.Duration(interval*(n+1))*time.Millisecond + 5*time.Second
	aFailing.Store(true)
	onlyB(t, g, bound)
	for i := range 50 {
		if code, body, err := g.get("", "/y"); err != nil || code != 200 || !strings.HasPrefix(body, "B") {
			t.Fatalf("request %d with A out: %d %q %v", i, code, body, err)
		}
	}
	out := g.mustCtl("health", "api")
	if !strings.Contains(out, a) || !strings.Contains(out, "UNHEALTHY") || !strings.Contains(out, "FAIL probe@") {
		t.Fatalf("ctl health while A fails:\n%s", out)
	}
	var st admin.HealthStatus
	if err := json.Unmarshal([]byte(g.mustCtl("-o", "json", "health")), &st); err != nil {
		t.Fatal(err)
	}
	if len(st.Clusters) != 1 || st.Clusters[0].Healthy != 1 || st.Clusters[0].Endpoints[0].Routable {
		t.Fatalf("ctl -o json health: %+v", st)
	}
	if out := g.mustCtl("explain-health", "api/"+a); !strings.Contains(out, "UNHEALTHY since") || !strings.Contains(out, "routable: no") {
		t.Fatalf("ctl explain-health:\n%s", out)
	}

	aFailing.Store(false)
	g.waitBody(time.Duration(interval*(m+1))*time.Millisecond+5*time.Second, "/z", "A /z")
	if out := g.mustCtl("health"); strings.Contains(out, "UNHEALTHY") {
		t.Fatalf("ctl health after recovery:\n%s", out)
	}

	out = g.mustCtl("report-health", "--cluster", "api", "--endpoint", b, "--state", "healthy", "--revision", "7", "--source", "e2e", "--detail", "checked")
	if !strings.HasPrefix(out, "accepted: external:e2e revision 7") {
		t.Fatalf("report-health: %q", out)
	}
	out = g.mustCtl("report-health", "--cluster", "api", "--endpoint", b, "--state", "unhealthy", "--revision", "7", "--source", "e2e")
	if !strings.HasPrefix(out, "duplicate: external:e2e revision 7") {
		t.Fatalf("repeated report-health: %q", out)
	}
	if code, out := g.ctl("report-health", "--cluster", "api", "--endpoint", "10.9.9.9:1", "--state", "healthy", "--revision", "1"); code != 1 || !strings.Contains(out, "not_found") {
		t.Fatalf("report-health of an unknown endpoint: exit %d %q", code, out)
	}
}

// onlyB waits until 20 requests in a row reach B.
func onlyB(t *testing.T, g *gateway, within time.Duration) {
	t.Helper()
	inRow := 0
	waitFor(t, within, "every request to go to B", func() bool {
		if code, body, err := g.get("", "/w"); err == nil && code == 200 && strings.HasPrefix(body, "B") {
			inRow++
		} else {
			inRow = 0
		}
		return inRow >= 20
	})
}
