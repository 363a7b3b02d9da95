// Package fbs defines the snapgate routing snapshot: its FlatBuffers schema
// (snapshot.fbs, generated code in snapfb), the deterministic builder used by
// ctrl, and the verifying reader and zero-allocation route matcher used by the
// edge on memory-mapped bytes.
//
// File layout: one FlatBuffer with identifier "SGS1" followed by an 8-byte
// trailer, xxhash64 (little endian) of every byte before it. Routes live in
// shard_count independent nested FlatBuffers; the route with host H and prefix
// P lives in shard RouteHash(H, P) % shard_count, sorted by key H+"\x00"+P.
package fbs

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/cespare/xxhash/v2"
	flatbuffers "github.com/google/flatbuffers/go"

	"github.com/snapgate/snapgate/fbs/snapfb"
)

// Identifier is the FlatBuffers file identifier of a snapshot.
const Identifier = "SGS1"

// TrailerSize is the length of the xxhash64 trailer that ends a snapshot file.
const TrailerSize = 8

// WildcardHost is the route host that matches any request host.
const WildcardHost = "*"

// MaxShards bounds State.Shards. Shard placement and the edge's per-shard
// index are sized by it, so it also bounds what Open allocates.
const MaxShards = 65536

// ErrInvalidState is wrapped by every Build error: the State itself is wrong
// (a missing field, a duplicate, a dangling cluster reference).
var ErrInvalidState = errors.New("snapshot build: invalid state")

// Endpoint is one backend address of a cluster.
type Endpoint struct {
	Address string // host:port
	Weight  uint16 // weighted_round_robin weight, 1..MaxWeight; 0 reads as 1
	// Unhealthy is ctrl's health verdict: edges pick the endpoint only
	// while its cluster is in panic. The zero value is routable.
	Unhealthy bool
	// RecoveredAtMs is when the endpoint last became healthy, unix
	// milliseconds on ctrl's clock, for the cluster's slow start; 0 = long ago.
	RecoveredAtMs uint64
}

// MaxWeight bounds Endpoint.Weight.
const MaxWeight = 1000

// Load-balancing policies (Cluster.LB).
const (
	LBRoundRobin         uint8 = 0
	LBWeightedRoundRobin uint8 = 1
	LBLeastRequest       uint8 = 2
	LBHash               uint8 = 3
)

// What an LBHash cluster hashes (Cluster.HashOn).
const (
	HashOnNone     uint8 = 0
	HashOnHeader   uint8 = 1 // HashOnName is a lowercase header name
	HashOnCookie   uint8 = 2 // HashOnName is a cookie name
	HashOnSourceIP uint8 = 3
)

// Cluster is a named group of backends.
type Cluster struct {
	Name             string
	Endpoints        []Endpoint
	ConnectTimeoutMs uint32 // 0 = edge default
	LB               uint8  // LBRoundRobin, ...
	HashOn           uint8  // set iff LB == LBHash
	HashOnName       string // for HashOnHeader and HashOnCookie
	Policy           string // id in State.Auth.Policies for routes without their own; "" = none
	// Panic: too few endpoints are healthy, so edges route to all of them.
	Panic bool
	// SlowStartMs is how long an endpoint ramps up to its full share after
	// its RecoveredAtMs; 0 = no slow start.
	SlowStartMs uint32
}

// HeaderMatch is one header condition: the request carries header Name
// (lowercase) with exactly Value, or with any value when Present is set.
type HeaderMatch struct {
	Name, Value string
	Present     bool
}

// Retry conditions besides statuses (Route.RetryOn bits).
const (
	RetryOnConnectFailure uint8 = 1 << 0 // refused, unreachable, connect timeout
	RetryOnReset          uint8 = 1 << 1 // connection reset before any response byte
)

// Route.on_stale values in the schema; Open refuses any other.
const (
	onStaleServe  uint8 = 0
	onStaleReject uint8 = 1
)

// MaxRetryAttempts bounds Route.RetryAttempts.
const MaxRetryAttempts = 5

// Route sends matching requests to Cluster. A request matches when its host
// equals Host ("*.example.com" matches any subdomain, "*" any host), its
// path equals Prefix (Exact) or lies under it segment-aware, its method is
// one of Methods (empty = any) and every Headers condition holds.
type Route struct {
	ID        string
	Host      string // lowercase, no port; "*.suffix" or "*" for wildcards
	Prefix    string // segment-aware path prefix, or the exact path when Exact; starts with "/"
	Cluster   string // name of an existing Cluster
	TimeoutMs uint32 // 0 = edge default

	Exact         bool
	Methods       []string      // uppercase tokens; order irrelevant
	Headers       []HeaderMatch // all must hold; order irrelevant
	Priority      uint32        // higher wins among routes of one host and path
	RewritePrefix string        // replaces the matched prefix; "" = no rewrite
	RetryAttempts uint8         // 0..MaxRetryAttempts
	RetryOn       uint8         // RetryOnConnectFailure | RetryOnReset
	RetryStatuses []uint16      // upstream statuses (100..599) that trigger a retry

	MaxStalenessMs uint32 // staleness bound; 0 = unbounded
	OnStaleReject  bool   // past the bound answer 503 instead of serving
	StaleHeader    bool   // add X-Snapgate-Staleness to responses

	Policy string // id in State.Auth.Policies; "" = the cluster's, else the global one
}

