package health

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/snapgate/snapgate/ctrl/model"
)

// Routing is the published health of every tracked cluster: what the
// snapshot builder turns into endpoint eligibility. It holds only durable
// state. Treat it and everything it points to as read-only.
type Routing struct {
	// Generation increases with every publication.
	Generation uint64
	// Clusters by id. A cluster whose view did not change keeps the same
	// *ClusterRouting across generations, so the builder can skip it.
	Clusters map[string]*ClusterRouting
}

// ClusterRouting is one cluster's published health.
type ClusterRouting struct {
	Cluster string
	// Generation is the Routing generation in which this view last changed.
	Generation uint64
	// Panic: fewer than the cluster's panic_threshold_percent of its
	// endpoints are healthy, so every endpoint is routable.
	Panic          bool
	Healthy, Total int
	// SlowStart is how long an endpoint ramps up after RecoveredAt; zero
	// when the cluster has no slow start.
	SlowStart time.Duration
	Endpoints []EndpointRouting // in the cluster document's order
}

// EndpointRouting is one endpoint's published health.
type EndpointRouting struct {
	Address string
	Healthy bool
	// Routable: Healthy, or the cluster is in panic mode. Edges choose
	// only routable endpoints.
	Routable bool
	// RecoveredAt is the endpoint's last return to healthy when the
	// cluster has slow start, else zero: the edge ramps its share up over
	// [RecoveredAt, RecoveredAt+SlowStart).
	RecoveredAt time.Time
}

// Lookup returns an endpoint's view by address.
func (c *ClusterRouting) Lookup(addr string) (EndpointRouting, bool) {
	for _, e := range c.Endpoints {
		if e.Address == addr {
			return e, true
		}
	}
	return EndpointRouting{}, false
}

func (c *ClusterRouting) sameAs(o *ClusterRouting) bool {
	return c.Cluster == o.Cluster && c.Panic == o.Panic && c.Healthy == o.Healthy && c.Total == o.Total &&
		c.SlowStart == o.SlowStart && slices.EqualFunc(c.Endpoints, o.Endpoints, func(a, b EndpointRouting) bool {
		return a.Address == b.Address && a.Healthy == b.Healthy && a.Routable == b.Routable && a.RecoveredAt.Equal(b.RecoveredAt)
	})
}

// inPanic applies the panic rule to counts.
func inPanic(hc *model.HealthCheck, healthy, total int) bool {
	return hc.PanicThresholdPercent > 0 && healthy*100 < int(hc.PanicThresholdPercent)*total
}

// view builds the cluster's view from its endpoints' durable state.
func (c *cluster) view(gen uint64) *ClusterRouting {
	v := &ClusterRouting{
		Cluster:    c.id,
		Generation: gen,
		Total:      len(c.endpoints),
		SlowStart:  time.Duration(c.hc.SlowStartMs) * time.Millisecond,
		Endpoints:  make([]EndpointRouting, len(c.endpoints)),
	}
	for _, ep := range c.endpoints {
		if ep.pub.healthy {
			v.Healthy++
		}
	}
	v.Panic = inPanic(&c.hc, v.Healthy, v.Total)
	for i, ep := range c.endpoints {
		e := EndpointRouting{Address: ep.addr, Healthy: ep.pub.healthy, Routable: ep.pub.healthy || v.Panic}
		if v.SlowStart > 0 {
			e.RecoveredAt = ep.pub.recoveredAt
		}
		v.Endpoints[i] = e
	}
	return v
}

// publishLocked replaces the Routing view, rebuilding the clusters whose
// durable state changed, and signals Changes.
func (t *Tracker) publishLocked(now time.Time) {
	prev := t.routing.Load()
	r := &Routing{Generation: prev.Generation + 1, Clusters: make(map[string]*ClusterRouting, len(t.clusters))}
	var unhealthy, panicking int
	for id, c := range t.clusters {
		v := prev.Clusters[id]
		if c.viewStale || v == nil {
			nv := c.view(r.Generation)
			if v == nil || !nv.sameAs(v) {
				v = nv
			}
			c.viewStale = false
		}
		r.Clusters[id] = v
		unhealthy += v.Total - v.Healthy
		if v.Panic {
			panicking++
		}
	}
	t.routing.Store(r)
	t.pending = false
	t.gate.fire(now)
	t.counters.Published++
	t.m.published.Inc()
	t.m.unhealthy.Set(float64(unhealthy))
	t.m.panicking.Set(float64(panicking))
	select {
	case t.changes <- struct{}{}:
	default:
	}
}

