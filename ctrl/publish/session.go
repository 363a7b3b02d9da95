package publish

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync/atomic"
	"time"

	"github.com/snapgate/snapgate/wire"
)

// session is one edge connection. run (the reader) owns its lifetime; a
// writer goroutine sends FULL and HEARTBEAT frames so a slow edge never
// blocks Publish or the reader.
type session struct {
	srv    *Server
	conn   net.Conn
	remote string
	nodeID string // set by attach under Server.mu once HELLO is read
	log    *slog.Logger

	// edgeVersion is the newest version the edge is known to hold (HELLO or
	// ACK). The writer sends the latest snapshot only when it is newer than
	// both this and the last version it offered, so a NACKed version is not
	// resent in a loop.
	edgeVersion atomic.Uint64
	superseded  atomic.Bool

	wake chan struct{} // capacity 1: coalesces Publish notifications
	done chan struct{} // closed when the reader exits
}

func newSession(s *Server, conn net.Conn) *session {
	remote := conn.RemoteAddr().String()
	return &session{
		srv:    s,
		conn:   conn,
		remote: remote,
		log:    s.log.With("remote", remote),
		wake:   make(chan struct{}, 1),
		done:   make(chan struct{}),
	}
}

// poke tells the writer to look at the latest snapshot; never blocks.
func (ss *session) poke() {
	select {
	case ss.wake <- struct{}{}:
	default:
	}
}

func (ss *session) run() {
	defer ss.conn.Close()
	r := wire.NewReader(ss.conn, ss.srv.cfg.MaxFrame)

	h, err := ss.readHello(r)
	if err != nil {
		ss.log.Warn("publish: closing session before HELLO", "err", err)
		ss.srv.detach(ss)
		return
	}
	ss.log = ss.log.With("node", h.NodeID)
	ss.edgeVersion.Store(h.HaveVersion)
	ss.srv.attach(ss, h)
	latest := ss.srv.LatestVersion()
	switch {
	case h.HaveVersion > latest:
		ss.log.Warn("publish: edge has a newer snapshot than ctrl; sending nothing until ctrl publishes past it",
			"edge_version", h.HaveVersion, "latest", latest)
	case h.HaveVersion == latest:
		ss.log.Info("publish: edge connected and current", "version", latest)
	default:
		ss.log.Info("publish: edge connected behind", "edge_version", h.HaveVersion, "latest", latest)
	}

	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		ss.writeLoop()
	}()
	ss.poke()

	err = ss.readLoop(r)
	close(ss.done)
	ss.conn.Close() // unblocks a writer stuck in Write
	<-writerDone
	ss.srv.detach(ss)
	switch {
	case ss.superseded.Load(), ss.srv.isClosed():
		ss.log.Info("publish: session closed")
	case errors.Is(err, io.EOF):
		ss.log.Info("publish: edge disconnected")
	default:
		ss.log.Warn("publish: session closed", "err", err)
	}
}

func (ss *session) readHello(r *wire.Reader) (wire.Hello, error) {
	ss.conn.SetReadDeadline(time.Now().Add(ss.srv.cfg.DeadAfter))
	t, p, err := r.Next()
	if err != nil {
		return wire.Hello{}, fmt.Errorf("read HELLO: %w", err)
	}
	if t != wire.TypeHello {
		return wire.Hello{}, fmt.Errorf("protocol error: first frame is %s, want HELLO", t)
	}
	return wire.DecodeHello(p)
}

// readLoop handles frames from the edge until the connection fails, the edge
// goes silent for DeadAfter, or it breaks the protocol.
func (ss *session) readLoop(r *wire.Reader) error {
	for {
		ss.conn.SetReadDeadline(time.Now().Add(ss.srv.cfg.DeadAfter))
		t, p, err := r.Next()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return fmt.Errorf("no frame from edge for %s: %w", ss.srv.cfg.DeadAfter, err)
			}
			return err
		}
		switch t {
		case wire.TypeHeartbeat:
			if _, err := wire.DecodeHeartbeat(p); err != nil {
				return err
			}
		case wire.TypeAck:
			a, err := wire.DecodeAck(p)
			if err != nil {
				return err
			}
			ss.setEdgeVersion(a.Version)
			ss.srv.recordAck(ss.nodeID, a.Version)
			ss.log.Info("publish: edge acknowledged", "version", a.Version)
		case wire.TypeNack:
			n, err := wire.DecodeNack(p)
			if err != nil {
				return err
			}
			ss.srv.recordNack(ss.nodeID, n)
			ss.log.Warn("publish: edge refused snapshot", "version", n.Version, "reason", n.Reason)
		default:
			return fmt.Errorf("protocol error: edge sent %s", t)
		}
	}
}

func (ss *session) setEdgeVersion(v uint64) {
	for {
		cur := ss.edgeVersion.Load()
		if v <= cur || ss.edgeVersion.CompareAndSwap(cur, v) {
			return
		}
	}
}

// writeLoop sends the newest snapshot whenever poked and the edge is behind,
// and a heartbeat every HeartbeatInterval. A write failure closes the
// connection, which ends the reader too.
func (ss *session) writeLoop() {
	w := wire.NewWriter(ss.conn)
	tick := time.NewTicker(ss.srv.cfg.HeartbeatInterval)
	defer tick.Stop()
	var offered uint64
	var hb []byte
	for {
		select {
		case <-ss.done:
			return
		case <-ss.wake:
			p := ss.srv.latest.Load()
			if p == nil || p.version <= offered || p.version <= ss.edgeVersion.Load() {
				continue
			}
			ss.conn.SetWriteDeadline(time.Now().Add(ss.srv.cfg.DeadAfter))
			if err := w.WriteFrame(wire.TypeFull, p.payload); err != nil {
				ss.log.Warn("publish: sending FULL failed", "version", p.version, "err", err)
				ss.conn.Close()
				return
			}
			offered = p.version
			ss.log.Info("publish: sent FULL", "version", p.version, "payload_bytes", len(p.payload))
		case now := <-tick.C:
			hb = wire.AppendHeartbeat(hb[:0], wire.Heartbeat{LatestVersion: ss.srv.LatestVersion(), UnixNano: now.UnixNano()})
			ss.conn.SetWriteDeadline(time.Now().Add(ss.srv.cfg.DeadAfter))
			if err := w.WriteFrame(wire.TypeHeartbeat, hb); err != nil {
				ss.log.Warn("publish: sending HEARTBEAT failed", "err", err)
				ss.conn.Close()
				return
			}
		}
	}
}
