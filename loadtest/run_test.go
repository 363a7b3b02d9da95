package loadtest

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"math"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

func mustSchedule(t testing.TB, s string) Schedule {
	t.Helper()
	sch, err := ParseSchedule(s)
	if err != nil {
		t.Fatal(err)
	}
	return sch
}

func mustRun(t *testing.T, cfg Config) *Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	res, err := Run(ctx, cfg)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	return res
}

// countAbove counts recorded latencies at or above d.
func countAbove(h *hdrhistogram.Histogram, d time.Duration) int64 {
	var n int64
	for _, b := range h.Distribution() {
		if b.From >= int64(d) {
			n += b.Count
		}
	}
	return n
}

func TestOpenLoopRate(t *testing.T) {
	s := startServer(t, respondOK)
	res := mustRun(t, Config{Target: s.addr(), Conns: 4, Schedule: mustSchedule(t, "500"), Duration: time.Second})
	if res.Mode != "open" || res.Scheduled != 500 || res.Sent != 500 || res.Completed != 500 || res.Unsent != 0 {
		t.Fatalf("scheduled %d sent %d completed %d unsent %d, want 500 each and 0 unsent (mode %s)",
			res.Scheduled, res.Sent, res.Completed, res.Unsent, res.Mode)
	}
	if res.Status["200"] != 500 || len(res.Errors) != 0 || res.ErrorRate != 0 {
		t.Errorf("status %v errors %v rate %v, want 500 × 200 and no errors", res.Status, res.Errors, res.ErrorRate)
	}
	if got := s.reqs.Load(); got != 500 {
		t.Errorf("server saw %d requests, want 500", got)
	}
	if math.Abs(res.TargetRate-500) > 0.01 {
		t.Errorf("target rate %v, want 500", res.TargetRate)
	}
	// The tolerance absorbs a late last response on a loaded shared machine;
	// the exact counts above already pin what was sent.
	if math.Abs(res.Rate-500)/500 > 0.25 {
		t.Errorf("achieved rate %.1f/s, want 500/s ±25%% (elapsed %v, latency %+v, pacer %+v, backlogged %d)",
			res.Rate, res.Elapsed, res.Latency, res.Pacer, res.Backlogged)
	}
	if res.Pacer.Count+res.Backlogged != 500 || res.Pacer.Count == 0 {
		t.Errorf("pacer count %d + backlogged %d, want 500 with some paced", res.Pacer.Count, res.Backlogged)
	}
	if res.Latency.Count != 500 || res.Latency.P50 <= 0 || res.Latency.P50 > res.Latency.P99 || res.Latency.P99 > res.Latency.Max {
		t.Errorf("latency summary not ordered: %+v", res.Latency)
	}
	pts := res.Percentiles()
	if len(pts) < 10 || pts[len(pts)-1].Quantile != 1 || pts[len(pts)-1].Latency != res.Latency.Max {
		t.Fatalf("curve %v: want ≥10 points ending at the max", pts)
	}
	for i := 1; i < len(pts); i++ {
		if pts[i].Quantile <= pts[i-1].Quantile || pts[i].Latency < pts[i-1].Latency {
			t.Fatalf("curve not monotonic at %d: %v", i, pts)
		}
	}
}

