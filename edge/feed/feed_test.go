package feed_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/snapgate/snapgate/ctrl/publish"
	"github.com/snapgate/snapgate/edge/feed"
	"github.com/snapgate/snapgate/edge/snapstore"
	"github.com/snapgate/snapgate/fbs"
	"github.com/snapgate/snapgate/wire"
)

// syncBuf is a log sink the test can read while goroutines write to it.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func (s *syncBuf) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(s, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

var testSecret = []byte("feed-test-secret-0123456789")

func snapshot(t testing.TB, version uint64) []byte {
	t.Helper()
	b, err := fbs.Build(fbs.State{Version: version, ParentVersion: version - 1,
		Clusters: []fbs.Cluster{{Name: "web", Endpoints: []fbs.Endpoint{{Address: "127.0.0.1:9000"}}}},
		Routes: []fbs.Route{
			{ID: "api", Host: "example.com", Prefix: "/api", Cluster: "web"},
			{ID: fmt.Sprintf("v%d", version), Host: "*", Prefix: "/", Cluster: "web"},
		}})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// edgeSim stands in for the edge node: it holds the mapping in service and
// records every version it was asked to apply.
type edgeSim struct {
	mu      sync.Mutex
	cur     *snapstore.Mapping
	applied []uint64
	version atomic.Uint64
}

func (e *edgeSim) Current() uint64 { return e.version.Load() }

func (e *edgeSim) Apply(m *snapstore.Mapping) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if m.Snapshot().Version() <= e.version.Load() {
		return fmt.Errorf("apply: v%d is not newer than v%d", m.Snapshot().Version(), e.version.Load())
	}
	old := e.cur
	e.cur = m
	e.applied = append(e.applied, m.Version())
	e.version.Store(m.Version())
	if old != nil {
		return old.Unmap() // no readers in this test
	}
	return nil
}

// Replace takes m whatever its version, as the node does for a replace FULL.
func (e *edgeSim) Replace(m *snapstore.Mapping) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	old := e.cur
	e.cur = m
	e.applied = append(e.applied, m.Version())
	e.version.Store(m.Version())
	if old != nil {
		return old.Unmap()
	}
	return nil
}

// Hash is the file hash of the snapshot in service, 0 if none.
func (e *edgeSim) Hash() uint64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.cur == nil {
		return 0
	}
	return wire.FileHash(e.cur.Snapshot().Bytes())
}

func (e *edgeSim) Applied() []uint64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]uint64(nil), e.applied...)
}

