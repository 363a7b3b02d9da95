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
	c := cluster("api", dead)
	c.Health = &model.HealthCheck{UnhealthyThreshold: 1, HealthyThreshold: 1}
	if _, err := h.c.PutCluster(cx, c, nil); err != nil {
		t.Fatal(err)
	}
	res, err := h.c.PutRoute(cx, model.Route{ID: "all", Host: "example.com", Prefix: "/", Cluster: "api"}, nil)
	if err != nil {
		t.Fatal(err)
	}

	n, err := edge.New(edge.Config{NodeID: "edge-7", Listen: "127.0.0.1:0", CtrlAddr: h.s.PublishAddr(),
		DataDir: filepath.Join(t.TempDir(), "edge"), InsecureStream: true, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.Run(runCtx) }()
	defer func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("edge Run: %v", err)
			}
		case <-time.After(15 * time.Second):
			t.Error("edge Run did not return within 15s of cancel")
		}
	}()
	deadline := time.Now().Add(10 * time.Second)
	for n.Version() < res.Revision {
		if time.Now().After(deadline) {
			t.Fatalf("edge serves version %d, want %d within 10s", n.Version(), res.Revision)
		}
		time.Sleep(10 * time.Millisecond)
	}

	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	req, err := http.NewRequest(http.MethodGet, "http://"+n.Addr().String()+"/x", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = "example.com"
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadGateway && resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("GET via a refusing endpoint: %d, want 502 or 503", resp.StatusCode)
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
