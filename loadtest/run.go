// Package loadtest is an HTTP/1.1 load generator that measures latency
// honestly.
//
// In open loop (a rate schedule) every request has a scheduled send time fixed
// in advance, and its latency runs from that time to the end of its response.
// When the server stalls and every connection is busy, the schedule keeps
// going: the requests that could not be sent on time are sent as soon as a
// connection frees up, and their latency still counts from when they should
// have gone out. A stall therefore shows in the high percentiles instead of
// being hidden by the client politely waiting (coordinated omission). Closed
// loop (Schedule.Closed, "max") measures maximum throughput instead.
//
// The client is our own: one goroutine per keep-alive TCP connection writes
// pre-built request bytes and parses responses (status line, Content-Length
// and chunked bodies) without allocating, so its overhead is small and known.
package loadtest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Config describes one run. Zero fields take the documented defaults.
type Config struct {
	// Target is the host:port to connect to.
	Target string
	// Host is the Host header. Default: Target.
	Host string
	// Method is the request method. Default: GET.
	Method string
	// Paths are the request targets, used round robin. Default: "/".
	Paths []string
	// Headers are extra header fields, sent in this order (e.g. an API key).
	// Host, Content-Length and Transfer-Encoding are set by the client.
	Headers [][2]string
	// Body is sent with every request, with a Content-Length.
	Body []byte
	// Conns is the number of keep-alive connections, one worker each.
	// Default: 1, at most MaxConns. Each worker keeps its own HDR histograms,
	// about 160 KB for a run of a minute or less.
	Conns int
	// Schedule is when requests are sent (ParseSchedule). Required.
	Schedule Schedule
	// Duration is the measured part of the run. Default: Schedule.Length();
	// required when the schedule is open-ended or closed loop. Longer than the
	// schedule holds its last rate; shorter cuts it.
	Duration time.Duration
	// Warmup is sent before Duration at the schedule's starting rate and not
	// measured (connections are opened, server caches warmed).
	Warmup time.Duration
	// OnWindow, if set, is called as the measured part starts (true) and
	// as it ends (false), on a goroutine of the run's; a true is always
	// followed by a false before Run returns. A caller samples what it
	// measures beside the latencies (a process's CPU time) there, around
	// the requests the Result counts, on connections the warmup opened.
	OnWindow func(start bool)
	// Timeout bounds each request, connect included; a request past it counts
	// as a "timeout" error. It is also how long the run waits after Duration
	// for requests the schedule is still owed (backlog); those never sent by
	// then are counted as Unsent. Default: 5s.
	Timeout time.Duration
	// SLO, when it has objectives, is checked at the end and its outcome
	// stored in Result.SLO and Result.Violations.
	SLO SLO
	// Progress, when set, is called from a separate goroutine every
	// ProgressInterval (default 1s) while the run lasts.
	Progress         func(Progress)
	ProgressInterval time.Duration
}

// Progress is a live view of a run, for a progress line.
type Progress struct {
	Elapsed time.Duration // since the start, warmup included
	Warmup  bool          // still in the warmup
	// Totals so far, warmup included.
	Sent, Completed, Errors int64
	Rate                    float64 // responses/s over the last interval
	TargetRate              float64 // scheduled rate now; 0 in closed loop
	// Backlog is the number of requests due but not sent yet because every
	// connection was busy; it grows while the server stalls.
	Backlog int64
}

// MaxConns bounds Config.Conns.
const MaxConns = 10000

const (
	defaultTimeout = 5 * time.Second
	// dialBackoff keeps a closed-loop worker whose connects fail from
	// spinning; open-loop workers are paced by the schedule instead.
	dialBackoff = 10 * time.Millisecond
)

// Run sends load as cfg describes and returns the measurements. It returns an
// error without sending anything when cfg is invalid. When ctx is cancelled
// it stops promptly and returns the partial result (Interrupted set) together
// with ctx.Err().
func Run(ctx context.Context, cfg Config) (*Result, error) {
	r, err := newRunner(cfg)
	if err != nil {
		return nil, err
	}
	defer r.close()
	return r.run(ctx)
}

