package feed

import (
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"syscall"
	"testing"

	"github.com/cespare/xxhash/v2"

	"github.com/snapgate/snapgate/edge/routing"
	"github.com/snapgate/snapgate/edge/snapstore"
	"github.com/snapgate/snapgate/edge/upstream"
	"github.com/snapgate/snapgate/fbs"
	"github.com/snapgate/snapgate/wire"
)

// state100k is the 100,000-route configuration of the edge benchmarks:
// 97 hosts, 6,251 clusters.
func state100k(version uint64) fbs.State {
	const n = 100_000
	st := fbs.State{Version: version, ParentVersion: version - 1}
	for c := range n/16 + 1 {
		st.Clusters = append(st.Clusters, fbs.Cluster{Name: fmt.Sprintf("c%d", c),
			Endpoints: []fbs.Endpoint{{Address: fmt.Sprintf("10.%d.%d.1:8080", c>>8&255, c&255)}}})
	}
	for i := range n {
		st.Routes = append(st.Routes, fbs.Route{ID: fmt.Sprintf("r%06d", i), Host: fmt.Sprintf("h%d.example", i%97),
			Prefix: fmt.Sprintf("/svc/%d/v1", i), Cluster: fmt.Sprintf("c%d", i/16)})
	}
	return st
}

// processCPU is the CPU time of the whole process (every thread: the GC's
// included) in nanoseconds.
func processCPU() int64 {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}

// deltaChain makes versions of state100k that each change one route, and
// the DELTA from each to the next, as ctrl does.
type deltaChain struct {
	st   fbs.State
	bld  fbs.Builder
	enc  *wire.DeltaEncoder
	last *fbs.Snapshot
}

func newDeltaChain(tb testing.TB) *deltaChain {
	c := &deltaChain{st: state100k(1)}
	var err error
	if c.enc, err = wire.NewDeltaEncoder(); err != nil {
		tb.Fatal(err)
	}
	if c.last, err = c.bld.BuildSnapshot(c.st); err != nil {
		tb.Fatal(err)
	}
	return c
}

// next builds the next version and returns its DELTA payload.
func (c *deltaChain) next(tb testing.TB) []byte {
	v := c.st.Version + 1
	c.st.Version, c.st.ParentVersion = v, v-1
	r := &c.st.Routes[int(v*7919)%len(c.st.Routes)]
	r.TimeoutMs = uint32(v)
	snap, err := c.bld.BuildSnapshot(c.st)
	if err != nil {
		tb.Fatal(err)
	}
	p, err := c.enc.AppendDelta(nil, c.last, snap)
	if err != nil {
		tb.Fatal(err)
	}
	c.last = snap
	return p
}

// testStream is the feed's receiving end as in a session, ACKs going
// over a real TCP connection to a reader that discards them, snapshots
// swapped into a routing table as the edge does.
type testStream struct {
	*stream
	holder routing.Holder
	close  func()
}

func newTestStream(tb testing.TB) *testStream {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		tb.Fatal(err)
	}
	peer, err := ln.Accept()
	ln.Close()
	if err != nil {
		tb.Fatal(err)
	}
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		io.Copy(io.Discard, peer)
	}()
	log := slog.New(slog.DiscardHandler)
	store, err := snapstore.Open(tb.TempDir(), 3, log)
	if err != nil {
		tb.Fatal(err)
	}
	bs := &testStream{}
	reg := upstream.NewRegistry(upstream.Options{})
	c := New(Config{CtrlAddr: "bench", NodeID: "bench", Store: store, Logger: log,
		Current:   bs.holder.Version,
		InService: bs.holder.WithSnapshot, // as edge.Node does
		Apply: func(m *snapstore.Mapping) error {
			t := routing.NewTable(m.Snapshot(), func() { m.Unmap() }, reg)
			_, err := bs.holder.Swap(t)
			if err != nil {
				t.Release()
			}
			return err
		}})
	dec, err := wire.NewDecompressor(0)
	if err != nil {
		tb.Fatal(err)
	}
	ddec, err := wire.NewDeltaDecoder(0)
	if err != nil {
		tb.Fatal(err)
	}
	bs.stream = &stream{c: c, conn: conn, w: wire.NewWriter(conn), dec: dec, ddec: ddec}
	bs.close = func() {
		bs.holder.Close()
		conn.Close()
		<-drained
		peer.Close()
		dec.Close()
		ddec.Close()
	}
	return bs
}

