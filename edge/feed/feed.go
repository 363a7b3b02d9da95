// Package feed is the edge's end of the snapshot stream: it dials ctrl, says
// HELLO with the version in service, authenticates both ways with the shared
// secret, and for every FULL or DELTA it receives rebuilds, verifies,
// persists, maps and applies the snapshot before answering ACK, or NACKs it
// and keeps the old one. It reconnects with jittered exponential backoff and
// tracks how fresh the snapshot in service is (Freshness).
package feed

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/snapgate/snapgate/edge/snapstore"
	"github.com/snapgate/snapgate/fbs"
	"github.com/snapgate/snapgate/wire"
)

// Config configures a Client. CtrlAddr, NodeID, Store, Current and Apply are
// required; zero durations take the documented defaults.
type Config struct {
	CtrlAddr string           // host:port of ctrl's publish listener
	NodeID   string           // this edge's id, 1..128 bytes of visible ASCII
	Store    *snapstore.Store // where accepted snapshots are persisted
	// Current returns the snapshot version in service, 0 if none.
	Current func() uint64
	// Apply swaps a verified, mapped snapshot into service. On success the
	// mapping belongs to the callee; on error the feed unmaps it and NACKs.
	Apply func(m *snapstore.Mapping) error
	// Replace swaps a snapshot into service whatever its version, for a
	// FULL that ctrl flags as replace: this edge's snapshot is not from
	// ctrl's history (ctrl's data was lost or restored), so ctrl's latest
	// must win even though its version is not higher. Nil: such a FULL is
	// NACKed and the edge keeps serving its own history. Ownership of m is
	// as for Apply.
	Replace func(m *snapstore.Mapping) error
	Logger  *slog.Logger // default slog.Default()

	MinBackoff time.Duration // first reconnect delay bound, default 100ms
	MaxBackoff time.Duration // largest reconnect delay bound, default 5s
	// DeadAfter closes a session that received nothing from ctrl for this
	// long (no byte: a large FULL on a slow link may take longer as a
	// whole); it also bounds each write. Default 5s.
	DeadAfter   time.Duration
	DialTimeout time.Duration // default 5s
	// HeartbeatInterval is how often the edge sends HEARTBEAT. Default 1s.
	HeartbeatInterval time.Duration
	// MaxSnapshot bounds a FULL frame and the decoded snapshot. Default
	// wire.DefaultMaxPayload. Until ctrl has proved the secret, frames are
	// bounded by wire.MaxHandshakePayload instead.
	MaxSnapshot int
	// Secret is the stream secret shared with ctrl (wire.ReadSecretFile).
	// Run refuses an empty one unless Insecure is set.
	Secret []byte
	// Insecure allows an empty Secret: the handshake then runs with an empty
	// key, which anyone can complete. For demos and tests only.
	Insecure bool

	// ClustersOf appends to dst the ids of the clusters in the snapshot in
	// service that list endpoint addr, for ObserveEndpoint. Nil: no health
	// reports.
	ClustersOf func(addr string, dst []string) []string
	// InService calls fn with the snapshot in service (nil when none),
	// held for the call. Until the feed has installed a snapshot of its
	// own (after a boot from disk), it verifies against that one: the
	// shards a file shares with it are compared, not walked again, and
	// keep their verified walks, which the proxy's counter indexes carry
	// over at the swap (fbs.Snapshot.CarryRoutes). Nil: verified alone.
	InService func(fn func(*fbs.Snapshot))
	// ReportInterval is the least time between two REPORTs. Default 250ms.
	ReportInterval time.Duration
	// MaxQueuedReports bounds the observations waiting for ctrl; the
	// oldest are dropped past it. Default 1024.
	MaxQueuedReports int
}

// downgradeFor is how long an edge speaks the protocol version below the
// one of a HELLO on which ctrl closed the stream (a ctrl older than the
// version refuses it): 3 after a closed 4 (no 5xx reports), 2 after a
// closed 3 (no reports). Then it tries ProtocolVersion again, so an
// upgraded ctrl gets the newer reports within it.
const downgradeFor = 10 * time.Minute

