package wire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/cespare/xxhash/v2"
	"github.com/klauspost/compress/zstd"

	"github.com/snapgate/snapgate/fbs"
)

// A DELTA rebuilds a snapshot file from a base file the edge already has
// and has verified. A snapshot file is a sequence of route shards (each an
// independent FlatBuffer, fbs.Snapshot.ShardRange) separated by gaps: the
// root table, the shard vector, one small Shard table per shard, the
// clusters and the trailer. Both sides derive the base's layout from the
// verified base, so the DELTA names base bytes by slot, not by offset.
//
// Why not whole-file zstd with the base as dictionary: the Shard tables
// point at a shared vtable and the shard vector points at the tables with
// relative offsets, so a shard that grows moves up to one offset per shard.
// Each moved offset breaks a zstd match; at 256 shards that is 6-9 KB for a
// one-route edit of a 100k-route snapshot. Here a gap of the same length as
// its base counterpart is sent as its bytewise difference from it, which is
// zeros except for the moved offsets, and those all move by the same amount:
// zstd turns the repeats into a few matches.
//
// Payload:
//
//	version u64, base version u64, base hash u64, result hash u64,
//	result length u32, slot count u32 (shards in the result),
//	plan: ops covering the result's slots in file order, until slot count:
//	  0 RUN   n uvarint: the next n slots are the base's slots at the same
//	          positions, byte for byte
//	  1 SHARD index uvarint, length uvarint: the next slot is shard index,
//	          length bytes from part B
//	part A: decoded length uvarint, frame length uvarint, one zstd frame
//	        without dictionary: the result's gap lengths, slot count + 1
//	        zigzag uvarints, each minus the base's gap at the same position
//	        (0 if the base has none); then, in order, the bytes of each gap
//	        as long as its base counterpart, as (new - base) per byte mod 256
//	part B: decoded length uvarint, then (if nonzero) one zstd frame to the
//	        end whose dictionary is the base's counterpart of every other
//	        gap, then the base's shard of each SHARD op's index (when the
//	        base has it). It holds the other gaps' bytes as they are, then
//	        the SHARD ops' bytes, each as (new - base) per byte when as long
//	        as the base's shard of that index, else as it is.
//
// Part A is the bulk (the clusters are one gap) and is nearly all zeros, so
// it needs neither a dictionary nor a strong level; part B is small and is
// compressed against its dictionary at the default level (partBLevel).
//
// Hashes are file trailers (xxhash64 of the file before its last 8 bytes).

// Plan op codes.
const (
	opRun   = 0
	opShard = 1
)

const deltaHeaderSize = 8*4 + 4 + 4

// dictID is the zstd dictionary id of part B. The dictionary is
// named by the base (version and hash in the header), so the id carries
// nothing and stays fixed.
const dictID = 1

// The part B level. SpeedBetterCompression saved ~0.1 KB on a changed
// 100k-route shard but, with a raw dictionary, rebuilt its match tables on
// every ResetWithOptions: 28 MB of garbage and 220 ms per DELTA against
// 11 MB and 23 ms here (BenchmarkDeltaSize100k, measured while AppendDelta
// still dropped the dictionary after each DELTA, which rebuilt the encoder).
const partBLevel = zstd.SpeedDefault

// partBWindow bounds how far back matches reach (for part B, into its
// dictionary: room for a dozen changed 100k-route shards). The encoders'
// history buffers are about twice the window; at zstd's default 8 MB each
// DELTA cost 20 MB more garbage.
const partBWindow = 1 << 20

// ErrDeltaBase is wrapped when a DELTA does not apply to the base the edge
// has (other version or hash, or slots the base does not have). The edge
// answers with a NACK, after which ctrl sends a FULL.
var ErrDeltaBase = errors.New("wire: delta base mismatch")

// DeltaHeader is the fixed part of a DELTA payload.
type DeltaHeader struct {
	Version     uint64
	BaseVersion uint64
	BaseHash    uint64
	ResultHash  uint64
	ResultLen   uint32
	Slots       uint32 // route shards in the result
}

// FileHash returns a snapshot file's trailer, the xxhash64 of everything
// before it, or 0 if b is too short to have one.
func FileHash(b []byte) uint64 {
	if len(b) < 8 {
		return 0
	}
	return binary.LittleEndian.Uint64(b[len(b)-8:])
}