// conditions counts a route's method and header conditions; among routes of
// one key and priority, the one with more conditions is tried first.
func (r *Route) conditions() int {
	n := len(r.Headers)
	if len(r.Methods) > 0 {
		n++
	}
	return n
}

// State is everything one snapshot holds. Input order of Routes and Clusters
// does not affect the output bytes.
type State struct {
	Version, ParentVersion uint64
	Routes                 []Route
	// Table, if set, holds the routes instead of Routes, which must then
	// be empty. A Builder that builds from the same table every time
	// re-validates only the routes changed since its previous build.
	Table    *RouteTable
	Clusters []Cluster
	// Shards is the number of route shards; 0 picks DefaultShards of the
	// route count.
	Shards int

	// Auth holds consumers, issuers and policies; GlobalPolicy names the
	// policy of routes whose route and cluster have none ("" = none).
	Auth         Auth
	GlobalPolicy string
	// FleetSize is the number of edges sharing cluster-scope rate limits.
	FleetSize uint32
}

// RouteHash is FNV-1a 64 over host, one 0x00 byte and prefix. It places a
// route in shard RouteHash(host, prefix) % shard_count.
func RouteHash(host, prefix []byte) uint64 {
	const offset64, prime64 = 14695981039346656037, 1099511628211
	h := uint64(offset64)
	for _, c := range host {
		h ^= uint64(c)
		h *= prime64
	}
	h *= prime64 // the 0x00 separator: h ^= 0 is a no-op
	for _, c := range prefix {
		h ^= uint64(c)
		h *= prime64
	}
	return h
}

// routeHashString is FNV-1a 64 over a whole key. Because the separator is
// 0x00, it equals RouteHash(host, rest) for key host+"\x00"+rest.
func routeHashString(key string) uint64 {
	h := uint64(fnvOffset)
	for i := 0; i < len(key); i++ {
		h ^= uint64(key[i])
		h *= fnvPrime
	}
	return h
}

// keyHash is routeHashString for a key held as bytes.
func keyHash(key []byte) uint64 {
	h := uint64(fnvOffset)
	for _, c := range key {
		h ^= uint64(c)
		h *= fnvPrime
	}
	return h
}

const fnvOffset, fnvPrime = 14695981039346656037, 1099511628211

// slotWords is the number of uint32 per index slot.
const slotWords = 4

// indexSlots is the slot count for keys distinct keys: a power of two with
// load at most 1/2, so linear probes stay short.
func indexSlots(keys int) int {
	n := 2
	for n < 2*keys {
		n <<= 1
	}
	return n
}

// slotOf mixes a key hash into the index fingerprint (never 0, which marks
// an empty slot) and the unmasked home slot. The mix decorrelates the slot
// from the shard choice, which used the same hash modulo the shard count.
func slotOf(h uint64) (fp, pos uint32) {
	m := (h ^ h>>29) * 0xbf58476d1ce4e5b9
	m ^= m >> 32
	return uint32(m>>32) | 1, uint32(m)
}

// filterBitsPerKey is the least number of filter bits per distinct key; the
// word count is rounded up to a power of two, so a shard gets 16..32. At 16
// bits and 5 bits per key in one 64-bit word a key the shard lacks passes
// about 1% of the time, so of the ~5 prefix candidates of a typical request
// almost all end at the filter instead of a cache miss in the index.
const filterBitsPerKey = 16

// filterBits is the number of bits one key sets in its filter word.
const filterBits = 5

// filterWords is the filter size of a shard with keys distinct keys: a power
// of two of 64-bit words, at least one.
func filterWords(keys int) int {
	n := 1
	for n*64 < keys*filterBitsPerKey {
		n <<= 1
	}
	return n
}

// filterOf returns the unmasked filter word of a key hash and the bits the
// key sets in it. It mixes with other constants than slotOf so that the
// word is independent of the shard choice and of the index slot.
func filterOf(h uint64) (word uint32, bits uint64) {
	m := (h ^ h>>31) * 0x94d049bb133111eb
	m ^= m >> 29
	for i := range filterBits {
		bits |= 1 << (m >> (64 - 6*(i+1)) & 63)
	}
	return uint32(m), bits
}

// DefaultShards is the shard count Build uses when State.Shards is 0.
//
// Why shards at all: FlatBuffers offsets are relative, so a route whose
// strings change length shifts every offset on one side of it within its
// buffer. Sharding confines a one-route edit to one shard's bytes (plus one
// offset per shard in the root), so a delta against the previous snapshot
// (deps.md §4) pays for one shard, not for the whole route table.
//
// Why this formula: a one-route edit shifts about routes/shards offsets in
// its shard and up to shards offsets in the root, smallest near
// sqrt(routes). We take the largest power of two at or below sqrt(routes),
// at least 64 so that small configs keep a stable count (a count change
// rewrites every shard), at most MaxShards. For 100k routes that is 256,
// which measured the smallest add/delete deltas of 64, 256 and 1024
// (BenchmarkDeltaSize).
func DefaultShards(routes int) int {
	n := 64
	for n < MaxShards && 4*int64(n)*int64(n) <= int64(routes) {
		n <<= 1
	}
	return n
}

