// Package proxy is the edge's HTTP/1.1 reverse proxy on netpoll. One
// request runs top to bottom in serve.go: read head → route → policy
// (authenticate, ACL, rate limits; policy.go) → pick backend → read body →
// forward → relay; each step is a small named function.
//
// Bodies stream: request bodies above Config.BufferBodyBytes and all
// response bodies are forwarded in pieces as they arrive and released once
// the other side took them (docs/http.md, "Memory").
package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cloudwego/netpoll"

	"github.com/snapgate/snapgate/edge/auth"
	"github.com/snapgate/snapgate/edge/h1"
	"github.com/snapgate/snapgate/edge/netpollx"
	"github.com/snapgate/snapgate/edge/ratelimit"
	"github.com/snapgate/snapgate/edge/routing"
	"github.com/snapgate/snapgate/edge/telemetry"
	"github.com/snapgate/snapgate/fbs"
)

func init() {
	// Must run before any netpoll connection exists (deps.md §1). One poller
	// per P is netpoll's advice for I/O-bound services; the default
	// (GOMAXPROCS/20+1) leaves a single poller on small hosts. Handlers run
	// on taskRunner's long-lived goroutines rather than gopool's
	// (runner.go; a goroutine per event, Runner: go f(), measured worse
	// than both).
	netpoll.Configure(netpoll.Config{
		PollerNum: runtime.GOMAXPROCS(0),
		Runner:    newTaskRunner(maxIdleWorkers).run,
	})
}

// maxIdleWorkers bounds the handler goroutines kept parked after a burst,
// each with a stack grown to the handler's depth (a few KiB to tens).
const maxIdleWorkers = 256

// Config configures a Server. Zero durations and sizes take the defaults
// named next to them.
type Config struct {
	Addr   string          // listen address, e.g. ":8080"
	Tables *routing.Holder // the routing table in service; required
	Logger *slog.Logger    // nil = slog.Default()
	Limits h1.Limits       // request head limits (h1 defaults)

	// HeaderTimeout bounds the time from the first byte of a request to the
	// end of its head; slower clients get 408. Default 10s.
	HeaderTimeout time.Duration
	// IdleTimeout closes a client connection with no request in flight for
	// this long. Default 60s.
	IdleTimeout time.Duration
	// UpstreamTimeout, when the route sets no timeout, bounds the wait for
	// the whole response head after the request went out (each 1xx head
	// starts it again; 504 when it expires) and each later wait for body
	// bytes. Default 30s.
	UpstreamTimeout time.Duration
	// ConnectTimeout bounds dialing an endpoint when its cluster sets none;
	// expiry gives 504. Default 1s.
	ConnectTimeout time.Duration
	// WriteTimeout bounds each blocking write to a client or upstream.
	// Default 30s.
	WriteTimeout time.Duration
	// MaxBodyBytes bounds a request body's Content-Length (larger gets
	// 413). 0 = no limit: bodies stream, so size costs no memory.
	MaxBodyBytes int64
	// BufferBodyBytes is the largest Content-Length body that is read whole
	// before forwarding, which keeps such requests retryable; larger ones
	// stream and are never retried. Default 64 KiB.
	BufferBodyBytes int64
	// Metrics receives request metrics; nil = a private set nobody reads.
	Metrics *telemetry.Metrics
	// Freshness says when ctrl last confirmed the snapshot in service
	// (feed.Client.Freshness). It is called on requests whose route has a
	// staleness bound or header, so it must be lock-free. nil counts as
	// never confirmed: routes with a bound are then always stale.
	Freshness FreshnessFunc
	// StaleRetryAfter is the Retry-After of a 503 "snapshot stale",
	// rounded up to whole seconds. Default 5s: long enough not to spin on
	// an edge cut off from ctrl, short next to a typical outage.
	StaleRetryAfter time.Duration
	// RateLimitBuckets is the number of token buckets shared by every
	// policy's rate limits, 8 bytes each; kept across snapshot swaps.
	// Default 65536 (512 KiB).
	RateLimitBuckets int
}

func (c *Config) setDefaults() {
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	c.Limits = c.Limits.WithDefaults()
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.HeaderTimeout, 10*time.Second)
	def(&c.IdleTimeout, 60*time.Second)
	def(&c.UpstreamTimeout, 30*time.Second)
	def(&c.ConnectTimeout, time.Second)
	def(&c.WriteTimeout, 30*time.Second)
	def(&c.StaleRetryAfter, 5*time.Second)
	if c.BufferBodyBytes <= 0 {
		c.BufferBodyBytes = 64 << 10
	}
	if c.Metrics == nil {
		c.Metrics = telemetry.New()
	}
}