// DecodeDeltaHeader splits a DELTA payload into its header and the rest,
// checking what needs no base: versions, a nonempty result that moves
// forward, a slot count a snapshot can have.
func DecodeDeltaHeader(p []byte) (DeltaHeader, []byte, error) {
	if len(p) < deltaHeaderSize {
		return DeltaHeader{}, nil, fmt.Errorf("%w: DELTA is %d bytes, want at least %d", ErrMalformed, len(p), deltaHeaderSize)
	}
	h := DeltaHeader{
		Version:     binary.BigEndian.Uint64(p[0:8]),
		BaseVersion: binary.BigEndian.Uint64(p[8:16]),
		BaseHash:    binary.BigEndian.Uint64(p[16:24]),
		ResultHash:  binary.BigEndian.Uint64(p[24:32]),
		ResultLen:   binary.BigEndian.Uint32(p[32:36]),
		Slots:       binary.BigEndian.Uint32(p[36:40]),
	}
	switch {
	case h.Version == 0 || h.BaseVersion == 0:
		return DeltaHeader{}, nil, fmt.Errorf("%w: DELTA v%d from v%d: versions must be nonzero", ErrMalformed, h.Version, h.BaseVersion)
	case h.BaseVersion >= h.Version:
		return DeltaHeader{}, nil, fmt.Errorf("%w: DELTA v%d from base v%d does not move forward", ErrMalformed, h.Version, h.BaseVersion)
	case h.ResultLen < 8:
		return DeltaHeader{}, nil, fmt.Errorf("%w: DELTA v%d declares a %d-byte result, too short for a trailer", ErrMalformed, h.Version, h.ResultLen)
	case h.Slots > fbs.MaxShards:
		return DeltaHeader{}, nil, fmt.Errorf("%w: DELTA v%d declares %d shards, limit %d", ErrMalformed, h.Version, h.Slots, fbs.MaxShards)
	}
	return h, p[deltaHeaderSize:], nil
}

type span struct{ off, n int }

// slot is one shard in file order.
type slot struct {
	idx int // shard index
	span
}

// fileLayout is a snapshot's shards in file order and the gaps around them:
// gaps[k] precedes slots[k], and the last gap runs to the end of the file.
type fileLayout struct {
	slots []slot
	gaps  []span
}

// layoutOf derives s's layout. It fails on shards that overlap, which no
// builder makes, so the codec never has to define what they would mean.
func layoutOf(s *fbs.Snapshot, l *fileLayout) error {
	l.slots = l.slots[:0]
	for i := range s.NumShards() {
		off, n := s.ShardRange(i)
		l.slots = append(l.slots, slot{idx: i, span: span{off, n}})
	}
	slices.SortStableFunc(l.slots, func(a, b slot) int { return a.off - b.off })
	l.gaps = l.gaps[:0]
	pos := 0
	for _, sl := range l.slots {
		if sl.off < pos {
			return fmt.Errorf("snapshot v%d: shard %d at byte %d overlaps the bytes before it (up to %d)", s.Version(), sl.idx, sl.off, pos)
		}
		l.gaps = append(l.gaps, span{pos, sl.off - pos})
		pos = sl.off + sl.n
	}
	if size := len(s.Bytes()); pos <= size {
		l.gaps = append(l.gaps, span{pos, size - pos})
	} else {
		return fmt.Errorf("snapshot v%d: shards run to byte %d, past the %d-byte file", s.Version(), pos, size)
	}
	return nil
}

// appendDict appends part B's dictionary: base's gaps numbered in gaps
// (those it has), then the base shard of each shard index in idxs (those it
// has).
func appendDict(dst, base []byte, l *fileLayout, snap *fbs.Snapshot, gaps, idxs []int) []byte {
	for _, j := range gaps {
		if j < len(l.gaps) {
			g := l.gaps[j]
			dst = append(dst, base[g.off:g.off+g.n]...)
		}
	}
	for _, i := range idxs {
		if i < snap.NumShards() {
			off, n := snap.ShardRange(i)
			dst = append(dst, base[off:off+n]...)
		}
	}
	return dst
}

// appendDiff appends next as its bytewise difference from base when both
// have the same length, else as is.
func appendDiff(dst, next, base []byte) []byte {
	if len(next) != len(base) {
		return append(dst, next...)
	}
	for i, c := range next {
		dst = append(dst, c-base[i])
	}
	return dst
}

// undiff is appendDiff's inverse: it turns p back into the new bytes in
// place when base has the same length.
func undiff(p, base []byte) {
	if len(p) != len(base) {
		return
	}
	for i := range p {
		p[i] += base[i]
	}
}

