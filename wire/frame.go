// Package wire implements the snapshot stream between ctrl and its edges:
// length-prefixed, CRC-32C checksummed frames and the message codecs carried
// in them (HELLO, CHALLENGE, PROOF, FULL, DELTA, ACK, NACK, HEARTBEAT,
// REPORT) and
// the shard-wise delta codec. docs/stream.md describes the protocol.
//
// Frame layout (12-byte header, then the payload):
//
//	0..3   payload length, uint32 big endian
//	4      protocol version (2, 3 or 4)
//	5      message type
//	6..7   flags, uint16 big endian, must be 0
//	8..11  CRC-32C (Castagnoli) over header bytes 0..7 and the payload
package wire

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"net"
)

// HeaderSize is the fixed frame header length in bytes.
const HeaderSize = 12

// ProtocolVersion is the newest frame version this package speaks, and
// MinProtocolVersion the oldest. 2 added the file hash to HEARTBEAT and the
// flags byte (replace) to FULL; a peer speaking 1 is refused at the first
// frame with ErrBadVersion rather than misreading those messages. 3 adds
// REPORT and changes nothing else, so a version-3 side talks to a version-2
// peer by framing in 2: ctrl answers in the version of the edge's HELLO,
// and an edge sends REPORT only when ctrl answered in 3 (docs/stream.md).
// 4 adds the REPORT cause Cause5xx, which a version-3 ctrl refuses as
// malformed; an edge in a version-3 session drops those observations.
const (
	ProtocolVersion    = 4
	MinProtocolVersion = 2
)

// DefaultMaxPayload bounds a frame payload when the caller has no opinion:
// big enough for a compressed snapshot of several hundred thousand routes.
const DefaultMaxPayload = 64 << 20

// MaxEdgePayload bounds every frame payload an edge sends once it has
// authenticated; ctrl refuses larger ones. Edges send small messages, and
// split a long REPORT to fit (FitReport).
const MaxEdgePayload = 64 << 10

// Type is a frame's message type.
type Type uint8

// Message types. REPORT exists from protocol version 3: in a version-2
// frame it is an unknown type.
const (
	TypeHello     Type = 1
	TypeFull      Type = 2
	TypeAck       Type = 3
	TypeNack      Type = 4
	TypeHeartbeat Type = 5
	TypeDelta     Type = 6
	TypeReport    Type = 7
	TypeChallenge Type = 8
	TypeProof     Type = 9
)

// Known reports whether t is a message type this package understands.
func (t Type) Known() bool {
	return (t >= TypeHello && t <= TypeReport) || t == TypeChallenge || t == TypeProof
}

func (t Type) String() string {
	switch t {
	case TypeHello:
		return "HELLO"
	case TypeFull:
		return "FULL"
	case TypeAck:
		return "ACK"
	case TypeNack:
		return "NACK"
	case TypeHeartbeat:
		return "HEARTBEAT"
	case TypeDelta:
		return "DELTA"
	case TypeReport:
		return "REPORT"
	case TypeChallenge:
		return "CHALLENGE"
	case TypeProof:
		return "PROOF"
	}
	return fmt.Sprintf("type(%d)", uint8(t))
}

