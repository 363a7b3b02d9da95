package wire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"

	"github.com/klauspost/compress/zstd"
)

func testSnapshot(n int) []byte {
	var b []byte
	for i := 0; len(b) < n; i++ {
		b = binary.BigEndian.AppendUint32(b, uint32(i%977))
		b = append(b, "route/api/v1/"...)
	}
	return b[:n]
}

func TestFullRoundTrip(t *testing.T) {
	comp, err := NewCompressor()
	if err != nil {
		t.Fatal(err)
	}
	defer comp.Close()
	dec, err := NewDecompressor(1 << 20)
	if err != nil {
		t.Fatal(err)
	}
	defer dec.Close()
	snap := testSnapshot(300 << 10)

	z := comp.AppendFull(nil, Full{Version: 12, Snapshot: snap})
	if len(z) >= len(snap)/2 {
		t.Fatalf("zstd FULL is %d bytes for a %d-byte snapshot", len(z), len(snap))
	}
	got, err := dec.DecodeFull(z)
	if err != nil || got.Version != 12 || !bytes.Equal(got.Snapshot, snap) {
		t.Fatalf("zstd: v%d %d bytes, %v", got.Version, len(got.Snapshot), err)
	}
	raw := AppendFull(nil, Full{Version: 13, Snapshot: snap})
	got, err = dec.DecodeFull(raw)
	if err != nil || got.Version != 13 || !bytes.Equal(got.Snapshot, snap) {
		t.Fatalf("raw: v%d %d bytes, %v", got.Version, len(got.Snapshot), err)
	}
	// The buffer is reused: a smaller snapshot after a bigger one decodes right.
	small := testSnapshot(1000)
	got, err = dec.DecodeFull(comp.AppendFull(nil, Full{Version: 14, Snapshot: small}))
	if err != nil || !bytes.Equal(got.Snapshot, small) {
		t.Fatalf("second decode: %v", err)
	}
}

func TestFullDecodeErrors(t *testing.T) {
	comp, err := NewCompressor()
	if err != nil {
		t.Fatal(err)
	}
	defer comp.Close()
	dec, err := NewDecompressor(64 << 10)
	if err != nil {
		t.Fatal(err)
	}
	defer dec.Close()
	snap := testSnapshot(10 << 10)
	z := comp.AppendFull(nil, Full{Version: 3, Snapshot: snap})
	withRawLen := func(p []byte, n uint32) []byte {
		p = bytes.Clone(p)
		binary.BigEndian.PutUint32(p[10:14], n)
		return p
	}
	// A bomb: 8 MiB of zeros compresses to a few hundred bytes. Declared as
	// small, it must fail once output passes the declared length.
	// The streaming encoder writes no content size, so only the output cap
	// can stop it.
	var bombBuf bytes.Buffer
	enc, _ := zstd.NewWriter(&bombBuf, zstd.WithEncoderConcurrency(1))
	enc.Write(make([]byte, 8<<20))
	enc.Close()
	bomb := bombBuf.Bytes()
	var zh zstd.Header
	if err := zh.Decode(bomb); err != nil || zh.HasFCS {
		t.Fatalf("bomb frame header %+v, %v: want no content size", zh, err)
	}
	bombFrame := append(appendFullHeader(nil, FullHeader{Version: 4, Codec: CodecZstd, RawLen: 1000}), bomb...)

	cases := []struct {
		name string
		in   []byte
		want error
	}{
		{"short", make([]byte, 12), ErrMalformed},
		{"version 0", AppendFull(nil, Full{Version: 0, Snapshot: []byte{1}}), ErrMalformed},
		{"empty", AppendFull(nil, Full{Version: 1}), ErrMalformed},
		{"raw length mismatch", withRawLen(AppendFull(nil, Full{Version: 1, Snapshot: []byte{1, 2}}), 3), ErrMalformed},
		{"unknown codec", func() []byte { p := AppendFull(nil, Full{Version: 1, Snapshot: []byte{1}}); p[8] = 2; return p }(), ErrMalformed},
		{"above max", withRawLen(z, 65<<10), ErrTooLarge},
		{"declared length differs from zstd frame", withRawLen(z, uint32(len(snap)-1)), ErrMalformed},
		{"corrupt zstd", func() []byte { p := bytes.Clone(z); p[len(p)/2] ^= 0xFF; return p }(), ErrMalformed},
		{"truncated zstd", z[:len(z)-10], ErrMalformed},
		{"not zstd", append(appendFullHeader(nil, FullHeader{Version: 1, Codec: CodecZstd, RawLen: 4}), "abcd"...), ErrMalformed},
		{"bomb", bombFrame, ErrMalformed},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if _, err := dec.DecodeFull(c.in); !errors.Is(err, c.want) {
				t.Fatalf("got %v, want %v", err, c.want)
			}
		})
	}
	if cap(dec.buf) > 64<<10 {
		t.Fatalf("decoder buffer grew to %d bytes", cap(dec.buf))
	}
}

