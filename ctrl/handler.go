package ctrl

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/snapgate/snapgate/ctrl/admin"
	"github.com/snapgate/snapgate/ctrl/model"
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

// storeError maps a failed Apply onto an admin error.
// commit makes one document change durable in the store, then applies it to
// the in-memory model (update gets the document's new version and the new
// revision) and pokes the recompute loop. The caller holds s.wmu, so the
// model cannot move between its checks and this write.
func (s *Server) commit(mut store.Mutation, update func(version, rev uint64)) error {
	rev, docs, err := s.store.Apply(mut)
	if err != nil {
		return storeError(mut.Kind, mut.ID, err)
	}
	s.mu.Lock()
	update(docs[0].Version, rev)
	s.model.revision = rev
	s.mu.Unlock()
	s.notify()
	return nil
}

func storeError(kind, id string, err error) error {
	var ce *store.ConflictError
	switch {
	case errors.As(err, &ce):
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

func (h handler) PutRoute(ctx context.Context, r model.Route, expected *uint64) (admin.Result, error) {
	if err := r.Validate(); err != nil {
		return admin.Result{}, invalid(err)
	}
	s := h.s
	s.wmu.Lock()
	defer s.wmu.Unlock()
	// The model only changes under wmu, so reading it without mu is safe here.
	m := &s.model
	if _, ok := m.clusters[r.Cluster]; !ok {
		return admin.Result{}, admin.Errorf(admin.CodeInvalid, "cluster", "cluster %q does not exist; create it first", r.Cluster)
	}
	if other, ok := m.byKey[keyOf(r)]; ok && other != r.ID {
		field, match := "prefix", r.Prefix
		if r.Path != "" {
			field, match = "path", r.Path
		}
		return admin.Result{}, admin.Errorf(admin.CodeConflict, field, "route %q already matches host %q %s %q with the same methods and headers; two routes cannot share host, %s, methods and headers", other, r.Host, field, match, field)
	}
	if err := checkExpected(kindRoute, r.ID, expected, m.routes[r.ID].version); err != nil {
		return admin.Result{}, err
	}
	body, err := json.Marshal(r)
	if err != nil {
		return admin.Result{}, fmt.Errorf("encoding route %q: %w", r.ID, err)
	}
	var v versioned[model.Route]
	err = s.commit(store.Mutation{Kind: kindRoute, ID: r.ID, Body: body, Expected: expected}, func(version, rev uint64) {
		v = versioned[model.Route]{doc: r, version: version, revision: rev}
		m.putRoute(v)
	})
	if err != nil {
		return admin.Result{}, err
	}
	return routeResult(v), nil
}

func (h handler) DeleteRoute(ctx context.Context, id string, expected *uint64) (admin.Result, error) {
	s := h.s
	s.wmu.Lock()
	defer s.wmu.Unlock()
	m := &s.model
	old, ok := m.routes[id]
	if err := checkExpected(kindRoute, id, expected, old.version); err != nil {
		return admin.Result{}, err
	}
	if !ok {
		return admin.Result{}, admin.Errorf(admin.CodeNotFound, "id", "route %q does not exist", id)
	}
	var rev uint64
	err := s.commit(store.Mutation{Kind: kindRoute, ID: id, Expected: expected}, func(_, r uint64) {
		rev = r
		m.deleteRoute(id)
	})
	if err != nil {
		return admin.Result{}, err
	}
	return admin.Result{Kind: kindRoute, ID: id, Version: old.version, Revision: rev}, nil
}

func (h handler) PutCluster(ctx context.Context, c model.Cluster, expected *uint64) (admin.Result, error) {
	if err := c.Validate(); err != nil {
		return admin.Result{}, invalid(err)
	}
	s := h.s
	s.wmu.Lock()
	defer s.wmu.Unlock()
	m := &s.model
	if err := checkExpected(kindCluster, c.ID, expected, m.clusters[c.ID].version); err != nil {
		return admin.Result{}, err
	}
	body, err := json.Marshal(c)
	if err != nil {
		return admin.Result{}, fmt.Errorf("encoding cluster %q: %w", c.ID, err)
	}
	var v versioned[model.Cluster]
	err = s.commit(store.Mutation{Kind: kindCluster, ID: c.ID, Body: body, Expected: expected}, func(version, rev uint64) {
		v = versioned[model.Cluster]{doc: c, version: version, revision: rev}
		m.clusters[c.ID] = v
	})
	if err != nil {
		return admin.Result{}, err
	}
	return clusterResult(v), nil
}

func (h handler) DeleteCluster(ctx context.Context, id string, expected *uint64) (admin.Result, error) {
	s := h.s
	s.wmu.Lock()
	defer s.wmu.Unlock()
	m := &s.model
	old, ok := m.clusters[id]
	if err := checkExpected(kindCluster, id, expected, old.version); err != nil {
		return admin.Result{}, err
	}
	if !ok {
		return admin.Result{}, admin.Errorf(admin.CodeNotFound, "id", "cluster %q does not exist", id)
	}
	if users := m.routesUsing(id); len(users) > 0 {
		noun := "route"
		if len(users) > 1 {
			noun = "routes"
		}
		return admin.Result{}, admin.Errorf(admin.CodeInvalid, "id", "cluster %q is used by %s %s; delete or move them first", id, noun, listIDs(users))
	}
	var rev uint64
	err := s.commit(store.Mutation{Kind: kindCluster, ID: id, Expected: expected}, func(_, r uint64) {
		rev = r
		delete(m.clusters, id)
	})
	if err != nil {
		return admin.Result{}, err
	}
	return admin.Result{Kind: kindCluster, ID: id, Version: old.version, Revision: rev}, nil
}

func (h handler) GetRoute(ctx context.Context, id string) (admin.Result, error) {
	h.s.mu.RLock()
	v, ok := h.s.model.routes[id]
	h.s.mu.RUnlock()
	if !ok {
		return admin.Result{}, admin.Errorf(admin.CodeNotFound, "id", "route %q does not exist", id)
	}
	return routeResult(v), nil
}

func (h handler) GetCluster(ctx context.Context, id string) (admin.Result, error) {
	h.s.mu.RLock()
	v, ok := h.s.model.clusters[id]
	h.s.mu.RUnlock()
	if !ok {
		return admin.Result{}, admin.Errorf(admin.CodeNotFound, "id", "cluster %q does not exist", id)
	}
	return clusterResult(v), nil
}

func (h handler) ListRoutes(ctx context.Context) (admin.List, error) {
	h.s.mu.RLock()
	l := admin.List{Kind: kindRoute, Revision: h.s.model.revision, Items: make([]admin.Result, 0, len(h.s.model.routes))}
	for _, v := range h.s.model.routes {
		l.Items = append(l.Items, routeResult(v))
	}
	h.s.mu.RUnlock()
	sortByID(l.Items)
	return l, nil
}

func (h handler) ListClusters(ctx context.Context) (admin.List, error) {
	h.s.mu.RLock()
	l := admin.List{Kind: kindCluster, Revision: h.s.model.revision, Items: make([]admin.Result, 0, len(h.s.model.clusters))}
	for _, v := range h.s.model.clusters {
		l.Items = append(l.Items, clusterResult(v))
	}
	h.s.mu.RUnlock()
	sortByID(l.Items)
	return l, nil
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
		StoreRevision:   s.model.revision,
	}
	s.mu.RUnlock()
	latest := s.pub.LatestVersion()
	edges := s.pub.Status()
	st.Edges = make([]admin.EdgeStatus, len(edges))
	for i, e := range edges {
		st.Edges[i] = admin.EdgeStatus{
			NodeID:         e.NodeID,
			RemoteAddr:     e.RemoteAddr,
			Connected:      e.Connected,
			ConnectedSince: e.ConnectedSince,
			AppliedVersion: e.AppliedVersion,
			LastAck:        e.LastAck,
			LastNack:       e.LastNack,
			FullsSent:      e.FullsSent,
			DeltasSent:     e.DeltasSent,
		}
		st.Edges[i].Diverged = e.Diverged
		switch {
		case e.Diverged:
			// The edge holds none of ctrl's versions: it lacks all of them,
			// and has since the oldest one ctrl remembers.
			st.Edges[i].Lag = max(latest, 1)
			if at := s.firstBuiltAfter(0); !at.IsZero() {
				st.Edges[i].LagMs = time.Since(at).Milliseconds()
			}
		case e.AppliedVersion < latest:
			st.Edges[i].Lag = latest - e.AppliedVersion
			if at := s.firstBuiltAfter(e.AppliedVersion); !at.IsZero() {
				st.Edges[i].LagMs = time.Since(at).Milliseconds()
			}
		}
	}
	return st, nil
}

func routeResult(v versioned[model.Route]) admin.Result {
	r := v.doc
	return admin.Result{Kind: kindRoute, ID: r.ID, Version: v.version, Revision: v.revision, Route: &r}
}

func clusterResult(v versioned[model.Cluster]) admin.Result {
	c := v.doc
	c.Endpoints = slices.Clone(c.Endpoints) // the reply must not alias the model
	return admin.Result{Kind: kindCluster, ID: c.ID, Version: v.version, Revision: v.revision, Cluster: &c}
}

func sortByID(items []admin.Result) {
	slices.SortFunc(items, func(a, b admin.Result) int { return strings.Compare(a.ID, b.ID) })
}
