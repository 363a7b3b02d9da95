package wire

import (
	"encoding/binary"
	"fmt"

	"github.com/klauspost/compress/zstd"
)

// Codec says how a FULL payload's snapshot bytes are encoded.
type Codec uint8

// FULL codecs.
const (
	CodecRaw  Codec = 0
	CodecZstd Codec = 1
)

func (c Codec) String() string {
	switch c {
	case CodecRaw:
		return "raw"
	case CodecZstd:
		return "zstd"
	}
	return fmt.Sprintf("codec(%d)", uint8(c))
}

// fullHeaderSize is version (u64) + codec (u8) + flags (u8) + raw length (u32).
const fullHeaderSize = 14

// fullFlagsAt is the offset of the flags byte in a FULL payload.
const fullFlagsAt = 9

// FULL flags. Any other bit set is malformed.
const fullFlagReplace = 0x01

// FullHeader is the fixed part of a FULL payload.
type FullHeader struct {
	Version uint64
	Codec   Codec
	Replace bool   // see Full.Replace
	RawLen  uint32 // length of the snapshot after decoding
}

func appendFullHeader(dst []byte, h FullHeader) []byte {
	dst = binary.BigEndian.AppendUint64(dst, h.Version)
	dst = append(dst, byte(h.Codec))
	var flags byte
	if h.Replace {
		flags |= fullFlagReplace
	}
	dst = append(dst, flags)
	return binary.BigEndian.AppendUint32(dst, h.RawLen)
}

// AppendFull appends an uncompressed FULL payload (codec raw). The caller
// keeps the snapshot within uint32 bytes.
func AppendFull(dst []byte, m Full) []byte {
	dst = appendFullHeader(dst, FullHeader{Version: m.Version, Codec: CodecRaw, Replace: m.Replace, RawLen: uint32(len(m.Snapshot))})
	return append(dst, m.Snapshot...)
}

// AsReplace returns a copy of a valid FULL payload with the replace flag
// set, so a snapshot compressed once can also be sent to a diverged edge.
func AsReplace(full []byte) ([]byte, error) {
	if _, _, err := DecodeFullHeader(full); err != nil {
		return nil, err
	}
	out := append([]byte(nil), full...)
	out[fullFlagsAt] |= fullFlagReplace
	return out, nil
}

// DecodeFullHeader splits a FULL payload into its header and encoded data,
// checking everything that does not need decompression: version nonzero,
// known codec, a nonempty snapshot, and for raw data the exact length.
func DecodeFullHeader(p []byte) (FullHeader, []byte, error) {
	if len(p) < fullHeaderSize {
		return FullHeader{}, nil, fmt.Errorf("%w: FULL is %d bytes, want at least %d", ErrMalformed, len(p), fullHeaderSize+1)
	}
	flags := p[fullFlagsAt]
	h := FullHeader{
		Version: binary.BigEndian.Uint64(p[0:8]),
		Codec:   Codec(p[8]),
		Replace: flags&fullFlagReplace != 0,
		RawLen:  binary.BigEndian.Uint32(p[10:14]),
	}
	data := p[fullHeaderSize:]
	if flags&^fullFlagReplace != 0 {
		return FullHeader{}, nil, fmt.Errorf("%w: FULL v%d has unknown flags %#02x", ErrMalformed, h.Version, flags)
	}
	if h.Version == 0 {
		return FullHeader{}, nil, fmt.Errorf("%w: FULL carries version 0", ErrMalformed)
	}
	if h.RawLen == 0 || len(data) == 0 {
		return FullHeader{}, nil, fmt.Errorf("%w: FULL v%d is empty (raw length %d, %d data bytes)", ErrMalformed, h.Version, h.RawLen, len(data))
	}
	switch h.Codec {
	case CodecRaw:
		if uint64(len(data)) != uint64(h.RawLen) {
			return FullHeader{}, nil, fmt.Errorf("%w: raw FULL v%d has %d data bytes, header says %d", ErrMalformed, h.Version, len(data), h.RawLen)
		}
	case CodecZstd:
	default:
		return FullHeader{}, nil, fmt.Errorf("%w: FULL v%d has unknown codec %d", ErrMalformed, h.Version, uint8(h.Codec))
	}
	return h, data, nil
}

// Compressor encodes FULL payloads with zstd. It keeps one encoder for its
// lifetime: a new encoder per message costs ~20 MB of allocations (deps.md §4).
// Safe for concurrent use.
type Compressor struct {
	enc *zstd.Encoder
}