func (e *edgeSim) close() {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.cur != nil {
		e.cur.Unmap()
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

type ctrlSide struct {
	srv  *publish.Server
	addr string
	logs *syncBuf
	done chan error
}

func startCtrl(t *testing.T, addr string) *ctrlSide {
	t.Helper()
	return startCtrlWith(t, addr, nil)
}

func startCtrlWith(t *testing.T, addr string, edit func(*publish.Config)) *ctrlSide {
	t.Helper()
	var ln net.Listener
	var err error
	// Rebinding the address of a just-closed server can race its teardown.
	for i := 0; i < 100; i++ {
		if ln, err = net.Listen("tcp", addr); err == nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	c := &ctrlSide{logs: &syncBuf{}, done: make(chan error, 1), addr: ln.Addr().String()}
	cfg := publish.Config{Logger: c.logs.logger(), HeartbeatInterval: 50 * time.Millisecond, DeadAfter: 2 * time.Second, Secret: testSecret}
	if edit != nil {
		edit(&cfg)
	}
	c.srv = publish.New(cfg)
	go func() { c.done <- c.srv.Serve(ln) }()
	t.Cleanup(c.stop)
	return c
}

func (c *ctrlSide) stop() {
	c.srv.Close()
	<-c.done
	c.done <- nil // later stops return at once
}

type edgeSide struct {
	sim    *edgeSim
	store  *snapstore.Store
	client *feed.Client
	logs   *syncBuf
	cancel context.CancelFunc
	done   chan error
}

func startEdge(t *testing.T, addr, dir string) *edgeSide {
	t.Helper()
	return startEdgeWith(t, addr, dir, nil)
}

func startEdgeWith(t *testing.T, addr, dir string, edit func(*feed.Config)) *edgeSide {
	t.Helper()
	e := &edgeSide{sim: &edgeSim{}, logs: &syncBuf{}, done: make(chan error, 1)}
	st, err := snapstore.Open(dir, 3, e.logs.logger())
	if err != nil {
		t.Fatal(err)
	}
	e.store = st
	if m, err := st.LoadNewest(); err == nil {
		if err := e.sim.Apply(m); err != nil {
			t.Fatal(err)
		}
	}
	cfg := feed.Config{
		Secret:   testSecret,
		CtrlAddr: addr, NodeID: "edge-1", Store: st,
		Current: e.sim.Current, Apply: e.sim.Apply, Replace: e.sim.Replace, Logger: e.logs.logger(),
		MinBackoff: 10 * time.Millisecond, MaxBackoff: 100 * time.Millisecond,
		DeadAfter: 2 * time.Second, DialTimeout: time.Second, HeartbeatInterval: 50 * time.Millisecond,
	}
	if edit != nil {
		edit(&cfg)
	}
	e.client = feed.New(cfg)
	ctx, cancel := context.WithCancel(context.Background())
	e.cancel = cancel
	go func() { e.done <- e.client.Run(ctx) }()
	t.Cleanup(func() { e.stop(t) })
	return e
}

func (e *edgeSide) stop(t *testing.T) {
	if e.cancel == nil {
		return
	}
	e.cancel()
	e.cancel = nil
	select {
	case err := <-e.done:
		if err != context.Canceled {
			t.Errorf("Run returned %v, want context.Canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Error("feed did not stop after cancel")
	}
	e.sim.close()
	e.store.Close()
}

func edgeStatus(c *ctrlSide) publish.EdgeStatus {
	for _, s := range c.srv.Status() {
		if s.NodeID == "edge-1" {
			return s
		}
	}
	return publish.EdgeStatus{}
}

func TestFullAckAndNewerPublish(t *testing.T) {
	c := startCtrl(t, "127.0.0.1:0")
	c.srv.Publish(1, snapshot(t, 1), time.Now())
	dir := t.TempDir()
	e := startEdge(t, c.addr, dir)

	waitFor(t, "edge at v1", func() bool { return e.sim.Current() == 1 })
	waitFor(t, "ctrl sees ACK v1", func() bool { s := edgeStatus(c); return s.AppliedVersion == 1 && !s.LastAck.IsZero() })
	s := edgeStatus(c)
	if !s.Connected || s.ConnectedSince.IsZero() || s.RemoteAddr == "" {
		t.Fatalf("ctrl status %+v", s)
	}

	c.srv.Publish(2, snapshot(t, 2), time.Now())
	c.srv.Publish(2, snapshot(t, 2), time.Now()) // same version again: ignored
	waitFor(t, "edge at v2", func() bool { return e.sim.Current() == 2 })
	waitFor(t, "ctrl sees ACK v2", func() bool { return edgeStatus(c).AppliedVersion == 2 })
	if _, err := os.Stat(e.store.Path(2)); err != nil {
		t.Fatalf("v2 not persisted: %v", err)
	}
	waitFor(t, "feed status", func() bool {
		st := e.client.Status()
		return st.Connected && st.LatestVersion == 2 && !st.LastContact.IsZero()
	})
	if got := e.sim.Applied(); len(got) != 2 || got[0] != 1 || got[1] != 2 {
		t.Fatalf("applied %v, want [1 2]", got)
	}
	if c.srv.LatestVersion() != 2 {
		t.Fatalf("LatestVersion %d", c.srv.LatestVersion())
	}

	// The edge goes away: ctrl keeps listing it, disconnected.
	e.stop(t)
	waitFor(t, "ctrl sees disconnect", func() bool { s := edgeStatus(c); return !s.Connected && s.AppliedVersion == 2 })
}

func TestCurrentEdgeGetsNoFull(t *testing.T) {
	dir := t.TempDir()
	st, err := snapstore.Open(dir, 3, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Save(3, snapshot(t, 3)); err != nil {
		t.Fatal(err)
	}
	c := startCtrl(t, "127.0.0.1:0")
	c.srv.Publish(3, snapshot(t, 3), time.Now())
	st.Close()                     // the edge takes the data dir's lock
	e := startEdge(t, c.addr, dir) // boots v3 from disk
	if e.sim.Current() != 3 {
		t.Fatalf("booted v%d", e.sim.Current())
	}
	waitFor(t, "ctrl lists the edge at v3", func() bool { s := edgeStatus(c); return s.Connected && s.AppliedVersion == 3 })
	// Several heartbeats later the edge still got nothing to apply.
	waitFor(t, "heartbeats", func() bool { return e.client.Status().LatestVersion == 3 })
	time.Sleep(200 * time.Millisecond)
	if got := e.sim.Applied(); len(got) != 1 {
		t.Fatalf("edge applied %v; a current edge must get no FULL", got)
	}
	if strings.Contains(c.logs.String(), "sent FULL") {
		t.Fatal("ctrl sent a FULL to a current edge")
	}
}

// snapshotGen builds version v of one ctrl history: gen names a route, so
// two histories have different bytes at the same version.
func snapshotGen(t testing.TB, version uint64, gen string) []byte {
	t.Helper()
	b, err := fbs.Build(fbs.State{Version: version, ParentVersion: version - 1,
		Clusters: []fbs.Cluster{{Name: "web", Endpoints: []fbs.Endpoint{{Address: "127.0.0.1:9000"}}}},
		Routes:   []fbs.Route{{ID: gen, Host: "*", Prefix: "/" + gen, Cluster: "web"}}})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The review's scenario (finding 1): the edge serves v6 of ctrl's old
// history; ctrl comes back on an empty data dir and counts up again. The
// edge must be marked diverged, must not be confirmed fresh by the new
// ctrl's heartbeats, and when ctrl reaches v6 with other content the edge
// must end up serving ctrl's v6, with status current only after its ACK.
func TestDivergedEdgeReplacedAtSameVersion(t *testing.T) {
	a6, b6 := snapshotGen(t, 6, "a"), snapshotGen(t, 6, "b")
	ca := startCtrl(t, "127.0.0.1:0")
	ca.srv.Publish(6, a6, time.Now())
	e := startEdge(t, ca.addr, t.TempDir())
	waitFor(t, "edge on old v6", func() bool { return e.sim.Current() == 6 })
	ca.stop()
	waitFor(t, "feed notices", func() bool { return !e.client.Status().Connected })
	_, confirmedByA := e.client.Freshness()

	cb := startCtrl(t, ca.addr) // empty: nothing published yet
	waitFor(t, "edge marked diverged", func() bool { st := edgeStatus(cb); return st.Connected && st.Diverged })
	// Heartbeats flow (every 50ms) but announce nothing the edge holds.
	contact := e.client.Status().LastContact
	waitFor(t, "heartbeats from the new ctrl", func() bool { return e.client.Status().LastContact.Sub(contact) > 200*time.Millisecond })
	if _, at := e.client.Freshness(); !at.Equal(confirmedByA) {
		t.Fatal("the new ctrl's heartbeats confirmed a snapshot it never built")
	}

	cb.srv.Publish(6, b6, time.Now())
	waitFor(t, "edge serves ctrl's v6", func() bool { return e.sim.Hash() == wire.FileHash(b6) })
	waitFor(t, "status current", func() bool {
		st := edgeStatus(cb)
		return !st.Diverged && st.AppliedVersion == 6 && !st.LastAck.IsZero()
	})
	if _, at := e.client.Freshness(); !at.After(confirmedByA) {
		t.Fatal("replaced snapshot not confirmed")
	}
	data, err := os.ReadFile(e.store.Path(6))
	if err != nil || wire.FileHash(data) != wire.FileHash(b6) {
		t.Fatalf("v6 on disk is not ctrl's (%v)", err)
	}
	if !strings.Contains(e.logs.String(), "not from its history") || !strings.Contains(cb.logs.String(), "not from this ctrl's history") {
		t.Fatal("divergence not logged on both sides")
	}
	// Business as usual afterwards: the next version arrives as a DELTA.
	cb.srv.Publish(7, snapshotGen(t, 7, "b"), time.Now())
	waitFor(t, "edge at v7", func() bool { return edgeStatus(cb).AppliedVersion == 7 && e.sim.Current() == 7 })
	waitFor(t, "ctrl to count the DELTA", func() bool { return edgeStatus(cb).DeltasSent >= 1 })
	if st := edgeStatus(cb); st.DeltasSent != 1 {
		t.Fatalf("v7 went out as %d DELTAs, %d FULLs", st.DeltasSent, st.FullsSent)
	}
}

// An edge ahead of ctrl's latest goes back to ctrl's version, and the files
// of the lost history leave its disk so a restart does not resurrect them.
func TestDivergedEdgeAheadGoesBack(t *testing.T) {
	dir := t.TempDir()
	st, _ := snapstore.Open(dir, 3, nil)
	for _, v := range []uint64{4, 5} {
		if err := st.Save(v, snapshotGen(t, v, "a")); err != nil {
			t.Fatal(err)
		}
	}
	c := startCtrl(t, "127.0.0.1:0")
	b3 := snapshotGen(t, 3, "b")
	c.srv.Publish(3, b3, time.Now())
	st.Close() // the edge takes the data dir's lock
	e := startEdge(t, c.addr, dir)
	waitFor(t, "edge back on ctrl's v3", func() bool { return e.sim.Hash() == wire.FileHash(b3) })
	waitFor(t, "status current", func() bool { s := edgeStatus(c); return !s.Diverged && s.AppliedVersion == 3 })
	if got := e.store.Versions(); !slices.Equal(got, []uint64{3}) {
		t.Fatalf("files on disk: %v, want [3]", got)
	}
}

// Without a Replace hook the edge refuses to go back: it NACKs, keeps its
// snapshot and ctrl keeps it listed as diverged until it can move forward.
func TestDivergedEdgeWithoutReplaceKeepsSnapshot(t *testing.T) {
	dir := t.TempDir()
	st, _ := snapstore.Open(dir, 3, nil)
	if err := st.Save(5, snapshotGen(t, 5, "a")); err != nil {
		t.Fatal(err)
	}
	c := startCtrl(t, "127.0.0.1:0")
	c.srv.Publish(3, snapshotGen(t, 3, "b"), time.Now())
	st.Close() // the edge takes the data dir's lock
	e := startEdgeWith(t, c.addr, dir, func(cfg *feed.Config) { cfg.Replace = nil })
	waitFor(t, "NACK of the replacement", func() bool { return strings.Contains(edgeStatus(c).LastNack, "cannot replace") })
	if s := edgeStatus(c); !s.Diverged || e.sim.Current() != 5 {
		t.Fatalf("status %+v, edge at v%d", s, e.sim.Current())
	}
	b6 := snapshotGen(t, 6, "b")
	c.srv.Publish(6, b6, time.Now())
	waitFor(t, "edge on ctrl's v6", func() bool { return e.sim.Hash() == wire.FileHash(b6) })
	waitFor(t, "status current", func() bool { s := edgeStatus(c); return !s.Diverged && s.AppliedVersion == 6 })
}

// A HEARTBEAT confirms freshness only if its version and hash are the
// snapshot in service.
func TestHeartbeatConfirmsOnlyMatchingHash(t *testing.T) {
	dir := t.TempDir()
	st, _ := snapstore.Open(dir, 3, nil)
	a5 := snapshotGen(t, 5, "a")
	if err := st.Save(5, a5); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	st.Close() // the edge takes the data dir's lock
	e := startEdge(t, ln.Addr().String(), dir)
	conn, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	r := wire.NewReader(conn, 1<<20)
	_, p, err := r.Next()
	if err != nil {
		t.Fatal(err)
	}
	h, err := wire.DecodeHello(p)
	if err != nil {
		t.Fatal(err)
	}
	w := wire.NewWriter(conn)
	nonce := [wire.NonceSize]byte{7}
	w.WriteFrame(wire.TypeChallenge, wire.AppendChallenge(nil, wire.Challenge{Nonce: nonce, Proof: wire.CtrlProof(testSecret, h, nonce)}))
	beat := func(hash uint64) {
		t.Helper()
		if err := w.WriteFrame(wire.TypeHeartbeat, wire.AppendHeartbeat(nil, wire.Heartbeat{LatestVersion: 5, Hash: hash, UnixNano: time.Now().UnixNano()})); err != nil {
			t.Fatal(err)
		}
	}
	drained := make(chan struct{})
	go func() { // drain the edge's PROOF and heartbeats until the conn closes
		defer close(drained)
		for {
			if _, _, err := r.Next(); err != nil {
				return
			}
		}
	}()
	defer func() { conn.Close(); <-drained }()
	beat(wire.FileHash(snapshotGen(t, 5, "b")))
	// A second frame after the bad one: once LastContact moves past it,
	// the bad one has been handled.
	before := e.client.Status().LastContact
	beat(wire.FileHash(snapshotGen(t, 5, "b")))
	waitFor(t, "heartbeats read", func() bool { return e.client.Status().LastContact.After(before) })
	if _, at := e.client.Freshness(); !at.IsZero() {
		t.Fatal("a heartbeat with another v5's hash confirmed the edge")
	}
	beat(wire.FileHash(a5))
	waitFor(t, "confirmed", func() bool { _, at := e.client.Freshness(); return !at.IsZero() })
}

func TestCorruptSnapshotNackedOldStays(t *testing.T) {
	c := startCtrl(t, "127.0.0.1:0")
	c.srv.Publish(1, snapshot(t, 1), time.Now())
	e := startEdge(t, c.addr, t.TempDir())
	waitFor(t, "edge at v1", func() bool { return e.sim.Current() == 1 })

	bad := snapshot(t, 2)
	bad[len(bad)/2] ^= 0x01 // corrupt snapshot: ctrl itself refuses to stream it
	c.srv.Publish(2, bad, time.Now())
	if c.srv.LatestVersion() != 1 || !strings.Contains(c.logs.String(), "does not verify") {
		t.Fatalf("ctrl published a corrupt snapshot (latest v%d)", c.srv.LatestVersion())
	}
	if _, err := os.Stat(e.store.Path(2)); !os.IsNotExist(err) {
		t.Fatalf("corrupt v2 reached the disk: %v", err)
	}
	// A wrong-version snapshot is refused as well, then a good one applies.
	c.srv.Publish(3, snapshot(t, 4), time.Now())
	c.srv.Publish(5, snapshot(t, 5), time.Now())
	waitFor(t, "edge at v5", func() bool { return e.sim.Current() == 5 })
	if got := e.sim.Applied(); len(got) != 2 {
		t.Fatalf("applied %v, want [1 5]", got)
	}
}

// flipProxy forwards TCP between the edge and ctrl and flips one payload byte
// of the first snapshot frame (FULL or DELTA), leaving the frame checksum stale.
type flipProxy struct {
	ln      net.Listener
	target  string
	flipped atomic.Bool
	wg      sync.WaitGroup
	mu      sync.Mutex
	conns   []net.Conn
}

func startFlipProxy(t *testing.T, target string) *flipProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &flipProxy{ln: ln, target: target}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(func() {
		ln.Close()
		p.mu.Lock()
		for _, c := range p.conns {
			c.Close()
		}
		p.mu.Unlock()
		p.wg.Wait()
	})
	return p
}

func (p *flipProxy) accept() {
	defer p.wg.Done()
	for {
		down, err := p.ln.Accept()
		if err != nil {
			return
		}
		up, err := net.Dial("tcp", p.target)
		if err != nil {
			down.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, down, up)
		p.mu.Unlock()
		p.wg.Add(2)
		go func() { defer p.wg.Done(); io.Copy(up, down); up.Close() }()
		go func() { defer p.wg.Done(); p.relayDown(up, down); down.Close() }()
	}
}

func (p *flipProxy) relayDown(up, down net.Conn) {
	var hdr [wire.HeaderSize]byte
	for {
		if _, err := io.ReadFull(up, hdr[:]); err != nil {
			return
		}
		payload := make([]byte, binary.BigEndian.Uint32(hdr[0:4]))
		if _, err := io.ReadFull(up, payload); err != nil {
			return
		}
		if t := wire.Type(hdr[5]); (t == wire.TypeFull || t == wire.TypeDelta) && p.flipped.CompareAndSwap(false, true) {
			payload[len(payload)/2] ^= 0x80
		}
		if _, err := down.Write(append(hdr[:], payload...)); err != nil {
			return
		}
	}
}

func TestCorruptFrameReconnects(t *testing.T) {
	c := startCtrl(t, "127.0.0.1:0")
	c.srv.Publish(1, snapshot(t, 1), time.Now())
	dir := t.TempDir()
	st, _ := snapstore.Open(dir, 3, nil)
	if err := st.Save(1, snapshot(t, 1)); err != nil {
		t.Fatal(err)
	}
	px := startFlipProxy(t, c.addr)
	st.Close() // the edge takes the data dir's lock
	e := startEdge(t, px.ln.Addr().String(), dir)
	waitFor(t, "edge current at v1", func() bool { return edgeStatus(c).AppliedVersion == 1 })

	c.srv.Publish(2, snapshot(t, 2), time.Now())
	waitFor(t, "checksum error logged", func() bool { return strings.Contains(e.logs.String(), "checksum mismatch") })
	waitFor(t, "edge at v2 after reconnect", func() bool { return e.sim.Current() == 2 })
	if got := e.sim.Applied(); len(got) != 2 || got[0] != 1 || got[1] != 2 {
		t.Fatalf("applied %v, want [1 2]", got)
	}
}

// A scripted ctrl that offers an older snapshot: the feed must ACK what it
// has and apply nothing.
func TestStaleFullNotApplied(t *testing.T) {
	dir := t.TempDir()
	st, _ := snapstore.Open(dir, 3, nil)
	if err := st.Save(5, snapshot(t, 5)); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	st.Close() // the edge takes the data dir's lock
	e := startEdge(t, ln.Addr().String(), dir)
	conn, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	r := wire.NewReader(conn, 1<<20)
	next := func(want wire.Type) []byte {
		t.Helper()
		for {
			typ, p, err := r.Next()
			if err != nil {
				t.Fatal(err)
			}
			if typ == want {
				return p
			}
			if typ != wire.TypeHeartbeat {
				t.Fatalf("got %s, want %s", typ, want)
			}
		}
	}
	h, err := wire.DecodeHello(next(wire.TypeHello))
	if err != nil || h.HaveVersion != 5 || h.NodeID != "edge-1" || h.HaveHash != wire.FileHash(snapshot(t, 5)) {
		t.Fatalf("hello %+v %v", h, err)
	}
	w := wire.NewWriter(conn)
	nonce := [wire.NonceSize]byte{9}
	w.WriteFrame(wire.TypeChallenge, wire.AppendChallenge(nil, wire.Challenge{Nonce: nonce, Proof: wire.CtrlProof(testSecret, h, nonce)}))
	pr, err := wire.DecodeProof(next(wire.TypeProof))
	if err != nil || !wire.ProofEqual(pr.MAC, wire.EdgeProof(testSecret, h, nonce)) {
		t.Fatalf("edge proof %v", err)
	}
	for _, v := range []uint64{3, 5} {
		if err := w.WriteFrame(wire.TypeFull, wire.AppendFull(nil, wire.Full{Version: v, Snapshot: snapshot(t, v)})); err != nil {
			t.Fatal(err)
		}
		a, err := wire.DecodeAck(next(wire.TypeAck))
		if err != nil || a.Version != 5 {
			t.Fatalf("stale FULL v%d answered with %+v %v, want ACK 5", v, a, err)
		}
	}
	if got := e.sim.Applied(); len(got) != 1 || e.sim.Current() != 5 {
		t.Fatalf("applied %v", got)
	}
	// A message ctrl never sends ends the session; the feed reconnects.
	if err := w.WriteFrame(wire.TypeAck, wire.AppendAck(nil, wire.Ack{Version: 1})); err != nil {
		t.Fatal(err)
	}
	conn2, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	conn2.Close()
	waitFor(t, "protocol error logged", func() bool { return strings.Contains(e.logs.String(), "ctrl sent ACK") })
}

func TestPublisherRestartConverges(t *testing.T) {
	c := startCtrl(t, "127.0.0.1:0")
	c.srv.Publish(1, snapshot(t, 1), time.Now())
	e := startEdge(t, c.addr, t.TempDir())
	waitFor(t, "edge at v1", func() bool { return e.sim.Current() == 1 })

	c.stop()
	waitFor(t, "feed notices", func() bool { return !e.client.Status().Connected })
	time.Sleep(100 * time.Millisecond) // a few failed dials: backoff in action

	c2 := startCtrl(t, c.addr)
	c2.srv.Publish(2, snapshot(t, 2), time.Now())
	waitFor(t, "edge at v2 from the new ctrl", func() bool { return e.sim.Current() == 2 })
	waitFor(t, "new ctrl sees ACK", func() bool { return edgeStatus(c2).AppliedVersion == 2 })
	if !strings.Contains(e.logs.String(), "reconnecting") {
		t.Fatal("reconnect not logged")
	}
}

// A ctrl whose configuration has no routes does not replace a diverged
// edge's snapshot (a ctrl started on a wrong or fresh data dir would take
// every route down); once it has routes, it does.
func TestDivergedEdgeNotReplacedByEmptyConfig(t *testing.T) {
	ca := startCtrl(t, "127.0.0.1:0")
	ca.srv.Publish(5, snapshotGen(t, 5, "a"), time.Now())
	e := startEdge(t, ca.addr, t.TempDir())
	waitFor(t, "edge on v5", func() bool { return e.sim.Current() == 5 })
	ca.stop()
	waitFor(t, "feed notices", func() bool { return !e.client.Status().Connected })

	cb := startCtrl(t, ca.addr)
	empty, err := fbs.Build(fbs.State{Version: 1})
	if err != nil {
		t.Fatal(err)
	}
	cb.srv.Publish(1, empty, time.Now())
	waitFor(t, "held back and logged", func() bool {
		st := edgeStatus(cb)
		return st.Connected && st.Diverged && strings.Contains(cb.logs.String(), "configuration that has no routes")
	})
	// Heartbeats flow for a while; nothing replaces the edge's snapshot.
	contact := e.client.Status().LastContact
	waitFor(t, "heartbeats", func() bool { return e.client.Status().LastContact.Sub(contact) > 300*time.Millisecond })
	if e.sim.Current() != 5 || edgeStatus(cb).FullsSent != 0 {
		t.Fatalf("edge at v%d after %d FULLs; want its own v5 and none", e.sim.Current(), edgeStatus(cb).FullsSent)
	}

	b2 := snapshotGen(t, 2, "b")
	cb.srv.Publish(2, b2, time.Now())
	waitFor(t, "replaced once ctrl has routes", func() bool {
		st := edgeStatus(cb)
		return e.sim.Hash() == wire.FileHash(b2) && !st.Diverged && st.AppliedVersion == 2
	})
}