// Server is a running proxy listener.
type Server struct {
	cfg     Config
	metrics *telemetry.Metrics
	ridSeq  atomic.Uint64
	ridPfx  [16]byte // hex of a random per-process value
	ln      netpoll.Listener
	loop    netpoll.EventLoop

	mu       sync.Mutex
	conns    map[*connState]struct{}
	serving  bool
	shutdown bool
	stop     chan struct{}
	reaped   chan struct{}
	served   chan struct{} // closed when Serve returns, after serving began

	draining atomic.Bool

	// staleRetryAfter is Config.StaleRetryAfter in whole seconds.
	staleRetryAfter int64

	// Exchanges detached from netpoll, streamed uploads and tunnels
	// (detach.go): counted for Shutdown, their connections and tunnels
	// listed so it can cut them off.
	detachWG      sync.WaitGroup
	detachedConns map[io.Closer]struct{}
	cutOff        bool // waitDetached gave up: detached exchanges end at once

	// limits holds every rate limit's buckets, across swaps; policyIdx
	// the decision counters of the table in service (policy.go).
	limits    *ratelimit.Table
	policyIdx atomic.Pointer[policyIndex]

	// routeIdx maps the dense route index of the table in service to its
	// counters: built at swap (indexTable), filled on a route's first
	// request ever, then read with one atomic load per request.
	routeIdx atomic.Pointer[routeIndex]
}

type routeIndex struct {
	tab *routing.Table // compared, never dereferenced
	rcs []atomic.Pointer[telemetry.RouteCounters]
}

// indexTable is the tables' install hook (routing.Holder.SetOnInstall). It
// builds t's route and policy counter indexes before t goes into service,
// so that requests on t find their counters by index from the first one.
// Route slots carry over from old's index for the shards the two
// snapshots share (fbs.Snapshot.CarryRoutes); the other routes are looked
// up by id here, at swap, not on their first request after it.
func (s *Server) indexTable(old, t *routing.Table) {
	snap := t.Snapshot()
	ri := &routeIndex{tab: t, rcs: make([]atomic.Pointer[telemetry.RouteCounters], snap.NumRoutes())}
	var from *fbs.Snapshot
	prev := s.routeIdx.Load()
	if old != nil && prev != nil && prev.tab == old {
		from = old.Snapshot()
	}
	snap.CarryRoutes(from, func(i, oi, n int) {
		for k := range n {
			ri.rcs[i+k].Store(prev.rcs[oi+k].Load())
		}
	}, func(i int, id []byte) {
		if rc := s.metrics.KnownRoute(id); rc != nil {
			ri.rcs[i].Store(rc)
		}
	})
	s.routeIdx.Store(ri)
	ids := make([]string, t.NumPolicies())
	for i := range ids {
		ids[i] = t.Policy(i).ID
	}
	s.policyIdx.Store(&policyIndex{tab: t, pcs: s.metrics.Policies(ids)})
}

// routeCounters returns the matched route's counters without a lookup by
// name: the route's dense index (fbs.Match.Index) selects a slot in the
// index built for the table in service. Only a route's first request ever
// asks telemetry by id, to make its counters.
func (s *Server) routeCounters(tab *routing.Table, m *fbs.Match) *telemetry.RouteCounters {
	ri := s.routeIdx.Load()
	i := m.Index()
	if ri == nil || ri.tab != tab || uint(i) >= uint(len(ri.rcs)) {
		// A request still finishing on a table no longer in service.
		return s.metrics.Route(m.ID())
	}
	if rc := ri.rcs[i].Load(); rc != nil {
		return rc
	}
	rc := s.metrics.Route(m.ID())
	ri.rcs[i].Store(rc)
	return rc
}

// New validates cfg and binds the listener, so Addr is known before Serve.
func New(cfg Config) (*Server, error) {
	if cfg.Tables == nil {
		return nil, errors.New("proxy: Config.Tables is nil")
	}
	cfg.setDefaults()
	ln, err := netpoll.CreateListener("tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("proxy: listen on %q: %w", cfg.Addr, err)
	}
	s := &Server{
		cfg:     cfg,
		metrics: cfg.Metrics,
		ln:      ln,
		conns:   make(map[*connState]struct{}),
		limits:  ratelimit.NewTable(cfg.RateLimitBuckets),

		staleRetryAfter: int64((cfg.StaleRetryAfter + time.Second - 1) / time.Second),

		detachedConns: make(map[io.Closer]struct{}),
		stop:          make(chan struct{}),
		reaped:        make(chan struct{}),
		served:        make(chan struct{}),
	}
	s.initRequestIDs()
	s.loop, err = netpoll.NewEventLoop(s.onRequest,
		netpoll.WithOnPrepare(s.onPrepare),
		netpoll.WithReadTimeout(cfg.HeaderTimeout),
		netpoll.WithWriteTimeout(cfg.WriteTimeout),
	)
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("proxy: event loop: %w", err)
	}
	cfg.Tables.SetOnInstall(s.indexTable)
	return s, nil
}

