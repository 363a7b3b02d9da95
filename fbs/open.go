package fbs

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"

	"github.com/cespare/xxhash/v2"
	flatbuffers "github.com/google/flatbuffers/go"

	"github.com/snapgate/snapgate/fbs/snapfb"
)

// ErrCorrupt is wrapped by every Open error: the bytes are not a valid
// snapshot. The edge NACKs such a snapshot and keeps its last good one.
var ErrCorrupt = errors.New("snapshot: corrupt")

// minFileSize is the smallest possible file: root offset and identifier (8),
// a root table's soffset (4), a minimal vtable (4), and the trailer.
const minFileSize = 16 + TrailerSize

// routeShardRoutesSlot is the vtable offset of RouteShard.routes (field 0).
// The lookup reads the routes vector directly instead of going through the
// generated accessor on every probe; TestRouteAtMatchesGenerated pins it to
// the generated code.
const routeShardRoutesSlot = 4

// routeShardIndexSlot is the vtable offset of RouteShard.index (field 1).
const routeShardIndexSlot = 6

// routeShardFilterSlot is the vtable offset of RouteShard.filter (field 2).
const routeShardFilterSlot = 8

// shardIndex locates one shard's routes vector and hash index inside the
// snapshot bytes. It is computed once at Open so that Match needs no vtable
// lookups per shard and reads the index with encoding/binary.
type shardIndex struct {
	buf  []byte               // the nested RouteShard buffer (aliases the file; capacity cut to its length)
	off  int                  // buf's position in the file
	vec  flatbuffers.UOffsetT // position of routes[0]'s uoffset in buf
	n    int                  // number of routes
	base int                  // dense ordinal of routes[0] over all shards
	idx  []byte               // the index vector's raw bytes (slots*16)
	mask uint32               // slots-1

	// filter is the bloom filter's raw bytes (words*8), nil when the
	// snapshot has none; fmask is words-1.
	filter []byte
	fmask  uint32
}

// mayContain reports whether the shard may hold the key with hash kh; false
// is certain (Open checked every indexed key against the filter).
func (sh *shardIndex) mayContain(kh uint64) bool {
	if sh.filter == nil {
		return true
	}
	w, bits := filterOf(kh)
	b := sh.filter[(w&sh.fmask)*8:]
	return binary.LittleEndian.Uint64(b[:8])&bits == bits
}

// routeAt points r at route j of the shard. j must be in [0, n).
func (sh *shardIndex) routeAt(r *snapfb.Route, j int) {
	x := sh.vec + flatbuffers.UOffsetT(j)*flatbuffers.SizeUOffsetT
	r.Init(sh.buf, x+flatbuffers.GetUOffsetT(sh.buf[x:]))
}

// Open verifies b and returns a Snapshot that reads it in place. b is not
// copied and must stay unchanged and mapped while the Snapshot is in use.
//
// Checks, in order: length, trailer hash, identifier, then one walk that
// touches every field of every table: shard_count equals the number of shards
// and is > 0, clusters are strictly sorted by name, every route's key is
// host+"\x00"+prefix and strictly increasing within its shard, every route
// sits in the shard its hash names and references an existing cluster, the
// hash index finds every key and the bloom filter passes it, and the content
// hash recomputes. Every read of a shard stays inside it, and every read
// stays before the trailer, whatever capacity b has. Any other
// inconsistency the FlatBuffers accessors trip over (offsets out of range)
// is recovered and reported; Open never panics. After Open succeeds, every
// accessor and Match only read positions the walk has read, so they cannot
// panic either.
func Open(b []byte) (*Snapshot, error) {
	return verify(b, nil, nil)
}

// OpenAfter is Open for a file that shares most of its shards with prev, a
// snapshot returned by Open or OpenAfter that the caller still holds (its
// bytes stay unchanged and mapped during the call); a nil prev makes it
// Open. It accepts and refuses exactly the files Open does, and returns the
// Snapshot Open would return, at a cost proportional to what changed: a
// shard whose bytes equal prev's shard at the same index, in the same
// context (shard count, cluster count and names, policy count), is compared
// instead of walked, and a file equal to prev's is compared and not
// verified again. The walk of a shard is a deterministic function of
// exactly its bytes and that context (see shardContext), so its verdict for
// equal inputs is prev's, which passed; everything else (length, trailer
// hash, identifier, root, clusters, auth, content hash) is checked in full.
//
// The result keeps no reference to prev's bytes: it reads b only, and
// shares with prev nothing but immutable heap data (the decoded Auth and
// the routes' summaries), so prev may be unmapped afterwards.
func OpenAfter(prev *Snapshot, b []byte) (*Snapshot, error) {
	if prev != nil && len(prev.b) > 0 && bytes.Equal(prev.b, b) {
		return prev.rebase(b), nil
	}
	return verify(b, prev, nil)
}

