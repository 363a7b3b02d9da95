package feed_test

import (
	"net"
	"strings"
	"testing"
	"time"

	"github.com/snapgate/snapgate/ctrl/publish"
	"github.com/snapgate/snapgate/edge/feed"
)

// smallSendBuf gives every accepted connection a 4 KiB send buffer, so
// ctrl's frame writes wait for the link as they would on a slow WAN link
// instead of landing in a loopback buffer that autotunes to megabytes.
type smallSendBuf struct{ net.Listener }

func (l smallSendBuf) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		c.(*net.TCPConn).SetWriteBuffer(4 << 10)
	}
	return c, err
}

// The link of these tests: the proxy takes 128 bytes of ctrl's stream every
// 10 ms (12.8 KB/s at most) through a 2 KiB window, so the kernel takes
// ctrl's bytes a few KB at a time, ~0.2 s apart. A 16 KiB piece then takes
// over 1.2 s, longer than ctrl's timer.
const (
	ctrlDeadAfter = time.Second
	linkChunk     = 128
	linkGap       = 10 * time.Millisecond
	linkWindow    = 2 << 10
)

// startSlowLink runs ctrl (DeadAfter ctrlDeadAfter) at v1, an edge whose
// own timer is long (only ctrl's is tested here) and the fault proxy
// between them, and returns once the edge is at v1 and the link is slow.
func startSlowLink(t *testing.T) (*publish.Server, *faultProxy, *edgeSide, *syncBuf) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuf{}
	srv := publish.New(publish.Config{Logger: logs.logger(), HeartbeatInterval: 50 * time.Millisecond, DeadAfter: ctrlDeadAfter, Secret: testSecret})
	done := make(chan error, 1)
	go func() { done <- srv.Serve(smallSendBuf{ln}) }()
	t.Cleanup(func() { srv.Close(); <-done })
	srv.Publish(1, snapshot(t, 1), time.Now())
	px := startFaultProxy(t, ln.Addr().String())
	px.window.Store(linkWindow)
	e := startEdgeWith(t, px.addr(), t.TempDir(), func(cfg *feed.Config) { cfg.DeadAfter = 30 * time.Second })
	waitFor(t, "edge at v1", func() bool { return e.sim.Current() == 1 })
	px.chunk.Store(linkChunk)
	px.chunkGap.Store(int64(linkGap))
	return srv, px, e, logs
}

// TestCtrlSlowLinkLargeFullArrives: ctrl bounds the time in which the
// kernel takes no byte of a frame write, not the whole write nor a piece of
// it, so a FULL that takes several times DeadAfter to cross a slow but
// steady link arrives at the first attempt. Before, ctrl wrote 16 KiB
// pieces with a deadline each, a minimum rate of 16 KiB per DeadAfter, and
// cut this FULL at every attempt.
func TestCtrlSlowLinkLargeFullArrives(t *testing.T) {
	srv, _, e, logs := startSlowLink(t)
	srv.Publish(2, build(t, bigState(2, 1200)), time.Now()) // a ~58 KB FULL: ~4.5 s
	deadline := time.Now().Add(30 * time.Second)
	for e.sim.Current() != 2 {
		if time.Now().After(deadline) {
			t.Fatalf("edge never got v2 over a link that moves 12.8 KB/s; ctrl's log:\n%s", logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if strings.Contains(logs.String(), "sending snapshot failed") {
		t.Errorf("ctrl cut a write on a link that kept moving; its log:\n%s", logs.String())
	}
}

// A link that stops taking ctrl's bytes, while the edge's heartbeats still
// reach ctrl, fails ctrl's write once DeadAfter passed without a byte, and
// not before; the edge gets the version once the link moves again.
func TestCtrlDropsStalledLink(t *testing.T) {
	srv, px, e, logs := startSlowLink(t)
	px.stall.Store(true)
	start := time.Now()
	srv.Publish(2, build(t, bigState(2, 1200)), time.Now())
	waitFor(t, "ctrl to fail the stalled write", func() bool { return strings.Contains(logs.String(), "edge took no byte for") })
	if d := time.Since(start); d < ctrlDeadAfter {
		t.Fatalf("the write failed %s after it started, before DeadAfter (%s) without a byte", d, ctrlDeadAfter)
	}
	px.chunk.Store(0)
	px.stall.Store(false)
	waitFor(t, "edge at v2 once the link moves again", func() bool { return e.sim.Current() == 2 })
}
