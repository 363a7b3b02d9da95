package fbs

import (
	"bytes"

	"github.com/snapgate/snapgate/fbs/snapfb"
)

// Snapshot is a verified snapshot read in place. It is immutable and safe for
// concurrent use. Byte slices it returns alias the snapshot bytes.
type Snapshot struct {
	b      []byte // the whole file, trailer included; never copied
	root   snapfb.Snapshot
	shards []shardIndex
	// sums holds each shard's route summary (merged into routeSummary),
	// and ctx the context its checks read; OpenAfter reuses them. A
	// summary is shared with the snapshots that reuse the shard's walk and
	// never modified.
	sums []*routeSummary
	ctx  shardContext

	version, parentVersion, contentHash uint64
	numRoutes, numClusters              int
	routeSummary

	auth                    *Auth // decoded and checked by Open; nil = none
	globalPolicy, fleetSize uint32
}

// Auth returns the snapshot's consumers, issuers and policies, or nil when
// it has none. The edge compiles it once per snapshot; callers must not
// modify it.
func (s *Snapshot) Auth() *Auth { return s.auth }

// AuthBytes is the encoded auth section, nil when absent: two snapshots
// with equal bytes have the same consumers, issuers and policies.
func (s *Snapshot) AuthBytes() []byte { return s.root.AuthBytes() }

// PolicyCount is the number of policies; policy references are 0..PolicyCount()-1.
func (s *Snapshot) PolicyCount() int {
	if s.auth == nil {
		return 0
	}
	return len(s.auth.Policies)
}

// GlobalPolicy is the index of the global policy in Auth().Policies, -1 for none.
func (s *Snapshot) GlobalPolicy() int { return int(s.globalPolicy) - 1 }

// FleetSize is the number of edges sharing cluster-scope rate limits, at least 1.
func (s *Snapshot) FleetSize() int { return max(int(s.fleetSize), 1) }

// policyID names the policy with reference ref (index+1), "" for 0.
func (s *Snapshot) policyID(ref uint32) string {
	if ref == 0 {
		return ""
	}
	return s.auth.Policies[ref-1].ID
}

// routeSummary is what the verifying walk gathers about a route set, so
// that Match skips candidates no route can have without probing.
type routeSummary struct {
	maxPrefix             int    // longest route prefix; Match skips longer candidates
	prefixLens, exactLens lenSet // lengths of prefixes and exact paths
	wildLens              lenSet // lengths of "*." host suffixes, dot included
	wildHosts, anyHost    bool   // some host is a "*." wildcard; some is "*"
}

// note adds a verified route to the summary.
func (u *routeSummary) note(r *snapfb.Route) {
	host, prefix := r.Host(), r.Prefix()
	switch {
	case len(host) == 1 && host[0] == '*':
		u.anyHost = true
	case len(host) > 1 && host[0] == '*':
		u.wildHosts = true
		u.wildLens.add(len(host) - 1)
	}
	if r.Exact() {
		u.exactLens.add(len(prefix))
		return
	}
	u.prefixLens.add(len(prefix))
	u.maxPrefix = max(u.maxPrefix, len(prefix))
}

// merge adds the routes summarised in o.
func (u *routeSummary) merge(o *routeSummary) {
	u.maxPrefix = max(u.maxPrefix, o.maxPrefix)
	for i := range u.prefixLens {
		u.prefixLens[i] |= o.prefixLens[i]
		u.exactLens[i] |= o.exactLens[i]
		u.wildLens[i] |= o.wildLens[i]
	}
	u.wildHosts = u.wildHosts || o.wildHosts
	u.anyHost = u.anyHost || o.anyHost
}

// Bytes returns the snapshot file as passed to Open.
func (s *Snapshot) Bytes() []byte { return s.b }

// Version is the store revision the snapshot was built from.
func (s *Snapshot) Version() uint64 { return s.version }

// ParentVersion is the version of the snapshot built before this one.
func (s *Snapshot) ParentVersion() uint64 { return s.parentVersion }

// ContentHash is xxhash64 over the shard bytes and the clusters; equal
// content gives an equal hash whatever the version numbers.
func (s *Snapshot) ContentHash() uint64 { return s.contentHash }

