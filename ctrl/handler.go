package ctrl

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/snapgate/snapgate/ctrl/admin"
	"github.com/snapgate/snapgate/ctrl/model"
	"github.com/snapgate/snapgate/ctrl/publish"
	"github.com/snapgate/snapgate/store"
)

// handler implements admin.Handler on a Server. It is a separate type so the
// admin methods do not become part of Server's API.
type handler struct{ s *Server }

var _ admin.Handler = handler{}

// invalid turns validation errors into one admin error: the first field is
// the reply's field, the message lists every problem. The first problem's
// message leaves out its field, which the reply already names (ctl prints
// "field: message"); the others keep theirs.
func invalid(err error) *admin.Error {
	ae := &admin.Error{Code: admin.CodeInvalid, Message: err.Error()}
	var es model.FieldErrors
	switch {
	case errors.As(err, &es) && len(es) > 0:
		ae.Field = es[0].Field
		var b strings.Builder
		b.WriteString(es[0].Reason)
		for _, e := range es[1:] {
			b.WriteString("; ")
			b.WriteString(e.Error())
		}
		ae.Message = b.String()
	default:
		if fe, ok := model.First(err); ok {
			ae.Field = fe.Field
			ae.Message = fe.Reason
		}
	}
	return ae
}

// commit stores document changes as one revision, then applies them to the
// in-memory model (update gets the stored documents, in the order of muts,
// and the new revision) and pokes the recompute loop. The caller holds
// s.wmu, so the model cannot move between its checks and this write.
//
// The revision is not fsynced yet: holding wmu across an fsync would give
// every write its own (~1-8 ms each, one at a time). A writer acknowledges
// only after durable, outside wmu, where concurrent writers share one
// fsync; the recompute loop syncs before it builds, so no edge ever holds a
// revision the store could lose.
//
// The same revision writes modelMarker, which update does not see.
func (s *Server) commit(muts []store.Mutation, update func(docs []store.Doc, rev uint64)) error {
	rev, docs, err := s.store.ApplyNoSync(append(muts, modelMarker)...)
	if err != nil {
		return storeError(muts[0].Kind, muts[0].ID, err)
	}
	s.mu.Lock()
	update(docs[:len(muts)], rev)
	s.model.revision = rev
	s.mu.Unlock()
	s.notify()
	return nil
}

// durable waits until revision rev of a write to kind/id is on disk. The
// write is in the model already, so a failed sync cannot be undone: the
// reply says it may not survive a restart.
func (s *Server) durable(kind, id string, rev uint64) error {
	if err := s.store.Sync(); err != nil {
		return fmt.Errorf("storing %s %q: revision %d is applied but may not survive a restart: %w", kind, id, rev, err)
	}
	return nil
}

// answer returns err once everything the model holds is durable: a reply
// built from the model (a read, or a write refused because of what it
// holds) must not show a write that a crash could still take away, or a
// client could act on a version number that comes back with other content.
// It costs nothing when no write is waiting for its fsync.
func (s *Server) answer(err error) error {
	if serr := s.store.Sync(); serr != nil {
		return fmt.Errorf("ctrl: the state this reply depends on may not survive a restart: %w", serr)
	}
	return err
}

// storeError maps a failed Apply onto an admin error.
func storeError(kind, id string, err error) error {
	var ce *store.ConflictError
	switch {
	case errors.As(err, &ce):
		kind, id = ce.Kind, ce.ID
		if ce.Actual == 0 {
			return admin.Errorf(admin.CodeConflict, "expected_version", "%s %q does not exist, expected version %d", kind, id, ce.Expected)
		}
		if ce.Expected == 0 {
			return admin.Errorf(admin.CodeConflict, "expected_version", "%s %q already exists at version %d, expected it not to exist", kind, id, ce.Actual)
		}
		return admin.Errorf(admin.CodeConflict, "expected_version", "%s %q is at version %d, expected %d", kind, id, ce.Actual, ce.Expected)
	case errors.Is(err, store.ErrNotFound):
		return admin.Errorf(admin.CodeNotFound, "id", "%s %q does not exist", kind, id)
	}
	return fmt.Errorf("storing %s %q: %w", kind, id, err)
}

