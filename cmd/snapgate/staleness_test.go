package main

import (
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// getStaleness sends one request through the edge and returns status,
// body and the X-Snapgate-Staleness field.
func (g *gateway) getStaleness(path string) (int, string, string) {
	g.t.Helper()
	client := &http.Client{Timeout: 3 * time.Second}
	resp, err := client.Get("http://" + g.web + path)
	if err != nil {
		g.t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header.Get("X-Snapgate-Staleness")
}

// edgeMetric scrapes the edge's admin listener for one unlabelled series.
func (g *gateway) edgeMetric(name string) float64 {
	g.t.Helper()
	client := &http.Client{Timeout: 3 * time.Second}
	resp, err := client.Get("http://" + g.admin + "/metrics")
	if err != nil {
		g.t.Fatalf("scrape edge metrics: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + ` (\S+)$`).FindSubmatch(b)
	if m == nil {
		g.t.Fatalf("edge metrics lack %s", name)
	}
	v, err := strconv.ParseFloat(string(m[1]), 64)
	if err != nil {
		g.t.Fatalf("%s: %v", name, err)
	}
	return v
}

func (g *gateway) putRouteJSON(doc string) {
	g.t.Helper()
	f := filepath.Join(g.dir, "route.json")
	if err := os.WriteFile(f, []byte(doc), 0o600); err != nil {
		g.t.Fatal(err)
	}
	g.mustCtl("route", "put", "-f", f)
}

// TestStaleness is invariant P6 end to end: with ctrl up a route with a
// reject bound serves; with ctrl killed it answers 503 "snapshot stale"
// once the bound has passed while a serve route keeps forwarding and says
// how stale it is; with ctrl back both are fresh again.
func TestStaleness(t *testing.T) {
	a := backend(t, "A")
	g := newGateway(t)
	ctrl := g.startCtrl()
	g.startEdge()
	g.mustCtl("cluster", "put", "--id", "a", "--endpoint", a)

	// A bound tighter than ctrl's heartbeat would flap: refused, naming the field.
	f := filepath.Join(g.dir, "tight.json")
	os.WriteFile(f, []byte(`{"id":"tight","host":"*","prefix":"/tight","cluster":"a","max_staleness_ms":500,"on_stale":"reject"}`), 0o600)
	if code, out := g.ctl("route", "put", "-f", f); code != 1 || !strings.Contains(out, "max_staleness_ms") {
		t.Fatalf("route with a 500 ms bound: exit %d %q, want exit 1 naming max_staleness_ms", code, out)
	}

	const bound = 2 * time.Second
	g.putRouteJSON(`{"id":"strict","host":"*","prefix":"/strict","cluster":"a","max_staleness_ms":2000,"on_stale":"reject","stale_header":true}`)
	g.putRouteJSON(`{"id":"lenient","host":"*","prefix":"/lenient","cluster":"a","max_staleness_ms":2000,"on_stale":"serve","stale_header":true}`)
	g.waitBody(5*time.Second, "/strict/x", "A /strict/x")
	g.waitBody(5*time.Second, "/lenient/x", "A /lenient/x")

	// ctrl's heartbeats keep the snapshot fresh for longer than the bound.
	for end := time.Now().Add(bound + 500*time.Millisecond); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		code, body, stale := g.getStaleness("/strict/x")
		ms, err := strconv.Atoi(stale)
		if code != 200 || err != nil || ms > int(bound/time.Millisecond) {
			t.Fatalf("ctrl up: GET /strict/x = %d %q staleness %q, want 200 within the bound", code, body, stale)
		}
	}
	if v := g.edgeMetric("snapgate_edge_snapshot_version"); v < 2 {
		t.Fatalf("snapshot version metric %v, want the version with both routes", v)
	}
	if s := g.edgeMetric("snapgate_edge_staleness_seconds"); s < 0 || s > bound.Seconds() {
		t.Fatalf("staleness metric %v s with ctrl up", s)
	}

	ctrl.kill(syscall.SIGKILL)
	killed := time.Now()
	waitFor(t, bound+5*time.Second, "the reject route to answer 503 snapshot stale", func() bool {
		code, body, _ := g.getStaleness("/strict/x")
		if code == 503 && body == "snapshot stale\n" {
			return true
		}
		if code != 200 {
			t.Fatalf("ctrl down: GET /strict/x = %d %q, want 200 until the bound, then 503", code, body)
		}
		return false
	})
	if since := time.Since(killed); since < bound-time.Second {
		// ctrl's last heartbeat was at most a second before the kill.
		t.Fatalf("stale after %v, before the %v bound could pass", since, bound)
	}
	code, body, stale := g.getStaleness("/lenient/x")
	ms, _ := strconv.Atoi(stale)
	if code != 200 || body != "A /lenient/x" || ms <= int(bound/time.Millisecond) {
		t.Fatalf("serve route with ctrl down: %d %q staleness %q, want 200 from A and a staleness above %v", code, body, stale, bound)
	}
	if s := g.edgeMetric("snapgate_edge_staleness_seconds"); s <= bound.Seconds() {
		t.Fatalf("staleness metric %v s with ctrl down past the bound", s)
	}
	if n := g.edgeMetric("snapgate_edge_stale_served_total"); n < 1 {
		t.Fatalf("stale_served_total %v, want the stale serve counted", n)
	}

	g.startCtrl()
	waitFor(t, 15*time.Second, "the reject route to serve again once ctrl is back", func() bool {
		code, _, _ := g.getStaleness("/strict/x")
		return code == 200
	})
	if _, _, stale := g.getStaleness("/lenient/x"); stale == "" || stale == "unconfirmed" {
		t.Fatalf("staleness header after recovery %q", stale)
	}
}
