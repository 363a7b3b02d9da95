// Package publish streams snapshots from ctrl to its edges: one TCP session
// per edge, HELLO first, then FULL snapshots whenever the edge is behind,
// heartbeats both ways, ACK/NACK back.
package publish

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/snapgate/snapgate/wire"
)

// Config configures a Server. Zero fields take the documented defaults.
type Config struct {
	// Logger receives session events. Default: slog.Default().
	Logger *slog.Logger
	// HeartbeatInterval is how often ctrl sends a HEARTBEAT on every session.
	// Default 1s.
	HeartbeatInterval time.Duration
	// DeadAfter closes a session that has received no frame from its edge for
	// this long; it also bounds the wait for HELLO and for each write, so an
	// edge that stops reading cannot hold a session forever. Default 5s.
	DeadAfter time.Duration
	// MaxFrame is the largest frame payload accepted from an edge. Edges only
	// send small messages, so anything bigger is a protocol error. Default 64 KiB.
	MaxFrame int
}

// EdgeStatus is what ctrl knows about one edge, by node id. Edges stay listed
// after they disconnect, with Connected false.
type EdgeStatus struct {
	NodeID     string
	RemoteAddr string
	// AppliedVersion is the version the edge last acknowledged, or the version
	// it declared in HELLO when that is newer (an edge that reconnects already
	// current sends no ACK because it gets no FULL).
	AppliedVersion uint64
	LastAck        time.Time // zero if the edge never ACKed
	LastNack       string    // "v<version>: <reason>" of the most recent NACK, "" if none
	Connected      bool
	ConnectedSince time.Time // start of the current (or last) session
}

// ErrClosed is returned by Serve once the Server has been closed.
var ErrClosed = errors.New("publish: server closed")

// published is one snapshot ready to send: the FULL payload is encoded once
// at Publish time and shared by every session.
type published struct {
	version uint64
	payload []byte
}

// Server accepts edge sessions and keeps them at the latest snapshot.
type Server struct {
	cfg  Config
	log  *slog.Logger
	comp *wire.Compressor // nil if zstd setup failed: FULL then goes out raw

	latest atomic.Pointer[published]

	mu        sync.Mutex
	closed    bool
	listeners map[net.Listener]struct{}
	sessions  map[*session]struct{}
	edges     map[string]*EdgeStatus
	publishMu sync.Mutex // orders Publish calls so versions only move forward

	wg sync.WaitGroup
}

// New returns a Server; call Serve to accept edges.
func New(cfg Config) *Server {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.HeartbeatInterval <= 0 {
		cfg.HeartbeatInterval = time.Second
	}
	if cfg.DeadAfter <= 0 {
		cfg.DeadAfter = 5 * time.Second
	}
	if cfg.MaxFrame <= 0 {
		cfg.MaxFrame = 64 << 10
	}
	s := &Server{
		cfg:       cfg,
		log:       cfg.Logger,
		listeners: make(map[net.Listener]struct{}),
		sessions:  make(map[*session]struct{}),
		edges:     make(map[string]*EdgeStatus),
	}
	comp, err := wire.NewCompressor()
	if err != nil {
		s.log.Warn("publish: zstd unavailable, sending snapshots uncompressed", "err", err)
	} else {
		s.comp = comp
	}
	return s
}

// Serve accepts edge connections on ln until Close, then returns nil. It
// returns ErrClosed if the Server is already closed, or the listener's error
// if accepting fails permanently.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		ln.Close()
		return ErrClosed
	}
	s.listeners[ln] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	defer s.wg.Done()

	var backoff time.Duration
	for {
		conn, err := ln.Accept()
		if err != nil {
			if s.isClosed() {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				// Transient (e.g. out of file descriptors surfaced as a timeout):
				// back off like net/http rather than spin.
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				s.log.Warn("publish: accept failed, retrying", "addr", ln.Addr().String(), "err", err, "retry_in", backoff)
				time.Sleep(backoff)
				continue
			}
			s.mu.Lock()
			delete(s.listeners, ln)
			s.mu.Unlock()
			return fmt.Errorf("publish: accept on %s: %w", ln.Addr(), err)
		}
		backoff = 0
		if tc, ok := conn.(*net.TCPConn); ok {
			tc.SetNoDelay(true)
		}
		ss := newSession(s, conn)
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			conn.Close()
			return nil
		}
		s.sessions[ss] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go func() {
			defer s.wg.Done()
			ss.run()
		}()
	}
}

