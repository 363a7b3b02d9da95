package publish

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/snapgate/snapgate/fbs"
	"github.com/snapgate/snapgate/wire"
)

var testSecret = []byte("publish-test-secret-0123456789")

// snapOf builds a real snapshot of version v with n routes; extra names a
// route that only this version has, so versions differ in one shard.
func snapOf(t testing.TB, v uint64, n int, extra string) []byte {
	t.Helper()
	st := fbs.State{Version: v, ParentVersion: v - 1, Clusters: []fbs.Cluster{{Name: "web", Endpoints: []fbs.Endpoint{{Address: "127.0.0.1:1"}}}}}
	for i := range n {
		st.Routes = append(st.Routes, fbs.Route{ID: "r" + strconv.Itoa(i), Host: "h" + strconv.Itoa(i%50) + ".example", Prefix: "/p/" + strconv.Itoa(i), Cluster: "web"})
	}
	if extra != "" {
		st.Routes = append(st.Routes, fbs.Route{ID: extra, Host: "x.example", Prefix: "/" + extra, Cluster: "web"})
	}
	b, err := fbs.Build(st)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *syncBuf) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

func start(t *testing.T) (*Server, string, *syncBuf) {
	t.Helper()
	return startWith(t, nil)
}

// startWith is start with cfg edited by edit (if not nil) before New.
func startWith(t *testing.T, edit func(*Config)) (*Server, string, *syncBuf) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuf{}
	// DeadAfter is short so silence tests run fast, yet long enough that a
	// GC pause under -race (each delta encode still allocates tens of MB)
	// does not cut a live stream.
	cfg := Config{Logger: slog.New(slog.NewTextHandler(logs, nil)), HeartbeatInterval: 20 * time.Millisecond, DeadAfter: time.Second, Secret: testSecret}
	if edit != nil {
		edit(&cfg)
	}
	s := New(cfg)
	done := make(chan error, 1)
	go func() { done <- s.Serve(ln) }()
	t.Cleanup(func() {
		s.Close()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return s, ln.Addr().String(), logs
}

// dial connects a scripted edge and completes the handshake.
func dial(t *testing.T, addr, node string, have uint64) (net.Conn, *wire.Reader, *wire.Writer) {
	t.Helper()
	return dialAs(t, addr, wire.Hello{NodeID: node, HaveVersion: have}, testSecret)
}

func dialAs(t *testing.T, addr string, h wire.Hello, secret []byte) (net.Conn, *wire.Reader, *wire.Writer) {
	t.Helper()
	c, r, w := sendHello(t, addr, h)
	typ, p, err := r.Next()
	if err != nil || typ != wire.TypeChallenge {
		t.Fatalf("after HELLO: %s %v, want CHALLENGE", typ, err)
	}
	ch, err := wire.DecodeChallenge(p)
	if err != nil {
		t.Fatal(err)
	}
	if !wire.ProofEqual(ch.Proof, wire.CtrlProof(secret, h, ch.Nonce)) && bytes.Equal(secret, testSecret) {
		t.Fatal("ctrl's proof does not verify")
	}
	w.WriteFrame(wire.TypeProof, wire.AppendProof(nil, wire.Proof{MAC: wire.EdgeProof(secret, h, ch.Nonce)}))
	return c, r, w
}

func sendHello(t *testing.T, addr string, h wire.Hello) (net.Conn, *wire.Reader, *wire.Writer) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	w := wire.NewWriter(c)
	p, err := wire.AppendHello(nil, h)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.WriteFrame(wire.TypeHello, p); err != nil {
		t.Fatal(err)
	}
	return c, wire.NewReader(c, 1<<20), w
}