// The central property: a 200 ms server stall with one connection at
// 1000 req/s holds up ~200 scheduled requests. Open loop charges each of them
// the time since it was due, so the stall dominates p99; closed loop sees one
// slow request among thousands.
func TestOpenLoopShowsStallClosedLoopHidesIt(t *testing.T) {
	const stall = 200 * time.Millisecond

	s := startServer(t, stallOnce(300*time.Millisecond, stall))
	open := mustRun(t, Config{Target: s.addr(), Conns: 1, Schedule: mustSchedule(t, "1000"), Duration: time.Second})
	if open.Completed != open.Scheduled || open.Scheduled != 1000 {
		t.Fatalf("open loop: completed %d of %d scheduled, errors %v", open.Completed, open.Scheduled, open.Errors)
	}
	if open.Latency.P99 < stall*3/4 || open.Latency.Max < stall {
		t.Errorf("open loop p99 %v max %v: the %v stall is hidden", open.Latency.P99, open.Latency.Max, stall)
	}
	if open.Backlogged < 150 {
		t.Errorf("open loop: %d requests backlogged, want the ~200 the stall held up", open.Backlogged)
	}
	// Every request due during the stall is slow, not just the one in flight.
	if n := countAbove(open.Histogram(), stall/4); n < 100 {
		t.Errorf("open loop: %d latencies ≥ %v, want ≥ 100", n, stall/4)
	}

	s2 := startServer(t, stallOnce(300*time.Millisecond, stall))
	closed := mustRun(t, Config{Target: s2.addr(), Conns: 1, Schedule: Schedule{Closed: true}, Duration: time.Second})
	if closed.Mode != "closed" || closed.Completed == 0 || len(closed.Errors) != 0 {
		t.Fatalf("closed loop: mode %s completed %d errors %v", closed.Mode, closed.Completed, closed.Errors)
	}
	if closed.Latency.Max < stall {
		t.Errorf("closed loop max %v, want the stall (%v) in it", closed.Latency.Max, stall)
	}
	// Closed loop waited politely: only the request in flight during the
	// stall is slow (scheduling hiccups on a loaded machine may add a few),
	// against the hundred or more open loop charged. Compared with the
	// open-loop count, not a fixed bound, so machine load cannot flip it.
	nOpen, nClosed := countAbove(open.Histogram(), stall/4), countAbove(closed.Histogram(), stall/4)
	if nClosed < 1 || nClosed*10 > nOpen {
		t.Errorf("closed loop: %d latencies ≥ %v against open loop's %d; want the one stalled request, far fewer than open loop", nClosed, stall/4, nOpen)
	}
	// The service time (closed-loop median) is tiny; the open-loop tail is
	// the stall, orders of magnitude above it.
	if open.Latency.P99 < 20*closed.Latency.P50 {
		t.Errorf("open p99 %v is not far above the service time %v", open.Latency.P99, closed.Latency.P50)
	}
	if closed.Pacer.Count != 0 || closed.Scheduled != closed.Sent {
		t.Errorf("closed loop: pacer %d, scheduled %d sent %d", closed.Pacer.Count, closed.Scheduled, closed.Sent)
	}

	// The SLO check fails on the stalled run and passes with room for it.
	slo, err := ParseSLO("p99=50ms,errors=0.1%")
	if err != nil {
		t.Fatal(err)
	}
	v := open.Check(slo)
	if len(v) != 1 || v[0].Objective != "p99" || v[0].Limit != "50ms" {
		t.Errorf("Check(%s) = %v, want one p99 violation", slo, v)
	}
	if v := open.Check(SLO{Objectives: []Objective{{Name: "p99", Quantile: 0.99, MaxLatency: 5 * time.Second}}}); v != nil {
		t.Errorf("Check(p99=5s) = %v, want pass", v)
	}
	// The same verdict from the JSON form, which has only the curve.
	data, err := json.Marshal(open)
	if err != nil {
		t.Fatal(err)
	}
	var back Result
	if err := json.Unmarshal(data, &back); err != nil {
		t.Fatal(err)
	}
	if back.Histogram() != nil || back.Latency != open.Latency || len(back.Curve) != len(open.Curve) {
		t.Fatalf("JSON round trip lost data: %+v", back.Latency)
	}
	if v := back.Check(slo); len(v) != 1 || v[0].Objective != "p99" {
		t.Errorf("Check from JSON = %v, want one p99 violation", v)
	}
}

func TestSLOFromConfig(t *testing.T) {
	// Every fifth response is a 503: a 20% error rate.
	s := startServer(t, func(_ *testServer, n int64, _ []byte, w *bufio.Writer) bool {
		if n%5 == 4 {
			w.WriteString("HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")
		} else {
			w.WriteString(okResponse)
		}
		return true
	})
	fail, _ := ParseSLO("p99=10s,errors=10%")
	res := mustRun(t, Config{Target: s.addr(), Conns: 2, Schedule: mustSchedule(t, "200"), Duration: 500 * time.Millisecond, SLO: fail})
	if res.Status["503"] != 20 || res.Status["200"] != 80 || math.Abs(res.ErrorRate-0.2) > 1e-9 {
		t.Fatalf("status %v error rate %v, want 80×200, 20×503, 20%%", res.Status, res.ErrorRate)
	}
	if res.Passed() || len(res.Violations) != 1 || res.Violations[0].Objective != "errors" || res.Violations[0].Actual != "20%" {
		t.Errorf("violations %v, want errors 20%% > 10%%", res.Violations)
	}
	pass, _ := ParseSLO("p99=10s,errors=25%")
	if v := res.Check(pass); v != nil {
		t.Errorf("Check(%s) = %v, want pass", pass, v)
	}
	var text strings.Builder
	if err := res.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"open loop", "scheduled 100", "200: 80, 503: 20", "error rate 20%", "slo        FAIL: errors 20% > 10%"} {
		if !strings.Contains(text.String(), want) {
			t.Errorf("text report lacks %q:\n%s", want, text.String())
		}
	}
}

