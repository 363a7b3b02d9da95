package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"unicode/utf8"
)

// ErrMalformed is wrapped by every message decoder when the payload does not
// have exactly the shape its type requires.
var ErrMalformed = errors.New("wire: malformed message")

// Limits of the variable-length message fields.
const (
	MaxNodeID = 128  // bytes in a HELLO node id
	MaxReason = 1024 // bytes in a NACK reason
)

// NonceSize is the length of the handshake nonces each side contributes.
const NonceSize = 32

// Hello is the first message an edge sends on a new stream.
type Hello struct {
	NodeID      string // 1..MaxNodeID bytes of visible ASCII (0x21..0x7e)
	HaveVersion uint64 // snapshot version in service, 0 if none
	// HaveHash is the in-service snapshot file's trailer (xxhash64 of the
	// file), 0 if none: ctrl sends a DELTA from HaveVersion only if its copy
	// of that version has the same hash.
	HaveHash uint64
	// Nonce is the edge's fresh random handshake nonce.
	Nonce [NonceSize]byte
}

// Full carries a whole snapshot. Snapshot holds the uncompressed bytes.
type Full struct {
	Version  uint64
	Snapshot []byte
	// Replace tells the edge that the snapshot it serves is not from ctrl's
	// history (ctrl's data was lost or restored from a backup): it must take
	// this one even if Version is not above its own. Without it an edge
	// never goes backwards.
	Replace bool
}

// Ack reports that an edge applied (or already serves) Version.
type Ack struct{ Version uint64 }

// Nack reports that an edge refused Version and why.
type Nack struct {
	Version uint64
	Reason  string // at most MaxReason bytes of valid UTF-8
}

// Heartbeat keeps a stream alive in both directions and carries the sender's
// latest known snapshot version, that snapshot file's hash and its clock.
// The hash makes a heartbeat confirm content, not just a version number: an
// edge whose v6 came from another ctrl history must not count as current
// when this ctrl reaches its own v6.
type Heartbeat struct {
	LatestVersion uint64
	Hash          uint64 // FileHash of LatestVersion's file, 0 if none or unknown
	UnixNano      int64
}

// ValidNodeID reports why id is not an acceptable node id, or nil.
func ValidNodeID(id string) error {
	if len(id) == 0 || len(id) > MaxNodeID {
		return fmt.Errorf("%w: node id is %d bytes, want 1..%d", ErrMalformed, len(id), MaxNodeID)
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; c < 0x21 || c > 0x7e {
			return fmt.Errorf("%w: node id byte %d is %#02x, want visible ASCII", ErrMalformed, i, c)
		}
	}
	return nil
}

// helloFixed is have version (u64) + have hash (u64) + nonce + id length (u8).
const helloFixed = 8 + 8 + NonceSize + 1

// AppendHello appends the HELLO payload: have version (u64), have hash
// (u64), nonce, id length (u8), id. It refuses an id that DecodeHello would
// refuse.
func AppendHello(dst []byte, m Hello) ([]byte, error) {
	if err := ValidNodeID(m.NodeID); err != nil {
		return dst, err
	}
	dst = binary.BigEndian.AppendUint64(dst, m.HaveVersion)
	dst = binary.BigEndian.AppendUint64(dst, m.HaveHash)
	dst = append(dst, m.Nonce[:]...)
	dst = append(dst, byte(len(m.NodeID)))
	return append(dst, m.NodeID...), nil
}

// DecodeHello decodes a HELLO payload strictly.
func DecodeHello(p []byte) (Hello, error) {
	if len(p) < helloFixed {
		return Hello{}, fmt.Errorf("%w: HELLO is %d bytes, want at least %d", ErrMalformed, len(p), helloFixed+1)
	}
	n := int(p[helloFixed-1])
	if len(p) != helloFixed+n {
		return Hello{}, fmt.Errorf("%w: HELLO is %d bytes, node id length %d wants %d", ErrMalformed, len(p), n, helloFixed+n)
	}
	id := p[helloFixed:]
	if err := ValidNodeID(string(id)); err != nil {
		return Hello{}, fmt.Errorf("HELLO: %w", err)
	}
	h := Hello{
		NodeID:      string(id),
		HaveVersion: binary.BigEndian.Uint64(p[0:8]),
		HaveHash:    binary.BigEndian.Uint64(p[8:16]),
	}
	copy(h.Nonce[:], p[16:16+NonceSize])
	return h, nil
}