// BenchmarkApplyDelta100k is the edge's work for one version of a
// 100,000-route snapshot (~12 MB) after a one-route change: the feed's
// DELTA handling, from the frame's payload to the ACK written: rebuild the
// file, verify it, save it (temp file, fsync, rename), map and verify the
// file, swap it into a routing table, ACK. Every iteration applies a new
// version of one chain, as a live edge does. cpu-ms/op is the process's
// CPU during the applies (the GC's included); ns/op counts the fsync wait.
// Runs only with SNAPGATE_BENCH_100K=1.
func BenchmarkApplyDelta100k(b *testing.B) {
	if !bench100k() {
		b.Skip("set SNAPGATE_BENCH_100K=1 to run the 100,000-route apply benchmark")
	}
	chain := newDeltaChain(b)
	s := newTestStream(b)
	defer s.close()
	full := wire.AppendFull(nil, wire.Full{Version: chain.last.Version(), Snapshot: chain.last.Bytes()})
	if err := s.handleFull(full); err != nil || s.holder.Version() != chain.last.Version() {
		b.Fatalf("first FULL: %v, in service v%d", err, s.holder.Version())
	}
	b.ReportAllocs()
	var cpu int64
	for b.Loop() {
		b.StopTimer()
		p := chain.next(b)
		before := processCPU()
		b.StartTimer()
		if err := s.handleDelta(p); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		cpu += processCPU() - before
		if v := s.holder.Version(); v != chain.last.Version() {
			b.Fatalf("in service v%d, want v%d (%s)", v, chain.last.Version(), s.c.Status().LastError)
		}
		b.StartTimer()
	}
	b.ReportMetric(float64(cpu)/1e6/float64(b.N), "cpu-ms/op")
	b.ReportMetric(float64(len(chain.last.Bytes())), "snapshot-bytes")
}

// BenchmarkApplySteps100k breaks BenchmarkApplyDelta100k down into its
// steps, each run alone on one (base, DELTA) pair: rebuild (zstd decode,
// copy, trailer check) into a reused buffer and into a fresh one, verify
// (Open's full walk, and OpenAfter the base), save, map and verify (after
// the saved snapshot, and from scratch), and swap. Runs only with
// SNAPGATE_BENCH_100K=1.
func BenchmarkApplySteps100k(b *testing.B) {
	if !bench100k() {
		b.Skip("set SNAPGATE_BENCH_100K=1 to run the 100,000-route apply benchmark")
	}
	chain := newDeltaChain(b)
	base := chain.last
	p := chain.next(b)
	ddec, err := wire.NewDeltaDecoder(0)
	if err != nil {
		b.Fatal(err)
	}
	defer ddec.Close()
	_, data, err := ddec.Apply(nil, base, p)
	if err != nil {
		b.Fatal(err)
	}
	snap, err := fbs.OpenAfter(base, data)
	if err != nil {
		b.Fatal(err)
	}
	store, err := snapstore.Open(b.TempDir(), 3, slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	if err := store.Save(snap.Version(), data); err != nil {
		b.Fatal(err)
	}
	step := func(name string, fn func() error) {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			before := processCPU()
			for b.Loop() {
				if err := fn(); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(processCPU()-before)/1e6/float64(b.N), "cpu-ms/op")
		})
	}
	spare := make([]byte, 0, len(data)+len(data)/8)
	step("rebuild", func() error { _, _, err := ddec.Apply(spare, base, p); return err })
	step("rebuild-fresh", func() error { _, _, err := ddec.Apply(nil, base, p); return err })
	step("open", func() error { _, err := fbs.Open(data); return err })
	step("open-after", func() error { _, err := fbs.OpenAfter(base, data); return err })
	step("save", func() error { return store.Save(snap.Version(), data) })
	mapped := func(m *snapstore.Mapping, err error) error {
		if err != nil {
			return err
		}
		return m.Unmap()
	}
	step("map", func() error { return mapped(store.Map(snap.Version())) })
	step("map-after", func() error { return mapped(store.MapAfter(snap.Version(), snap)) })
	var h routing.Holder
	defer h.Close()
	reg := upstream.NewRegistry(upstream.Options{})
	step("swap", func() error {
		_, err := h.Replace(routing.NewTable(snap, nil, reg))
		return err
	})
	step("hash", func() error { xxhash.Sum64(data); return nil })
}

func bench100k() bool { return os.Getenv("SNAPGATE_BENCH_100K") != "" }
