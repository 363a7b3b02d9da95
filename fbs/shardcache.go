package fbs

import (
	"bytes"
	"slices"

	flatbuffers "github.com/google/flatbuffers/go"
)

// shardCache remembers, per shard index, the verifying walk of the shard
// bytes last checked there, so that Builder.BuildSnapshot walks only the
// shards whose bytes changed. A walk is reused only for byte-identical
// shard bytes in an identical shardContext: the checks of a shard read
// nothing else (checkStoredRoute and checkIndex), so a reused walk is the
// walk Open would do. The rest of the file (trailer, root, clusters, auth,
// content hash) is checked in full every time.
type shardCache struct {
	shards []verifiedShard // by shard index
}

// shardContext is what a shard's checks read besides its bytes: its place
// (shard index, by the cache slot, and shard count), the clusters routes
// refer to (count and a digest of their names, in order) and the policy
// count.
type shardContext struct {
	shards, clusters int
	names            uint64
	policies         uint32
}

// verifiedShard is one walked shard: a copy of its bytes, the context,
// and what the walk found, with positions relative to the shard.
type verifiedShard struct {
	data                 []byte // nil: empty slot
	ctx                  shardContext
	vec                  flatbuffers.UOffsetT
	n                    int
	idxOff, idxLen       int
	filterOff, filterLen int // filterLen 0: no filter
	mask, fmask          uint32
	sum                  routeSummary
}

// reuse fills idx (except base) for shard i with bytes data from an
// earlier walk and adds its routes to sum, or reports false if there is
// none for these bytes in this context.
func (c *shardCache) reuse(i int, data []byte, ctx shardContext, idx *shardIndex, sum *routeSummary) bool {
	if i >= len(c.shards) {
		return false
	}
	v := &c.shards[i]
	if v.data == nil || v.ctx != ctx || !bytes.Equal(v.data, data) {
		return false
	}
	*idx = shardIndex{buf: data, vec: v.vec, n: v.n, idx: data[v.idxOff : v.idxOff+v.idxLen], mask: v.mask, fmask: v.fmask}
	if v.filterLen > 0 {
		idx.filter = data[v.filterOff : v.filterOff+v.filterLen]
	}
	sum.merge(&v.sum)
	return true
}

// store records the successful walk of shard i. The bytes are copied: data
// aliases the whole file, which the cache must not keep alive.
func (c *shardCache) store(i int, data []byte, ctx shardContext, idx *shardIndex, sum *routeSummary) {
	if i >= len(c.shards) {
		c.shards = slices.Grow(c.shards, i+1-len(c.shards))[:i+1]
	}
	// idx.idx and idx.filter are sub-slices of data reaching to its end of
	// capacity, so the capacity difference is their offset (as ShardRange).
	v := verifiedShard{data: bytes.Clone(data), ctx: ctx, vec: idx.vec, n: idx.n,
		idxOff: cap(data) - cap(idx.idx), idxLen: len(idx.idx), mask: idx.mask, fmask: idx.fmask, sum: *sum}
	if idx.filter != nil {
		v.filterOff, v.filterLen = cap(data)-cap(idx.filter), len(idx.filter)
	}
	c.shards[i] = v
}

// trim drops the slots of shard indexes at or above shards.
func (c *shardCache) trim(shards int) {
	if len(c.shards) > shards {
		clear(c.shards[shards:])
		c.shards = c.shards[:shards]
	}
}
