package ctrl

import (
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"testing"
	"time"
)

// newIdle returns a Server that is not running, so a test drives build
// itself.
func newIdle(t *testing.T) *Server {
	t.Helper()
	dir := t.TempDir()
	s, err := New(Config{InsecureStream: true, DataDir: dir, AdminSocket: filepath.Join(dir, "admin.sock"),
		PublishAddr: "127.0.0.1:0", Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// A failed build keeps the pending window's start, so the retry's
// propagation lag still runs from the first write's commit (finding 18).
func TestFailedBuildKeepsPendingSince(t *testing.T) {
	s := newIdle(t)
	if _, err := (handler{s}).PutCluster(context.Background(), cluster("c", "10.0.0.1:80"), nil); err != nil {
		t.Fatal(err)
	}
	first := s.pendingSince.Load()
	if first == 0 {
		t.Fatal("write opened no pending window")
	}
	s.cfg.KeepSnapshots = 0 // StageSnapshot refuses keep < 1: the build fails after the swap, before publishing
	if err := s.build(); err == nil {
		t.Fatal("build with keep 0 succeeded")
	}
	if got := s.pendingSince.Load(); got != first {
		t.Fatalf("pendingSince after failed build = %d, want %d", got, first)
	}
	s.cfg.KeepSnapshots = 10
	if err := s.build(); err != nil {
		t.Fatal(err)
	}
	if got := s.pendingSince.Load(); got != 0 {
		t.Fatalf("pendingSince after successful build = %d, want 0", got)
	}
}

// Lag runs from the build of the first version the edge lacks, not from the
// latest build (finding 4).
func TestFirstBuiltAfter(t *testing.T) {
	s := newIdle(t)
	base := time.Now().Add(-time.Minute)
	s.snapMu.Lock()
	s.built = nil
	s.snapMu.Unlock()
	for i, v := range []uint64{3, 5, 9} {
		s.setSnap(snapInfo{version: v, builtAt: base.Add(time.Duration(i) * time.Second)})
	}
	for _, c := range []struct {
		applied uint64
		want    time.Time
	}{
		{0, base}, {3, base.Add(time.Second)}, {4, base.Add(time.Second)}, {5, base.Add(2 * time.Second)}, {9, time.Time{}}, {12, time.Time{}},
	} {
		if got := s.firstBuiltAfter(c.applied); !got.Equal(c.want) {
			t.Errorf("firstBuiltAfter(%d) = %v, want %v", c.applied, got, c.want)
		}
	}
}

// A health publication that changes nothing edges see builds nothing and
// must not leave its pending window open: the next write's propagation lag
// would run from it (7.8 s right after a start, whose stored health the
// tracker publishes at once).
func TestEmptyHealthBuildClosesPendingWindow(t *testing.T) {
	s := newIdle(t)
	// What the recompute loop does on a health publication.
	s.pendingSince.CompareAndSwap(0, time.Now().Add(-10*time.Second).UnixNano())
	before := s.lastSnap().version
	if err := s.build(); err != nil {
		t.Fatal(err)
	}
	if v := s.lastSnap().version; v != before {
		t.Fatalf("health that changed nothing built version %d", v)
	}
	if got := s.pendingSince.Load(); got != 0 {
		t.Fatalf("pendingSince after a build of nothing = %v ago, want 0", time.Since(time.Unix(0, got)))
	}
	put := time.Now()
	if _, err := (handler{s}).PutCluster(context.Background(), cluster("c", "10.0.0.1:80"), nil); err != nil {
		t.Fatal(err)
	}
	if got := time.Unix(0, s.pendingSince.Load()); got.Before(put) {
		t.Fatalf("the write's pending window starts %v before its commit", put.Sub(got))
	}
}
