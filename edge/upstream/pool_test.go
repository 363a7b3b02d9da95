package upstream

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// backend is a real TCP server on 127.0.0.1 that counts accepted
// connections and can hang up on all of them.
type backend struct {
	ln       net.Listener
	accepted atomic.Int64
	mu       sync.Mutex
	conns    []net.Conn
	wg       sync.WaitGroup
}

func newBackend(t testing.TB) *backend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &backend{ln: ln}
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			b.accepted.Add(1)
			b.mu.Lock()
			b.conns = append(b.conns, c)
			b.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		b.wg.Wait()
		b.hangUp()
	})
	return b
}

func (b *backend) addr() string { return b.ln.Addr().String() }

// backendPool is a backend and the pool of a registry with opts for it,
// both released when the test ends.
func backendPool(t *testing.T, opts Options) (*backend, *Pool) {
	t.Helper()
	b := newBackend(t)
	reg := NewRegistry(opts)
	p := reg.Acquire(b.addr())
	t.Cleanup(func() {
		reg.Release(p)
		reg.Close()
	})
	return b, p
}

func (b *backend) hangUp() {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, c := range b.conns {
		c.Close()
	}
	b.conns = nil
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestPoolReuse(t *testing.T) {
	b, p := backendPool(t, Options{MaxIdle: 2})

	c1, reused, err := p.Get(0)
	if err != nil || reused {
		t.Fatalf("first Get: reused=%v err=%v", reused, err)
	}
	p.Put(c1)
	c2, reused, err := p.Get(0)
	if err != nil || !reused || c2 != c1 {
		t.Fatalf("second Get: reused=%v same=%v err=%v", reused, c2 == c1, err)
	}
	if d, r := p.Stats(); d != 1 || r != 1 {
		t.Fatalf("dials=%d reuses=%d", d, r)
	}
	waitFor(t, "one accepted conn", func() bool { return b.accepted.Load() == 1 })

	// MaxIdle 2: the third returned conn is closed, not parked.
	c3, _, _ := p.Get(0)
	c4, _, _ := p.Get(0)
	p.Put(c2)
	p.Put(c3)
	p.Put(c4)
	if p.Idle() != 2 || !c4.closed.Load() {
		t.Fatalf("idle=%d c4 active=%v", p.Idle(), !c4.closed.Load())
	}
	waitFor(t, "open=2", func() bool { return p.Open() == 2 })
}

func TestPoolDropsPeerClosed(t *testing.T) {
	b, p := backendPool(t, Options{SweepInterval: 10 * time.Millisecond})
	c, _, err := p.Get(0)
	if err != nil {
		t.Fatal(err)
	}
	p.Put(c)
	waitFor(t, "accept", func() bool { return b.accepted.Load() == 1 })
	b.hangUp()
	// The sweeper closes the parked conn; the close callback counts it.
	waitFor(t, "sweep", func() bool { return p.Open() == 0 && p.Idle() == 0 })
	c2, reused, err := p.Get(0)
	if err != nil || reused || c2 == c {
		t.Fatalf("Get after hang-up: reused=%v err=%v", reused, err)
	}
	p.Discard(c2)
}

// TestIdleCheckedInTheKernel: nothing reads a parked connection, so Get
// asks the kernel (Quiet) before reusing one: a backend's FIN, or bytes
// it sent unasked, make Get close it and dial. Dial never takes an idle
// connection.
func TestIdleCheckedInTheKernel(t *testing.T) {
	b, p := backendPool(t, Options{MaxIdle: 4})
	c, _, err := p.Get(0)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "accept", func() bool { return b.accepted.Load() == 1 })
	if !c.Quiet() {
		t.Fatal("an open connection with nothing to read is not Quiet")
	}
	p.Put(c)
	fresh, err := p.Dial(0)
	if err != nil || fresh == c || p.Idle() != 1 {
		t.Fatalf("Dial: same=%v idle=%d err=%v; want a new connection and the idle one left", fresh == c, p.Idle(), err)
	}
	p.Put(fresh) // parked on top of c
	waitFor(t, "accept", func() bool { return b.accepted.Load() == 2 })

	// Unasked bytes on c (an idle-timeout 408), a FIN on fresh.
	b.mu.Lock()
	srvC, srvFresh := b.conns[0], b.conns[1]
	b.mu.Unlock()
	if _, err := srvC.Write([]byte("HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	srvFresh.Close()
	waitFor(t, "the bytes and the FIN to reach the sockets", func() bool { return !c.Quiet() && !fresh.Quiet() })
	got, reused, err := p.Get(0)
	if err != nil || reused || got == c || got == fresh || !c.closed.Load() || !fresh.closed.Load() {
		t.Fatalf("Get: reused=%v err=%v, closed c=%v fresh=%v; want both idle connections closed and a new one", reused, err, c.closed.Load(), fresh.closed.Load())
	}
	p.Discard(got)
}

// A connection parked longer than IdleTimeout is closed: by the sweep, or
// by Get when it comes first.
func TestPoolIdleTimeout(t *testing.T) {
	_, p := backendPool(t, Options{IdleTimeout: 50 * time.Millisecond, SweepInterval: 10 * time.Millisecond})
	c, _, err := p.Get(0)
	if err != nil {
		t.Fatal(err)
	}
	p.Put(c)
	waitFor(t, "the sweep to close the idle connection", func() bool { return p.Open() == 0 && p.Idle() == 0 })
	if !c.closed.Load() {
		t.Fatal("pool counts the connection closed, but it is not")
	}

	_, q := backendPool(t, Options{IdleTimeout: time.Hour, SweepInterval: time.Hour})
	c, _, err = q.Get(0)
	if err != nil {
		t.Fatal(err)
	}
	q.Put(c)
	if got, reused, err := q.Get(0); err != nil || !reused || got != c {
		t.Fatalf("Get within IdleTimeout: reused=%v same=%v err=%v", reused, got == c, err)
	}
	q.Put(c)
	c.idleSince -= int64(2 * time.Hour)
	got, reused, err := q.Get(0)
	if err != nil || reused || got == c || !c.closed.Load() {
		t.Fatalf("Get past IdleTimeout: reused=%v same=%v old closed=%v err=%v", reused, got == c, c.closed.Load(), err)
	}
	q.Discard(got)
}

// Get takes the connection parked last, so a burst's extra connections
// stay unused under lighter traffic and expire. Taken in turn, each was
// reused before IdleTimeout and the five stayed open for ever.
func TestBurstConnectionsExpire(t *testing.T) {
	_, p := backendPool(t, Options{IdleTimeout: 150 * time.Millisecond, SweepInterval: 10 * time.Millisecond})
	var burst []*Conn
	for range 5 {
		c, _, err := p.Get(0)
		if err != nil {
			t.Fatal(err)
		}
		burst = append(burst, c)
	}
	for _, c := range burst {
		p.Put(c)
	}
	// One request at a time, each 10 ms apart: 5 connections in turn
	// would each be reused every 50 ms, well within IdleTimeout.
	for i := 0; i < 200 && (i < 30 || p.Open() > 1); i++ {
		c, _, err := p.Get(0)
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 && c != burst[4] {
			t.Fatal("Get did not take the connection parked last")
		}
		p.Put(c)
		time.Sleep(10 * time.Millisecond)
	}
	if p.Open() != 1 || p.Idle() != 1 {
		t.Fatalf("after steady single requests: %d open, %d idle; want the burst's extra connections closed", p.Open(), p.Idle())
	}
}

// A sweep checks the idle connections in place: Gets running meanwhile
// still find them. When it took them out for its checks, each such Get
// dialed (up to 21 dials for 4 users in 300 ms of sweeps).
func TestSweepKeepsIdleAvailable(t *testing.T) {
	_, p := backendPool(t, Options{SweepInterval: time.Hour})
	const workers = 4
	var stop atomic.Bool
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				c, _, err := p.Get(0)
				if err != nil {
					t.Error(err)
					return
				}
				p.Put(c)
			}
		}()
	}
	for end := time.Now().Add(300 * time.Millisecond); time.Now().Before(end); {
		p.sweep()
		time.Sleep(100 * time.Microsecond)
	}
	stop.Store(true)
	wg.Wait()
	if dials, reuses := p.Stats(); dials > workers {
		t.Fatalf("%d dials (%d reuses) for %d concurrent users across 300 ms of sweeps, want at most %d", dials, reuses, workers, workers)
	}
}

