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

// A DELTA rebuilds a snapshot file from a base file the edge already has.
// Whole-file zstd with the base as dictionary stops paying off on large
// snapshots (a 15 MB base: the delta is as large as a FULL at the default
// level, 2.5–7 KB of per-block overhead at the best one), so the codec works
// shard by shard: the new file is a sequence of regions, each copied from a
// byte range of the base (an unchanged shard or gap), sent literally (small
// gaps, the trailer), or zstd-compressed with the most similar base range as
// raw dictionary (the same shard index, or the base's largest non-shard gap
// for the root table and clusters).
//
// Payload:
//
//	version u64, base version u64, base hash u64, result hash u64,
//	result length u32, op count u32, then the ops:
//	  1 COPY     base offset u32, length u32
//	  2 LITERAL  length u32, bytes
//	  3 ZSTD     dict offset u32, dict length u32, raw length u32,
//	             compressed length u32, one zstd frame
//
// Hashes are file trailers (xxhash64 of the file before its last 8 bytes).

// Delta op codes.
const (
	opCopy    = 1
	opLiteral = 2
	opZstd    = 3
)

const deltaHeaderSize = 8*4 + 4 + 4

// dictID is the zstd dictionary id of every ZSTD region: the dictionary is
// named by the op's base range, so the id carries nothing and stays fixed.
const dictID = 1

// literalMax is the region size up to which a changed gap is sent as is: a
// zstd frame's header alone is about a dozen bytes.
const literalMax = 64

// ErrDeltaBase is wrapped when a DELTA does not apply to the base the edge
// has (other version or hash, or a range outside it). The edge answers with
// a NACK, after which ctrl sends a FULL.
var ErrDeltaBase = errors.New("wire: delta base mismatch")

// DeltaHeader is the fixed part of a DELTA payload.
type DeltaHeader struct {
	Version     uint64
	BaseVersion uint64
	BaseHash    uint64
	ResultHash  uint64
	ResultLen   uint32
	Ops         uint32
}

// FileHash returns a snapshot file's trailer, the xxhash64 of everything
// before it, or 0 if b is too short to have one.
func FileHash(b []byte) uint64 {
	if len(b) < 8 {
		return 0
	}
	return binary.LittleEndian.Uint64(b[len(b)-8:])
}

// DecodeDeltaHeader splits a DELTA payload into its header and ops, checking
// what needs no base: versions, a nonempty result that moves forward.
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
		Ops:         binary.BigEndian.Uint32(p[36:40]),
	}
	switch {
	case h.Version == 0 || h.BaseVersion == 0:
		return DeltaHeader{}, nil, fmt.Errorf("%w: DELTA v%d from v%d: versions must be nonzero", ErrMalformed, h.Version, h.BaseVersion)
	case h.BaseVersion >= h.Version:
		return DeltaHeader{}, nil, fmt.Errorf("%w: DELTA v%d from base v%d does not move forward", ErrMalformed, h.Version, h.BaseVersion)
	case h.ResultLen < 8:
		return DeltaHeader{}, nil, fmt.Errorf("%w: DELTA v%d declares a %d-byte result, too short for a trailer", ErrMalformed, h.Version, h.ResultLen)
	case h.Ops == 0:
		return DeltaHeader{}, nil, fmt.Errorf("%w: DELTA v%d has no ops", ErrMalformed, h.Version)
	}
	return h, p[deltaHeaderSize:], nil
}

// DeltaEncoder writes DELTA payloads. It keeps one zstd encoder for its
// lifetime and switches dictionaries with ResetWithOptions (deps.md §4: a
// new encoder per version allocates ~20 MB). Safe for concurrent use; calls
// are serialized.
type DeltaEncoder struct {
	mu  sync.Mutex
	enc *zstd.Encoder
	ops []deltaOp
}

type deltaOp struct {
	code           byte
	off, n         int // COPY: base range; LITERAL/ZSTD: new-file range
	dictOff, dictN int // ZSTD
}

// NewDeltaEncoder returns a DeltaEncoder at zstd's default level (the
// fastest level makes poor use of a dictionary, deps.md §4).
func NewDeltaEncoder() (*DeltaEncoder, error) {
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1), zstd.WithEncoderLevel(zstd.SpeedDefault))
	if err != nil {
		return nil, fmt.Errorf("wire: create zstd delta encoder: %w", err)
	}
	return &DeltaEncoder{enc: enc}, nil
}

// Close releases the encoder.
func (e *DeltaEncoder) Close() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.enc.Close()
}

type span struct{ off, n int }

