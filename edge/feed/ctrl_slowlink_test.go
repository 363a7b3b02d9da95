package feed_test

import (
	"net"
	"testing"
	"time"

	"github.com/snapgate/snapgate/ctrl/publish"
	"github.com/snapgate/snapgate/edge/feed"
)

// smallSendBuf gives every accepted connection a 16 KB send buffer, so
// ctrl's frame writes wait for the link as they would on a slow WAN link
// instead of landing in a loopback buffer that autotunes to megabytes.
type smallSendBuf struct{ net.Listener }

func (l smallSendBuf) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		c.(*net.TCPConn).SetWriteBuffer(16 << 10)
	}
	return c, err
}

// TestCtrlSlowLinkLargeFullArrives: ctrl bounds the time a frame write
// makes no progress, not the whole write, so a FULL that takes longer than
// DeadAfter to cross a slow link still arrives (with a bound on the whole
// frame, ctrl cut it at every attempt and the edge never converged).
func TestCtrlSlowLinkLargeFullArrives(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuf{}
	srv := publish.New(publish.Config{Logger: logs.logger(), HeartbeatInterval: 50 * time.Millisecond, DeadAfter: time.Second, Secret: testSecret})
	done := make(chan error, 1)
	go func() { done <- srv.Serve(smallSendBuf{ln}) }()
	defer func() { srv.Close(); <-done }()
	srv.Publish(1, snapshot(t, 1), time.Now())
	px := startFaultProxy(t, ln.Addr().String())
	e := startEdgeWith(t, px.addr(), t.TempDir(), func(cfg *feed.Config) { cfg.DeadAfter = 30 * time.Second })
	waitFor(t, "edge at v1", func() bool { return e.sim.Current() == 1 })

	// ~64 KB/s: the ~145 KB FULL takes over 2 s, twice ctrl's DeadAfter.
	px.chunk.Store(1280)
	px.chunkGap.Store(int64(20 * time.Millisecond))
	srv.Publish(2, build(t, bigState(2, 3000)), time.Now())
	deadline := time.Now().Add(15 * time.Second)
	for e.sim.Current() != 2 {
		if time.Now().After(deadline) {
			t.Fatalf("edge never got v2 over a link that moves 64 KB/s; ctrl's log:\n%s", logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}
