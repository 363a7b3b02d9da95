package wire

import (
	"bytes"
	"reflect"
	"slices"
	"testing"
)

func FuzzReader(f *testing.F) {
	hb := AppendFrame(nil, TypeHeartbeat, AppendHeartbeat(nil, Heartbeat{LatestVersion: 1, UnixNano: 2}))
	f.Add(hb)
	f.Add(append(bytes.Clone(hb), AppendFrame(nil, TypeAck, AppendAck(nil, Ack{Version: 3}))...))
	f.Add(hb[:7])
	f.Add([]byte{})
	rp, _ := AppendReport(nil, Report{Observations: []Observation{{Cluster: "c", Endpoint: "127.0.0.1:1", Cause: CauseConnect, Revision: 1}}})
	f.Add(AppendFrame(nil, TypeReport, rp))
	f.Fuzz(func(t *testing.T, b []byte) {
		r := NewReader(bytes.NewReader(b), 1<<16)
		for i := 0; i < 64; i++ {
			typ, p, err := r.Next()
			if err != nil {
				return
			}
			if !knownIn(typ, r.Version()) || len(p) > 1<<16 {
				t.Fatalf("accepted type %d in version %d with %d bytes", typ, r.Version(), len(p))
			}
			// Whatever the reader accepts re-encodes to the same bytes.
			h := make([]byte, HeaderSize)
			putHeader(h, r.Version(), typ, len(p), p)
			if re := append(h, p...); !bytes.Contains(b, re) {
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
	f.Add(AppendHeartbeat(nil, Heartbeat{LatestVersion: 6, Hash: 0xfeedface, UnixNano: -1}))
	f.Add(make([]byte, 16)) // a protocol-1 heartbeat
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
	f.Add(comp.AppendFull(nil, Full{Version: 2, Snapshot: snap, Replace: true}))
	f.Add(AppendFull(nil, Full{Version: 1, Snapshot: snap[:10], Replace: true}))
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
		if herr != nil || m.Version != h.Version || m.Replace != h.Replace || len(m.Snapshot) != int(h.RawLen) || len(m.Snapshot) > 1<<16 {
			t.Fatalf("accepted FULL v%d of %d bytes against header %+v (%v)", m.Version, len(m.Snapshot), h, herr)
		}
	})
}

func FuzzDecodeChallenge(f *testing.F) {
	f.Add(AppendChallenge(nil, Challenge{Nonce: [NonceSize]byte{1}, Proof: [ProofSize]byte{2}}))
	f.Add([]byte{1, 2, 3})
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := DecodeChallenge(b)
		if err == nil && !bytes.Equal(AppendChallenge(nil, c), b) {
			t.Fatal("CHALLENGE does not round-trip")
		}
	})
}

func FuzzDecodeProof(f *testing.F) {
	f.Add(AppendProof(nil, Proof{MAC: [ProofSize]byte{7}}))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		pr, err := DecodeProof(b)
		if err == nil && !bytes.Equal(AppendProof(nil, pr), b) {
			t.Fatal("PROOF does not round-trip")
		}
	})
}

// FuzzDeltaApply feeds random and mutated DELTA payloads to the decoder
// against a real base: it must never panic, never exceed its size limit,
// and anything it accepts must be exactly the file the header's hash names
// (for the seeds: the real next snapshot).
func FuzzDeltaApply(f *testing.F) {
	bst := genState(300, 10)
	base := mustSnap(f, bst)
	enc, err := NewDeltaEncoder()
	if err != nil {
		f.Fatal(err)
	}
	nexts := map[uint64][]byte{}
	for _, st := range edits(bst) {
		next := mustSnap(f, st)
		p, err := enc.AppendDelta(nil, base, next)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(p)
		nexts[FileHash(next.Bytes())] = next.Bytes()
	}
	other := genState(300, 11)
	other.Shards = 8
	p, err := enc.AppendDelta(nil, base, mustSnap(f, other))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(p)
	enc.Close()
	f.Add([]byte{})
	const limit = 4 << 20
	dec, err := NewDeltaDecoder(limit)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		h, hrest, herr := DecodeDeltaHeader(b)
		dh, out, err := dec.Apply(nil, base, b)
		if err != nil {
			return
		}
		if herr != nil || dh != h || len(hrest) == 0 {
			t.Fatalf("Apply accepted what DecodeDeltaHeader refuses: %v", herr)
		}
		if len(out) != int(h.ResultLen) || len(out) > limit || FileHash(out) != h.ResultHash {
			t.Fatalf("accepted a %d-byte result for header %+v", len(out), h)
		}
		if want, ok := nexts[h.ResultHash]; ok && !bytes.Equal(out, want) {
			t.Fatal("accepted a file that differs from the one its hash names")
		}
	})
}

func FuzzDecodeReport(f *testing.F) {
	p, _ := AppendReport(nil, Report{Observations: []Observation{
		{Cluster: "api", Endpoint: "10.0.0.1:8080", Cause: CauseReset, Revision: 1 << 40, UnixNano: 5},
		{Cluster: "web", Endpoint: "[::1]:80", OK: true, Cause: CauseRecovered, Revision: 2},
	}})
	f.Add(p)
	f.Add(p[:len(p)-1])
	p5, _ := AppendReport(nil, Report{Observations: []Observation{
		{Cluster: "api", Endpoint: "10.0.0.1:8080", Cause: Cause5xx, Revision: 7, UnixNano: 9},
		{Cluster: "api", Endpoint: "10.0.0.1:8080", OK: true, Cause: CauseRecovered, Revision: 8},
	}})
	f.Add(p5)
	p5[2+17] = byte(Cause5xx + 1) // the first unknown cause
	f.Add(p5)
	f.Add([]byte{0, 1})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := DecodeReportIn(Report{}, b, ProtocolVersion)
		m3, err3 := DecodeReportIn(Report{}, b, 3)
		if err3 == nil && (err != nil || !reflect.DeepEqual(m3, m)) {
			t.Fatalf("version 3 accepts what %d refuses or reads it differently: %v", ProtocolVersion, err)
		}
		if err != nil {
			return
		}
		// Version 3 refuses exactly the reports that carry Cause5xx.
		if has5xx := slices.ContainsFunc(m.Observations, func(o Observation) bool { return o.Cause == Cause5xx }); has5xx != (err3 != nil) {
			t.Fatalf("version 3: 5xx present %t, refused: %v", has5xx, err3)
		}
		// Whatever decodes re-encodes to the same bytes.
		re, err := AppendReport(nil, m)
		if err != nil {
			t.Fatalf("decoded report does not encode: %v", err)
		}
		if !bytes.Equal(re, b) {
			t.Fatalf("report does not round-trip")
		}
	})
}