// checkExpected answers a stale expected_version from the model before
// touching the store. The store checks again under its own lock; this only
// gives the same answer without a failed commit.
func checkExpected(kind, id string, expected *uint64, have uint64) error {
	if expected == nil || *expected == have {
		return nil
	}
	return storeError(kind, id, &store.ConflictError{Kind: kind, ID: id, Expected: *expected, Actual: have})
}

func (h handler) PutRoute(_ context.Context, r model.Route, expected *uint64) (admin.Result, error) {
	return putDoc(h.s, &routes, r, expected)
}

func (h handler) GetRoute(_ context.Context, id string) (admin.Result, error) {
	return getDoc(h.s, &routes, id)
}

func (h handler) ListRoutes(context.Context) (admin.List, error) { return listDocs(h.s, &routes) }

func (h handler) DeleteRoute(_ context.Context, id string, expected *uint64) (admin.Result, error) {
	return deleteDoc(h.s, &routes, id, expected)
}

func (h handler) PutCluster(_ context.Context, c model.Cluster, expected *uint64) (admin.Result, error) {
	return putDoc(h.s, &clusters, c, expected)
}

func (h handler) GetCluster(_ context.Context, id string) (admin.Result, error) {
	return getDoc(h.s, &clusters, id)
}

func (h handler) ListClusters(context.Context) (admin.List, error) { return listDocs(h.s, &clusters) }

func (h handler) DeleteCluster(_ context.Context, id string, expected *uint64) (admin.Result, error) {
	return deleteDoc(h.s, &clusters, id, expected)
}

func (h handler) PutConsumer(_ context.Context, c model.Consumer, expected *uint64, keepCredentials bool) (admin.Result, error) {
	if !keepCredentials {
		return putDoc(h.s, &consumers, c, expected)
	}
	return write(h.s, &consumers, c.ID, expected, func(stored *model.Consumer) (model.Consumer, error) {
		if stored != nil {
			c.Credentials = stored.Credentials
		}
		return c, nil
	})
}

func (h handler) GetConsumer(_ context.Context, id string) (admin.Result, error) {
	return getDoc(h.s, &consumers, id)
}

func (h handler) ListConsumers(context.Context) (admin.List, error) { return listDocs(h.s, &consumers) }

func (h handler) DeleteConsumer(_ context.Context, id string, expected *uint64) (admin.Result, error) {
	return deleteDoc(h.s, &consumers, id, expected)
}

func (h handler) AddConsumerKey(_ context.Context, id, keyID string, expected *uint64) (admin.Result, error) {
	return h.s.addKey(id, keyID, expected)
}

func (h handler) RemoveConsumerKey(_ context.Context, id, keyID string, expected *uint64) (admin.Result, error) {
	return h.s.removeKey(id, keyID, expected)
}

func (h handler) SetConsumerPassword(_ context.Context, id, username, hash string, expected *uint64) (admin.Result, error) {
	return h.s.setPassword(id, username, hash, expected)
}

func (h handler) PutJWTIssuer(_ context.Context, j model.JWTIssuer, expected *uint64) (admin.Result, error) {
	return putDoc(h.s, &issuers, j, expected)
}

func (h handler) GetJWTIssuer(_ context.Context, id string) (admin.Result, error) {
	return getDoc(h.s, &issuers, id)
}

func (h handler) ListJWTIssuers(context.Context) (admin.List, error) { return listDocs(h.s, &issuers) }

func (h handler) DeleteJWTIssuer(_ context.Context, id string, expected *uint64) (admin.Result, error) {
	return deleteDoc(h.s, &issuers, id, expected)
}

func (h handler) PutPolicy(_ context.Context, p model.Policy, expected *uint64) (admin.Result, error) {
	return putDoc(h.s, &policies, p, expected)
}

