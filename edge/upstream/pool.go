// Package upstream keeps pooled keep-alive connections to backend
// endpoints, on the Go runtime's poller (see Conn for why not netpoll).
//
// A Pool belongs to one endpoint address. Pools live in a Registry keyed by
// address and are refcounted by the routing tables that use them, so idle
// connections survive snapshot swaps; the request path only ever holds a
// *Pool resolved at swap time and never looks an address up by string.
package upstream

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cloudwego/netpoll"
)

// Options configure every pool of a Registry. Zero fields take defaults.
type Options struct {
	// SweepInterval is how often idle connections are checked for peer
	// hang-ups, so parked conns the backend closed release their fds.
	// Default 5s.
	SweepInterval time.Duration
	// MaxIdle is how many idle connections a pool keeps per endpoint;
	// connections returned beyond that are closed. Default 64.
	MaxIdle int
	// IdleTimeout closes a parked connection unused this long: Get drops
	// one it finds, the sweep the others (so within SweepInterval). A
	// burst's extra connections go back to the backend, and connections
	// are not kept past a backend's longer keep-alive timeout. Default 60s.
	IdleTimeout time.Duration
	// ConnectTimeout is the dial timeout when Get is given none. Default 1s.
	ConnectTimeout time.Duration
	// EjectBase is how long an endpoint is ejected after its first local
	// failure; each further failure after the ejection ends doubles it, up
	// to EjectMax. A success resets it. Defaults 1s and 30s.
	EjectBase, EjectMax time.Duration
	// Logger receives one line per ejection. Default slog.Default().
	Logger *slog.Logger
	// Report5xxAfter: every this many consecutive 5xx answers from an
	// endpoint, OnHealth hears a Fail5xx. It is a report, not an ejection:
	// whether a backend answering 500 everywhere leaves rotation is ctrl's
	// call (panic mode, damping), not every edge's. Default 5; negative
	// disables.
	Report5xxAfter int
	// OnHealth, if set, is told when an endpoint is ejected or hits
	// Report5xxAfter (ok false, with the failure) and when it first answers
	// other than 5xx after either (ok true, kind 0): the edge reports both
	// to ctrl. It runs on the request path, so it must return at once.
	OnHealth func(addr string, ok bool, kind FailureKind)
}

const (
	DefaultSweepInterval  = 5 * time.Second
	DefaultMaxIdle        = 64
	DefaultIdleTimeout    = 60 * time.Second
	DefaultConnectTimeout = time.Second
	DefaultEjectBase      = time.Second
	DefaultEjectMax       = 30 * time.Second
	DefaultReport5xxAfter = 5
)

