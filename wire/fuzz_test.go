package wire

import (
	"bytes"
	"testing"
)

func FuzzReader(f *testing.F) {
	hb := AppendFrame(nil, TypeHeartbeat, AppendHeartbeat(nil, Heartbeat{LatestVersion: 1, UnixNano: 2}))
	f.Add(hb)
	f.Add(append(bytes.Clone(hb), AppendFrame(nil, TypeAck, AppendAck(nil, Ack{Version: 3}))...))
	f.Add(hb[:7])
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		r := NewReader(bytes.NewReader(b), 1<<16)
		for i := 0; i < 64; i++ {
			typ, p, err := r.Next()
			if err != nil {
				return
			}
			if !typ.Known() || len(p) > 1<<16 {
				t.Fatalf("accepted type %d with %d bytes", typ, len(p))
			}
			// Whatever the reader accepts re-encodes to the same bytes.
			if re := AppendFrame(nil, typ, p); !bytes.Contains(b, re) {
				t.Fatalf("accepted frame does not round-trip")
			}
		}
	})
}

func FuzzDecodeHello(f *testing.F) {
	p, _ := AppendHello(nil, Hello{NodeID: "edge-1", HaveVersion: 9})
	f.Add(p)
	f.Add([]byte{0, 0, 0, 0, 0, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := DecodeHello(b)
		if err != nil {
			return
		}
		re, err := AppendHello(nil, h)
		if err != nil || !bytes.Equal(re, b) {
			t.Fatalf("decoded %+v does not re-encode to the input: %v", h, err)
		}
	})
}

func FuzzDecodeAck(f *testing.F) {
	f.Add(AppendAck(nil, Ack{Version: 5}))
	f.Fuzz(func(t *testing.T, b []byte) {
		a, err := DecodeAck(b)
		if err == nil && !bytes.Equal(AppendAck(nil, a), b) {
			t.Fatal("ACK does not round-trip")
		}
	})
}

func FuzzDecodeNack(f *testing.F) {
	f.Add(AppendNack(nil, Nack{Version: 5, Reason: "verify: corrupt"}))
	f.Add(AppendNack(nil, Nack{Version: 5}))
	f.Fuzz(func(t *testing.T, b []byte) {
		n, err := DecodeNack(b)
		if err == nil && !bytes.Equal(AppendNack(nil, n), b) {
			t.Fatal("NACK does not round-trip")
		}
	})
}

func FuzzDecodeHeartbeat(f *testing.F) {
	f.Add(AppendHeartbeat(nil, Heartbeat{LatestVersion: 5, UnixNano: 1e18}))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := DecodeHeartbeat(b)
		if err == nil && !bytes.Equal(AppendHeartbeat(nil, h), b) {
			t.Fatal("HEARTBEAT does not round-trip")
		}
	})
}

func FuzzDecodeFull(f *testing.F) {
	comp, err := NewCompressor()
	if err != nil {
		f.Fatal(err)
	}
	snap := testSnapshot(4096)
	f.Add(comp.AppendFull(nil, Full{Version: 2, Snapshot: snap}))
	f.Add(AppendFull(nil, Full{Version: 2, Snapshot: snap[:100]}))
	comp.Close()
	dec, err := NewDecompressor(1 << 16)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		h, _, herr := DecodeFullHeader(b)
		m, err := dec.DecodeFull(b)
		if err != nil {
			return
		}
		if herr != nil || m.Version != h.Version || len(m.Snapshot) != int(h.RawLen) || len(m.Snapshot) > 1<<16 {
			t.Fatalf("accepted FULL v%d of %d bytes against header %+v (%v)", m.Version, len(m.Snapshot), h, herr)
		}
	})
}