// Status is the feed's view of its link to ctrl.
type Status struct {
	Connected     bool
	LastContact   time.Time // last frame received from ctrl; zero if never
	LatestVersion uint64    // newest version ctrl announced (FULL, DELTA or HEARTBEAT), or the version of a replace FULL
	LastError     string    // why the last snapshot was refused or the last session ended
}

// Client is the edge's stream client.
type Client struct {
	cfg Config
	log *slog.Logger

	mu     sync.Mutex
	status Status

	fresh atomic.Pointer[freshness]
	// base is the last snapshot this feed installed, kept as the next delta
	// base so a DELTA needs no disk read, and as the snapshot the next one
	// is verified after (fbs.OpenAfter). spare is memory no snapshot reads
	// (a former base's), which the next one is rebuilt into: on a loaded VM
	// the first touch of a fresh 12 MB buffer cost more than the rest of an
	// apply. Both are touched only by Run's goroutine.
	base  *fbs.Snapshot
	spare []byte
	// held caches the file hash of the version in service; written by Run's
	// goroutine, read by the heartbeat sender.
	held atomic.Pointer[heldHash]

	reports reportQueue
	// Speak protocol downTo until downUntil (downgradeFor); Run's goroutine.
	downTo    uint8
	downUntil time.Time
}

type heldHash struct{ version, hash uint64 }

// freshness is replaced whole, so Freshness reads a consistent pair with one
// atomic load.
type freshness struct {
	version     uint64
	confirmedAt time.Time
}

// Freshness returns the snapshot version in service and when ctrl last
// confirmed it is the latest (a HEARTBEAT announcing that version, or the
// ACK of the FULL/DELTA that delivered it). confirmedAt is zero if it was
// never confirmed since this process started (a boot from disk with ctrl
// down). Lock-free and allocation-free: the proxy calls it per request.
func (c *Client) Freshness() (version uint64, confirmedAt time.Time) {
	if f := c.fresh.Load(); f != nil {
		return f.version, f.confirmedAt
	}
	return 0, time.Time{}
}

func (c *Client) confirm(v uint64, at time.Time) {
	c.fresh.Store(&freshness{version: v, confirmedAt: at})
}

// New returns a Client; Run starts it.
func New(cfg Config) *Client {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = 100 * time.Millisecond
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = 5 * time.Second
	}
	if cfg.MaxBackoff < cfg.MinBackoff {
		cfg.MaxBackoff = cfg.MinBackoff
	}
	if cfg.DeadAfter <= 0 {
		cfg.DeadAfter = 5 * time.Second
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = 5 * time.Second
	}
	if cfg.HeartbeatInterval <= 0 {
		cfg.HeartbeatInterval = time.Second
	}
	if cfg.MaxSnapshot <= 0 {
		cfg.MaxSnapshot = wire.DefaultMaxPayload
	}
	if cfg.ReportInterval <= 0 {
		cfg.ReportInterval = 250 * time.Millisecond
	}
	if cfg.MaxQueuedReports <= 0 {
		cfg.MaxQueuedReports = 1024
	}
	return &Client{cfg: cfg, log: cfg.Logger.With("ctrl", cfg.CtrlAddr, "node", cfg.NodeID)}
}

// Status returns a copy of the current link status.
func (c *Client) Status() Status {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.status
}

func (c *Client) update(fn func(*Status)) {
	c.mu.Lock()
	fn(&c.status)
	c.mu.Unlock()
}