func (o Options) withDefaults() Options {
	if o.MaxIdle <= 0 {
		o.MaxIdle = DefaultMaxIdle
	}
	if o.ConnectTimeout <= 0 {
		o.ConnectTimeout = DefaultConnectTimeout
	}
	if o.IdleTimeout <= 0 {
		o.IdleTimeout = DefaultIdleTimeout
	}
	if o.SweepInterval <= 0 {
		o.SweepInterval = DefaultSweepInterval
	}
	if o.EjectBase <= 0 {
		o.EjectBase = DefaultEjectBase
	}
	if o.EjectMax < o.EjectBase {
		o.EjectMax = max(DefaultEjectMax, o.EjectBase)
	}
	if o.Report5xxAfter == 0 {
		o.Report5xxAfter = DefaultReport5xxAfter
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o
}

// ErrPoolClosed is returned by Get after the pool left its Registry.
var ErrPoolClosed = errors.New("upstream: pool closed")

// Pool holds idle keep-alive connections to one address. Safe for
// concurrent use.
//
// The idle set is a stack: Get takes the connection parked last, as Go's
// Transport and nginx's keepalive cache do. Taken in turn (a FIFO), every
// connection a burst opened would be reused before IdleTimeout at any
// steady rate above MaxIdle/IdleTimeout (about 1 request a second with
// the defaults), so none would ever go back to the backend; from a stack
// the ones below what the traffic needs stay unused, and expire.
type Pool struct {
	addr string
	opts Options

	mu     sync.Mutex
	idle   []*Conn     // oldest first; at most MaxIdle
	closed atomic.Bool // set under mu, so park cannot add to a closed pool
	refs   int         // guarded by the Registry mutex

	dials  atomic.Uint64
	reuses atomic.Uint64
	open   atomic.Int64 // dialed and not yet closed (by us or the peer)

	// inflight counts requests between Begin and End (least_request).
	inflight atomic.Int64
	// ejectUntil is the unix-nano time the current ejection ends, 0 when
	// the endpoint is healthy; the hot path checks it without a clock read
	// while it is 0. lastKind is the failure that ejected it.
	ejectUntil atomic.Int64
	lastKind   atomic.Uint32
	// ejectSeq counts ejections ever started. Begin hands it out, so that
	// an answer to a request sent before the latest ejection began (one in
	// flight when it started) does not end it: that is old news.
	ejectSeq atomic.Uint64
	// trouble is what went wrong since the last success: ejections in the
	// low 32 bits (they set the next duration), consecutive 5xx answers in
	// the high 32. One word, so a success checks both with one load and
	// clears both with one swap: its recovery is reported once, whichever
	// of the two was reported.
	trouble atomic.Uint64
	// reportMu orders this endpoint's OnHealth calls with the state they
	// report: a failure is sent only if no success has ended it since, so
	// a recovery is never overtaken by the failure it ended (the feed
	// stamps revisions in call order). Taken on the rare report paths only.
	reportMu sync.Mutex
	// owed says a failure was reported and no recovery yet (reportMu): a
	// recovery is reported only then, so never more recoveries than
	// failures whatever the throttle or a race skipped.
	owed bool
	// last5xxReport is when the last 5xx failure was reported (unix nanos):
	// at most one per report5xxEvery, however fast the endpoint fails.
	last5xxReport atomic.Int64
}

const (
	ejectionsMask = 1<<32 - 1
	one5xx        = 1 << 32
	// report5xxEvery bounds 5xx failure reports per endpoint: enough to
	// reach any unhealthy threshold within seconds, and a fleet-wide
	// outage (panic keeps every endpoint in rotation) cannot flood the
	// report queue and push other endpoints' observations out.
	report5xxEvery = time.Second
)

// FailureKind is why an exchange with an endpoint failed on this edge.
type FailureKind uint8

const (
	FailConnect FailureKind = iota + 1 // refused or unreachable
	FailTimeout                        // connect or response timeout
	FailReset                          // connection reset or closed mid-exchange
	Fail5xx                            // Options.Report5xxAfter 5xx answers in a row; not ejected
)

func (k FailureKind) String() string {
	switch k {
	case FailConnect:
		return "connect-failure"
	case FailTimeout:
		return "timeout"
	case FailReset:
		return "reset"
	case Fail5xx:
		return "5xx"
	}
	return "unknown"
}

// Begin counts a request in flight to this endpoint; pair it with End.
// It returns the request's epoch for ReportSuccessSince and
// ReportResponseSince.
func (p *Pool) Begin() (epoch uint64) {
	p.inflight.Add(1)
	return p.ejectSeq.Load()
}

// End ends a request counted by Begin.
func (p *Pool) End() { p.inflight.Add(-1) }

// InFlight is the number of requests between Begin and End.
func (p *Pool) InFlight() int64 { return p.inflight.Load() }

// Ejected reports whether the endpoint is ejected at now (unix nanos).
func (p *Pool) Ejected(now int64) bool {
	u := p.ejectUntil.Load()
	return u != 0 && now < u
}

// Healthy reports whether the endpoint is not ejected right now. It reads
// the clock only while an ejection is recorded.
func (p *Pool) Healthy() bool {
	u := p.ejectUntil.Load()
	return u == 0 || time.Now().UnixNano() >= u
}

// ReportFailure records a local failure: the endpoint is ejected for
// EjectBase doubled per ejection since the last success, at most EjectMax.
// Failures while already ejected (requests that were in flight) do not
// extend it.
func (p *Pool) ReportFailure(kind FailureKind) {
	now := time.Now().UnixNano()
	for {
		u := p.ejectUntil.Load()
		if u != 0 && now < u {
			return
		}
		n := uint32(p.trouble.Load() & ejectionsMask)
		d := p.opts.EjectBase << min(n, 16)
		if d > p.opts.EjectMax || d <= 0 {
			d = p.opts.EjectMax
		}
		if p.ejectUntil.CompareAndSwap(u, now+int64(d)) {
			p.ejectSeq.Add(1)
			p.trouble.Add(1)
			p.lastKind.Store(uint32(kind))
			p.opts.Logger.Warn("upstream endpoint ejected", "addr", p.addr, "cause", kind.String(),
				"for", d, "ejections", n+1)
			if p.opts.OnHealth != nil {
				p.reportMu.Lock()
				// Not if a success ended this ejection meanwhile.
				if p.trouble.Load()&ejectionsMask != 0 {
					p.opts.OnHealth(p.addr, false, kind)
					p.owed = true
				}
				p.reportMu.Unlock()
			}
			return
		}
	}
}

// ReportSuccess records a completed exchange that did not answer 5xx: it
// ends any ejection and any 5xx streak. It is one atomic load when the
// endpoint is healthy: an ejection always raises the trouble word too.
func (p *Pool) ReportSuccess() { p.ReportSuccessSince(p.ejectSeq.Load()) }

// ReportSuccessSince is ReportSuccess for an exchange Begin gave epoch:
// if an ejection began after it was sent, it changes nothing.
func (p *Pool) ReportSuccessSince(epoch uint64) {
	if p.trouble.Load() != 0 {
		p.recovered(epoch)
	}
}

// ReportResponse records a completed exchange that answered status: a 5xx
// extends the endpoint's 5xx streak (Options.Report5xxAfter), anything
// else is a ReportSuccess. A 5xx neither ejects nor ends an ejection.
// A non-5xx answer on a healthy endpoint is a compare and one atomic load.
func (p *Pool) ReportResponse(status int) { p.ReportResponseSince(status, p.ejectSeq.Load()) }

// ReportResponseSince is ReportResponse for an exchange Begin gave epoch.
func (p *Pool) ReportResponseSince(status int, epoch uint64) {
	if is5xx(status) || p.trouble.Load() != 0 {
		p.response(status, epoch)
	}
}

func is5xx(status int) bool { return uint(status-500) < 100 }

func (p *Pool) response(status int, epoch uint64) {
	if !is5xx(status) {
		p.recovered(epoch)
		return
	}
	n := p.trouble.Add(one5xx) >> 32
	after := p.opts.Report5xxAfter
	if after <= 0 || n%uint64(after) != 0 {
		return
	}
	if n == uint64(after) { // once per streak: a failing backend answers fast
		p.opts.Logger.Warn("upstream endpoint answers 5xx", "addr", p.addr, "in_a_row", n)
	}
	now := time.Now().UnixNano()
	last := p.last5xxReport.Load()
	if now-last < int64(report5xxEvery) || !p.last5xxReport.CompareAndSwap(last, now) || p.opts.OnHealth == nil {
		return
	}
	p.reportMu.Lock()
	// Not if a success ended this streak meanwhile.
	if p.trouble.Load()>>32 >= n {
		p.opts.OnHealth(p.addr, false, Fail5xx)
		p.owed = true
	}
	p.reportMu.Unlock()
}

// recovered ends an ejection and a 5xx streak, and reports the recovery
// if a failure of this episode was reported; unless an ejection began
// after the exchange of epoch was sent. The swap comes before clearing
// the ejection, so an ejection racing with it is either ended here or
// keeps its count for the next success to end: never left running with a
// zero word.
func (p *Pool) recovered(epoch uint64) {
	if epoch != p.ejectSeq.Load() {
		return
	}
	p.reportMu.Lock()
	defer p.reportMu.Unlock()
	p.trouble.Swap(0)
	p.ejectUntil.Store(0)
	if p.owed {
		p.owed = false
		p.opts.OnHealth(p.addr, true, 0)
	}
}

// Ejection describes one ejected endpoint for status and metrics.
type Ejection struct {
	Addr      string
	Until     time.Time
	Ejections int         // since the last success; sets the next duration
	Cause     FailureKind // the failure that started this ejection
}

func newPool(addr string, opts Options) *Pool {
	return &Pool{
		addr: addr,
		opts: opts,
		idle: make([]*Conn, 0, opts.MaxIdle),
	}
}

// Addr is the endpoint address (host:port).
func (p *Pool) Addr() string { return p.addr }

// Stats reports how many connections were dialed and how many Gets reused
// an idle one.
func (p *Pool) Stats() (dials, reuses uint64) { return p.dials.Load(), p.reuses.Load() }

// Open is the number of connections dialed by this pool and still open.
func (p *Pool) Open() int64 { return p.open.Load() }

// Idle is the number of connections currently parked in the pool,
// including ones the peer may have closed since (they are dropped on Get).
func (p *Pool) Idle() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.idle)
}