func BenchmarkDecodeFullZstd(b *testing.B) {
	comp, _ := NewCompressor()
	defer comp.Close()
	dec, _ := NewDecompressor(0)
	defer dec.Close()
	snap := testSnapshot(1 << 20)
	z := comp.AppendFull(nil, Full{Version: 1, Snapshot: snap})
	b.SetBytes(int64(len(snap)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := dec.DecodeFull(z); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkAppendFullZstd(b *testing.B) {
	comp, _ := NewCompressor()
	defer comp.Close()
	snap := testSnapshot(1 << 20)
	var dst []byte
	b.SetBytes(int64(len(snap)))
	b.ReportAllocs()
	for b.Loop() {
		dst = comp.AppendFull(dst[:0], Full{Version: 1, Snapshot: snap})
	}
}

func BenchmarkReaderNext(b *testing.B) {
	payload := make([]byte, 16)
	one := AppendFrame(nil, TypeHeartbeat, payload)
	stream := bytes.Repeat(one, 1024)
	br := bytes.NewReader(stream)
	r := NewReader(br, 0)
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := r.Next(); err != nil {
			br.Reset(stream)
		}
	}
}

// The replace flag survives both codecs and AsReplace; unknown flag bits are
// malformed, so a later flag is never silently ignored.
func TestFullReplaceFlag(t *testing.T) {
	comp, err := NewCompressor()
	if err != nil {
		t.Fatal(err)
	}
	defer comp.Close()
	dec, err := NewDecompressor(1 << 20)
	if err != nil {
		t.Fatal(err)
	}
	defer dec.Close()
	snap := testSnapshot(2048)
	for _, p := range [][]byte{AppendFull(nil, Full{Version: 4, Snapshot: snap}), comp.AppendFull(nil, Full{Version: 4, Snapshot: snap})} {
		m, err := dec.DecodeFull(p)
		if err != nil || m.Replace {
			t.Fatalf("plain FULL: replace=%v err=%v", m.Replace, err)
		}
		r, err := AsReplace(p)
		if err != nil {
			t.Fatal(err)
		}
		m, err = dec.DecodeFull(r)
		if err != nil || !m.Replace || m.Version != 4 || !bytes.Equal(m.Snapshot, snap) {
			t.Fatalf("replace FULL: v%d replace=%v err=%v", m.Version, m.Replace, err)
		}
		if m, err := dec.DecodeFull(p); err != nil || m.Replace {
			t.Fatalf("AsReplace changed its input: replace=%v err=%v", m.Replace, err)
		}
		bad := bytes.Clone(p)
		bad[fullFlagsAt] = 0x02
		if _, _, err := DecodeFullHeader(bad); !errors.Is(err, ErrMalformed) {
			t.Fatalf("unknown flag: got %v, want ErrMalformed", err)
		}
	}
	if _, err := AsReplace([]byte{1, 2}); !errors.Is(err, ErrMalformed) {
		t.Fatalf("AsReplace of garbage: got %v", err)
	}
}
