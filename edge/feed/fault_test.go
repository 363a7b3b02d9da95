package feed_test

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/snapgate/snapgate/edge/snapstore"
	"github.com/snapgate/snapgate/wire"
)

// faultProxy relays TCP between the edge and ctrl and injects faults into
// the ctrl→edge direction, frame by frame: delay, blackhole (read and drop
// both ways without closing, so only the dead-stream timers notice), cut
// (close every connection), corrupt (flip one payload byte of the next
// snapshot frames, with the frame checksum recomputed so the damage reaches
// the snapshot checks, or left stale so the frame check catches it), trickle
// (relay each frame's payload in chunks, with a pause after each: a slow
// link, which ctrl's writes wait for as well), cutMid (close the
// connection halfway through the next snapshot frames) and stall (stop
// reading from ctrl, so its writes make no progress, while the edge's
// frames still reach it).
type faultProxy struct {
	ln        net.Listener
	target    string
	delay     atomic.Int64 // per ctrl→edge frame, nanoseconds
	blackhole atomic.Bool
	corrupt   atomic.Int32 // snapshot frames (FULL/DELTA) still to corrupt
	fixCRC    atomic.Bool
	corrupted atomic.Int32
	chunk     atomic.Int32 // > 0: relay ctrl→edge payloads in chunks of this many bytes
	chunkGap  atomic.Int64 // pause after each chunk, nanoseconds
	cutMid    atomic.Int32 // snapshot frames still to cut halfway through
	cutDone   atomic.Int32
	stall     atomic.Bool
	window    atomic.Int32 // receive buffer of the connections to ctrl dialed from now on; 0: 16 KiB
	wg        sync.WaitGroup
	mu        sync.Mutex
	conns     []net.Conn
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func startFaultProxy(t *testing.T, target string) *faultProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &faultProxy{ln: ln, target: target}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(func() {
		ln.Close()
		p.stall.Store(false)
		p.cut()
		p.wg.Wait()
	})
	return p
}

func (p *faultProxy) addr() string { return p.ln.Addr().String() }

// cut closes every relayed connection; new ones are still accepted.
func (p *faultProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

func (p *faultProxy) accept() {
	defer p.wg.Done()
	for {
		down, err := p.ln.Accept()
		if err != nil {
			return
		}
		up, err := p.dial()
		if err != nil {
			down.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, down, up)
		p.mu.Unlock()
		p.wg.Add(2)
		go func() { defer p.wg.Done(); p.relayUp(down, up); up.Close(); down.Close() }()
		go func() { defer p.wg.Done(); p.relayDown(up, down); down.Close(); up.Close() }()
	}
}

// dial connects to ctrl with a small receive buffer (window, default 16
// KiB), so that ctrl's writes wait for a trickle as they would for a slow
// link instead of filling the proxy's buffer. It is set before connecting:
// set after, the window already advertised stays open, and the kernel then
// takes ctrl's bytes in gulps of 64 KB seconds apart on a slow trickle.
func (p *faultProxy) dial() (net.Conn, error) {
	size := int(p.window.Load())
	if size <= 0 {
		size = 16 << 10
	}
	d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		if err := rc.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, size)
		}); err != nil {
			return err
		}
		return serr
	}}
	return d.Dial("tcp", p.target)
}

