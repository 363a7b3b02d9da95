package ctrl

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/snapgate/snapgate/ctrl/model"
	"github.com/snapgate/snapgate/ctrl/publish"
)

// TestRecycledFilesReachEdgesIntact runs ctrl with one delta base, so that
// nearly every file goes back to the Builder and the next build writes
// over it, while verifying edges on real TCP rebuild and check every
// FULL and DELTA. A file recycled while the publisher still encodes from
// it would reach an edge as bytes that fail the trailer or the DELTA's
// result hash, or as a file whose version is not the frame's; at the end
// every edge must serve exactly the bytes the store holds for the latest
// version.
func TestRecycledFilesReachEdgesIntact(t *testing.T) {
	dir := t.TempDir()
	seedStore(t, filepath.Join(dir, "store"), 500)
	s, err := New(Config{DataDir: dir, AdminSocket: filepath.Join(dir, "a.sock"), PublishAddr: "127.0.0.1:0",
		Publish:  publish.Config{Secret: []byte(benchSecret), KeepBases: 1},
		Debounce: time.Millisecond, MaxDelay: 5 * time.Millisecond,
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(runCtx) }()
	defer func() {
		cancel()
		<-done
	}()

	const nEdges = 4
	edges := make([]*benchEdge, 0, nEdges)
	var wg sync.WaitGroup
	defer func() {
		for _, e := range edges {
			e.conn.Close()
		}
		wg.Wait()
	}()
	for i := range nEdges {
		e, err := dialBenchEdge(s.PublishAddr(), fmt.Sprintf("recycle-%d", i), true, nil)
		if err != nil {
			t.Fatal(err)
		}
		edges = append(edges, e)
		wg.Go(e.run)
	}

	cx := ctx(t)
	for n := range 60 {
		id := fmt.Sprintf("r%07d", n%500)
		if _, err := (handler{s}).PutRoute(cx, model.Route{ID: id, Host: "*", Prefix: "/" + id, Cluster: "c1", TimeoutMs: uint32(n + 1)}, nil); err != nil {
			t.Fatal(err)
		}
		time.Sleep(2 * time.Millisecond)
	}
	var last uint64
	deadline := time.Now().Add(20 * time.Second)
	for {
		last = s.pub.LatestVersion()
		ready := s.lastSnap().version == last
		for _, e := range edges {
			if err := e.err(); err != nil {
				t.Fatalf("edge %s: %v", e.id, err)
			}
			ready = ready && e.ackedVersion() == last
		}
		if ready {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("edges did not reach v%d", last)
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Logf("edges at v%d", last)
	want, err := s.store.Snapshot(last)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range edges {
		e.mu.Lock()
		got := e.base.Bytes()
		e.mu.Unlock()
		if !bytes.Equal(got, want) {
			t.Errorf("edge %s serves v%d with other bytes than the store's", e.id, last)
		}
	}
}
