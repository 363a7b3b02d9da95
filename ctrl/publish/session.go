package publish

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/snapgate/snapgate/wire"
)

// session is one edge connection. run (the reader) owns its lifetime; after
// the handshake a writer goroutine sends FULL, DELTA and HEARTBEAT frames so
// a slow edge never blocks Publish or the reader.
type session struct {
	srv    *Server
	conn   net.Conn
	remote string
	ip     string // remote's address, for the handshake counts
	nodeID string // set by attach under Server.mu once HELLO is read
	log    *slog.Logger

	// edgeVersion is the newest version the edge is known to hold (HELLO or
	// ACK). The writer sends the latest snapshot only when it is newer than
	// both this and the last version it offered, so a NACKed version is not
	// resent in a loop.
	edgeVersion atomic.Uint64
	superseded  atomic.Bool
	// heard is when the last frame from the edge arrived (unix nanos):
	// attach tells a live session from one whose connection died unseen.
	heard atomic.Int64

	// base is what the edge will hold once it has applied every frame sent
	// so far: the version and file hash it declared in HELLO, then each
	// version this session sends. The edge applies frames in order and its
	// delta base is the snapshot in service, so a DELTA from the last
	// version sent applies without waiting for ACKs; basing it on the last
	// ACK instead put edges on scattered bases at 50 changes/s (one encode
	// each) and made the edge NACK every DELTA sent while an ACK was in
	// flight. A zero base means the edge's snapshot is unknown: the next
	// frame is a FULL.
	baseMu sync.Mutex
	base   baseKey
	// fullAt is the version of the last FULL sent. Frames above it were all
	// DELTAs chained on it, so a NACK of one of them means the edge is off
	// the chain; a NACK at or below it is about a frame the FULL replaced.
	fullAt uint64
	// needFull asks the writer for a FULL of the latest version even if it
	// already offered that version, after the edge NACKed a DELTA.
	needFull bool

	// diverged is set when the edge's snapshot is not from ctrl's history
	// (HELLO named a version ctrl never reached, or one whose hash differs
	// from ctrl's). The writer then sends ctrl's latest as a replace FULL,
	// and only the ACK of that version clears it: an edge ACKing its own
	// version is not current.
	diverged    atomic.Bool
	heldEmpty   atomic.Bool   // a replace was held back: ctrl's latest has no routes (logged once)
	replaceSent atomic.Uint64 // version last sent as a replace FULL

	// version is the protocol version of the edge's HELLO: ctrl frames in
	// it, and a version-3 edge takes that as leave to send REPORTs.
	version uint8

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
	// Anyone who reaches the port can send a frame header: until the edge
	// has proved the secret, only handshake-sized frames are read.
	r := wire.NewReader(ss.conn, wire.MaxHandshakePayload)

	h, err := ss.handshake(r)
	ss.srv.endHandshake(ss.ip)
	if err != nil {
		ss.srv.m.authFailures.Inc()
		ss.log.Warn("publish: refusing edge stream", "node", h.NodeID, "err", err)
		ss.srv.detach(ss)
		return
	}
	// Edges split what they send to fit; a larger frame is a protocol error.
	r.SetMaxPayload(wire.MaxEdgePayload)
	ss.log = ss.log.With("node", h.NodeID)
	ss.edgeVersion.Store(h.HaveVersion)
	ss.base = baseKey{h.HaveVersion, h.HaveHash}
	diverged, why := ss.srv.diverged(h)
	ss.diverged.Store(diverged)
	ss.heard.Store(time.Now().UnixNano())
	if other, ok := ss.srv.attach(ss, h, diverged); !ok {
		ss.log.Error("publish: refusing a second connection for a node id whose session is alive; do two edges share this --node-id?",
			"remote", ss.remote, "connected_remote", other)
		ss.srv.detach(ss)
		return
	}
	latest := ss.srv.LatestVersion()
	switch {
	case diverged:
		ss.log.Error("publish: edge serves a snapshot that is not from this ctrl's history (ctrl data lost or restored from a backup?); replacing it with ctrl's latest",
			"edge_version", h.HaveVersion, "edge_hash", h.HaveHash, "latest", latest, "why", why)
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

// handshake reads HELLO, answers CHALLENGE with ctrl's nonce and proof, and
// checks the edge's PROOF; nothing else is sent before it succeeds. The
// returned Hello carries the node id (when HELLO parsed) for the log.
func (ss *session) handshake(r *wire.Reader) (wire.Hello, error) {
	deadline := time.Now().Add(ss.srv.cfg.DeadAfter)
	ss.conn.SetDeadline(deadline)
	defer ss.conn.SetWriteDeadline(time.Time{})
	t, p, err := r.Next()
	if err != nil {
		return wire.Hello{}, fmt.Errorf("read HELLO: %w", err)
	}
	if t != wire.TypeHello {
		return wire.Hello{}, fmt.Errorf("protocol error: first frame is %s, want HELLO", t)
	}
	h, err := wire.DecodeHello(p)
	if err != nil {
		return wire.Hello{}, err
	}
	ss.version = r.Version()
	nonce, err := wire.NewNonce()
	if err != nil {
		return h, err
	}
	secret := ss.srv.cfg.Secret
	ch := wire.AppendChallenge(nil, wire.Challenge{Nonce: nonce, Proof: wire.CtrlProof(secret, h, nonce)})
	if err := ss.writer().WriteFrame(wire.TypeChallenge, ch); err != nil {
		return h, err
	}
	t, p, err = r.Next()
	if err != nil {
		if errors.Is(err, io.EOF) {
			return h, fmt.Errorf("%w: edge closed the stream instead of answering CHALLENGE (it rejected ctrl's proof: do the stream secrets differ?)", wire.ErrAuth)
		}
		return h, fmt.Errorf("read PROOF: %w", err)
	}
	if t != wire.TypeProof {
		return h, fmt.Errorf("%w: edge sent %s, want PROOF", wire.ErrAuth, t)
	}
	pr, err := wire.DecodeProof(p)
	if err != nil {
		return h, fmt.Errorf("%w: %w", wire.ErrAuth, err)
	}
	if !wire.ProofEqual(pr.MAC, wire.EdgeProof(secret, h, nonce)) {
		return h, fmt.Errorf("%w: edge proof does not match (wrong stream secret, or a replayed handshake)", wire.ErrAuth)
	}
	return h, nil
}

// readLoop handles frames from the edge until the connection fails, the edge
// goes silent for DeadAfter, or it breaks the protocol.
func (ss *session) readLoop(r *wire.Reader) error {
	var rep wire.Report
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
		if v := r.Version(); v != ss.version {
			// The edge speaks its HELLO's version throughout; a frame of
			// another would be read with rules this session did not agree.
			return fmt.Errorf("protocol error: version %d frame in a version %d session", v, ss.version)
		}
		ss.heard.Store(time.Now().UnixNano())
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
			if ss.diverged.Load() {
				if a.Version == 0 || a.Version != ss.replaceSent.Load() {
					// The edge still serves its own history (it ACKs the
					// version in service when it refuses to go back).
					ss.log.Warn("publish: diverged edge acknowledged a version that is not ctrl's replacement; still diverged", "version", a.Version)
					continue
				}
				ss.replaced(a.Version)
				ss.srv.recordAck(ss.nodeID, a.Version, true)
				ss.log.Warn("publish: diverged edge replaced its snapshot with ctrl's", "version", a.Version)
				ss.poke() // ctrl may have published past it meanwhile
				continue
			}
			ss.setEdgeVersion(a.Version)
			ss.srv.recordAck(ss.nodeID, a.Version, false)
			// Debug: 200 edges at 50 versions/s would log 10,000 lines a
			// second; ctl status and the propagation histogram show ACKs.
			ss.log.Debug("publish: edge acknowledged", "version", a.Version)
		case wire.TypeNack:
			n, err := wire.DecodeNack(p)
			if err != nil {
				return err
			}
			ss.srv.recordNack(ss.nodeID, n)
			ss.log.Warn("publish: edge refused snapshot", "version", n.Version, "reason", n.Reason)
			if ss.noteNack(n.Version) {
				ss.poke()
			}
		case wire.TypeReport:
			if rep, err = wire.DecodeReportIn(rep, p, ss.version); err != nil {
				return err
			}
			ss.srv.m.reports.Add(len(rep.Observations))
			if f := ss.srv.cfg.OnReport; f != nil {
				f(ss.nodeID, rep.Observations)
			}
		default:
			return fmt.Errorf("protocol error: edge sent %s", t)
		}
	}
}

