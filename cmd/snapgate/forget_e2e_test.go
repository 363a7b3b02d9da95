package main

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/snapgate/snapgate/ctrl/admin"
)

// edges returns the edges 'ctl status' lists, by node id.
func (g *gateway) edges() map[string]admin.EdgeStatus {
	g.t.Helper()
	var st admin.Status
	if out := g.mustCtl("-o", "json", "status"); json.Unmarshal([]byte(out), &st) != nil {
		g.t.Fatalf("ctl -o json status: %q is not a status", out)
	}
	m := make(map[string]admin.EdgeStatus, len(st.Edges))
	for _, e := range st.Edges {
		m[e.NodeID] = e
	}
	return m
}

// waitEdge waits until status lists nodeID with the given connected state.
func (g *gateway) waitEdge(nodeID string, connected bool) {
	g.t.Helper()
	waitFor(g.t, 10*time.Second, fmt.Sprintf("ctl status to list %s with connected %t", nodeID, connected), func() bool {
		e, ok := g.edges()[nodeID]
		return ok && e.Connected == connected
	})
}

// TestCtlEdgeForget walks a decommissioning: a stopped edge stays listed as
// down until 'ctl edge forget' removes it, also from ctrl's store (a
// restarted ctrl does not bring it back); a connected edge is refused and
// an unknown one is not found, and neither changes anything.
func TestCtlEdgeForget(t *testing.T) {
	g := newGateway(t)
	ctrl := g.startCtrl()
	old := g.startEdge() // node id e2e-edge, to be decommissioned
	// A second edge, stopped too but not forgotten, shows that a restarted
	// ctrl does bring back the edges it remembers.
	keep := startProc(t, "edge keep", "edge", "--node-id", "keep-edge", "--listen", freeAddr(t), "--ctrl", g.stream,
		"--data-dir", filepath.Join(g.dir, "edge-keep"), "--stream-secret-file", g.secret, "--admin-listen", "")
	g.waitEdge("e2e-edge", true)
	g.waitEdge("keep-edge", true)

	code, out := g.ctl("edge", "forget", "e2e-edge")
	if code != 1 || !strings.Contains(out, `conflict: node_id: edge "e2e-edge" is connected from 127.0.0.1:`) || !strings.Contains(out, "; stop it first") {
		t.Fatalf("forgetting a connected edge: exit %d %q; want exit 1 and a conflict naming its address", code, out)
	}
	if e, ok := g.edges()["e2e-edge"]; !ok || !e.Connected {
		t.Fatalf("a refused forget changed the edge: %+v (listed %v)", e, ok)
	}

	old.kill(syscall.SIGTERM)
	keep.kill(syscall.SIGTERM)
	g.waitEdge("e2e-edge", false)
	g.waitEdge("keep-edge", false)
	if out := g.mustCtl("status"); !strings.Contains(out, "e2e-edge") || !strings.Contains(out, " down ") {
		t.Fatalf("ctl status does not list the stopped edge as down:\n%s", out)
	}

	code, out = g.ctl("edge", "forget", "nope")
	if code != 1 || !strings.Contains(out, `not_found: node_id: no edge "nope" is listed`) {
		t.Fatalf("forgetting an unknown edge: exit %d %q; want exit 1 and not_found", code, out)
	}
	if n := len(g.edges()); n != 2 {
		t.Fatalf("after forgetting an unknown edge status lists %d edges, want 2", n)
	}

	if out := g.mustCtl("edge", "forget", "e2e-edge"); !strings.Contains(out, `edge "e2e-edge" forgotten (last connected from 127.0.0.1:`) {
		t.Fatalf("ctl edge forget: %q", out)
	}
	if _, ok := g.edges()["e2e-edge"]; ok {
		t.Fatal("ctl status still lists the forgotten edge")
	}
	if code, out := g.ctl("edge", "forget", "e2e-edge"); code != 1 || !strings.Contains(out, "not_found") {
		t.Fatalf("forgetting it twice: exit %d %q; want exit 1 and not_found", code, out)
	}

	ctrl.kill(syscall.SIGTERM)
	g.startCtrl()
	edges := g.edges()
	if _, ok := edges["e2e-edge"]; ok {
		t.Fatal("the forgotten edge is back after a ctrl restart: its stored record was not deleted")
	}
	if e, ok := edges["keep-edge"]; !ok || e.Connected {
		t.Fatalf("the remembered edge after a ctrl restart: %+v (listed %v), want it listed as down", e, ok)
	}

	// An edge that connects after it was forgotten is listed again.
	g.startEdge()
	g.waitEdge("e2e-edge", true)
}

// TestCtlEdgeForgetSurvivesKill: the removal is durable before ctl prints
// its reply, so a ctrl killed with SIGKILL right after it does not bring
// the edge back at its next start.
func TestCtlEdgeForgetSurvivesKill(t *testing.T) {
	g := newGateway(t)
	ctrl := g.startCtrl()
	e := g.startEdge()
	g.waitEdge("e2e-edge", true)
	e.kill(syscall.SIGTERM)
	g.waitEdge("e2e-edge", false)
	if out := g.mustCtl("edge", "forget", "e2e-edge"); !strings.Contains(out, `edge "e2e-edge" forgotten`) {
		t.Fatalf("ctl edge forget: %q", out)
	}
	ctrl.kill(syscall.SIGKILL)
	g.startCtrl()
	if e, ok := g.edges()["e2e-edge"]; ok {
		t.Fatalf("the forgotten edge is back after a kill -9 right after the reply: %+v", e)
	}
}