// Frame errors. Reader and Writer wrap them with the details, so test with
// errors.Is.
var (
	ErrBadVersion  = errors.New("wire: unsupported protocol version")
	ErrBadChecksum = errors.New("wire: frame checksum mismatch")
	ErrTooLarge    = errors.New("wire: frame payload too large")
	ErrUnknownType = errors.New("wire: unknown message type")
	ErrBadFlags    = errors.New("wire: nonzero frame flags")
	ErrTruncated   = errors.New("wire: truncated frame")
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// knownIn reports whether t exists in protocol version v.
func knownIn(t Type, v uint8) bool { return t.Known() && (t != TypeReport || v >= 3) }

func putHeader(h []byte, v uint8, t Type, n int, payload []byte) {
	binary.BigEndian.PutUint32(h[0:4], uint32(n))
	h[4] = v
	h[5] = byte(t)
	binary.BigEndian.PutUint16(h[6:8], 0)
	crc := crc32.Update(0, castagnoli, h[0:8])
	crc = crc32.Update(crc, castagnoli, payload)
	binary.BigEndian.PutUint32(h[8:12], crc)
}

// AppendFrame appends one ProtocolVersion frame carrying payload to dst.
// The caller keeps len(payload) within uint32 and t a known type; Writer
// checks both.
func AppendFrame(dst []byte, t Type, payload []byte) []byte {
	var h [HeaderSize]byte
	putHeader(h[:], ProtocolVersion, t, len(payload), payload)
	dst = append(dst, h[:]...)
	return append(dst, payload...)
}

// readAhead is the Reader's buffer. A frame's header and a small payload
// usually arrive together, and often a HEARTBEAT or the next frame behind
// them: one read syscall then takes them all, where reading the header and
// the payload separately cost two per frame (on ctrl, 400 per version at 200
// edges, for 20-byte ACK frames). Payloads larger than the buffer are read
// straight into the payload buffer, so a snapshot is not copied twice.
const readAhead = 4 << 10

// firstGrowth is the most the payload buffer grows by before any of the
// payload has arrived. The declared length is the peer's word: allocating it
// up front let a 12-byte header cost the other side up to the limit (64 MiB
// and more) per connection. Growing from here by doubling keeps the memory
// within about twice the bytes received, for one copy of the payload in all.
const firstGrowth = 64 << 10

// Reader reads frames from a stream. It reads ahead, so the stream must not
// be read other than through it. It is not safe for concurrent use.
type Reader struct {
	r   *bufio.Reader
	max int
	hdr [HeaderSize]byte
	buf []byte
	ver uint8
}

// NewReader returns a Reader that refuses payloads above maxPayload bytes
// (DefaultMaxPayload if maxPayload <= 0).
func NewReader(r io.Reader, maxPayload int) *Reader {
	rd := &Reader{r: bufio.NewReaderSize(r, readAhead)}
	rd.SetMaxPayload(maxPayload)
	return rd
}

// SetMaxPayload changes the largest payload the following frames may carry
// (DefaultMaxPayload if maxPayload <= 0). Both ends of the stream read the
// handshake with MaxHandshakePayload, then raise the limit once the peer
// has proved the secret.
func (r *Reader) SetMaxPayload(maxPayload int) {
	if maxPayload <= 0 {
		maxPayload = DefaultMaxPayload
	}
	r.max = maxPayload
}

// Next reads the next frame. The payload aliases an internal buffer that is
// reused, so it is valid only until the following call. A stream that ends
// cleanly between frames returns io.EOF. Every header check runs before the
// payload is read, and the buffer grows only as payload bytes arrive
// (firstGrowth), so neither a hostile length nor a peer that stalls after
// the header costs more memory than the bytes it sent.
func (r *Reader) Next() (Type, []byte, error) {
	if _, err := io.ReadFull(r.r, r.hdr[:]); err != nil {
		if err == io.EOF {
			return 0, nil, io.EOF
		}
		if err == io.ErrUnexpectedEOF {
			return 0, nil, fmt.Errorf("%w: header: %w", ErrTruncated, err)
		}
		return 0, nil, fmt.Errorf("wire: read frame header: %w", err)
	}
	h := r.hdr[:]
	n := binary.BigEndian.Uint32(h[0:4])
	if h[4] < MinProtocolVersion || h[4] > ProtocolVersion {
		return 0, nil, fmt.Errorf("%w: got %d, want %d..%d", ErrBadVersion, h[4], MinProtocolVersion, ProtocolVersion)
	}
	t := Type(h[5])
	if !knownIn(t, h[4]) {
		return 0, nil, fmt.Errorf("%w: %d in a version %d frame", ErrUnknownType, uint8(t), h[4])
	}
	r.ver = h[4]
	if f := binary.BigEndian.Uint16(h[6:8]); f != 0 {
		return 0, nil, fmt.Errorf("%w: %s frame has flags %#04x", ErrBadFlags, t, f)
	}
	if uint64(n) > uint64(r.max) {
		return 0, nil, fmt.Errorf("%w: %s frame declares %d bytes, limit %d", ErrTooLarge, t, n, r.max)
	}
	p, err := r.payload(int(n))
	if err != nil {
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return 0, nil, fmt.Errorf("%w: %s payload of %d bytes: %w", ErrTruncated, t, n, io.ErrUnexpectedEOF)
		}
		return 0, nil, fmt.Errorf("wire: read %s payload: %w", t, err)
	}
	crc := crc32.Update(0, castagnoli, h[0:8])
	crc = crc32.Update(crc, castagnoli, p)
	if want := binary.BigEndian.Uint32(h[8:12]); crc != want {
		return 0, nil, fmt.Errorf("%w: %s frame of %d bytes: computed %#08x, header says %#08x", ErrBadChecksum, t, n, crc, want)
	}
	return t, p, nil
}