// preparedRoute is a validated route with its sort key and shard.
type preparedRoute struct {
	r            *Route
	key          string
	shard        uint32
	clusterIndex uint32
	policy       uint32        // policy index + 1, 0 = none
	methods      []string      // sorted, deduplicated
	headers      []HeaderMatch // sorted by name, then value
	statuses     []uint16      // sorted, deduplicated
}

// routeKey is the key a route is stored and looked up under.
func routeKey(r *Route) string {
	if r.Exact {
		return r.Host + "\x00=" + r.Prefix
	}
	return r.Host + "\x00" + r.Prefix
}

// compareMatchOrder orders two routes of the same key the way Match tries
// them: higher priority first, then more conditions, then id.
func compareMatchOrder(a, b *Route) int {
	switch {
	case a.Priority != b.Priority:
		if a.Priority > b.Priority {
			return -1
		}
		return 1
	case a.conditions() != b.conditions():
		if a.conditions() > b.conditions() {
			return -1
		}
		return 1
	}
	return strings.Compare(a.ID, b.ID)
}

// Build encodes s as a snapshot file (FlatBuffer plus trailer). It is
// deterministic: the same State yields the same bytes whatever the order of
// s.Routes and s.Clusters. Builder produces the same bytes incrementally.
func Build(s State) ([]byte, error) {
	in, err := stateRoutes(&s)
	if err != nil {
		return nil, err
	}
	shards, err := shardCount(s.Shards, len(in))
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
	routes, err := prepareRoutes(in, clusterPositions(clusters, nil), refs, uint32(shards))
	if err != nil {
		return nil, err
	}

	// Each shard is an independent FlatBuffer so that its bytes depend only on
	// its own routes. One builder is reset and reused across shards.
	shardBytes := make([][]byte, shards)
	sb := &shardBuilder{b: flatbuffers.NewBuilder(4096)}
	start := 0
	for i := range shards {
		end := start
		for end < len(routes) && routes[end].shard == uint32(i) {
			end++
		}
		shardBytes[i] = sb.build(routes[start:end])
		start = end
	}
	return assemble(nil, s.Version, s.ParentVersion, shardBytes, clusters, refs), nil
}

// stateRoutes returns the routes of s: Routes, or the table's.
func stateRoutes(s *State) ([]Route, error) {
	if s.Table == nil {
		return s.Routes, nil
	}
	if len(s.Routes) > 0 {
		return nil, fmt.Errorf("%w: fields Routes and Table: %d routes given in both; set one", ErrInvalidState, len(s.Routes))
	}
	return s.Table.routes, nil
}

// shardCount validates the State's Shards and resolves 0 to DefaultShards
// of the route count.
func shardCount(shards, routes int) (int, error) {
	switch {
	case shards < 0 || shards > MaxShards:
		return 0, fmt.Errorf("%w: field Shards: %d is outside 0..%d", ErrInvalidState, shards, MaxShards)
	case shards == 0:
		return DefaultShards(routes), nil
	default:
		return shards, nil
	}
}

// assemble wraps finished shard buffers and the sorted clusters in the root
// table and appends the trailer, writing the file into mem when it is large
// enough (nil: fresh memory). The shard bytes are the only input that
// depends on the routes, which is what lets Builder reuse them.
func assemble(mem []byte, version, parent uint64, shardBytes [][]byte, clusters []Cluster, refs *policyRefs) []byte {
	hash := xxhash.New()
	for _, sh := range shardBytes {
		hash.Write(sh)
	}
	var scratch [4]byte
	hashClusters(hash, clusters, scratch[:])
	hashAuth(hash, scratch[:], refs.bytes, func(i int) uint32 { return refs.clusters[i] }, len(clusters), refs.global, refs.fleet)
	hashHealth(hash, scratch[:], len(clusters), func(i int) clusterHealth {
		c := &clusters[i]
		return clusterHealth{panic: c.Panic, slowStartMs: c.SlowStartMs, endpoints: len(c.Endpoints)}
	}, func(i, j int) (bool, uint64) {
		e := &clusters[i].Endpoints[j]
		return e.Unhealthy, e.RecoveredAtMs
	})
	contentHash := hash.Sum64()

	return encodeRoot(mem, rootSize(shardBytes, clusters)+len(refs.bytes), version, parent, contentHash, shardBytes, clusters, refs)
}

// rootSize is an upper bound of the root buffer's size. Growing the builder
// doubles and copies the whole buffer, which at 100k routes cost more than
// encoding every route. Per shard: length prefix, up to 7 alignment bytes,
// the Shard table and its slot in the shards vector. Per cluster and
// endpoint: vtable, table, vector slot and padded strings.
func rootSize(shardBytes [][]byte, clusters []Cluster) int {
	size := 256
	for _, sh := range shardBytes {
		size += len(sh) + 32
	}
	for i := range clusters {
		c := &clusters[i]
		size += 96 + len(c.Name) + len(c.HashOnName)
		for _, e := range c.Endpoints {
			size += 64 + len(e.Address)
		}
	}
	return size
}

