package fbs

import (
	"encoding/binary"
	"fmt"
	"slices"
	"sync"

	"github.com/cespare/xxhash/v2"
	flatbuffers "github.com/google/flatbuffers/go"
)

// Builder builds snapshots like Build, byte for byte, but re-encodes only
// the route shards whose inputs changed since its previous Build. ctrl keeps
// one for its lifetime: a one-route edit at 100k routes then re-encodes one
// shard of ~400 routes instead of all of them.
//
// A shard's bytes depend only on the set of routes placed in it: their
// fields, their keys and their cluster_index (the position of their cluster
// in the name-sorted cluster list, so adding or removing a cluster changes
// the shards that reference clusters after it). Builder keeps, per shard
// index, the finished bytes and a digest of that set: the sum of an xxhash64
// of every such route input. A sum does not depend on the order in which the
// routes arrive, so unchanged shards are never sorted or encoded; the pass
// over all routes validates and hashes them, nothing more. A stale shard
// would need a 64-bit digest collision between two route sets that both
// pass validation.
//
// The zero value is ready to use. Builder is safe for concurrent use;
// builds are serialised.
type Builder struct {
	mu     sync.Mutex
	cache  []cachedShard // by shard index, from the latest builds
	walks  shardCache    // BuildSnapshot's verified shards
	sb     shardBuilder
	names  map[string]int // clusterPositions
	ids    map[string]struct{}
	placed []placement // of each input route
	sums   []shardSum
	digest routeDigester
}

// placement is where pass 1 put a route.
type placement struct{ shard, cluster, policy uint32 }

// cachedShard is one shard's finished bytes and the digest they were
// encoded from.
type cachedShard struct {
	sum  shardSum
	data []byte // nil: no bytes cached for this index
}

// shardSum identifies the set of routes in a shard: their count and the sum
// of their digests.
type shardSum struct {
	routes int
	digest uint64
}

// Build returns the snapshot file for s, identical to Build(s), and the same
// error Build would return for an invalid s. A failed build leaves the cache
// as correct as before, so the next Build still returns Build's bytes.
func (b *Builder) Build(s State) ([]byte, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.build(s)
}

// BuildSnapshot is Build followed by Open of the file, without walking the
// shards it walked before: it returns the file as a verified Snapshot
// (Bytes() is the file), which is what a publisher needs to send it and to
// encode deltas from it.
//
// The verification is Open's, in full, except that a shard whose bytes and
// context (shard count, cluster names, policy count) are identical to a
// shard this Builder verified at the same index reuses that walk's result
// instead of walking its routes again (see shardCache): the checks are
// deterministic functions of exactly those inputs. The trailer, root,
// clusters, auth section and content hash are checked on every call. An
// error wrapping ErrCorrupt means the builder produced a file Open would
// refuse, a bug, and nothing should be published.
func (b *Builder) BuildSnapshot(s State) (*Snapshot, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	data, err := b.build(s)
	if err != nil {
		return nil, err
	}
	snap, err := open(data, &b.walks)
	if err != nil {
		return nil, fmt.Errorf("snapshot build: the built file does not verify: %w", err)
	}
	b.walks.trim(snap.NumShards())
	return snap, nil
}

func (b *Builder) build(s State) ([]byte, error) {
	shards, err := shardCount(s)
	if err != nil {
		return nil, err
	}
	clusters, err := sortedClusters(s.Clusters)
	if err != nil {
		return nil, err
	}
	refs, err := prepareAuth(&s, clusters)
	if err != nil {
		return nil, err
	}

	// Pass 1, over every route: the checks prepareRoutes makes, in the same
	// order so that the first error is the same, then shard placement and
	// the digest. Nothing here allocates per route once the scratch space
	// has grown.
	if b.ids == nil {
		b.ids = make(map[string]struct{}, len(s.Routes))
	}
	b.names = clusterPositions(clusters, b.names)
	defer func() {
		// Do not pin the caller's strings between builds.
		clear(b.ids)
		clear(b.names)
	}()
	b.placed = slices.Grow(b.placed[:0], len(s.Routes))[:len(s.Routes)]
	b.sums = slices.Grow(b.sums[:0], shards)[:shards]
	clear(b.sums)
	for i := range s.Routes {
		r := &s.Routes[i]
		ci, err := checkRoute(r, b.names)
		if err != nil {
			return nil, err
		}
		if _, dup := b.ids[r.ID]; dup {
			return nil, fmt.Errorf("%w: route %q: field id: duplicate route id", ErrInvalidState, r.ID)
		}
		b.ids[r.ID] = struct{}{}
		pi, err := refs.routeRef(r)
		if err != nil {
			return nil, err
		}
		shard := uint32(routeKeyHash(r) % uint64(shards))
		b.placed[i] = placement{shard: shard, cluster: uint32(ci), policy: pi}
		sum := &b.sums[shard]
		sum.routes++
		sum.digest += b.digest.route(r, uint32(ci), pi)
	}

	// Pass 2, over the routes of shards whose digest changed: prepare, order
	// and encode them as Build does.
	if len(b.cache) != shards {
		// Entries keep their meaning under a new count (a digest names a
		// route set, not a shard index), so the common prefix stays. The
		// dropped tail is cleared so it does not pin its bytes, and so a
		// later growth within capacity starts from empty entries.
		if shards < len(b.cache) {
			clear(b.cache[shards:])
		}
		b.cache = slices.Grow(b.cache[:min(len(b.cache), shards)], shards)[:shards]
	}
	var changed []preparedRoute
	for i := range s.Routes {
		if pl := b.placed[i]; !b.cache[pl.shard].fresh(b.sums[pl.shard]) {
			changed = append(changed, prepareRoute(&s.Routes[i], int(pl.cluster), pl.policy, uint32(shards)))
		}
	}
	if err := orderRoutes(changed); err != nil {
		return nil, err
	}
	if b.sb.b == nil {
		b.sb.b = flatbuffers.NewBuilder(4096)
	}
	shardBytes := make([][]byte, shards)
	next := 0
	for i := range shards {
		c := &b.cache[i]
		if !c.fresh(b.sums[i]) {
			end := next
			for end < len(changed) && changed[end].shard == uint32(i) {
				end++
			}
			*c = cachedShard{sum: b.sums[i], data: b.sb.build(changed[next:end])}
			next = end
		}
		shardBytes[i] = c.data
	}
	return assemble(s.Version, s.ParentVersion, shardBytes, clusters, refs), nil
}