func TestChunkedResponses(t *testing.T) {
	good := startServer(t, func(_ *testServer, n int64, _ []byte, w *bufio.Writer) bool {
		w.WriteString("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
		for range n%3 + 1 {
			w.WriteString("4;i=x\r\nabcd\r\n")
		}
		w.WriteString("0\r\nX-Trailer: y\r\n\r\n")
		return true
	})
	res := mustRun(t, Config{Target: good.addr(), Conns: 2, Schedule: mustSchedule(t, "200"), Duration: 300 * time.Millisecond})
	if res.Completed != 60 || res.Status["200"] != 60 || len(res.Errors) != 0 {
		t.Errorf("completed %d status %v errors %v, want 60 × 200 and no errors", res.Completed, res.Status, res.Errors)
	}
}

func TestErrorCounting(t *testing.T) {
	t.Run("refused", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()
		res := mustRun(t, Config{Target: addr, Conns: 2, Schedule: mustSchedule(t, "100"), Duration: 200 * time.Millisecond})
		if res.Errors["refused"] != 20 || res.Completed != 0 || res.ErrorRate != 1 {
			t.Errorf("errors %v completed %d rate %v, want 20 refused", res.Errors, res.Completed, res.ErrorRate)
		}
		if v := res.Check(SLO{Objectives: []Objective{{Name: "p50", Quantile: 0.5, MaxLatency: time.Hour}}}); len(v) != 1 || v[0].Actual != "no responses" {
			t.Errorf("latency SLO with no responses: %v, want a violation", v)
		}
	})
	t.Run("server closes", func(t *testing.T) {
		// Answers, then drops the connection without saying so: the next
		// request on it fails and the worker reconnects.
		s := startServer(t, func(_ *testServer, _ int64, _ []byte, w *bufio.Writer) bool {
			w.WriteString(okResponse)
			return false
		})
		res := mustRun(t, Config{Target: s.addr(), Conns: 1, Schedule: mustSchedule(t, "100"), Duration: 300 * time.Millisecond})
		failed := res.Errors["closed"] + res.Errors["reset"]
		if res.Completed == 0 || failed == 0 || res.Completed+failed != res.Sent || res.Sent != 30 {
			t.Errorf("completed %d errors %v sent %d: want successes, closed/reset failures, and reconnects", res.Completed, res.Errors, res.Sent)
		}
	})
	t.Run("connection close header", func(t *testing.T) {
		s := startServer(t, func(_ *testServer, _ int64, _ []byte, w *bufio.Writer) bool {
			w.WriteString("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok")
			return false
		})
		res := mustRun(t, Config{Target: s.addr(), Conns: 1, Schedule: mustSchedule(t, "100"), Duration: 300 * time.Millisecond})
		if res.Completed != 30 || len(res.Errors) != 0 {
			t.Errorf("completed %d errors %v, want 30 and a clean reconnect each time", res.Completed, res.Errors)
		}
	})
	t.Run("close mid body", func(t *testing.T) {
		s := startServer(t, func(_ *testServer, _ int64, _ []byte, w *bufio.Writer) bool {
			w.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
			return false
		})
		res := mustRun(t, Config{Target: s.addr(), Conns: 1, Schedule: mustSchedule(t, "100"), Duration: 200 * time.Millisecond})
		if res.Errors["closed"]+res.Errors["reset"] != 20 || res.Completed != 0 {
			t.Errorf("errors %v completed %d, want 20 closed", res.Errors, res.Completed)
		}
	})
	t.Run("bad response", func(t *testing.T) {
		s := startServer(t, func(_ *testServer, _ int64, _ []byte, w *bufio.Writer) bool {
			w.WriteString("HTTP/1.1 2OO OK\r\n\r\n")
			return true
		})
		res := mustRun(t, Config{Target: s.addr(), Conns: 1, Schedule: mustSchedule(t, "100"), Duration: 200 * time.Millisecond})
		if res.Errors["bad_response"] != 20 || res.Completed != 0 {
			t.Errorf("errors %v completed %d, want 20 bad_response", res.Errors, res.Completed)
		}
	})
	t.Run("timeout", func(t *testing.T) {
		release := make(chan struct{})
		s := startServer(t, func(_ *testServer, _ int64, _ []byte, _ *bufio.Writer) bool {
			<-release
			return false
		})
		defer close(release) // before the server's cleanup waits for its handlers
		res := mustRun(t, Config{Target: s.addr(), Conns: 2, Schedule: mustSchedule(t, "20"), Duration: 200 * time.Millisecond, Timeout: 100 * time.Millisecond})
		if res.Errors["timeout"] != 4 || res.Completed != 0 {
			t.Errorf("errors %v completed %d unsent %d, want 4 timeouts", res.Errors, res.Completed, res.Unsent)
		}
	})
}

