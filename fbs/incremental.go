package fbs

import (
	"encoding/binary"
	"fmt"
	"slices"
	"sync"
	"unsafe"
	"weak"

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
// routes arrive, so unchanged shards are never sorted or encoded. A stale
// shard would need a 64-bit digest collision between two route sets that
// both pass validation.
//
// Given State.Routes, every build validates, places and digests every
// route. Given State.Table (a RouteTable), the Builder keeps each shard's
// sum between builds and the table keeps each route's placement and
// digest, so a build validates, places and digests only the routes put or
// deleted since its previous build from that table, as long as the shard
// count, the cluster names and the policy ids are unchanged (they decide
// placement, cluster and policy positions, and so every digest);
// otherwise it takes the full pass.
//
// The files it returns may be handed back with Recycle once nothing reads
// them, so that later builds write into used memory instead of fresh
// pages (at 100k routes, first-touch page faults of the 12 MB file cost
// more than encoding the changed shards).
//
// The zero value is ready to use. Builder is safe for concurrent use;
// builds are serialised.
type Builder struct {
	mu    sync.Mutex
	cache []cachedShard // by shard index, from the latest builds
	walks shardCache    // BuildSnapshot's verified shards
	sb    shardBuilder
	names map[string]int // clusterPositions
	ids   map[string]struct{}

	// sums holds each shard's route set of the latest successful build.
	// When table is set, it is what table's placements add up to, in
	// context ctx, and the next build from table starts from it.
	sums  []shardSum
	table *RouteTable
	ctx   buildContext

	// Scratch space of one build.
	next   []shardSum  // the sums being built; swapped into sums on success
	placed []placement // placements of State.Routes
	check  []int       // table positions to place, ascending
	undo   []tableUndo // table placements replaced by this build
	dirty  []bool      // per shard: its cached bytes are stale

	digest routeDigester
	files  fileRecycler
}

// placement is what a build derived from one valid route: its shard, the
// positions of its cluster and policy, and its digest (routeDigester).
// counted marks a RouteTable entry whose placement the owner's sums hold.
type placement struct {
	shard, cluster, policy uint32
	digest                 uint64
	counted                bool
}

// tableUndo is a RouteTable placement a build replaced, restored if the
// build fails after placing (tableUndo holds the new placement until then).
type tableUndo struct {
	pos int
	p   placement
}

// buildContext is what a route's placement depends on besides the route:
// the shard count, the sorted cluster names and the sorted policy ids.
type buildContext struct {
	shards             int
	clusters, policies []string
}

func (c *buildContext) same(shards int, clusters []Cluster, policies []Policy) bool {
	if c.shards != shards || len(c.clusters) != len(clusters) || len(c.policies) != len(policies) {
		return false
	}
	for i := range clusters {
		if clusters[i].Name != c.clusters[i] {
			return false
		}
	}
	for i := range policies {
		if policies[i].ID != c.policies[i] {
			return false
		}
	}
	return true
}

func (c *buildContext) set(shards int, clusters []Cluster, policies []Policy) {
	c.shards = shards
	c.clusters = c.clusters[:0]
	for i := range clusters {
		c.clusters = append(c.clusters, clusters[i].Name)
	}
	c.policies = c.policies[:0]
	for i := range policies {
		c.policies = append(c.policies, policies[i].ID)
	}
}

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

func (s *shardSum) add(p placement) {
	s.routes++
	s.digest += p.digest
}

func (s *shardSum) remove(p placement) {
	s.routes--
	s.digest -= p.digest
}

// Build returns the snapshot file for s, identical to Build(s), and the same
// error Build would return for an invalid s. A failed build leaves the
// Builder, and a RouteTable in s, as correct as before, so the next Build
// still returns Build's bytes.
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

// Recycle hands back the memory of a file this Builder returned (from
// Build or BuildSnapshot's Bytes), for a later build to write the next
// file into. The caller promises that nothing reads the file any more, nor
// will: the next build overwrites it. Files the Builder did not return or
// got back already are ignored, as are files older than its last 16 plus
// Reserve's count.
func (b *Builder) Recycle(file []byte) {
	if cap(file) == 0 {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.files.recycle(file)
}

// Reserve readies memory for the next n files, sized like the latest one
// with its pages touched, so that those builds do not pay the first-touch
// page faults (~40 ms for 12 MB on a busy VM) while a change waits. ctrl
// calls it once after its first build, with the number of files its
// publisher holds before it hands any back; after that, Recycle keeps the
// supply. Before any build it does nothing.
func (b *Builder) Reserve(n int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.files.last > 0 {
		b.files.reserve(n)
	}
}

func (b *Builder) build(s State) ([]byte, error) {
	routes, err := stateRoutes(&s)
	if err != nil {
		return nil, err
	}
	shards, err := shardCount(s.Shards, len(routes))
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
	b.names = clusterPositions(clusters, b.names)
	defer clear(b.names) // do not pin the caller's strings between builds

	// Pass 1: the checks prepareRoutes makes, in the same order so that
	// the first error is the same, then placement and digest, into next.
	// Nothing here allocates per route once the scratch space has grown.
	var placed []placement
	if t := s.Table; t != nil {
		err = b.placeTable(t, shards, clusters, refs)
		placed = t.placed
	} else {
		err = b.placeRoutes(routes, shards, refs)
		placed = b.placed
	}
	if err != nil {
		return nil, err
	}
	shardBytes, err := b.encodeShards(routes, placed, shards)
	if err != nil {
		if s.Table != nil {
			for _, u := range b.undo {
				s.Table.placed[u.pos] = u.p
			}
		}
		return nil, err
	}
	b.sums, b.next = b.next, b.sums
	b.table = s.Table
	if s.Table != nil {
		b.ctx.set(shards, clusters, refs.auth.Policies)
		s.Table.settled(b)
	}
	mem := b.files.take()
	file := assemble(mem, s.Version, s.ParentVersion, shardBytes, clusters, refs)
	b.files.lend(file, mem)
	return file, nil
}

// placeRoutes places every route of State.Routes into b.placed and sums
// them into b.next.
func (b *Builder) placeRoutes(routes []Route, shards int, refs *policyRefs) error {
	if b.ids == nil {
		b.ids = make(map[string]struct{}, len(routes))
	}
	defer clear(b.ids)
	b.placed = slices.Grow(b.placed[:0], len(routes))[:len(routes)]
	b.resetNext(shards)
	for i := range routes {
		p, err := b.place(&routes[i], b.ids, shards, refs)
		if err != nil {
			return err
		}
		b.placed[i] = p
		b.next[p.shard].add(p)
	}
	return nil
}

// placeTable brings t's placements up to date and sums them into b.next:
// only the routes changed since b's last build from t when the context is
// the same, else all of them. A failure before it returns leaves t as it
// was; b.undo then lists the placements it replaced.
func (b *Builder) placeTable(t *RouteTable, shards int, clusters []Cluster, refs *policyRefs) error {
	b.undo = b.undo[:0]
	if t.owner != b || b.table != t || !b.ctx.same(shards, clusters, refs.auth.Policies) {
		// A full pass overwrites placements that another build's sums
		// may count, so t has no owner until it succeeds.
		t.owner = nil
		b.resetNext(shards)
		for i := range t.routes {
			p, err := b.place(&t.routes[i], nil, shards, refs)
			if err != nil {
				return err
			}
			t.placed[i] = p
			b.next[p.shard].add(p)
		}
		return nil
	}
	// Placed in table order, as Build checks them, so that the first error
	// is Build's: the routes not changed passed these checks in this
	// context before.
	b.check = b.check[:0]
	for id := range t.changed {
		b.check = append(b.check, t.at[id])
	}
	slices.Sort(b.check)
	for _, i := range b.check {
		p, err := b.place(&t.routes[i], nil, shards, refs)
		if err != nil {
			b.undo = b.undo[:0]
			return err
		}
		b.undo = append(b.undo, tableUndo{pos: i, p: p})
	}
	b.next = append(b.next[:0], b.sums...)
	for _, p := range t.removed {
		b.next[p.shard].remove(p)
	}
	for k := range b.undo {
		u := &b.undo[k]
		if old := t.placed[u.pos]; old.counted {
			b.next[old.shard].remove(old)
		}
		b.next[u.p.shard].add(u.p)
		t.placed[u.pos], u.p = u.p, t.placed[u.pos]
	}
	return nil
}

// resetNext makes b.next shards empty sums.
func (b *Builder) resetNext(shards int) {
	b.next = slices.Grow(b.next[:0], shards)[:shards]
	clear(b.next)
}

// place validates r as prepareRoutes does, with the duplicate id check
// against ids unless it is nil (a RouteTable has one route per id), and
// returns its placement.
func (b *Builder) place(r *Route, ids map[string]struct{}, shards int, refs *policyRefs) (placement, error) {
	ci, err := checkRoute(r, b.names)
	if err != nil {
		return placement{}, err
	}
	if ids != nil {
		if _, dup := ids[r.ID]; dup {
			return placement{}, fmt.Errorf("%w: route %q: field id: duplicate route id", ErrInvalidState, r.ID)
		}
		ids[r.ID] = struct{}{}
	}
	pi, err := refs.routeRef(r)
	if err != nil {
		return placement{}, err
	}
	return placement{shard: uint32(routeKeyHash(r) % uint64(shards)), cluster: uint32(ci), policy: pi,
		digest: b.digest.route(r, uint32(ci), pi), counted: true}, nil
}

// encodeShards returns the bytes of every shard for routes placed as in
// placed and summed in b.next: the cached bytes of shards whose sum is
// unchanged, the others prepared, ordered and encoded as Build does.
func (b *Builder) encodeShards(routes []Route, placed []placement, shards int) ([][]byte, error) {
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
	b.dirty = slices.Grow(b.dirty[:0], shards)[:shards]
	for i := range shards {
		b.dirty[i] = !b.cache[i].fresh(b.next[i])
	}
	var changed []preparedRoute
	for i := range routes {
		if pl := placed[i]; b.dirty[pl.shard] {
			changed = append(changed, prepareRoute(&routes[i], int(pl.cluster), pl.policy, uint32(shards)))
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
		if b.dirty[i] {
			end := next
			for end < len(changed) && changed[end].shard == uint32(i) {
				end++
			}
			*c = cachedShard{sum: b.next[i], data: b.sb.build(changed[next:end])}
			next = end
		}
		shardBytes[i] = c.data
	}
	return shardBytes, nil
}

// fileRecycler keeps the memory of files handed back by Recycle. It knows
// the files it lent by weak pointers to their first bytes, so a file
// nobody hands back is left to the garbage collector, and a file handed
// back twice (before its memory is reused) or one it never lent is not
// taken: two builds writing one buffer would corrupt the first file under
// its reader.
type fileRecycler struct {
	lent []lentFile // newest last, at most maxLentFiles + keep
	free [][]byte   // whole buffers, at most max(maxFreeFiles, keep)
	keep int        // Reserve's count
	last int        // length of the latest file lent
}

// lentFile is a file handed out and, when it was written into a buffer
// the recycler gave (the usual case), that whole buffer. A file starts
// after the slack of the root size estimate, which grows with the
// clusters (tens of KB at thousands of clusters); handing back only the
// file would lose that slack at every reuse until the buffer no longer
// fits, so Recycle restores the buffer from its start.
type lentFile struct {
	file weak.Pointer[byte] // the file's first byte
	buf  weak.Pointer[byte] // the buffer's first byte; zero when unknown
	size int                // the buffer's capacity
}

// maxLentFiles bounds how many files back a Recycle may come from, besides
// Reserve's count: ctrl hands a file back once its publisher's delta bases
// (the count it reserves for) and the version in flight are newer.
// maxFreeFiles bounds the memory kept for reuse in steady state, where
// each build takes one buffer and a Recycle gives one back.
const maxLentFiles, maxFreeFiles = 16, 2

func (f *fileRecycler) take() []byte {
	n := len(f.free)
	if n == 0 {
		return nil
	}
	mem := f.free[n-1]
	f.free[n-1] = nil
	f.free = f.free[:n-1]
	return mem
}

// lend records file, written into mem (a buffer from take, or nil).
func (f *fileRecycler) lend(file, mem []byte) {
	if len(f.lent) >= maxLentFiles+f.keep {
		f.lent = slices.Delete(f.lent, 0, 1)
	}
	l := lentFile{file: weak.Make(&file[0])}
	if within(file, mem) {
		l.buf, l.size = weak.Make(&mem[:1][0]), cap(mem)
	}
	f.lent = append(f.lent, l)
	f.last = len(file)
}

func (f *fileRecycler) recycle(file []byte) {
	p := weak.Make(&file[:1][0])
	i := slices.IndexFunc(f.lent, func(l lentFile) bool { return l.file == p })
	if i < 0 {
		return
	}
	l := f.lent[i]
	f.lent = slices.Delete(f.lent, i, i+1)
	if len(f.free) >= max(maxFreeFiles, f.keep) {
		return
	}
	mem := file[:cap(file)]
	// The buffer outlives the file only as its allocation: file keeps it
	// reachable, so buf resolves and the slice stays inside it.
	if start := l.buf.Value(); start != nil {
		mem = unsafe.Slice(start, l.size)
	}
	f.free = append(f.free, mem)
}

// within reports whether file lies in mem's memory.
func within(file, mem []byte) bool {
	if cap(mem) == 0 {
		return false
	}
	lo := uintptr(unsafe.Pointer(unsafe.SliceData(mem)))
	at := uintptr(unsafe.Pointer(unsafe.SliceData(file)))
	return at >= lo && at-lo < uintptr(cap(mem))
}

// reserve fills the free list up to n buffers for files like the latest,
// with their pages touched.
func (f *fileRecycler) reserve(n int) {
	f.keep = n
	for len(f.free) < n {
		mem := make([]byte, fileCap(f.last))
		// Fresh memory from the OS is not zeroed by make, so nothing has
		// touched it yet: one write per page takes the faults now.
		for i := 0; i < len(mem); i += 4096 {
			mem[i] = 0
		}
		f.free = append(f.free, mem)
	}
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