func (c *Config) withDefaults() (Config, error) {
	d := *c
	if d.Target == "" {
		return d, errors.New("config: target is empty; want host:port")
	}
	if _, _, err := net.SplitHostPort(d.Target); err != nil {
		return d, fmt.Errorf("config: target %q: %w", d.Target, err)
	}
	if d.Host == "" {
		d.Host = d.Target
	}
	if d.Method == "" {
		d.Method = "GET"
	}
	if len(d.Paths) == 0 {
		d.Paths = []string{"/"}
	}
	if d.Conns == 0 {
		d.Conns = 1
	}
	if d.Conns < 0 || d.Conns > MaxConns {
		return d, fmt.Errorf("config: conns %d: want 1 to %d", d.Conns, MaxConns)
	}
	if d.Timeout == 0 {
		d.Timeout = defaultTimeout
	}
	if d.ProgressInterval <= 0 {
		d.ProgressInterval = time.Second
	}
	if d.Timeout < 0 || d.Warmup < 0 || d.Duration < 0 {
		return d, errors.New("config: timeout, warmup and duration must not be negative")
	}
	if d.Timeout > maxLength || d.Warmup > maxLength || d.Duration > maxLength {
		return d, fmt.Errorf("config: timeout, warmup and duration must be at most %v", maxLength)
	}
	if err := d.Schedule.Validate(); err != nil {
		return d, fmt.Errorf("config: %w", err)
	}
	if d.Duration == 0 {
		d.Duration = d.Schedule.Length()
		if d.Duration == 0 {
			return d, fmt.Errorf("config: schedule %q has no end; set a duration", d.Schedule)
		}
	}
	return d, nil
}

// runner is one run's shared, read-mostly state.
type runner struct {
	cfg     Config
	reqs    [][]byte
	head    bool
	closed  bool
	plan    plan
	workers []*worker

	start, measureStart, end, hardStop time.Time
	// next is the shared schedule: the next slot a free worker takes.
	next      atomic.Int64
	warmSlots int64 // slots before this are warmup
	endSlot   int64 // slots from this on fall after the run
	histMax   int64 // highest trackable latency, ns

	stopMu sync.Mutex
	stopAt time.Time // when ctx was cancelled; zero if it was not
}

func newRunner(c Config) (*runner, error) {
	cfg, err := c.withDefaults()
	if err != nil {
		return nil, err
	}
	reqs, err := buildRequests(&cfg)
	if err != nil {
		return nil, err
	}
	r := &runner{cfg: cfg, reqs: reqs, head: cfg.Method == "HEAD", closed: cfg.Schedule.Closed}
	if !r.closed {
		r.plan = newPlan(cfg.Schedule, cfg.Warmup, cfg.Duration)
		r.warmSlots = r.plan.slots(cfg.Warmup.Seconds())
		r.endSlot = r.plan.slots(r.plan.total)
	}
	// Latency from the scheduled time cannot exceed the whole run plus the
	// backlog drain plus one timeout.
	r.histMax = int64(cfg.Warmup + cfg.Duration + 2*cfg.Timeout + time.Second)
	r.workers = make([]*worker, cfg.Conns)
	for i := range r.workers {
		w := &worker{
			id:    i,
			r:     r,
			lat:   hdrhistogram.New(latLowest, r.histMax, 3),
			pacer: hdrhistogram.New(pacerLowest, r.histMax, 2),
			timer: stoppedTimer(),
		}
		if !r.closed {
			if w.fine, err = newFineTimer(); err != nil {
				r.close()
				return nil, err
			}
		}
		r.workers[i] = w
	}
	return r, nil
}

// close releases the workers' pacer timers.
func (r *runner) close() {
	for _, w := range r.workers {
		if w != nil && w.fine != nil {
			w.fine.close()
		}
	}
}

const (
	// latLowest is the latency resolution: HDR rounds it down to 512 ns,
	// finer than loopback jitter, and it keeps each histogram near 150 KB.
	latLowest = 1000
	// pacerLowest: the pacer's lateness is often below a microsecond.
	pacerLowest = 100
)

func stoppedTimer() *time.Timer {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return t
}

func (r *runner) run(ctx context.Context) (*Result, error) {
	r.start = time.Now()
	r.measureStart = r.start.Add(r.cfg.Warmup)
	r.end = r.measureStart.Add(r.cfg.Duration)
	r.hardStop = r.end.Add(r.cfg.Timeout)

	if r.cfg.OnWindow != nil {
		windowDone := make(chan struct{})
		go r.window(ctx, windowDone)
		defer func() { <-windowDone }()
	}

	stopAbort := context.AfterFunc(ctx, func() {
		r.stopMu.Lock()
		r.stopAt = time.Now()
		r.stopMu.Unlock()
		for _, w := range r.workers {
			w.abort()
		}
	})
	defer stopAbort()

	var wg sync.WaitGroup
	for _, w := range r.workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer w.drop()
			if r.closed {
				w.closedLoop(ctx)
			} else {
				w.openLoop(ctx)
			}
		}()
	}
	progressDone := make(chan struct{})
	if r.cfg.Progress != nil {
		var pwg sync.WaitGroup
		pwg.Add(1)
		go func() {
			defer pwg.Done()
			r.reportProgress(progressDone)
		}()
		defer pwg.Wait()
	}
	wg.Wait()
	close(progressDone)

	res := r.result()
	if err := ctx.Err(); err != nil {
		res.Interrupted = true
		return res, err
	}
	for _, w := range r.workers {
		if w.paceErr != nil {
			res.Interrupted = true
			return res, w.paceErr
		}
	}
	return res, nil
}