// Run connects to ctrl and keeps the edge current until ctx is cancelled,
// then returns ctx.Err(). It returns early only for a configuration error.
func (c *Client) Run(ctx context.Context) error {
	if c.cfg.CtrlAddr == "" || c.cfg.Store == nil || c.cfg.Current == nil || c.cfg.Apply == nil {
		return errors.New("feed: Config needs CtrlAddr, Store, Current and Apply")
	}
	if err := wire.ValidNodeID(c.cfg.NodeID); err != nil {
		return fmt.Errorf("feed: NodeID %q: %w", c.cfg.NodeID, err)
	}
	if len(c.cfg.Secret) == 0 && !c.cfg.Insecure {
		return errors.New("feed: Config.Secret is empty; set a stream secret (or Insecure for a demo)")
	}
	dec, err := wire.NewDecompressor(c.cfg.MaxSnapshot)
	if err != nil {
		return fmt.Errorf("feed: %w", err)
	}
	defer dec.Close()
	ddec, err := wire.NewDeltaDecoder(c.cfg.MaxSnapshot)
	if err != nil {
		return fmt.Errorf("feed: %w", err)
	}
	defer ddec.Close()
	if c.fresh.Load() == nil {
		c.confirm(c.cfg.Current(), time.Time{})
	}

	attempt := 0
	for {
		healthy, err := c.session(ctx, dec, ddec)
		c.update(func(s *Status) {
			s.Connected = false
			if err != nil && ctx.Err() == nil {
				s.LastError = err.Error()
			}
		})
		if ctx.Err() != nil {
			return ctx.Err()
		}
		// A session that worked resets the backoff; one that ended on a bad
		// frame does not, so a ctrl sending garbage is not hammered.
		if healthy && !errors.Is(err, errProtocol) {
			attempt = 0
		}
		d := backoff(c.cfg.MinBackoff, c.cfg.MaxBackoff, attempt)
		attempt++
		c.log.Warn("feed: disconnected from ctrl, reconnecting", "err", err, "retry_in", d)
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// backoff returns a delay drawn uniformly from [0, min(max, min·2^attempt)]
// ("full jitter"), so a fleet that lost ctrl at once does not reconnect at once.
func backoff(minD, maxD time.Duration, attempt int) time.Duration {
	bound := maxD
	if attempt < 32 {
		if b := minD << attempt; b > 0 && b < maxD {
			bound = b
		}
	}
	return rand.N(bound + 1)
}

// errProtocol marks a session ended by a bad frame or a message ctrl must
// not send.
var errProtocol = errors.New("feed: protocol error")

// session runs one connection. healthy reports whether ctrl answered with at
// least one valid frame, which resets the backoff.
func (c *Client) session(ctx context.Context, dec *wire.Decompressor, ddec *wire.DeltaDecoder) (healthy bool, err error) {
	d := net.Dialer{Timeout: c.cfg.DialTimeout}
	conn, err := d.DialContext(ctx, "tcp", c.cfg.CtrlAddr)
	if err != nil {
		return false, fmt.Errorf("feed: dial %s: %w", c.cfg.CtrlAddr, err)
	}
	// Cancelling ctx closes the conn, which unblocks every read and write.
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	defer conn.Close()
	if tc, ok := conn.(*net.TCPConn); ok {
		tc.SetNoDelay(true)
	}

	s := &stream{c: c, conn: conn, w: wire.NewWriter(conn), dec: dec, ddec: ddec}
	if time.Now().Before(c.downUntil) {
		s.w.SetVersion(c.downTo) // handshake set it in range, cannot fail
	}
	// Until ctrl has proved the secret, DeadAfter bounds the handshake as a
	// whole: a peer trickling bytes must not hold the edge away from ctrl.
	// Likewise only a CHALLENGE-sized frame is read from it: the address
	// may not be ctrl's, and a FULL's limit is snapshot-sized.
	ir := &idleReader{conn: conn, idle: c.cfg.DeadAfter, until: time.Now().Add(c.cfg.DeadAfter)}
	r := wire.NewReader(ir, wire.MaxHandshakePayload)
	if err := s.handshake(r); err != nil {
		return false, err
	}
	ir.until = time.Time{}
	r.SetMaxPayload(c.cfg.MaxSnapshot)
	reports := r.Version() >= 3 && c.cfg.ClustersOf != nil
	c.update(func(st *Status) { st.Connected = true })
	c.log.Info("feed: connected to ctrl", "have_version", c.cfg.Current(), "protocol", r.Version())

	var bg sync.WaitGroup
	sessionDone := make(chan struct{})
	bg.Go(func() { s.heartbeats(sessionDone) })
	if reports {
		bg.Go(func() { s.reportLoop(sessionDone) })
	}
	defer func() {
		close(sessionDone)
		conn.Close()
		bg.Wait()
	}()

	for {
		t, p, err := r.Next()
		if err != nil {
			if ctx.Err() != nil {
				return healthy, ctx.Err()
			}
			if !badFrame(err) {
				return healthy, c.lost(err)
			}
			c.log.Error("feed: bad frame from ctrl, reconnecting", "err", err)
			return healthy, fmt.Errorf("%w: read frame: %w", errProtocol, err)
		}
		healthy = true
		now := time.Now()
		c.update(func(st *Status) { st.LastContact = now })
		switch t {
		case wire.TypeHeartbeat:
			hb, err := wire.DecodeHeartbeat(p)
			if err != nil {
				return healthy, fmt.Errorf("%w: %w", errProtocol, err)
			}
			c.noteLatest(hb.LatestVersion)
			if err := s.retryUnsaved(now); err != nil {
				return healthy, err
			}
			// Confirm content, not a number: a v6 from another ctrl history
			// is not ctrl's v6.
			if cur := c.cfg.Current(); cur != 0 && hb.LatestVersion == cur && hb.Hash == c.hashInService(cur) {
				c.confirm(cur, now)
			}
		case wire.TypeFull:
			if err := s.handleFull(p); err != nil {
				return healthy, err
			}
		case wire.TypeDelta:
			if err := s.handleDelta(p); err != nil {
				return healthy, err
			}
		default:
			return healthy, fmt.Errorf("%w: ctrl sent %s", errProtocol, t)
		}
	}
}

// idleReader sets the read deadline afresh before every read, so the
// deadline bounds the time without a byte from ctrl, not the time a frame
// takes: a FULL of several megabytes on a slow link is a live stream, and
// with a deadline per frame the edge would drop it at every attempt and
// never converge. A non-zero until caps the deadline (the handshake's).
// Used by the session's reader goroutine only.
type idleReader struct {
	conn  net.Conn
	idle  time.Duration
	until time.Time
}

func (r *idleReader) Read(b []byte) (int, error) {
	d := time.Now().Add(r.idle)
	if !r.until.IsZero() && r.until.Before(d) {
		d = r.until
	}
	r.conn.SetReadDeadline(d)
	return r.conn.Read(b)
}

// frameErrors are the frame checks a Reader fails a frame with; any other
// read error is the connection failing under the stream.
var frameErrors = [...]error{wire.ErrBadVersion, wire.ErrBadChecksum, wire.ErrTooLarge, wire.ErrUnknownType, wire.ErrBadFlags}

// badFrame reports whether err is ctrl sending a frame that fails the
// frame checks.
func badFrame(err error) bool {
	for _, fe := range frameErrors {
		if errors.Is(err, fe) {
			return true
		}
	}
	return false
}

// lost describes a session whose connection failed: ctrl silent, ctrl
// closing between frames, or the connection ending inside a frame (nothing
// of that frame is applied).
func (c *Client) lost(err error) error {
	var ne net.Error
	switch {
	case errors.As(err, &ne) && ne.Timeout():
		return fmt.Errorf("feed: nothing from ctrl for %s", c.cfg.DeadAfter)
	case errors.Is(err, io.EOF):
		return errors.New("feed: ctrl closed the stream")
	case errors.Is(err, wire.ErrTruncated):
		return fmt.Errorf("feed: connection lost in the middle of a frame: %w", err)
	}
	return fmt.Errorf("feed: connection lost: %w", err)
}

func (c *Client) noteLatest(v uint64) {
	c.update(func(st *Status) { st.LatestVersion = max(st.LatestVersion, v) })
}

// stream is one live connection's state.
type stream struct {
	c    *Client
	conn net.Conn
	dec  *wire.Decompressor
	ddec *wire.DeltaDecoder

	wmu sync.Mutex // the reader (ACK/NACK) and the heartbeat goroutine both write
	w   *wire.Writer
	out []byte

	// unsaved is a verified snapshot that was NACKed because it could not
	// be saved or mapped (data dir full, read-only or failing). ctrl does
	// not resend a refused FULL and may publish nothing newer for a long
	// time, so the edge tries again at ctrl's heartbeats from retryAt, the
	// wait doubling from unsavedRetryMin to unsavedRetryMax, until it goes
	// into service or a newer snapshot supersedes it. Reader goroutine only.
	unsaved        *fbs.Snapshot
	unsavedReplace bool // it came in a replace FULL
	retryAt        time.Time
	retryGap       time.Duration
}

// The wait before the first retry of an unsaved snapshot, and the longest.
const (
	unsavedRetryMin = time.Second
	unsavedRetryMax = 30 * time.Second
)

func (s *stream) send(t wire.Type, payload []byte) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.conn.SetWriteDeadline(time.Now().Add(s.c.cfg.DeadAfter))
	if err := s.w.WriteFrame(t, payload); err != nil {
		return fmt.Errorf("feed: send %s: %w", t, err)
	}
	return nil
}

func (s *stream) heartbeats(done <-chan struct{}) {
	tick := time.NewTicker(s.c.cfg.HeartbeatInterval)
	defer tick.Stop()
	var buf []byte
	for {
		select {
		case <-done:
			return
		case now := <-tick.C:
			hb := wire.Heartbeat{LatestVersion: s.c.cfg.Current(), UnixNano: now.UnixNano()}
			if h := s.c.held.Load(); h != nil && h.version == hb.LatestVersion {
				hb.Hash = h.hash
			}
			buf = wire.AppendHeartbeat(buf[:0], hb)
			if err := s.send(wire.TypeHeartbeat, buf); err != nil {
				// The reader sees the broken conn too and reconnects.
				s.conn.Close()
				return
			}
		}
	}
}

func (s *stream) ack(v uint64) error {
	s.out = wire.AppendAck(s.out[:0], wire.Ack{Version: v})
	return s.send(wire.TypeAck, s.out)
}

// lostWith says what an edge speaking protocol v does not report.
func lostWith(v uint8) string {
	if v < 3 {
		return "no health reports"
	}
	return "no 5xx reports"
}

// handshake sends HELLO with a fresh nonce, checks ctrl's proof in
// CHALLENGE and answers PROOF. A ctrl that cannot prove the secret gets no
// proof from us and the session ends before any snapshot is accepted.
func (s *stream) handshake(r *wire.Reader) error {
	nonce, err := wire.NewNonce()
	if err != nil {
		return fmt.Errorf("feed: %w", err)
	}
	h := wire.Hello{NodeID: s.c.cfg.NodeID, HaveVersion: s.c.cfg.Current(), Nonce: nonce}
	if h.HaveVersion != 0 {
		h.HaveHash = s.c.hashInService(h.HaveVersion)
	}
	buf, err := wire.AppendHello(nil, h)
	if err != nil {
		return fmt.Errorf("feed: %w", err)
	}
	if err := s.send(wire.TypeHello, buf); err != nil {
		return err
	}
	t, p, err := r.Next()
	if v := s.w.Version(); errors.Is(err, io.EOF) && v > wire.MinProtocolVersion {
		s.c.downTo, s.c.downUntil = v-1, time.Now().Add(downgradeFor)
		s.c.log.Warn(fmt.Sprintf("feed: ctrl closed the stream after HELLO; if it predates protocol version %d it refused ours, so speaking %d (%s)", v, v-1, lostWith(v-1)), "for", downgradeFor)
	}
	if err != nil {
		return fmt.Errorf("feed: read CHALLENGE: %w", err)
	}
	if t != wire.TypeChallenge {
		return fmt.Errorf("%w: ctrl sent %s before authenticating", errProtocol, t)
	}
	ch, err := wire.DecodeChallenge(p)
	if err != nil {
		return fmt.Errorf("%w: %w", errProtocol, err)
	}
	if !wire.ProofEqual(ch.Proof, wire.CtrlProof(s.c.cfg.Secret, h, ch.Nonce)) {
		err := fmt.Errorf("%w: ctrl at %s did not prove the stream secret (wrong secret on either side, or not our ctrl)", wire.ErrAuth, s.conn.RemoteAddr())
		s.c.log.Error("feed: refusing ctrl", "err", err)
		return fmt.Errorf("%w: %w", errProtocol, err)
	}
	return s.send(wire.TypeProof, wire.AppendProof(nil, wire.Proof{MAC: wire.EdgeProof(s.c.cfg.Secret, h, ch.Nonce)}))
}

// hashInService returns the file hash of version v in service: from the
// last installed snapshot, else from its file on disk (cached). Called only
// from Run's goroutine.
func (c *Client) hashInService(v uint64) uint64 {
	if h := c.held.Load(); h != nil && h.version == v {
		return h.hash
	}
	var hash uint64
	if b := c.base; b != nil && b.Version() == v {
		hash = wire.FileHash(b.Bytes())
	} else {
		hash = c.fileHash(v)
	}
	if hash != 0 {
		c.held.Store(&heldHash{v, hash})
	}
	return hash
}

// fileHash returns the trailer of version's file in the data dir, 0 if it
// cannot be read (ctrl then sends a FULL).
func (c *Client) fileHash(v uint64) uint64 {
	f, err := os.Open(c.cfg.Store.Path(v))
	if err != nil {
		return 0
	}
	defer f.Close()
	var t [8]byte
	fi, err := f.Stat()
	if err != nil || fi.Size() < 8 {
		return 0
	}
	if _, err := f.ReadAt(t[:], fi.Size()-8); err != nil {
		return 0
	}
	return wire.FileHash(t[:])
}

// deltaBase returns the snapshot a DELTA from version v applies to: the
// last one this feed installed, or else the file in the data dir (verified
// here, since it came from disk).
func (c *Client) deltaBase(v uint64) (*fbs.Snapshot, error) {
	if b := c.base; b != nil && b.Version() == v {
		return b, nil
	}
	data, err := os.ReadFile(c.cfg.Store.Path(v))
	if err != nil {
		return nil, fmt.Errorf("%w: base v%d: %w", wire.ErrDeltaBase, v, err)
	}
	snap, err := c.openAfterBase(data)
	if err != nil {
		return nil, fmt.Errorf("%w: base v%d on disk: %w", wire.ErrDeltaBase, v, err)
	}
	c.setBase(snap)
	return snap, nil
}

// openAfterBase verifies data with fbs.OpenAfter the delta base, or
// before the feed has one, the snapshot in service (Config.InService).
func (c *Client) openAfterBase(data []byte) (snap *fbs.Snapshot, err error) {
	if c.base != nil || c.cfg.InService == nil {
		return fbs.OpenAfter(c.base, data)
	}
	c.cfg.InService(func(in *fbs.Snapshot) { snap, err = fbs.OpenAfter(in, data) })
	return snap, err
}

// setBase makes snap the delta base; the old base's memory becomes spare.
func (c *Client) setBase(snap *fbs.Snapshot) {
	if c.base != nil {
		c.recycle(c.base.Bytes())
	}
	c.base = snap
}

// takeSpare returns the spare memory (empty, possibly nil) for the caller
// to own; recycle gives it back.
func (c *Client) takeSpare() []byte {
	b := c.spare[:0]
	c.spare = nil
	return b
}

// recycle keeps b, which no snapshot reads any more, as the spare if it is
// the larger buffer.
func (c *Client) recycle(b []byte) {
	if cap(b) > cap(c.spare) {
		c.spare = b[:0]
	}
}

// handleDelta rebuilds the snapshot from the base in service, then takes it
// the same way as a FULL. A DELTA for another base, or one that does not
// rebuild a verifying file, is NACKed; ctrl answers with a FULL.
func (s *stream) handleDelta(p []byte) error {
	h, _, err := wire.DecodeDeltaHeader(p)
	if err != nil {
		return fmt.Errorf("%w: %w", errProtocol, err)
	}
	s.c.noteLatest(h.Version)
	cur := s.c.cfg.Current()
	if h.Version <= cur {
		s.c.log.Warn("feed: ignoring DELTA not newer than the snapshot in service", "version", h.Version, "in_service", cur)
		return s.ack(cur)
	}
	if h.BaseVersion != cur {
		return s.nack(h.Version, fmt.Errorf("%w: DELTA v%d is from v%d, in service is v%d", wire.ErrDeltaBase, h.Version, h.BaseVersion, cur))
	}
	base, err := s.c.deltaBase(cur)
	if err != nil {
		return s.nack(h.Version, err)
	}
	dst := s.c.takeSpare()
	_, out, err := s.ddec.Apply(dst, base, p)
	if err != nil {
		s.c.recycle(dst)
		return s.nack(h.Version, err)
	}
	return s.take(h.Version, out, false)
}

func (s *stream) nack(v uint64, reason error) error {
	s.c.log.Error("feed: refusing snapshot, keeping the one in service", "version", v, "in_service", s.c.cfg.Current(), "reason", reason)
	s.c.update(func(st *Status) { st.LastError = fmt.Sprintf("v%d: %v", v, reason) })
	s.out = wire.AppendNack(s.out[:0], wire.Nack{Version: v, Reason: reason.Error()})
	return s.send(wire.TypeNack, s.out)
}

// handleFull takes one FULL through verify → persist → map → apply. A
// snapshot that fails any step is NACKed and the session goes on; only a
// malformed message or a failed write ends the session.
func (s *stream) handleFull(p []byte) error {
	h, _, err := wire.DecodeFullHeader(p)
	if err != nil {
		return fmt.Errorf("%w: %w", errProtocol, err)
	}
	s.c.noteLatest(h.Version)
	cur := s.c.cfg.Current()
	if h.Version <= cur && !h.Replace {
		// Never go backwards (P6): an older or equal version is not applied.
		s.c.log.Warn("feed: ignoring FULL not newer than the snapshot in service", "version", h.Version, "in_service", cur)
		return s.ack(cur)
	}
	full, err := s.dec.DecodeFull(p)
	if err != nil {
		return s.nack(h.Version, err)
	}
	// The decompressor reuses its buffer; the copy becomes the next delta base.
	data := append(s.c.takeSpare(), full.Snapshot...)
	if h.Version <= cur {
		return s.replace(h.Version, cur, data)
	}
	return s.take(h.Version, data, false)
}

// replace installs ctrl's v in place of the diverged cur (v <= cur); the
// files of versions above v go first (persist).
func (s *stream) replace(v, cur uint64, data []byte) error {
	c := s.c
	if c.cfg.Replace == nil {
		c.recycle(data)
		return s.nack(v, fmt.Errorf("ctrl says v%d in service is not from its history, but this edge cannot replace a snapshot with an older version", cur))
	}
	c.log.Error("feed: ctrl says the snapshot in service is not from its history (ctrl data lost or restored from a backup?); replacing it with ctrl's",
		"in_service", cur, "ctrl_version", v)
	return s.take(v, data, true)
}

// installed makes snap the next delta base and the version whose hash the
// feed reports.
func (c *Client) installed(snap *fbs.Snapshot) {
	c.setBase(snap)
	c.held.Store(&heldHash{snap.Version(), wire.FileHash(snap.Bytes())})
}

// take verifies one rebuilt snapshot and installs it, in place of the one
// in service whatever its version if replace is set; it supersedes an
// unsaved one.
func (s *stream) take(v uint64, data []byte, replace bool) error {
	s.dropUnsaved()
	if replace {
		// ctrl's latest is v: the numbers of the lost history say nothing
		// about ctrl's. Set before the swap, which a status reader may see.
		s.c.update(func(st *Status) { st.LatestVersion = v })
	}
	snap, err := s.verify(v, data)
	if err != nil {
		return s.nack(v, err)
	}
	// ctrl sent it as its latest, so it was current a moment ago; unless
	// ctrl announced a newer one since (frames queued behind a slow link):
	// then a heartbeat naming it has to confirm it.
	return s.install(snap, replace, replace || v >= s.c.Status().LatestVersion)
}

// install persists, maps and swaps in (Apply, or Replace if replace) a
// verified snapshot, then ACKs it, or NACKs it and keeps the one in
// service. One that could not be persisted is kept to retry (unsaved).
// confirm marks it current as of now, before the ACK: once ctrl counts
// the ACK, the edge's freshness already reflects it.
func (s *stream) install(snap *fbs.Snapshot, replace, confirm bool) error {
	c := s.c
	v := snap.Version()
	m, err := s.persist(snap, replace)
	if err != nil {
		s.keepUnsaved(snap, replace)
		return s.nack(v, fmt.Errorf("%w (kept in memory, retried in %s)", err, s.retryGap))
	}
	swap, what := c.cfg.Apply, "apply"
	if replace {
		swap, what = c.cfg.Replace, "replace"
	}
	prev := c.cfg.Current()
	if err := swap(m); err != nil {
		s.refused(snap, m)
		return s.nack(v, fmt.Errorf("%s: %w", what, err))
	}
	c.installed(snap)
	if replace {
		c.log.Warn("feed: replaced diverged snapshot", "version", v, "previous", prev, "bytes", len(snap.Bytes()))
	} else {
		c.log.Info("feed: applied snapshot", "version", v, "bytes", len(snap.Bytes()))
	}
	s.retryGap = 0
	if confirm {
		c.confirm(v, time.Now())
	}
	return s.ack(v)
}

// keepUnsaved keeps snap, which could not be persisted, for retryUnsaved.
func (s *stream) keepUnsaved(snap *fbs.Snapshot, replace bool) {
	s.retryGap = min(max(2*s.retryGap, unsavedRetryMin), unsavedRetryMax)
	s.retryAt = time.Now().Add(s.retryGap)
	s.unsaved, s.unsavedReplace = snap, replace
}

// dropUnsaved gives up the unsaved snapshot, if any: a newer one arrived.
func (s *stream) dropUnsaved() {
	if s.unsaved != nil {
		s.c.recycle(s.unsaved.Bytes())
		s.unsaved = nil
	}
}

// retryUnsaved installs the unsaved snapshot again once its wait is over.
// Its ACK, if it goes into service now, tells ctrl the edge holds it;
// ctrl's next heartbeat confirms it if it is still the latest.
func (s *stream) retryUnsaved(now time.Time) error {
	snap := s.unsaved
	if snap == nil || now.Before(s.retryAt) {
		return nil
	}
	s.unsaved = nil
	s.c.log.Info("feed: retrying snapshot that could not be saved", "version", snap.Version())
	return s.install(snap, s.unsavedReplace, false)
}

// verify checks the received bytes of version v before they touch the
// disk, with fbs.OpenAfter the delta base (openAfterBase): Open's verdict,
// walking only the shards that changed. data becomes the returned snapshot's; if it
// does not verify, its memory is recycled.
func (s *stream) verify(v uint64, data []byte) (*fbs.Snapshot, error) {
	snap, err := s.c.openAfterBase(data)
	if err == nil && snap.Version() != v {
		err = fmt.Errorf("frame for v%d carries a snapshot of version %d", v, snap.Version())
	}
	if err != nil {
		s.c.recycle(data)
		return nil, fmt.Errorf("verify: %w", err)
	}
	return snap, nil
}

// persist saves a verified snapshot and maps the file; the mapping is
// verified again (against snap, so a compare unless the bytes differ), so
// what goes into service is exactly what is on disk. snap's bytes must not
// be reused while it is kept as the next delta base, nor on error, which
// leaves them to the caller. A replacing snapshot's version is below the
// diverged history's files, which go once it is saved (Store.SaveReplacing).
func (s *stream) persist(snap *fbs.Snapshot, replace bool) (*snapstore.Mapping, error) {
	v := snap.Version()
	if replace {
		removed, err := s.c.cfg.Store.SaveReplacing(v, snap.Bytes())
		for _, old := range removed {
			s.c.log.Warn("feed: removed diverged snapshot file", "version", old)
		}
		if err != nil {
			return nil, err
		}
	} else if err := s.c.cfg.Store.Save(v, snap.Bytes()); err != nil {
		return nil, err
	}
	return s.c.cfg.Store.MapAfter(v, snap)
}

// refused undoes persist for a snapshot that Apply or Replace refused.
func (s *stream) refused(snap *fbs.Snapshot, m *snapstore.Mapping) {
	if err := m.Unmap(); err != nil {
		s.c.log.Error("feed: unmap of refused snapshot failed", "version", snap.Version(), "err", err)
	}
	s.c.recycle(snap.Bytes())
}
