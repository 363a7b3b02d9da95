// Package routing holds the edge's current routing state: a Table wraps one
// verified snapshot plus the per-cluster runtime state derived from it at
// swap time, and a Holder publishes the current Table to the request path
// with an atomic pointer and a refcount, so a snapshot is unmapped only
// once no request can still read it (DESIGN.md "The hot path").
package routing

import (
	"sync/atomic"
	"time"

	"github.com/snapgate/snapgate/edge/upstream"
	"github.com/snapgate/snapgate/fbs"
)

// Table is one snapshot in service. All methods are safe for concurrent use
// and Route/Pick do not allocate or lock.
type Table struct {
	snap     *fbs.Snapshot
	version  uint64 // cached so Version stays valid after the unmap
	release  func()
	reg      *upstream.Registry
	clusters []clusterState
	pol      policies
	err      error // the policies could not be compiled; never installed

	// refs counts the Holder's reference plus one per in-flight Acquire.
	// It starts at 1 (the creator's, handed to the Holder by Swap); the
	// transition to 0 happens exactly once and retires the table.
	refs atomic.Int64
}

type clusterState struct {
	// next is the round-robin cursor. It has a cache line of its own so
	// busy clusters do not false-share it.
	next           atomic.Uint64
	_              [56]byte
	pools          []*upstream.Pool
	connectTimeout time.Duration
	bal            balancer
	// down[j]: ctrl's snapshot marks endpoint j unhealthy and the cluster
	// is not in panic, so it is never picked. nil when none is down.
	down []bool
	// ramp is the slow start of recently recovered endpoints; nil when
	// none was ramping at swap time.
	ramp *slowStart
}

// NewTable builds the runtime state for snap: its compiled policies
// (policy.go) and one pool per endpoint address, acquired from reg so that
// pools (and their idle connections) carry over from the previous table.
// release is called exactly once, when the table is retired and no request
// holds it; it typically unmaps snap.
//
// A snapshot whose policies cannot be compiled still yields a table, so
// the caller's release runs through the usual path, but one with Err set,
// no clusters, and that Holder refuses to install: it never serves.
func NewTable(snap *fbs.Snapshot, release func(), reg *upstream.Registry) *Table {
	t := &Table{
		snap:    snap,
		version: snap.Version(),
		release: release,
		reg:     reg,
	}
	t.refs.Store(1)
	if t.pol, t.err = compilePolicies(snap); t.err != nil {
		return t
	}
	t.clusters = make([]clusterState, snap.NumClusters())
	for i := range t.clusters {
		cv := snap.ClusterAt(i)
		cs := &t.clusters[i]
		cs.connectTimeout = time.Duration(cv.ConnectTimeoutMs()) * time.Millisecond
		cs.pools = make([]*upstream.Pool, cv.NumEndpoints())
		for j := range cs.pools {
			cs.pools[j] = reg.Acquire(string(cv.Endpoint(j)))
		}
		cs.bal = newBalancer(cv)
		cs.down = downEndpoints(cv)
		cs.ramp = newSlowStart(cv, time.Now().UnixMilli())
	}
	return t
}

// Version is the snapshot version; valid even after the table retired.
func (t *Table) Version() uint64 { return t.version }

// Snapshot is the table's snapshot; only valid while the table is held.
func (t *Table) Snapshot() *fbs.Snapshot { return t.snap }

// Route matches a request by host (lowercase without port) and path only:
// routes with method or header conditions never match. Prefer
// RouteRequest.
func (t *Table) Route(host, path []byte, m *fbs.Match) bool {
	return t.snap.Match(host, path, m)
}

// RouteRequest matches a request by host, path, method and headers (see
// fbs.Snapshot.MatchRequest). It does not allocate.
func (t *Table) RouteRequest(req *fbs.Request, m *fbs.Match) bool {
	return t.snap.MatchRequest(req, m)
}

// NumRoutes is the number of routes; fbs.Match.Index is below it, so
// per-route state built at swap can be a slice of this length.
func (t *Table) NumRoutes() int { return t.snap.NumRoutes() }

// Pick is Balance without a hash key and without an endpoint to avoid.
func (t *Table) Pick(clusterIndex int) (*upstream.Pool, bool) {
	return t.Balance(clusterIndex, PickKey{}, nil)
}

// Balance chooses an endpoint of the cluster by its policy (round robin,
// smooth weighted round robin, power-of-two-choices least request, or
// consistent hash on key), skipping ejected endpoints and those in avoid
// (the endpoints a retrying request failed on; nil for none). When every
// endpoint ctrl lets the request use is ejected, a first attempt (avoid
// empty) picks among them as if none were, and a retry gets none (pick).
// false means no usable endpoint: the index is out of range, the cluster
// is empty, every endpoint is unhealthy by ctrl's verdict, or a retry has
// none left; the proxy answers 503. It does not allocate or lock.
func (t *Table) Balance(clusterIndex int, key PickKey, avoid *Tried) (*upstream.Pool, bool) {
	if clusterIndex < 0 || clusterIndex >= len(t.clusters) {
		return nil, false
	}
	return t.clusters[clusterIndex].pick(key, avoid)
}

// HashOn says what the cluster's consistent hash is keyed on; Kind is
// fbs.HashOnNone for clusters that do not hash, so the proxy can skip
// extracting a key.
func (t *Table) HashOn(clusterIndex int) HashOn {
	if clusterIndex < 0 || clusterIndex >= len(t.clusters) {
		return HashOn{}
	}
	return t.clusters[clusterIndex].bal.hashOn
}

// ConnectTimeout is the cluster's dial timeout; 0 means the edge default.
func (t *Table) ConnectTimeout(clusterIndex int) time.Duration {
	if clusterIndex < 0 || clusterIndex >= len(t.clusters) {
		return 0
	}
	return t.clusters[clusterIndex].connectTimeout
}

// continueTurns starts each cluster's round-robin cursor where the same
// cluster's cursor in old stands. A fresh table's cursors start at 0, so
// without this every swap would send the next turns to the first endpoints
// again: with swaps coming faster than a cycle of requests (health changes
// publish up to 10 per second), those endpoints would take most of the
// traffic. Runs at swap, before t serves.
func (t *Table) continueTurns(old *Table) {
	for i := range t.clusters {
		if j := old.snap.ClusterIndex(t.snap.ClusterAt(i).Name()); j >= 0 && j < len(old.clusters) {
			t.clusters[i].next.Store(old.clusters[j].next.Load())
		}
	}
}

// tryRef takes a reference unless the table already retired. A plain Add
// could resurrect a table from 0 and run release twice; the CAS cannot.
func (t *Table) tryRef() bool {
	for {
		n := t.refs.Load()
		if n <= 0 {
			return false
		}
		if t.refs.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

// Release drops a reference taken by Holder.Acquire. The last one returns
// the pools to the registry and runs the release func.
func (t *Table) Release() {
	switch n := t.refs.Add(-1); {
	case n == 0:
		t.retire()
	case n < 0:
		panic("routing: Table released more often than acquired")
	}
}

func (t *Table) retire() {
	for i := range t.clusters {
		for _, p := range t.clusters[i].pools {
			t.reg.Release(p)
		}
	}
	t.clusters = nil
	if t.release != nil {
		t.release()
	}
}
