package fbs

import (
	"bytes"
	"encoding/binary"
	"errors"
	"strings"
	"testing"

	"github.com/cespare/xxhash/v2"
	flatbuffers "github.com/google/flatbuffers/go"

	"github.com/snapgate/snapgate/fbs/snapfb"
)

// rawRoute is a route as stored, with its key given explicitly so tests can
// store inconsistent ones.
type rawRoute struct{ key, id, host, prefix, cluster string }

// rawSnapshot builds a snapshot without Build's validation: the given routes
// in the given shards and order, clusters in the given order. shardCount and
// contentHash override the stored values when non-nil. The content hash is
// otherwise computed the way Build does, and the trailer is always valid, so
// Open must find the problem in the structure.
type rawSnapshot struct {
	shards      [][]rawRoute
	clusters    []Cluster
	shardCount  *uint32
	contentHash *uint64
}

func (rs rawSnapshot) bytes() []byte {
	sb := flatbuffers.NewBuilder(256)
	shardBytes := make([][]byte, len(rs.shards))
	for i, routes := range rs.shards {
		sb.Reset()
		var offs, keys []flatbuffers.UOffsetT
		for _, r := range routes {
			key, id, host := sb.CreateString(r.key), sb.CreateString(r.id), sb.CreateString(r.host)
			keys = append(keys, key)
			ci := 0
			for k, c := range rs.clusters {
				if c.Name == r.cluster {
					ci = k
				}
			}
			prefix, cluster := sb.CreateString(r.prefix), sb.CreateString(r.cluster)
			snapfb.RouteStart(sb)
			snapfb.RouteAddKey(sb, key)
			snapfb.RouteAddId(sb, id)
			snapfb.RouteAddHost(sb, host)
			snapfb.RouteAddPrefix(sb, prefix)
			snapfb.RouteAddCluster(sb, cluster)
			snapfb.RouteAddClusterIndex(sb, uint32(ci))
			offs = append(offs, snapfb.RouteEnd(sb))
		}
		snapfb.RouteShardStartRoutesVector(sb, len(offs))
		for j := len(offs) - 1; j >= 0; j-- {
			sb.PrependUOffsetT(offs[j])
		}
		vec := sb.EndVector(len(offs))
		// The index as Build lays it out, one slot per route (raw routes
		// have distinct keys).
		slots := indexSlots(len(routes))
		idx := make([]uint32, slots*slotWords)
		for j, r := range routes {
			fp, pos := slotOf(routeHashString(r.key))
			for pos &= uint32(slots - 1); idx[pos*slotWords] != 0; pos = (pos + 1) & uint32(slots-1) {
			}
			copy(idx[pos*slotWords:], []uint32{fp, uint32(keys[j]), uint32(j), 1})
		}
		snapfb.RouteShardStartIndexVector(sb, len(idx))
		for j := len(idx) - 1; j >= 0; j-- {
			sb.PrependUint32(idx[j])
		}
		idxVec := sb.EndVector(len(idx))
		snapfb.RouteShardStart(sb)
		snapfb.RouteShardAddRoutes(sb, vec)
		snapfb.RouteShardAddIndex(sb, idxVec)
		sb.Finish(snapfb.RouteShardEnd(sb))
		shardBytes[i] = bytes.Clone(sb.FinishedBytes())
	}
	h := xxhash.New()
	for _, s := range shardBytes {
		h.Write(s)
	}
	var scratch [4]byte
	hashClusters(h, rs.clusters, scratch[:])
	contentHash := h.Sum64()
	if rs.contentHash != nil {
		contentHash = *rs.contentHash
	}
	shardCount := uint32(len(rs.shards))
	if rs.shardCount != nil {
		shardCount = *rs.shardCount
	}

	b := flatbuffers.NewBuilder(1024)
	clusters := buildClusters(b, rs.clusters, make([]uint32, len(rs.clusters)))
	offs := make([]flatbuffers.UOffsetT, len(shardBytes))
	for i, s := range shardBytes {
		d := b.CreateByteVector(s)
		snapfb.ShardStart(b)
		snapfb.ShardAddData(b, d)
		offs[i] = snapfb.ShardEnd(b)
	}
	snapfb.SnapshotStartShardsVector(b, len(offs))
	for i := len(offs) - 1; i >= 0; i-- {
		b.PrependUOffsetT(offs[i])
	}
	shards := b.EndVector(len(offs))
	snapfb.SnapshotStart(b)
	snapfb.SnapshotAddVersion(b, 2)
	snapfb.SnapshotAddContentHash(b, contentHash)
	snapfb.SnapshotAddShardCount(b, shardCount)
	snapfb.SnapshotAddShards(b, shards)
	snapfb.SnapshotAddClusters(b, clusters)
	b.FinishWithFileIdentifier(snapfb.SnapshotEnd(b), []byte(Identifier))
	return fixTrailer(append(bytes.Clone(b.FinishedBytes()), make([]byte, TrailerSize)...))
}