func zigzag(v int64) uint64   { return uint64(v<<1) ^ uint64(v>>63) }
func unzigzag(u uint64) int64 { return int64(u>>1) ^ -int64(u&1) }

// DeltaEncoder writes DELTA payloads. It keeps one zstd encoder for its
// lifetime and switches dictionaries with ResetWithOptions (deps.md §4: a
// new encoder per version allocates ~20 MB). Safe for concurrent use; calls
// are serialized.
type DeltaEncoder struct {
	mu           sync.Mutex
	encA, encB   *zstd.Encoder
	base, next   fileLayout
	gaps, idxs   []int
	partA, partB []byte
	frame, dict  []byte
}

// NewDeltaEncoder returns a DeltaEncoder at zstd's default level (the
// fastest level makes poor use of a dictionary, deps.md §4).
func NewDeltaEncoder() (*DeltaEncoder, error) {
	encA, err := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1), zstd.WithEncoderLevel(zstd.SpeedDefault), zstd.WithWindowSize(partBWindow))
	if err != nil {
		return nil, fmt.Errorf("wire: create zstd delta encoder: %w", err)
	}
	encB, err := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1), zstd.WithEncoderLevel(partBLevel), zstd.WithWindowSize(partBWindow))
	if err != nil {
		encA.Close()
		return nil, fmt.Errorf("wire: create zstd delta encoder: %w", err)
	}
	return &DeltaEncoder{encA: encA, encB: encB}, nil
}

// Close releases the encoder.
func (e *DeltaEncoder) Close() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	return errors.Join(e.encA.Close(), e.encB.Close())
}

// AppendDelta appends a DELTA payload that turns base into next. Both are
// verified snapshots; next must be newer.
func (e *DeltaEncoder) AppendDelta(dst []byte, base, next *fbs.Snapshot) ([]byte, error) {
	if next.Version() <= base.Version() {
		return dst, fmt.Errorf("wire: delta from v%d to v%d does not move forward", base.Version(), next.Version())
	}
	bb, nb := base.Bytes(), next.Bytes()
	if uint64(len(bb)) > 0xFFFFFFFF || uint64(len(nb)) > 0xFFFFFFFF {
		return dst, fmt.Errorf("wire: delta v%d→v%d: snapshot over 4 GiB", base.Version(), next.Version())
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := layoutOf(base, &e.base); err != nil {
		return dst, fmt.Errorf("wire: delta base: %w", err)
	}
	if err := layoutOf(next, &e.next); err != nil {
		return dst, fmt.Errorf("wire: delta result: %w", err)
	}
	bl, nl := &e.base, &e.next

	dst = binary.BigEndian.AppendUint64(dst, next.Version())
	dst = binary.BigEndian.AppendUint64(dst, base.Version())
	dst = binary.BigEndian.AppendUint64(dst, FileHash(bb))
	dst = binary.BigEndian.AppendUint64(dst, FileHash(nb))
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(nb)))
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(nl.slots)))

	// Plan: runs of slots equal to the base's at the same position, and
	// the changed shards.
	e.idxs = e.idxs[:0]
	run := 0
	for k, ns := range nl.slots {
		if k < len(bl.slots) {
			bs := bl.slots[k]
			if bs.idx == ns.idx && bytes.Equal(bb[bs.off:bs.off+bs.n], nb[ns.off:ns.off+ns.n]) {
				run++
				continue
			}
		}
		if run > 0 {
			dst = append(dst, opRun)
			dst = binary.AppendUvarint(dst, uint64(run))
			run = 0
		}
		dst = append(dst, opShard)
		dst = binary.AppendUvarint(dst, uint64(ns.idx))
		dst = binary.AppendUvarint(dst, uint64(ns.n))
		e.idxs = append(e.idxs, ns.idx)
	}
	if run > 0 {
		dst = append(dst, opRun)
		dst = binary.AppendUvarint(dst, uint64(run))
	}

	partA, partB := e.partA[:0], e.partB[:0]
	for j, g := range nl.gaps {
		var bn int
		if j < len(bl.gaps) {
			bn = bl.gaps[j].n
		}
		partA = binary.AppendUvarint(partA, zigzag(int64(g.n)-int64(bn)))
	}
	e.gaps = e.gaps[:0]
	for j, g := range nl.gaps {
		if j < len(bl.gaps) && bl.gaps[j].n == g.n {
			partA = appendDiff(partA, nb[g.off:g.off+g.n], bb[bl.gaps[j].off:bl.gaps[j].off+g.n])
			continue
		}
		partB = append(partB, nb[g.off:g.off+g.n]...)
		e.gaps = append(e.gaps, j)
	}
	for k, ns := range nl.slots {
		if k < len(bl.slots) && bl.slots[k].idx == ns.idx && bytes.Equal(bb[bl.slots[k].off:bl.slots[k].off+bl.slots[k].n], nb[ns.off:ns.off+ns.n]) {
			continue
		}
		var prev []byte
		if ns.idx < base.NumShards() {
			off, n := base.ShardRange(ns.idx)
			prev = bb[off : off+n]
		}
		partB = appendDiff(partB, nb[ns.off:ns.off+ns.n], prev)
	}
	e.partA, e.partB = partA, partB

	dst = binary.AppendUvarint(dst, uint64(len(partA)))
	e.frame = e.encA.EncodeAll(partA, e.frame[:0])
	dst = binary.AppendUvarint(dst, uint64(len(e.frame)))
	dst = append(dst, e.frame...)
	dst = binary.AppendUvarint(dst, uint64(len(partB)))
	if len(partB) == 0 {
		return dst, nil
	}
	e.dict = appendDict(e.dict[:0], bb, bl, base, e.gaps, e.idxs)
	if len(e.dict) == 0 {
		// encA has part B's level and window but no dictionary, so the
		// frame names none.
		return e.encA.EncodeAll(partB, dst), nil
	}
	// encB always has a dictionary: changing whether it has one makes zstd
	// build a new encoder with new tables and history (~11 MB, 4 ms per
	// DELTA at 1,000 routes), while switching one dictionary for another
	// reuses them. The dictionary aliases e.dict, which the next call
	// overwrites before it replaces the dictionary and encodes again.
	if err := e.encB.ResetWithOptions(nil, zstd.WithEncoderDictRaw(dictID, e.dict)); err != nil {
		return dst, fmt.Errorf("wire: delta v%d: set zstd dictionary: %w", next.Version(), err)
	}
	return e.encB.EncodeAll(partB, dst), nil
}