func nextNonHeartbeat(t *testing.T, r *wire.Reader) (wire.Type, []byte, error) {
	for {
		typ, p, err := r.Next()
		if err != nil || typ != wire.TypeHeartbeat {
			return typ, p, err
		}
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestPublishSendsNewestOnly(t *testing.T) {
	s, addr, _ := start(t)
	dec, _ := wire.NewDecompressor(0)
	defer dec.Close()
	three := snapOf(t, 3, 10, "")
	s.Publish(3, three, time.Now())
	s.Publish(2, snapOf(t, 2, 10, ""), time.Now()) // older: ignored
	if s.LatestVersion() != 3 {
		t.Fatalf("latest %d", s.LatestVersion())
	}
	_, r, w := dial(t, addr, "e1", 0)
	typ, p, err := nextNonHeartbeat(t, r)
	if err != nil || typ != wire.TypeFull {
		t.Fatalf("got %s %v, want FULL", typ, err)
	}
	f, err := dec.DecodeFull(p)
	if err != nil || f.Version != 3 || !bytes.Equal(f.Snapshot, three) {
		t.Fatalf("FULL %d %q %v", f.Version, f.Snapshot, err)
	}
	w.WriteFrame(wire.TypeAck, wire.AppendAck(nil, wire.Ack{Version: 3}))
	waitFor(t, "ack recorded", func() bool { st := s.Status(); return len(st) == 1 && st[0].AppliedVersion == 3 })
	// A burst of publishes reaches the edge as (at most) a few frames ending
	// at the newest. The edge applies frames in order, so each DELTA is from
	// the version sent before it, whether or not the edge ACKed that yet.
	ddec, _ := wire.NewDeltaDecoder(0)
	defer ddec.Close()
	// Encoding 47 deltas takes a while under -race; like a real edge, keep
	// the stream alive with heartbeats so DeadAfter does not cut it.
	stop := make(chan struct{})
	beats := make(chan struct{})
	go func() {
		defer close(beats)
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				w.WriteFrame(wire.TypeHeartbeat, wire.AppendHeartbeat(nil, wire.Heartbeat{LatestVersion: 3, UnixNano: time.Now().UnixNano()}))
			}
		}
	}()
	defer func() { close(stop); <-beats }()
	var last []byte
	have := mustOpen(t, three)
	for v := uint64(4); v <= 50; v++ {
		last = snapOf(t, v, 10, "x"+strconv.Itoa(int(v)))
		s.Publish(v, last, time.Now())
	}
	for {
		typ, p, err := nextNonHeartbeat(t, r)
		var v uint64
		var out []byte
		switch typ {
		case wire.TypeDelta:
			h, o, err := ddec.Apply(nil, have, p)
			if err != nil || h.BaseVersion != have.Version() {
				t.Fatalf("DELTA %+v onto v%d: %v", h, have.Version(), err)
			}
			v, out = h.Version, o
		case wire.TypeFull:
			f, err := dec.DecodeFull(p)
			if err != nil {
				t.Fatal(err)
			}
			v, out = f.Version, bytes.Clone(f.Snapshot)
		default:
			t.Fatalf("got %s %v", typ, err)
		}
		if v <= have.Version() {
			t.Fatalf("v%d after v%d", v, have.Version())
		}
		have = mustOpen(t, out)
		if v == 50 {
			if !bytes.Equal(out, last) {
				t.Fatal("v50 rebuilt other bytes")
			}
			break
		}
	}
}

// A NACKed DELTA inside a chain sent ahead of the ACKs is answered by one
// FULL of the latest version, even one already offered as a DELTA; the
// NACKs of the DELTAs chained on it change nothing, and DELTAs resume from
// the FULL.
func TestNackedDeltaChainGetsOneFull(t *testing.T) {
	s, addr, _ := start(t)
	ddec, _ := wire.NewDeltaDecoder(0)
	defer ddec.Close()
	snaps := map[uint64][]byte{}
	for v := uint64(1); v <= 5; v++ {
		snaps[v] = snapOf(t, v, 20, "x"+strconv.Itoa(int(v)))
	}
	s.Publish(1, snaps[1], time.Now())
	_, r, w := dial(t, addr, "e1", 0)
	expect := func(typ wire.Type, v, base uint64) {
		t.Helper()
		got, p, err := nextNonHeartbeat(t, r)
		if err != nil || got != typ {
			t.Fatalf("got %s %v, want %s v%d", got, err, typ, v)
		}
		if typ == wire.TypeFull {
			h, _, err := wire.DecodeFullHeader(p)
			if err != nil || h.Version != v {
				t.Fatalf("FULL v%d %v, want v%d", h.Version, err, v)
			}
			return
		}
		h, out, err := ddec.Apply(nil, mustOpen(t, snaps[base]), p)
		if err != nil || h.Version != v || h.BaseVersion != base || !bytes.Equal(out, snaps[v]) {
			t.Fatalf("DELTA %+v %v, want v%d from v%d", h, err, v, base)
		}
	}
	expect(wire.TypeFull, 1, 0)
	for v := uint64(2); v <= 4; v++ {
		s.Publish(v, snaps[v], time.Now())
		expect(wire.TypeDelta, v, v-1) // chained on the last sent, no ACK yet
	}
	w.WriteFrame(wire.TypeNack, wire.AppendNack(nil, wire.Nack{Version: 2, Reason: "apply: test"}))
	expect(wire.TypeFull, 4, 0)
	// The edge refuses the DELTAs chained on v2 as well; they were replaced.
	w.WriteFrame(wire.TypeNack, wire.AppendNack(nil, wire.Nack{Version: 3, Reason: "delta base mismatch"}))
	w.WriteFrame(wire.TypeAck, wire.AppendAck(nil, wire.Ack{Version: 4}))
	waitFor(t, "ack of v4", func() bool { st := s.Status(); return len(st) == 1 && st[0].AppliedVersion == 4 })
	s.Publish(5, snaps[5], time.Now())
	expect(wire.TypeDelta, 5, 4)
	// The writer counts a frame after writing it.
	waitFor(t, "2 FULLs and 4 DELTAs counted", func() bool { st := s.Status(); return st[0].FullsSent == 2 && st[0].DeltasSent == 4 })
}