// layout returns a snapshot's shard ranges by shard index and its gaps (the
// non-shard ranges, trailer included) in file order.
func layout(s *fbs.Snapshot) (shards []span, gaps []span) {
	shards = make([]span, s.NumShards())
	for i := range shards {
		off, n := s.ShardRange(i)
		shards[i] = span{off, n}
	}
	ordered := slices.Clone(shards)
	slices.SortFunc(ordered, func(a, b span) int { return a.off - b.off })
	pos := 0
	for _, sh := range ordered {
		gaps = append(gaps, span{pos, sh.off - pos}) // may be empty: keeps gap j before ordered shard j
		pos = sh.off + sh.n
	}
	gaps = append(gaps, span{pos, len(s.Bytes()) - pos})
	return shards, gaps
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
	bShards, bGaps := layout(base)
	nShards, nGaps := layout(next)

	// Unchanged shards are found by content, wherever they sit in the base.
	byHash := make(map[uint64]span, len(bShards))
	for _, sh := range bShards {
		byHash[xxhash.Sum64(bb[sh.off:sh.off+sh.n])] = sh
	}
	rootDict := bGaps[0]
	for _, g := range bGaps {
		if g.n > rootDict.n {
			rootDict = g
		}
	}
	shardAt := make(map[int]int, len(nShards)) // new offset -> shard index
	for i, sh := range nShards {
		shardAt[sh.off] = i
	}
	ordered := slices.Clone(nShards)
	slices.SortFunc(ordered, func(a, b span) int { return a.off - b.off })

	e.mu.Lock()
	defer e.mu.Unlock()
	ops := e.ops[:0]
	addGap := func(j int, g span) {
		if g.n == 0 {
			return
		}
		if j < len(bGaps) && bGaps[j].n == g.n && bytes.Equal(bb[bGaps[j].off:bGaps[j].off+g.n], nb[g.off:g.off+g.n]) {
			ops = append(ops, deltaOp{code: opCopy, off: bGaps[j].off, n: g.n})
			return
		}
		if g.n <= literalMax {
			ops = append(ops, deltaOp{code: opLiteral, off: g.off, n: g.n})
			return
		}
		ops = append(ops, deltaOp{code: opZstd, off: g.off, n: g.n, dictOff: rootDict.off, dictN: rootDict.n})
	}
	for j, sh := range ordered {
		addGap(j, nGaps[j])
		if sh.n == 0 {
			continue
		}
		data := nb[sh.off : sh.off+sh.n]
		if b, ok := byHash[xxhash.Sum64(data)]; ok && b.n == sh.n && bytes.Equal(bb[b.off:b.off+b.n], data) {
			ops = append(ops, deltaOp{code: opCopy, off: b.off, n: sh.n})
			continue
		}
		dict := rootDict
		if i := shardAt[sh.off]; i < len(bShards) && bShards[i].n > 0 {
			dict = bShards[i]
		}
		ops = append(ops, deltaOp{code: opZstd, off: sh.off, n: sh.n, dictOff: dict.off, dictN: dict.n})
	}
	addGap(len(ordered), nGaps[len(ordered)])

	// Adjacent copies of adjacent base ranges become one op: a one-shard
	// change in 256 shards then costs a handful of ops, not hundreds.
	merged := ops[:0]
	for _, op := range ops {
		if k := len(merged) - 1; k >= 0 && op.code == opCopy && merged[k].code == opCopy && merged[k].off+merged[k].n == op.off {
			merged[k].n += op.n
			continue
		}
		merged = append(merged, op)
	}
	e.ops = merged

	dst = binary.BigEndian.AppendUint64(dst, next.Version())
	dst = binary.BigEndian.AppendUint64(dst, base.Version())
	dst = binary.BigEndian.AppendUint64(dst, FileHash(bb))
	dst = binary.BigEndian.AppendUint64(dst, FileHash(nb))
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(nb)))
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(merged)))
	for _, op := range merged {
		switch op.code {
		case opCopy:
			dst = append(dst, opCopy)
			dst = binary.BigEndian.AppendUint32(dst, uint32(op.off))
			dst = binary.BigEndian.AppendUint32(dst, uint32(op.n))
		case opLiteral:
			dst = appendLiteral(dst, nb[op.off:op.off+op.n])
		case opZstd:
			raw := nb[op.off : op.off+op.n]
			if err := e.enc.ResetWithOptions(nil, zstd.WithEncoderDictRaw(dictID, bb[op.dictOff:op.dictOff+op.dictN])); err != nil {
				return dst, fmt.Errorf("wire: delta v%d: set zstd dictionary: %w", next.Version(), err)
			}
			start := len(dst)
			dst = append(dst, opZstd)
			dst = binary.BigEndian.AppendUint32(dst, uint32(op.dictOff))
			dst = binary.BigEndian.AppendUint32(dst, uint32(op.dictN))
			dst = binary.BigEndian.AppendUint32(dst, uint32(op.n))
			dst = binary.BigEndian.AppendUint32(dst, 0) // compressed length, set below
			body := len(dst)
			dst = e.enc.EncodeAll(raw, dst)
			if cl := len(dst) - body; cl < len(raw)+4 {
				binary.BigEndian.PutUint32(dst[body-4:body], uint32(cl))
			} else {
				// Incompressible against its dictionary: literal is smaller.
				dst = appendLiteral(dst[:start], raw)
			}
		}
	}
	return dst, nil
}