func TestPoolDialErrors(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens: connection refused
	reg := NewRegistry(Options{})
	defer reg.Close()
	p := reg.Acquire(addr)
	defer reg.Release(p)
	_, _, err = p.Get(time.Second)
	var de *DialError
	if !errors.As(err, &de) || de.Timeout() {
		t.Fatalf("refused: err=%v", err)
	}
	// A deadline that has already passed is a timeout, not a refusal.
	_, _, err = p.Get(time.Nanosecond)
	if !errors.As(err, &de) || !de.Timeout() {
		t.Fatalf("timeout: err=%v", err)
	}
}

func TestRegistryRefcount(t *testing.T) {
	b := newBackend(t)
	reg := NewRegistry(Options{})
	defer reg.Close()
	p1 := reg.Acquire(b.addr())
	p2 := reg.Acquire(b.addr())
	if p1 != p2 || reg.Len() != 1 {
		t.Fatalf("same address must share a pool")
	}
	c, _, err := p1.Get(0)
	if err != nil {
		t.Fatal(err)
	}
	p1.Put(c)
	reg.Release(p1)
	if p2.Idle() != 1 || reg.Len() != 1 {
		t.Fatal("pool closed while still referenced")
	}
	reg.Release(p2)
	if reg.Len() != 0 || !c.closed.Load() {
		t.Fatal("last release must close idle conns")
	}
	if _, _, err := p2.Get(0); !errors.Is(err, ErrPoolClosed) {
		t.Fatalf("Get on released pool: %v", err)
	}
	p3 := reg.Acquire(b.addr())
	if p3 == p1 {
		t.Fatal("a released pool must not come back")
	}
	reg.Release(p3)
}