// A refused FULL is not resent, and the next version is a FULL too: the
// edge kept whatever it had, so no DELTA base is known.
func TestNackedFullNextIsFull(t *testing.T) {
	s, addr, _ := start(t)
	s.Publish(1, snapOf(t, 1, 20, "a"), time.Now())
	_, r, w := dial(t, addr, "e1", 0)
	if typ, _, err := nextNonHeartbeat(t, r); err != nil || typ != wire.TypeFull {
		t.Fatalf("%s %v, want FULL", typ, err)
	}
	w.WriteFrame(wire.TypeNack, wire.AppendNack(nil, wire.Nack{Version: 1, Reason: "save: disk full"}))
	waitFor(t, "nack recorded", func() bool { st := s.Status(); return len(st) == 1 && st[0].LastNack != "" })
	s.Publish(2, snapOf(t, 2, 20, "b"), time.Now())
	typ, p, err := nextNonHeartbeat(t, r)
	if err != nil || typ != wire.TypeFull {
		t.Fatalf("after a NACKed FULL: %s %v, want FULL", typ, err)
	}
	if h, _, err := wire.DecodeFullHeader(p); err != nil || h.Version != 2 {
		t.Fatalf("FULL v%d %v, want v2", h.Version, err)
	}
}

func TestHeartbeatsCarryLatest(t *testing.T) {
	s, addr, _ := start(t)
	snap := snapOf(t, 7, 3, "")
	s.Publish(7, snap, time.Now())
	_, r, _ := dialAs(t, addr, wire.Hello{NodeID: "e1", HaveVersion: 7, HaveHash: wire.FileHash(snap)}, testSecret)
	typ, p, err := r.Next()
	if err != nil || typ != wire.TypeHeartbeat {
		t.Fatalf("first frame to a current edge: %s %v, want HEARTBEAT", typ, err)
	}
	hb, err := wire.DecodeHeartbeat(p)
	if err != nil || hb.LatestVersion != 7 || hb.Hash != wire.FileHash(snap) || hb.UnixNano == 0 {
		t.Fatalf("heartbeat %+v %v", hb, err)
	}
	if st := s.Status(); len(st) != 1 || st[0].Diverged {
		t.Fatalf("current edge listed as %+v", st)
	}
}

// An edge whose v7 has other bytes than ctrl's v7 is diverged: it gets
// ctrl's v7 as a replace FULL, an ACK of anything else keeps it diverged,
// and the ACK of v7 clears it.
func TestDivergedEdgeGetsReplaceFull(t *testing.T) {
	s, addr, _ := start(t)
	snap := snapOf(t, 7, 3, "")
	s.Publish(7, snap, time.Now())
	_, r, w := dialAs(t, addr, wire.Hello{NodeID: "e1", HaveVersion: 7, HaveHash: 0x1234}, testSecret)
	typ, p, err := nextNonHeartbeat(t, r)
	if err != nil || typ != wire.TypeFull {
		t.Fatalf("first frame to a diverged edge: %s %v, want FULL", typ, err)
	}
	h, _, err := wire.DecodeFullHeader(p)
	if err != nil || h.Version != 7 || !h.Replace {
		t.Fatalf("FULL header %+v %v, want replace v7", h, err)
	}
	if st := s.Status(); len(st) != 1 || !st[0].Diverged {
		t.Fatalf("diverged edge listed as %+v", st)
	}
	w.WriteFrame(wire.TypeAck, wire.AppendAck(nil, wire.Ack{Version: 9}))
	w.WriteFrame(wire.TypeAck, wire.AppendAck(nil, wire.Ack{Version: 7}))
	waitFor(t, "divergence cleared", func() bool { st := s.Status(); return len(st) == 1 && !st[0].Diverged && st[0].AppliedVersion == 7 })
}

// expectClose reads r until ctrl closes the connection.
func expectClose(t *testing.T, r *wire.Reader) {
	t.Helper()
	for {
		if _, _, err := r.Next(); err != nil {
			if !errors.Is(err, io.EOF) && !strings.Contains(err.Error(), "reset") {
				t.Fatalf("want the server to close, got %v", err)
			}
			return
		}
	}
}

