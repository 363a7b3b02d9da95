package wire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/snapgate/snapgate/fbs"
)

// genState returns a deterministic state with n routes over n/16+1 clusters.
func genState(n int, version uint64) fbs.State {
	rng := rand.New(rand.NewPCG(uint64(n), 0x5eed))
	st := fbs.State{Version: version, ParentVersion: version - 1}
	nc := n/16 + 1
	for i := range nc {
		st.Clusters = append(st.Clusters, fbs.Cluster{
			Name:      fmt.Sprintf("cluster-%05d", i),
			Endpoints: []fbs.Endpoint{{Address: fmt.Sprintf("10.%d.%d.1:8080", i/250%250, i%250)}},
		})
	}
	for i := range n {
		st.Routes = append(st.Routes, fbs.Route{
			ID:      fmt.Sprintf("route-%06d", i),
			Host:    fmt.Sprintf("svc%d.example.com", i%(n/8+1)),
			Prefix:  fmt.Sprintf("/api/%d/v%d", i, rng.IntN(3)),
			Cluster: st.Clusters[rng.IntN(nc)].Name,
		})
	}
	return st
}

func mustSnap(tb testing.TB, st fbs.State) *fbs.Snapshot {
	tb.Helper()
	b, err := fbs.Build(st)
	if err != nil {
		tb.Fatalf("Build v%d: %v", st.Version, err)
	}
	s, err := fbs.Open(b)
	if err != nil {
		tb.Fatalf("Open v%d: %v", st.Version, err)
	}
	return s
}

// edits returns the one-route changes the delta target is about.
func edits(base fbs.State) map[string]fbs.State {
	next := func() fbs.State {
		s := base
		s.Version, s.ParentVersion = base.Version+1, base.Version
		s.Routes = append([]fbs.Route(nil), base.Routes...)
		return s
	}
	if len(base.Routes) < 50 {
		return map[string]fbs.State{"unchanged": next()}
	}
	add := next()
	add.Routes = append(add.Routes, fbs.Route{ID: "route-new", Host: "new.example.com", Prefix: "/fresh", Cluster: base.Clusters[0].Name})
	del := next()
	del.Routes = append(del.Routes[:17], del.Routes[18:]...)
	chg := next()
	chg.Routes[42].Cluster = base.Clusters[len(base.Clusters)-1].Name
	same := next()
	return map[string]fbs.State{"add": add, "delete": del, "change-cluster": chg, "unchanged": same}
}

func roundTrip(tb testing.TB, enc *DeltaEncoder, dec *DeltaDecoder, base, next *fbs.Snapshot) int {
	tb.Helper()
	p, err := enc.AppendDelta(nil, base, next)
	if err != nil {
		tb.Fatalf("AppendDelta: %v", err)
	}
	h, out, err := dec.Apply(nil, base, p)
	if err != nil {
		tb.Fatalf("Apply: %v", err)
	}
	if h.Version != next.Version() || h.BaseVersion != base.Version() || !bytes.Equal(out, next.Bytes()) {
		tb.Fatalf("delta v%d→v%d did not rebuild the file (header %+v)", base.Version(), next.Version(), h)
	}
	return len(p)
}

// deltaCodec is a DeltaEncoder and a DeltaDecoder (no size limit), closed
// when the test ends.
func deltaCodec(t testing.TB) (*DeltaEncoder, *DeltaDecoder) {
	t.Helper()
	enc, err := NewDeltaEncoder()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { enc.Close() })
	dec, err := NewDeltaDecoder(0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dec.Close() })
	return enc, dec
}

func TestDeltaRoundTrip(t *testing.T) {
	enc, dec := deltaCodec(t)
	for _, n := range []int{0, 10, 5000} {
		bst := genState(n, 10)
		base := mustSnap(t, bst)
		for name, st := range edits(bst) {
			size := roundTrip(t, enc, dec, base, mustSnap(t, st))
			t.Logf("%d routes, %s: full %d B, delta %d B", n, name, len(base.Bytes()), size)
			if n == 5000 && size > 4096 {
				t.Errorf("%d routes, %s: delta is %d bytes, want < 4 KiB", n, name, size)
			}
		}
	}
	// A different shard count rewrites every shard; the delta still works.
	base := mustSnap(t, genState(300, 10))
	st := genState(300, 11)
	st.Shards = 128
	roundTrip(t, enc, dec, base, mustSnap(t, st))
}

// changeClusterDelta is a DELTA from a 2000-route base to the same state
// with one route's cluster changed.
func changeClusterDelta(t testing.TB, enc *DeltaEncoder) (base, next *fbs.Snapshot, p []byte) {
	t.Helper()
	bst := genState(2000, 10)
	base = mustSnap(t, bst)
	next = mustSnap(t, edits(bst)["change-cluster"])
	p, err := enc.AppendDelta(nil, base, next)
	if err != nil {
		t.Fatal(err)
	}
	return base, next, p
}