func TestPoolConcurrent(t *testing.T) {
	_, p := backendPool(t, Options{MaxIdle: 4})
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 50 {
				c, _, err := p.Get(0)
				if err != nil {
					t.Error(err)
					return
				}
				p.Put(c)
			}
		}()
	}
	wg.Wait()
	if d, r := p.Stats(); d+r != 400 || d > 8+4 {
		t.Fatalf("dials=%d reuses=%d", d, r)
	}
}

func BenchmarkPoolGetPut(b *testing.B) {
	be := newBackend(b)
	reg := NewRegistry(Options{})
	defer reg.Close()
	p := reg.Acquire(be.addr())
	defer reg.Release(p)
	c, _, err := p.Get(0)
	if err != nil {
		b.Fatal(err)
	}
	p.Put(c)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			c, _, err := p.Get(0)
			if err != nil {
				b.Error(err)
				return
			}
			p.Put(c)
		}
	})
}

// OnHealth hears each ejection and only the first success after one.
func TestPoolOnHealth(t *testing.T) {
	type event struct {
		addr string
		ok   bool
		kind FailureKind
	}
	var mu sync.Mutex
	var got []event
	r := NewRegistry(Options{EjectBase: time.Nanosecond, EjectMax: time.Nanosecond, OnHealth: func(addr string, ok bool, kind FailureKind) {
		mu.Lock()
		got = append(got, event{addr, ok, kind})
		mu.Unlock()
	}})
	defer r.Close()
	p := r.Acquire("127.0.0.1:1")
	defer r.Release(p)
	p.ReportSuccess() // healthy: nothing to report
	p.ReportFailure(FailConnect)
	time.Sleep(time.Millisecond) // let the 1 ns ejection end
	p.ReportFailure(FailReset)
	p.ReportSuccess()
	p.ReportSuccess()
	want := []event{{"127.0.0.1:1", false, FailConnect}, {"127.0.0.1:1", false, FailReset}, {"127.0.0.1:1", true, 0}}
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
}

type healthEvent struct {
	ok   bool
	kind FailureKind
}

