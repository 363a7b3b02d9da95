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
}

// Cluster is a named group of backends.
type Cluster struct {
	Name             string
	Endpoints        []Endpoint
	ConnectTimeoutMs uint32 // 0 = edge default
}

// Route sends requests for Host whose path is under Prefix to Cluster.
type Route struct {
	ID        string
	Host      string // lowercase, no port; "*" = any host
	Prefix    string // segment-aware path prefix, starts with "/"
	Cluster   string // name of an existing Cluster
	TimeoutMs uint32 // 0 = edge default
}

// State is everything one snapshot holds. Input order of Routes and Clusters
// does not affect the output bytes.
type State struct {
	Version, ParentVersion uint64
	Routes                 []Route
	Clusters               []Cluster
	// Shards is the number of route shards; 0 picks DefaultShards(len(Routes)).
	Shards int
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

func routeHashString(host, prefix string) uint64 {
	const offset64, prime64 = 14695981039346656037, 1099511628211
	h := uint64(offset64)
	for i := 0; i < len(host); i++ {
		h ^= uint64(host[i])
		h *= prime64
	}
	h *= prime64
	for i := 0; i < len(prefix); i++ {
		h ^= uint64(prefix[i])
		h *= prime64
	}
	return h
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
	r     *Route
	key   string
	shard uint32
}

// Build encodes s as a snapshot file (FlatBuffer plus trailer). It is
// deterministic: the same State yields the same bytes whatever the order of
// s.Routes and s.Clusters.
func Build(s State) ([]byte, error) {
	shards := s.Shards
	switch {
	case shards < 0 || shards > MaxShards:
		return nil, fmt.Errorf("%w: field Shards: %d is outside 0..%d", ErrInvalidState, shards, MaxShards)
	case shards == 0:
		shards = DefaultShards(len(s.Routes))
	}

	clusters, err := sortedClusters(s.Clusters)
	if err != nil {
		return nil, err
	}
	routes, err := prepareRoutes(s.Routes, clusters, uint32(shards))
	if err != nil {
		return nil, err
	}

	// Each shard is an independent FlatBuffer so that its bytes depend only on
	// its own routes. One builder is reset and reused across shards.
	shardBytes := make([][]byte, shards)
	sb := flatbuffers.NewBuilder(4096)
	offs := make([]flatbuffers.UOffsetT, 0, 64)
	start := 0
	for i := range shards {
		end := start
		for end < len(routes) && routes[end].shard == uint32(i) {
			end++
		}
		shardBytes[i] = buildShard(sb, routes[start:end], offs)
		start = end
	}

	hash := xxhash.New()
	for _, sh := range shardBytes {
		hash.Write(sh)
	}
	var scratch [4]byte
	hashClusters(hash, clusters, scratch[:])
	contentHash := hash.Sum64()

	// Sized up front: growing the builder doubles and copies the whole buffer.
	size := 256
	for _, sh := range shardBytes {
		size += len(sh) + 16
	}
	for i := range clusters {
		size += 32 + len(clusters[i].Name)
		for _, e := range clusters[i].Endpoints {
			size += 16 + len(e.Address)
		}
	}
	b := flatbuffers.NewBuilder(size)
	clustersVec := buildClusters(b, clusters)
	shardOffs := make([]flatbuffers.UOffsetT, shards)
	for i, sh := range shardBytes {
		data := b.CreateByteVector(sh)
		snapfb.ShardStart(b)
		snapfb.ShardAddData(b, data)
		shardOffs[i] = snapfb.ShardEnd(b)
	}
	snapfb.SnapshotStartShardsVector(b, shards)
	for i := shards - 1; i >= 0; i-- {
		b.PrependUOffsetT(shardOffs[i])
	}
	shardsVec := b.EndVector(shards)

	snapfb.SnapshotStart(b)
	snapfb.SnapshotAddVersion(b, s.Version)
	snapfb.SnapshotAddParentVersion(b, s.ParentVersion)
	snapfb.SnapshotAddContentHash(b, contentHash)
	snapfb.SnapshotAddShardCount(b, uint32(shards))
	snapfb.SnapshotAddShards(b, shardsVec)
	snapfb.SnapshotAddClusters(b, clustersVec)
	root := snapfb.SnapshotEnd(b)
	b.FinishWithFileIdentifier(root, []byte(Identifier))

	fb := b.FinishedBytes()
	out := make([]byte, len(fb)+TrailerSize)
	copy(out, fb)
	binary.LittleEndian.PutUint64(out[len(fb):], xxhash.Sum64(fb))
	return out, nil
}

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
		}
	}
	return cs, nil
}

// prepareRoutes validates the routes and returns them ordered by shard, then
// key.
func prepareRoutes(in []Route, clusters []Cluster, shards uint32) ([]preparedRoute, error) {
	out := make([]preparedRoute, len(in))
	ids := make(map[string]struct{}, len(in))
	for i := range in {
		r := &in[i]
		if err := checkRoute(r, clusters); err != nil {
			return nil, err
		}
		if _, dup := ids[r.ID]; dup {
			return nil, fmt.Errorf("%w: route %q: field id: duplicate route id", ErrInvalidState, r.ID)
		}
		ids[r.ID] = struct{}{}
		out[i] = preparedRoute{
			r:     r,
			key:   r.Host + "\x00" + r.Prefix,
			shard: uint32(routeHashString(r.Host, r.Prefix) % uint64(shards)),
		}
	}
	slices.SortFunc(out, func(a, b preparedRoute) int {
		if a.shard != b.shard {
			if a.shard < b.shard {
				return -1
			}
			return 1
		}
		return strings.Compare(a.key, b.key)
	})
	for i := 1; i < len(out); i++ {
		if out[i].key == out[i-1].key {
			a, b := out[i-1].r, out[i].r
			return nil, fmt.Errorf("%w: route %q: fields host+prefix: host %q prefix %q already used by route %q",
				ErrInvalidState, b.ID, b.Host, b.Prefix, a.ID)
		}
	}
	return out, nil
}