// encodeRoot writes the root FlatBuffer into a buffer of size bytes plus the
// trailer and returns the finished file. The buffer is mem if its capacity
// suffices, else fresh memory; the file ends at mem[size+TrailerSize].
func encodeRoot(mem []byte, size int, version, parent, contentHash uint64, shardBytes [][]byte, clusters []Cluster, refs *policyRefs) []byte {
	// The builder writes back to front into mem[:size]; the trailer goes in
	// the TrailerSize bytes after it, so the file needs no final copy (at
	// 100k routes a second 20 MB buffer cost more than the rest of an
	// incremental build). The capacity limit keeps Reset from handing the
	// trailer bytes to the builder. A used buffer needs no clearing: the
	// builder writes every byte of the file, padding included.
	if n := size + TrailerSize; cap(mem) < n {
		mem = make([]byte, n, fileCap(n))
	}
	mem = mem[:size+TrailerSize]
	b := flatbuffers.NewBuilder(0)
	b.Bytes = mem[:size:size]
	b.Reset()
	var authVec flatbuffers.UOffsetT
	if refs.bytes != nil {
		authVec = b.CreateByteVector(refs.bytes)
	}
	clustersVec := buildClusters(b, clusters, refs.clusters)
	shardOffs := make([]flatbuffers.UOffsetT, len(shardBytes))
	for i, sh := range shardBytes {
		data := b.CreateByteVector(sh)
		snapfb.ShardStart(b)
		snapfb.ShardAddData(b, data)
		shardOffs[i] = snapfb.ShardEnd(b)
	}
	snapfb.SnapshotStartShardsVector(b, len(shardOffs))
	for i := len(shardOffs) - 1; i >= 0; i-- {
		b.PrependUOffsetT(shardOffs[i])
	}
	shardsVec := b.EndVector(len(shardOffs))

	snapfb.SnapshotStart(b)
	snapfb.SnapshotAddVersion(b, version)
	snapfb.SnapshotAddParentVersion(b, parent)
	snapfb.SnapshotAddContentHash(b, contentHash)
	snapfb.SnapshotAddShardCount(b, uint32(len(shardBytes)))
	snapfb.SnapshotAddShards(b, shardsVec)
	snapfb.SnapshotAddClusters(b, clustersVec)
	if authVec != 0 {
		snapfb.SnapshotAddAuth(b, authVec)
	}
	snapfb.SnapshotAddGlobalPolicy(b, refs.global)
	snapfb.SnapshotAddFleetSize(b, refs.fleet)
	root := snapfb.SnapshotEnd(b)
	b.FinishWithFileIdentifier(root, []byte(Identifier))

	fb := b.FinishedBytes()
	var out []byte
	if len(b.Bytes) == size && &b.Bytes[0] == &mem[0] {
		out = mem[b.Head() : size+TrailerSize]
	} else {
		// The estimate fell short and the builder moved to a bigger
		// buffer; correct, only slower.
		out = make([]byte, len(fb)+TrailerSize)
		copy(out, fb)
	}
	binary.LittleEndian.PutUint64(out[len(fb):], xxhash.Sum64(fb))
	return out
}

// fileCap is the capacity of fresh memory for a file of n bytes. The
// headroom is for a Builder's later files in the same memory (Recycle),
// which grow with the config; a file starts after the root size
// estimate's slack, which Recycle gives back with the buffer. Untouched,
// the headroom costs no page faults.
func fileCap(n int) int { return n + n/8 }

// sortedClusters validates the clusters and returns a copy sorted by name.
func sortedClusters(in []Cluster) ([]Cluster, error) {
	cs := slices.Clone(in)
	slices.SortFunc(cs, func(a, b Cluster) int { return strings.Compare(a.Name, b.Name) })
	for i := range cs {
		c := &cs[i]
		if c.Name == "" {
			return nil, fmt.Errorf("%w: cluster #%d: field name: must not be empty", ErrInvalidState, i)
		}
		if i > 0 && cs[i-1].Name == c.Name {
			return nil, fmt.Errorf("%w: cluster %q: field name: duplicate cluster name", ErrInvalidState, c.Name)
		}
		for j, e := range c.Endpoints {
			if e.Address == "" {
				return nil, fmt.Errorf("%w: cluster %q: field endpoints[%d].address: must not be empty", ErrInvalidState, c.Name, j)
			}
			if e.Weight > MaxWeight {
				return nil, fmt.Errorf("%w: cluster %q: field endpoints[%d].weight: %d is above %d", ErrInvalidState, c.Name, j, e.Weight, MaxWeight)
			}
		}
		if reason := checkClusterLB(c.LB, c.HashOn, c.HashOnName); reason != "" {
			return nil, fmt.Errorf("%w: cluster %q: %s", ErrInvalidState, c.Name, reason)
		}
	}
	return cs, nil
}

// checkClusterLB returns why a cluster's balancing fields are inconsistent,
// or "". Build and Open share it.
func checkClusterLB(lb, hashOn uint8, name string) string {
	switch {
	case lb > LBHash:
		return fmt.Sprintf("field lb: unknown policy %d", lb)
	case lb == LBHash && (hashOn == HashOnNone || hashOn > HashOnSourceIP):
		return fmt.Sprintf("field hash_on: policy hash needs a header, cookie or source ip, got %d", hashOn)
	case lb != LBHash && hashOn != HashOnNone:
		return "field hash_on: only allowed with policy hash"
	case (hashOn == HashOnHeader || hashOn == HashOnCookie) != (name != ""):
		return "field hash_on_name: required for header and cookie hashing, and only for them"
	}
	return ""
}

