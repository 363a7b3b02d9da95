// Package health tracks the health of every cluster endpoint for ctrl.
//
// Observations come from ctrl's own active probes, from external checkers
// (admin socket) and from edges (passive reports). Each is ordered per
// endpoint and source by its revision: one at or below the source's last
// accepted revision is ignored and counted (DESIGN.md P4). Accepted
// observations feed a damping state machine per endpoint (N failures out,
// M successes back, a minimum hold time, passive expiry without probes).
//
// The state is written to the store (kind "health", one document per
// endpoint, one Apply per flush) and only durable state is published: the
// Routing view that the snapshot builder reads changes only after the
// flush that made its change durable, so a snapshot never carries health a
// ctrl crash could take back. Publications are spaced so that at most
// Config.MaxVersionsPerSecond happen per second; changes in between are
// coalesced. docs/health.md is the operator's description.
package health

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/snapgate/snapgate/ctrl/model"
	"github.com/snapgate/snapgate/store"
)

// Config configures a Tracker. Zero fields take the documented defaults.
type Config struct {
	// Store keeps the health documents. Required. The tracker does not
	// close it; close the tracker first.
	Store store.Store
	// MaxVersionsPerSecond caps how often the published Routing view
	// changes, hence how many snapshot versions health can cause per
	// second. Default 10.
	MaxVersionsPerSecond int
	// FlushInterval is the least time between two store writes; the
	// changes of that window share one Apply (one fsync). It is also
	// the extra latency of Report. Default 20ms.
	FlushInterval time.Duration
	// HistoryLen is how many accepted observations each endpoint keeps for
	// operators. Default 16.
	HistoryLen int
	// MaxSourcesPerEndpoint bounds the sources whose revisions an endpoint
	// tracks (probe, external checkers, edges); beyond it the source heard
	// from longest ago is forgotten. Default 256.
	MaxSourcesPerEndpoint int
	// Metrics receives the tracker's metrics (docs/health.md); nil keeps
	// them private. One Tracker per set: the names are fixed.
	Metrics *metrics.Set
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Clock defaults to the system clock.
	Clock Clock
}

const (
	defaultMaxVersionsPerSecond  = 10
	defaultFlushInterval         = 20 * time.Millisecond
	defaultHistoryLen            = 16
	defaultMaxSourcesPerEndpoint = 256
	// flushRetry spaces retries after a failed store write (a full disk),
	// so a persistent failure does not spin.
	flushRetry = time.Second
)

