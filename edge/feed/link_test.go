package feed_test

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"runtime"
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

// bigState is version v with n routes whose ids and prefixes are random, so
// its FULL does not compress away: 3,000 routes are a ~145 KB FULL.
func bigState(v uint64, n int) fbs.State {
	rng := rand.New(rand.NewPCG(v, 3))
	st := fbs.State{Version: v, ParentVersion: v - 1,
		Clusters: []fbs.Cluster{{Name: "web", Endpoints: []fbs.Endpoint{{Address: "127.0.0.1:9000"}}}}}
	for i := range n {
		st.Routes = append(st.Routes, fbs.Route{ID: fmt.Sprintf("r%d-%016x", i, rng.Uint64()), Host: "*",
			Prefix: fmt.Sprintf("/%016x/%d", rng.Uint64(), i), Cluster: "web"})
	}
	return st
}

func build(t testing.TB, st fbs.State) []byte {
	t.Helper()
	b, err := fbs.Build(st)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// A FULL that takes longer than DeadAfter to cross a slow link, while bytes
// keep arriving, is a live stream: the edge must take it, not declare ctrl
// dead at every attempt and never converge. ctrl's DeadAfter is long here,
// so only the edge's timer is tested (ctrl's: ctrl_slowlink_test.go).
func TestSlowLinkLargeFullArrives(t *testing.T) {
	c := startCtrlWith(t, "127.0.0.1:0", func(cfg *publish.Config) { cfg.DeadAfter = 30 * time.Second })
	c.srv.Publish(1, snapshot(t, 1), time.Now())
	px := startFaultProxy(t, c.addr)
	e := startEdgeWith(t, px.addr(), t.TempDir(), func(cfg *feed.Config) { cfg.DeadAfter = time.Second })
	waitFor(t, "edge at v1", func() bool { return e.sim.Current() == 1 })

	// ~64 KB/s: the ~145 KB FULL takes over 2 s, twice the edge's DeadAfter.
	px.chunk.Store(1280)
	px.chunkGap.Store(int64(20 * time.Millisecond))
	big := build(t, bigState(2, 3000))
	c.srv.Publish(2, big, time.Now())
	waitFor(t, "edge at v2 over the slow link", func() bool { return e.sim.Current() == 2 })
	if !bytes.Equal(servedBytes(e), big) {
		t.Fatal("edge serves other bytes than ctrl published")
	}
	// Before the deadline bounded the time without a byte, every attempt
	// ended at DeadAfter and the edge never got v2. A stall of the loaded
	// test machine may still cost one attempt, so FULLs are only logged.
	t.Logf("ctrl sent %d FULLs", edgeStatus(c).FullsSent)
}

// Frames delivered one byte per write still parse: the edge applies the
// FULL and then a DELTA, byte for byte what ctrl published.
func TestOneByteAtATime(t *testing.T) {
	c := startCtrl(t, "127.0.0.1:0")
	px := startFaultProxy(t, c.addr)
	px.chunk.Store(1)
	c.srv.Publish(1, snapshot(t, 1), time.Now())
	e := startEdge(t, px.addr(), t.TempDir())
	waitFor(t, "edge at v1", func() bool { return e.sim.Current() == 1 })
	c.srv.Publish(2, snapshot(t, 2), time.Now())
	waitFor(t, "edge at v2", func() bool { return e.sim.Current() == 2 })
	if !bytes.Equal(servedBytes(e), snapshot(t, 2)) {
		t.Fatal("edge serves other bytes than ctrl published")
	}
	waitFor(t, "ctrl to count the DELTA", func() bool { return edgeStatus(c).DeltasSent == 1 })
	appliedIncreasing(t, e)
}

// feedGoroutines returns the stacks of goroutines running feed code.
func feedGoroutines() []string {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var out []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "snapgate/edge/feed.") {
			out = append(out, g)
		}
	}
	return out
}