// writer returns a frame writer in the edge's protocol version. Its writes
// fail once the edge has taken no byte for DeadAfter (idleWriter).
func (ss *session) writer() *wire.Writer {
	w := wire.NewWriter(idleWriter{ss.conn, ss.srv.cfg.DeadAfter})
	// The reader accepted the HELLO's version, so SetVersion cannot fail.
	_ = w.SetVersion(ss.version)
	return w
}

// idleWriter fails a write once the kernel has accepted none of its bytes
// for idle, however long the write takes as a whole: a FULL of megabytes to
// an edge on a slow link keeps going while bytes move, and an edge that
// stopped reading is dropped. It is the edge's idleReader seen from the
// sending side. (Writing in pieces with a deadline each, as before, made
// idle a minimum rate instead: one piece per idle, 3.3 KB/s for 16 KiB
// pieces at 5 s, below which a FULL was cut at every attempt.)
//
// A write reports what it wrote only when it returns, so it runs with a
// deadline of idle/idleChecks and is resumed while bytes go out; a stall
// is noticed between idle and idle·(1+2/idleChecks) after the last byte.
type idleWriter struct {
	conn net.Conn
	idle time.Duration
}

// idleChecks is how many times per idle a stalled write wakes up to look
// for progress: the timer's precision against wakeups of a blocked writer.
const idleChecks = 4