// healthPool is a pool whose OnHealth calls are recorded in *got.
func healthPool(t *testing.T, opts Options) (*Pool, func() []healthEvent) {
	var mu sync.Mutex
	var got []healthEvent
	opts.OnHealth = func(_ string, ok bool, kind FailureKind) {
		mu.Lock()
		got = append(got, healthEvent{ok, kind})
		mu.Unlock()
	}
	r := NewRegistry(opts)
	p := r.Acquire("127.0.0.1:1")
	t.Cleanup(func() { r.Release(p); r.Close() })
	return p, func() []healthEvent {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(got)
	}
}

// An answer to a request sent before an ejection began does not end it:
// under load, requests in flight when an endpoint was ejected kept ending
// its ejections at once, so the period never grew and ctrl got a failure
// and a recovery for each. A request sent after it began does end it.
func TestOldAnswerDoesNotEndEjection(t *testing.T) {
	p, events := healthPool(t, Options{EjectBase: time.Hour, EjectMax: time.Hour})
	before := p.Begin()
	p.ReportFailure(FailTimeout)
	p.ReportSuccessSince(before)
	p.ReportResponseSince(200, before)
	p.End()
	if p.Healthy() {
		t.Fatal("an answer sent before the ejection ended it")
	}
	after := p.Begin()
	p.ReportResponseSince(200, after)
	p.End()
	if !p.Healthy() || p.registryEjections() != 0 {
		t.Fatalf("an answer sent after the ejection began did not end it: healthy=%v ejections=%d", p.Healthy(), p.registryEjections())
	}
	if got := events(); len(got) != 2 || got[0].ok || !got[1].ok {
		t.Fatalf("reports %+v, want one failure then one recovery", got)
	}
}

func respond(p *Pool, status, times int) {
	for range times {
		p.ReportResponse(status)
	}
}

// A 5xx streak is reported every Report5xxAfter answers, never ejects,
// and its end is reported once; a shorter streak is not reported at all.
func TestPool5xxStreak(t *testing.T) {
	p, got := healthPool(t, Options{})
	respond(p, 503, 4)
	respond(p, 404, 1) // a non-5xx ends the streak before the default 5
	respond(p, 500, 4)
	if g := got(); len(g) != 0 {
		t.Fatalf("short streaks reported %v", g)
	}
	respond(p, 500, 1) // fifth in a row
	if !p.Healthy() {
		t.Fatal("a 5xx streak ejected the endpoint")
	}
	respond(p, 599, 5) // tenth: within report5xxEvery of the first, not reported
	p.last5xxReport.Add(-int64(report5xxEvery))
	respond(p, 599, 5) // fifteenth, a report interval later: reported again
	respond(p, 200, 3)
	respond(p, 502, 4)
	respond(p, 200, 1)
	want := []healthEvent{{false, Fail5xx}, {false, Fail5xx}, {true, 0}}
	if g := got(); !slices.Equal(g, want) {
		t.Fatalf("got %v, want %v", g, want)
	}
	if ej := p.registryEjections(); ej != 0 {
		t.Fatalf("%d ejections recorded", ej)
	}
}

// A negative Report5xxAfter reports nothing, recovery included.
func TestPool5xxDisabled(t *testing.T) {
	p, got := healthPool(t, Options{Report5xxAfter: -1})
	respond(p, 500, 20)
	respond(p, 200, 1)
	if g := got(); len(g) != 0 {
		t.Fatalf("disabled 5xx reports fired %v", g)
	}
}

// An ejection and a 5xx streak are independent, and the success that ends
// both is one recovery; the streak does not lengthen later ejections.
func TestPool5xxAndEjection(t *testing.T) {
	p, got := healthPool(t, Options{Report5xxAfter: 2, EjectBase: time.Hour})
	respond(p, 500, 2)
	p.ReportFailure(FailReset)
	if !p.Ejected(time.Now().UnixNano()) {
		t.Fatal("reset did not eject")
	}
	if ej := p.registryEjections(); ej != 1 {
		t.Fatalf("ejections = %d after one ejection with a 5xx streak, want 1", ej)
	}
	respond(p, 500, 1) // an answer in flight: not a success, does not end the ejection
	if !p.Ejected(time.Now().UnixNano()) {
		t.Fatal("a 5xx answer ended the ejection")
	}
	respond(p, 201, 2)
	if p.Ejected(time.Now().UnixNano()) {
		t.Fatal("success did not end the ejection")
	}
	want := []healthEvent{{false, Fail5xx}, {false, FailReset}, {true, 0}}
	if g := got(); !slices.Equal(g, want) {
		t.Fatalf("got %v, want %v", g, want)
	}
}

