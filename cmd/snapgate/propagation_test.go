package main

// Crash test for snapshot propagation: ctrl is killed with SIGKILL in the
// middle of a burst of concurrent 'snapgate ctl route put' processes. Every
// put that ctl acknowledged (exit 0) must be in the store after ctrl restarts
// on the same data dir, and the edge must converge on the rebuilt snapshot.

import (
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

func TestCtrlKilledDuringWriteBurst(t *testing.T) {
	a := backend(t, "A")
	g := newGateway(t)
	ctrl := g.startCtrl()
	g.startEdge()
	g.mustCtl("cluster", "put", "--id", "a", "--endpoint", a)

	// Writers put fresh routes (r<w>-<n>) until the first failure after the
	// kill; each records the ids ctl acknowledged. A create cannot conflict,
	// so any non-zero exit before the kill is a real error.
	const writers = 4
	const ackedBeforeKill = 40 // enough acknowledged writes that some are still unbuilt at the kill
	var (
		mu     sync.Mutex
		acked  []string
		killed atomic.Bool
		total  atomic.Int64
		wg     sync.WaitGroup
		errs   = make(chan string, writers)
	)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; n < 1000; n++ {
				id := fmt.Sprintf("r%d-%d", w, n)
				code, out := g.ctl("route", "put", "--id", id, "--host", "*", "--prefix", "/"+id, "--cluster", "a")
				if code != 0 {
					if !killed.Load() {
						errs <- fmt.Sprintf("put %s before the kill: exit %d: %s", id, code, out)
					}
					return
				}
				mu.Lock()
				acked = append(acked, id)
				mu.Unlock()
				total.Add(1)
			}
		}()
	}
	waitFor(t, 30*time.Second, "acknowledged writes before the kill", func() bool {
		return total.Load() >= ackedBeforeKill || len(errs) > 0
	})
	killed.Store(true)
	ctrl.kill(syscall.SIGKILL)
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	if t.Failed() {
		return
	}
	t.Logf("%d puts acknowledged before ctrl was killed", len(acked))

	g.startCtrl()
	var list struct {
		Revision uint64 `json:"revision"`
		Items    []struct {
			ID string `json:"id"`
		} `json:"items"`
	}
	if err := json.Unmarshal([]byte(g.mustCtl("-o", "json", "route", "list")), &list); err != nil {
		t.Fatalf("decoding route list: %v", err)
	}
	stored := make(map[string]bool, len(list.Items))
	for _, it := range list.Items {
		stored[it.ID] = true
	}
	for _, id := range acked {
		if !stored[id] {
			t.Errorf("acknowledged route %s is missing after the restart", id)
		}
	}
	// A put whose reply was cut by the kill may or may not have committed;
	// either way the store holds at least every acknowledged one.
	if len(stored) < len(acked) {
		t.Fatalf("store holds %d routes, %d were acknowledged", len(stored), len(acked))
	}

	// The edge converges on the rebuilt snapshot: ctrl reports it on the
	// latest version, and it serves exactly the stored routes.
	var status struct {
		SnapshotVersion uint64 `json:"snapshot_version"`
		Routes          int    `json:"routes"`
		Edges           []struct {
			NodeID         string `json:"node_id"`
			Connected      bool   `json:"connected"`
			AppliedVersion uint64 `json:"applied_version"`
			Lag            uint64 `json:"lag"`
		} `json:"edges"`
	}
	waitFor(t, 10*time.Second, "the edge to apply the rebuilt snapshot", func() bool {
		_, out := g.ctl("-o", "json", "status")
		if json.Unmarshal([]byte(out), &status) != nil || status.SnapshotVersion < list.Revision {
			return false
		}
		for _, e := range status.Edges {
			if e.NodeID == "e2e-edge" && e.Connected && e.AppliedVersion == status.SnapshotVersion && e.Lag == 0 {
				return true
			}
		}
		return false
	})
	if status.Routes != len(stored) {
		t.Fatalf("latest snapshot has %d routes, the store %d", status.Routes, len(stored))
	}
	for id := range stored {
		if code, body, err := g.get("", "/"+id+"/x"); err != nil || code != 200 || body != "A /"+id+"/x" {
			t.Errorf("GET /%s/x after convergence: %d %q %v", id, code, body, err)
		}
	}
	// Ids past each writer's last attempt were never written; the edge must
	// not serve a route the store does not hold.
	for w := range writers {
		id := fmt.Sprintf("r%d-%d", w, 999)
		if code, _, err := g.get("", "/"+id); err != nil || code != 404 || stored[id] {
			t.Errorf("GET /%s (never written): %d %v, want 404", id, code, err)
		}
	}
}