// AppendAck appends the ACK payload: version (u64).
func AppendAck(dst []byte, m Ack) []byte { return binary.BigEndian.AppendUint64(dst, m.Version) }

// DecodeAck decodes an ACK payload strictly.
func DecodeAck(p []byte) (Ack, error) {
	if len(p) != 8 {
		return Ack{}, fmt.Errorf("%w: ACK is %d bytes, want 8", ErrMalformed, len(p))
	}
	return Ack{Version: binary.BigEndian.Uint64(p)}, nil
}

// AppendNack appends the NACK payload: version (u64), reason length (u16),
// reason. A reason longer than MaxReason is cut at a rune boundary and
// invalid UTF-8 is replaced, so any error text can be sent.
func AppendNack(dst []byte, m Nack) []byte {
	r := m.Reason
	if !utf8.ValidString(r) {
		r = toValidUTF8(r)
	}
	if len(r) > MaxReason {
		cut := MaxReason
		for cut > 0 && !utf8.RuneStart(r[cut]) {
			cut--
		}
		r = r[:cut]
	}
	dst = binary.BigEndian.AppendUint64(dst, m.Version)
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(r)))
	return append(dst, r...)
}

func toValidUTF8(s string) string {
	b := make([]byte, 0, len(s))
	for len(s) > 0 {
		r, n := utf8.DecodeRuneInString(s)
		if r == utf8.RuneError && n == 1 {
			b = append(b, '?')
		} else {
			b = append(b, s[:n]...)
		}
		s = s[n:]
	}
	return string(b)
}

// DecodeNack decodes a NACK payload strictly.
func DecodeNack(p []byte) (Nack, error) {
	if len(p) < 10 {
		return Nack{}, fmt.Errorf("%w: NACK is %d bytes, want at least 10", ErrMalformed, len(p))
	}
	n := int(binary.BigEndian.Uint16(p[8:10]))
	if n > MaxReason {
		return Nack{}, fmt.Errorf("%w: NACK reason is %d bytes, limit %d", ErrMalformed, n, MaxReason)
	}
	if len(p) != 10+n {
		return Nack{}, fmt.Errorf("%w: NACK is %d bytes, reason length %d wants %d", ErrMalformed, len(p), n, 10+n)
	}
	if !utf8.Valid(p[10:]) {
		return Nack{}, fmt.Errorf("%w: NACK reason is not valid UTF-8", ErrMalformed)
	}
	return Nack{Version: binary.BigEndian.Uint64(p[0:8]), Reason: string(p[10:])}, nil
}

// AppendHeartbeat appends the HEARTBEAT payload: latest version (u64),
// file hash (u64), unix nanos (i64).
func AppendHeartbeat(dst []byte, m Heartbeat) []byte {
	dst = binary.BigEndian.AppendUint64(dst, m.LatestVersion)
	dst = binary.BigEndian.AppendUint64(dst, m.Hash)
	return binary.BigEndian.AppendUint64(dst, uint64(m.UnixNano))
}

// DecodeHeartbeat decodes a HEARTBEAT payload strictly.
func DecodeHeartbeat(p []byte) (Heartbeat, error) {
	if len(p) != 24 {
		return Heartbeat{}, fmt.Errorf("%w: HEARTBEAT is %d bytes, want 24", ErrMalformed, len(p))
	}
	return Heartbeat{
		LatestVersion: binary.BigEndian.Uint64(p[0:8]),
		Hash:          binary.BigEndian.Uint64(p[8:16]),
		UnixNano:      int64(binary.BigEndian.Uint64(p[16:24])),
	}, nil
}