func TestSessionClosedOnSilenceAndProtocolErrors(t *testing.T) {
	_, addr, logs := start(t)
	// No HELLO at all.
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	expectClose(t, wire.NewReader(c, 0))
	waitFor(t, "HELLO timeout logged", func() bool { return strings.Contains(logs.String(), "read HELLO") })

	// HELLO, then silence.
	_, r2, _ := dial(t, addr, "silent", 0)
	expectClose(t, r2)
	waitFor(t, "silence logged", func() bool { return strings.Contains(logs.String(), "no frame from edge") })

	// An edge sending FULL breaks the protocol.
	_, r3, w3 := dial(t, addr, "rogue", 0)
	w3.WriteFrame(wire.TypeFull, wire.AppendFull(nil, wire.Full{Version: 1, Snapshot: []byte{1}}))
	expectClose(t, r3)
	waitFor(t, "protocol error logged", func() bool { return strings.Contains(logs.String(), "edge sent FULL") })

	// A frame in another protocol version than the HELLO's.
	_, r6, w6 := dial(t, addr, "mixed", 0)
	w6.SetVersion(wire.MinProtocolVersion)
	w6.WriteFrame(wire.TypeHeartbeat, wire.AppendHeartbeat(nil, wire.Heartbeat{}))
	expectClose(t, r6)
	waitFor(t, "version mix logged", func() bool { return strings.Contains(logs.String(), "frame in a version") })

	// A malformed ACK, and a bad checksum.
	_, r4, w4 := dial(t, addr, "bad-ack", 0)
	w4.WriteFrame(wire.TypeAck, []byte{1, 2, 3})
	expectClose(t, r4)
	c5, r5, _ := dial(t, addr, "bad-crc", 0)
	f := wire.AppendFrame(nil, wire.TypeAck, wire.AppendAck(nil, wire.Ack{Version: 1}))
	f[len(f)-1] ^= 1
	c5.Write(f)
	expectClose(t, r5)
	waitFor(t, "checksum logged", func() bool { return strings.Contains(logs.String(), "checksum mismatch") })
}

func TestNackRecordedAndReconnectSupersedes(t *testing.T) {
	s, addr, logs := start(t)
	s.Publish(2, snapOf(t, 2, 3, ""), time.Now())
	_, r, w := dial(t, addr, "e1", 1)
	if typ, _, err := nextNonHeartbeat(t, r); err != nil || typ != wire.TypeFull {
		t.Fatalf("%s %v", typ, err)
	}
	w.WriteFrame(wire.TypeNack, wire.AppendNack(nil, wire.Nack{Version: 2, Reason: "verify: bad hash"}))
	waitFor(t, "nack recorded", func() bool { st := s.Status(); return len(st) == 1 && st[0].LastNack == "v2: verify: bad hash" })
	if !strings.Contains(logs.String(), "bad hash") {
		t.Fatal("NACK reason not logged")
	}
	// The same node reconnects once its old connection went quiet (it died
	// without a close reaching ctrl): the old session is closed, the edge
	// stays listed once, connected.
	time.Sleep(600 * time.Millisecond) // DeadAfter/2 and a margin
	_, r2, _ := dial(t, addr, "e1", 1)
	if typ, _, err := nextNonHeartbeat(t, r2); err != nil || typ != wire.TypeFull {
		t.Fatalf("%s %v", typ, err)
	}
	for {
		if _, _, err := r.Next(); err != nil {
			break
		}
	}
	st := s.Status()
	if len(st) != 1 || !st[0].Connected || st[0].AppliedVersion != 1 {
		t.Fatalf("status %+v", st)
	}
}

// history is snapshots v1 to v8, as ctrl's store would hold them.
func history(t *testing.T) map[uint64][]byte {
	stored := map[uint64][]byte{}
	for v := uint64(1); v <= 8; v++ {
		stored[v] = snapOf(t, v, 200, "x"+strconv.Itoa(int(v)))
	}
	return stored
}

// startWithHistory starts a Server that keeps the two newest of stored in
// memory and reaches older ones only through lookup, publishes them all,
// and stops it when the test ends (after the test's own defers).
func startWithHistory(t *testing.T, stored map[uint64][]byte, lookup func(v uint64) ([]byte, error)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := New(Config{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Secret: testSecret, KeepBases: 2, Lookup: lookup})
	done := make(chan error, 1)
	go func() { done <- s.Serve(ln) }()
	t.Cleanup(func() { s.Close(); <-done })
	for v := uint64(1); v <= uint64(len(stored)); v++ {
		s.Publish(v, stored[v], time.Now())
	}
	return ln.Addr().String()
}

