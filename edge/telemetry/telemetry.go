// Package telemetry holds the edge's request metrics and serves them, with
// a health check, on a separate admin HTTP listener.
//
// Every metric is created before the request path can touch it: the fixed
// ones in New, the per-route ones once per route on its first request
// (deps.md §5: a name built per request costs an allocation and a map
// lookup under a lock). The request path then only bumps atomics.
package telemetry

import (
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/pprof"
	"runtime/metrics"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	vm "github.com/VictoriaMetrics/metrics"

	"github.com/snapgate/snapgate/edge/upstream"
)

// Cause classifies a request the edge answered itself, for errors_total.
type Cause uint8

// The causes, one per distinct edge-generated answer.
const (
	CauseBadRequest      Cause = iota // malformed or refused request head/body (4xx from the parser)
	CauseHeaderTimeout                // 408: the head or body did not arrive in time
	CauseNoTable                      // 503: no snapshot in service
	CauseNoRoute                      // 404
	CauseNoEndpoint                   // 503: the route's cluster has no usable endpoint
	CauseConnectFailed                // 502: dial refused or reset
	CauseConnectTimeout               // 504: dial timed out
	CauseUpstreamTimeout              // 504: no response head in time
	CauseUpstreamClosed               // 502: upstream closed before answering
	CauseBadResponse                  // 502: unparsable or forbidden response head
	CauseAborted                      // a response broke off mid-body; the client was closed
	CauseStale                        // 503: the snapshot is past a reject route's staleness bound
	CauseUnauthorized                 // 401: a policy found no valid credentials
	CauseForbidden                    // 403: a policy's ACL refused the consumer
	CauseRateLimited                  // 429: a policy's rate limit is exhausted
	CauseShuttingDown                 // 503: a backend's 101 while the edge shuts down (no tunnel starts)
	numCauses
)

var causeNames = [numCauses]string{
	"bad_request", "client_timeout", "no_table", "no_route", "no_endpoint",
	"connect_failed", "connect_timeout", "upstream_timeout", "upstream_closed",
	"bad_response", "aborted", "stale_snapshot", "unauthorized", "forbidden",
	"rate_limited", "shutting_down",
}

func (c Cause) String() string {
	if c < numCauses {
		return causeNames[c]
	}
	return "unknown"
}

// classNames label status classes 1xx..5xx; index 0 is anything else.
var classNames = [6]string{"other", "1xx", "2xx", "3xx", "4xx", "5xx"}

// RouteCounters counts one route's final responses by status class.
type RouteCounters struct {
	byClass [6]*vm.Counter
}

// Observe counts one final response with the given status.
func (rc *RouteCounters) Observe(status int) {
	i := status / 100
	if i < 1 || i > 5 {
		i = 0
	}
	rc.byClass[i].Inc()
}

// Outcome is a policy decision, for auth_decisions_total.
type Outcome uint8

// The outcomes of enforcing a policy on a request.
const (
	OutcomeOK           Outcome = iota // forwarded (authenticated or anonymous)
	OutcomeUnauthorized                // 401
	OutcomeForbidden                   // 403
	OutcomeRateLimited                 // 429
	numOutcomes
)

var outcomeNames = [numOutcomes]string{"ok", "401", "403", "429"}

// PolicyCounters counts one policy's decisions by outcome.
type PolicyCounters struct {
	byOutcome [numOutcomes]*vm.Counter
}

// Observe counts one decision.
func (pc *PolicyCounters) Observe(o Outcome) {
	if o < numOutcomes {
		pc.byOutcome[o].Inc()
	}
}