func (p *faultProxy) relayUp(down, up net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := down.Read(buf)
		if n > 0 && !p.blackhole.Load() {
			if _, werr := up.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (p *faultProxy) relayDown(up, down net.Conn) {
	var hdr [wire.HeaderSize]byte
	for {
		p.holdWhileStalled()
		if _, err := io.ReadFull(up, hdr[:]); err != nil {
			return
		}
		n := int(binary.BigEndian.Uint32(hdr[0:4]))
		if c := int(p.chunk.Load()); c > 0 {
			if !p.trickle(up, down, hdr[:], n, c) {
				return
			}
			continue
		}
		payload := make([]byte, n)
		if _, err := io.ReadFull(up, payload); err != nil {
			return
		}
		if d := p.delay.Load(); d > 0 {
			time.Sleep(time.Duration(d))
		}
		if p.blackhole.Load() {
			continue
		}
		typ := wire.Type(hdr[5])
		if (typ == wire.TypeFull || typ == wire.TypeDelta) && len(payload) > 64 && p.corrupt.Add(-1) >= 0 {
			// Past the fixed header fields: the damage lands in the data.
			payload[len(payload)-9] ^= 0x5a
			if p.fixCRC.Load() {
				crc := crc32.Update(0, castagnoli, hdr[0:8])
				binary.BigEndian.PutUint32(hdr[8:12], crc32.Update(crc, castagnoli, payload))
			}
			p.corrupted.Add(1)
		}
		if (typ == wire.TypeFull || typ == wire.TypeDelta) && p.cutMid.Add(-1) >= 0 {
			down.Write(append(hdr[:], payload[:len(payload)/2]...))
			p.cutDone.Add(1)
			return // the caller closes both ends
		}
		if _, err := down.Write(append(hdr[:], payload...)); err != nil {
			return
		}
	}
}

// trickle relays one frame whose header is read: the header, then the n
// payload bytes, in chunks of c, each payload chunk written as soon as
// read, with the pause after each.
func (p *faultProxy) trickle(up, down net.Conn, hdr []byte, n, c int) bool {
	for len(hdr) > 0 {
		k := min(len(hdr), c)
		if _, err := down.Write(hdr[:k]); err != nil {
			return false
		}
		hdr = hdr[k:]
	}
	buf := make([]byte, c)
	for n > 0 {
		p.holdWhileStalled()
		k := min(n, c)
		if _, err := io.ReadFull(up, buf[:k]); err != nil {
			return false
		}
		if _, err := down.Write(buf[:k]); err != nil {
			return false
		}
		n -= k
		time.Sleep(time.Duration(p.chunkGap.Load()))
	}
	return true
}

// holdWhileStalled waits while stall is set; the proxy's cleanup clears it.
func (p *faultProxy) holdWhileStalled() {
	for p.stall.Load() {
		time.Sleep(5 * time.Millisecond)
	}
}

// appliedIncreasing fails unless the edge applied strictly increasing versions.
func appliedIncreasing(t *testing.T, e *edgeSide) {
	t.Helper()
	got := e.sim.Applied()
	for i := 1; i < len(got); i++ {
		if got[i] <= got[i-1] {
			t.Fatalf("edge applied %v: not strictly increasing", got)
		}
	}
}

// servedBytes returns the bytes of the mapping the edge serves.
func servedBytes(e *edgeSide) []byte {
	e.sim.mu.Lock()
	defer e.sim.mu.Unlock()
	if e.sim.cur == nil {
		return nil
	}
	return bytes.Clone(e.sim.cur.Snapshot().Bytes())
}

// A FULL damaged in flight with a valid frame checksum reaches the
// snapshot checks: the edge NACKs it, keeps its old snapshot, writes
// nothing, and takes the next good one.
func TestFaultCorruptFullNackedOldStays(t *testing.T) {
	dir := t.TempDir()
	st, err := snapstore.Open(dir, 3, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Save(1, snapshot(t, 1)); err != nil {
		t.Fatal(err)
	}
	c := startCtrl(t, "127.0.0.1:0")
	c.srv.Publish(2, snapshot(t, 2), time.Now()) // ctrl has no v1: it must send a FULL
	px := startFaultProxy(t, c.addr)
	px.fixCRC.Store(true)
	px.corrupt.Store(1)
	st.Close() // the edge takes the data dir's lock
	e := startEdge(t, px.addr(), dir)
	waitFor(t, "NACK of the corrupt FULL", func() bool { return strings.HasPrefix(edgeStatus(c).LastNack, "v2:") })
	if e.sim.Current() != 1 {
		t.Fatalf("edge serves v%d after a corrupt FULL, want v1", e.sim.Current())
	}
	if _, err := os.Stat(e.store.Path(2)); !os.IsNotExist(err) {
		t.Fatalf("corrupt v2 reached the disk: %v", err)
	}
	// ctrl counts a frame once its write returns, which can be after the
	// edge's NACK for it arrived.
	waitFor(t, "ctrl to count the FULL", func() bool { return edgeStatus(c).FullsSent == 1 })
	if s := edgeStatus(c); s.FullsSent != 1 || s.DeltasSent != 0 {
		t.Fatalf("ctrl sent %d FULL, %d DELTA; want 1 FULL", s.FullsSent, s.DeltasSent)
	}
	c.srv.Publish(3, snapshot(t, 3), time.Now())
	waitFor(t, "edge at v3", func() bool { return e.sim.Current() == 3 })
	if !bytes.Equal(servedBytes(e), snapshot(t, 3)) {
		t.Fatal("edge serves other bytes than ctrl published")
	}
	appliedIncreasing(t, e)
}

// After a cut, the edge reconnects with its version and gets a DELTA, not
// a FULL, because ctrl still keeps that base.
func TestFaultCutResumesWithDelta(t *testing.T) {
	c := startCtrl(t, "127.0.0.1:0")
	c.srv.Publish(1, snapshot(t, 1), time.Now())
	px := startFaultProxy(t, c.addr)
	e := startEdge(t, px.addr(), t.TempDir())
	waitFor(t, "edge at v1 (ACKed)", func() bool { return edgeStatus(c).AppliedVersion == 1 })

	px.blackhole.Store(true) // nothing gets through until the cut
	c.srv.Publish(2, snapshot(t, 2), time.Now())
	px.cut()
	waitFor(t, "feed notices the cut", func() bool { return !e.client.Status().Connected })
	px.blackhole.Store(false)
	waitFor(t, "edge at v2", func() bool { return e.sim.Current() == 2 })
	waitFor(t, "ctrl sees ACK 2", func() bool { return edgeStatus(c).AppliedVersion == 2 })
	waitFor(t, "ctrl to count the DELTA", func() bool { return edgeStatus(c).DeltasSent >= 1 })
	if s := edgeStatus(c); s.FullsSent != 1 || s.DeltasSent < 1 {
		t.Fatalf("after reconnect ctrl sent %d FULL, %d DELTA; want the first FULL only and a DELTA", s.FullsSent, s.DeltasSent)
	}
	appliedIncreasing(t, e)
}

// A blackholed stream (no RST, nothing arrives) is noticed by the dead
// timers on both sides; the edge resumes with a DELTA once the path heals.
func TestFaultBlackholeDetectedAndResumed(t *testing.T) {
	c := startCtrl(t, "127.0.0.1:0")
	c.srv.Publish(1, snapshot(t, 1), time.Now())
	px := startFaultProxy(t, c.addr)
	e := startEdge(t, px.addr(), t.TempDir())
	waitFor(t, "edge at v1 (ACKed)", func() bool { return edgeStatus(c).AppliedVersion == 1 })
	px.blackhole.Store(true)
	c.srv.Publish(2, snapshot(t, 2), time.Now())
	waitFor(t, "feed declares the stream dead", func() bool { return !e.client.Status().Connected })
	if e.sim.Current() != 1 {
		t.Fatalf("edge at v%d while blackholed", e.sim.Current())
	}
	px.blackhole.Store(false)
	waitFor(t, "edge at v2", func() bool { return e.sim.Current() == 2 })
	waitFor(t, "ctrl to count the DELTA", func() bool { return edgeStatus(c).DeltasSent >= 1 })
	if s := edgeStatus(c); s.FullsSent != 1 || s.DeltasSent < 1 {
		t.Fatalf("ctrl sent %d FULL, %d DELTA; want 1 FULL and a DELTA", s.FullsSent, s.DeltasSent)
	}
	appliedIncreasing(t, e)
}

// Random delays, cuts and corruption (checksum fixed or stale) while ctrl
// publishes: the edge only ever moves forward, serves exactly what ctrl
// built, and converges on the latest version.
func TestFaultChaosConverges(t *testing.T) {
	c := startCtrl(t, "127.0.0.1:0")
	px := startFaultProxy(t, c.addr)
	e := startEdge(t, px.addr(), t.TempDir())
	rng := rand.New(rand.NewPCG(7, 11))
	const versions = 40
	for v := uint64(1); v <= versions; v++ {
		switch rng.IntN(6) {
		case 0:
			px.cut()
		case 1:
			px.fixCRC.Store(rng.IntN(2) == 0)
			px.corrupt.Store(1)
		case 2:
			px.delay.Store(int64(time.Duration(rng.IntN(20)) * time.Millisecond))
		}
		c.srv.Publish(v, snapshot(t, v), time.Now())
		time.Sleep(time.Duration(rng.IntN(30)) * time.Millisecond)
	}
	px.delay.Store(0)
	px.corrupt.Store(0)
	waitFor(t, "edge at the latest version", func() bool { return e.sim.Current() == versions })
	waitFor(t, "ctrl sees the ACK", func() bool { return edgeStatus(c).AppliedVersion == versions })
	if !bytes.Equal(servedBytes(e), snapshot(t, versions)) {
		t.Fatal("edge serves other bytes than ctrl published")
	}
	appliedIncreasing(t, e)
	s := edgeStatus(c)
	t.Logf("applied %d versions; %d FULL, %d DELTA sent; %d frames corrupted", len(e.sim.Applied()), s.FullsSent, s.DeltasSent, px.corrupted.Load())
	if px.corrupted.Load() == 0 {
		t.Fatal("the chaos run corrupted nothing; the test proves little")
	}
}
