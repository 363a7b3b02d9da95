package wire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"strings"
	"testing"
)

func TestFrameRoundTrip(t *testing.T) {
	big := bytes.Repeat([]byte("snapshot"), 2048) // above smallFrame: exercises writev
	var stream bytes.Buffer
	w := NewWriter(&stream)
	in := []struct {
		t Type
		p []byte
	}{
		{TypeHello, []byte("hello")},
		{TypeFull, big},
		{TypeAck, nil},
		{TypeNack, []byte("x")},
		{TypeHeartbeat, make([]byte, 16)},
	}
	for _, f := range in {
		if err := w.WriteFrame(f.t, f.p); err != nil {
			t.Fatal(err)
		}
	}
	if !bytes.Equal(stream.Bytes()[:HeaderSize+5], AppendFrame(nil, TypeHello, []byte("hello"))) {
		t.Fatal("Writer and AppendFrame disagree")
	}
	r := NewReader(&stream, len(big))
	for i, f := range in {
		typ, p, err := r.Next()
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if typ != f.t || !bytes.Equal(p, f.p) {
			t.Fatalf("frame %d: got %s %d bytes, want %s %d bytes", i, typ, len(p), f.t, len(f.p))
		}
	}
	if _, _, err := r.Next(); err != io.EOF {
		t.Fatalf("after last frame: got %v, want io.EOF", err)
	}
}

func TestReaderErrors(t *testing.T) {
	good := AppendFrame(nil, TypeAck, AppendAck(nil, Ack{Version: 7}))
	mut := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(good)) }
	reCRC := func(b []byte) []byte {
		// Recompute the checksum so only the intended check can fail.
		h := b[:HeaderSize]
		putHeader(h, h[4], Type(h[5]), int(binary.BigEndian.Uint32(h[0:4])), b[HeaderSize:])
		return b
	}
	cases := []struct {
		name string
		in   []byte
		max  int
		want error
	}{
		{"bad version", mut(func(b []byte) []byte { b[4] = 1; return b }), 0, ErrBadVersion},
		{"future version", mut(func(b []byte) []byte { b[4] = ProtocolVersion + 1; return b }), 0, ErrBadVersion},
		{"unknown type 0", mut(func(b []byte) []byte { b[5] = 0; return b }), 0, ErrUnknownType},
		{"unknown type 10", mut(func(b []byte) []byte { b[5] = 10; return b }), 0, ErrUnknownType},
		{"report in version 2", reCRC(mut(func(b []byte) []byte { b[4], b[5] = 2, byte(TypeReport); return b })), 0, ErrUnknownType},
		{"flags", mut(func(b []byte) []byte { b[7] = 1; return b }), 0, ErrBadFlags},
		{"payload bit flip", mut(func(b []byte) []byte { b[HeaderSize+3] ^= 0x10; return b }), 0, ErrBadChecksum},
		{"crc bit flip", mut(func(b []byte) []byte { b[11] ^= 1; return b }), 0, ErrBadChecksum},
		{"length changed", mut(func(b []byte) []byte { b[3] = 7; return b }), 0, ErrBadChecksum},
		{"too large", good, 7, ErrTooLarge},
		{"huge declared length", reCRC(mut(func(b []byte) []byte { binary.BigEndian.PutUint32(b, 0xFFFFFFF0); return b })), 0, ErrTooLarge},
		{"truncated header", good[:5], 0, ErrTruncated},
		{"truncated payload", good[:HeaderSize+3], 0, ErrTruncated},
		{"header only", good[:HeaderSize], 0, ErrTruncated},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, _, err := NewReader(bytes.NewReader(c.in), c.max).Next()
			if !errors.Is(err, c.want) {
				t.Fatalf("got %v, want %v", err, c.want)
			}
		})
	}
}

// A declared length above the limit must be refused before the buffer grows.
func TestReaderRefusesBeforeAllocating(t *testing.T) {
	h := make([]byte, HeaderSize)
	putHeader(h, ProtocolVersion, TypeFull, 1<<30, nil)
	r := NewReader(bytes.NewReader(h), 1<<20)
	if _, _, err := r.Next(); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("got %v, want ErrTooLarge", err)
	}
	if cap(r.buf) != 0 {
		t.Fatalf("reader allocated %d bytes for a refused frame", cap(r.buf))
	}
}

func TestWriterRefusesUnknownType(t *testing.T) {
	if err := NewWriter(io.Discard).WriteFrame(10, nil); !errors.Is(err, ErrUnknownType) {
		t.Fatalf("got %v, want ErrUnknownType", err)
	}
	w := NewWriter(io.Discard)
	if err := w.SetVersion(MinProtocolVersion); err != nil {
		t.Fatal(err)
	}
	if err := w.WriteFrame(TypeReport, []byte{0}); !errors.Is(err, ErrUnknownType) {
		t.Fatalf("REPORT at version 2: got %v, want ErrUnknownType", err)
	}
	if err := w.SetVersion(ProtocolVersion + 1); !errors.Is(err, ErrBadVersion) {
		t.Fatalf("SetVersion(%d): got %v, want ErrBadVersion", ProtocolVersion+1, err)
	}
}