func (w idleWriter) Write(b []byte) (int, error) {
	n := 0
	progress := time.Now()
	for {
		w.conn.SetWriteDeadline(time.Now().Add(w.idle / idleChecks))
		k, err := w.conn.Write(b[n:])
		n += k
		if err == nil || !errors.Is(err, os.ErrDeadlineExceeded) {
			return n, err
		}
		now := time.Now()
		if k > 0 {
			progress = now
		} else if now.Sub(progress) >= w.idle {
			return n, fmt.Errorf("edge took no byte for %s (%d of %d written): %w", w.idle, n, len(b), err)
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

// replaced ends divergence: the edge now serves ctrl's v, which may be below
// what it held, so the version is set, not raised. The delta base is already
// v: replaceSent is v, so v was the last frame sent.
func (ss *session) replaced(v uint64) {
	ss.edgeVersion.Store(v)
	ss.diverged.Store(false)
}

// noteNack handles the edge refusing version v and reports whether the
// writer must send a FULL. A DELTA above the last FULL counts: the edge then
// holds some version before v, so the DELTAs chained on v cannot apply
// either (their NACKs change nothing more). A refused FULL is not resent (it
// would be refused again), but if nothing was chained on it yet the next
// version goes out as a FULL. NACKs of frames a FULL has since replaced are
// ignored.
func (ss *session) noteNack(v uint64) bool {
	ss.baseMu.Lock()
	defer ss.baseMu.Unlock()
	switch {
	case v > ss.fullAt && v <= ss.base.version:
		ss.base = baseKey{}
		ss.needFull = true
		return true
	case v == ss.fullAt && v == ss.base.version:
		ss.base = baseKey{}
	}
	return false
}

// noteSent records that v (file hash hash) went out as t: it is the edge's
// base for the next DELTA.
func (ss *session) noteSent(v, hash uint64, t wire.Type) {
	ss.baseMu.Lock()
	defer ss.baseMu.Unlock()
	ss.base = baseKey{v, hash}
	if t == wire.TypeFull {
		ss.fullAt = v
		ss.needFull = false
	}
}

// nextFrame reports whether version v must be sent, having offered
// versions up to offered, and the base to send it from (zero: a FULL).
func (ss *session) nextFrame(v, offered uint64) (send bool, base baseKey) {
	ss.baseMu.Lock()
	defer ss.baseMu.Unlock()
	if v <= offered && !ss.needFull {
		return false, baseKey{}
	}
	if ss.needFull {
		return true, baseKey{}
	}
	return true, ss.base
}

// writeLoop sends the newest snapshot whenever poked and the edge is behind
// (a DELTA from the edge's base when ctrl has it, a FULL otherwise), and a
// heartbeat every HeartbeatInterval. A write failure closes the connection,
// which ends the reader too.
func (ss *session) writeLoop() {
	w := ss.writer()
	tick := time.NewTicker(ss.srv.cfg.HeartbeatInterval)
	defer tick.Stop()
	var offered uint64
	var hb []byte
	for {
		select {
		case <-ss.done:
			return
		case <-ss.wake:
			if !ss.offerLatest(w, &offered) {
				return
			}
		case now := <-tick.C:
			var latest wire.Heartbeat
			if p := ss.srv.latest.Load(); p != nil {
				latest = wire.Heartbeat{LatestVersion: p.version, Hash: p.hash}
			}
			latest.UnixNano = now.UnixNano()
			hb = wire.AppendHeartbeat(hb[:0], latest)
			if err := w.WriteFrame(wire.TypeHeartbeat, hb); err != nil {
				ss.log.Warn("publish: sending HEARTBEAT failed", "err", err)
				ss.conn.Close()
				return
			}
		}
	}
}

// offerLatest sends the latest snapshot if the edge needs it, having
// offered versions up to *offered. It reports false when the connection
// failed (and is closed).
func (ss *session) offerLatest(w *wire.Writer, offered *uint64) bool {
	// The reference keeps the file's memory from being recycled while
	// this session encodes from it. Payloads are encoded copies, so it is
	// dropped before the write: a slow edge does not hold the memory.
	p := ss.srv.acquireLatest()
	if p == nil {
		return true
	}
	t, payload, replace := ss.frame(p, *offered)
	ss.srv.release(p)
	if payload == nil {
		return true
	}
	ss.noteSent(p.version, p.hash, t)
	if replace {
		ss.replaceSent.Store(p.version)
	}
	if err := w.WriteFrame(t, payload); err != nil {
		ss.log.Warn("publish: sending snapshot failed", "type", t, "version", p.version, "replace", replace, "err", err)
		ss.conn.Close()
		return false
	}
	*offered = p.version
	ss.srv.recordSent(ss.nodeID, t, len(payload))
	if replace {
		ss.log.Warn("publish: sent replace FULL to diverged edge", "version", p.version, "payload_bytes", len(payload))
	} else {
		ss.log.Debug("publish: sent snapshot", "type", t, "version", p.version, "payload_bytes", len(payload))
	}
	return true
}

// frame returns the frame that brings the edge to p, with replace set for
// a replace FULL, or a nil payload when the edge needs none. The caller
// holds a reference to p.
func (ss *session) frame(p *published, offered uint64) (t wire.Type, payload []byte, replace bool) {
	if ss.diverged.Load() {
		if p.version == ss.replaceSent.Load() {
			return 0, nil, false // sent; a NACK is not answered by the same bytes again
		}
		if p.snap.NumRoutes() == 0 {
			// A ctrl with no routes meeting an edge from another history
			// is the mark of a ctrl started on a wrong or fresh data dir;
			// replacing would take down every route of the fleet. The
			// edge keeps its snapshot (diverged in status) until ctrl has
			// routes.
			if ss.heldEmpty.CompareAndSwap(false, true) {
				ss.log.Error("publish: not replacing a diverged edge's snapshot with a configuration that has no routes (is ctrl's --data-dir the right one?); it keeps serving its own until ctrl has routes",
					"version", p.version)
			}
			return 0, nil, false
		}
		payload, err := ss.srv.replacePayload(p)
		if err != nil {
			ss.log.Error("publish: cannot build replace FULL", "version", p.version, "err", err)
			return 0, nil, false
		}
		return wire.TypeFull, payload, true
	}
	if p.version <= ss.edgeVersion.Load() {
		return 0, nil, false
	}
	send, b := ss.nextFrame(p.version, offered)
	if !send {
		return 0, nil, false
	}
	if d := ss.srv.delta(p, b.version, b.hash); d != nil {
		return wire.TypeDelta, d, false
	}
	return wire.TypeFull, ss.srv.fullPayload(p), false
}