func route(host, prefix, cluster string) rawRoute {
	return rawRoute{key: host + "\x00" + prefix, id: "id-" + host + prefix, host: host, prefix: prefix, cluster: cluster}
}

// twoShards returns a valid 2-shard layout of routes for hosts "a".."f".
func twoShards() [][]rawRoute {
	shards := make([][]rawRoute, 2)
	for _, h := range []string{"a", "b", "c", "d", "e", "f"} {
		r := route(h, "/", "c1")
		i := RouteHash([]byte(r.host), []byte(r.prefix)) % 2
		shards[i] = append(shards[i], r)
	}
	return shards
}

func u32(v uint32) *uint32 { return &v }
func u64(v uint64) *uint64 { return &v }

func TestOpenRejectsStructure(t *testing.T) {
	clusters := []Cluster{{Name: "c1", Endpoints: []Endpoint{{Address: "127.0.0.1:1"}}}, {Name: "c2"}}
	valid := rawSnapshot{shards: twoShards(), clusters: clusters}
	if _, err := Open(valid.bytes()); err != nil {
		t.Fatalf("the valid raw snapshot is rejected: %v", err)
	}
	if len(valid.shards[0]) < 2 || len(valid.shards[1]) < 2 {
		t.Fatalf("test layout needs two routes per shard: %d/%d", len(valid.shards[0]), len(valid.shards[1]))
	}
	mod := func(f func(*rawSnapshot)) rawSnapshot {
		rs := rawSnapshot{shards: twoShards(), clusters: append([]Cluster(nil), clusters...)}
		f(&rs)
		return rs
	}
	cases := []struct {
		name string
		rs   rawSnapshot
		want string
	}{
		{"zero shards", rawSnapshot{clusters: clusters}, "shard_count is 0"},
		{"shard count mismatch", mod(func(rs *rawSnapshot) { rs.shardCount = u32(3) }), "shard_count 3 but 2 shards"},
		{"unsorted routes", mod(func(rs *rawSnapshot) {
			s := rs.shards[1]
			s[0], s[1] = s[1], s[0]
		}), "shard 1 route 1"},
		{"duplicate route", mod(func(rs *rawSnapshot) { rs.shards[0][1] = rs.shards[0][0] }), "out of match order"},
		{"key mismatch", mod(func(rs *rawSnapshot) { rs.shards[0][0].key = rs.shards[0][0].host + "/" }), `key is not host`},
		{"wrong shard", mod(func(rs *rawSnapshot) {
			rs.shards[0], rs.shards[1] = rs.shards[1], rs.shards[0]
		}), "belongs in shard"},
		{"missing cluster", mod(func(rs *rawSnapshot) { rs.shards[1][0].cluster = "c9" }), `cluster "c9" is not cluster`},
		{"empty id", mod(func(rs *rawSnapshot) { rs.shards[1][0].id = "" }), "empty id"},
		{"empty host", mod(func(rs *rawSnapshot) {
			r := &rs.shards[1][0]
			r.host, r.key = "", "\x00"+r.prefix
		}), "empty host"},
		{"relative prefix", mod(func(rs *rawSnapshot) {
			r := &rs.shards[1][0]
			r.prefix, r.key = "x", r.host+"\x00x"
		}), "prefix does not start"},
		{"unsorted clusters", mod(func(rs *rawSnapshot) {
			rs.clusters[0], rs.clusters[1] = rs.clusters[1], rs.clusters[0]
		}), `cluster 1 ("c1"): name out of order`},
		{"duplicate clusters", mod(func(rs *rawSnapshot) { rs.clusters[1] = rs.clusters[0] }), "name out of order"},
		{"empty cluster name", mod(func(rs *rawSnapshot) { rs.clusters[0].Name = "" }), "cluster 0: empty name"},
		{"empty endpoint", mod(func(rs *rawSnapshot) {
			rs.clusters[0].Endpoints = []Endpoint{{Address: ""}}
		}), "endpoint 0: empty address"},
		{"content hash", mod(func(rs *rawSnapshot) { rs.contentHash = u64(42) }), "content_hash"},
	}
	for _, c := range cases {
		_, err := Open(c.rs.bytes())
		if err == nil {
			t.Errorf("%s: accepted", c.name)
			continue
		}
		if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %q, want ErrCorrupt mentioning %q", c.name, err, c.want)
		}
	}
}

