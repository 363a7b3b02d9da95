package ctrl

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/snapgate/snapgate/ctrl/model"
	"github.com/snapgate/snapgate/store"
)

// Cluster-scope rate limits are divided among the connected edges, and the
// divisor travels in the snapshot (State.FleetSize). Snapshot versions are
// store revisions, so a change in the number of edges must be a store write:
// ctrl records the count in the meta document "fleet", but only while some
// policy has a cluster-scope limit, and only once the count has held for
// Config.FleetDebounce, so that edges coming and going do not churn
// snapshots that do not depend on them.

// fleetID is the meta document holding the recorded edge count.
const fleetID = "fleet"

type fleetDoc struct {
	Edges uint32 `json:"edges"`
}

// loadMeta reads a meta document at start; "init" only marks the store
// as initialised, and the health marker's revision is not the model's.
// Without a model marker (a store last written by an older ctrl) the
// model's revision stays the store's: it may read above the latest model
// change, never below it.
func (m *state) loadMeta(d store.Doc) error {
	if d.ID == modelMarker.ID {
		m.revision = d.Revision
		return nil
	}
	if d.ID != fleetID {
		return nil
	}
	var f fleetDoc
	if err := model.DecodeStrict(d.Body, &f); err != nil {
		return fmt.Errorf("stored meta %q (version %d) cannot be decoded: %w", d.ID, d.Version, err)
	}
	m.fleet = versioned[uint32]{doc: f.Edges, version: d.Version, revision: d.Revision}
	return nil
}

// fleetMutation writes edges as the recorded count, conditional on the
// version the model holds.
func (m *state) fleetMutation(edges uint32) store.Mutation {
	body, _ := json.Marshal(fleetDoc{Edges: edges}) // a struct of one integer cannot fail
	version := m.fleet.version
	return store.Mutation{Kind: kindMeta, ID: fleetID, Body: body, Expected: &version}
}

// connectedEdges counts the edges with a live stream session.
func (s *Server) connectedEdges() uint32 {
	var n uint32
	for _, e := range s.pub.Status() {
		if e.Connected {
			n++
		}
	}
	return n
}

// fleetWithPolicy is the edge count to record together with a put of p:
// the current one, when p has a cluster-scope limit and the record differs,
// so a new fleet-wide limit is divided right from its first snapshot. The
// caller holds wmu.
func (s *Server) fleetWithPolicy(p *model.Policy) (uint32, bool) {
	if !hasClusterLimit(p) {
		return 0, false
	}
	n := s.connectedEdges()
	return n, n > 0 && n != s.model.fleet.doc
}

// fleetLoop records the connected-edge count once it has held for
// FleetDebounce. Zero is never recorded: no edge would receive the
// snapshot, and after a ctrl restart the edges are still reconnecting.
func (s *Server) fleetLoop(ctx context.Context) {
	t := time.NewTicker(max(s.cfg.FleetDebounce/4, time.Millisecond))
	defer t.Stop()
	var last uint32
	since := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		n := s.connectedEdges()
		if n != last {
			last, since = n, time.Now()
			continue
		}
		if n > 0 && time.Since(since) >= s.cfg.FleetDebounce {
			if err := s.recordFleet(n); err != nil {
				s.log.Error("recording the fleet size failed; retrying", "edges", n, "err", err)
			}
		}
	}
}

// recordFleet stores n as the edge count if some policy has a
// cluster-scope limit and the record differs.
func (s *Server) recordFleet(n uint32) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	m := &s.model
	if m.fleet.doc == n || !m.clusterLimits() {
		return nil
	}
	mut := m.fleetMutation(n)
	err := s.commit([]store.Mutation{mut}, func(docs []store.Doc, rev uint64) {
		m.fleet = versioned[uint32]{doc: n, version: docs[0].Version, revision: rev}
	})
	if err == nil {
		s.log.Info("fleet size recorded for cluster-scope rate limits", "edges", n, "revision", m.fleet.revision)
	}
	return err
}