// When the server never answers and there are more scheduled requests than
// connections, the ones never sent are counted, not forgotten.
func TestUnsent(t *testing.T) {
	release := make(chan struct{})
	s := startServer(t, func(_ *testServer, _ int64, _ []byte, w *bufio.Writer) bool {
		<-release
		return false
	})
	defer close(release)
	res := mustRun(t, Config{Target: s.addr(), Conns: 1, Schedule: mustSchedule(t, "100"), Duration: 200 * time.Millisecond, Timeout: 150 * time.Millisecond})
	// Timeline: slots at 0,10,…,190 ms; each send times out after 150 ms and
	// the backlog is drained until 350 ms, so 3 requests go out.
	if res.Scheduled != 20 || res.Sent+res.Unsent != 20 || res.Unsent < 15 || res.Errors["timeout"] != res.Sent || res.ErrorRate != 1 {
		t.Errorf("scheduled %d sent %d unsent %d errors %v rate %v", res.Scheduled, res.Sent, res.Unsent, res.Errors, res.ErrorRate)
	}
}

func TestRequestBytesAndPaths(t *testing.T) {
	s := startServer(t, respondOK)
	s.recd = true
	res := mustRun(t, Config{
		Target:   s.addr(),
		Host:     "api.example",
		Method:   "POST",
		Paths:    []string{"/a", "/b?x=1", "/c"},
		Headers:  [][2]string{{"X-Api-Key", "k1"}, {"Accept", "*/*"}},
		Body:     []byte(`{"n":1}`),
		Conns:    3,
		Schedule: mustSchedule(t, "100"),
		Duration: 300 * time.Millisecond,
	})
	if res.Completed != 30 {
		t.Fatalf("completed %d, want 30 (errors %v)", res.Completed, res.Errors)
	}
	count := map[string]int{}
	for _, r := range s.requests() {
		line, _, _ := strings.Cut(string(r), "\r\n")
		count[line]++
		path := strings.Fields(line)[1]
		want := "POST " + path + " HTTP/1.1\r\nHost: api.example\r\nX-Api-Key: k1\r\nAccept: */*\r\nContent-Length: 7\r\n\r\n{\"n\":1}"
		if string(r) != want {
			t.Fatalf("request bytes %q, want %q", r, want)
		}
	}
	for _, p := range []string{"/a", "/b?x=1", "/c"} {
		if count["POST "+p+" HTTP/1.1"] != 10 {
			t.Errorf("path counts %v, want 10 each (round robin)", count)
		}
	}
}

func TestWarmupNotMeasured(t *testing.T) {
	s := startServer(t, respondOK)
	res := mustRun(t, Config{Target: s.addr(), Conns: 2, Schedule: mustSchedule(t, "100"), Warmup: 200 * time.Millisecond, Duration: 300 * time.Millisecond})
	if res.Scheduled != 30 || res.Completed != 30 || res.Duration != 300*time.Millisecond {
		t.Errorf("scheduled %d completed %d duration %v, want 30, 30, 300ms", res.Scheduled, res.Completed, res.Duration)
	}
	if got := s.reqs.Load(); got != 50 {
		t.Errorf("server saw %d requests, want 50 (20 warmup + 30)", got)
	}
}

func TestClosedLoopWarmup(t *testing.T) {
	s := startServer(t, respondOK)
	res := mustRun(t, Config{Target: s.addr(), Conns: 2, Schedule: mustSchedule(t, "max"), Warmup: 100 * time.Millisecond, Duration: 200 * time.Millisecond})
	if res.Completed == 0 || res.Completed != res.Sent || res.Scheduled != res.Sent || res.TargetRate != 0 {
		t.Errorf("completed %d sent %d scheduled %d target %v", res.Completed, res.Sent, res.Scheduled, res.TargetRate)
	}
	if got := s.reqs.Load(); got <= res.Sent {
		t.Errorf("server saw %d requests, measured %d: warmup requests missing", got, res.Sent)
	}
}

