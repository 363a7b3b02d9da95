// Package publish streams snapshots from ctrl to its edges: one TCP session
// per edge, an authenticated handshake (HELLO, CHALLENGE, PROOF), then a
// DELTA from the edge's version (or a FULL when no delta is possible)
// whenever the edge is behind, heartbeats both ways, ACK/NACK back.
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

	"github.com/VictoriaMetrics/metrics"

	"github.com/snapgate/snapgate/ctrl/accept"
	"github.com/snapgate/snapgate/fbs"
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
	// this long; it also bounds the handshake as a whole, and how long a
	// write may go without the kernel taking a byte of it, so an edge that
	// stops reading cannot hold a session forever while one on a slow link
	// still gets a large FULL (docs/stream.md, "Failure modes"). Default 5s.
	DeadAfter time.Duration
	// Secret is the shared stream secret both sides prove in the handshake.
	// Empty means an empty HMAC key: the handshake still runs, but anyone
	// can complete it. ctrl refuses that unless told --insecure-stream.
	Secret []byte
	// Lookup returns a stored snapshot by version, for DELTAs from bases
	// older than the ones kept in memory (ctrl passes store.Snapshot). Nil
	// means such edges get a FULL.
	Lookup func(version uint64) ([]byte, error)
	// KeepBases is how many recently published snapshots stay in memory as
	// delta bases (each is a whole snapshot). Default 4.
	KeepBases int
	// MaxHandshakes bounds the connections still in their handshake (each
	// holds a descriptor and a goroutine for up to DeadAfter), and
	// MaxHandshakesPerIP those from one address; a connection beyond either
	// is closed at once. Anyone who reaches the port can open such
	// connections without the secret: the per-address bound keeps one host
	// from taking every place and locking edges out. An edge refused here
	// retries with backoff; a handshake takes one round trip, so even a
	// whole fleet (or one NAT's worth of it) reconnecting at once stays far
	// below the defaults, 1024 and 16.
	MaxHandshakes, MaxHandshakesPerIP int
	// Recycle, if set, gets back each published snapshot's file once
	// nothing in the Server can read it any more: it has left the
	// KeepBases delta bases and no session is still encoding a FULL or a
	// DELTA from it (or PublishSnapshot refused it). ctrl hands it to its
	// fbs.Builder, which writes a later version into that memory instead
	// of fresh pages. Nil leaves the files to the garbage collector.
	Recycle func(file []byte)
	// Metrics receives the publisher's metrics; nil keeps a private set.
	Metrics *metrics.Set

	// Edges seeds the edges remembered from before a restart (ctrl reads
	// them from its store): Status lists them, disconnected, until they
	// reconnect. Records with an invalid node id are logged and skipped.
	Edges []EdgeRecord
	// OnEdgeChange, if set, is called when an edge's EdgeRecord changes,
	// with the new record, or with nil when Forget removes the edge. A
	// connect and a disconnect are reported at once, a Forget before Forget
	// returns (its error fails the Forget); ACKs and NACKs at most once per
	// SaveInterval per edge, with the latest state, and their errors are
	// logged. Calls never overlap and come in order; Close makes the calls
	// still pending before it returns.
	OnEdgeChange func(nodeID string, rec *EdgeRecord) error
	// OnEdgesSaved, if set, is called after each batch of OnEdgeChange
	// calls for connects, disconnects, ACKs and NACKs (a Forget's call is
	// durable on its own), so that a store can make the batch durable at
	// once; its error is logged.
	OnEdgesSaved func() error
	// SaveInterval bounds how often OnEdgeChange reports one edge's ACKs
	// and NACKs: an edge at 50 versions a second would otherwise mean 50
	// store writes a second. Default 1s.
	SaveInterval time.Duration
	// OnReport, if set, receives the passive health observations an edge
	// sends in REPORT frames (protocol 3), with the edge's node id. It is
	// called on that edge's session reader, so it must not block for long;
	// the slice is reused after it returns. Nil: REPORTs are read and
	// dropped.
	OnReport func(nodeID string, obs []wire.Observation)
}