// prepareRoutes validates the routes and returns them ordered by shard, key
// and match order.
func prepareRoutes(in []Route, clusters map[string]int, refs *policyRefs, shards uint32) ([]preparedRoute, error) {
	out := make([]preparedRoute, len(in))
	ids := make(map[string]struct{}, len(in))
	for i := range in {
		r := &in[i]
		ci, err := checkRoute(r, clusters)
		if err != nil {
			return nil, err
		}
		if _, dup := ids[r.ID]; dup {
			return nil, fmt.Errorf("%w: route %q: field id: duplicate route id", ErrInvalidState, r.ID)
		}
		ids[r.ID] = struct{}{}
		pi, err := refs.routeRef(r)
		if err != nil {
			return nil, err
		}
		out[i] = prepareRoute(r, ci, pi, shards)
	}
	if err := orderRoutes(out); err != nil {
		return nil, err
	}
	return out, nil
}

// prepareRoute computes a validated route's key, shard and canonical lists.
func prepareRoute(r *Route, ci int, policy uint32, shards uint32) preparedRoute {
	key := routeKey(r)
	p := preparedRoute{
		r:            r,
		key:          key,
		shard:        uint32(routeHashString(key) % uint64(shards)),
		clusterIndex: uint32(ci),
		policy:       policy,
		methods:      sortedUnique(r.Methods),
		headers:      slices.Clone(r.Headers),
		statuses:     sortedUnique(r.RetryStatuses),
	}
	slices.SortFunc(p.headers, compareHeaderMatch)
	return p
}

// sortedUnique returns a sorted copy of s without duplicates, or nil for an
// empty s: slices.Sorted allocates even for no elements, and most routes
// have no methods and no retry statuses.
func sortedUnique[T interface{ ~string | ~uint16 }](s []T) []T {
	if len(s) == 0 {
		return nil
	}
	return slices.Compact(slices.Sorted(slices.Values(s)))
}

// orderRoutes sorts prepared routes by shard, key and match order and rejects
// two routes of one key with the same conditions. Keys never span shards, so
// the check holds per shard, which Builder relies on.
func orderRoutes(out []preparedRoute) error {
	slices.SortFunc(out, func(a, b preparedRoute) int {
		if a.shard != b.shard {
			if a.shard < b.shard {
				return -1
			}
			return 1
		}
		if c := strings.Compare(a.key, b.key); c != 0 {
			return c
		}
		return compareMatchOrder(a.r, b.r)
	})
	// Two routes with the same key and the same conditions can never both
	// be reachable; whichever wins would depend on priority alone, which
	// is more likely a copy-paste mistake than intent.
	for i := 1; i < len(out); i++ {
		for j := i - 1; j >= 0 && out[j].key == out[i].key; j-- {
			a, b := &out[j], &out[i]
			if slices.Equal(a.methods, b.methods) && slices.Equal(a.headers, b.headers) {
				return fmt.Errorf("%w: route %q: fields host+prefix+methods+headers: host %q prefix %q (exact %v) with the same conditions already used by route %q",
					ErrInvalidState, b.r.ID, b.r.Host, b.r.Prefix, b.r.Exact, a.r.ID)
			}
		}
	}
	return nil
}

func compareHeaderMatch(a, b HeaderMatch) int {
	if c := strings.Compare(a.Name, b.Name); c != 0 {
		return c
	}
	if a.Present != b.Present {
		if a.Present {
			return -1
		}
		return 1
	}
	return strings.Compare(a.Value, b.Value)
}

// clusterPositions maps each name of the sorted clusters to its index, so
// that checking 100k routes costs a map probe each instead of a binary
// search of string compares. It reuses m when non-nil.
func clusterPositions(clusters []Cluster, m map[string]int) map[string]int {
	if m == nil {
		m = make(map[string]int, len(clusters))
	}
	clear(m)
	for i := range clusters {
		m[clusters[i].Name] = i
	}
	return m
}