// Get returns a connection to the endpoint: an idle one if there is one
// that is usable, else a new one dialed within timeout (0 = the pool
// default). Nothing reads a parked connection, so each idle one is checked
// in the kernel first (Conn.Quiet, one system call): a hang-up, or bytes
// the backend sent unasked (an idle-timeout 408, the body it wrongly sent
// after a HEAD answer), would otherwise answer the next request. reused
// tells the caller whether a failure may be a stale keep-alive race: the
// backend closed the connection after the check, as the request went out,
// and a caller that can send the request again redoes it (Dial).
func (p *Pool) Get(timeout time.Duration) (c *Conn, reused bool, err error) {
	if p.closed.Load() {
		return nil, false, ErrPoolClosed
	}
	for c = p.pop(); c != nil; c = p.pop() {
		if p.reusable(c) {
			p.reuses.Add(1)
			return c, true, nil
		}
		c.Close()
	}
	c, err = p.dial(timeout)
	return c, false, err
}

// pop takes the connection parked last; nil if none is.
func (p *Pool) pop() *Conn {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := len(p.idle)
	if n == 0 {
		return nil
	}
	c := p.idle[n-1]
	p.idle[n-1] = nil
	p.idle = p.idle[:n-1]
	return c
}

// Dial returns a new connection, never an idle one: the redo of a request
// that met a stale keep-alive connection, whose idle siblings are as old.
func (p *Pool) Dial(timeout time.Duration) (*Conn, error) {
	if p.closed.Load() {
		return nil, ErrPoolClosed
	}
	return p.dial(timeout)
}