// fresh reports whether c holds the bytes of the route set summed in sum.
func (c *cachedShard) fresh(sum shardSum) bool {
	return c.data != nil && c.sum == sum
}

// routeKeyHash is routeHashString(routeKey(r)) without building the key.
func routeKeyHash(r *Route) uint64 {
	h := uint64(fnvOffset)
	for i := 0; i < len(r.Host); i++ {
		h ^= uint64(r.Host[i])
		h *= fnvPrime
	}
	h *= fnvPrime // the 0x00 separator
	if r.Exact {
		h ^= '='
		h *= fnvPrime
	}
	for i := 0; i < len(r.Prefix); i++ {
		h ^= uint64(r.Prefix[i])
		h *= fnvPrime
	}
	return h
}

// routeDigester hashes everything shardBuilder.build and orderRoutes read
// from one route, with its lists in the canonical order build encodes them
// in, so reordering a route's methods, headers or statuses (which does not
// change the bytes) does not change the digest either. It reuses its
// buffers across routes.
type routeDigester struct {
	buf      []byte
	methods  []string
	headers  []HeaderMatch
	statuses []uint16
}

func (d *routeDigester) route(r *Route, clusterIndex, policy uint32) uint64 {
	p := d.buf[:0]
	p = appendString(p, r.ID)
	p = appendString(p, r.Host)
	p = appendString(p, r.Prefix)
	p = appendString(p, r.Cluster)
	p = appendString(p, r.RewritePrefix)
	p = binary.LittleEndian.AppendUint32(p, r.TimeoutMs)
	p = binary.LittleEndian.AppendUint32(p, r.Priority)
	p = binary.LittleEndian.AppendUint32(p, clusterIndex)
	p = binary.LittleEndian.AppendUint32(p, r.MaxStalenessMs)
	p = binary.LittleEndian.AppendUint32(p, policy)
	p = append(p, boolByte(r.Exact), r.RetryAttempts, r.RetryOn, boolByte(r.OnStaleReject), boolByte(r.StaleHeader))

	methods := r.Methods
	if !isStrictlySorted(methods) {
		d.methods = sortedUnique(methods)
		methods = d.methods
	}
	p = binary.LittleEndian.AppendUint32(p, uint32(len(methods)))
	for _, m := range methods {
		p = appendString(p, m)
	}

	headers := r.Headers
	if !slices.IsSortedFunc(headers, compareHeaderMatch) {
		d.headers = append(d.headers[:0], headers...)
		slices.SortFunc(d.headers, compareHeaderMatch)
		headers = d.headers
	}
	p = binary.LittleEndian.AppendUint32(p, uint32(len(headers)))
	for _, h := range headers {
		p = appendString(p, h.Name)
		p = appendString(p, h.Value)
		p = append(p, boolByte(h.Present))
	}

	statuses := r.RetryStatuses
	if !isStrictlySorted(statuses) {
		d.statuses = sortedUnique(statuses)
		statuses = d.statuses
	}
	p = binary.LittleEndian.AppendUint32(p, uint32(len(statuses)))
	for _, st := range statuses {
		p = binary.LittleEndian.AppendUint16(p, st)
	}
	d.buf = p
	return xxhash.Sum64(p)
}

// isStrictlySorted reports whether s is ascending without duplicates, the
// form build encodes; most routes already list methods that way.
func isStrictlySorted[T interface{ ~string | ~uint16 }](s []T) bool {
	for i := 1; i < len(s); i++ {
		if s[i-1] >= s[i] {
			return false
		}
	}
	return true
}

// appendString appends s length-prefixed, so adjacent fields cannot trade
// bytes without changing the digest input.
func appendString(p []byte, s string) []byte {
	p = binary.LittleEndian.AppendUint32(p, uint32(len(s)))
	return append(p, s...)
}

func boolByte(v bool) byte {
	if v {
		return 1
	}
	return 0
}