// open is Open; a non-nil cache lets the walk reuse the checks of shards
// whose bytes and context it verified before (Builder.BuildSnapshot).
func open(b []byte, cache *shardCache) (*Snapshot, error) {
	return verify(b, nil, cache)
}

// verify is Open, reusing the walks of prev's shards and the cache's (both
// optional) where they apply.
func verify(b []byte, prev *Snapshot, cache *shardCache) (*Snapshot, error) {
	if len(b) < minFileSize {
		return nil, fmt.Errorf("%w: %d bytes is shorter than the minimum %d", ErrCorrupt, len(b), minFileSize)
	}
	// Capacity cut to the content: FlatBuffers' ByteVector slices up to
	// capacity, so a string running past the end would otherwise read the
	// trailer or whatever the caller's buffer holds beyond b.
	body := b[: len(b)-TrailerSize : len(b)-TrailerSize]
	if want, got := binary.LittleEndian.Uint64(b[len(body):]), xxhash.Sum64(body); want != got {
		return nil, fmt.Errorf("%w: trailer hash %016x does not match content %016x (truncated or altered)", ErrCorrupt, want, got)
	}
	if !flatbuffers.BufferHasIdentifier(body, Identifier) {
		return nil, fmt.Errorf("%w: file identifier %q, want %q", ErrCorrupt, body[4:8], Identifier)
	}
	w := walker{s: &Snapshot{b: b}, prev: prev, cache: cache}
	if err := w.run(body); err != nil {
		return nil, err
	}
	return w.s, nil
}

// rebase returns the Snapshot Open returns for b, a byte-identical copy of
// s.Bytes(): s's with every position moved to b.
func (s *Snapshot) rebase(b []byte) *Snapshot {
	n := *s
	n.b = b
	body := b[: len(b)-TrailerSize : len(b)-TrailerSize]
	n.root.Init(body, flatbuffers.GetUOffsetT(body))
	n.shards = make([]shardIndex, len(s.shards))
	for i := range s.shards {
		sh := &s.shards[i]
		end := sh.off + len(sh.buf)
		l := layoutOf(sh)
		n.shards[i] = l.at(b[sh.off:end:end])
		n.shards[i].off, n.shards[i].base = sh.off, sh.base
	}
	return &n
}

// walker carries the position of the walk so that a recovered accessor panic
// still says where the structure broke.
type walker struct {
	s     *Snapshot
	where string // "clusters", "shards" or "routes"
	i, j  int
	seen  []bool // checkIndex's scratch

	// prev and cache, if set, hold earlier shard walks.
	prev  *Snapshot
	cache *shardCache
}

func (w *walker) loc() string {
	switch w.where {
	case "clusters":
		return fmt.Sprintf("cluster %d", w.i)
	case "shards":
		return fmt.Sprintf("shard %d", w.i)
	case "routes":
		return fmt.Sprintf("shard %d route %d", w.i, w.j)
	case "auth":
		return "auth section"
	}
	return "root table"
}

func (w *walker) run(body []byte) (err error) {
	defer func() {
		if r := recover(); r != nil {
			w.s = nil
			err = fmt.Errorf("%w: %s: malformed FlatBuffer: %v", ErrCorrupt, w.loc(), r)
		}
	}()
	return w.walk(body)
}

