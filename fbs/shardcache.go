package fbs

import (
	"bytes"
	"slices"

	flatbuffers "github.com/google/flatbuffers/go"
)

// A shard's checks (walkShard: checkStoredRoute and checkIndex) read its
// bytes and its shardContext, nothing else, and are deterministic. So a walk
// that passed for some shard bytes in some context passes for every
// byte-identical copy in an identical context, and finds the same layout
// and summary: the walk can be reused instead of repeated. Two places keep
// verified walks: shardCache (Builder.BuildSnapshot, which holds no earlier
// Snapshot) and a Snapshot itself (OpenAfter).

// shardContext is what a shard's checks read besides its bytes: its place
// (shard index, by the slot it is kept in, and shard count), the clusters
// routes refer to (count and a digest of their names, in order) and the
// policy count.
type shardContext struct {
	shards, clusters int
	names            uint64
	policies         uint32
}

// shardLayout is a verified shard's shardIndex with its slices as offsets
// into the shard bytes, so that it applies to any identical copy of them.
type shardLayout struct {
	vec                  flatbuffers.UOffsetT
	n                    int
	idxOff, idxLen       int
	filterOff, filterLen int // filterLen 0: no filter
	mask, fmask          uint32
}

// layoutOf returns idx's layout relative to idx.buf.
func layoutOf(idx *shardIndex) shardLayout {
	// idx.idx and idx.filter are sub-slices of idx.buf reaching to its end
	// of capacity, so the capacity difference is their offset.
	l := shardLayout{vec: idx.vec, n: idx.n, idxOff: cap(idx.buf) - cap(idx.idx), idxLen: len(idx.idx), mask: idx.mask, fmask: idx.fmask}
	if idx.filter != nil {
		l.filterOff, l.filterLen = cap(idx.buf)-cap(idx.filter), len(idx.filter)
	}
	return l
}

// at returns the shardIndex (except off and base) of the layout over data,
// a shard's bytes with capacity cut to their length.
func (l *shardLayout) at(data []byte) shardIndex {
	idx := shardIndex{buf: data, vec: l.vec, n: l.n, idx: data[l.idxOff : l.idxOff+l.idxLen], mask: l.mask, fmask: l.fmask}
	if l.filterLen > 0 {
		idx.filter = data[l.filterOff : l.filterOff+l.filterLen]
	}
	return idx
}

// shardCache remembers, per shard index, the verifying walk of the shard
// bytes last checked there, so that Builder.BuildSnapshot walks only the
// shards whose bytes changed. A walk is reused only for byte-identical
// shard bytes in an identical shardContext (see above), so a reused walk
// is the walk Open would do. The rest of the file (trailer, root, clusters,
// auth, content hash) is checked in full every time.
type shardCache struct {
	shards []verifiedShard // by shard index
}

// verifiedShard is one walked shard: a copy of its bytes, the context,
// and what the walk found.
type verifiedShard struct {
	data   []byte // nil: empty slot
	ctx    shardContext
	layout shardLayout
	sum    *routeSummary // shared with the snapshots that reuse it; never modified
}

// reuse fills idx (except off and base) for shard i with bytes data from an
// earlier walk and returns that walk's route summary, or nil if there is
// none for these bytes in this context.
func (c *shardCache) reuse(i int, data []byte, ctx shardContext, idx *shardIndex) *routeSummary {
	if i >= len(c.shards) {
		return nil
	}
	v := &c.shards[i]
	if v.data == nil || v.ctx != ctx || !bytes.Equal(v.data, data) {
		return nil
	}
	*idx = v.layout.at(data)
	return v.sum
}

// store records the successful walk of shard i. The bytes are copied: data
// aliases the whole file, which the cache must not keep alive.
func (c *shardCache) store(i int, data []byte, ctx shardContext, idx *shardIndex, sum *routeSummary) {
	if i >= len(c.shards) {
		c.shards = slices.Grow(c.shards, i+1-len(c.shards))[:i+1]
	}
	c.shards[i] = verifiedShard{data: bytes.Clone(data), ctx: ctx, layout: layoutOf(idx), sum: sum}
}

// trim drops the slots of shard indexes at or above shards.
func (c *shardCache) trim(shards int) {
	if len(c.shards) > shards {
		clear(c.shards[shards:])
		c.shards = c.shards[:shards]
	}
}