// NumShards is the number of route shards.
func (s *Snapshot) NumShards() int { return len(s.shards) }

// ShardData returns the bytes of route shard i, a finished RouteShard
// FlatBuffer aliasing the snapshot, or nil if i is out of range. Shards are
// independent buffers, so a delta codec can compare snapshots shard by shard.
func (s *Snapshot) ShardData(i int) []byte {
	if i < 0 || i >= len(s.shards) {
		return nil
	}
	return s.shards[i].buf
}

// ShardRange returns where route shard i lies in Bytes(): ShardData(i) is
// Bytes()[off:off+n]. A delta codec uses it to copy unchanged shards from the
// base file; (0, 0) when i is out of range.
func (s *Snapshot) ShardRange(i int) (off, n int) {
	if i < 0 || i >= len(s.shards) {
		return 0, 0
	}
	sh := &s.shards[i]
	return sh.off, len(sh.buf)
}

// NumRoutes is the number of routes over all shards.
func (s *Snapshot) NumRoutes() int { return s.numRoutes }

// NumClusters is the number of clusters.
func (s *Snapshot) NumClusters() int { return s.numClusters }

// ClusterView reads one cluster in place. The zero ClusterView (from an out
// of range index) has no name and no endpoints.
type ClusterView struct {
	c  snapfb.Cluster
	ok bool
}

// ClusterAt returns cluster i in name order, 0 <= i < NumClusters().
func (s *Snapshot) ClusterAt(i int) ClusterView {
	var v ClusterView
	if i >= 0 && i < s.numClusters {
		v.ok = s.root.Clusters(&v.c, i)
	}
	return v
}

// ClusterIndex returns the index of the cluster called name, or -1.
func (s *Snapshot) ClusterIndex(name []byte) int {
	var c snapfb.Cluster
	lo, hi := 0, s.numClusters
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		s.root.Clusters(&c, m)
		switch cmp := bytes.Compare(c.Name(), name); {
		case cmp < 0:
			lo = m + 1
		case cmp > 0:
			hi = m
		default:
			return m
		}
	}
	return -1
}

// Name is the cluster name.
func (v ClusterView) Name() []byte {
	if !v.ok {
		return nil
	}
	return v.c.Name()
}

// NumEndpoints is the number of endpoints.
func (v ClusterView) NumEndpoints() int {
	if !v.ok {
		return 0
	}
	return v.c.EndpointsLength()
}

// Endpoint returns the address of endpoint j, or nil if j is out of range.
func (v ClusterView) Endpoint(j int) []byte {
	if !v.ok || j < 0 || j >= v.c.EndpointsLength() {
		return nil
	}
	var e snapfb.Endpoint
	v.c.Endpoints(&e, j)
	return e.Address()
}

// ConnectTimeoutMs is the dial timeout in milliseconds (0 = edge default).
func (v ClusterView) ConnectTimeoutMs() uint32 {
	if !v.ok {
		return 0
	}
	return v.c.ConnectTimeoutMs()
}

// LB is the cluster's load-balancing policy (LBRoundRobin, ...).
func (v ClusterView) LB() uint8 {
	if !v.ok {
		return LBRoundRobin
	}
	return v.c.Lb()
}

// HashOn says what an LBHash cluster hashes (HashOnHeader, ...), and
// HashOnName names the header or cookie.
func (v ClusterView) HashOn() uint8 {
	if !v.ok {
		return HashOnNone
	}
	return v.c.HashOn()
}

// HashOnName is the lowercase header name or the cookie name to hash on.
func (v ClusterView) HashOnName() []byte {
	if !v.ok {
		return nil
	}
	return v.c.HashOnName()
}

// Policy is the index in Snapshot.Auth().Policies of the cluster's policy,
// -1 for none.
func (v ClusterView) Policy() int {
	if !v.ok {
		return -1
	}
	return int(v.c.Policy()) - 1
}

// EndpointWeight returns the weight of endpoint j (at least 1), or 0 if j
// is out of range.
func (v ClusterView) EndpointWeight(j int) int {
	if !v.ok || j < 0 || j >= v.c.EndpointsLength() {
		return 0
	}
	var e snapfb.Endpoint
	v.c.Endpoints(&e, j)
	return max(int(e.Weight()), 1)
}