func TestCancel(t *testing.T) {
	release := make(chan struct{})
	s := startServer(t, func(_ *testServer, n int64, _ []byte, w *bufio.Writer) bool {
		if n >= 5 {
			<-release // later requests hang: cancellation must unblock them
		}
		w.WriteString(okResponse)
		return true
	})
	defer close(release)
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(300*time.Millisecond, cancel)
	res, err := Run(ctx, Config{Target: s.addr(), Conns: 2, Schedule: mustSchedule(t, "50"), Duration: 20 * time.Second, Timeout: 20 * time.Second})
	if !errors.Is(err, context.Canceled) || res == nil || !res.Interrupted {
		t.Fatalf("Run after cancel: res %v err %v, want a partial result and context.Canceled", res, err)
	}
	if res.Duration <= 0 || res.Duration >= 20*time.Second || res.Completed < 5 {
		t.Errorf("partial window %v completed %d, want the ~300ms before cancel and its responses", res.Duration, res.Completed)
	}
	if res.Scheduled > 100 {
		t.Errorf("scheduled %d, want only the slots before cancel", res.Scheduled)
	}
	// The requests hanging when it came were cut off by the cancel, not
	// by the target: they used to count as its timeouts.
	if len(res.Errors) != 0 {
		t.Errorf("errors %v: requests cut off by the cancel (Timeout 20s) counted against the target", res.Errors)
	}
}

func TestProgress(t *testing.T) {
	s := startServer(t, respondOK)
	var calls, last atomic.Int64
	res := mustRun(t, Config{
		Target: s.addr(), Conns: 1, Schedule: mustSchedule(t, "200"), Duration: 400 * time.Millisecond,
		ProgressInterval: 50 * time.Millisecond,
		Progress: func(p Progress) {
			calls.Add(1)
			if p.TargetRate != 200 || p.Sent < last.Load() {
				t.Errorf("progress %+v", p)
			}
			last.Store(p.Sent)
		},
	})
	if calls.Load() < 2 || last.Load() == 0 || last.Load() > res.Sent {
		t.Errorf("progress called %d times, last sent %d of %d", calls.Load(), last.Load(), res.Sent)
	}
}

func TestConfigErrors(t *testing.T) {
	sch := mustSchedule(t, "100:1s")
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"no target", Config{Schedule: sch}, "target is empty"},
		{"bad target", Config{Target: "localhost", Schedule: sch}, `target "localhost"`},
		{"no schedule", Config{Target: "127.0.0.1:1"}, "no stages"},
		{"open-ended", Config{Target: "127.0.0.1:1", Schedule: mustSchedule(t, "100")}, "set a duration"},
		{"closed needs duration", Config{Target: "127.0.0.1:1", Schedule: Schedule{Closed: true}}, "set a duration"},
		{"conns", Config{Target: "127.0.0.1:1", Schedule: sch, Conns: -1}, "conns -1"},
		{"method", Config{Target: "127.0.0.1:1", Schedule: sch, Method: "GE T"}, "method"},
		{"path", Config{Target: "127.0.0.1:1", Schedule: sch, Paths: []string{"a"}}, "must start with /"},
		{"path space", Config{Target: "127.0.0.1:1", Schedule: sch, Paths: []string{"/a b"}}, "invalid byte"},
		{"header name", Config{Target: "127.0.0.1:1", Schedule: sch, Headers: [][2]string{{"X Y", "1"}}}, "header name"},
		{"header value", Config{Target: "127.0.0.1:1", Schedule: sch, Headers: [][2]string{{"X", "1\r\nEvil: 1"}}}, "control byte"},
		{"reserved header", Config{Target: "127.0.0.1:1", Schedule: sch, Headers: [][2]string{{"content-length", "1"}}}, "set by the client"},
		{"host", Config{Target: "127.0.0.1:1", Schedule: sch, Host: "a\nb"}, "control byte"},
		{"negative", Config{Target: "127.0.0.1:1", Schedule: sch, Warmup: -1}, "negative"},
	} {
		res, err := Run(context.Background(), tc.cfg)
		if err == nil || res != nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: res %v err %v, want error containing %q", tc.name, res, err, tc.want)
		}
	}
}