// A version-2 peer's frames are read, and a Writer set to 2 produces them:
// ctrl answers an old edge in its own version.
func TestVersionTwoFrames(t *testing.T) {
	var stream bytes.Buffer
	w := NewWriter(&stream)
	if err := w.SetVersion(2); err != nil {
		t.Fatal(err)
	}
	if err := w.WriteFrame(TypeAck, AppendAck(nil, Ack{Version: 5})); err != nil {
		t.Fatal(err)
	}
	if err := NewWriter(&stream).WriteFrame(TypeAck, AppendAck(nil, Ack{Version: 6})); err != nil {
		t.Fatal(err)
	}
	if got := stream.Bytes()[4]; got != 2 {
		t.Fatalf("first frame version %d, want 2", got)
	}
	r := NewReader(&stream, 0)
	for _, want := range []uint8{2, ProtocolVersion} {
		typ, _, err := r.Next()
		if err != nil || typ != TypeAck || r.Version() != want {
			t.Fatalf("got %s version %d err %v, want ACK version %d", typ, r.Version(), err, want)
		}
	}
}

func TestMessageRoundTrips(t *testing.T) {
	hp, err := AppendHello(nil, Hello{NodeID: "edge-1.eu", HaveVersion: 42})
	if err != nil {
		t.Fatal(err)
	}
	if h, err := DecodeHello(hp); err != nil || h != (Hello{NodeID: "edge-1.eu", HaveVersion: 42}) {
		t.Fatalf("hello: %+v %v", h, err)
	}
	if a, err := DecodeAck(AppendAck(nil, Ack{Version: 1 << 63})); err != nil || a.Version != 1<<63 {
		t.Fatalf("ack: %+v %v", a, err)
	}
	n := Nack{Version: 9, Reason: "verify: trailer hash mismatch"}
	if got, err := DecodeNack(AppendNack(nil, n)); err != nil || got != n {
		t.Fatalf("nack: %+v %v", got, err)
	}
	hb := Heartbeat{LatestVersion: 5, Hash: 0xdeadbeefcafe, UnixNano: -3}
	if got, err := DecodeHeartbeat(AppendHeartbeat(nil, hb)); err != nil || got != hb {
		t.Fatalf("heartbeat: %+v %v", got, err)
	}
	// A protocol-1 heartbeat had no hash; it must not be read as one.
	if _, err := DecodeHeartbeat(make([]byte, 16)); !errors.Is(err, ErrMalformed) {
		t.Fatalf("16-byte heartbeat: got %v, want ErrMalformed", err)
	}
}

func TestNackReasonSanitized(t *testing.T) {
	long := strings.Repeat("é", MaxReason) // 2 bytes each: the cut lands mid-rune
	got, err := DecodeNack(AppendNack(nil, Nack{Version: 1, Reason: long}))
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Reason) != MaxReason || !strings.HasPrefix(long, got.Reason) {
		t.Fatalf("reason cut to %d bytes", len(got.Reason))
	}
	got, err = DecodeNack(AppendNack(nil, Nack{Version: 1, Reason: "bad \xff byte"}))
	if err != nil || got.Reason != "bad ? byte" {
		t.Fatalf("got %q %v", got.Reason, err)
	}
}

func TestMessageDecodeErrors(t *testing.T) {
	hello := func(id string) []byte {
		b := binary.BigEndian.AppendUint64(nil, 1)
		b = append(b, byte(len(id)))
		return append(b, id...)
	}
	nack := func(n int, reason string) []byte {
		b := binary.BigEndian.AppendUint64(nil, 1)
		b = binary.BigEndian.AppendUint16(b, uint16(n))
		return append(b, reason...)
	}
	cases := []struct {
		name string
		dec  func([]byte) error
		in   []byte
	}{
		{"hello short", decHello, []byte{1, 2, 3}},
		{"hello empty id", decHello, hello("")},
		{"hello space in id", decHello, hello("a b")},
		{"hello control byte", decHello, hello("a\x00")},
		{"hello id too long", decHello, hello(strings.Repeat("a", 129))},
		{"hello trailing byte", decHello, append(hello("a"), 'x')},
		{"hello length past end", decHello, hello("abc")[:10]},
		{"ack short", decAck, make([]byte, 7)},
		{"ack long", decAck, make([]byte, 9)},
		{"nack short", decNack, make([]byte, 9)},
		{"nack length mismatch", decNack, nack(3, "ab")},
		{"nack trailing", decNack, nack(1, "ab")},
		{"nack reason too long", decNack, nack(MaxReason+1, strings.Repeat("a", MaxReason+1))},
		{"nack invalid utf8", decNack, nack(1, "\xff")},
		{"heartbeat short", decHeartbeat, make([]byte, 15)},
		{"heartbeat long", decHeartbeat, make([]byte, 17)},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if err := c.dec(c.in); !errors.Is(err, ErrMalformed) {
				t.Fatalf("got %v, want ErrMalformed", err)
			}
		})
	}
	if _, err := AppendHello(nil, Hello{NodeID: ""}); !errors.Is(err, ErrMalformed) {
		t.Fatalf("AppendHello accepted an empty node id: %v", err)
	}
}

func decHello(b []byte) error     { _, err := DecodeHello(b); return err }
func decAck(b []byte) error       { _, err := DecodeAck(b); return err }
func decNack(b []byte) error      { _, err := DecodeNack(b); return err }
func decHeartbeat(b []byte) error { _, err := DecodeHeartbeat(b); return err }