// window calls OnWindow at measureStart and at end, or at once when ctx
// ends after the first call.
func (r *runner) window(ctx context.Context, done chan<- struct{}) {
	defer close(done)
	wait := func(until time.Time) bool {
		t := time.NewTimer(time.Until(until))
		defer t.Stop()
		select {
		case <-t.C:
			return true
		case <-ctx.Done():
			return false
		}
	}
	if !wait(r.measureStart) {
		return
	}
	r.cfg.OnWindow(true)
	wait(r.end)
	r.cfg.OnWindow(false)
}

func (r *runner) reportProgress(done <-chan struct{}) {
	t := time.NewTicker(r.cfg.ProgressInterval)
	defer t.Stop()
	var lastDone int64
	last := r.start
	for {
		select {
		case <-done:
			return
		case now := <-t.C:
			var p Progress
			for _, w := range r.workers {
				p.Sent += w.liveSent.Load()
				p.Completed += w.liveDone.Load()
				p.Errors += w.liveErr.Load()
			}
			p.Elapsed = now.Sub(r.start)
			p.Warmup = now.Before(r.measureStart)
			if dt := now.Sub(last).Seconds(); dt > 0 {
				p.Rate = float64(p.Completed-lastDone) / dt
			}
			lastDone, last = p.Completed, now
			if !r.closed {
				p.TargetRate = r.plan.rateAt(p.Elapsed.Seconds())
				due := min(r.plan.slots(p.Elapsed.Seconds()), r.endSlot)
				p.Backlog = max(due-r.next.Load(), 0)
			}
			r.cfg.Progress(p)
		}
	}
}

// Error causes, the keys of Result.Errors.
const (
	causeRefused = iota
	causeConnect
	causeTimeout
	causeReset
	causeClosed
	causeBadResponse
	causeOther
	numCauses
)

var causeNames = [numCauses]string{
	causeRefused:     "refused",      // connect refused: nothing listens
	causeConnect:     "connect",      // any other connect failure
	causeTimeout:     "timeout",      // no complete response within Timeout
	causeReset:       "reset",        // connection reset or broken pipe
	causeClosed:      "closed",       // server closed the connection before a complete response
	causeBadResponse: "bad_response", // a response the client cannot parse (ErrBadResponse)
	causeOther:       "other",
}

func classify(err error, dialing bool) int {
	var ne net.Error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return causeRefused
	case errors.Is(err, os.ErrDeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return causeTimeout
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE), errors.Is(err, syscall.ECONNABORTED):
		return causeReset
	case errors.Is(err, ErrBadResponse):
		return causeBadResponse
	case dialing:
		return causeConnect
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, net.ErrClosed):
		return causeClosed
	}
	return causeOther
}

// worker owns one connection and its own histograms and counters, so the
// request path shares nothing but the schedule's slot counter; the
// histograms are merged once at the end.
type worker struct {
	id    int
	r     *runner
	timer *time.Timer
	fine  *fineTimer // open loop only
	// paceErr ends the worker's loop: the pacer failed.
	paceErr error

	mu      sync.Mutex // guards conn against abort; only the worker writes conn
	conn    net.Conn
	br      *bufio.Reader
	aborted atomic.Bool

	lat, pacer *hdrhistogram.Histogram
	status     [600]int64
	errs       [numCauses]int64
	sent       int64 // measured requests sent (or attempted)
	completed  int64
	backlogged int64
	lastDone   time.Time
	dialFailed bool
	liveSent   atomic.Int64
	liveDone   atomic.Int64
	liveErr    atomic.Int64
}

// openLoop takes slots from the shared schedule until the run is over.
//
// Why one shared schedule and not a queue per worker: a free worker always
// takes the oldest slot nobody has taken, so during a stall the backlog is
// served in schedule order by whichever connection frees up first, as a real
// client population would be; per-worker queues would leave requests waiting
// behind one slow connection while others sit idle. It also costs one atomic
// add per request and no pacer goroutine.
func (w *worker) openLoop(ctx context.Context) {
	r := w.r
	for {
		k := r.next.Add(1) - 1
		if k >= r.endSlot || ctx.Err() != nil {
			return
		}
		due := r.start.Add(r.plan.at(k))
		now := time.Now()
		if now.After(r.hardStop) {
			return // the rest of the backlog is reported as Unsent
		}
		paced := false
		if due.After(now) {
			if !w.sleepUntil(ctx, due) {
				return
			}
			paced = true
		}
		sent := time.Now()
		status, cause := w.do(ctx, r.reqs[k%int64(len(r.reqs))])
		done := time.Now()
		if w.aborted.Load() {
			return // cut off by the cancel, not by the target
		}
		if k < r.warmSlots {
			continue
		}
		if paced {
			w.pacer.RecordValue(min(int64(sent.Sub(due)), r.histMax))
		} else {
			w.backlogged++
		}
		w.account(status, cause, done.Sub(due), done)
	}
}