func (w *walker) walk(body []byte) error {
	s := w.s
	s.root.Init(body, flatbuffers.GetUOffsetT(body))
	root := &s.root
	s.version = root.Version()
	s.parentVersion = root.ParentVersion()
	s.contentHash = root.ContentHash()

	shardCount := root.ShardCount()
	nShards := root.ShardsLength()
	switch {
	case shardCount == 0:
		return fmt.Errorf("%w: root table: shard_count is 0", ErrCorrupt)
	case int(shardCount) != nShards:
		return fmt.Errorf("%w: root table: shard_count %d but %d shards", ErrCorrupt, shardCount, nShards)
	case nShards > MaxShards || nShards*flatbuffers.SizeUOffsetT > len(body):
		return fmt.Errorf("%w: root table: %d shards exceed the limit or the buffer", ErrCorrupt, nShards)
	}

	hash := xxhash.New()
	var scratch [4]byte

	// Auth first: routes and clusters refer to its policies.
	w.where = "auth"
	authBytes := root.AuthBytes()
	if authBytes != nil {
		a, err := decodeAuth(authBytes)
		if err != nil {
			return fmt.Errorf("%w: %v", ErrCorrupt, err)
		}
		s.auth = a
	}
	nPolicies := uint32(s.PolicyCount())
	s.globalPolicy = root.GlobalPolicy()
	s.fleetSize = root.FleetSize()
	if s.globalPolicy > nPolicies {
		return fmt.Errorf("%w: root table: global_policy %d but %d policies", ErrCorrupt, s.globalPolicy, nPolicies)
	}

	// Clusters first, since routes are checked against them. Their
	// canonical encoding ends the content hash input (see hashClusters), so
	// they are read a second time after the shards.
	w.where = "clusters"
	nClusters := root.ClustersLength()
	if nClusters*flatbuffers.SizeUOffsetT > len(body) {
		return fmt.Errorf("%w: root table: %d clusters exceed the buffer", ErrCorrupt, nClusters)
	}
	s.numClusters = nClusters
	var names xxhash.Digest // of the cluster names, for s.ctx
	names.Reset()
	var c, prev snapfb.Cluster
	var ep snapfb.Endpoint
	for i := range nClusters {
		w.i = i
		if !root.Clusters(&c, i) {
			return fmt.Errorf("%w: cluster %d: missing", ErrCorrupt, i)
		}
		name := c.Name()
		if len(name) == 0 {
			return fmt.Errorf("%w: cluster %d: empty name", ErrCorrupt, i)
		}
		if i > 0 && bytes.Compare(prev.Name(), name) >= 0 {
			return fmt.Errorf("%w: cluster %d (%q): name out of order", ErrCorrupt, i, name)
		}
		c.ConnectTimeoutMs()
		nEP := c.EndpointsLength()
		if nEP*flatbuffers.SizeUOffsetT > len(body) {
			return fmt.Errorf("%w: cluster %d (%q): %d endpoints exceed the buffer", ErrCorrupt, i, name, nEP)
		}
		for j := range nEP {
			if !c.Endpoints(&ep, j) || len(ep.Address()) == 0 {
				return fmt.Errorf("%w: cluster %d (%q) endpoint %d: empty address", ErrCorrupt, i, name, j)
			}
			if ep.Weight() > MaxWeight {
				return fmt.Errorf("%w: cluster %d (%q) endpoint %d: weight %d above %d", ErrCorrupt, i, name, j, ep.Weight(), MaxWeight)
			}
		}
		if reason := checkClusterLB(c.Lb(), c.HashOn(), string(c.HashOnName())); reason != "" {
			return fmt.Errorf("%w: cluster %d (%q): %s", ErrCorrupt, i, name, reason)
		}
		if c.Policy() > nPolicies {
			return fmt.Errorf("%w: cluster %d (%q): policy %d but %d policies", ErrCorrupt, i, name, c.Policy(), nPolicies)
		}
		names.Write(binary.LittleEndian.AppendUint32(scratch[:0], uint32(len(name))))
		names.Write(name)
		prev = c
	}
	s.ctx = shardContext{shards: nShards, clusters: nClusters, names: names.Sum64(), policies: nPolicies}

	w.where = "shards"
	s.shards = make([]shardIndex, nShards)
	s.sums = make([]*routeSummary, nShards)
	// Open walks every shard: one allocation holds all their summaries.
	// With earlier walks to reuse, few shards are walked, each allocated
	// alone so that a snapshot does not keep a whole set alive for one.
	var slab []routeSummary
	if w.prev == nil && w.cache == nil {
		slab = make([]routeSummary, nShards)
	}
	var sh snapfb.Shard
	for i := range nShards {
		w.where, w.i = "shards", i
		if !root.Shards(&sh, i) {
			return fmt.Errorf("%w: shard %d: missing", ErrCorrupt, i)
		}
		data := sh.DataBytes()
		if len(data) < flatbuffers.SizeUOffsetT {
			return fmt.Errorf("%w: shard %d: %d data bytes", ErrCorrupt, i, len(data))
		}
		// DataBytes slices body up to its capacity, so the capacity
		// difference is the shard's position. The shard is then cut to its
		// length: a string running past it is corrupt, and its checks read
		// its bytes only, which is what lets OpenAfter and the cache reuse
		// them.
		off := len(body) - cap(data)
		data = data[:len(data):len(data)]
		hash.Write(data)
		idx := &s.shards[i]
		sum := w.reuse(i, data, idx)
		if sum == nil {
			if slab != nil {
				sum = &slab[i]
			} else {
				sum = new(routeSummary)
			}
			if err := w.walkShard(i, nShards, data, idx, sum); err != nil {
				return err
			}
			if w.cache != nil {
				w.cache.store(i, data, s.ctx, idx, sum)
			}
		}
		s.sums[i] = sum
		s.routeSummary.merge(sum)
		idx.off = off
		idx.base = s.numRoutes
		s.numRoutes += idx.n
	}

	w.where = "clusters"
	hashU32(hash, scratch[:], uint32(nClusters))
	for i := range nClusters {
		w.i = i
		root.Clusters(&c, i)
		hashBytes(hash, scratch[:], c.Name())
		hashU32(hash, scratch[:], c.ConnectTimeoutMs())
		hashU32(hash, scratch[:], uint32(c.Lb()))
		hashU32(hash, scratch[:], uint32(c.HashOn()))
		hashBytes(hash, scratch[:], c.HashOnName())
		nEP := c.EndpointsLength()
		hashU32(hash, scratch[:], uint32(nEP))
		for j := range nEP {
			c.Endpoints(&ep, j)
			hashBytes(hash, scratch[:], ep.Address())
			hashU32(hash, scratch[:], uint32(ep.Weight()))
		}
	}
	hashAuth(hash, scratch[:], authBytes, func(i int) uint32 {
		root.Clusters(&c, i)
		return c.Policy()
	}, nClusters, s.globalPolicy, s.fleetSize)
	// The walk above read every other cluster field; this reads the
	// health fields (any value is valid).
	hashHealth(hash, scratch[:], nClusters, func(i int) clusterHealth {
		w.i = i
		root.Clusters(&c, i)
		return clusterHealth{panic: c.Panic(), slowStartMs: c.SlowStartMs(), endpoints: c.EndpointsLength()}
	}, func(i, j int) (bool, uint64) {
		root.Clusters(&c, i)
		c.Endpoints(&ep, j)
		return ep.Unhealthy(), ep.RecoveredAtMs()
	})
	if got := hash.Sum64(); got != s.contentHash {
		return fmt.Errorf("%w: root table: content_hash %016x does not match content %016x", ErrCorrupt, s.contentHash, got)
	}
	return nil
}

