package fbs

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"

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

// shardIndex locates one shard's routes vector inside the snapshot bytes. It
// is computed once at Open so that Match needs no vtable lookups per shard.
type shardIndex struct {
	buf []byte               // the nested RouteShard buffer (aliases the file)
	vec flatbuffers.UOffsetT // position of routes[0]'s uoffset in buf
	n   int                  // number of routes
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
// sits in the shard its hash names and references an existing cluster, and
// the content hash recomputes. Any other inconsistency the FlatBuffers
// accessors trip over (offsets out of range) is recovered and reported; Open
// never panics. After Open succeeds, every accessor and Match only read
// positions the walk has read, so they cannot panic either.
func Open(b []byte) (*Snapshot, error) {
	if len(b) < minFileSize {
		return nil, fmt.Errorf("%w: %d bytes is shorter than the minimum %d", ErrCorrupt, len(b), minFileSize)
	}
	body := b[:len(b)-TrailerSize]
	if want, got := binary.LittleEndian.Uint64(b[len(body):]), xxhash.Sum64(body); want != got {
		return nil, fmt.Errorf("%w: trailer hash %016x does not match content %016x (truncated or altered)", ErrCorrupt, want, got)
	}
	if !flatbuffers.BufferHasIdentifier(body, Identifier) {
		return nil, fmt.Errorf("%w: file identifier %q, want %q", ErrCorrupt, body[4:8], Identifier)
	}
	w := walker{s: &Snapshot{b: b}}
	if err := w.run(body); err != nil {
		return nil, err
	}
	return w.s, nil
}

// walker carries the position of the walk so that a recovered accessor panic
// still says where the structure broke.
type walker struct {
	s     *Snapshot
	where string // "clusters", "shards" or "routes"
	i, j  int
}

func (w *walker) loc() string {
	switch w.where {
	case "clusters":
		return fmt.Sprintf("cluster %d", w.i)
	case "shards":
		return fmt.Sprintf("shard %d", w.i)
	case "routes":
		return fmt.Sprintf("shard %d route %d", w.i, w.j)
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

	// Clusters first, since routes are checked against them. Their
	// canonical encoding ends the content hash input (see hashClusters), so
	// they are read a second time after the shards.
	w.where = "clusters"
	nClusters := root.ClustersLength()
	if nClusters*flatbuffers.SizeUOffsetT > len(body) {
		return fmt.Errorf("%w: root table: %d clusters exceed the buffer", ErrCorrupt, nClusters)
	}
	s.numClusters = nClusters
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
		}
		prev = c
	}

	w.where = "shards"
	s.shards = make([]shardIndex, nShards)
	var sh snapfb.Shard
	var rs snapfb.RouteShard
	var r snapfb.Route
	for i := range nShards {
		w.where, w.i = "shards", i
		if !root.Shards(&sh, i) {
			return fmt.Errorf("%w: shard %d: missing", ErrCorrupt, i)
		}
		data := sh.DataBytes()
		if len(data) < flatbuffers.SizeUOffsetT {
			return fmt.Errorf("%w: shard %d: %d data bytes", ErrCorrupt, i, len(data))
		}
		hash.Write(data)
		rs.Init(data, flatbuffers.GetUOffsetT(data))
		idx := &s.shards[i]
		idx.buf = data
		t := rs.Table()
		if o := flatbuffers.UOffsetT(t.Offset(routeShardRoutesSlot)); o != 0 {
			idx.vec = t.Vector(o)
			idx.n = t.VectorLen(o)
		}
		if idx.n*flatbuffers.SizeUOffsetT > len(data) {
			return fmt.Errorf("%w: shard %d: %d routes exceed the shard's %d bytes", ErrCorrupt, i, idx.n, len(data))
		}
		w.where = "routes"
		var prevKey []byte
		for j := range idx.n {
			w.j = j
			idx.routeAt(&r, j)
			if err := checkStoredRoute(s, &r, prevKey, uint64(i), uint64(nShards)); err != nil {
				return fmt.Errorf("%w: shard %d route %d (%q): %s", ErrCorrupt, i, j, r.Id(), err)
			}
			prevKey = r.Key()
			s.maxPrefix = max(s.maxPrefix, len(r.Prefix()))
		}
		s.numRoutes += idx.n
	}

	w.where = "clusters"
	hashU32(hash, scratch[:], uint32(nClusters))
	for i := range nClusters {
		w.i = i
		root.Clusters(&c, i)
		hashBytes(hash, scratch[:], c.Name())
		hashU32(hash, scratch[:], c.ConnectTimeoutMs())
		nEP := c.EndpointsLength()
		hashU32(hash, scratch[:], uint32(nEP))
		for j := range nEP {
			c.Endpoints(&ep, j)
			hashBytes(hash, scratch[:], ep.Address())
		}
	}
	if got := hash.Sum64(); got != s.contentHash {
		return fmt.Errorf("%w: root table: content_hash %016x does not match content %016x", ErrCorrupt, s.contentHash, got)
	}
	return nil
}

// checkStoredRoute returns why route r (in shard, after prevKey) is invalid,
// or nil. It reads every field of the route.
func checkStoredRoute(s *Snapshot, r *snapfb.Route, prevKey []byte, shard, shards uint64) error {
	key, host, prefix := r.Key(), r.Host(), r.Prefix()
	r.TimeoutMs()
	switch {
	case len(r.Id()) == 0:
		return errors.New("empty id")
	case len(host) == 0:
		return errors.New("empty host")
	case bytes.IndexByte(host, 0) >= 0:
		return errors.New("host contains a 0x00 byte")
	case len(prefix) == 0 || prefix[0] != '/':
		return errors.New("prefix does not start with \"/\"")
	case len(r.Cluster()) == 0:
		return errors.New("empty cluster")
	case compareKey(key, host, prefix) != 0:
		return errors.New("key is not host+\"\\x00\"+prefix")
	case prevKey != nil && bytes.Compare(prevKey, key) >= 0:
		return errors.New("key out of order")
	case RouteHash(host, prefix)%shards != shard:
		return fmt.Errorf("belongs in shard %d", RouteHash(host, prefix)%shards)
	case s.ClusterIndex(r.Cluster()) < 0:
		return fmt.Errorf("cluster %q does not exist", r.Cluster())
	}
	return nil
}