// Percentiles are nearest-rank: with 11 of 1,060 samples slow (1.04 %),
// p99 is a slow one and a p99 objective under it fails. hdrhistogram-go's
// own rank rounding read the fast value.
func TestPercentilesAreNearestRank(t *testing.T) {
	h := hdrhistogram.New(latLowest, int64(time.Minute), 3)
	h.RecordValues(int64(100*time.Microsecond), 1049)
	h.RecordValues(int64(200*time.Millisecond), 11)
	s := summarize(h)
	r := &Result{hist: h, Completed: 1060}
	v := r.Check(SLO{Objectives: []Objective{{Name: "p99", Quantile: 0.99, MaxLatency: 10 * time.Millisecond}}})
	if s.P99 < 100*time.Millisecond || len(v) != 1 || s.P50 > time.Millisecond {
		t.Errorf("p50 %v, p99 %v, SLO p99=10ms violations %v; want p50 ≈100µs, p99 ≈200ms and a violation", s.P50, s.P99, v)
	}
	if got := time.Duration(atQuantile(h, 1)); got < 199*time.Millisecond {
		t.Errorf("quantile 1 = %v, want the largest value", got)
	}
}

// A request that times out counts in the latency figures at the time it
// was given up on: a latency objective fails when a tenth of the requests
// got no answer, instead of passing on the answered ones.
func TestTimeoutsCountInLatency(t *testing.T) {
	release := make(chan struct{})
	at := time.Now().Add(300 * time.Millisecond)
	end := at.Add(100 * time.Millisecond)
	s := startServer(t, func(_ *testServer, _ int64, _ []byte, w *bufio.Writer) bool {
		if now := time.Now(); !now.Before(at) && now.Before(end) {
			<-release
			return false
		}
		w.WriteString(okResponse)
		return true
	})
	defer close(release)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	slo, err := ParseSLO("p99=50ms,max=100ms")
	if err != nil {
		t.Fatal(err)
	}
	res, err := Run(ctx, Config{Target: s.addr(), Conns: 256, Schedule: mustSchedule(t, "1000"), Duration: time.Second,
		Timeout: 100 * time.Millisecond, SLO: slo})
	if err != nil {
		t.Fatal(err)
	}
	if res.Errors["timeout"] == 0 {
		t.Skip("no request timed out (the stall missed the run)")
	}
	if res.Passed() || res.Latency.Max < 100*time.Millisecond || res.Latency.Count != res.Completed+res.Errors["timeout"] {
		t.Errorf("%d timeouts: SLO passed %v, max %v, %d latencies for %d completed", res.Errors["timeout"], res.Passed(), res.Latency.Max, res.Latency.Count, res.Completed)
	}
}

// OnWindow brackets the measured part: it starts after the warmup, on the
// connections the warmup opened, and ends about Duration later, before Run
// returns. bench samples CPU time there; it used to run the warmup as a
// run of its own, whose connections closed, so every measured run opened
// its connections inside the measured part.
func TestOnWindowBracketsMeasuredPart(t *testing.T) {
	s := startServer(t, respondOK)
	conns := func() map[net.Conn]bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		m := map[net.Conn]bool{}
		for c := range s.conns {
			m[c] = true
		}
		return m
	}
	var calls []bool
	var at []time.Time
	var open [1]map[net.Conn]bool
	start := time.Now()
	res := mustRun(t, Config{Target: s.addr(), Conns: 4, Schedule: mustSchedule(t, "400"), Warmup: 300 * time.Millisecond,
		Duration: 400 * time.Millisecond, OnWindow: func(begin bool) {
			calls = append(calls, begin)
			at = append(at, time.Now())
			if begin {
				open[0] = conns()
			}
		}})
	if len(calls) != 2 || !calls[0] || calls[1] {
		t.Fatalf("OnWindow calls %v, want true then false", calls)
	}
	if d := at[0].Sub(start); d < 300*time.Millisecond {
		t.Errorf("window began %v after the start, within the 300ms warmup", d)
	}
	if d := at[1].Sub(at[0]); d < 390*time.Millisecond || d > 600*time.Millisecond {
		t.Errorf("window lasted %v, want about the 400ms Duration", d)
	}
	if len(open[0]) != 4 || s.accepted.Load() != 4 {
		t.Fatalf("%d connections open at the window's start, %d accepted in all; want the 4 the warmup opened, and no other", len(open[0]), s.accepted.Load())
	}
	if res.Completed < 100 {
		t.Fatalf("completed %d", res.Completed)
	}
}
