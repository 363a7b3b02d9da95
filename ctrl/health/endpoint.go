package health

import (
	"time"

	"github.com/snapgate/snapgate/ctrl/model"
)

// cluster is the tracker's view of one cluster document.
type cluster struct {
	id        string
	hc        model.HealthCheck // effective: defaults applied
	p         params
	endpoints []*endpoint // in the document's order
	byAddr    map[string]*endpoint
	// viewStale says the published view no longer matches the endpoints'
	// durable state.
	viewStale bool
}

func newCluster(spec *model.Cluster) *cluster {
	hc := spec.Health.Effective()
	return &cluster{
		id:        spec.ID,
		hc:        hc,
		p:         paramsOf(hc),
		endpoints: make([]*endpoint, 0, len(spec.Endpoints)),
		byAddr:    make(map[string]*endpoint, len(spec.Endpoints)),
		viewStale: true,
	}
}

// mark is a source's last accepted revision for an endpoint and when ctrl
// accepted it.
type mark struct {
	rev uint64
	at  time.Time
}

// Record is one accepted observation as kept for operators.
type Record struct {
	Source   Source
	Revision uint64
	OK       bool
	Detail   string
	At       time.Time // when the observer saw it
	Received time.Time // when ctrl accepted it
}

// published is the part of an endpoint's state that edges route on, as of
// the last flush that made it durable.
type published struct {
	healthy     bool
	recoveredAt time.Time
}

// endpoint is one (cluster, address) pair. The tracker's mutex guards it.
type endpoint struct {
	cl   *cluster
	addr string
	doc  string // store id

	d       damper
	sources map[Source]mark
	history []Record // ring of the last accepted observations
	histPos int      // next slot once history is full

	accepted, stale, duplicate, evicted uint64

	// lastProbeOK is the previous probe verdict (probeSeen: there was
	// one). A probe that repeats it without changing the state is not
	// written to the store: probe revisions come from the clock, so they
	// stay ordered across restarts without being durable.
	lastProbeOK, probeSeen bool

	seq    uint64    // tracker sequence of the last change to persist
	wakeAt time.Time // a pending hold end or passive expiry; zero if none
	pub    published
}

func newEndpoint(cl *cluster, addr string) *endpoint {
	return &endpoint{cl: cl, addr: addr, doc: docID(cl.id, addr), sources: make(map[Source]mark)}
}

func (e *endpoint) current() published {
	return published{healthy: e.d.healthy, recoveredAt: e.d.recoveredAt}
}

// setMark records a source's accepted revision. When the endpoint already
// tracks limit sources, the one heard from longest ago is forgotten: its
// next observation is then accepted whatever its revision (counted as
// evicted, shown to operators).
func (e *endpoint) setMark(s Source, m mark, limit int) {
	if _, ok := e.sources[s]; !ok && len(e.sources) >= limit {
		var oldest Source
		var at time.Time
		for src, mk := range e.sources {
			if oldest == "" || mk.at.Before(at) || mk.at.Equal(at) && src < oldest {
				oldest, at = src, mk.at
			}
		}
		delete(e.sources, oldest)
		e.evicted++
	}
	e.sources[s] = m
}

// remember appends r to the history ring of size n.
func (e *endpoint) remember(r Record, n int) {
	if len(e.history) < n {
		e.history = append(e.history, r)
		return
	}
	e.history[e.histPos] = r
	e.histPos = (e.histPos + 1) % n
}

// recent returns the history, oldest first.
func (e *endpoint) recent() []Record {
	out := make([]Record, 0, len(e.history))
	out = append(out, e.history[e.histPos:]...)
	return append(out, e.history[:e.histPos]...)
}

func (e *endpoint) stored() *storedEndpoint {
	return &storedEndpoint{
		Format:      storedFormat,
		Cluster:     e.cl.id,
		Endpoint:    e.addr,
		Healthy:     e.d.healthy,
		Since:       e.d.since,
		Reason:      e.d.reason,
		RecoveredAt: e.d.recoveredAt,
		OKStreak:    e.d.okStreak,
		FailStreak:  e.d.failStreak,
		LastFailAt:  e.d.lastFailAt,
		Last:        e.d.last,
		Sources:     sortedSources(e.sources),
		Accepted:    e.accepted,
		Stale:       e.stale,
		Duplicate:   e.duplicate,
		Evicted:     e.evicted,
	}
}

func (e *endpoint) restore(r *storedEndpoint) {
	e.d = damper{
		healthy:     r.Healthy,
		since:       r.Since,
		recoveredAt: r.RecoveredAt,
		okStreak:    r.OKStreak,
		failStreak:  r.FailStreak,
		lastFailAt:  r.LastFailAt,
		reason:      r.Reason,
		last:        r.Last,
	}
	for _, s := range r.Sources {
		e.sources[s.Source] = mark{rev: s.Revision, at: s.At}
	}
	e.accepted, e.stale, e.duplicate, e.evicted = r.Accepted, r.Stale, r.Duplicate, r.Evicted
}