// checkRoute validates r and returns the index of its cluster in the sorted
// clusters, given as clusterPositions.
func checkRoute(r *Route, clusters map[string]int) (int, error) {
	id := r.ID
	switch {
	case id == "":
		return 0, fmt.Errorf("%w: route with host %q prefix %q: field id: must not be empty", ErrInvalidState, r.Host, r.Prefix)
	case r.Host == "":
		return 0, fmt.Errorf("%w: route %q: field host: must not be empty", ErrInvalidState, id)
	case r.Prefix == "":
		return 0, fmt.Errorf("%w: route %q: field prefix: must not be empty", ErrInvalidState, id)
	case r.Cluster == "":
		return 0, fmt.Errorf("%w: route %q: field cluster: must not be empty", ErrInvalidState, id)
	}
	if err := checkHost(r.Host); err != "" {
		return 0, fmt.Errorf("%w: route %q: field host: %q %s", ErrInvalidState, id, r.Host, err)
	}
	if r.Prefix[0] != '/' {
		return 0, fmt.Errorf("%w: route %q: field prefix: %q must start with \"/\"", ErrInvalidState, id, r.Prefix)
	}
	if r.RewritePrefix != "" && r.RewritePrefix[0] != '/' {
		return 0, fmt.Errorf("%w: route %q: field rewrite_prefix: %q must start with \"/\"", ErrInvalidState, id, r.RewritePrefix)
	}
	if r.RetryAttempts > MaxRetryAttempts {
		return 0, fmt.Errorf("%w: route %q: field retry.attempts: %d is above %d", ErrInvalidState, id, r.RetryAttempts, MaxRetryAttempts)
	}
	if r.RetryOn&^(RetryOnConnectFailure|RetryOnReset) != 0 {
		return 0, fmt.Errorf("%w: route %q: field retry.on: unknown condition bits %#x", ErrInvalidState, id, r.RetryOn)
	}
	for _, st := range r.RetryStatuses {
		if st < 100 || st > 599 {
			return 0, fmt.Errorf("%w: route %q: field retry.on: status %d is outside 100..599", ErrInvalidState, id, st)
		}
	}
	for i, m := range r.Methods {
		if m == "" || strings.IndexByte(m, 0) >= 0 {
			return 0, fmt.Errorf("%w: route %q: field methods[%d]: must be a non-empty token", ErrInvalidState, id, i)
		}
	}
	for i, h := range r.Headers {
		switch {
		case h.Name == "" || strings.ToLower(h.Name) != h.Name:
			return 0, fmt.Errorf("%w: route %q: field headers[%d].name: %q must be a non-empty lowercase name", ErrInvalidState, id, i, h.Name)
		case h.Present == (h.Value != ""):
			return 0, fmt.Errorf("%w: route %q: field headers[%d]: exactly one of value and present must be set", ErrInvalidState, id, i)
		}
	}
	ci, ok := clusters[r.Cluster]
	if !ok {
		return 0, fmt.Errorf("%w: route %q: field cluster: cluster %q does not exist", ErrInvalidState, id, r.Cluster)
	}
	return ci, nil
}

// checkHost reports why host can never equal a request host as the edge
// presents it to Match (lowercased, no port), or "" if it is usable. The 0x00
// byte is also the key separator, so it must not occur in a host. A '*' may
// only stand alone or start a "*." wildcard.
func checkHost(host string) string {
	if host == WildcardHost {
		return ""
	}
	if rest, ok := strings.CutPrefix(host, "*."); ok {
		if rest == "" {
			return "needs a domain after \"*.\""
		}
		host = rest
	}
	for i := 0; i < len(host); i++ {
		switch c := host[i]; {
		case c == 0:
			return "contains a 0x00 byte"
		case 'A' <= c && c <= 'Z':
			return "must be lowercase"
		case c == ':' && !strings.HasPrefix(host, "["):
			return "must not carry a port"
		case c == '*':
			return "may only be \"*\" as a whole or a leading \"*.\""
		}
	}
	return ""
}

// shardBuilder reuses its builder and scratch slices across shards.
type shardBuilder struct {
	b      *flatbuffers.Builder
	offs   []flatbuffers.UOffsetT
	strs   []flatbuffers.UOffsetT
	keys   []flatbuffers.UOffsetT // key string offset of each route
	index  []uint32
	filter []uint64
}

