package ctrl

import (
	"context"
	"fmt"
	"time"
)

// retryAfter is how long the loop waits before retrying a failed build
// (a full disk, say), so a persistent failure does not spin.
const retryAfter = time.Second

// notify tells the recompute loop the model changed. It never blocks: one
// pending poke already means "build when the burst is over".
func (s *Server) notify() {
	s.pendingSince.CompareAndSwap(0, time.Now().UnixNano())
	select {
	case s.poke <- struct{}{}:
	default:
	}
}

// recomputeLoop turns bursts of writes and health publications into
// snapshots. After the first wake-up of a burst it waits until Debounce
// passes without another, but no longer than MaxDelay after the first, so
// a steady stream of writes still publishes at least every MaxDelay. The
// tracker caps its own publications (health.Config.MaxVersionsPerSecond).
func (s *Server) recomputeLoop(ctx context.Context) {
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	changes := s.health.Changes()
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.poke:
		case <-changes:
			// Lag of a health change runs from its publication.
			s.pendingSince.CompareAndSwap(0, time.Now().UnixNano())
		}
		deadline := time.Now().Add(s.cfg.MaxDelay)
		timer.Reset(s.cfg.Debounce)
	settle:
		for {
			select {
			case <-ctx.Done():
				return
			case <-s.poke:
			case <-changes:
				s.pendingSince.CompareAndSwap(0, time.Now().UnixNano())
			case <-timer.C:
				break settle
			}
			timer.Reset(max(0, min(s.cfg.Debounce, time.Until(deadline))))
		}
		if wait := s.healthWait(); wait > 0 {
			timer.Reset(wait)
			select {
			case <-ctx.Done():
				return
			case <-s.poke:
				// A write: its build is not health's to space out.
			case <-timer.C:
			}
		}
		if err := s.build(); err != nil {
			s.log.Error("snapshot build failed; retrying", "err", err, "retry_in", retryAfter)
			timer.Reset(retryAfter)
			select {
			case <-ctx.Done():
				return
			case <-timer.C:
				s.notify()
			}
		}
	}
}

// healthWait is how long the next build must wait so that a build caused
// by health alone comes at least the tracker's publication interval after
// the previous build. The tracker spaces its publications, but a build
// that ran late (CPU, a slow store write) and the next on-time one could
// land close together, and then one second held more versions than the
// cap. 0 when the model changed since the last build.
func (s *Server) healthWait() time.Duration {
	s.wmu.Lock()
	modelChanged := s.model.revision != s.builtModel
	s.wmu.Unlock()
	if modelChanged {
		return 0
	}
	return time.Until(s.lastSnap().builtAt.Add(s.health.MinInterval()))
}

// restorePending puts back the start of a pending window whose build failed:
// the retry publishes those writes, so their lag runs from their commit, not
// from the retry. Writes since then may have opened a later window; the
// earlier start wins.
func (s *Server) restorePending(committed int64) {
	if committed == 0 {
		return
	}
	for {
		cur := s.pendingSince.Load()
		if cur != 0 && cur <= committed {
			return
		}
		if s.pendingSince.CompareAndSwap(cur, committed) {
			return
		}
	}
}

// build snapshots the current model with the published health, publishes
// it and stores it, unless neither the model nor any cluster's published
// health changed since the latest snapshot.
//
// The version is the store revision, read under wmu: no commit is then
// between its store write and its model update, so every revision up to
// it is either in the model or a health write (whose published part the
// Routing view, read first, carries). Health writes move the revision
// without changing the snapshot; a health change published after the
// latest snapshot took the latest revision gets one from advanceRevision.
func (s *Server) build() error {
	last := s.lastSnap()
	s.wmu.Lock()
	r := s.health.Routing()
	healthOnly := s.model.revision == s.builtModel
	if healthOnly && !s.clusters.healthChanged(&s.model, r) {
		// Nothing to publish closes the pending window (a health change
		// that edges do not see); under wmu, a write not in the model yet
		// opens a new one when it commits.
		s.pendingSince.Store(0)
		s.wmu.Unlock()
		return nil
	}
	version := s.store.Revision()
	if version <= last.version {
		// Only health changed: a model change has a revision above every
		// earlier build's.
		rev, err := s.advanceRevision(r.Generation)
		if err != nil {
			s.wmu.Unlock()
			return err
		}
		version = rev
	}
	cs, next := s.clusters.convert(&s.model, r)
	st := s.model.fbsState(version, last.version, s.cfg.Shards, cs)
	model := s.model.revision
	// Every write in st was acknowledged at or after pendingSince; taking it
	// under wmu means writes after this build start a new pending window.
	committed := s.pendingSince.Swap(0)
	s.wmu.Unlock()

	// Writers commit without an fsync (commit): everything st holds must be
	// durable before any of it reaches an edge.
	if err := s.store.Sync(); err != nil {
		s.restorePending(committed)
		return fmt.Errorf("ctrl: making revision %d durable before building it: %w", version, err)
	}
	start := time.Now()
	// Same bytes as fbs.Build(st), re-encoding only the changed shards, and
	// verified as fbs.Open would, walking only those shards.
	snap, err := s.builder.BuildSnapshot(st)
	if err != nil {
		s.restorePending(committed)
		return fmt.Errorf("building snapshot %d: %w", st.Version, err)
	}
	data := snap.Bytes()
	took := time.Since(start)
	s.metrics.built(st.Version, took, len(data))
	// Staging copies the file into the store's page cache; its fsyncs wait
	// until the version is out (Commit below), off the path from a write
	// to its first frame. The next build starts only after that Commit, so
	// a crash loses at most this one version, published but not stored;
	// the restart builds it again from the same durable revision on the
	// same parent (docs/internals.md, "Snapshot versions").
	staged, err := s.store.StageSnapshot(st.Version, data, s.cfg.KeepSnapshots)
	if err != nil {
		s.builder.Recycle(data)
		s.restorePending(committed)
		return fmt.Errorf("staging snapshot %d: %w", st.Version, err)
	}
	var committedAt time.Time
	if committed != 0 {
		committedAt = time.Unix(0, committed)
	}
	s.pub.PublishSnapshot(snap, committedAt) // recycles data when no session reads it any more
	published := time.Now()
	// Logged as it goes out, before the commit's variable fsync time, so
	// the log's times are the publications the health cap spaces.
	s.log.Info("snapshot built", "version", st.Version, "parent", st.ParentVersion,
		"routes", st.Table.Len(), "clusters", len(st.Clusters), "bytes", len(data), "build_time", took,
		"health_only", healthOnly)
	if err := staged.Commit(); err != nil {
		// Edges have it and the next version chains onto it; only the
		// history lacks it (a DELTA from it needs a FULL once it leaves
		// the publisher's bases, and a restart before a later version is
		// stored rebuilds it).
		s.log.Error("snapshot published but not stored", "version", st.Version, "err", err)
	}
	// After the commit: a version seen here can be read from the store
	// (unless its commit failed).
	s.setSnap(snapInfo{version: st.Version, parent: st.ParentVersion, builtAt: published, bytes: len(data)})
	s.builtModel, s.clusters = model, next
	return nil
}