func appendLiteral(dst, raw []byte) []byte {
	dst = append(dst, opLiteral)
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(raw)))
	return append(dst, raw...)
}

// DeltaDecoder rebuilds snapshots from DELTA payloads. It reuses one zstd
// decoder, swapping its dictionary per region, so it is not safe for
// concurrent use.
type DeltaDecoder struct {
	dec *zstd.Decoder
	max int
}

// NewDeltaDecoder returns a DeltaDecoder that refuses results above maxRaw
// bytes (DefaultMaxPayload if maxRaw <= 0).
func NewDeltaDecoder(maxRaw int) (*DeltaDecoder, error) {
	if maxRaw <= 0 {
		maxRaw = DefaultMaxPayload
	}
	dec, err := zstd.NewReader(nil,
		zstd.WithDecoderConcurrency(1),
		zstd.WithDecoderMaxMemory(uint64(maxRaw)),
		// Each region decodes into exactly its declared room (see Apply).
		zstd.WithDecodeAllCapLimit(true))
	if err != nil {
		return nil, fmt.Errorf("wire: create zstd delta decoder: %w", err)
	}
	return &DeltaDecoder{dec: dec, max: maxRaw}, nil
}

// Close releases the decoder.
func (d *DeltaDecoder) Close() { d.dec.Close() }

