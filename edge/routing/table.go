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

	// refs counts the Holder's reference plus one per in-flight Acquire.
	// It starts at 1 (the creator's, handed to the Holder by Swap); the
	// transition to 0 happens exactly once and retires the table.
	refs atomic.Int64
}

type clusterState struct {
	// next is the round-robin cursor. It sits first and the struct is
	// padded to a cache line so busy clusters do not false-share it.
	next           atomic.Uint64
	pools          []*upstream.Pool
	connectTimeout time.Duration
	_              [64 - 8 - 24 - 8]byte
}

// NewTable builds the runtime state for snap: one pool per endpoint
// address, acquired from reg so that pools (and their idle connections)
// carry over from the previous table. release is called exactly once, when
// the table is retired and no request holds it; it typically unmaps snap.
func NewTable(snap *fbs.Snapshot, release func(), reg *upstream.Registry) *Table {
	t := &Table{
		snap:     snap,
		version:  snap.Version(),
		release:  release,
		reg:      reg,
		clusters: make([]clusterState, snap.NumClusters()),
	}
	for i := range t.clusters {
		cv := snap.ClusterAt(i)
		cs := &t.clusters[i]
		cs.connectTimeout = time.Duration(cv.ConnectTimeoutMs()) * time.Millisecond
		cs.pools = make([]*upstream.Pool, cv.NumEndpoints())
		for j := range cs.pools {
			cs.pools[j] = reg.Acquire(string(cv.Endpoint(j)))
		}
	}
	t.refs.Store(1)
	return t
}

// Version is the snapshot version; valid even after the table retired.
func (t *Table) Version() uint64 { return t.version }

// Snapshot is the table's snapshot; only valid while the table is held.
func (t *Table) Snapshot() *fbs.Snapshot { return t.snap }

// Route matches a request (host lowercase without port, raw path).
func (t *Table) Route(host, path []byte, m *fbs.Match) bool {
	return t.snap.Match(host, path, m)
}

// Pick returns the next endpoint pool of the cluster in round-robin order;
// false when the index is out of range or the cluster has no endpoints.
func (t *Table) Pick(clusterIndex int) (*upstream.Pool, bool) {
	if clusterIndex < 0 || clusterIndex >= len(t.clusters) {
		return nil, false
	}
	cs := &t.clusters[clusterIndex]
	n := uint64(len(cs.pools))
	if n == 0 {
		return nil, false
	}
	return cs.pools[(cs.next.Add(1)-1)%n], true
}

// ConnectTimeout is the cluster's dial timeout; 0 means the edge default.
func (t *Table) ConnectTimeout(clusterIndex int) time.Duration {
	if clusterIndex < 0 || clusterIndex >= len(t.clusters) {
		return 0
	}
	return t.clusters[clusterIndex].connectTimeout
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