func TestOpenRejectsDamage(t *testing.T) {
	good := mustBuild(t, genState(300, 8))
	check := func(name string, b []byte, want string) {
		t.Helper()
		s, err := Open(b)
		if err == nil || s != nil {
			t.Errorf("%s: accepted", name)
			return
		}
		if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: error %q, want ErrCorrupt mentioning %q", name, err, want)
		}
	}
	check("nil", nil, "shorter than")
	check("tiny", good[:minFileSize-1], "shorter than")
	for _, n := range []int{minFileSize, len(good) / 2, len(good) - 1} {
		check("truncated", bytes.Clone(good[:n]), "trailer hash")
	}
	for _, pos := range []int{0, 5, len(good) / 3, len(good) - TrailerSize - 1, len(good) - 1} {
		b := bytes.Clone(good)
		b[pos] ^= 0x40
		check("flipped byte", b, "trailer hash")
	}
	b := bytes.Clone(good)
	copy(b[4:8], "XXXX")
	check("bad identifier", fixTrailer(b), `file identifier "XXXX"`)

	// Field-level damage with the trailer recomputed.
	s := mustOpen(t, good)
	b = bytes.Clone(good)
	root := snapfb.GetRootAsSnapshot(b[:len(b)-TrailerSize], 0)
	root.MutateShardCount(uint32(s.NumShards() + 1))
	check("shard_count", fixTrailer(b), "shard_count")

	b = bytes.Clone(good)
	root = snapfb.GetRootAsSnapshot(b[:len(b)-TrailerSize], 0)
	root.MutateContentHash(s.ContentHash() + 1)
	check("content_hash", fixTrailer(b), "content_hash")

	// The root offset pointing past the end must be reported, not panic.
	b = bytes.Clone(good)
	binary.LittleEndian.PutUint32(b, uint32(len(b)))
	check("root offset", fixTrailer(b), "malformed FlatBuffer")
}

// TestOpenSurvivesCorruption flips, zeroes and overwrites bytes all over a
// valid snapshot, fixes the trailer and opens it: Open may accept or reject,
// but must not panic, and an accepted snapshot must serve Match and the
// accessors without panicking.
func TestOpenSurvivesCorruption(t *testing.T) {
	good := mustBuild(t, genState(60, 9))
	rejected := 0
	for pos := 0; pos < len(good)-TrailerSize; pos++ {
		for _, v := range []byte{0x00, 0xff, good[pos] ^ 0x01, good[pos] + 4} {
			if v == good[pos] {
				continue
			}
			b := bytes.Clone(good)
			b[pos] = v
			s, err := Open(fixTrailer(b))
			if err != nil {
				rejected++
				continue
			}
			exercise(s)
		}
	}
	if rejected == 0 {
		t.Fatal("no corruption was rejected")
	}
	t.Logf("%d bytes × 4 corruptions: %d rejected", len(good)-TrailerSize, rejected)
}

// exercise calls every read path of an opened snapshot.
func exercise(s *Snapshot) {
	var m Match
	for _, h := range []string{"svc0.example.com", "*", "a"} {
		for _, p := range []string{"/", "/api1", "/api1/v0/x", "/static/1/assets/x"} {
			s.Match([]byte(h), []byte(p), &m)
		}
	}
	for i := range s.NumClusters() {
		v := s.ClusterAt(i)
		v.Name()
		v.ConnectTimeoutMs()
		v.Panic()
		v.SlowStartMs()
		for j := range v.NumEndpoints() {
			v.Endpoint(j)
			v.EndpointUnhealthy(j)
			v.EndpointRecoveredAtMs(j)
		}
	}
	s.ForEachRoute(func(r Route) bool {
		s.Match([]byte(r.Host), []byte(r.Prefix), &m)
		return true
	})
}