// DeltaDecoder rebuilds snapshots from DELTA payloads. It reuses one zstd
// decoder and its buffers, so it is not safe for concurrent use.
type DeltaDecoder struct {
	dec          *zstd.Decoder
	max          int
	base         fileLayout
	plan         []slot // result slots: idx, and off = base slot (RUN) or -1 (SHARD), n = length
	idxs, gaps   []int
	gapLens      []int
	partA, partB []byte
	dict         []byte
}

// NewDeltaDecoder returns a DeltaDecoder that refuses results above maxRaw
// bytes (DefaultMaxPayload if maxRaw <= 0).
func NewDeltaDecoder(maxRaw int) (*DeltaDecoder, error) {
	// Each part decodes into exactly its declared room (see decode).
	dec, maxRaw, err := newBoundedDecoder(maxRaw)
	if err != nil {
		return nil, err
	}
	return &DeltaDecoder{dec: dec, max: maxRaw}, nil
}

// Close releases the decoder.
func (d *DeltaDecoder) Close() { d.dec.Close() }

// Apply rebuilds the snapshot file a DELTA payload p describes from base,
// a verified snapshot, into dst's memory when it is large enough (a new
// buffer with room to grow otherwise). The result's trailer is checked
// against its content and the declared hash; the caller still verifies the
// structure with fbs.Open (or fbs.OpenAfter base). A DELTA that names
// another base than base wraps ErrDeltaBase; anything inconsistent wraps
// ErrMalformed.
func (d *DeltaDecoder) Apply(dst []byte, base *fbs.Snapshot, p []byte) (DeltaHeader, []byte, error) {
	h, rest, err := DecodeDeltaHeader(p)
	if err != nil {
		return DeltaHeader{}, nil, err
	}
	if uint64(h.ResultLen) > uint64(d.max) {
		return DeltaHeader{}, nil, fmt.Errorf("%w: DELTA v%d declares a %d-byte snapshot, limit %d", ErrTooLarge, h.Version, h.ResultLen, d.max)
	}
	bb := base.Bytes()
	if got := FileHash(bb); got != h.BaseHash || base.Version() != h.BaseVersion {
		return DeltaHeader{}, nil, fmt.Errorf("%w: DELTA v%d wants base v%d with hash %#016x, have v%d with %#016x", ErrDeltaBase, h.Version, h.BaseVersion, h.BaseHash, base.Version(), got)
	}
	if err := layoutOf(base, &d.base); err != nil {
		return DeltaHeader{}, nil, fmt.Errorf("%w: %w", ErrDeltaBase, err)
	}
	bl := &d.base
	fail := func(format string, args ...any) (DeltaHeader, []byte, error) {
		return DeltaHeader{}, nil, fmt.Errorf("%w: DELTA v%d: %s", ErrMalformed, h.Version, fmt.Sprintf(format, args...))
	}

	// Plan. Every length is bounded by the declared result, so a hostile
	// plan cannot make the sums below overflow or the parts large.
	n := int(h.ResultLen)
	d.plan, d.idxs = d.plan[:0], d.idxs[:0]
	total := 0 // bytes the plan's slots take in the result
	for len(d.plan) < int(h.Slots) {
		if len(rest) == 0 {
			return fail("plan ends after %d of %d shards", len(d.plan), h.Slots)
		}
		op := rest[0]
		rest = rest[1:]
		switch op {
		case opRun:
			cnt, k := binary.Uvarint(rest)
			if k <= 0 || cnt == 0 || cnt > uint64(int(h.Slots)-len(d.plan)) {
				return fail("bad RUN at shard %d", len(d.plan))
			}
			rest = rest[k:]
			first := len(d.plan)
			if first+int(cnt) > len(bl.slots) {
				return DeltaHeader{}, nil, fmt.Errorf("%w: DELTA v%d: RUN of %d shards from slot %d, base has %d", ErrDeltaBase, h.Version, cnt, first, len(bl.slots))
			}
			for k := first; k < first+int(cnt); k++ {
				bs := bl.slots[k]
				total += bs.n
				if total > n {
					return fail("shards exceed the declared %d bytes", n)
				}
				d.plan = append(d.plan, slot{idx: bs.idx, span: span{k, bs.n}})
			}
		case opShard:
			idx, k := binary.Uvarint(rest)
			if k <= 0 || idx >= uint64(h.Slots) {
				return fail("bad SHARD index at shard %d", len(d.plan))
			}
			rest = rest[k:]
			ln, k := binary.Uvarint(rest)
			if k <= 0 || ln > uint64(n-total) {
				return fail("bad SHARD length at shard %d", len(d.plan))
			}
			rest = rest[k:]
			total += int(ln)
			d.plan = append(d.plan, slot{idx: int(idx), span: span{-1, int(ln)}})
			d.idxs = append(d.idxs, int(idx))
		default:
			return fail("unknown plan op %d at shard %d", op, len(d.plan))
		}
	}
	shardTotal := total

	// Part A: gap lengths and the gaps that kept their length.
	lenA, k := binary.Uvarint(rest)
	// Part A holds at most the result plus one varint per gap.
	if k <= 0 || lenA > uint64(n)+uint64(h.Slots+1)*binary.MaxVarintLen64 {
		return fail("bad part A length")
	}
	rest = rest[k:]
	frameLen, k := binary.Uvarint(rest)
	if k <= 0 || frameLen > uint64(len(rest)-k) {
		return fail("part A frame length does not fit")
	}
	rest = rest[k:]
	partA, err := d.decode(d.partA[:0], rest[:frameLen], lenA, nil)
	if err != nil {
		return fail("part A: %v", err)
	}
	d.partA = partA
	rest = rest[frameLen:]

	gapLens, gaps := d.gapLens[:0], d.gaps[:0]
	sameLen := 0 // part A bytes the gaps take
	for j := range len(d.plan) + 1 {
		u, k := binary.Uvarint(partA)
		if k <= 0 {
			return fail("gap %d length: bad varint", j)
		}
		partA = partA[k:]
		g := unzigzag(u)
		if j < len(bl.gaps) {
			g += int64(bl.gaps[j].n)
		}
		if g < 0 || g > int64(n-total) {
			return fail("gap %d is %d bytes, does not fit", j, g)
		}
		total += int(g)
		gapLens = append(gapLens, int(g))
		if j < len(bl.gaps) && bl.gaps[j].n == int(g) {
			sameLen += int(g)
		} else {
			gaps = append(gaps, j)
		}
	}
	d.gapLens, d.gaps = gapLens, gaps
	if total != n {
		return fail("gaps and shards make %d bytes, header says %d", total, n)
	}
	if len(partA) != sameLen {
		return fail("part A carries %d gap bytes, the gap lengths want %d", len(partA), sameLen)
	}

	// Part B: the other gaps, then the changed shards.
	lenB, k := binary.Uvarint(rest)
	if k <= 0 {
		return fail("bad part B length")
	}
	rest = rest[k:]
	wantB := n - shardTotal - sameLen
	for _, sl := range d.plan {
		if sl.off < 0 {
			wantB += sl.n
		}
	}
	if lenB != uint64(wantB) {
		return fail("part B is %d bytes, the plan wants %d", lenB, wantB)
	}
	partB := d.partB[:0]
	if lenB > 0 {
		d.dict = appendDict(d.dict[:0], bb, bl, base, gaps, d.idxs)
		if partB, err = d.decode(partB, rest, lenB, d.dict); err != nil {
			return fail("part B: %v", err)
		}
		d.partB = partB
	} else if len(rest) != 0 {
		return fail("%d bytes after an empty part B", len(rest))
	}

	out := dst[:0]
	if cap(out) < n {
		// Room for the growth of later versions, so that a caller that
		// passes the memory back as dst keeps it.
		out = make([]byte, 0, n+n/8)
	}
	putGap := func(j int) {
		g := gapLens[j]
		if j < len(bl.gaps) && bl.gaps[j].n == g {
			start := len(out)
			out = append(out, partA[:g]...)
			partA = partA[g:]
			undiff(out[start:], bb[bl.gaps[j].off:bl.gaps[j].off+g])
			return
		}
		out = append(out, partB[:g]...)
		partB = partB[g:]
	}
	// Part B holds the other gaps first, then the shards.
	shardB := partB[wantB-newShardBytes(d.plan):]
	for k, sl := range d.plan {
		putGap(k)
		if sl.off >= 0 {
			bs := bl.slots[sl.off]
			out = append(out, bb[bs.off:bs.off+bs.n]...)
			continue
		}
		start := len(out)
		out = append(out, shardB[:sl.n]...)
		shardB = shardB[sl.n:]
		if sl.idx < base.NumShards() {
			off, ln := base.ShardRange(sl.idx)
			undiff(out[start:], bb[off:off+ln])
		}
	}
	putGap(len(d.plan))
	if sum := xxhash.Sum64(out[:n-8]); sum != FileHash(out) || sum != h.ResultHash {
		return fail("rebuilt a file hashing to %#016x, trailer %#016x, header %#016x", sum, FileHash(out), h.ResultHash)
	}
	return h, out, nil
}