func (c *Config) setDefaults() error {
	switch {
	case c.Store == nil:
		return errors.New("health: config: Store is required")
	case c.MaxVersionsPerSecond < 0 || c.FlushInterval < 0 || c.HistoryLen < 0 || c.MaxSourcesPerEndpoint < 0:
		return fmt.Errorf("health: config: MaxVersionsPerSecond (%d), FlushInterval (%v), HistoryLen (%d) and MaxSourcesPerEndpoint (%d) must not be negative",
			c.MaxVersionsPerSecond, c.FlushInterval, c.HistoryLen, c.MaxSourcesPerEndpoint)
	}
	if c.MaxVersionsPerSecond == 0 {
		c.MaxVersionsPerSecond = defaultMaxVersionsPerSecond
	}
	if c.FlushInterval == 0 {
		c.FlushInterval = defaultFlushInterval
	}
	if c.HistoryLen == 0 {
		c.HistoryLen = defaultHistoryLen
	}
	if c.MaxSourcesPerEndpoint == 0 {
		c.MaxSourcesPerEndpoint = defaultMaxSourcesPerEndpoint
	}
	if c.Metrics == nil {
		c.Metrics = metrics.NewSet()
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Clock == nil {
		c.Clock = systemClock{}
	}
	return nil
}

// Counters are the tracker's totals since Open.
type Counters struct {
	Accepted, Stale, Duplicate uint64
	Transitions                uint64 // damped state changes
	Flushes, FlushErrors       uint64 // store writes
	Published                  uint64 // Routing view changes
}

// Tracker is the health state of every endpoint of the configured
// clusters. It is safe for concurrent use.
type Tracker struct {
	cfg   Config
	log   *slog.Logger
	clock Clock
	m     *trackerMetrics
	httpc *http.Client

	mu        sync.Mutex
	closed    bool // no more observations or SetClusters
	finished  bool // Close has done its last flush
	clusters  map[string]*cluster
	byDoc     map[string]*endpoint
	restored  map[string]*storedEndpoint // loaded, not yet claimed; nil after the first SetClusters
	persisted map[string]bool            // document ids that exist in the store
	dirty     map[string]struct{}
	held      map[*endpoint]struct{} // endpoints with a wakeAt
	seq       uint64                 // numbers changes to persist
	durable   uint64                 // every change up to this seq is in the store
	durableCh chan struct{}          // closed and replaced when durable advances
	flushErr  error                  // the last flush's error, until one succeeds
	lastFlush time.Time
	probeRev  uint64
	gate      gate
	pending   bool // durable changes wait for a publication
	stopTimer func() bool
	counters  Counters

	routing atomic.Pointer[Routing]
	changes chan struct{}
	wake    chan struct{}
	stop    chan struct{}
	done    chan struct{} // closed when the loop has returned; nil if it never ran

	// probeMu serializes SetClusters and Close, which start and stop probes.
	probeMu sync.Mutex
	probers map[probeKey]*prober
}

// Open loads the stored health documents and starts the tracker. The
// loaded state applies to endpoints as SetClusters names them; documents
// of endpoints the first SetClusters does not name are deleted.
func Open(cfg Config) (*Tracker, error) {
	t, err := newTracker(cfg)
	if err != nil {
		return nil, err
	}
	t.done = make(chan struct{})
	go t.run()
	return t, nil
}

// newTracker builds a tracker without its loop; tests drive step directly.
func newTracker(cfg Config) (*Tracker, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	docs, err := cfg.Store.List(Kind)
	if err != nil {
		return nil, fmt.Errorf("health: loading stored state: %w", err)
	}
	t := &Tracker{
		cfg:       cfg,
		log:       cfg.Logger.With("component", "health"),
		clock:     cfg.Clock,
		m:         newTrackerMetrics(cfg.Metrics),
		httpc:     newProbeClient(),
		clusters:  make(map[string]*cluster),
		byDoc:     make(map[string]*endpoint),
		restored:  make(map[string]*storedEndpoint, len(docs)),
		persisted: make(map[string]bool, len(docs)),
		dirty:     make(map[string]struct{}),
		held:      make(map[*endpoint]struct{}),
		durableCh: make(chan struct{}),
		gate:      gate{interval: time.Second / time.Duration(cfg.MaxVersionsPerSecond)},
		changes:   make(chan struct{}, 1),
		wake:      make(chan struct{}, 1),
		stop:      make(chan struct{}),
		probers:   make(map[probeKey]*prober),
	}
	for _, d := range docs {
		r, err := decodeStored(d.ID, d.Body)
		if err != nil {
			return nil, err
		}
		t.restored[d.ID] = &r
		t.persisted[d.ID] = true
		for _, s := range r.Sources {
			if s.Source == SourceProbe {
				t.probeRev = max(t.probeRev, s.Revision)
			}
		}
	}
	t.routing.Store(&Routing{Clusters: map[string]*ClusterRouting{}})
	return t, nil
}

// SetClusters makes clusters the tracked set: endpoints keep their state
// while their (cluster id, address) stays, new ones start healthy, removed
// ones are forgotten and their documents deleted. Active probes start,
// stop or restart to match each cluster's health section. The Routing view
// is republished at once. Every cluster must validate; an error changes
// nothing.
func (t *Tracker) SetClusters(clusters []model.Cluster) error {
	seen := make(map[string]bool, len(clusters))
	for i := range clusters {
		c := &clusters[i]
		if err := c.Validate(); err != nil {
			return fmt.Errorf("health: cluster %q: %w", c.ID, err)
		}
		if seen[c.ID] {
			return fmt.Errorf("health: cluster %q is listed twice: %w", c.ID, ErrInvalid)
		}
		seen[c.ID] = true
	}
	t.probeMu.Lock()
	defer t.probeMu.Unlock()
	want := make(map[probeKey]probeSpec)
	now := t.clock.Now()
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return fmt.Errorf("health: set clusters: %w", ErrClosed)
	}
	next := make(map[string]*cluster, len(clusters))
	for i := range clusters {
		spec := &clusters[i]
		c := newCluster(spec)
		old := t.clusters[spec.ID]
		for _, e := range spec.Endpoints {
			var ep *endpoint
			if old != nil {
				ep = old.byAddr[e.Address]
			}
			if ep != nil {
				ep.cl = c
			} else {
				ep = t.addEndpointLocked(c, e.Address, now)
			}
			c.endpoints = append(c.endpoints, ep)
			c.byAddr[e.Address] = ep
		}
		next[c.id] = c
		if ps, ok := probeSpecOf(c.hc); ok {
			for _, ep := range c.endpoints {
				want[probeKey{cluster: c.id, addr: ep.addr}] = ps
			}
		}
	}
	for id, old := range t.clusters {
		for _, ep := range old.endpoints {
			if c := next[id]; c == nil || c.byAddr[ep.addr] != ep {
				t.dropEndpointLocked(ep)
			}
		}
	}
	for doc := range t.restored {
		t.dirty[doc] = struct{}{} // unclaimed: delete it
	}
	t.restored = nil
	t.clusters = next
	// Thresholds may have changed under existing streaks.
	for _, c := range next {
		for _, ep := range c.endpoints {
			if t.settleLocked(ep, now) {
				t.markDirtyLocked(ep)
			}
		}
	}
	// Configuration changes are paced by ctrl's recompute debounce, so
	// they publish at once; the gate still counts them.
	t.publishLocked(now)
	t.mu.Unlock()
	t.reconcileProbes(want)
	t.poke()
	return nil
}