func (p *Pool) dial(timeout time.Duration) (*Conn, error) {
	if timeout <= 0 {
		timeout = p.opts.ConnectTimeout
	}
	c, err := dial(p.addr, timeout, p)
	if err != nil {
		return nil, &DialError{Addr: p.addr, Err: err, timeout: IsTimeout(err)}
	}
	p.dials.Add(1)
	p.open.Add(1)
	return c, nil
}

// Put returns c to the pool for reuse, or closes it when the pool is full
// or gone. Only call Put when the exchange ended cleanly and both sides
// allow keep-alive; otherwise call Discard.
func (p *Pool) Put(c *Conn) {
	if p.closed.Load() || !c.usable() {
		c.Close()
		return
	}
	c.idleSince = monoNow()
	p.park(c)
}

// park puts c on top of the idle set, or closes it if the set is full or
// the pool is gone.
func (p *Pool) park(c *Conn) {
	p.mu.Lock()
	if p.closed.Load() || len(p.idle) >= p.opts.MaxIdle {
		p.mu.Unlock()
		c.Close()
		return
	}
	p.idle = append(p.idle, c)
	p.mu.Unlock()
}

// Discard closes c; the exchange on it did not end cleanly.
func (p *Pool) Discard(c *Conn) { c.Close() }

// reusable reports whether a parked connection may carry another
// exchange: usable, parked for less than IdleTimeout, and Quiet.
func (p *Pool) reusable(c *Conn) bool {
	return c.usable() && time.Duration(monoNow()-c.idleSince) < p.opts.IdleTimeout && c.Quiet()
}

// monoEpoch anchors monoNow, the pool's clock for idle times.
var monoEpoch = time.Now()

func monoNow() int64 { return int64(time.Since(monoEpoch)) }

// sweep closes parked connections that are no longer reusable (the peer
// hung up or sent something unasked, or IdleTimeout passed). It checks
// them in place, under mu: taking them out for the checks would leave Gets
// meanwhile an empty set, and each would dial. The checks are one
// non-blocking peek each, at most MaxIdle of them every SweepInterval.
func (p *Pool) sweep() {
	p.mu.Lock()
	kept := p.idle[:0]
	var gone []*Conn
	for _, c := range p.idle {
		if p.reusable(c) {
			kept = append(kept, c)
		} else {
			gone = append(gone, c)
		}
	}
	clear(p.idle[len(kept):])
	p.idle = kept
	p.mu.Unlock()
	closeAll(gone)
}