func (h handler) GetPolicy(_ context.Context, id string) (admin.Result, error) {
	return getDoc(h.s, &policies, id)
}

func (h handler) ListPolicies(context.Context) (admin.List, error) { return listDocs(h.s, &policies) }

func (h handler) DeletePolicy(_ context.Context, id string, expected *uint64) (admin.Result, error) {
	return deleteDoc(h.s, &policies, id, expected)
}

func (h handler) Status(ctx context.Context) (admin.Status, error) {
	s := h.s
	snap := s.lastSnap()
	s.mu.RLock()
	st := admin.Status{
		SnapshotVersion: snap.version,
		SnapshotParent:  snap.parent,
		SnapshotBuiltAt: snap.builtAt,
		SnapshotBytes:   snap.bytes,
		Routes:          len(s.model.routes),
		Clusters:        len(s.model.clusters),
		Consumers:       len(s.model.consumers),
		JWTIssuers:      len(s.model.issuers),
		Policies:        len(s.model.policies),
		FleetSize:       s.model.fleetSize(),
		StoreRevision:   s.store.Revision(),
		ConfigRevision:  s.model.revision,
	}
	s.mu.RUnlock()
	latest := s.pub.LatestVersion()
	edges := s.pub.Status()
	st.Edges = make([]admin.EdgeStatus, len(edges))
	for i, e := range edges {
		st.Edges[i] = s.edgeReply(e, latest)
	}
	return st, s.answer(nil) // the revisions shown must not be ones a crash could reuse
}

// edgeReply is an edge's line in status, lag included, as of latest.
func (s *Server) edgeReply(e publish.EdgeStatus, latest uint64) admin.EdgeStatus {
	out := admin.EdgeStatus{
		NodeID:         e.NodeID,
		RemoteAddr:     e.RemoteAddr,
		Connected:      e.Connected,
		ConnectedSince: e.ConnectedSince,
		AppliedVersion: e.AppliedVersion,
		Diverged:       e.Diverged,
		LastAck:        e.LastAck,
		LastNack:       e.LastNack,
		FullsSent:      e.FullsSent,
		DeltasSent:     e.DeltasSent,
	}
	switch {
	case e.Diverged:
		// The edge holds none of ctrl's versions: it lacks all of them,
		// and has since the oldest one ctrl remembers.
		out.Lag = max(latest, 1)
		if at := s.firstBuiltAfter(0); !at.IsZero() {
			out.LagMs = time.Since(at).Milliseconds()
		}
	case e.AppliedVersion < latest:
		out.Lag = latest - e.AppliedVersion
		if at := s.firstBuiltAfter(e.AppliedVersion); !at.IsZero() {
			out.LagMs = time.Since(at).Milliseconds()
		}
	}
	return out
}

// ForgetEdge has the publisher drop the edge, which also deletes its
// stored record (rememberEdges), and replies with the edge's last line in
// status.
func (h handler) ForgetEdge(_ context.Context, nodeID string) (admin.EdgeStatus, error) {
	s := h.s
	// The entry as Forget found it: a status read before or after could
	// describe another connection of the same node id.
	e, err := s.pub.Forget(nodeID)
	switch {
	case errors.Is(err, publish.ErrUnknownEdge):
		return admin.EdgeStatus{}, admin.Errorf(admin.CodeNotFound, "node_id", "no edge %q is listed (ctl status lists every edge ctrl knows)", nodeID)
	case errors.Is(err, publish.ErrEdgeConnected):
		return admin.EdgeStatus{}, admin.Errorf(admin.CodeConflict, "node_id", "edge %q is connected from %s since %s; stop it first (a connected edge would be listed again at once)",
			nodeID, e.RemoteAddr, e.ConnectedSince.Format(time.RFC3339))
	case err != nil:
		return admin.EdgeStatus{}, err
	}
	return s.edgeReply(e, s.pub.LatestVersion()), nil
}