// ClusterStatus is the operator's view of one cluster.
type ClusterStatus struct {
	Cluster string
	// Health is the effective configuration (defaults applied).
	Health         model.HealthCheck
	Healthy, Total int // live damped state
	// Panic is the live panic state; PublishedPanic what edges route on.
	Panic, PublishedPanic bool
	Endpoints             []EndpointStatus
}

// EndpointStatus is the operator's view of one endpoint.
type EndpointStatus struct {
	Cluster, Address string
	// Healthy is the live damped state, Since when it began and Reason why.
	Healthy bool
	Since   time.Time
	Reason  string
	// Published is the state edges route on (durable, possibly behind
	// Healthy by a flush and the publication cap); Routable adds panic mode.
	Published, Routable  bool
	OKStreak, FailStreak uint32
	// RecoveredAt is the last return to healthy (zero if none).
	RecoveredAt time.Time
	// PendingAt is when a transition held back by min_hold_ms, or a
	// passive expiry, is due (zero if none).
	PendingAt time.Time
	// Sources lists every source's last accepted revision, by source.
	Sources []SourceStatus
	// Observations are the last accepted observations, oldest first.
	Observations                        []Record
	Accepted, Stale, Duplicate, Evicted uint64
}

// SourceStatus is a source's last accepted revision and when ctrl accepted it.
type SourceStatus struct {
	Source   Source
	Revision uint64
	At       time.Time
}

// Status returns every cluster's status sorted by id, or one cluster's
// when id is not empty (ErrUnknownEndpoint if it is not tracked).
func (t *Tracker) Status(id string) ([]ClusterStatus, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if id != "" {
		c := t.clusters[id]
		if c == nil {
			return nil, fmt.Errorf("health: cluster %q is not tracked: %w", id, ErrUnknownEndpoint)
		}
		return []ClusterStatus{t.clusterStatusLocked(c)}, nil
	}
	out := make([]ClusterStatus, 0, len(t.clusters))
	for _, c := range t.clusters {
		out = append(out, t.clusterStatusLocked(c))
	}
	slices.SortFunc(out, func(a, b ClusterStatus) int { return strings.Compare(a.Cluster, b.Cluster) })
	return out, nil
}

func (t *Tracker) clusterStatusLocked(c *cluster) ClusterStatus {
	cs := ClusterStatus{Cluster: c.id, Health: c.hc, Total: len(c.endpoints), Endpoints: make([]EndpointStatus, len(c.endpoints))}
	pub := t.routing.Load().Clusters[c.id]
	if pub != nil {
		cs.PublishedPanic = pub.Panic
	}
	for i, ep := range c.endpoints {
		if ep.d.healthy {
			cs.Healthy++
		}
		es := EndpointStatus{
			Cluster: c.id, Address: ep.addr,
			Healthy: ep.d.healthy, Since: ep.d.since, Reason: ep.d.reason,
			OKStreak: ep.d.okStreak, FailStreak: ep.d.failStreak,
			RecoveredAt: ep.d.recoveredAt, PendingAt: ep.wakeAt,
			Observations: ep.recent(),
			Accepted:     ep.accepted, Stale: ep.stale, Duplicate: ep.duplicate, Evicted: ep.evicted,
		}
		if pub != nil {
			if e, ok := pub.Lookup(ep.addr); ok {
				es.Published, es.Routable = e.Healthy, e.Routable
			}
		}
		for _, s := range sortedSources(ep.sources) {
			es.Sources = append(es.Sources, SourceStatus(s))
		}
		cs.Endpoints[i] = es
	}
	cs.Panic = inPanic(&c.hc, cs.Healthy, cs.Total)
	return cs
}

// Explain says in plain text why an endpoint is in its state and what
// would change it. cluster "" explains the address in every cluster that
// has it.
func (t *Tracker) Explain(cluster, addr string) (string, error) {
	all, err := t.Status(cluster)
	if err != nil {
		return "", err
	}
	now := t.clock.Now()
	var b strings.Builder
	for _, cs := range all {
		for _, es := range cs.Endpoints {
			if es.Address == addr {
				if b.Len() > 0 {
					b.WriteByte('\n')
				}
				explain(&b, &cs, &es, now)
			}
		}
	}
	if b.Len() == 0 {
		if cluster == "" {
			return "", fmt.Errorf("health: no tracked cluster has endpoint %q: %w", addr, ErrUnknownEndpoint)
		}
		return "", fmt.Errorf("health: cluster %q has no endpoint %q: %w", cluster, addr, ErrUnknownEndpoint)
	}
	return b.String(), nil
}