func (sb *shardBuilder) build(routes []preparedRoute) []byte {
	b := sb.b
	b.Reset()
	sb.offs = sb.offs[:0]
	sb.keys = sb.keys[:0]
	for i := range routes {
		p := &routes[i]
		r := p.r
		var key flatbuffers.UOffsetT
		if i > 0 && routes[i-1].key == p.key {
			key = sb.keys[i-1] // one string per key: the index points at it
		} else {
			key = b.CreateString(p.key)
		}
		sb.keys = append(sb.keys, key)
		id := b.CreateString(r.ID)
		host := b.CreateSharedString(r.Host)
		prefix := b.CreateString(r.Prefix)
		cluster := b.CreateSharedString(r.Cluster)
		var methods, headers, rewrite, statuses flatbuffers.UOffsetT
		if len(p.methods) > 0 {
			sb.strs = sb.strs[:0]
			for _, m := range p.methods {
				sb.strs = append(sb.strs, b.CreateSharedString(m))
			}
			methods = sb.vector(snapfb.RouteStartMethodsVector(b, len(sb.strs)), sb.strs)
		}
		if len(p.headers) > 0 {
			sb.strs = sb.strs[:0]
			for _, h := range p.headers {
				name := b.CreateSharedString(h.Name)
				var value flatbuffers.UOffsetT
				if !h.Present {
					value = b.CreateString(h.Value)
				}
				snapfb.HeaderMatchStart(b)
				snapfb.HeaderMatchAddName(b, name)
				if !h.Present {
					snapfb.HeaderMatchAddValue(b, value)
				}
				snapfb.HeaderMatchAddPresent(b, h.Present)
				sb.strs = append(sb.strs, snapfb.HeaderMatchEnd(b))
			}
			headers = sb.vector(snapfb.RouteStartHeadersVector(b, len(sb.strs)), sb.strs)
		}
		if r.RewritePrefix != "" {
			rewrite = b.CreateString(r.RewritePrefix)
		}
		if len(p.statuses) > 0 {
			snapfb.RouteStartRetryStatusesVector(b, len(p.statuses))
			for j := len(p.statuses) - 1; j >= 0; j-- {
				b.PrependUint16(p.statuses[j])
			}
			statuses = b.EndVector(len(p.statuses))
		}
		snapfb.RouteStart(b)
		snapfb.RouteAddKey(b, key)
		snapfb.RouteAddId(b, id)
		snapfb.RouteAddHost(b, host)
		snapfb.RouteAddPrefix(b, prefix)
		snapfb.RouteAddCluster(b, cluster)
		snapfb.RouteAddTimeoutMs(b, r.TimeoutMs)
		snapfb.RouteAddExact(b, r.Exact)
		if methods != 0 {
			snapfb.RouteAddMethods(b, methods)
		}
		if headers != 0 {
			snapfb.RouteAddHeaders(b, headers)
		}
		snapfb.RouteAddPriority(b, r.Priority)
		if rewrite != 0 {
			snapfb.RouteAddRewritePrefix(b, rewrite)
		}
		snapfb.RouteAddRetryAttempts(b, r.RetryAttempts)
		snapfb.RouteAddRetryOn(b, r.RetryOn)
		if statuses != 0 {
			snapfb.RouteAddRetryStatuses(b, statuses)
		}
		snapfb.RouteAddClusterIndex(b, p.clusterIndex)
		snapfb.RouteAddMaxStalenessMs(b, r.MaxStalenessMs)
		if r.OnStaleReject {
			snapfb.RouteAddOnStale(b, onStaleReject)
		}
		snapfb.RouteAddStaleHeader(b, r.StaleHeader)
		snapfb.RouteAddPolicy(b, p.policy)
		sb.offs = append(sb.offs, snapfb.RouteEnd(b))
	}
	vec := sb.vector(snapfb.RouteShardStartRoutesVector(b, len(sb.offs)), sb.offs)
	idx := sb.buildIndex(routes)
	snapfb.RouteShardStartIndexVector(b, len(idx))
	for j := len(idx) - 1; j >= 0; j-- {
		b.PrependUint32(idx[j])
	}
	idxVec := b.EndVector(len(idx))
	filter := sb.buildFilter(routes)
	snapfb.RouteShardStartFilterVector(b, len(filter))
	for j := len(filter) - 1; j >= 0; j-- {
		b.PrependUint64(filter[j])
	}
	filterVec := b.EndVector(len(filter))
	snapfb.RouteShardStart(b)
	snapfb.RouteShardAddRoutes(b, vec)
	snapfb.RouteShardAddIndex(b, idxVec)
	snapfb.RouteShardAddFilter(b, filterVec)
	b.Finish(snapfb.RouteShardEnd(b))
	return bytes.Clone(b.FinishedBytes())
}

func (sb *shardBuilder) vector(_ flatbuffers.UOffsetT, offs []flatbuffers.UOffsetT) flatbuffers.UOffsetT {
	for j := len(offs) - 1; j >= 0; j-- {
		sb.b.PrependUOffsetT(offs[j])
	}
	return sb.b.EndVector(len(offs))
}

// buildIndex fills the shard's open-addressing table (see snapshot.fbs
// RouteShard.index). A key string's builder offset is its distance from the
// end of the buffer, which is also its distance from the end of the finished
// shard bytes, so the index can name it before the buffer is finished.
func (sb *shardBuilder) buildIndex(routes []preparedRoute) []uint32 {
	keys := 0
	for i := range routes {
		if i == 0 || routes[i-1].key != routes[i].key {
			keys++
		}
	}
	slots := indexSlots(keys)
	sb.index = slices.Grow(sb.index[:0], slots*slotWords)[:slots*slotWords]
	clear(sb.index)
	mask := uint32(slots - 1)
	for i := 0; i < len(routes); {
		j := i + 1
		for j < len(routes) && routes[j].key == routes[i].key {
			j++
		}
		fp, pos := slotOf(routeHashString(routes[i].key))
		for pos &= mask; sb.index[pos*slotWords] != 0; pos = (pos + 1) & mask {
		}
		e := sb.index[pos*slotWords : pos*slotWords+slotWords]
		e[0], e[1], e[2], e[3] = fp, uint32(sb.keys[i]), uint32(i), uint32(j-i)
		i = j
	}
	return sb.index
}

// buildFilter fills the shard's bloom filter (see snapshot.fbs
// RouteShard.filter) with its distinct keys.
func (sb *shardBuilder) buildFilter(routes []preparedRoute) []uint64 {
	keys := 0
	for i := range routes {
		if i == 0 || routes[i-1].key != routes[i].key {
			keys++
		}
	}
	words := filterWords(keys)
	sb.filter = slices.Grow(sb.filter[:0], words)[:words]
	clear(sb.filter)
	mask := uint32(words - 1)
	for i := range routes {
		if i == 0 || routes[i-1].key != routes[i].key {
			w, bits := filterOf(routeHashString(routes[i].key))
			sb.filter[w&mask] |= bits
		}
	}
	return sb.filter
}

