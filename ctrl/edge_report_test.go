package ctrl

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/snapgate/snapgate/ctrl/model"
	"github.com/snapgate/snapgate/edge"
)

// TestEdgeEjectionReachesTracker: a real edge ejects an endpoint whose
// port refuses connections, reports it over the stream, and with
// unhealthy_threshold 1 and no probe ctrl's next snapshots mark it
// unhealthy under the edge's source.
func TestEdgeEjectionReachesTracker(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()

	h := startCtrl(t, t.TempDir(), nil)
	cx := ctx(t)
	n := startEdge(t, h, "edge-7", passiveRoute(t, h, dead))
	if code := getVia(t, n, "example.com", "/x"); code != http.StatusBadGateway && code != http.StatusServiceUnavailable {
		t.Fatalf("GET via a refusing endpoint: %d, want 502 or 503", code)
	}
	h.waitHealth("api", dead, true, 10*time.Second)
	text, err := h.c.ExplainHealth(cx, "api", dead)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"edge:edge-7", "connect-failure"} {
		if !strings.Contains(text, want) {
			t.Fatalf("ExplainHealth lacks %q:\n%s", want, text)
		}
	}
}

// TestEdge5xxStreakReachesTracker: a backend that answers 503 to
// everything (its health path included, but no probe is configured) is
// reported by a real edge after five 503s in a row, cause 5xx, and marked
// unhealthy with unhealthy_threshold 1; the edge then stops sending it
// requests.
func TestEdge5xxStreakReachesTracker(t *testing.T) {
	b := startHealthBackend(t)
	b.failing.Store(true)
	h := startCtrl(t, t.TempDir(), nil)
	cx := ctx(t)
	n := startEdge(t, h, "edge-5", passiveRoute(t, h, b.addr))
	for i := range 5 {
		if code := getVia(t, n, "example.com", "/x"); code != http.StatusServiceUnavailable {
			t.Fatalf("request %d: %d, want the backend's 503", i, code)
		}
	}
	h.waitHealth("api", b.addr, true, 10*time.Second)
	text, err := h.c.ExplainHealth(cx, "api", b.addr)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"edge:edge-5", "5xx"} {
		if !strings.Contains(text, want) {
			t.Fatalf("ExplainHealth lacks %q:\n%s", want, text)
		}
	}
}

// passiveRoute puts cluster "api" with the one endpoint addr, judged only by
// reports (no probe) with unhealthy_threshold 1, and route example.com/ to
// it; it returns the route's revision.
func passiveRoute(t *testing.T, h *harness, addr string) uint64 {
	t.Helper()
	c := cluster("api", addr)
	c.Health = &model.HealthCheck{UnhealthyThreshold: 1, HealthyThreshold: 1}
	if _, err := h.c.PutCluster(ctx(t), c, nil); err != nil {
		t.Fatal(err)
	}
	res, err := h.c.PutRoute(ctx(t), model.Route{ID: "all", Host: "example.com", Prefix: "/", Cluster: "api"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return res.Revision
}

// startEdge runs a real edge streaming from h's ctrl until the test ends,
// and waits until it serves version v.
func startEdge(t *testing.T, h *harness, nodeID string, v uint64) *edge.Node {
	t.Helper()
	n, err := edge.New(edge.Config{NodeID: nodeID, Listen: "127.0.0.1:0", CtrlAddr: h.s.PublishAddr(),
		DataDir: filepath.Join(t.TempDir(), "edge"), InsecureStream: true, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.Run(runCtx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("edge Run: %v", err)
			}
		case <-time.After(15 * time.Second):
			t.Error("edge Run did not return within 15s of cancel")
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for n.Version() < v {
		if time.Now().After(deadline) {
			t.Fatalf("edge serves version %d, want %d within 10s", n.Version(), v)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return n
}

// getVia sends GET path with Host host through edge n and returns the
// status.
func getVia(t *testing.T, n *edge.Node, host, path string) int {
	t.Helper()
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	req, err := http.NewRequest(http.MethodGet, "http://"+n.Addr().String()+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = host
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}