// Apply rebuilds the snapshot file a DELTA payload p describes from base,
// into dst's memory when it is large enough (a new buffer otherwise). The
// result's trailer is checked against its content and the declared hash;
// the caller still verifies the structure with fbs.Open. A DELTA that names
// another base than base wraps ErrDeltaBase; anything inconsistent wraps
// ErrMalformed.
func (d *DeltaDecoder) Apply(dst, base, p []byte) (DeltaHeader, []byte, error) {
	h, ops, err := DecodeDeltaHeader(p)
	if err != nil {
		return DeltaHeader{}, nil, err
	}
	if uint64(h.ResultLen) > uint64(d.max) {
		return DeltaHeader{}, nil, fmt.Errorf("%w: DELTA v%d declares a %d-byte snapshot, limit %d", ErrTooLarge, h.Version, h.ResultLen, d.max)
	}
	if got := FileHash(base); got != h.BaseHash {
		return DeltaHeader{}, nil, fmt.Errorf("%w: DELTA v%d wants base v%d with hash %#016x, have %#016x", ErrDeltaBase, h.Version, h.BaseVersion, h.BaseHash, got)
	}
	// Each op is at least 9 bytes, so a hostile op count fails here, not
	// after a loop.
	if uint64(h.Ops)*9 > uint64(len(ops)) {
		return DeltaHeader{}, nil, fmt.Errorf("%w: DELTA v%d declares %d ops in %d bytes", ErrMalformed, h.Version, h.Ops, len(ops))
	}
	// The dictionary references base, which may be a mapping the caller
	// unmaps later; drop it whichever way Apply returns.
	defer d.dec.ResetWithOptions(nil, zstd.WithDecoderDictDelete(dictID))

	n := int(h.ResultLen)
	out := dst[:0]
	if cap(out) < n {
		out = make([]byte, 0, n)
	}
	for i := range int(h.Ops) {
		if len(ops) < 1 {
			return DeltaHeader{}, nil, fmt.Errorf("%w: DELTA v%d op %d: truncated", ErrMalformed, h.Version, i)
		}
		code := ops[0]
		ops = ops[1:]
		switch code {
		case opCopy:
			if len(ops) < 8 {
				return DeltaHeader{}, nil, fmt.Errorf("%w: DELTA v%d op %d: truncated COPY", ErrMalformed, h.Version, i)
			}
			off, ln := uint64(binary.BigEndian.Uint32(ops[0:4])), uint64(binary.BigEndian.Uint32(ops[4:8]))
			ops = ops[8:]
			if ln == 0 || off+ln > uint64(len(base)) {
				return DeltaHeader{}, nil, fmt.Errorf("%w: DELTA v%d op %d: COPY %d bytes at %d outside the %d-byte base", ErrDeltaBase, h.Version, i, ln, off, len(base))
			}
			if ln > uint64(n-len(out)) {
				return DeltaHeader{}, nil, fmt.Errorf("%w: DELTA v%d op %d: COPY overruns the declared %d bytes", ErrMalformed, h.Version, i, n)
			}
			out = append(out, base[off:off+ln]...)
		case opLiteral:
			if len(ops) < 4 {
				return DeltaHeader{}, nil, fmt.Errorf("%w: DELTA v%d op %d: truncated LITERAL", ErrMalformed, h.Version, i)
			}
			ln := uint64(binary.BigEndian.Uint32(ops[0:4]))
			ops = ops[4:]
			if ln == 0 || ln > uint64(len(ops)) || ln > uint64(n-len(out)) {
				return DeltaHeader{}, nil, fmt.Errorf("%w: DELTA v%d op %d: LITERAL of %d bytes does not fit", ErrMalformed, h.Version, i, ln)
			}
			out = append(out, ops[:ln]...)
			ops = ops[ln:]
		case opZstd:
			if len(ops) < 16 {
				return DeltaHeader{}, nil, fmt.Errorf("%w: DELTA v%d op %d: truncated ZSTD", ErrMalformed, h.Version, i)
			}
			doff := uint64(binary.BigEndian.Uint32(ops[0:4]))
			dn := uint64(binary.BigEndian.Uint32(ops[4:8]))
			raw := uint64(binary.BigEndian.Uint32(ops[8:12]))
			cl := uint64(binary.BigEndian.Uint32(ops[12:16]))
			ops = ops[16:]
			if dn == 0 || doff+dn > uint64(len(base)) {
				return DeltaHeader{}, nil, fmt.Errorf("%w: DELTA v%d op %d: dictionary of %d bytes at %d outside the %d-byte base", ErrDeltaBase, h.Version, i, dn, doff, len(base))
			}
			if raw == 0 || raw > uint64(n-len(out)) || cl == 0 || cl > uint64(len(ops)) {
				return DeltaHeader{}, nil, fmt.Errorf("%w: DELTA v%d op %d: ZSTD region (%d raw, %d compressed) does not fit", ErrMalformed, h.Version, i, raw, cl)
			}
			frame := ops[:cl]
			ops = ops[cl:]
			var zh zstd.Header
			if err := zh.Decode(frame); err != nil {
				return DeltaHeader{}, nil, fmt.Errorf("%w: DELTA v%d op %d: zstd frame header: %v", ErrMalformed, h.Version, i, err)
			}
			if zh.HasFCS && zh.FrameContentSize != raw {
				return DeltaHeader{}, nil, fmt.Errorf("%w: DELTA v%d op %d: zstd frame says %d bytes, op says %d", ErrMalformed, h.Version, i, zh.FrameContentSize, raw)
			}
			if err := d.dec.ResetWithOptions(nil, zstd.WithDecoderDictDelete(dictID), zstd.WithDecoderDictRaw(dictID, base[doff:doff+dn])); err != nil {
				return DeltaHeader{}, nil, fmt.Errorf("wire: DELTA v%d op %d: set zstd dictionary: %w", h.Version, i, err)
			}
			start := len(out)
			got, err := d.dec.DecodeAll(frame, out[:start:start+int(raw)])
			if err != nil {
				return DeltaHeader{}, nil, fmt.Errorf("%w: DELTA v%d op %d: zstd data: %v", ErrMalformed, h.Version, i, err)
			}
			if len(got) != start+int(raw) {
				return DeltaHeader{}, nil, fmt.Errorf("%w: DELTA v%d op %d: zstd region decoded to %d bytes, op says %d", ErrMalformed, h.Version, i, len(got)-start, raw)
			}
			out = out[:len(got)]
		default:
			return DeltaHeader{}, nil, fmt.Errorf("%w: DELTA v%d op %d: unknown op code %d", ErrMalformed, h.Version, i, code)
		}
	}
	if len(ops) != 0 {
		return DeltaHeader{}, nil, fmt.Errorf("%w: DELTA v%d has %d bytes after its last op", ErrMalformed, h.Version, len(ops))
	}
	if len(out) != n {
		return DeltaHeader{}, nil, fmt.Errorf("%w: DELTA v%d rebuilt %d bytes, header says %d", ErrMalformed, h.Version, len(out), n)
	}
	if sum := xxhash.Sum64(out[:n-8]); sum != FileHash(out) || sum != h.ResultHash {
		return DeltaHeader{}, nil, fmt.Errorf("%w: DELTA v%d rebuilt a file hashing to %#016x, trailer %#016x, header %#016x", ErrMalformed, h.Version, sum, FileHash(out), h.ResultHash)
	}
	return h, out, nil
}