// addEndpointLocked creates an endpoint, from its stored record if the
// store has one.
func (t *Tracker) addEndpointLocked(c *cluster, addr string, now time.Time) *endpoint {
	ep := newEndpoint(c, addr)
	if r, ok := t.restored[ep.doc]; ok {
		delete(t.restored, ep.doc)
		ep.restore(r)
	} else {
		ep.d = newDamper(now)
		t.markDirtyLocked(ep)
	}
	ep.pub = ep.current()
	t.byDoc[ep.doc] = ep
	return ep
}

func (t *Tracker) dropEndpointLocked(ep *endpoint) {
	if t.byDoc[ep.doc] == ep {
		delete(t.byDoc, ep.doc)
	}
	delete(t.held, ep)
	t.dirty[ep.doc] = struct{}{}
}

func (t *Tracker) markDirtyLocked(ep *endpoint) {
	t.seq++
	ep.seq = t.seq
	t.dirty[ep.doc] = struct{}{}
}

// Observe applies one observation and returns at once; the change reaches
// the store within FlushInterval. Stale and duplicate observations are not
// errors: the Outcome says so. Errors wrap ErrInvalid, ErrUnknownEndpoint
// or ErrClosed.
func (t *Tracker) Observe(o Observation) (Outcome, error) {
	out, _, err := t.observe(o)
	return out, err
}

// Report is Observe for callers that acknowledge to someone else (an
// external checker's ReportHealth): it returns once the endpoint's state,
// including this observation, is durable, or with ctx's error. A stale or
// duplicate observation also waits, for the durability of the state that
// made it stale, so a retried report is never acknowledged early.
func (t *Tracker) Report(ctx context.Context, o Observation) (Outcome, error) {
	out, seq, err := t.observe(o)
	if err != nil {
		return out, err
	}
	return out, t.waitDurable(ctx, seq)
}