// payload reads n payload bytes into the reused buffer, filling the memory
// it has first and growing it only when that is full: by firstGrowth, then
// doubling, capped at n.
func (r *Reader) payload(n int) ([]byte, error) {
	if n <= cap(r.buf) {
		p := r.buf[:n]
		_, err := io.ReadFull(r.r, p)
		return p, err
	}
	p := r.buf[:cap(r.buf)]
	got := 0
	for {
		k, err := io.ReadFull(r.r, p[got:])
		got += k
		if err != nil {
			return nil, err
		}
		if got == n {
			return p, nil
		}
		grown := make([]byte, min(n, max(2*got, firstGrowth)))
		copy(grown, p[:got])
		p, r.buf = grown, grown
	}
}

// Version is the protocol version of the last frame Next returned.
func (r *Reader) Version() uint8 { return r.ver }

// smallFrame is the payload size up to which Writer copies the payload next
// to the header for one write call; above it, the payload is sent with writev
// so a multi-megabyte snapshot is never copied.
const smallFrame = 4 << 10

// Writer writes frames to a stream. It is not safe for concurrent use.
type Writer struct {
	w   io.Writer
	buf []byte
	ver uint8
}

// NewWriter returns a Writer on w that frames in ProtocolVersion.
func NewWriter(w io.Writer) *Writer { return &Writer{w: w, ver: ProtocolVersion} }

// SetVersion makes the Writer frame in protocol version v, to talk to an
// older peer.
func (w *Writer) SetVersion(v uint8) error {
	if v < MinProtocolVersion || v > ProtocolVersion {
		return fmt.Errorf("%w: cannot write version %d, want %d..%d", ErrBadVersion, v, MinProtocolVersion, ProtocolVersion)
	}
	w.ver = v
	return nil
}

// Version is the protocol version the Writer frames in.
func (w *Writer) Version() uint8 { return w.ver }

// WriteFrame writes one frame of type t carrying payload.
func (w *Writer) WriteFrame(t Type, payload []byte) error {
	if !knownIn(t, w.ver) {
		return fmt.Errorf("%w: refusing to write type %d in a version %d frame", ErrUnknownType, uint8(t), w.ver)
	}
	if uint64(len(payload)) > 0xFFFFFFFF {
		return fmt.Errorf("%w: %s payload of %d bytes exceeds the uint32 length field", ErrTooLarge, t, len(payload))
	}
	if len(payload) <= smallFrame {
		var h [HeaderSize]byte
		putHeader(h[:], w.ver, t, len(payload), payload)
		w.buf = append(append(w.buf[:0], h[:]...), payload...)
		if _, err := w.w.Write(w.buf); err != nil {
			return fmt.Errorf("wire: write %s frame: %w", t, err)
		}
		return nil
	}
	if cap(w.buf) < HeaderSize {
		w.buf = make([]byte, HeaderSize, smallFrame+HeaderSize)
	}
	h := w.buf[:HeaderSize]
	putHeader(h, w.ver, t, len(payload), payload)
	bufs := net.Buffers{h, payload}
	if _, err := bufs.WriteTo(w.w); err != nil {
		return fmt.Errorf("wire: write %s frame: %w", t, err)
	}
	return nil
}