// An edge that reconnects with a version ctrl still has gets a DELTA from
// it (from the in-memory bases or through Lookup); a NACKed DELTA is
// followed by a FULL; a wrong hash for the base gets a FULL.
func TestResumeWithDelta(t *testing.T) {
	stored := history(t)
	addr := startWithHistory(t, stored, func(v uint64) ([]byte, error) {
		if b, ok := stored[v]; ok {
			return b, nil
		}
		return nil, errors.New("not stored")
	})
	ddec, _ := wire.NewDeltaDecoder(0)
	defer ddec.Close()
	for _, base := range []uint64{7, 2} { // 7 in memory, 2 only through Lookup
		_, r, w := dialAs(t, addr, wire.Hello{NodeID: "e" + strconv.Itoa(int(base)), HaveVersion: base, HaveHash: wire.FileHash(stored[base])}, testSecret)
		typ, p, err := nextNonHeartbeat(t, r)
		if err != nil || typ != wire.TypeDelta {
			t.Fatalf("base v%d: got %s %v, want DELTA", base, typ, err)
		}
		if _, out, err := ddec.Apply(nil, mustOpen(t, stored[base]), p); err != nil || !bytes.Equal(out, stored[8]) {
			t.Fatalf("base v%d: DELTA does not rebuild v8: %v", base, err)
		}
		if base == 7 {
			w.WriteFrame(wire.TypeNack, wire.AppendNack(nil, wire.Nack{Version: 8, Reason: "verify: test"}))
			if typ, _, err := nextNonHeartbeat(t, r); err != nil || typ != wire.TypeFull {
				t.Fatalf("after NACK of a DELTA: %s %v, want FULL", typ, err)
			}
		}
	}
	_, r, _ := dialAs(t, addr, wire.Hello{NodeID: "wrong-hash", HaveVersion: 7, HaveHash: 12345}, testSecret)
	if typ, _, err := nextNonHeartbeat(t, r); err != nil || typ != wire.TypeFull {
		t.Fatalf("edge with a foreign v7: %s %v, want FULL", typ, err)
	}
	_, r, _ = dialAs(t, addr, wire.Hello{NodeID: "too-old", HaveVersion: 99, HaveHash: 1}, testSecret)
	r.Next() // a heartbeat; the point is that nothing panics and no snapshot goes backwards
}

// The FULL is compressed only when a session needs it: an edge on the delta
// chain never causes one, a new edge gets one that decodes to the snapshot.
func TestFullEncodedOnlyWhenNeeded(t *testing.T) {
	s, addr, _ := start(t)
	snaps := map[uint64][]byte{1: snapOf(t, 1, 300, "a"), 2: snapOf(t, 2, 300, "b")}
	fullBuilt := func() bool {
		return s.latest.Load().full.Load() != nil
	}
	s.Publish(1, snaps[1], time.Now())
	if fullBuilt() {
		t.Fatal("Publish compressed a FULL no session asked for")
	}
	_, r, _ := dialAs(t, addr, wire.Hello{NodeID: "on-chain", HaveVersion: 1, HaveHash: wire.FileHash(snaps[1])}, testSecret)
	s.Publish(2, snaps[2], time.Now())
	if typ, _, err := nextNonHeartbeat(t, r); err != nil || typ != wire.TypeDelta {
		t.Fatalf("edge at v1: %s %v, want DELTA", typ, err)
	}
	if fullBuilt() {
		t.Fatal("a DELTA to an edge on the chain compressed the FULL")
	}
	_, r, _ = dial(t, addr, "new", 0)
	typ, p, err := nextNonHeartbeat(t, r)
	if err != nil || typ != wire.TypeFull {
		t.Fatalf("new edge: %s %v, want FULL", typ, err)
	}
	dec, _ := wire.NewDecompressor(0)
	defer dec.Close()
	if f, err := dec.DecodeFull(p); err != nil || f.Version != 2 || !bytes.Equal(f.Snapshot, snaps[2]) {
		t.Fatalf("FULL does not decode to v2: %v", err)
	}
	if !fullBuilt() {
		t.Fatal("FULL sent but not kept for the next session")
	}
}