// NewCompressor returns a Compressor at zstd's default level.
func NewCompressor() (*Compressor, error) {
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1), zstd.WithEncoderLevel(zstd.SpeedDefault))
	if err != nil {
		return nil, fmt.Errorf("wire: create zstd encoder: %w", err)
	}
	return &Compressor{enc: enc}, nil
}

// AppendFull appends a zstd-compressed FULL payload for m to dst. The caller
// keeps the snapshot within uint32 bytes.
func (c *Compressor) AppendFull(dst []byte, m Full) []byte {
	dst = appendFullHeader(dst, FullHeader{Version: m.Version, Codec: CodecZstd, Replace: m.Replace, RawLen: uint32(len(m.Snapshot))})
	return c.enc.EncodeAll(m.Snapshot, dst)
}

// Close releases the encoder.
func (c *Compressor) Close() error { return c.enc.Close() }

// Decompressor decodes FULL payloads of either codec, refusing any snapshot
// above its configured maximum and any zstd data that does not decode to
// exactly the declared raw length. It reuses one zstd decoder and one output
// buffer, so it is not safe for concurrent use.
type Decompressor struct {
	dec *zstd.Decoder
	max int
	buf []byte
}

// NewDecompressor returns a Decompressor accepting snapshots of at most
// maxRaw bytes (DefaultMaxPayload if maxRaw <= 0).
func NewDecompressor(maxRaw int) (*Decompressor, error) {
	dec, maxRaw, err := newBoundedDecoder(maxRaw)
	if err != nil {
		return nil, err
	}
	return &Decompressor{dec: dec, max: maxRaw}, nil
}

// newBoundedDecoder returns a single-threaded zstd decoder that refuses
// output above maxRaw (DefaultMaxPayload if maxRaw <= 0), and the bound used.
// Its output is also bounded by cap(dst), which callers set to the declared
// raw length: a bomb fails as soon as it overflows, before it allocates.
func newBoundedDecoder(maxRaw int) (*zstd.Decoder, int, error) {
	if maxRaw <= 0 {
		maxRaw = DefaultMaxPayload
	}
	dec, err := zstd.NewReader(nil,
		zstd.WithDecoderConcurrency(1),
		zstd.WithDecoderMaxMemory(uint64(maxRaw)),
		zstd.WithDecodeAllCapLimit(true))
	if err != nil {
		return nil, 0, fmt.Errorf("wire: create zstd decoder: %w", err)
	}
	return dec, maxRaw, nil
}

// DecodeFull decodes a FULL payload. For codec raw Snapshot aliases p; for
// zstd it aliases the Decompressor's buffer, valid until the next call.
func (d *Decompressor) DecodeFull(p []byte) (Full, error) {
	h, data, err := DecodeFullHeader(p)
	if err != nil {
		return Full{}, err
	}
	if uint64(h.RawLen) > uint64(d.max) {
		return Full{}, fmt.Errorf("%w: FULL v%d declares a %d-byte snapshot, limit %d", ErrTooLarge, h.Version, h.RawLen, d.max)
	}
	if h.Codec == CodecRaw {
		return Full{Version: h.Version, Snapshot: data, Replace: h.Replace}, nil
	}
	var zh zstd.Header
	if err := zh.Decode(data); err != nil {
		return Full{}, fmt.Errorf("%w: FULL v%d zstd frame header: %v", ErrMalformed, h.Version, err)
	}
	if zh.HasFCS && zh.FrameContentSize != uint64(h.RawLen) {
		return Full{}, fmt.Errorf("%w: FULL v%d zstd frame says %d bytes, header says %d", ErrMalformed, h.Version, zh.FrameContentSize, h.RawLen)
	}
	if err := oneFrame(data, &zh); err != nil {
		return Full{}, fmt.Errorf("%w: FULL v%d: %v", ErrMalformed, h.Version, err)
	}
	n := int(h.RawLen)
	if cap(d.buf) < n {
		d.buf = make([]byte, 0, n)
	}
	out, err := d.dec.DecodeAll(data, d.buf[:0:n])
	if err != nil {
		return Full{}, fmt.Errorf("%w: FULL v%d zstd data: %v", ErrMalformed, h.Version, err)
	}
	if len(out) != n {
		return Full{}, fmt.Errorf("%w: FULL v%d decoded to %d bytes, header says %d", ErrMalformed, h.Version, len(out), n)
	}
	return Full{Version: h.Version, Snapshot: out, Replace: h.Replace}, nil
}

// Close releases the decoder.
func (d *Decompressor) Close() { d.dec.Close() }