// registryEjections is the ejection count Ejections reports for p.
func (p *Pool) registryEjections() int { return int(p.trouble.Load() & ejectionsMask) }

// A non-5xx answer on a healthy endpoint costs no allocation.
func BenchmarkReportResponse(b *testing.B) {
	r := NewRegistry(Options{})
	defer r.Close()
	p := r.Acquire("127.0.0.1:1")
	defer r.Release(p)
	b.ReportAllocs()
	for b.Loop() {
		p.ReportResponse(200)
	}
}

// Concurrent answers, failures and successes never report more
// recoveries than failures, and the last success leaves the endpoint
// healthy with nothing counted.
func TestPoolHealthConcurrent(t *testing.T) {
	p, got := healthPool(t, Options{Report5xxAfter: 3, EjectBase: time.Nanosecond, EjectMax: time.Nanosecond, Logger: slog.New(slog.DiscardHandler)})
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 2000 {
				switch (i + g) % 7 {
				case 0:
					p.ReportFailure(FailReset)
				case 1, 2, 3:
					p.ReportResponse(503)
				default:
					p.ReportResponse(200)
				}
			}
		})
	}
	wg.Wait()
	p.ReportSuccess()
	fails, oks := 0, 0
	for _, e := range got() {
		if e.ok {
			oks++
		} else {
			fails++
		}
	}
	if oks == 0 || oks > fails {
		t.Fatalf("%d recoveries for %d failures", oks, fails)
	}
	if p.trouble.Load() != 0 || p.ejectUntil.Load() != 0 {
		t.Fatalf("after a success: trouble %#x, ejectUntil %d", p.trouble.Load(), p.ejectUntil.Load())
	}
}

// A backend answering 500 to everything (panic mode keeps it in rotation)
// is reported at most once per report5xxEvery, not once per five requests,
// so it cannot flood the edge's report queue.
func TestPool5xxReportsBounded(t *testing.T) {
	p, got := healthPool(t, Options{})
	respond(p, 500, 100000)
	if g := got(); len(g) != 1 {
		t.Fatalf("100000 answers of 500 within a second gave %d reports, want 1: %v", len(g), g[:min(len(g), 5)])
	}
}

// blockingWarn blocks the first Warn record until release is closed.
type blockingWarn struct{ entered, release chan struct{} }

func (h *blockingWarn) Enabled(context.Context, slog.Level) bool { return true }
func (h *blockingWarn) Handle(_ context.Context, r slog.Record) error {
	if r.Level == slog.LevelWarn {
		close(h.entered)
		<-h.release
	}
	return nil
}
func (h *blockingWarn) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *blockingWarn) WithGroup(string) slog.Handler      { return h }

// A success that ends a streak while the streak's failure report is on its
// way (here: held in the log call) is not overtaken by that failure: the
// feed stamps revisions in call order, so a late failure would leave ctrl
// with a failing endpoint that answers 200 and no recovery to follow.
// (Before, the recovery went out first and the failure after it.)
func TestPool5xxRecoveryNotOvertaken(t *testing.T) {
	h := &blockingWarn{entered: make(chan struct{}), release: make(chan struct{})}
	p, got := healthPool(t, Options{Logger: slog.New(h)})
	respond(p, 500, 4)
	done := make(chan struct{})
	go func() { p.ReportResponse(500); close(done) }() // fifth: logs, then reports
	<-h.entered
	p.ReportResponse(200)
	close(h.release)
	<-done
	respond(p, 200, 2)
	// The success came first, so the streak's failure is dropped and no
	// recovery is owed.
	if g := got(); len(g) != 0 {
		t.Fatalf("reports %v for a streak a success ended before its report (word %#x)", g, p.trouble.Load())
	}
}