// Metrics is the edge's metric set. Safe for concurrent use; the methods
// used per request do not allocate or lock.
type Metrics struct {
	set *vm.Set

	errors  [numCauses]*vm.Counter
	latency *vm.PrometheusHistogram
	conns   atomic.Int64
	version atomic.Uint64
	// draining is set once the edge began to stop: /healthz fails from
	// then on while requests in flight finish.
	draining atomic.Bool
	// fresh reports the snapshot version in service and when ctrl last
	// confirmed it (feed.Client.Freshness); read at scrape time only.
	fresh      atomic.Pointer[func() (uint64, time.Time)]
	staleServe *vm.Counter
	// ejected lists the endpoints ejected right now
	// (upstream.Registry.Ejections); read at scrape time only.
	ejected atomic.Pointer[func() []upstream.Ejection]

	// routes maps a route id to its counters (routesMu). The proxy
	// indexes a table's routes at swap (KnownRoute); the counters are
	// made on a route's first request ever (Route), so a table of a
	// million routes does not make six million series nobody hits. A
	// plain map under a lock, not a copy-on-write one: a new route must
	// not cost a copy of every route seen before on the request path.
	routesMu sync.RWMutex
	routes   map[string]*RouteCounters
	mu       sync.Mutex
	unrouted *RouteCounters
	// policies maps a policy id to its counters, so a policy keeps its
	// series across snapshots; guarded by mu (only swaps touch it).
	policies map[string]*PolicyCounters

	pprof atomic.Bool

	allocMu     sync.Mutex // guards allocSample, read at scrape only
	allocSample [1]metrics.Sample
}

// LatencyBuckets are the upstream latency histogram's upper bounds in
// seconds: 100 µs doubling to ~3.3 s, which covers a loopback hop and a
// slow backend with useful resolution at both ends.
var LatencyBuckets = vm.ExponentialBuckets(1e-4, 2, 16)

// New creates the metric set with every fixed metric registered.
func New() *Metrics {
	m := &Metrics{set: vm.NewSet(), policies: map[string]*PolicyCounters{}}
	for c := range numCauses {
		m.errors[c] = m.set.NewCounter(`snapgate_edge_errors_total{cause="` + causeNames[c] + `"}`)
	}
	m.latency = m.set.NewPrometheusHistogramExt("snapgate_edge_upstream_response_seconds", LatencyBuckets)
	m.set.NewGauge("snapgate_edge_client_connections", func() float64 { return float64(m.conns.Load()) })
	m.set.NewGauge("snapgate_edge_snapshot_version", func() float64 { return float64(m.version.Load()) })
	// Computed at scrape time, so the value is current even when no
	// request and no frame from ctrl has arrived for a while.
	m.set.NewGauge("snapgate_edge_staleness_seconds", func() float64 {
		if d := m.Staleness(time.Now()); d != math.MaxInt64 {
			return d.Seconds()
		}
		return math.Inf(1)
	})
	m.set.NewGauge("snapgate_edge_snapshot_confirmed_timestamp_seconds", func() float64 {
		if _, at := m.Freshness(); !at.IsZero() {
			return float64(at.UnixNano()) / 1e9
		}
		return 0
	})
	m.staleServe = m.set.NewCounter("snapgate_edge_stale_served_total")
	m.set.NewGauge("snapgate_edge_endpoints_ejected", func() float64 { return float64(len(m.Ejections())) })
	// The process's heap allocations so far: its delta over a load run
	// divided by the requests served is the allocations per request
	// (runtime/metrics reads it without stopping the world).
	m.allocSample[0].Name = "/gc/heap/allocs:objects"
	m.set.NewGauge("snapgate_edge_heap_allocs_objects_total", func() float64 { return float64(m.HeapAllocs()) })
	m.routes = map[string]*RouteCounters{}
	m.unrouted = m.newRouteCounters("")
	return m
}

func (m *Metrics) newRouteCounters(id string) *RouteCounters {
	rc := &RouteCounters{}
	label := escapeLabel(id)
	for i, cl := range classNames {
		rc.byClass[i] = m.set.GetOrCreateCounter(`snapgate_edge_requests_total{route="` + label + `",class="` + cl + `"}`)
	}
	return rc
}

// escapeLabel escapes a Prometheus label value (backslash, quote, newline).
func escapeLabel(s string) string {
	if !strings.ContainsAny(s, "\\\"\n") {
		return s
	}
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)
	return r.Replace(s)
}