func TestDeltaRejects(t *testing.T) {
	enc, dec := deltaCodec(t)
	base, next, p := changeClusterDelta(t, enc)
	if _, err := enc.AppendDelta(nil, next, base); err == nil {
		t.Fatal("AppendDelta accepted a delta that goes backwards")
	}
	other := mustSnap(t, genState(2001, 10))
	if _, _, err := dec.Apply(nil, other, p); !errors.Is(err, ErrDeltaBase) {
		t.Fatalf("Apply on the wrong base: %v, want ErrDeltaBase", err)
	}
	// Every single-byte corruption past the header is refused or, if it
	// lands in a COPY op's unused value space, still rebuilds exactly next.
	rng := rand.New(rand.NewPCG(1, 2))
	for range 300 {
		q := bytes.Clone(p)
		i := rng.IntN(len(q))
		q[i] ^= byte(1 + rng.IntN(255))
		_, out, err := dec.Apply(nil, base, q)
		if err == nil && !bytes.Equal(out, next.Bytes()) {
			t.Fatalf("flipping byte %d gave a different file that passed the hash check", i)
		}
	}
	small, _ := NewDeltaDecoder(100)
	defer small.Close()
	if _, _, err := small.Apply(nil, base, p); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Apply above the size limit: %v, want ErrTooLarge", err)
	}
	for _, cut := range []int{0, 10, deltaHeaderSize, len(p) - 1} {
		if _, _, err := dec.Apply(nil, base, p[:cut]); err == nil {
			t.Fatalf("Apply accepted a DELTA cut to %d bytes", cut)
		}
	}
}

// BenchmarkDeltaSize100k reports the wire size of a one-route change in a
// 100,000-route snapshot (target: under 4 KiB), with encode and decode cost.
func BenchmarkDeltaSize100k(b *testing.B) {
	bst := genState(100_000, 10)
	base := mustSnap(b, bst)
	enc, _ := NewDeltaEncoder()
	defer enc.Close()
	dec, _ := NewDeltaDecoder(0)
	defer dec.Close()
	for _, name := range []string{"add", "delete", "change-cluster"} {
		next := mustSnap(b, edits(bst)[name])
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			var p, out []byte
			var err error
			for b.Loop() {
				if p, err = enc.AppendDelta(p[:0], base, next); err != nil {
					b.Fatal(err)
				}
				if _, out, err = dec.Apply(out, base, p); err != nil {
					b.Fatal(err)
				}
			}
			if !bytes.Equal(out, next.Bytes()) {
				b.Fatal("rebuilt file differs")
			}
			b.ReportMetric(float64(len(p)+HeaderSize), "wire-bytes")
			b.ReportMetric(float64(len(base.Bytes())), "full-bytes")
			if len(p)+HeaderSize >= 4096 {
				b.Errorf("%s: %d bytes on the wire, want < 4 KiB", name, len(p)+HeaderSize)
			}
		})
	}
}

// BenchmarkDeltaEncode1k and BenchmarkDeltaApply1k measure each side of a
// one-route change in a 1,000-route snapshot on its own: ctrl encodes once
// per change, every edge applies it.
func BenchmarkDeltaEncode1k(b *testing.B) {
	bst := genState(1_000, 10)
	base, next := mustSnap(b, bst), mustSnap(b, edits(bst)["change-cluster"])
	enc, _ := NewDeltaEncoder()
	defer enc.Close()
	b.ReportAllocs()
	var p []byte
	var err error
	for b.Loop() {
		if p, err = enc.AppendDelta(p[:0], base, next); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(len(p)+HeaderSize), "wire-bytes")
}

func BenchmarkDeltaApply1k(b *testing.B) {
	bst := genState(1_000, 10)
	base, next := mustSnap(b, bst), mustSnap(b, edits(bst)["change-cluster"])
	enc, _ := NewDeltaEncoder()
	defer enc.Close()
	p, err := enc.AppendDelta(nil, base, next)
	if err != nil {
		b.Fatal(err)
	}
	dec, _ := NewDeltaDecoder(0)
	defer dec.Close()
	b.ReportAllocs()
	var out []byte
	for b.Loop() {
		if _, out, err = dec.Apply(out, base, p); err != nil {
			b.Fatal(err)
		}
	}
	if !bytes.Equal(out, next.Bytes()) {
		b.Fatal("rebuilt file differs")
	}
}

// A FULL or DELTA is one zstd frame to its end (docs/stream.md): another
// frame after it, skippable or not, is refused. The decoder took any
// number of concatenated frames and skipped skippable ones.
func TestTrailingFrameRefused(t *testing.T) {
	skippable := func(junk []byte) []byte {
		b := binary.LittleEndian.AppendUint32(nil, 0x184D2A50)
		b = binary.LittleEndian.AppendUint32(b, uint32(len(junk)))
		return append(b, junk...)
	}
	emptyFrame := func() []byte {
		e, err := zstd.NewWriter(nil)
		if err != nil {
			t.Fatal(err)
		}
		defer e.Close()
		return e.EncodeAll(nil, nil)
	}()
	enc, dec := deltaCodec(t)
	base, next, p := changeClusterDelta(t, enc)
	comp, err := NewCompressor()
	if err != nil {
		t.Fatal(err)
	}
	defer comp.Close()
	full := comp.AppendFull(nil, Full{Version: 11, Snapshot: next.Bytes()})
	d, err := NewDecompressor(0)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if _, out, err := dec.Apply(nil, base, p); err != nil || !bytes.Equal(out, next.Bytes()) {
		t.Fatalf("the DELTA itself: %v", err)
	}
	if f, err := d.DecodeFull(full); err != nil || !bytes.Equal(f.Snapshot, next.Bytes()) {
		t.Fatalf("the FULL itself: %v", err)
	}
	for name, extra := range map[string][]byte{"a skippable frame": skippable([]byte("junk")), "an empty frame": emptyFrame} {
		if _, _, err := dec.Apply(nil, base, append(bytes.Clone(p), extra...)); err == nil {
			t.Errorf("DELTA followed by %s accepted", name)
		}
		if _, err := d.DecodeFull(append(bytes.Clone(full), extra...)); err == nil {
			t.Errorf("FULL followed by %s accepted", name)
		}
	}
}