// A peer without the secret, with the wrong one, or replaying a recorded
// PROOF gets no snapshot and is disconnected; the failure is logged.
func TestAuthFailuresGetNothing(t *testing.T) {
	s, addr, logs := start(t)
	s.Publish(5, snapOf(t, 5, 10, ""), time.Now())
	expectNoSnapshot := func(r *wire.Reader) {
		t.Helper()
		for {
			typ, _, err := r.Next()
			if err != nil {
				return
			}
			if typ == wire.TypeFull || typ == wire.TypeDelta || typ == wire.TypeHeartbeat {
				t.Fatalf("unauthenticated peer received %s", typ)
			}
		}
	}
	h := wire.Hello{NodeID: "intruder", Nonce: [wire.NonceSize]byte{1, 2, 3}}
	_, r, _ := dialAs(t, addr, h, []byte("wrong-secret-wrong-secret"))
	expectNoSnapshot(r)
	waitFor(t, "wrong secret logged", func() bool {
		return strings.Contains(logs.String(), "edge proof does not match") && strings.Contains(logs.String(), "node=intruder")
	})

	// No secret: answer CHALLENGE with an empty-key proof.
	_, r, _ = dialAs(t, addr, wire.Hello{NodeID: "nokey"}, nil)
	expectNoSnapshot(r)

	// Replay: record a good handshake's PROOF, send it on a new connection
	// with the same HELLO. ctrl's fresh nonce makes it fail.
	c, r, _ := sendHello(t, addr, h)
	_, p, err := r.Next()
	if err != nil {
		t.Fatal(err)
	}
	ch, _ := wire.DecodeChallenge(p)
	good := wire.AppendProof(nil, wire.Proof{MAC: wire.EdgeProof(testSecret, h, ch.Nonce)})
	c.Close()
	c2, r2, w2 := sendHello(t, addr, h)
	defer c2.Close()
	r2.Next()
	w2.WriteFrame(wire.TypeProof, good)
	expectNoSnapshot(r2)
	for _, e := range s.Status() {
		t.Fatalf("unauthenticated peer listed in status: %+v", e)
	}
}

// Before the edge has proved the secret ctrl reads only handshake-sized
// frames: a peer declaring a larger one is refused at its header, naming
// the frame and its size, instead of ctrl waiting for (and buffering) the
// payload up to wire.MaxEdgePayload.
func TestOversizedHandshakeFrameRefused(t *testing.T) {
	_, addr, logs := start(t)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	h := wire.AppendFrame(nil, wire.TypeHello, make([]byte, 60000))
	if _, err := c.Write(h[:wire.HeaderSize]); err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("HELLO frame declares 60000 bytes, limit %d", wire.MaxHandshakePayload)
	waitFor(t, "the oversized HELLO refused", func() bool { return strings.Contains(logs.String(), want) })
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("ctrl answered an oversized HELLO")
	}
}