// Addr is the bound listen address.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Serve accepts connections until Shutdown. It returns nil after a
// Shutdown and an error if serving failed or Serve was called twice.
func (s *Server) Serve() error {
	s.mu.Lock()
	if s.serving || s.shutdown {
		s.mu.Unlock()
		if s.shutdown {
			return nil
		}
		return errors.New("proxy: Serve called twice")
	}
	s.serving = true
	s.mu.Unlock()
	go s.reapIdle()
	defer close(s.served)
	err := s.loop.Serve(s.ln)
	if s.draining.Load() {
		return nil
	}
	return err
}

// Shutdown stops accepting, closes idle connections and waits for requests
// in flight to finish or ctx to end. Connections finishing a request are
// told Connection: close.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	if s.shutdown {
		s.mu.Unlock()
		return nil
	}
	s.shutdown = true
	serving := s.serving
	s.mu.Unlock()
	s.draining.Store(true)
	close(s.stop)
	if !serving {
		return s.ln.Close()
	}
	// netpoll's Shutdown waits until every connection in its own map is
	// closed. It stores an accepted connection there only after
	// registering it with a poller, so one that is served and closed in
	// between (a request refused at once) stays in the map for good, never
	// idle, and the wait would last until ctx ends. So the wait also ends
	// once every connection this server set up has closed (s.conns, kept
	// by our close callbacks, registered before netpoll's).
	lctx, stopWait := context.WithCancel(ctx)
	defer stopWait()
	go s.endWaitWhenClosed(lctx, stopWait)
	// netpoll's Shutdown does nothing until Serve has handed the loop its
	// listener, after which Serve would wait forever; so it is repeated
	// until Serve has returned.
	err := s.loop.Shutdown(lctx)
	for waiting := true; waiting; {
		select {
		case <-s.served:
			waiting = false
		case <-time.After(time.Millisecond):
			if e := s.loop.Shutdown(lctx); e != nil {
				err = e
			}
		}
	}
	if err != nil && ctx.Err() == nil {
		err = nil // every connection closed; netpoll's map held a stale one
	}
	<-s.reaped
	if derr := s.waitDetached(ctx); err == nil {
		err = derr
	}
	return err
}

