package main

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestEdgeFollowsCtrlAfterDataLoss: ctrl's data dir is lost while an edge
// holds a newer snapshot than the rebuilt ctrl will have. The edge must not
// keep serving its old routes as if current: ctrl marks it diverged and
// replaces its snapshot with ctrl's state (docs/stream.md, "Diverged edges").
func TestEdgeFollowsCtrlAfterDataLoss(t *testing.T) {
	a, b := backend(t, "A"), backend(t, "B")
	g := newGateway(t)
	ctrl := g.startCtrl()
	g.startEdge()
	g.mustCtl("cluster", "put", "--id", "a", "--endpoint", a)
	for _, id := range []string{"old1", "old2", "old3", "old4"} {
		g.mustCtl("route", "put", "--id", id, "--host", "*", "--prefix", "/"+id, "--cluster", "a")
	}
	g.waitBody(5*time.Second, "/old4/x", "A /old4/x")

	ctrl.kill(syscall.SIGKILL)
	if err := os.RemoveAll(filepath.Join(g.dir, "ctrl")); err != nil {
		t.Fatal(err)
	}
	g.startCtrl()
	g.mustCtl("cluster", "put", "--id", "b", "--endpoint", b)
	g.mustCtl("route", "put", "--id", "new", "--host", "*", "--prefix", "/new", "--cluster", "b")

	g.waitBody(5*time.Second, "/new/x", "B /new/x")
	if code, _, _ := g.get("", "/old1/x"); code != 404 {
		t.Fatalf("after the replacement /old1 answers %d, want 404: the edge still serves the lost history", code)
	}
	waitFor(t, 5*time.Second, "ctl status to show the edge current and not diverged", func() bool {
		_, out := g.ctl("-o", "json", "status")
		return strings.Contains(out, `"connected": true`) && strings.Contains(out, `"lag": 0`) &&
			!strings.Contains(out, `"diverged": true`)
	})
}
