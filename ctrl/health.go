package ctrl

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/snapgate/snapgate/ctrl/admin"
	"github.com/snapgate/snapgate/ctrl/health"
	"github.com/snapgate/snapgate/ctrl/model"
	"github.com/snapgate/snapgate/fbs"
	"github.com/snapgate/snapgate/store"
	"github.com/snapgate/snapgate/wire"
)

// Endpoint health (docs/health.md): the Server owns a health.Tracker on
// its store, tells it the clusters on every cluster write, and builds each
// snapshot with the tracker's published Routing view. The recompute loop
// also wakes on the tracker's changes (recompute.go).

// healthMarkerID is the meta document a health-only change writes to get a
// store revision of its own (advanceRevision).
const healthMarkerID = "health"

// reportTimeout bounds how long health.report waits for its observation
// to become durable when the store is failing.
const reportTimeout = 10 * time.Second

// syncHealth hands the model's clusters to the tracker, which starts or
// stops probes and republishes. The caller holds wmu, so the tracker sees
// the clusters in commit order and a build (which reads the Routing view
// under wmu) never pairs a cluster document with a view that predates it.
// A stored cluster that no longer validates (load keeps it, logged) is
// left out: its endpoints stay routable, as they were before health.
func (s *Server) syncHealth() {
	cs := make([]model.Cluster, 0, len(s.model.clusters))
	for _, c := range s.model.clusters {
		if c.doc.Validate() == nil {
			cs = append(cs, c.doc)
		}
	}
	if err := s.health.SetClusters(cs); err != nil {
		s.log.Error("health tracking not updated", "err", err)
	}
}

// cachedCluster is one cluster in snapshot form, as of the cluster
// document revision and the published health view it was converted from.
type cachedCluster struct {
	revision uint64
	view     *health.ClusterRouting // nil: the tracker does not track it
	out      fbs.Cluster
}

// clusterCache holds every cluster in snapshot form as of the last
// successful build. The tracker keeps a cluster's *ClusterRouting while its
// view does not change, so an unchanged pointer and document revision mean
// the conversion can be reused.
type clusterCache map[string]cachedCluster

// healthChanged reports whether the published health of some cluster of m
// differs from the one the cache was built with.
func (cc clusterCache) healthChanged(m *state, r *health.Routing) bool {
	for id := range m.clusters {
		if cc[id].view != r.Clusters[id] {
			return true
		}
	}
	return false
}

// convert returns m's clusters in snapshot form with the health of r,
// converting only those whose document or view changed, and the cache to
// keep once the build succeeds.
func (cc clusterCache) convert(m *state, r *health.Routing) ([]fbs.Cluster, clusterCache) {
	out := make([]fbs.Cluster, 0, len(m.clusters))
	next := make(clusterCache, len(m.clusters))
	for id, c := range m.clusters {
		view := r.Clusters[id]
		e, ok := cc[id]
		if !ok || e.revision != c.revision || e.view != view {
			e = cachedCluster{revision: c.revision, view: view, out: fbsCluster(&c.doc)}
			withHealth(&e.out, view)
		}
		next[id] = e
		out = append(out, e.out)
	}
	return out, next
}

// withHealth adds the published view v to a converted cluster. Endpoints
// are matched by address: the view follows the last SetClusters, which the
// writer calls right after each cluster commit, but an endpoint the view
// lacks is simply healthy, as a new endpoint is.
func withHealth(c *fbs.Cluster, v *health.ClusterRouting) {
	if v == nil {
		return
	}
	c.Panic = v.Panic
	c.SlowStartMs = uint32(v.SlowStart.Milliseconds())
	for i := range c.Endpoints {
		e := &c.Endpoints[i]
		var er health.EndpointRouting
		var ok bool
		if i < len(v.Endpoints) && v.Endpoints[i].Address == e.Address {
			er, ok = v.Endpoints[i], true
		} else {
			er, ok = v.Lookup(e.Address)
		}
		if !ok {
			continue
		}
		e.Unhealthy = !er.Healthy
		if !er.RecoveredAt.IsZero() {
			e.RecoveredAtMs = uint64(er.RecoveredAt.UnixMilli())
		}
	}
}