// endWaitWhenClosed calls done once no connection of this server is open
// any more, or returns when ctx ends.
func (s *Server) endWaitWhenClosed(ctx context.Context, done func()) {
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		s.mu.Lock()
		open := len(s.conns)
		s.mu.Unlock()
		if open == 0 {
			done()
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// waitDetached waits for detached uploads to finish, cutting them off
// when ctx ends.
func (s *Server) waitDetached(ctx context.Context) error {
	done := make(chan struct{})
	go func() {
		s.detachWG.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
	}
	s.mu.Lock()
	s.cutOff = true
	for nc := range s.detachedConns {
		nc.Close()
	}
	s.mu.Unlock()
	<-done
	return ctx.Err()
}

// connState is the per-connection scratch space: the parsed messages and
// everything else a request needs, so that the request path allocates
// nothing. It is allocated once per connection and left to the GC rather
// than pooled: netpoll may still run a close callback racing a late
// OnRequest, and a recycled state shared by two connections would be far
// worse than one allocation per connection.
type connState struct {
	conn netpoll.Connection
	// The client's reader and writer: the netpoll connection's own, or
	// the blocking ones of a connection detached for an upload.
	cr       clientReader
	cw       netpoll.Writer
	detached *detachedExchange // set when serveOne detaches the connection
	fin      net.Conn          // the client's fd off netpoll, after its FIN (halfclose.go)
	switched *detachedExchange // the tunnel after a relayed 101, until serveOne detaches for it
	req      h1.Request
	resp     h1.Response
	matchReq fbs.Request
	match    fbs.Match
	// paramReq, paramMatch and paramPath route a path with ';' as a
	// servlet container reads it (sameRouteWithoutParams).
	paramReq   fbs.Request
	paramMatch fbs.Match
	paramPath  []byte
	chunks     h1.ChunkedScanner
	rc         *telemetry.RouteCounters // the current request's route series
	retry      retryPlan                // the current request's retries (forward)
	// The route's staleness header (staleness.go), and the Retry-After
	// seconds of an error answer; 0 = none.
	staleHeader bool
	staleness   time.Duration
	retryAfter  int64
	clientIP    []byte
	ipBuf       [48]byte
	num         [24]byte // scratch for formatting numbers

	// The route's policy decision (policy.go), and scratch for it: the
	// auth verdict and the rate-limit key, which grows to the longest key
	// on the connection and is then reused.
	pol          requestPolicy
	authDecision auth.Decision
	limitBuf     []byte

	// Copies of request facts that must outlive the head's bytes, which a
	// streamed body releases.
	methodBuf [16]byte
	methodLen int
	isHead    bool
	rid       [maxRequestID]byte
	ridLen    int

	upPath  []byte // the path sent upstream: req.Path or its rewrite in pathBuf
	pathBuf []byte // grows to the longest rewrite on the connection, then reused
	upgrade bool   // the request goes upstream with its Upgrade offer (upgradeRequested)
	// Where that offer sits in upHead: the protocols a 101 may name.
	offerStart, offerEnd int
	// bodyUnread: the upstream answered before taking the whole streamed
	// body, so the client connection's framing is lost.
	bodyUnread bool
	// lingerAfter: the request was refused with its body on the way, so
	// the connection closes lingering (off netpoll, lingerClose).
	lingerAfter bool
	upHead      []byte // the upstream request head (and a small body), reused
	upHeadLen   int    // length of the head in upHead, before any body bytes

	busy       atomic.Bool
	lastActive atomic.Int64 // monoNow
}

// monoEpoch is where monoNow counts from.
var monoEpoch = time.Now()

// monoNow reads the monotonic clock, in nanoseconds since monoEpoch: one
// clock read where time.Now makes two (wall and monotonic), for the
// per-request timestamps that are only ever compared with each other.
func monoNow() int64 { return int64(time.Since(monoEpoch)) }

type ctxKey struct{}

// Header answers the routing engine's header conditions from the parsed
// request (fbs.HeaderSource); name is lowercase.
func (st *connState) Header(name []byte) ([]byte, bool) {
	for _, f := range st.req.Fields() {
		if len(f.Name) == len(name) && equalFoldBytes(f.Name, name) {
			return f.Value, true
		}
	}
	return nil, false
}

// setMethod copies the method: HEAD changes response framing, and the
// head's bytes may be released before the response arrives.
func (st *connState) setMethod(m []byte) {
	st.methodLen = copy(st.methodBuf[:], m)
	st.isHead = string(m) == "HEAD"
}

func (st *connState) method() []byte { return st.methodBuf[:st.methodLen] }

// onPrepare sets up a new client connection. It runs on accept, before the
// connection is registered with a poller, rather than as OnConnect: netpoll
// runs OnConnect as a task, and a client that sent its request and its FIN
// before that task started was closed on the FIN with the request unread.
// Without OnConnect the first input starts OnRequest at once, and the
// close waits for it.
func (s *Server) onPrepare(c netpoll.Connection) context.Context {
	if s.draining.Load() {
		// Accepted as Shutdown began: refused here, before netpoll
		// registers it, so Shutdown's wait never misses it.
		c.Close()
		return context.Background()
	}
	netpollx.AdoptPoller(c)
	st := &connState{conn: c, cr: c.Reader(), cw: c.Writer()}
	st.clientIP = appendIP(st.ipBuf[:0], c.RemoteAddr())
	st.lastActive.Store(monoNow())
	s.mu.Lock()
	s.conns[st] = struct{}{}
	s.mu.Unlock()
	s.metrics.ConnOpened()
	c.AddCloseCallback(func(netpoll.Connection) error {
		s.mu.Lock()
		delete(s.conns, st)
		s.mu.Unlock()
		if st.detached != nil {
			// The exchange continues off netpoll; it counts the close.
			s.resumeDetached(st, c)
			return nil
		}
		s.metrics.ConnClosed()
		return nil
	})
	return context.WithValue(context.Background(), ctxKey{}, st)
}

func appendIP(dst []byte, a net.Addr) []byte {
	var ip net.IP
	switch t := a.(type) {
	case *netpoll.TCPAddr:
		ip = t.IP
	case *net.TCPAddr:
		ip = t.IP
	}
	if addr, ok := netip.AddrFromSlice(ip); ok {
		return addr.Unmap().AppendTo(dst)
	}
	if a == nil {
		return append(dst, "unknown"...)
	}
	host, _, err := net.SplitHostPort(a.String())
	if err != nil {
		return append(dst, "unknown"...)
	}
	return append(dst, host...)
}

// reapIdle closes client connections idle for longer than IdleTimeout.
// netpoll's idle option only sets TCP keep-alive, so we keep the clock.
func (s *Server) reapIdle() {
	defer close(s.reaped)
	every := s.cfg.IdleTimeout / 4
	every = max(every, 10*time.Millisecond)
	t := time.NewTicker(every)
	defer t.Stop()
	var idle []netpoll.Connection
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
		cutoff := monoNow() - int64(s.cfg.IdleTimeout)
		idle = idle[:0]
		s.mu.Lock()
		for st := range s.conns {
			if !st.busy.Load() && st.lastActive.Load() < cutoff {
				idle = append(idle, st.conn)
			}
		}
		s.mu.Unlock()
		for _, c := range idle {
			c.Close()
		}
	}
}