// Route returns the counters of the route with this id, creating them on
// the route's first request. An empty id is the "no route matched" series.
func (m *Metrics) Route(id []byte) *RouteCounters {
	if len(id) == 0 {
		return m.unrouted
	}
	m.routesMu.RLock()
	rc, ok := m.routes[string(id)]
	m.routesMu.RUnlock()
	if ok {
		return rc
	}
	// Made before the lock: making them waits for the metrics set, which
	// a scrape holds while it sorts, and lookups of known routes must not
	// wait with it. A racing first request gets the same counters from
	// the set.
	key := string(id)
	made := m.newRouteCounters(key)
	m.routesMu.Lock()
	defer m.routesMu.Unlock()
	if rc, ok := m.routes[key]; ok {
		return rc
	}
	m.routes[key] = made
	return made
}

// KnownRoute returns the counters of the route with this id if a request
// made them, else nil. The proxy asks at snapshot swap, for the routes a
// new table does not share with the old one.
func (m *Metrics) KnownRoute(id []byte) *RouteCounters {
	m.routesMu.RLock()
	defer m.routesMu.RUnlock()
	return m.routes[string(id)]
}

// Policies returns the counters of each policy id, in order, creating the
// ones not seen before. The edge calls it once per snapshot for all of
// its policies; the request path then indexes the result.
func (m *Metrics) Policies(ids []string) []*PolicyCounters {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]*PolicyCounters, len(ids))
	for i, id := range ids {
		out[i] = m.policyLocked(id)
	}
	return out
}

// Policy returns the counters of one policy id, creating them if needed.
func (m *Metrics) Policy(id string) *PolicyCounters {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.policyLocked(id)
}

func (m *Metrics) policyLocked(id string) *PolicyCounters {
	pc, ok := m.policies[id]
	if !ok {
		pc = &PolicyCounters{}
		label := escapeLabel(id)
		for o, name := range outcomeNames {
			pc.byOutcome[o] = m.set.NewCounter(`snapgate_edge_auth_decisions_total{policy="` + label + `",outcome="` + name + `"}`)
		}
		m.policies[id] = pc
	}
	return pc
}

// HeapAllocs is the number of heap objects the process allocated so far.
func (m *Metrics) HeapAllocs() uint64 {
	m.allocMu.Lock()
	defer m.allocMu.Unlock()
	metrics.Read(m.allocSample[:])
	if m.allocSample[0].Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return m.allocSample[0].Value.Uint64()
}

// EnablePprof makes Handler (and so the admin listener) also serve
// net/http/pprof under /debug/pprof/. Off by default: profiles expose
// internals and cost CPU while taken. Call it before Listen.
func (m *Metrics) EnablePprof() { m.pprof.Store(true) }

// Error counts one answer the edge generated itself.
func (m *Metrics) Error(c Cause) {
	if c < numCauses {
		m.errors[c].Inc()
	}
}

// ObserveUpstream records the time from writing a request upstream to
// having its response head.
func (m *Metrics) ObserveUpstream(d time.Duration) { m.latency.Update(d.Seconds()) }

// ConnOpened and ConnClosed track open client connections.
func (m *Metrics) ConnOpened() { m.conns.Add(1) }
func (m *Metrics) ConnClosed() { m.conns.Add(-1) }

// SetVersion records the snapshot version in service.
func (m *Metrics) SetVersion(v uint64) { m.version.Store(v) }

// Version is the snapshot version last recorded; 0 before any.
func (m *Metrics) Version() uint64 { return m.version.Load() }

// SetFreshness sets where the staleness metrics read the freshness of the
// snapshot in service: its version and when ctrl last confirmed it as the
// latest, zero if never (feed.Client.Freshness). fn must be safe for
// concurrent use; it is called at scrape time.
func (m *Metrics) SetFreshness(fn func() (version uint64, confirmedAt time.Time)) {
	if fn == nil {
		m.fresh.Store(nil)
		return
	}
	m.fresh.Store(&fn)
}

// Freshness returns what the SetFreshness source reports; without a
// source, the version last recorded and a zero (never confirmed) time.
func (m *Metrics) Freshness() (version uint64, confirmedAt time.Time) {
	if fn := m.fresh.Load(); fn != nil {
		return (*fn)()
	}
	return m.version.Load(), time.Time{}
}