func explain(b *strings.Builder, cs *ClusterStatus, es *EndpointStatus, now time.Time) {
	hc := &cs.Health
	state := func(h bool) string {
		if h {
			return "HEALTHY"
		}
		return "UNHEALTHY"
	}
	ago := func(at time.Time) string {
		return fmt.Sprintf("%s (%v ago)", at.UTC().Format(time.RFC3339Nano), now.Sub(at).Round(time.Millisecond))
	}
	fmt.Fprintf(b, "endpoint %s in cluster %s: %s since %s\n", es.Address, cs.Cluster, state(es.Healthy), ago(es.Since))
	fmt.Fprintf(b, "  why: %s\n", es.Reason)
	if es.Healthy {
		fmt.Fprintf(b, "  leaves after %d consecutive failures (unhealthy_threshold); %d so far, %d successes in a row\n",
			hc.UnhealthyThreshold, es.FailStreak, es.OKStreak)
	} else {
		fmt.Fprintf(b, "  returns after %d consecutive successes (healthy_threshold); %d so far, %d failures in a row\n",
			hc.HealthyThreshold, es.OKStreak, es.FailStreak)
		if hc.PassiveExpiryMs > 0 {
			fmt.Fprintf(b, "  no active probe: also returns %v after the last failure (passive_expiry_ms)\n", time.Duration(hc.PassiveExpiryMs)*time.Millisecond)
		}
	}
	if hc.MinHoldMs > 0 {
		fmt.Fprintf(b, "  min_hold_ms %d: no change before %s\n", hc.MinHoldMs, es.Since.Add(time.Duration(hc.MinHoldMs)*time.Millisecond).UTC().Format(time.RFC3339Nano))
	}
	if !es.PendingAt.IsZero() {
		fmt.Fprintf(b, "  a change is due at %s if nothing contradicts it\n", es.PendingAt.UTC().Format(time.RFC3339Nano))
	}
	if hc.Type == "" {
		b.WriteString("  active probe: none (external and edge reports only)\n")
	} else {
		fmt.Fprintf(b, "  active probe: %s", hc.Type)
		if hc.Type == model.ProbeHTTP {
			fmt.Fprintf(b, " GET %s expecting %s", hc.Path, strings.Join(hc.ExpectedStatuses, ","))
		}
		fmt.Fprintf(b, " every %dms (±%dms), timeout %dms\n", hc.IntervalMs, hc.JitterMs, hc.TimeoutMs)
	}
	routable := "no"
	switch {
	case es.Routable && !es.Published:
		routable = "yes, only because the cluster is in panic mode"
	case es.Routable:
		routable = "yes"
	}
	fmt.Fprintf(b, "  edges see: %s, routable: %s\n", strings.ToLower(state(es.Published)), routable)
	if es.Published != es.Healthy {
		b.WriteString("  the live state is not published yet (waiting for the store write or the publication cap)\n")
	}
	fmt.Fprintf(b, "  cluster: %d of %d healthy", cs.Healthy, cs.Total)
	switch {
	case hc.PanicThresholdPercent == 0:
		b.WriteString(", panic mode disabled\n")
	case cs.PublishedPanic:
		fmt.Fprintf(b, ", below panic_threshold_percent %d: PANIC, every endpoint is routable\n", hc.PanicThresholdPercent)
	default:
		fmt.Fprintf(b, ", panic below %d%%\n", hc.PanicThresholdPercent)
	}
	if hc.SlowStartMs > 0 && !es.RecoveredAt.IsZero() {
		end := es.RecoveredAt.Add(time.Duration(hc.SlowStartMs) * time.Millisecond)
		if now.Before(end) {
			fmt.Fprintf(b, "  slow start: recovered %s, full share at %s\n", ago(es.RecoveredAt), end.UTC().Format(time.RFC3339Nano))
		}
	}
	fmt.Fprintf(b, "  observations: %d accepted, %d stale and %d duplicate ignored", es.Accepted, es.Stale, es.Duplicate)
	if es.Evicted > 0 {
		fmt.Fprintf(b, ", %d sources forgotten (too many sources)", es.Evicted)
	}
	b.WriteByte('\n')
	for _, s := range es.Sources {
		fmt.Fprintf(b, "  source %s: revision %d, accepted %s\n", s.Source, s.Revision, ago(s.At))
	}
	for i := len(es.Observations) - 1; i >= 0; i-- {
		o := es.Observations[i]
		verdict := "ok"
		if !o.OK {
			verdict = "FAIL"
		}
		fmt.Fprintf(b, "  %s  %-4s %s revision %d", o.Received.UTC().Format(time.RFC3339Nano), verdict, o.Source, o.Revision)
		if o.Detail != "" {
			fmt.Fprintf(b, " (%s)", o.Detail)
		}
		b.WriteByte('\n')
	}
}