func checkRoute(r *Route, clusters []Cluster) error {
	id := r.ID
	switch {
	case id == "":
		return fmt.Errorf("%w: route with host %q prefix %q: field id: must not be empty", ErrInvalidState, r.Host, r.Prefix)
	case r.Host == "":
		return fmt.Errorf("%w: route %q: field host: must not be empty", ErrInvalidState, id)
	case r.Prefix == "":
		return fmt.Errorf("%w: route %q: field prefix: must not be empty", ErrInvalidState, id)
	case r.Cluster == "":
		return fmt.Errorf("%w: route %q: field cluster: must not be empty", ErrInvalidState, id)
	}
	if err := checkHost(r.Host); err != "" {
		return fmt.Errorf("%w: route %q: field host: %q %s", ErrInvalidState, id, r.Host, err)
	}
	if r.Prefix[0] != '/' {
		return fmt.Errorf("%w: route %q: field prefix: %q must start with \"/\"", ErrInvalidState, id, r.Prefix)
	}
	if _, ok := slices.BinarySearchFunc(clusters, r.Cluster, func(c Cluster, name string) int {
		return strings.Compare(c.Name, name)
	}); !ok {
		return fmt.Errorf("%w: route %q: field cluster: cluster %q does not exist", ErrInvalidState, id, r.Cluster)
	}
	return nil
}

// checkHost reports why host can never equal a request host as the edge
// presents it to Match (lowercased, no port), or "" if it is usable. The 0x00
// byte is also the key separator, so it must not occur in a host.
func checkHost(host string) string {
	if host == WildcardHost {
		return ""
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
			return "may only be \"*\" as a whole"
		}
	}
	return ""
}

func buildShard(b *flatbuffers.Builder, routes []preparedRoute, offs []flatbuffers.UOffsetT) []byte {
	b.Reset()
	offs = offs[:0]
	for _, p := range routes {
		r := p.r
		key := b.CreateString(p.key)
		id := b.CreateString(r.ID)
		host := b.CreateSharedString(r.Host)
		prefix := b.CreateString(r.Prefix)
		cluster := b.CreateSharedString(r.Cluster)
		snapfb.RouteStart(b)
		snapfb.RouteAddKey(b, key)
		snapfb.RouteAddId(b, id)
		snapfb.RouteAddHost(b, host)
		snapfb.RouteAddPrefix(b, prefix)
		snapfb.RouteAddCluster(b, cluster)
		snapfb.RouteAddTimeoutMs(b, r.TimeoutMs)
		offs = append(offs, snapfb.RouteEnd(b))
	}
	snapfb.RouteShardStartRoutesVector(b, len(offs))
	for i := len(offs) - 1; i >= 0; i-- {
		b.PrependUOffsetT(offs[i])
	}
	vec := b.EndVector(len(offs))
	snapfb.RouteShardStart(b)
	snapfb.RouteShardAddRoutes(b, vec)
	b.Finish(snapfb.RouteShardEnd(b))
	return bytes.Clone(b.FinishedBytes())
}

func buildClusters(b *flatbuffers.Builder, clusters []Cluster) flatbuffers.UOffsetT {
	offs := make([]flatbuffers.UOffsetT, len(clusters))
	var eps []flatbuffers.UOffsetT
	for i := range clusters {
		c := &clusters[i]
		eps = eps[:0]
		for _, e := range c.Endpoints {
			addr := b.CreateString(e.Address)
			snapfb.EndpointStart(b)
			snapfb.EndpointAddAddress(b, addr)
			eps = append(eps, snapfb.EndpointEnd(b))
		}
		snapfb.ClusterStartEndpointsVector(b, len(eps))
		for j := len(eps) - 1; j >= 0; j-- {
			b.PrependUOffsetT(eps[j])
		}
		epVec := b.EndVector(len(eps))
		name := b.CreateString(c.Name)
		snapfb.ClusterStart(b)
		snapfb.ClusterAddName(b, name)
		snapfb.ClusterAddEndpoints(b, epVec)
		snapfb.ClusterAddConnectTimeoutMs(b, c.ConnectTimeoutMs)
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

// hashClusters writes: count, then per cluster: name, connect timeout,
// endpoint count, endpoint addresses; integers u32 LE, byte strings
// length-prefixed.
func hashClusters(h clusterHasher, clusters []Cluster, scratch []byte) {
	hashU32(h, scratch, uint32(len(clusters)))
	for i := range clusters {
		c := &clusters[i]
		hashBytes(h, scratch, []byte(c.Name))
		hashU32(h, scratch, c.ConnectTimeoutMs)
		hashU32(h, scratch, uint32(len(c.Endpoints)))
		for _, e := range c.Endpoints {
			hashBytes(h, scratch, []byte(e.Address))
		}
	}
}