// Staleness is how long before now ctrl last confirmed the snapshot in
// service; math.MaxInt64 (exported as +Inf) when it never did since the
// process started, e.g. after a boot from disk with ctrl unreachable.
func (m *Metrics) Staleness(now time.Time) time.Duration {
	_, at := m.Freshness()
	if at.IsZero() {
		return math.MaxInt64
	}
	return max(now.Sub(at), 0)
}

// StaleServed counts a request forwarded although its route's staleness
// bound had passed (on_stale "serve").
func (m *Metrics) StaleServed() { m.staleServe.Inc() }

// SetEjections sets where the metrics read the endpoints this edge has
// ejected right now (upstream.Registry.Ejections). fn must be safe for
// concurrent use; it is called at scrape time.
func (m *Metrics) SetEjections(fn func() []upstream.Ejection) {
	if fn == nil {
		m.ejected.Store(nil)
		return
	}
	m.ejected.Store(&fn)
}

// Ejections returns what the SetEjections source reports; nil without one.
func (m *Metrics) Ejections() []upstream.Ejection {
	if fn := m.ejected.Load(); fn != nil {
		return (*fn)()
	}
	return nil
}

// WritePrometheus writes every metric in the Prometheus text format. The
// per-endpoint ejection series are written here rather than registered in
// the set: an endpoint's series exists only while it is ejected, and a
// gauge registered per address would outlive the endpoint.
func (m *Metrics) WritePrometheus(w io.Writer) {
	m.set.WritePrometheus(w)
	ej := m.Ejections()
	for _, e := range ej {
		fmt.Fprintf(w, "snapgate_edge_endpoint_ejected{addr=\"%s\",cause=\"%s\"} 1\n", escapeLabel(e.Addr), e.Cause.String())
	}
	for _, e := range ej {
		fmt.Fprintf(w, "snapgate_edge_endpoint_ejected_until_timestamp_seconds{addr=\"%s\"} %.3f\n",
			escapeLabel(e.Addr), float64(e.Until.UnixNano())/1e9)
	}
}

// SetDraining makes /healthz fail from now on: the edge is stopping.
func (m *Metrics) SetDraining() { m.draining.Store(true) }

// Handler serves /metrics and /healthz. /healthz answers 200 once a
// snapshot is in service, and 503 before and once the edge began to stop,
// so a load balancer only sends traffic to an edge that can route it.
func (m *Metrics) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		m.WritePrometheus(w)
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if m.draining.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			io.WriteString(w, "draining: the edge is stopping\n")
			return
		}
		if v := m.Version(); v > 0 {
			fmt.Fprintf(w, "ok: snapshot version %d\n", v)
			return
		}
		w.WriteHeader(http.StatusServiceUnavailable)
		io.WriteString(w, "no snapshot in service\n")
	})
	if m.pprof.Load() {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	return mux
}

// Admin is the admin HTTP listener.
type Admin struct {
	ln  net.Listener
	srv *http.Server
}

// Listen binds the admin listener on addr.
func (m *Metrics) Listen(addr string) (*Admin, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("telemetry: admin listen on %q: %w", addr, err)
	}
	wt := 10 * time.Second
	if m.pprof.Load() {
		wt = 2 * time.Minute // CPU profiles and traces stream for their duration
	}
	return &Admin{ln: ln, srv: &http.Server{
		Handler:           m.Handler(),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      wt,
		IdleTimeout:       60 * time.Second,
	}}, nil
}

// Addr is the bound admin address.
func (a *Admin) Addr() net.Addr { return a.ln.Addr() }

// Serve serves until Close; it returns nil after Close.
func (a *Admin) Serve() error {
	if err := a.srv.Serve(a.ln); err != nil && err != http.ErrServerClosed {
		return fmt.Errorf("telemetry: admin serve: %w", err)
	}
	return nil
}

// Close stops the admin listener and its connections.
func (a *Admin) Close() error { return a.srv.Close() }
