package publish

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/snapgate/snapgate/wire"
)

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *syncBuf) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

func start(t *testing.T) (*Server, string, *syncBuf) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuf{}
	s := New(Config{Logger: slog.New(slog.NewTextHandler(logs, nil)), HeartbeatInterval: 20 * time.Millisecond, DeadAfter: 300 * time.Millisecond})
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

// dial connects a scripted edge and sends HELLO.
func dial(t *testing.T, addr, node string, have uint64) (net.Conn, *wire.Reader, *wire.Writer) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	w := wire.NewWriter(c)
	p, err := wire.AppendHello(nil, wire.Hello{NodeID: node, HaveVersion: have})
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
	s.Publish(3, []byte("three"))
	s.Publish(2, []byte("two")) // older: ignored
	if s.LatestVersion() != 3 {
		t.Fatalf("latest %d", s.LatestVersion())
	}
	_, r, w := dial(t, addr, "e1", 0)
	typ, p, err := nextNonHeartbeat(t, r)
	if err != nil || typ != wire.TypeFull {
		t.Fatalf("got %s %v, want FULL", typ, err)
	}
	f, err := dec.DecodeFull(p)
	if err != nil || f.Version != 3 || string(f.Snapshot) != "three" {
		t.Fatalf("FULL %d %q %v", f.Version, f.Snapshot, err)
	}
	w.WriteFrame(wire.TypeAck, wire.AppendAck(nil, wire.Ack{Version: 3}))
	waitFor(t, "ack recorded", func() bool { st := s.Status(); return len(st) == 1 && st[0].AppliedVersion == 3 })
	// A burst of publishes reaches the edge as (at most) a few FULLs ending at the newest.
	for v := uint64(4); v <= 50; v++ {
		s.Publish(v, []byte("snap"))
	}
	for {
		typ, p, err := nextNonHeartbeat(t, r)
		if err != nil || typ != wire.TypeFull {
			t.Fatalf("got %s %v", typ, err)
		}
		f, err := dec.DecodeFull(p)
		if err != nil {
			t.Fatal(err)
		}
		if f.Version == 50 {
			break
		}
	}
}

func TestHeartbeatsCarryLatest(t *testing.T) {
	s, addr, _ := start(t)
	s.Publish(7, []byte("x"))
	_, r, _ := dial(t, addr, "e1", 7)
	typ, p, err := r.Next()
	if err != nil || typ != wire.TypeHeartbeat {
		t.Fatalf("first frame to a current edge: %s %v, want HEARTBEAT", typ, err)
	}
	hb, err := wire.DecodeHeartbeat(p)
	if err != nil || hb.LatestVersion != 7 || hb.UnixNano == 0 {
		t.Fatalf("heartbeat %+v %v", hb, err)
	}
}

func TestSessionClosedOnSilenceAndProtocolErrors(t *testing.T) {
	_, addr, logs := start(t)
	expectClose := func(c net.Conn, r *wire.Reader) {
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
	// No HELLO at all.
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	expectClose(c, wire.NewReader(c, 0))
	waitFor(t, "HELLO timeout logged", func() bool { return strings.Contains(logs.String(), "before HELLO") })

	// HELLO, then silence.
	c2, r2, _ := dial(t, addr, "silent", 0)
	expectClose(c2, r2)
	waitFor(t, "silence logged", func() bool { return strings.Contains(logs.String(), "no frame from edge") })

	// An edge sending FULL breaks the protocol.
	c3, r3, w3 := dial(t, addr, "rogue", 0)
	w3.WriteFrame(wire.TypeFull, wire.AppendFull(nil, wire.Full{Version: 1, Snapshot: []byte{1}}))
	expectClose(c3, r3)
	waitFor(t, "protocol error logged", func() bool { return strings.Contains(logs.String(), "edge sent FULL") })

	// A malformed ACK, and a bad checksum.
	c4, r4, w4 := dial(t, addr, "bad-ack", 0)
	w4.WriteFrame(wire.TypeAck, []byte{1, 2, 3})
	expectClose(c4, r4)
	c5, r5, _ := dial(t, addr, "bad-crc", 0)
	f := wire.AppendFrame(nil, wire.TypeAck, wire.AppendAck(nil, wire.Ack{Version: 1}))
	f[len(f)-1] ^= 1
	c5.Write(f)
	expectClose(c5, r5)
	waitFor(t, "checksum logged", func() bool { return strings.Contains(logs.String(), "checksum mismatch") })
}

func TestNackRecordedAndReconnectSupersedes(t *testing.T) {
	s, addr, logs := start(t)
	s.Publish(2, []byte("two"))
	_, r, w := dial(t, addr, "e1", 1)
	if typ, _, err := nextNonHeartbeat(t, r); err != nil || typ != wire.TypeFull {
		t.Fatalf("%s %v", typ, err)
	}
	w.WriteFrame(wire.TypeNack, wire.AppendNack(nil, wire.Nack{Version: 2, Reason: "verify: bad hash"}))
	waitFor(t, "nack recorded", func() bool { st := s.Status(); return len(st) == 1 && st[0].LastNack == "v2: verify: bad hash" })
	if !strings.Contains(logs.String(), "bad hash") {
		t.Fatal("NACK reason not logged")
	}
	// The same node reconnects: the old session is closed, the edge stays listed once, connected.
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
	snap := bytes.Repeat([]byte("route /api/v1 -> web\n"), 50000)
	b.SetBytes(int64(len(snap)))
	b.ReportAllocs()
	v := uint64(0)
	for b.Loop() {
		v++
		s.Publish(v, snap)
	}
}