// advanceRevision commits the health marker and returns its revision.
// Snapshot versions are store revisions, and a published health change can
// arrive after the latest snapshot already took the latest revision: the
// flush that made the change durable came before that build, but the
// publication cap held the change back. The marker gives the change a
// revision of its own; it happens at most once per publication. The caller
// holds wmu.
func (s *Server) advanceRevision(generation uint64) (uint64, error) {
	body, _ := json.Marshal(struct {
		Generation uint64 `json:"health_generation"`
	}{generation}) // a struct of one integer cannot fail
	rev, _, err := s.store.Apply(store.Mutation{Kind: kindMeta, ID: healthMarkerID, Body: body})
	if err != nil {
		return 0, fmt.Errorf("recording a health-only snapshot revision: %w", err)
	}
	return rev, nil
}

// healthError maps the tracker's ErrInvalid onto an invalid admin error
// naming field.
func healthError(field string, err error) error {
	if errors.Is(err, health.ErrInvalid) {
		return admin.Errorf(admin.CodeInvalid, field, "%v", err)
	}
	return err
}

func (h handler) ReportHealth(ctx context.Context, r admin.HealthReport) (admin.HealthReportResult, error) {
	s := h.s
	name := r.Source
	if name == "" {
		name = admin.DefaultReportSource
	}
	src, err := health.ExternalSource(name)
	if err != nil {
		return admin.HealthReportResult{}, healthError("report.source", err)
	}
	if err := s.healthTarget("report.cluster", "report.endpoint", r.Cluster, r.Endpoint); err != nil {
		return admin.HealthReportResult{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, reportTimeout)
	defer cancel()
	out, err := s.health.Report(ctx, health.Observation{
		Cluster: r.Cluster, Endpoint: r.Endpoint, OK: r.State == admin.StateHealthy,
		Source: src, Revision: r.Revision, Detail: r.Detail,
	})
	if errors.Is(err, health.ErrUnknownEndpoint) {
		// The cluster changed since the check above.
		return admin.HealthReportResult{}, s.healthNotFound("report.cluster", "report.endpoint", r.Cluster, r.Endpoint)
	}
	if err != nil {
		// Source and revision were checked above; the report's remaining
		// free-form field is the detail.
		return admin.HealthReportResult{}, healthError("report.detail", err)
	}
	return admin.HealthReportResult{Result: out.Result.String(), Source: string(src), LastRevision: out.LastRevision, Healthy: out.Healthy, Changed: out.Changed}, nil
}

// observeEdge hands an edge's passive observations (REPORT frames) to the
// tracker under the edge's source. They are advisory and the edge may
// still serve a snapshot that names endpoints since removed, so an unknown
// endpoint is only logged at debug.
func (s *Server) observeEdge(nodeID string, obs []wire.Observation) {
	src, err := health.EdgeSource(nodeID)
	if err != nil {
		s.log.Warn("ignoring edge health report", "node", nodeID, "err", err)
		return
	}
	for _, o := range obs {
		_, err := s.health.Observe(health.Observation{
			Cluster: o.Cluster, Endpoint: o.Endpoint, OK: o.OK, Source: src,
			Revision: o.Revision, Detail: o.Cause.String(), At: time.Unix(0, o.UnixNano),
		})
		switch {
		case err == nil:
		case errors.Is(err, health.ErrUnknownEndpoint):
			s.log.Debug("edge reported an endpoint ctrl does not have", "node", nodeID, "cluster", o.Cluster, "endpoint", o.Endpoint)
		default:
			s.log.Warn("ignoring edge health observation", "node", nodeID, "cluster", o.Cluster, "endpoint", o.Endpoint, "err", err)
		}
	}
}

// healthTarget says, as not_found naming clusterField or endpointField,
// that the model has no cluster id, or that it lacks endpoint ("" checks
// the cluster alone); nil when both exist.
func (s *Server) healthTarget(clusterField, endpointField, id, endpoint string) error {
	s.mu.RLock()
	c, ok := s.model.clusters[id]
	s.mu.RUnlock()
	// A refusal may rest on a delete still waiting for its fsync (answer).
	switch {
	case !ok:
		return s.answer(admin.Errorf(admin.CodeNotFound, clusterField, "cluster %q does not exist", id))
	case endpoint != "" && !hasEndpoint(&c.doc, endpoint):
		return s.answer(admin.Errorf(admin.CodeNotFound, endpointField, "cluster %q has no endpoint %q", id, endpoint))
	}
	return nil
}

// healthNotFound explains the tracker's ErrUnknownEndpoint for cluster id
// (and endpoint, unless ""): the model lacks them, or the tracker does not
// follow the cluster because its stored document no longer validates
// (syncHealth leaves such a cluster out).
func (s *Server) healthNotFound(clusterField, endpointField, id, endpoint string) error {
	if err := s.healthTarget(clusterField, endpointField, id, endpoint); err != nil {
		return err
	}
	return admin.Errorf(admin.CodeNotFound, clusterField, "cluster %q exists but its health is not tracked: its stored document no longer validates (ctrl logged why at start; put it again to fix it)", id)
}

func hasEndpoint(c *model.Cluster, addr string) bool {
	for _, e := range c.Endpoints {
		if e.Address == addr {
			return true
		}
	}
	return false
}

func (h handler) HealthStatus(_ context.Context, cluster string) (admin.HealthStatus, error) {
	all, err := h.s.health.Status(cluster)
	if errors.Is(err, health.ErrUnknownEndpoint) {
		return admin.HealthStatus{}, h.s.healthNotFound("id", "", cluster, "")
	}
	if err != nil {
		return admin.HealthStatus{}, err
	}
	st := admin.HealthStatus{Clusters: make([]admin.ClusterHealth, len(all))}
	for i, cs := range all {
		st.Clusters[i] = clusterHealthReply(&cs)
	}
	return st, nil
}

func clusterHealthReply(cs *health.ClusterStatus) admin.ClusterHealth {
	hc := &cs.Health
	out := admin.ClusterHealth{
		Cluster: cs.Cluster, Probe: probeSummary(hc), Healthy: cs.Healthy, Total: cs.Total,
		PanicThresholdPercent: hc.PanicThresholdPercent, SlowStartMs: hc.SlowStartMs,
		Panic: cs.Panic, PublishedPanic: cs.PublishedPanic,
		Endpoints: make([]admin.EndpointHealth, len(cs.Endpoints)),
	}
	for i, es := range cs.Endpoints {
		e := admin.EndpointHealth{
			Address: es.Address, Healthy: es.Healthy, Since: es.Since, Reason: es.Reason,
			Published: es.Published, Routable: es.Routable, OKStreak: es.OKStreak, FailStreak: es.FailStreak,
			RecoveredAt: es.RecoveredAt, PendingAt: es.PendingAt,
			Sources:      make([]admin.HealthSource, len(es.Sources)),
			Observations: make([]admin.HealthObservation, len(es.Observations)),
			Accepted:     es.Accepted, Stale: es.Stale, Duplicate: es.Duplicate, Evicted: es.Evicted,
		}
		for j, src := range es.Sources {
			e.Sources[j] = admin.HealthSource{Source: string(src.Source), Revision: src.Revision, At: src.At}
		}
		for j, o := range es.Observations {
			e.Observations[j] = admin.HealthObservation{Source: string(o.Source), Revision: o.Revision, OK: o.OK, Detail: o.Detail, At: o.At, Received: o.Received}
		}
		out.Endpoints[i] = e
	}
	return out
}

// probeSummary describes a cluster's active probe in one line.
func probeSummary(hc *model.HealthCheck) string {
	switch hc.Type {
	case "":
		return "none"
	case model.ProbeHTTP:
		return fmt.Sprintf("http GET %s every %dms", hc.Path, hc.IntervalMs)
	}
	return fmt.Sprintf("%s every %dms", hc.Type, hc.IntervalMs)
}

func (h handler) ExplainHealth(_ context.Context, cluster, endpoint string) (admin.HealthExplanation, error) {
	text, err := h.s.health.Explain(cluster, endpoint)
	switch {
	case errors.Is(err, health.ErrUnknownEndpoint) && cluster == "":
		return admin.HealthExplanation{}, admin.Errorf(admin.CodeNotFound, "endpoint", "no cluster has endpoint %q", endpoint)
	case errors.Is(err, health.ErrUnknownEndpoint):
		return admin.HealthExplanation{}, h.s.healthNotFound("id", "endpoint", cluster, endpoint)
	case err != nil:
		return admin.HealthExplanation{}, err
	}
	return admin.HealthExplanation{Text: text}, nil
}