func newShardBytes(plan []slot) int {
	n := 0
	for _, sl := range plan {
		if sl.off < 0 {
			n += sl.n
		}
	}
	return n
}

// decode decodes one zstd frame of exactly want bytes into dst's memory,
// with dict as raw dictionary when it is nonempty.
func (d *DeltaDecoder) decode(dst, frame []byte, want uint64, dict []byte) ([]byte, error) {
	if len(frame) == 0 {
		return nil, errors.New("no zstd frame")
	}
	var zh zstd.Header
	if err := zh.Decode(frame); err != nil {
		return nil, fmt.Errorf("zstd frame header: %w", err)
	}
	if zh.HasFCS && zh.FrameContentSize != want {
		return nil, fmt.Errorf("zstd frame says %d bytes, DELTA says %d", zh.FrameContentSize, want)
	}
	if err := oneFrame(frame, &zh); err != nil {
		return nil, err
	}
	// A frame naming a dictionary must get the one the DELTA defines; one
	// that names none must not read one.
	opts := []zstd.DOption{zstd.WithDecoderDictDelete(dictID)}
	if len(dict) > 0 {
		opts = append(opts, zstd.WithDecoderDictRaw(dictID, dict))
	}
	if err := d.dec.ResetWithOptions(nil, opts...); err != nil {
		return nil, fmt.Errorf("set zstd dictionary: %w", err)
	}
	// The dictionary aliases d.dict, which the next call overwrites.
	defer d.dec.ResetWithOptions(nil, zstd.WithDecoderDictDelete(dictID))
	if uint64(cap(dst)) < want {
		dst = make([]byte, 0, want)
	}
	out, err := d.dec.DecodeAll(frame, dst[:0:want])
	if err != nil {
		return nil, fmt.Errorf("zstd data: %w", err)
	}
	if uint64(len(out)) != want {
		return nil, fmt.Errorf("zstd frame decoded to %d bytes, want %d", len(out), want)
	}
	return out, nil
}