// closedLoop sends back to back until the run is over; latency runs from the
// actual send.
func (w *worker) closedLoop(ctx context.Context) {
	r := w.r
	n := len(r.reqs)
	for i := w.id % n; ; i = (i + 1) % n {
		sent := time.Now()
		if !sent.Before(r.end) || ctx.Err() != nil {
			return
		}
		status, cause := w.do(ctx, r.reqs[i])
		done := time.Now()
		if w.aborted.Load() {
			return // cut off by the cancel, not by the target
		}
		if !sent.Before(r.measureStart) {
			w.account(status, cause, done.Sub(sent), done)
		}
		if w.dialFailed && !w.sleep(ctx, dialBackoff) {
			return
		}
	}
}

func (w *worker) account(status, cause int, latency time.Duration, done time.Time) {
	w.sent++
	if cause >= 0 {
		w.errs[cause]++
		if cause == causeTimeout {
			// The slowest answer of all: no answer (Result.Latency).
			w.lat.RecordValue(min(int64(latency), w.r.histMax))
		}
		return
	}
	w.completed++
	w.status[status]++
	w.lat.RecordValue(min(int64(latency), w.r.histMax))
	if done.After(w.lastDone) {
		w.lastDone = done
	}
}

// fineWindow is the part of a wait before a scheduled send that the
// worker's fineTimer handles: a little more than the runtime timer's
// worst-case lateness.
const fineWindow = 2 * time.Millisecond

// sleepUntil waits until t, or returns false once ctx is done: the runtime
// timer (interruptible) for most of the wait, the fineTimer (at most
// fineWindow, not interruptible) for the end.
func (w *worker) sleepUntil(ctx context.Context, t time.Time) bool {
	if d := time.Until(t) - fineWindow; d > 0 && !w.sleep(ctx, d) {
		return false
	}
	d := time.Until(t)
	if d <= 0 {
		return ctx.Err() == nil
	}
	if err := w.fine.sleep(d); err != nil {
		w.paceErr = err
		return false
	}
	return ctx.Err() == nil
}

// sleep waits d, or returns false once ctx is done.
func (w *worker) sleep(ctx context.Context, d time.Duration) bool {
	w.timer.Reset(d)
	select {
	case <-w.timer.C:
		return true
	case <-ctx.Done():
		w.timer.Stop()
		return false
	}
}

// do sends one request and reads its response. It returns the status, or a
// cause (>= 0) when there is no complete response. Any failure drops the
// connection; the next request reconnects.
func (w *worker) do(ctx context.Context, req []byte) (status, cause int) {
	w.liveSent.Add(1)
	deadline := time.Now().Add(w.r.cfg.Timeout)
	w.dialFailed = false
	if w.conn == nil {
		if err := w.dial(ctx, deadline); err != nil {
			w.dialFailed = true
			w.liveErr.Add(1)
			return 0, classify(err, true)
		}
	}
	resp, err := w.exchange(req, deadline)
	if err != nil {
		w.drop()
		w.liveErr.Add(1)
		return 0, classify(err, false)
	}
	if !resp.keepAlive {
		w.drop()
	}
	w.liveDone.Add(1)
	return resp.status, -1
}

func (w *worker) exchange(req []byte, deadline time.Time) (response, error) {
	if err := w.conn.SetDeadline(deadline); err != nil {
		return response{}, err
	}
	// abort may have set a past deadline just before ours replaced it.
	if w.aborted.Load() {
		return response{}, net.ErrClosed
	}
	if _, err := w.conn.Write(req); err != nil {
		return response{}, err
	}
	return readResponse(w.br, w.r.head)
}

func (w *worker) dial(ctx context.Context, deadline time.Time) error {
	d := net.Dialer{Deadline: deadline}
	c, err := d.DialContext(ctx, "tcp", w.r.cfg.Target)
	if err != nil {
		return err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.aborted.Load() {
		c.Close()
		return net.ErrClosed
	}
	w.conn = c
	if w.br == nil {
		w.br = bufio.NewReaderSize(c, readBufSize)
	} else {
		w.br.Reset(c)
	}
	return nil
}

func (w *worker) drop() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.conn != nil {
		w.conn.Close()
		w.conn = nil
	}
}

// abort unblocks a request in flight when the run is cancelled.
func (w *worker) abort() {
	w.aborted.Store(true)
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.conn != nil {
		w.conn.SetDeadline(time.Unix(1, 0))
	}
}