func buildClusters(b *flatbuffers.Builder, clusters []Cluster, policies []uint32) flatbuffers.UOffsetT {
	offs := make([]flatbuffers.UOffsetT, len(clusters))
	var eps []flatbuffers.UOffsetT
	for i := range clusters {
		c := &clusters[i]
		eps = eps[:0]
		for _, e := range c.Endpoints {
			addr := b.CreateString(e.Address)
			snapfb.EndpointStart(b)
			snapfb.EndpointAddAddress(b, addr)
			snapfb.EndpointAddWeight(b, e.Weight)
			// Zero health values are not written (FlatBuffers defaults), so
			// a snapshot without health keeps its bytes.
			snapfb.EndpointAddUnhealthy(b, e.Unhealthy)
			snapfb.EndpointAddRecoveredAtMs(b, e.RecoveredAtMs)
			eps = append(eps, snapfb.EndpointEnd(b))
		}
		snapfb.ClusterStartEndpointsVector(b, len(eps))
		for j := len(eps) - 1; j >= 0; j-- {
			b.PrependUOffsetT(eps[j])
		}
		epVec := b.EndVector(len(eps))
		name := b.CreateString(c.Name)
		var hashName flatbuffers.UOffsetT
		if c.HashOnName != "" {
			hashName = b.CreateString(c.HashOnName)
		}
		snapfb.ClusterStart(b)
		snapfb.ClusterAddName(b, name)
		snapfb.ClusterAddEndpoints(b, epVec)
		snapfb.ClusterAddConnectTimeoutMs(b, c.ConnectTimeoutMs)
		snapfb.ClusterAddLb(b, c.LB)
		snapfb.ClusterAddHashOn(b, c.HashOn)
		if hashName != 0 {
			snapfb.ClusterAddHashOnName(b, hashName)
		}
		snapfb.ClusterAddPolicy(b, policies[i])
		snapfb.ClusterAddPanic(b, c.Panic)
		snapfb.ClusterAddSlowStartMs(b, c.SlowStartMs)
		offs[i] = snapfb.ClusterEnd(b)
	}
	snapfb.SnapshotStartClustersVector(b, len(offs))
	for i := len(offs) - 1; i >= 0; i-- {
		b.PrependUOffsetT(offs[i])
	}
	return b.EndVector(len(offs))
}

// clusterHasher receives the canonical cluster encoding that ends the content
// hash input. It is a byte-level encoding of the values, not of FlatBuffers
// layout, so the hash does not depend on where the builder placed the tables.
type clusterHasher interface{ Write([]byte) (int, error) }

func hashU32(h clusterHasher, scratch []byte, v uint32) {
	binary.LittleEndian.PutUint32(scratch, v)
	h.Write(scratch[:4])
}

func hashBytes(h clusterHasher, scratch []byte, p []byte) {
	hashU32(h, scratch, uint32(len(p)))
	h.Write(p)
}

// hashString is hashBytes for a string, without converting it: the
// conversion escapes through the interface and would allocate per field.
func hashString(h *xxhash.Digest, scratch []byte, s string) {
	hashU32(h, scratch, uint32(len(s)))
	h.WriteString(s)
}

// hashClusters writes: count, then per cluster: name, connect timeout,
// lb, hash_on, hash_on_name, endpoint count, endpoint addresses and
// weights; integers u32 LE, byte strings length-prefixed.
func hashClusters(h *xxhash.Digest, clusters []Cluster, scratch []byte) {
	hashU32(h, scratch, uint32(len(clusters)))
	for i := range clusters {
		c := &clusters[i]
		hashString(h, scratch, c.Name)
		hashU32(h, scratch, c.ConnectTimeoutMs)
		hashU32(h, scratch, uint32(c.LB))
		hashU32(h, scratch, uint32(c.HashOn))
		hashString(h, scratch, c.HashOnName)
		hashU32(h, scratch, uint32(len(c.Endpoints)))
		for _, e := range c.Endpoints {
			hashString(h, scratch, e.Address)
			hashU32(h, scratch, uint32(e.Weight))
		}
	}
}

// clusterHealth is the part of a cluster hashHealth reads besides its
// endpoints' fields.
type clusterHealth struct {
	panic       bool
	slowStartMs uint32
	endpoints   int
}

// hashHealth extends the content hash with the health fields, only when
// any is set, so a snapshot without health keeps the hash it had before
// the fields existed. It writes, per cluster: panic, slow_start_ms, then
// per endpoint: unhealthy, recovered_at_ms (low and high u32); booleans
// as u32 0 or 1. Build and Open share it through the accessors.
func hashHealth(h clusterHasher, scratch []byte, nClusters int, cluster func(i int) clusterHealth, endpoint func(i, j int) (unhealthy bool, recoveredAtMs uint64)) {
	any := false
	for i := 0; i < nClusters && !any; i++ {
		c := cluster(i)
		any = c.panic || c.slowStartMs != 0
		for j := 0; j < c.endpoints && !any; j++ {
			down, at := endpoint(i, j)
			any = down || at != 0
		}
	}
	if !any {
		return
	}
	for i := range nClusters {
		c := cluster(i)
		hashU32(h, scratch, uint32(boolByte(c.panic)))
		hashU32(h, scratch, c.slowStartMs)
		for j := range c.endpoints {
			down, at := endpoint(i, j)
			hashU32(h, scratch, uint32(boolByte(down)))
			hashU32(h, scratch, uint32(at))
			hashU32(h, scratch, uint32(at>>32))
		}
	}
}