// reuse fills idx (except off and base) for shard i, whose bytes are data,
// from an earlier walk of equal bytes in this file's context: prev's shard
// i, else the cache's. It returns that walk's route summary, nil if there
// is none.
func (w *walker) reuse(i int, data []byte, idx *shardIndex) *routeSummary {
	if p := w.prev; p != nil && p.ctx == w.s.ctx && i < len(p.shards) && bytes.Equal(p.shards[i].buf, data) {
		l := layoutOf(&p.shards[i])
		*idx = l.at(data)
		return p.sums[i]
	}
	if w.cache != nil {
		return w.cache.reuse(i, data, w.s.ctx, idx)
	}
	return nil
}

// walkShard verifies shard i of nShards, whose bytes are data: its routes
// vector, hash index and filter, and every route (checkStoredRoute, in key
// and match order). It fills idx, except off and base, and adds the routes
// to sum.
func (w *walker) walkShard(i, nShards int, data []byte, idx *shardIndex, sum *routeSummary) error {
	var rs snapfb.RouteShard
	var r snapfb.Route
	rs.Init(data, flatbuffers.GetUOffsetT(data))
	idx.buf = data
	t := rs.Table()
	if o := flatbuffers.UOffsetT(t.Offset(routeShardRoutesSlot)); o != 0 {
		idx.vec = t.Vector(o)
		idx.n = t.VectorLen(o)
	}
	if idx.n*flatbuffers.SizeUOffsetT > len(data) {
		return fmt.Errorf("%w: shard %d: %d routes exceed the shard's %d bytes", ErrCorrupt, i, idx.n, len(data))
	}
	if o := flatbuffers.UOffsetT(t.Offset(routeShardIndexSlot)); o != 0 {
		start, words := int(t.Vector(o)), t.VectorLen(o)
		if words < 0 || start > len(data) || words > (len(data)-start)/4 {
			return fmt.Errorf("%w: shard %d: index of %d words exceeds the shard's %d bytes", ErrCorrupt, i, words, len(data))
		}
		idx.idx = data[start : start+4*words]
	}
	slots := len(idx.idx) / (4 * slotWords)
	if slots == 0 || slots&(slots-1) != 0 || len(idx.idx) != slots*4*slotWords {
		return fmt.Errorf("%w: shard %d: index has %d bytes, not a power of two of %d-byte slots", ErrCorrupt, i, len(idx.idx), 4*slotWords)
	}
	idx.mask = uint32(slots - 1)
	if o := flatbuffers.UOffsetT(t.Offset(routeShardFilterSlot)); o != 0 {
		start, words := int(t.Vector(o)), t.VectorLen(o)
		if words <= 0 || words&(words-1) != 0 || start > len(data) || words > (len(data)-start)/8 {
			return fmt.Errorf("%w: shard %d: filter of %d words is not a power of two within the shard's %d bytes", ErrCorrupt, i, words, len(data))
		}
		idx.filter = data[start : start+8*words]
		idx.fmask = uint32(words - 1)
	}
	w.where = "routes"
	var prev snapfb.Route
	for j := range idx.n {
		w.j = j
		idx.routeAt(&r, j)
		var p *snapfb.Route
		if j > 0 {
			p = &prev
		}
		if err := checkStoredRoute(w.s, &r, p, uint64(i), uint64(nShards)); err != nil {
			return fmt.Errorf("%w: shard %d route %d (%q): %s", ErrCorrupt, i, j, r.Id(), err)
		}
		sum.note(&r)
		prev = r
	}
	w.where = "shards"
	w.seen = slices.Grow(w.seen[:0], idx.n)[:idx.n]
	clear(w.seen)
	if err := checkIndex(idx, w.seen); err != nil {
		return fmt.Errorf("%w: shard %d: index: %s", ErrCorrupt, i, err)
	}
	return nil
}