// EdgeStatus is what ctrl knows about one edge, by node id. Edges stay listed
// after they disconnect, with Connected false, and across ctrl restarts
// through Config.Edges, until Forget.
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
	// Diverged is true while the edge serves a snapshot that is not from
	// ctrl's history (see docs/stream.md, "Diverged edges"): AppliedVersion
	// is then the edge's own claim, not one of ctrl's versions. It clears
	// when the edge ACKs ctrl's replacement.
	Diverged       bool
	ConnectedSince time.Time // start of the current (or last) session
	FullsSent      uint64    // FULL frames sent to this edge since ctrl started
	DeltasSent     uint64    // DELTA frames sent to this edge since ctrl started
}

// acquire takes a reference to p's bytes, or reports false if the last
// one is gone (the file may already hold another version).
func (p *published) acquire() bool {
	for {
		n := p.refs.Load()
		if n == 0 {
			return false
		}
		if p.refs.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

// release drops a reference to p's bytes; the last one recycles the file.
func (s *Server) release(p *published) {
	if p.refs.Add(-1) == 0 && s.cfg.Recycle != nil {
		s.cfg.Recycle(p.snap.Bytes())
	}
}

// acquireLatest returns the latest snapshot with a reference taken, or nil
// if there is none. A latest snapshot whose references are gone has been
// replaced already: PublishSnapshot releases evicted snapshots only after
// storing the newer latest.
func (s *Server) acquireLatest() *published {
	for {
		p := s.latest.Load()
		if p == nil || p.acquire() {
			return p
		}
	}
}

// acquireRecent returns the snapshot of version v held as a delta base,
// with a reference taken, or nil.
func (s *Server) acquireRecent(v uint64) *published {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range s.recent {
		if p.version == v && p.acquire() {
			return p
		}
	}
	return nil
}

// ErrClosed is returned by Serve once the Server has been closed.
var ErrClosed = errors.New("publish: server closed")

// published is one snapshot ready to send. Its payloads are encoded on
// first need and then shared by every session: the FULL once, each DELTA
// once per base.
type published struct {
	version     uint64
	snap        *fbs.Snapshot
	hash        uint64 // file trailer
	committedAt time.Time

	// refs counts who may read snap's bytes: the recent list while it
	// lists p, and each session encoding from it. The last release hands
	// the file to Config.Recycle; at 0, acquire fails.
	refs atomic.Int32

	fullOnce sync.Once
	full     atomic.Pointer[[]byte] // FULL payload, encoded by the first session that needs it

	// dmu guards deltas and replace only while they are looked up or
	// stored, never while one is encoded: a session waits for no encode
	// but the one whose result it needs.
	dmu     sync.Mutex
	deltas  map[baseKey]*deltaEntry
	replace []byte // FULL with the replace flag, built on first need
}

// deltaEntry is the DELTA to p from one base, encoded by the first session
// that asks for it while the others with that base wait on ready.
type deltaEntry struct {
	ready   chan struct{}
	payload []byte // nil: send a FULL (no such base, or a FULL is smaller)
}

// maxDeltaBases bounds the bases remembered per version. Edges name their
// base themselves, so without a bound a misbehaving one could grow the map
// for as long as the version is the latest; beyond it DELTAs are encoded
// per session.
const maxDeltaBases = 64

// baseKey names a delta base by version and file hash: an edge's claim to a
// version counts only if its bytes are the ones ctrl built.
type baseKey struct{ version, hash uint64 }

// Server accepts edge sessions and keeps them at the latest snapshot.
type Server struct {
	cfg  Config
	log  *slog.Logger
	comp *wire.Compressor // nil if zstd setup failed: FULL then goes out raw
	denc *wire.DeltaEncoder
	m    *pubMetrics

	latest atomic.Pointer[published]
	recent []*published // newest last, at most KeepBases; under publishMu and mu

	// hsMu guards the counts of connections accepted and not yet past
	// their handshake, in all and per remote address (MaxHandshakes);
	// refusedLog rate-limits the warning.
	hsMu       sync.Mutex
	handshakes int
	hsByIP     map[string]int
	refusedLog atomic.Int64

	mu        sync.Mutex
	closed    bool
	listeners map[net.Listener]struct{}
	sessions  map[*session]struct{}
	edges     map[string]*edge
	publishMu sync.Mutex // orders Publish calls so versions only move forward
	// saveMu orders OnEdgeChange calls: held by save from collecting the
	// changed records to the last call, and by Forget from removing the
	// edge to its call, so a record collected before a Forget is never
	// written after it.
	saveMu sync.Mutex

	wg sync.WaitGroup

	// saveLoop's channels, nil without OnEdgeChange (remember.go).
	saveWake           chan struct{} // capacity 1
	saveStop, saveDone chan struct{}
}

// New returns a Server; call Serve to accept edges, and Close to stop it
// (with OnEdgeChange set, New starts the goroutine that calls it).
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
	if cfg.KeepBases <= 0 {
		cfg.KeepBases = 4
	}
	if cfg.MaxHandshakes <= 0 {
		cfg.MaxHandshakes = 1024
	}
	if cfg.MaxHandshakesPerIP <= 0 {
		cfg.MaxHandshakesPerIP = 16
	}
	if cfg.Metrics == nil {
		cfg.Metrics = metrics.NewSet()
	}
	if cfg.SaveInterval <= 0 {
		cfg.SaveInterval = time.Second
	}
	s := &Server{
		cfg:       cfg,
		log:       cfg.Logger,
		listeners: make(map[net.Listener]struct{}),
		hsByIP:    make(map[string]int),
		sessions:  make(map[*session]struct{}),
		edges:     make(map[string]*edge),
	}
	s.seed(cfg.Edges)
	comp, err := wire.NewCompressor()
	if err != nil {
		s.log.Warn("publish: zstd unavailable, sending snapshots uncompressed", "err", err)
	} else {
		s.comp = comp
	}
	denc, err := wire.NewDeltaEncoder()
	if err != nil {
		s.log.Warn("publish: zstd unavailable, sending FULL snapshots only", "err", err)
	} else {
		s.denc = denc
	}
	s.m = newPubMetrics(cfg.Metrics, s)
	if cfg.OnEdgeChange != nil {
		s.saveWake = make(chan struct{}, 1)
		s.saveStop, s.saveDone = make(chan struct{}), make(chan struct{})
		go s.saveLoop()
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
			if accept.Transient(err) {
				backoff = accept.Backoff(backoff)
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
		ip := remoteIP(conn)
		if !s.beginHandshake(ip) {
			conn.Close()
			s.m.handshakesRefused.Inc()
			if now, last := time.Now().UnixNano(), s.refusedLog.Load(); now-last >= int64(time.Second) && s.refusedLog.CompareAndSwap(last, now) {
				s.log.Warn("publish: too many connections in their handshake; closing new ones", "max", s.cfg.MaxHandshakes,
					"max_per_address", s.cfg.MaxHandshakesPerIP, "from", conn.RemoteAddr().String())
			}
			continue
		}
		if tc, ok := conn.(*net.TCPConn); ok {
			tc.SetNoDelay(true)
		}
		ss := newSession(s, conn)
		ss.ip = ip
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			s.endHandshake(ip)
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

// remoteIP is the address part of c's remote address (all of it if it has
// no port).
func remoteIP(c net.Conn) string {
	a := c.RemoteAddr().String()
	if host, _, err := net.SplitHostPort(a); err == nil {
		return host
	}
	return a
}

// beginHandshake counts a connection from ip into its handshake, unless
// that would pass MaxHandshakes or MaxHandshakesPerIP.
func (s *Server) beginHandshake(ip string) bool {
	s.hsMu.Lock()
	defer s.hsMu.Unlock()
	if s.handshakes >= s.cfg.MaxHandshakes || s.hsByIP[ip] >= s.cfg.MaxHandshakesPerIP {
		return false
	}
	s.handshakes++
	s.hsByIP[ip]++
	return true
}

// endHandshake counts a connection from ip out of its handshake.
func (s *Server) endHandshake(ip string) {
	s.hsMu.Lock()
	defer s.hsMu.Unlock()
	s.handshakes--
	if s.hsByIP[ip] <= 1 {
		delete(s.hsByIP, ip)
	} else {
		s.hsByIP[ip]--
	}
}

// pendingHandshakes is the number of connections in their handshake.
func (s *Server) pendingHandshakes() int {
	s.hsMu.Lock()
	defer s.hsMu.Unlock()
	return s.handshakes
}

func (s *Server) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// Publish makes snapshot the latest version and offers it to every session
// whose edge is behind. Versions not above the current latest, and bytes
// that do not verify (fbs.Open), are refused. committedAt is when the oldest
// write it contains was acknowledged to its client; ACKs measure
// propagation lag from it. It never waits on an edge: each session's writer
// picks up the newest snapshot when it is free, skipping any it never got
// to send. The Server keeps a reference to snapshot; the caller must not
// modify it afterwards (Config.Recycle says when it may).
func (s *Server) Publish(version uint64, snapshot []byte, committedAt time.Time) {
	// The delta encoder needs the shard layout; opening also makes sure
	// ctrl never streams bytes an edge would refuse.
	snap, err := fbs.Open(snapshot)
	if err != nil || snap.Version() != version {
		s.log.Error("publish: refusing snapshot that does not verify", "version", version, "err", err)
		return
	}
	s.PublishSnapshot(snap, committedAt)
}

// PublishSnapshot is Publish for a snapshot already verified: an fbs.Open
// result, or fbs.Builder.BuildSnapshot's, which runs Open's checks and
// walks only the shards it has not verified before. ctrl publishes what
// its Builder returns, so a 100,000-route version is not walked twice.
// The Server owns the file from here on (see Config.Recycle), also when it
// refuses it.
func (s *Server) PublishSnapshot(snap *fbs.Snapshot, committedAt time.Time) {
	version, snapshot := snap.Version(), snap.Bytes()
	s.publishMu.Lock()
	defer s.publishMu.Unlock()
	refuse := func() {
		if s.cfg.Recycle != nil {
			s.cfg.Recycle(snapshot)
		}
	}
	if s.isClosed() {
		s.log.Warn("publish: server closed, dropping snapshot", "version", version)
		refuse()
		return
	}
	if cur := s.latest.Load(); cur != nil && version <= cur.version {
		s.log.Debug("publish: ignoring snapshot not newer than the latest", "version", version, "latest", cur.version)
		refuse()
		return
	}
	if version == 0 || uint64(len(snapshot)) > 0xFFFFFFFF {
		s.log.Error("publish: refusing unpublishable snapshot", "version", version, "bytes", len(snapshot))
		refuse()
		return
	}
	// The FULL is compressed on first need (fullPayload), not here: at
	// 100,000 routes that was most of Publish's time, on every version,
	// while edges that keep up only ever get DELTAs.
	p := &published{version: version, snap: snap, hash: wire.FileHash(snapshot),
		committedAt: committedAt, deltas: make(map[baseKey]*deltaEntry)}
	p.refs.Store(1) // the recent list's
	s.mu.Lock()
	s.recent = append(s.recent, p)
	var evicted []*published
	if n := len(s.recent) - s.cfg.KeepBases; n > 0 {
		evicted = slices.Clone(s.recent[:n])
		s.recent = slices.Delete(s.recent, 0, n)
	}
	s.mu.Unlock()
	s.latest.Store(p)
	// After the Store, so that acquireLatest never finds a released latest.
	for _, old := range evicted {
		s.release(old)
	}
	s.log.Info("publish: new snapshot", "version", version, "bytes", len(snapshot))

	s.mu.Lock()
	for ss := range s.sessions {
		ss.poke()
	}
	s.mu.Unlock()
}

// fullPayload returns p's FULL payload, encoding it on the first call.
// The caller holds a reference to p.
func (s *Server) fullPayload(p *published) []byte {
	p.fullOnce.Do(func() {
		m := wire.Full{Version: p.version, Snapshot: p.snap.Bytes()}
		var full []byte
		if s.comp != nil {
			full = s.comp.AppendFull(nil, m)
		} else {
			full = wire.AppendFull(nil, m)
		}
		p.full.Store(&full)
		s.log.Debug("publish: encoded FULL", "version", p.version, "bytes", len(m.Snapshot), "payload_bytes", len(full))
	})
	return *p.full.Load()
}

// deltaCheckDiv sets which DELTAs are weighed against the FULL: those of
// at least 1/deltaCheckDiv of the snapshot file. Our FULLs compress to a
// sixth of the file or more (17-22% for 100 to 100,000 routes), so a smaller
// DELTA cannot lose and the FULL is not compressed just to find that out.
const deltaCheckDiv = 16

// delta returns the DELTA payload from base (version, file hash) to p, or
// nil when there is none to send: ctrl no longer has that base, its hash
// differs from the edge's, or a FULL would be smaller. Each (p, base) pair
// is encoded once however many edges ask. The caller holds a reference to
// p; delta takes one to the base while it encodes.
func (s *Server) delta(p *published, baseVer, baseHash uint64) []byte {
	if s.denc == nil || baseVer == 0 || baseVer >= p.version || baseHash == 0 {
		return nil
	}
	key := baseKey{baseVer, baseHash}
	p.dmu.Lock()
	if e, ok := p.deltas[key]; ok {
		p.dmu.Unlock()
		<-e.ready
		return e.payload
	}
	e := &deltaEntry{ready: make(chan struct{})}
	shared := len(p.deltas) < maxDeltaBases
	if shared {
		p.deltas[key] = e
	}
	p.dmu.Unlock()

	d, lasting := s.encodeDelta(p, baseVer, baseHash)
	e.payload = d
	close(e.ready)
	if shared && !lasting {
		p.dmu.Lock()
		delete(p.deltas, key)
		p.dmu.Unlock()
	}
	return d
}

// encodeDelta is delta's work for one base. lasting is false when the
// answer may differ next time (the base could not be read): it is not
// kept for other sessions then.
func (s *Server) encodeDelta(p *published, baseVer, baseHash uint64) (d []byte, lasting bool) {
	var base *fbs.Snapshot
	if b := s.acquireRecent(baseVer); b != nil {
		defer s.release(b)
		base = b.snap
	} else if s.cfg.Lookup != nil {
		data, err := s.cfg.Lookup(baseVer)
		if err != nil {
			s.log.Info("publish: delta base not available, sending FULL", "base", baseVer, "version", p.version, "err", err)
			return nil, false
		}
		if base, err = fbs.Open(data); err != nil {
			s.log.Error("publish: stored delta base does not verify, sending FULL", "base", baseVer, "err", err)
			return nil, true
		}
	}
	if base == nil || wire.FileHash(base.Bytes()) != baseHash {
		return nil, true
	}
	d, err := s.denc.AppendDelta(nil, base, p.snap)
	if err != nil {
		s.log.Error("publish: encoding delta failed, sending FULL", "base", baseVer, "version", p.version, "err", err)
		return nil, true
	}
	if len(d) >= len(p.snap.Bytes())/deltaCheckDiv && len(d) >= len(s.fullPayload(p)) {
		return nil, true
	}
	return d, true
}

// replacePayload returns p's FULL with the replace flag, encoded once.
// The caller holds a reference to p.
func (s *Server) replacePayload(p *published) ([]byte, error) {
	full := s.fullPayload(p)
	p.dmu.Lock()
	defer p.dmu.Unlock()
	if p.replace == nil {
		r, err := wire.AsReplace(full)
		if err != nil {
			return nil, fmt.Errorf("publish: replace FULL v%d: %w", p.version, err)
		}
		p.replace = r
	}
	return p.replace, nil
}

// diverged reports whether the snapshot an edge declared in HELLO is not
// from ctrl's history, and why. Only a version at or above ctrl's latest
// needs this: an edge behind gets a newer FULL anyway (its hash keeps it
// from getting a DELTA), which it applies normally. Versions are store
// revisions, so an edge ahead of ctrl's latest holds one ctrl never built.
func (s *Server) diverged(h wire.Hello) (bool, string) {
	if h.HaveVersion == 0 {
		return false, ""
	}
	p := s.latest.Load()
	switch {
	case p == nil:
		return true, "ctrl has published no snapshot yet"
	case h.HaveVersion > p.version:
		return true, fmt.Sprintf("edge v%d is newer than ctrl's latest v%d", h.HaveVersion, p.version)
	case h.HaveVersion == p.version && h.HaveHash != p.hash:
		return true, fmt.Sprintf("edge v%d has file hash %016x, ctrl's v%d has %016x", h.HaveVersion, h.HaveHash, p.version, p.hash)
	}
	return false, ""
}

// KeepBases is how many published snapshots the Server holds as delta
// bases (Config.KeepBases with its default applied).
func (s *Server) KeepBases() int { return s.cfg.KeepBases }

// LatestVersion returns the latest published version, 0 if none.
func (s *Server) LatestVersion() uint64 {
	if p := s.latest.Load(); p != nil {
		return p.version
	}
	return 0
}

// Status returns every edge seen since the Server started or seeded by
// Config.Edges, and not forgotten since, sorted by node id.
func (s *Server) Status() []EdgeStatus {
	s.mu.Lock()
	out := make([]EdgeStatus, 0, len(s.edges))
	for _, e := range s.edges {
		out = append(out, e.EdgeStatus)
	}
	s.mu.Unlock()
	slices.SortFunc(out, func(a, b EdgeStatus) int { return strings.Compare(a.NodeID, b.NodeID) })
	return out
}

// Close stops accepting, closes every session, hands OnEdgeChange the
// changes still pending (every edge now disconnected) and waits for all
// goroutines the Server started. It is safe to call more than once.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		s.wg.Wait()
		if s.saveDone != nil {
			<-s.saveDone
		}
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
	if s.saveStop != nil {
		close(s.saveStop) // sessions have all detached: their disconnects are pending
		<-s.saveDone
	}
	// Only sessions encode, and they have all ended.
	if s.comp != nil {
		s.comp.Close()
		s.comp = nil
	}
	if s.denc != nil {
		s.denc.Close()
	}
	return errors.Join(errs...)
}

// attach records a session that completed HELLO. An older session of the
// same node id is closed: the edge reconnected before ctrl saw the old
// connection die, and only one session per edge should be sending to it.
// attach lists ss as the session of its node id. A session already there
// for that id is closed if it has heard nothing from its edge for half of
// DeadAfter (its connection died without a close reaching ctrl, and the
// edge is reconnecting); if it is alive, ss is refused instead and attach
// returns false and the live session's remote address: two processes
// with one node id would otherwise close each other's session in turn
// forever.
func (s *Server) attach(ss *session, h wire.Hello, diverged bool) (liveRemote string, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	quiet := time.Now().Add(-s.cfg.DeadAfter / 2).UnixNano()
	for other := range s.sessions {
		if other != ss && other.nodeID == h.NodeID && other.heard.Load() > quiet {
			return other.remote, false
		}
	}
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
		e = &edge{EdgeStatus: EdgeStatus{NodeID: h.NodeID}}
		s.edges[h.NodeID] = e
	}
	e.RemoteAddr = ss.remote
	e.Connected = true
	e.ConnectedSince = time.Now()
	// HELLO declares what the edge serves right now, which may even be older
	// than its last ACK if it restarted from an older file on disk.
	e.AppliedVersion = h.HaveVersion
	e.Diverged = diverged
	s.changed(e, true)
	return "", true
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
		s.changed(e, true)
	}
}

// recordAck notes an ACK of ctrl's v; replaced says it ended divergence.
func (s *Server) recordAck(nodeID string, v uint64, replaced bool) {
	now := time.Now()
	s.mu.Lock()
	if e := s.edges[nodeID]; e != nil {
		e.AppliedVersion = v
		e.LastAck = now
		if replaced {
			e.Diverged = false
		}
		s.changed(e, false)
	}
	var committed time.Time
	for _, p := range s.recent {
		if p.version == v {
			committed = p.committedAt
		}
	}
	s.mu.Unlock()
	if !committed.IsZero() {
		s.m.propagation.Update(now.Sub(committed).Seconds())
	}
}

func (s *Server) recordSent(nodeID string, t wire.Type, n int) {
	s.mu.Lock()
	if e := s.edges[nodeID]; e != nil {
		if t == wire.TypeDelta {
			e.DeltasSent++
		} else {
			e.FullsSent++
		}
	}
	s.mu.Unlock()
	if t == wire.TypeDelta {
		s.m.deltaBytes.Add(n + wire.HeaderSize)
		s.m.deltas.Inc()
	} else {
		s.m.fullBytes.Add(n + wire.HeaderSize)
		s.m.fulls.Inc()
	}
}

// connected counts edges with a live, authenticated session.
func (s *Server) connected() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, e := range s.edges {
		if e.Connected {
			n++
		}
	}
	return n
}

func (s *Server) recordNack(nodeID string, n wire.Nack) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e := s.edges[nodeID]; e != nil {
		e.LastNack = fmt.Sprintf("v%d: %s", n.Version, n.Reason)
		s.changed(e, false)
	}
}