func (t *Tracker) observe(o Observation) (Outcome, uint64, error) {
	if err := o.check(); err != nil {
		return Outcome{}, 0, err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.observeLocked(o, t.clock.Now())
}

// observeProbe records a probe result under the next probe revision, which
// follows the clock so that it stays ordered across restarts.
func (t *Tracker) observeProbe(key probeKey, ok bool, detail string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.clock.Now()
	t.probeRev = max(t.probeRev+1, uint64(now.UnixNano()))
	o := Observation{Cluster: key.cluster, Endpoint: key.addr, OK: ok, Source: SourceProbe, Revision: t.probeRev, Detail: detail, At: now}
	// The endpoint may have been removed while the probe ran, and the
	// tracker closed: both are expected and need nothing.
	_, _, _ = t.observeLocked(o, now)
}

func (t *Tracker) observeLocked(o Observation, now time.Time) (Outcome, uint64, error) {
	if t.closed {
		return Outcome{}, 0, fmt.Errorf("health: observe: %w", ErrClosed)
	}
	c := t.clusters[o.Cluster]
	if c == nil {
		return Outcome{}, 0, fmt.Errorf("health: observation from %s: no cluster %q: %w", o.Source, o.Cluster, ErrUnknownEndpoint)
	}
	ep := c.byAddr[o.Endpoint]
	if ep == nil {
		return Outcome{}, 0, fmt.Errorf("health: observation from %s: cluster %q has no endpoint %q: %w", o.Source, o.Cluster, o.Endpoint, ErrUnknownEndpoint)
	}
	if mk, ok := ep.sources[o.Source]; ok && o.Revision <= mk.rev {
		res := Stale
		if o.Revision == mk.rev {
			res = Duplicate
			ep.duplicate++
			t.counters.Duplicate++
			t.m.duplicate.Inc()
		} else {
			ep.stale++
			t.counters.Stale++
			t.m.stale.Inc()
		}
		return Outcome{Result: res, LastRevision: mk.rev, Healthy: ep.d.healthy}, ep.seq, nil
	}
	ep.setMark(o.Source, mark{rev: o.Revision, at: now}, t.cfg.MaxSourcesPerEndpoint)
	at := o.At
	if at.IsZero() {
		at = now
	}
	ep.remember(Record{Source: o.Source, Revision: o.Revision, OK: o.OK, Detail: o.Detail, At: at, Received: now}, t.cfg.HistoryLen)
	ep.accepted++
	t.counters.Accepted++
	t.m.accepted.Inc()
	ep.d.record(o.OK, describe(o), now)
	wake := ep.wakeAt
	changed := t.settleLocked(ep, now)
	repeat := o.Source == SourceProbe && ep.probeSeen && ep.lastProbeOK == o.OK
	if o.Source == SourceProbe {
		ep.lastProbeOK, ep.probeSeen = o.OK, true
	}
	switch {
	case changed || !repeat:
		t.markDirtyLocked(ep)
		t.poke()
	case !ep.wakeAt.Equal(wake):
		// A threshold met inside a hold: the loop arms its timer for the
		// hold's end. Left to the next probe, the transition waited up to
		// one interval_ms past the hold.
		t.poke()
	}
	return Outcome{Result: Accepted, LastRevision: o.Revision, Healthy: ep.d.healthy, Changed: changed}, ep.seq, nil
}

// describe is an observation as quoted in reasons.
func describe(o Observation) string {
	verdict := "ok"
	if !o.OK {
		verdict = "failed"
	}
	s := string(o.Source) + " revision " + strconv.FormatUint(o.Revision, 10) + " " + verdict
	if o.Detail != "" {
		s += " (" + o.Detail + ")"
	}
	return s
}

// settleLocked runs the endpoint's state machine at now and keeps the set
// of endpoints that wait for a hold or an expiry.
func (t *Tracker) settleLocked(ep *endpoint, now time.Time) bool {
	changed, wakeAt := ep.d.settle(ep.cl.p, now)
	ep.wakeAt = wakeAt
	if wakeAt.IsZero() {
		delete(t.held, ep)
	} else {
		t.held[ep] = struct{}{}
	}
	if changed {
		t.counters.Transitions++
		if ep.d.healthy {
			t.m.toHealthy.Inc()
		} else {
			t.m.toUnhealthy.Inc()
		}
		t.log.Info("endpoint health changed", "cluster", ep.cl.id, "endpoint", ep.addr, "healthy", ep.d.healthy, "reason", ep.d.reason)
	}
	return changed
}

// Changes receives a value after each change of the Routing view (at most
// MaxVersionsPerSecond per second); one pending value stands for any
// number of changes. The recompute loop waits on it and then reads Routing.
func (t *Tracker) Changes() <-chan struct{} { return t.changes }

// MinInterval is the least time between two changes of the Routing view:
// one second / MaxVersionsPerSecond.
func (t *Tracker) MinInterval() time.Duration { return t.gate.interval }

// Routing returns the published view. It only changes after the flush that
// made its state durable, and then at most MaxVersionsPerSecond times per
// second. The value and everything it points to are immutable.
func (t *Tracker) Routing() *Routing { return t.routing.Load() }

// Counters returns the totals since Open.
func (t *Tracker) Counters() Counters {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.counters
}

// Close stops the probes and the loop, writes what is still dirty, and
// returns that write's error. It does not close the store.
func (t *Tracker) Close() error {
	t.probeMu.Lock()
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		t.probeMu.Unlock()
		return fmt.Errorf("health: close: %w", ErrClosed)
	}
	t.closed = true
	if t.stopTimer != nil {
		t.stopTimer()
		t.stopTimer = nil
	}
	t.mu.Unlock()
	t.reconcileProbes(nil)
	t.probeMu.Unlock()

	close(t.stop)
	if t.done != nil {
		<-t.done
	}
	t.mu.Lock()
	var b *flushBatch
	if len(t.dirty) > 0 {
		b = t.takeBatchLocked()
	}
	t.mu.Unlock()
	var err error
	if b != nil {
		err = t.flush(b)
	}
	t.mu.Lock()
	t.finished = true
	close(t.durableCh)
	t.mu.Unlock()
	t.httpc.CloseIdleConnections()
	if err != nil {
		return fmt.Errorf("health: close: last write: %w", err)
	}
	return nil
}
