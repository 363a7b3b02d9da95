package ctrl

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/cespare/xxhash/v2"

	"github.com/snapgate/snapgate/fbs"
	"github.com/snapgate/snapgate/store"
)

// lockedBuffer is a log sink a test reads after the server wrote to it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// A version whose store commit fails (here: its file name is taken by a
// directory, as a full disk would fail it) stays published, is logged at
// ERROR, and is the parent of the next version, which is stored.
func TestCommitFailureKeepsPublishedVersion(t *testing.T) {
	dir := t.TempDir()
	var logs lockedBuffer
	s, err := New(Config{InsecureStream: true, DataDir: dir, AdminSocket: filepath.Join(dir, "admin.sock"),
		PublishAddr: "127.0.0.1:0", Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	h := handler{s}
	// The file name Commit will rename to comes from the bytes the build
	// will produce (fbs.Build is the Builder's from-scratch reference) at
	// the store revision; a health write landing between the prediction
	// and the build moves that revision, so try again with another change.
	var prev, version uint64
	for attempt := 0; ; attempt++ {
		if _, err := h.PutCluster(context.Background(), cluster(fmt.Sprintf("c%d", attempt), "10.0.0.1:80"), nil); err != nil {
			t.Fatal(err)
		}
		s.wmu.Lock()
		prev = s.lastSnap().version
		version = s.store.Revision()
		cs, _ := s.clusters.convert(&s.model, s.health.Routing())
		want, err := fbs.Build(s.model.fbsState(version, prev, s.cfg.Shards, cs))
		s.wmu.Unlock()
		if err != nil {
			t.Fatal(err)
		}
		blocker := filepath.Join(dir, "store-snapshots", fmt.Sprintf("snap-%020d-%016x.sgs", version, xxhash.Sum64(want)))
		if err := os.MkdirAll(filepath.Join(blocker, "x"), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := s.build(); err != nil {
			t.Fatalf("build with a failing commit = %v, want nil (the version is out)", err)
		}
		got := s.lastSnap()
		if got.version == version {
			if got.parent != prev {
				t.Fatalf("latest snapshot v%d (parent %d), want parent %d", got.version, got.parent, prev)
			}
			break
		}
		if attempt == 4 {
			t.Fatalf("the store revision moved under the prediction 5 times (latest v%d, predicted v%d)", got.version, version)
		}
		if err := os.RemoveAll(blocker); err != nil {
			t.Fatal(err)
		}
	}
	if got := s.pub.LatestVersion(); got != version {
		t.Fatalf("publisher latest v%d, want v%d", got, version)
	}
	if _, err := s.store.Snapshot(version); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("store has v%d after its commit failed: %v (the predicted file name did not match?)", version, err)
	}
	if out := logs.String(); !strings.Contains(out, `level=ERROR msg="snapshot published but not stored"`) || !strings.Contains(out, fmt.Sprintf("version=%d", version)) {
		t.Fatalf("no ERROR for the unstored version:\n%s", out)
	}

	if _, err := h.PutCluster(context.Background(), cluster("d", "10.0.0.2:80"), nil); err != nil {
		t.Fatal(err)
	}
	if err := s.build(); err != nil {
		t.Fatal(err)
	}
	next := s.lastSnap()
	data, err := s.store.Snapshot(next.version)
	if err != nil {
		t.Fatalf("next version v%d not stored: %v", next.version, err)
	}
	snap, err := fbs.Open(data)
	if err != nil {
		t.Fatal(err)
	}
	if next.version <= version || snap.ParentVersion() != version {
		t.Fatalf("next version v%d has parent %d, want a version above %d chained onto it", next.version, snap.ParentVersion(), version)
	}
}