// Panic reports whether the cluster is in panic mode: too few endpoints are
// healthy, so every endpoint is routable, unhealthy ones included.
func (v ClusterView) Panic() bool {
	return v.ok && v.c.Panic()
}

// SlowStartMs is how long an endpoint ramps up to its full share after it
// recovered, in milliseconds; 0 = no slow start.
func (v ClusterView) SlowStartMs() uint32 {
	if !v.ok {
		return 0
	}
	return v.c.SlowStartMs()
}

// EndpointUnhealthy reports ctrl's verdict on endpoint j: true means not
// routable unless the cluster is in panic. False when j is out of range.
func (v ClusterView) EndpointUnhealthy(j int) bool {
	if !v.ok || j < 0 || j >= v.c.EndpointsLength() {
		return false
	}
	var e snapfb.Endpoint
	v.c.Endpoints(&e, j)
	return e.Unhealthy()
}

// EndpointRecoveredAtMs is when endpoint j last became healthy, unix
// milliseconds on ctrl's clock; 0 = long ago (or j out of range).
func (v ClusterView) EndpointRecoveredAtMs(j int) uint64 {
	if !v.ok || j < 0 || j >= v.c.EndpointsLength() {
		return 0
	}
	var e snapfb.Endpoint
	v.c.Endpoints(&e, j)
	return e.RecoveredAtMs()
}

// CarryRoutes maps state kept per route by Match.Index from old, the
// snapshot s replaces, to s in time proportional to what changed. Every
// shard of s that OpenAfter found byte-equal to old's shard at the same
// position (and so reused its walk) holds the same routes in the same
// order: same(i, oldI, n) says that s's routes i..i+n-1 are old's
// oldI..oldI+n-1. Each route of any other shard goes to other(i, id), id
// aliasing s's bytes. A nil old sends every route to other.
func (s *Snapshot) CarryRoutes(old *Snapshot, same func(i, oldI, n int), other func(i int, id []byte)) {
	var r snapfb.Route
	for k := range s.shards {
		sh := &s.shards[k]
		if old != nil && k < len(old.shards) && s.sums[k] == old.sums[k] {
			if sh.n > 0 {
				same(sh.base, old.shards[k].base, sh.n)
			}
			continue
		}
		for j := range sh.n {
			sh.routeAt(&r, j)
			other(sh.base+j, r.Id())
		}
	}
}

// ForEachRoute calls fn for every route, shard by shard and in key order
// within a shard, until fn returns false. It copies each route into strings,
// so it is for tooling, not the request path.
func (s *Snapshot) ForEachRoute(fn func(Route) bool) {
	var r snapfb.Route
	for i := range s.shards {
		sh := &s.shards[i]
		for j := range sh.n {
			sh.routeAt(&r, j)
			if !fn(s.storedRoute(&r)) {
				return
			}
		}
	}
}

// storedRoute copies a stored route into a Route.
func (s *Snapshot) storedRoute(r *snapfb.Route) Route {
	out := Route{
		ID:            string(r.Id()),
		Host:          string(r.Host()),
		Prefix:        string(r.Prefix()),
		Cluster:       string(r.Cluster()),
		TimeoutMs:     r.TimeoutMs(),
		Exact:         r.Exact(),
		Priority:      r.Priority(),
		RewritePrefix: string(r.RewritePrefix()),
		RetryAttempts: r.RetryAttempts(),
		RetryOn:       r.RetryOn(),

		MaxStalenessMs: r.MaxStalenessMs(),
		OnStaleReject:  r.OnStale() == onStaleReject,
		StaleHeader:    r.StaleHeader(),

		Policy: s.policyID(r.Policy()),
	}
	for j := range r.MethodsLength() {
		out.Methods = append(out.Methods, string(r.Methods(j)))
	}
	var h snapfb.HeaderMatch
	for j := range r.HeadersLength() {
		r.Headers(&h, j)
		out.Headers = append(out.Headers, HeaderMatch{Name: string(h.Name()), Value: string(h.Value()), Present: h.Present()})
	}
	for j := range r.RetryStatusesLength() {
		out.RetryStatuses = append(out.RetryStatuses, r.RetryStatuses(j))
	}
	return out
}