// A connection cut halfway through a FULL, then halfway through a DELTA:
// nothing partial is applied or left on disk, the cut is reported as a lost
// connection (not as a bad frame from ctrl, which would also keep the
// backoff growing), the edge converges after each reconnect, and once
// stopped leaves no goroutine behind.
func TestCutMidFrame(t *testing.T) {
	c := startCtrl(t, "127.0.0.1:0")
	c.srv.Publish(1, snapshot(t, 1), time.Now())
	px := startFaultProxy(t, c.addr)
	dir := t.TempDir()
	e := startEdge(t, px.addr(), dir)
	waitFor(t, "edge at v1", func() bool { return edgeStatus(c).AppliedVersion == 1 })

	// v2 is a new route set (a FULL), v3 adds one route to it (a DELTA).
	v2 := bigState(2, 3000)
	v3 := v2
	v3.Version, v3.ParentVersion = 3, 2
	v3.Routes = append(v3.Routes[:len(v3.Routes):len(v3.Routes)], fbs.Route{ID: "added", Host: "*", Prefix: "/added", Cluster: "web"})
	for _, st := range []fbs.State{v2, v3} {
		px.cutMid.Store(1)
		cut := px.cutDone.Load()
		snap := build(t, st)
		c.srv.Publish(st.Version, snap, time.Now())
		waitFor(t, fmt.Sprintf("v%d cut", st.Version), func() bool { return px.cutDone.Load() == cut+1 })
		waitFor(t, fmt.Sprintf("edge at v%d", st.Version), func() bool { return e.sim.Current() == st.Version })
		if !bytes.Equal(servedBytes(e), snap) {
			t.Fatalf("v%d: edge serves other bytes than ctrl published", st.Version)
		}
	}
	if got := e.sim.Applied(); len(got) != 3 {
		t.Fatalf("applied %v, want [1 2 3]", got)
	}
	st := e.client.Status()
	if strings.Contains(st.LastError, "protocol error") || strings.Contains(e.logs.String(), "bad frame") {
		t.Fatalf("a cut connection reported as a bad frame: %q\n%s", st.LastError, e.logs.String())
	}
	if !strings.Contains(e.logs.String(), "in the middle of a") {
		t.Fatalf("the cut is not reported as one:\n%s", e.logs.String())
	}
	// v3 went out as a DELTA twice: cut, then whole after the reconnect.
	waitFor(t, "ctrl to count the DELTAs", func() bool { return edgeStatus(c).DeltasSent >= 2 })
	appliedIncreasing(t, e)
	for _, name := range dataDir(t, dir) {
		if filepath.Ext(name) != ".sgs" {
			t.Fatalf("data dir holds %s after the cuts", name)
		}
	}

	e.stop(t)
	deadline := time.Now().Add(5 * time.Second)
	for gs := feedGoroutines(); len(gs) > 0; gs = feedGoroutines() {
		if time.Now().After(deadline) {
			t.Fatalf("feed goroutines left after stop:\n%s", strings.Join(gs, "\n\n"))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// dataDir returns the names in dir but the lock file, failing the test if
// it cannot read it.
func dataDir(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, en := range entries {
		if en.Name() != ".lock" { // the edge's lock on the dir
			names = append(names, en.Name())
		}
	}
	return names
}

// breakDir puts a file in place of the data dir dir, as a full or
// read-only disk would refuse writes, and returns what puts it back.
func breakDir(t *testing.T, dir string) (restore func()) {
	t.Helper()
	away := dir + ".away"
	if err := os.Rename(dir, away); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dir, []byte("not a dir"), 0o600); err != nil {
		t.Fatal(err)
	}
	return func() {
		t.Helper()
		if err := os.Remove(dir); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(away, dir); err != nil {
			t.Fatal(err)
		}
	}
}

// A data dir that cannot take the new snapshot (here a file in its place;
// a full or read-only disk fails the same way): the edge NACKs with the
// reason, keeps serving the snapshot in service from memory and its last
// good file, and once the dir works again puts the refused version in
// service by itself (ctrl does not resend a refused FULL, and may publish
// nothing newer for a long time).
func TestSaveFailureNackedThenRetried(t *testing.T) {
	c := startCtrl(t, "127.0.0.1:0")
	c.srv.Publish(1, snapshot(t, 1), time.Now())
	dir := filepath.Join(t.TempDir(), "data")
	e := startEdge(t, c.addr, dir)
	waitFor(t, "edge at v1 (ACKed)", func() bool { return edgeStatus(c).AppliedVersion == 1 })

	restore := breakDir(t, dir)
	c.srv.Publish(2, snapshot(t, 2), time.Now())
	waitFor(t, "NACK of v2", func() bool { return strings.HasPrefix(edgeStatus(c).LastNack, "v2:") })
	if n := edgeStatus(c).LastNack; !strings.Contains(n, "save v2") {
		t.Fatalf("NACK does not say the save failed: %q", n)
	}
	if e.sim.Current() != 1 || !bytes.Equal(servedBytes(e), snapshot(t, 1)) {
		t.Fatalf("edge serves v%d after a failed save, want v1 as it was", e.sim.Current())
	}

	restore()
	waitFor(t, "edge at v2 once the dir works again", func() bool { return edgeStatus(c).AppliedVersion == 2 })
	if e.sim.Current() != 2 || !bytes.Equal(servedBytes(e), snapshot(t, 2)) {
		t.Fatalf("edge serves v%d, want v2 as published", e.sim.Current())
	}
	if got := dataDir(t, dir); !slices.Equal(got, []string{snapstore.FileName(1), snapstore.FileName(2)}) {
		t.Fatalf("data dir holds %v, want the files of v1 and v2 only", got)
	}
	if s := edgeStatus(c); s.FullsSent != 2 {
		t.Fatalf("ctrl sent %d FULLs, want 2 (v1, v2): the edge retries from memory", s.FullsSent)
	}
}

// After ctrl comes back from an older backup, the feed's status names the
// restored ctrl's latest version, not the highest number the lost history
// reached.
func TestRestoredCtrlLatestInStatus(t *testing.T) {
	a := startCtrl(t, "127.0.0.1:0")
	a.srv.Publish(5, snapshotGen(t, 5, "a"), time.Now())
	e := startEdge(t, a.addr, t.TempDir())
	waitFor(t, "edge at v5", func() bool { return e.client.Status().LatestVersion == 5 && e.sim.Current() == 5 })
	a.stop()

	b := startCtrl(t, a.addr)
	b3 := snapshotGen(t, 3, "b")
	b.srv.Publish(3, b3, time.Now())
	waitFor(t, "edge replaced by the restored ctrl's v3", func() bool { return e.sim.Current() == 3 })
	if got := e.client.Status().LatestVersion; got != 3 {
		t.Fatalf("status says ctrl's latest is v%d, want v3", got)
	}
}

// The same for a replace FULL (ctrl restored from a backup): refused while
// the data dir is broken, the diverged history stays in service and on
// disk; once the dir works the edge removes that history's files and
// serves ctrl's snapshot, and ctrl no longer counts it diverged.
func TestSaveFailureReplaceRetried(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	st, err := snapstore.Open(dir, 3, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []uint64{4, 5} {
		if err := st.Save(v, snapshotGen(t, v, "a")); err != nil {
			t.Fatal(err)
		}
	}
	c := startCtrl(t, "127.0.0.1:0")
	st.Close() // the edge takes the data dir's lock
	e := startEdge(t, c.addr, dir)
	waitFor(t, "ctrl to see the diverged edge", func() bool { s := edgeStatus(c); return s.Connected && s.Diverged })

	restore := breakDir(t, dir)
	b3 := snapshotGen(t, 3, "b")
	c.srv.Publish(3, b3, time.Now())
	waitFor(t, "NACK of the replace FULL", func() bool { return strings.HasPrefix(edgeStatus(c).LastNack, "v3:") })
	if e.sim.Current() != 5 {
		t.Fatalf("edge serves v%d, want its own v5 until the replacement is saved", e.sim.Current())
	}
	restore()
	waitFor(t, "edge on ctrl's v3", func() bool { return e.sim.Hash() == wire.FileHash(b3) })
	waitFor(t, "ctrl to count the edge current", func() bool { s := edgeStatus(c); return !s.Diverged && s.AppliedVersion == 3 })
	if got := dataDir(t, dir); !slices.Equal(got, []string{snapstore.FileName(3)}) {
		t.Fatalf("data dir holds %v, want ctrl's v3 only", got)
	}
}

// A replace FULL whose save fails leaves the data dir as it was: the file
// of the snapshot in service stays, so a restart meanwhile boots it, not an
// older one or nothing (the diverged files used to go before the save).
func TestReplaceSaveFailureKeepsInServiceFile(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	st, err := snapstore.Open(dir, 5, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []uint64{2, 4, 5} {
		if err := st.Save(v, snapshotGen(t, v, "a")); err != nil {
			t.Fatal(err)
		}
	}
	c := startCtrl(t, "127.0.0.1:0")
	st.Close() // the edge takes the data dir's lock
	e := startEdge(t, c.addr, dir)
	waitFor(t, "ctrl to see the diverged edge", func() bool { s := edgeStatus(c); return s.Connected && s.Diverged })
	block := st.Path(3) // the save of v3 fails at the rename
	if err := os.MkdirAll(filepath.Join(block, "x"), 0o755); err != nil {
		t.Fatal(err)
	}
	c.srv.Publish(3, snapshotGen(t, 3, "b"), time.Now())
	waitFor(t, "NACK of the replace FULL", func() bool { return strings.HasPrefix(edgeStatus(c).LastNack, "v3:") })
	if e.sim.Current() != 5 {
		t.Fatalf("edge serves v%d, want its own v5", e.sim.Current())
	}
	if _, err := os.Stat(st.Path(5)); err != nil {
		t.Fatalf("file of the snapshot in service gone while the replacement is unsaved: %v", err)
	}
	m, err := st.LoadNewest()
	if err != nil || m.Version() != 5 {
		t.Fatalf("a restart now would boot %v, %v; want v5", m, err)
	}
	m.Unmap()
}

// fakeCtrl accepts connections at a new address and runs serve on each
// until stop is closed; it counts the accepted connections. Everything it
// starts ends with the test.
func fakeCtrl(t *testing.T, serve func(c net.Conn, stop <-chan struct{})) (addr string, accepts *atomic.Int32) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	accepts = new(atomic.Int32)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	t.Cleanup(func() {
		close(stop)
		ln.Close()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepts.Add(1)
			wg.Go(func() {
				defer c.Close()
				serve(c, stop)
			})
		}
	})
	return ln.Addr().String(), accepts
}

// frameHeader is a header announcing a frame of type t with n payload
// bytes (its checksum is not checked before the payload arrives).
func frameHeader(t wire.Type, n int) []byte {
	var h [wire.HeaderSize]byte
	binary.BigEndian.PutUint32(h[0:4], uint32(n))
	h[4] = wire.ProtocolVersion
	h[5] = byte(t)
	return h[:]
}

// Before ctrl has proved the secret, DeadAfter bounds the handshake as a
// whole: a peer at ctrl's address that announces a CHALLENGE and trickles
// it a byte at a time does not hold the edge on one connection (with only
// the per-byte timer, it held it forever).
func TestTricklingHandshakeTimesOut(t *testing.T) {
	addr, accepts := fakeCtrl(t, func(c net.Conn, stop <-chan struct{}) {
		if _, err := c.Write(frameHeader(wire.TypeChallenge, wire.NonceSize+wire.ProofSize)); err != nil {
			return
		}
		for {
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
			if _, err := c.Write([]byte{0}); err != nil {
				return
			}
		}
	})
	startEdgeWith(t, addr, t.TempDir(), func(cfg *feed.Config) { cfg.DeadAfter = 300 * time.Millisecond })
	waitFor(t, "the edge to give up the trickling handshake and dial again", func() bool { return accepts.Load() >= 3 })
}

// Before ctrl has proved the secret the edge reads only handshake-sized
// frames: a peer at ctrl's address that announces a FULL gets it refused at
// the header, naming the frame and its size, rather than the edge reading
// (and buffering) a snapshot-sized payload from it.
func TestOversizedHandshakeFrameRefused(t *testing.T) {
	addr, _ := fakeCtrl(t, func(c net.Conn, stop <-chan struct{}) {
		if _, err := c.Write(frameHeader(wire.TypeFull, 50<<20)); err != nil {
			return
		}
		<-stop
	})
	// A dead timer longer than the wait: the refusal must not come from it.
	e := startEdgeWith(t, addr, t.TempDir(), func(cfg *feed.Config) { cfg.DeadAfter = time.Minute })
	want := fmt.Sprintf("FULL frame declares %d bytes, limit %d", 50<<20, wire.MaxHandshakePayload)
	waitFor(t, "the oversized frame refused", func() bool { return strings.Contains(e.client.Status().LastError, want) })
}
