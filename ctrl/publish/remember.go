package publish

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/snapgate/snapgate/wire"
)

// Edge status outlives ctrl: Config.Edges seeds the edges ctrl knew before
// a restart, and Config.OnEdgeChange reports every change to what a restart
// should bring back, so ctrl can keep it in its store. Calls to the hook
// come from saveLoop, or from Forget, one at a time (saveMu), so the hook
// sees each edge's changes in order, a Forget included, and a slow hook
// never holds up a session.

// EdgeRecord is the part of an edge's status that outlives a ctrl restart.
// Its JSON form (Encode, DecodeEdgeRecord) is what ctrl stores.
type EdgeRecord struct {
	NodeID         string    `json:"node_id"`
	RemoteAddr     string    `json:"remote_addr"`
	AppliedVersion uint64    `json:"applied_version"`
	LastAck        time.Time `json:"last_ack"`
	LastNack       string    `json:"last_nack"`
	Connected      bool      `json:"connected"`
	ConnectedSince time.Time `json:"connected_since"`
}

var (
	// ErrUnknownEdge is wrapped by Forget for a node id ctrl does not list.
	ErrUnknownEdge = errors.New("unknown edge")
	// ErrEdgeConnected is wrapped by Forget for an edge with a live session.
	ErrEdgeConnected = errors.New("edge is connected")
)

// Encode returns r as JSON.
func (r EdgeRecord) Encode() []byte {
	b, _ := json.Marshal(r) // strings, integers, bools and times cannot fail
	return b
}

// DecodeEdgeRecord parses what Encode produced, as read back from a store:
// unknown fields, trailing data and an invalid node id are errors.
func DecodeEdgeRecord(b []byte) (EdgeRecord, error) {
	var r EdgeRecord
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		return EdgeRecord{}, fmt.Errorf("publish: edge record: %w", err)
	}
	if dec.More() {
		return EdgeRecord{}, fmt.Errorf("publish: edge record: trailing data after the JSON object")
	}
	if err := wire.ValidNodeID(r.NodeID); err != nil {
		return EdgeRecord{}, fmt.Errorf("publish: edge record: %w", err)
	}
	return r, nil
}

// edge is the Server's entry for one node id.
type edge struct {
	EdgeStatus
	// dirty: the record changed since the hook last got it; urgent: the
	// change is a connect or disconnect, reported without waiting for
	// SaveInterval. savedAt is when the hook last got the record.
	dirty, urgent bool
	savedAt       time.Time
}

func (e *edge) record() EdgeRecord {
	return EdgeRecord{NodeID: e.NodeID, RemoteAddr: e.RemoteAddr, AppliedVersion: e.AppliedVersion,
		LastAck: e.LastAck, LastNack: e.LastNack, Connected: e.Connected, ConnectedSince: e.ConnectedSince}
}

// seed lists the remembered edges, disconnected. One stored as connected
// (ctrl stopped without recording the disconnect) is saved again as
// disconnected.
func (s *Server) seed(recs []EdgeRecord) {
	for _, r := range recs {
		if err := wire.ValidNodeID(r.NodeID); err != nil {
			s.log.Warn("publish: ignoring remembered edge", "node", r.NodeID, "err", err)
			continue
		}
		if _, dup := s.edges[r.NodeID]; dup {
			s.log.Warn("publish: edge remembered twice, keeping the last record", "node", r.NodeID)
		}
		e := &edge{EdgeStatus: EdgeStatus{NodeID: r.NodeID, RemoteAddr: r.RemoteAddr, AppliedVersion: r.AppliedVersion,
			LastAck: r.LastAck, LastNack: r.LastNack, ConnectedSince: r.ConnectedSince}}
		e.dirty = r.Connected && s.cfg.OnEdgeChange != nil
		s.edges[r.NodeID] = e
	}
}

// changed marks e's record for the hook. The caller holds s.mu.
func (s *Server) changed(e *edge, urgent bool) {
	if s.cfg.OnEdgeChange == nil {
		return
	}
	e.dirty = true
	if urgent {
		e.urgent = true
		s.pokeSaver()
	}
}

func (s *Server) pokeSaver() {
	select {
	case s.saveWake <- struct{}{}:
	default:
	}
}

// Forget removes a disconnected edge from Status, reports it to
// OnEdgeChange with a nil record before it returns, and returns its last
// status. It returns an error wrapping ErrUnknownEdge, or ErrEdgeConnected
// with the connected edge's status (a connected edge would be listed again
// at its next frame; stop it first). If the hook fails, the edge stays
// listed, so that the Forget can be retried. An edge that connects later
// is listed again as new.
func (s *Server) Forget(nodeID string) (EdgeStatus, error) {
	s.saveMu.Lock()
	defer s.saveMu.Unlock()
	s.mu.Lock()
	e := s.edges[nodeID]
	switch {
	case e == nil:
		s.mu.Unlock()
		return EdgeStatus{}, fmt.Errorf("publish: forget %q: %w", nodeID, ErrUnknownEdge)
	case e.Connected:
		st := e.EdgeStatus // a copy under mu: the session updates e
		s.mu.Unlock()
		return st, fmt.Errorf("publish: forget %q: %w (from %s since %s); stop it first",
			nodeID, ErrEdgeConnected, st.RemoteAddr, st.ConnectedSince.Format(time.RFC3339))
	}
	delete(s.edges, nodeID)
	last := e.EdgeStatus // a copy under mu: e is read outside it no more
	s.mu.Unlock()
	// Outside mu: the hook may wait for a disk, and sessions must not.
	if s.cfg.OnEdgeChange != nil {
		if err := s.cfg.OnEdgeChange(nodeID, nil); err != nil {
			s.mu.Lock()
			if _, back := s.edges[nodeID]; !back { // unless it reconnected meanwhile
				s.edges[nodeID] = e
			}
			s.mu.Unlock()
			return last, fmt.Errorf("publish: forget %q: removing its record: %w", nodeID, err)
		}
	}
	s.log.Info("publish: forgot edge", "node", nodeID)
	return last, nil
}

// saveLoop feeds OnEdgeChange until Close, then hands it every pending
// change. It checks for due records four times per SaveInterval, so a
// coalesced change waits at most 1.25 intervals.
func (s *Server) saveLoop() {
	defer close(s.saveDone)
	t := time.NewTicker(s.cfg.SaveInterval / 4)
	defer t.Stop()
	for {
		select {
		case <-s.saveWake:
		case <-t.C:
		case <-s.saveStop:
			s.save(true)
			return
		}
		s.save(false)
	}
}

// save calls the hook for every changed edge that is urgent or last saved
// SaveInterval ago (all of them when final).
func (s *Server) save(final bool) {
	s.saveMu.Lock()
	defer s.saveMu.Unlock()
	now := time.Now()
	s.mu.Lock()
	var recs []EdgeRecord
	for _, e := range s.edges {
		if e.dirty && (final || e.urgent || now.Sub(e.savedAt) >= s.cfg.SaveInterval) {
			recs = append(recs, e.record())
			e.dirty, e.urgent, e.savedAt = false, false, now
		}
	}
	s.mu.Unlock()
	for i := range recs {
		if err := s.cfg.OnEdgeChange(recs[i].NodeID, &recs[i]); err != nil {
			s.log.Warn("publish: saving edge status failed", "node", recs[i].NodeID, "err", err)
		}
	}
	if len(recs) > 0 && s.cfg.OnEdgesSaved != nil {
		if err := s.cfg.OnEdgesSaved(); err != nil {
			s.log.Warn("publish: making saved edge status durable failed", "edges", len(recs), "err", err)
		}
	}
}