// checkStoredRoute returns why route r (in shard, after prev when not nil)
// is invalid, or nil. It reads every field of the route.
func checkStoredRoute(s *Snapshot, r *snapfb.Route, prev *snapfb.Route, shard, shards uint64) error {
	key, host, prefix := r.Key(), r.Host(), r.Prefix()
	r.TimeoutMs()
	r.Priority()
	if len(r.Id()) == 0 {
		return errors.New("empty id")
	}
	if len(host) == 0 {
		return errors.New("empty host")
	}
	if reason := checkHost(string(host)); reason != "" {
		return fmt.Errorf("host %q %s", host, reason)
	}
	if len(prefix) == 0 || prefix[0] != '/' {
		return errors.New("prefix does not start with \"/\"")
	}
	if rw := r.RewritePrefix(); rw != nil && (len(rw) == 0 || rw[0] != '/') {
		return errors.New("rewrite_prefix does not start with \"/\"")
	}
	if !keyEquals(key, host, r.Exact(), prefix) {
		return errors.New("key is not host+\"\\x00\"+[\"=\"]+prefix")
	}
	if prev != nil {
		switch c := bytes.Compare(prev.Key(), key); {
		case c > 0:
			return errors.New("key out of order")
		case c == 0 && !storedMatchOrderBefore(prev, r):
			return errors.New("routes of one key out of match order")
		}
	}
	if keyHash(key)%shards != shard {
		return fmt.Errorf("belongs in shard %d", keyHash(key)%shards)
	}
	ci := r.ClusterIndex()
	if int64(ci) >= int64(s.numClusters) {
		return fmt.Errorf("cluster_index %d out of range", ci)
	}
	var c snapfb.Cluster
	s.root.Clusters(&c, int(ci))
	if !bytes.Equal(c.Name(), r.Cluster()) {
		return fmt.Errorf("cluster %q is not cluster %d", r.Cluster(), ci)
	}
	if r.RetryAttempts() > MaxRetryAttempts {
		return fmt.Errorf("retry_attempts %d above %d", r.RetryAttempts(), MaxRetryAttempts)
	}
	if r.RetryOn()&^(RetryOnConnectFailure|RetryOnReset) != 0 {
		return fmt.Errorf("retry_on %#x has unknown bits", r.RetryOn())
	}
	// Read once here so the walk's recover covers them; Match reads them
	// per request. An unknown on_stale is a mode this edge cannot honour.
	r.MaxStalenessMs()
	r.StaleHeader()
	if v := r.OnStale(); v != onStaleServe && v != onStaleReject {
		return fmt.Errorf("on_stale %d is neither serve (0) nor reject (1)", v)
	}
	if p := r.Policy(); p > uint32(s.PolicyCount()) {
		return fmt.Errorf("policy %d but %d policies", p, s.PolicyCount())
	}
	for j := range r.RetryStatusesLength() {
		r.RetryStatuses(j)
	}
	for j := range r.MethodsLength() {
		if len(r.Methods(j)) == 0 {
			return fmt.Errorf("methods[%d] empty", j)
		}
	}
	var h snapfb.HeaderMatch
	for j := range r.HeadersLength() {
		r.Headers(&h, j)
		if len(h.Name()) == 0 || h.Present() == (len(h.Value()) > 0) {
			return fmt.Errorf("headers[%d]: needs a name and exactly one of value and present", j)
		}
	}
	return nil
}