func (p *Pool) close() {
	p.mu.Lock()
	p.closed.Store(true)
	parked := p.idle
	p.idle = nil
	p.mu.Unlock()
	closeAll(parked)
}

func closeAll(conns []*Conn) {
	for _, c := range conns {
		c.Close()
	}
}

// DialError is a failed connect; Timeout tells a connect timeout (504)
// from a refusal or unreachable host (502).
type DialError struct {
	Addr    string
	Err     error
	timeout bool
}

func (e *DialError) Error() string { return fmt.Sprintf("upstream: dial %s: %v", e.Addr, e.Err) }
func (e *DialError) Unwrap() error { return e.Err }

// Timeout reports whether the dial ran out of time.
func (e *DialError) Timeout() bool { return e.timeout }

// IsTimeout reports whether err is a netpoll or net timeout.
func IsTimeout(err error) bool {
	if errors.Is(err, netpoll.ErrReadTimeout) || errors.Is(err, netpoll.ErrWriteTimeout) ||
		errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// Registry maps endpoint addresses to shared pools. Acquire and Release run
// at snapshot swap time only; they take a mutex, the request path does not.
type Registry struct {
	opts   Options
	mu     sync.Mutex
	pools  map[string]*Pool
	closed bool
	stop   chan struct{}
	done   chan struct{}
}

// NewRegistry returns an empty registry whose pools use opts. It starts
// one sweeper goroutine; Close stops it.
func NewRegistry(opts Options) *Registry {
	r := &Registry{
		opts:  opts.withDefaults(),
		pools: make(map[string]*Pool),
		stop:  make(chan struct{}),
		done:  make(chan struct{}),
	}
	go r.sweepLoop()
	return r
}

func (r *Registry) sweepLoop() {
	defer close(r.done)
	t := time.NewTicker(r.opts.SweepInterval)
	defer t.Stop()
	var pools []*Pool
	for {
		select {
		case <-r.stop:
			return
		case <-t.C:
		}
		r.mu.Lock()
		pools = pools[:0]
		for _, p := range r.pools {
			pools = append(pools, p)
		}
		r.mu.Unlock()
		for _, p := range pools {
			p.sweep()
		}
	}
}

// Acquire returns the pool for addr, creating it on first use, and counts
// one more user. Every Acquire needs one Release.
func (r *Registry) Acquire(addr string) *Pool {
	r.mu.Lock()
	defer r.mu.Unlock()
	p := r.pools[addr]
	if p == nil {
		p = newPool(addr, r.opts)
		if r.closed {
			p.closed.Store(true)
		} else {
			r.pools[addr] = p
		}
	}
	p.refs++
	return p
}

// Release drops one user of p; the last one closes its idle connections
// and forgets the address (the endpoint left the configuration).
func (r *Registry) Release(p *Pool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	p.refs--
	if p.refs > 0 {
		return
	}
	if r.pools[p.addr] == p {
		delete(r.pools, p.addr)
	}
	p.close()
}

// Ejections lists the endpoints ejected right now, sorted by address.
func (r *Registry) Ejections() []Ejection {
	now := time.Now().UnixNano()
	r.mu.Lock()
	var out []Ejection
	for _, p := range r.pools {
		if u := p.ejectUntil.Load(); u != 0 && now < u {
			out = append(out, Ejection{Addr: p.addr, Until: time.Unix(0, u), Ejections: int(p.trouble.Load() & ejectionsMask), Cause: FailureKind(p.lastKind.Load())})
		}
	}
	r.mu.Unlock()
	slices.SortFunc(out, func(a, b Ejection) int { return strings.Compare(a.Addr, b.Addr) })
	return out
}

// Len is the number of live pools.
func (r *Registry) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.pools)
}

// Close stops the sweeper and closes every pool's idle connections; later
// Gets fail. Safe to call more than once.
func (r *Registry) Close() {
	r.mu.Lock()
	if !r.closed {
		r.closed = true
		close(r.stop)
	}
	for addr, p := range r.pools {
		p.close()
		delete(r.pools, addr)
	}
	r.mu.Unlock()
	<-r.done
}