func TestCloseIsIdempotentAndServeAfterClose(t *testing.T) {
	s := New(Config{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Serve(ln); !errors.Is(err, ErrClosed) {
		t.Fatalf("Serve after Close: %v", err)
	}
	if _, err := net.Dial("tcp", ln.Addr().String()); err == nil {
		t.Fatal("listener still open after Serve refused it")
	}
}

func BenchmarkPublish(b *testing.B) {
	s := New(Config{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	defer s.Close()
	snaps := make([][]byte, 64)
	for i := range snaps {
		snaps[i] = snapOf(b, uint64(i+1), 5000, "")
	}
	b.SetBytes(int64(len(snaps[0])))
	b.ReportAllocs()
	v := uint64(0)
	for b.Loop() {
		v++
		if int(v) > len(snaps) {
			b.StopTimer()
			s.Close()
			s = New(Config{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
			v = 1
			b.StartTimer()
		}
		s.Publish(v, snaps[v-1], time.Now())
	}
}

func mustOpen(t testing.TB, b []byte) *fbs.Snapshot {
	t.Helper()
	s, err := fbs.Open(b)
	if err != nil {
		t.Fatalf("fbs.Open: %v", err)
	}
	return s
}

// A version-3 edge's REPORT reaches OnReport with its node id; a malformed
// one ends the session.
func TestReportsReachCallback(t *testing.T) {
	type got struct {
		node string
		obs  []wire.Observation
	}
	reports := make(chan got, 4)
	_, addr, logs := startWith(t, func(c *Config) {
		c.OnReport = func(node string, obs []wire.Observation) {
			reports <- got{node, append([]wire.Observation(nil), obs...)}
		}
	})
	_, r, w := dial(t, addr, "edge-r", 0)
	if r.Version() != wire.ProtocolVersion {
		t.Fatalf("ctrl answered a version %d HELLO in version %d", wire.ProtocolVersion, r.Version())
	}
	want := []wire.Observation{
		{Cluster: "api", Endpoint: "127.0.0.1:9", Cause: wire.CauseConnect, Revision: 3, UnixNano: 11},
		{Cluster: "web", Endpoint: "127.0.0.1:9", Cause: wire.CauseConnect, Revision: 4, UnixNano: 11},
	}
	p, err := wire.AppendReport(nil, wire.Report{Observations: want})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.WriteFrame(wire.TypeReport, p); err != nil {
		t.Fatal(err)
	}
	select {
	case g := <-reports:
		if g.node != "edge-r" || !reflect.DeepEqual(g.obs, want) {
			t.Fatalf("OnReport got %s %+v, want edge-r %+v", g.node, g.obs, want)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("OnReport not called within 5s")
	}

	if err := w.WriteFrame(wire.TypeReport, p[:len(p)-1]); err != nil {
		t.Fatal(err)
	}
	for {
		if _, _, err := r.Next(); err != nil {
			break // ctrl closed the session
		}
	}
	waitFor(t, "malformed REPORT logged", func() bool { return strings.Contains(logs.String(), "REPORT observation 1 endpoint") })
}

// An edge speaking version 2 gets version-2 frames, so an edge that
// predates REPORT keeps working.
func TestVersionTwoEdgeGetsVersionTwo(t *testing.T) {
	s, addr, _ := start(t)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	w := wire.NewWriter(c)
	if err := w.SetVersion(2); err != nil {
		t.Fatal(err)
	}
	h := wire.Hello{NodeID: "old-edge"}
	hp, _ := wire.AppendHello(nil, h)
	if err := w.WriteFrame(wire.TypeHello, hp); err != nil {
		t.Fatal(err)
	}
	r := wire.NewReader(c, 1<<20)
	typ, p, err := r.Next()
	if err != nil || typ != wire.TypeChallenge || r.Version() != 2 {
		t.Fatalf("got %s version %d err %v, want a version 2 CHALLENGE", typ, r.Version(), err)
	}
	ch, _ := wire.DecodeChallenge(p)
	if !wire.ProofEqual(ch.Proof, wire.CtrlProof(testSecret, h, ch.Nonce)) {
		t.Fatal("ctrl's proof does not verify")
	}
	w.WriteFrame(wire.TypeProof, wire.AppendProof(nil, wire.Proof{MAC: wire.EdgeProof(testSecret, h, ch.Nonce)}))
	s.Publish(1, snapOf(t, 1, 2, ""), time.Now())
	typ, _, err = nextNonHeartbeat(t, r)
	if err != nil || typ != wire.TypeFull || r.Version() != 2 {
		t.Fatalf("got %s version %d err %v, want a version 2 FULL", typ, r.Version(), err)
	}
}

// emfileOnce is a real listener whose first Accept fails as accept4 does
// when the process is out of file descriptors.
type emfileOnce struct {
	net.Listener
	failed atomic.Bool
}

func (l *emfileOnce) Accept() (net.Conn, error) {
	if !l.failed.Swap(true) {
		return nil, &net.OpError{Op: "accept", Net: "tcp", Addr: l.Addr(), Err: os.NewSyscallError("accept4", syscall.EMFILE)}
	}
	return l.Listener.Accept()
}

// Running out of file descriptors (a reconnect storm, or anyone opening
// connections to the stream port without the secret) pauses accepting;
// it used to end Serve, and with it the whole ctrl.
func TestServeRidesOutFDExhaustion(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := &emfileOnce{Listener: inner}
	s := New(Config{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Secret: testSecret})
	done := make(chan error, 1)
	go func() { done <- s.Serve(ln) }()
	defer func() {
		s.Close()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	}()
	s.Publish(1, snapOf(t, 1, 10, ""), time.Now())
	_, r, _ := dial(t, inner.Addr().String(), "e1", 0)
	if typ, _, err := nextNonHeartbeat(t, r); err != nil || typ != wire.TypeFull {
		t.Fatalf("after an accept error: %s %v, want FULL", typ, err)
	}
	if !ln.failed.Load() {
		t.Fatal("the listener never failed")
	}
}

// One session's slow encode (here its base read from the store) does not
// hold up another session's DELTA of the same version: sessions wait only
// for the encode whose result they need.
func TestSlowDeltaBaseDoesNotHoldOthers(t *testing.T) {
	stored := history(t)
	looking, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	unblock := func() { once.Do(func() { close(release) }) }
	addr := startWithHistory(t, stored, func(v uint64) ([]byte, error) {
		if v == 1 {
			close(looking)
			<-release
		}
		return stored[v], nil
	})
	defer unblock() // before the Server's Close, which waits for the slow session
	hello := func(node string, base uint64) wire.Hello {
		return wire.Hello{NodeID: node, HaveVersion: base, HaveHash: wire.FileHash(stored[base])}
	}
	_, slow, _ := dialAs(t, addr, hello("slow", 1), testSecret)
	<-looking
	_, fast, _ := dialAs(t, addr, hello("fast", 7), testSecret)
	if typ, _, err := nextNonHeartbeat(t, fast); err != nil || typ != wire.TypeDelta {
		t.Fatalf("edge at v7 while another session reads its base: %s %v, want DELTA", typ, err)
	}
	unblock()
	if typ, _, err := nextNonHeartbeat(t, slow); err != nil || typ != wire.TypeDelta {
		t.Fatalf("edge at v1 once its base was read: %s %v, want DELTA", typ, err)
	}
}

// A base the store failed to read once is read again for the next session
// that names it: the failure is not remembered as "no DELTA from there".
func TestDeltaBaseReadFailureIsNotRemembered(t *testing.T) {
	stored := history(t)
	var reads atomic.Int32
	addr := startWithHistory(t, stored, func(v uint64) ([]byte, error) {
		if v == 1 && reads.Add(1) == 1 {
			return nil, errors.New("store: read failed")
		}
		return stored[v], nil
	})
	for i, want := range []wire.Type{wire.TypeFull, wire.TypeDelta} {
		// Two edges: a node id's live session would refuse the second.
		h := wire.Hello{NodeID: fmt.Sprintf("e%d", i), HaveVersion: 1, HaveHash: wire.FileHash(stored[1])}
		c, r, _ := dialAs(t, addr, h, testSecret)
		if typ, _, err := nextNonHeartbeat(t, r); err != nil || typ != want {
			t.Fatalf("session %d from v1: %s %v, want %s", i+1, typ, err, want)
		}
		c.Close()
	}
}

// Connections that never finish their handshake are capped, in all and
// per remote address: beyond the cap a new one is closed at once, and once
// one of them goes an edge gets in again.
func TestHandshakesAreCapped(t *testing.T) {
	for _, limit := range []func(*Config){
		func(c *Config) { c.MaxHandshakes = 2 },
		func(c *Config) { c.MaxHandshakesPerIP = 2 },
	} {
		testHandshakesAreCapped(t, limit)
	}
}

func testHandshakesAreCapped(t *testing.T, limit func(*Config)) {
	s, addr, _ := startWith(t, func(c *Config) { limit(c); c.DeadAfter = 10 * time.Second })
	s.Publish(1, snapOf(t, 1, 10, ""), time.Now())
	var idle []net.Conn
	for range 2 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		idle = append(idle, c)
	}
	waitFor(t, "two handshakes pending", func() bool { return s.pendingHandshakes() == 2 })
	over, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer over.Close()
	over.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := over.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Fatalf("a connection over the cap: read %v, want EOF (closed at once)", err)
	}
	idle[0].Close()
	waitFor(t, "the closed one to leave its handshake", func() bool { return s.pendingHandshakes() == 1 })
	_, r, _ := dial(t, addr, "e1", 0)
	if typ, _, err := nextNonHeartbeat(t, r); err != nil || typ != wire.TypeFull {
		t.Fatalf("edge after a pending connection went: %s %v, want FULL", typ, err)
	}
}

// Two processes with one node id: the second is refused while the first
// session is alive, instead of each closing the other's session in turn.
func TestLiveSessionKeepsItsNodeID(t *testing.T) {
	s, addr, logs := start(t)
	s.Publish(1, snapOf(t, 1, 3, ""), time.Now())
	c1, r1, w1 := dial(t, addr, "twin", 0)
	if typ, _, err := nextNonHeartbeat(t, r1); err != nil || typ != wire.TypeFull {
		t.Fatalf("first: %s %v", typ, err)
	}
	// The first edge stays alive: it sends a heartbeat every 100 ms.
	stop := make(chan struct{})
	beating := make(chan struct{})
	go func() {
		defer close(beating)
		for {
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
				w1.WriteFrame(wire.TypeHeartbeat, wire.AppendHeartbeat(nil, wire.Heartbeat{}))
			}
		}
	}()
	defer func() { close(stop); <-beating }()
	_, r2, _ := dial(t, addr, "twin", 0)
	expectClose(t, r2)
	waitFor(t, "the refusal logged", func() bool { return strings.Contains(logs.String(), "do two edges share this --node-id?") })
	// The first session was not touched.
	time.Sleep(200 * time.Millisecond)
	if st := s.Status(); len(st) != 1 || !st[0].Connected || st[0].RemoteAddr != c1.LocalAddr().String() {
		t.Fatalf("status after the refused twin: %+v", st)
	}
	s.Publish(2, snapOf(t, 2, 3, ""), time.Now())
	if typ, _, err := nextNonHeartbeat(t, r1); err != nil || (typ != wire.TypeFull && typ != wire.TypeDelta) {
		t.Fatalf("first edge after the twin: %s %v, want the next snapshot", typ, err)
	}
}