// storedMatchOrderBefore reports whether a sorts strictly before b among
// routes of one key (compareMatchOrder on stored routes).
func storedMatchOrderBefore(a, b *snapfb.Route) bool {
	if pa, pb := a.Priority(), b.Priority(); pa != pb {
		return pa > pb
	}
	if ca, cb := storedConditions(a), storedConditions(b); ca != cb {
		return ca > cb
	}
	return bytes.Compare(a.Id(), b.Id()) < 0
}

func storedConditions(r *snapfb.Route) int {
	n := r.HeadersLength()
	if r.MethodsLength() > 0 {
		n++
	}
	return n
}

// checkIndex verifies the shard's hash index against its (already checked)
// routes: every used slot names a key string inside the shard that equals
// the key of a maximal run of routes, carries that key's fingerprint, and is
// reachable by the probe sequence Match uses and passes the shard's filter;
// every route is in exactly one run. seen has one entry per route, all false.
func checkIndex(sh *shardIndex, seen []bool) error {
	var r snapfb.Route
	covered, used := 0, 0
	slots := sh.mask + 1
	for pos := uint32(0); pos < slots; pos++ {
		fp, keyEnd, first, count := sh.slot(pos)
		if fp == 0 {
			continue
		}
		if int64(keyEnd) > int64(len(sh.buf)) || keyEnd < 4 {
			return fmt.Errorf("slot %d: key position %d outside the shard", pos, keyEnd)
		}
		key, ok := sh.keyAt(keyEnd)
		if !ok {
			return fmt.Errorf("slot %d: key string overruns the shard", pos)
		}
		if count == 0 || int64(first)+int64(count) > int64(sh.n) {
			return fmt.Errorf("slot %d: routes %d+%d out of range", pos, first, count)
		}
		for j := first; j < first+count; j++ {
			if seen[j] {
				return fmt.Errorf("slot %d: route %d indexed twice", pos, j)
			}
			seen[j] = true
			sh.routeAt(&r, int(j))
			if !bytes.Equal(r.Key(), key) {
				return fmt.Errorf("slot %d: route %d has another key", pos, j)
			}
		}
		if first+count < uint32(sh.n) {
			sh.routeAt(&r, int(first+count))
			if bytes.Equal(r.Key(), key) {
				return fmt.Errorf("slot %d: run of routes does not end at %d", pos, first+count)
			}
		}
		kh := keyHash(key)
		wantFP, home := slotOf(kh)
		if fp != wantFP {
			return fmt.Errorf("slot %d: fingerprint %08x, want %08x", pos, fp, wantFP)
		}
		if !sh.mayContain(kh) {
			return fmt.Errorf("slot %d: key missing from the filter", pos)
		}
		for p := home & sh.mask; p != pos; p = (p + 1) & sh.mask {
			if f, _, _, _ := sh.slot(p); f == 0 {
				return fmt.Errorf("slot %d: unreachable, empty slot %d on its probe path", pos, p)
			}
		}
		covered += int(count)
		used++
	}
	if covered != sh.n {
		return fmt.Errorf("%d of %d routes indexed", covered, sh.n)
	}
	if used == int(slots) {
		return errors.New("no empty slot: probes could not terminate")
	}
	return nil
}