func (s *Server) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// Publish makes snapshot the latest version and offers it to every session
// whose edge is behind. Versions not above the current latest are ignored.
// It never waits on an edge: each session's writer picks up the newest
// snapshot when it is free, skipping any it never got to send. The Server
// keeps a reference to snapshot; the caller must not modify it afterwards.
func (s *Server) Publish(version uint64, snapshot []byte) {
	s.publishMu.Lock()
	defer s.publishMu.Unlock()
	if s.isClosed() {
		s.log.Warn("publish: server closed, dropping snapshot", "version", version)
		return
	}
	if cur := s.latest.Load(); cur != nil && version <= cur.version {
		s.log.Debug("publish: ignoring snapshot not newer than the latest", "version", version, "latest", cur.version)
		return
	}
	if version == 0 || len(snapshot) == 0 || uint64(len(snapshot)) > 0xFFFFFFFF {
		s.log.Error("publish: refusing unpublishable snapshot", "version", version, "bytes", len(snapshot))
		return
	}
	m := wire.Full{Version: version, Snapshot: snapshot}
	var payload []byte
	if s.comp != nil {
		payload = s.comp.AppendFull(nil, m)
	} else {
		payload = wire.AppendFull(nil, m)
	}
	s.latest.Store(&published{version: version, payload: payload})
	s.log.Info("publish: new snapshot", "version", version, "bytes", len(snapshot), "payload_bytes", len(payload))

	s.mu.Lock()
	for ss := range s.sessions {
		ss.poke()
	}
	s.mu.Unlock()
}

// LatestVersion returns the latest published version, 0 if none.
func (s *Server) LatestVersion() uint64 {
	if p := s.latest.Load(); p != nil {
		return p.version
	}
	return 0
}

// Status returns every edge seen since the Server started, sorted by node id.
func (s *Server) Status() []EdgeStatus {
	s.mu.Lock()
	out := make([]EdgeStatus, 0, len(s.edges))
	for _, e := range s.edges {
		out = append(out, *e)
	}
	s.mu.Unlock()
	slices.SortFunc(out, func(a, b EdgeStatus) int { return strings.Compare(a.NodeID, b.NodeID) })
	return out
}

// Close stops accepting, closes every session and waits for all goroutines
// the Server started. It is safe to call more than once.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		s.wg.Wait()
		return nil
	}
	s.closed = true
	var errs []error
	for ln := range s.listeners {
		if err := ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, fmt.Errorf("publish: close listener %s: %w", ln.Addr(), err))
		}
	}
	for ss := range s.sessions {
		ss.conn.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	// Under publishMu: a Publish already past its closed check finishes
	// encoding before the encoder goes away.
	s.publishMu.Lock()
	if s.comp != nil {
		s.comp.Close()
		s.comp = nil
	}
	s.publishMu.Unlock()
	return errors.Join(errs...)
}

// attach records a session that completed HELLO. An older session of the
// same node id is closed: the edge reconnected before ctrl saw the old
// connection die, and only one session per edge should be sending to it.
func (s *Server) attach(ss *session, h wire.Hello) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for other := range s.sessions {
		if other != ss && other.nodeID == h.NodeID {
			s.log.Warn("publish: edge reconnected, closing its previous session", "node", h.NodeID, "old_remote", other.remote, "remote", ss.remote)
			other.conn.Close()
			other.superseded.Store(true)
		}
	}
	ss.nodeID = h.NodeID
	e := s.edges[h.NodeID]
	if e == nil {
		e = &EdgeStatus{NodeID: h.NodeID}
		s.edges[h.NodeID] = e
	}
	e.RemoteAddr = ss.remote
	e.Connected = true
	e.ConnectedSince = time.Now()
	// HELLO declares what the edge serves right now, which may even be older
	// than its last ACK if it restarted from an older file on disk.
	e.AppliedVersion = h.HaveVersion
}

func (s *Server) detach(ss *session) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.sessions, ss)
	if ss.nodeID == "" || ss.superseded.Load() {
		return
	}
	if e := s.edges[ss.nodeID]; e != nil {
		e.Connected = false
	}
}

func (s *Server) recordAck(nodeID string, v uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e := s.edges[nodeID]; e != nil {
		e.AppliedVersion = v
		e.LastAck = time.Now()
	}
}

func (s *Server) recordNack(nodeID string, n wire.Nack) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e := s.edges[nodeID]; e != nil {
		e.LastNack = fmt.Sprintf("v%d: %s", n.Version, n.Reason)
	}
}
