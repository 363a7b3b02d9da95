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

// recomputeLoop turns bursts of writes into snapshots. After the first poke
// of a burst it waits until Debounce passes without a poke, but no longer
// than MaxDelay after that first poke, so a steady stream of writes still
// publishes at least every MaxDelay.
func (s *Server) recomputeLoop(ctx context.Context) {
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.poke:
		}
		deadline := time.Now().Add(s.cfg.MaxDelay)
		timer.Reset(s.cfg.Debounce)
	settle:
		for {
			select {
			case <-ctx.Done():
				return
			case <-s.poke:
				timer.Reset(max(0, min(s.cfg.Debounce, time.Until(deadline))))
			case <-timer.C:
				break settle
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

// build snapshots the current model, stores it and publishes it, unless the
// latest snapshot already has the model's revision.
func (s *Server) build() error {
	last := s.lastSnap()
	s.mu.RLock()
	if last.version == s.model.revision {
		s.mu.RUnlock()
		return nil
	}
	st := s.model.fbsState(last.version, s.cfg.Shards)
	// Every write in st was acknowledged at or after pendingSince; taking it
	// under mu means writes after this build start a new pending window.
	committed := s.pendingSince.Swap(0)
	s.mu.RUnlock()

	start := time.Now()
	// Same bytes as fbs.Build(st), re-encoding only the changed shards.
	data, err := s.builder.Build(st)
	if err != nil {
		s.restorePending(committed)
		return fmt.Errorf("ctrl: building snapshot %d: %w", st.Version, err)
	}
	took := time.Since(start)
	s.metrics.built(st.Version, took, len(data))
	if err := s.store.PutSnapshot(st.Version, data, s.cfg.KeepSnapshots); err != nil {
		s.restorePending(committed)
		return fmt.Errorf("ctrl: storing snapshot %d: %w", st.Version, err)
	}
	var committedAt time.Time
	if committed != 0 {
		committedAt = time.Unix(0, committed)
	}
	s.pub.Publish(st.Version, data, committedAt)
	s.setSnap(snapInfo{version: st.Version, parent: st.ParentVersion, builtAt: time.Now(), bytes: len(data)})
	s.log.Info("snapshot built", "version", st.Version, "parent", st.ParentVersion,
		"routes", len(st.Routes), "clusters", len(st.Clusters), "bytes", len(data), "build_time", took)
	return nil
}
