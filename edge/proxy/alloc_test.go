//go:build !race

package proxy

import (
	"bytes"
	"net"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/snapgate/snapgate/edge/h1"
	"github.com/snapgate/snapgate/fbs"
)

// TestRequestPathAllocs drives real requests through the proxy with every
// allocation sampled (MemProfileRate = 1) and fails if any allocation in
// the measured loop has a frame of ours (edge/...) on its stack. What
// remains in the process is netpoll's per-readiness-event closure and task
// (deps.md §1) plus the client and backend in this test, none of which is
// the proxy's code.
func TestRequestPathAllocs(t *testing.T) {
	conn, n := benchProxy(t)
	checkRequestPathAllocs(t, conn, n)
}

// TestStalenessPathAllocs is TestRequestPathAllocs on a route with a
// staleness bound and header (forwarded), and on one rejecting as stale.
func TestStalenessPathAllocs(t *testing.T) {
	t.Run("header", func(t *testing.T) {
		conn, n := benchProxyRoute(t, fbs.Route{MaxStalenessMs: 1 << 31, StaleHeader: true}, confirmedLongAgo, 200)
		checkRequestPathAllocs(t, conn, n)
	})
	t.Run("reject", func(t *testing.T) {
		conn, n := benchProxyRoute(t, fbs.Route{MaxStalenessMs: 2000, OnStaleReject: true, StaleHeader: true}, neverConfirmedSource, 503)
		checkRequestPathAllocs(t, conn, n)
	})
}

// TestPolicyPathAllocs is TestRequestPathAllocs on a route whose policy
// checks an API key, or a repeated JWT, and takes a rate-limit token.
func TestPolicyPathAllocs(t *testing.T) {
	t.Run("api key", func(t *testing.T) {
		bs := benchAPIKeySetup(t)
		conn, n := benchProxyWith(t, bs)
		checkAllocs(t, conn, bs.req, n)
	})
	t.Run("refused", func(t *testing.T) {
		bs := benchAPIKeySetup(t)
		bs.req, bs.status = bytes.Replace(bs.req, []byte("key-bench"), []byte("key-wrong"), 1), 401
		conn, n := benchProxyWith(t, bs)
		checkAllocs(t, conn, bs.req, n)
	})
	t.Run("cached jwt", func(t *testing.T) {
		bs := benchJWTSetup(t)
		conn, n := benchProxyWith(t, bs)
		checkAllocs(t, conn, bs.req, n)
	})
}

func checkRequestPathAllocs(t *testing.T, conn net.Conn, n int) {
	checkAllocs(t, conn, benchRequest, n)
}

// TestManyRoutesPathAllocs is TestRequestPathAllocs over a table of 2,000
// routes with requests cycling through 512 distinct paths on 256 of them:
// what a request's path and route are changes nothing.
func TestManyRoutesPathAllocs(t *testing.T) {
	var extra []fbs.Route
	for i := range 2000 {
		extra = append(extra, fbs.Route{ID: "r" + strconv.Itoa(i), Host: "bench.example", Prefix: "/r" + strconv.Itoa(i) + "/", Cluster: "c"})
	}
	var reqs [][]byte
	for i := range 512 {
		reqs = append(reqs, []byte("GET /r"+strconv.Itoa(i%256*7)+"/item/"+strconv.Itoa(i)+"?q="+strconv.Itoa(i)+" HTTP/1.1\r\nHost: bench.example\r\nAccept: */*\r\n\r\n"))
	}
	conn, n := benchProxyWith(t, benchSetup{req: reqs[0], status: 200, extra: extra})
	checkAllocsReqs(t, conn, reqs, n)
}

func checkAllocs(t *testing.T, conn net.Conn, req []byte, n int) {
	checkAllocsReqs(t, conn, [][]byte{req}, n)
}

// checkAllocsReqs sends reqs in turn; every response must be n bytes.
func checkAllocsReqs(t *testing.T, conn net.Conn, reqs [][]byte, n int) {
	resp := make([]byte, n)
	next := 0
	roundTrip := func(t *testing.T, conn net.Conn, resp []byte) {
		roundTripReq(t, conn, reqs[next], resp)
		next = (next + 1) % len(reqs)
	}
	// Warm up pools, buffers, the upstream connection, and every route's
	// counters (made on its first request ever, not per request).
	for range max(200, 2*len(reqs)) {
		roundTrip(t, conn, resp)
	}
	old := runtime.MemProfileRate
	runtime.MemProfileRate = 1
	defer func() { runtime.MemProfileRate = old }()
	before := edgeAllocs()
	const requests = 500
	total := testing.AllocsPerRun(requests, func() { roundTrip(t, conn, resp) })
	after := edgeAllocs()
	ours := after.objects - before.objects
	refills := after.refills - before.refills
	t.Logf("whole process: %.2f allocs per request; in edge/ code: %d objects over %d requests (+%d amortized refills: sync.Pool, timer heap, sudog cache)",
		total, ours, requests, refills)
	// netpoll's buffer pools are sync.Pools: the forced GCs above empty
	// them (and the runtime's sudog cache) and the first requests after
	// refill them. That is amortized
	// per GC, not per request; more than a handful would mean per-request.
	if refills > requests/20 {
		t.Fatalf("%d amortized refills over %d requests: buffers are not being reused", refills, requests)
	}
	if ours != 0 {
		for _, s := range after.stacks {
			t.Log(s)
		}
		t.Fatalf("request path allocated %d objects in our code", ours)
	}
}

// pollWaitHandle is the poller wrapper's function name in stacks.
const pollWaitHandle = "github.com/snapgate/snapgate/edge/netpollx.(*pollWait).handle"

type edgeAllocStats struct {
	objects int64 // allocated with a frame of ours on the stack
	refills int64 // of those, amortized refills: sync.Pool, timer heap, sudog cache
	stacks  []string
}

// edgeAllocs sums sampled allocations whose stack includes a non-test
// function of this module's edge packages.
func edgeAllocs() edgeAllocStats {
	// The profile is published at GC; two cycles make it current.
	runtime.GC()
	runtime.GC()
	var recs []runtime.MemProfileRecord
	n, _ := runtime.MemProfile(nil, true)
	for {
		recs = make([]runtime.MemProfileRecord, n+50)
		var ok bool
		n, ok = runtime.MemProfile(recs, true)
		if ok {
			recs = recs[:n]
			break
		}
	}
	var st edgeAllocStats
	for i := range recs {
		frames := runtime.CallersFrames(recs[i].Stack())
		var ours, pool, inModule bool
		var desc strings.Builder
		for {
			f, more := frames.Next()
			desc.WriteString(f.Function + " ")
			// netpoll's event loop runs through our poller wrapper
			// (edge/netpollx), so that frame is below every allocation
			// netpoll's handler makes; it counts only when the wrapper
			// itself allocates (it is the innermost non-std frame).
			wrapper := f.Function == pollWaitHandle
			if strings.Contains(f.Function, "snapgate/snapgate/edge/") && !strings.HasSuffix(f.File, "_test.go") && (!wrapper || !inModule) {
				ours = true
			}
			inModule = inModule || strings.HasPrefix(f.Function, "github.com/")
			// Amortized growth of shared containers, not per request:
			// sync.Pool refills after GC, the runtime's timer heap, and
			// its sudog cache (a blocking select's wait record), which
			// every GC empties too.
			if strings.HasPrefix(f.Function, "sync.(*Pool)") || strings.HasPrefix(f.Function, "runtime.(*timers)") ||
				f.Function == "runtime.acquireSudog" {
				pool = true
			}
			if !more {
				break
			}
		}
		switch {
		case ours && pool:
			st.refills += recs[i].AllocObjects
		case ours:
			st.objects += recs[i].AllocObjects
			st.stacks = append(st.stacks, desc.String())
		}
	}
	return st
}

// TestUpgradeCheckAllocs: deciding an upgrade, recording the offer in the
// upstream head and holding a 101 against it cost no allocation (the
// tunnel after it does, by design: a goroutine per upgrade).
func TestUpgradeCheckAllocs(t *testing.T) {
	s := &Server{cfg: Config{BufferBodyBytes: 64 << 10}}
	st := &connState{upHead: make([]byte, 0, 4<<10)}
	req := []byte("GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: irc/6.9\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
	resp := []byte("HTTP/1.1 101 Switching Protocols\r\nUpgrade: WebSocket\r\nConnection: Upgrade\r\n\r\n")
	if _, err := h1.ParseRequest(req, &st.req, h1.Limits{}); err != nil {
		t.Fatal(err)
	}
	if _, err := h1.ParseResponse(resp, &st.resp, st.req.Method); err != nil {
		t.Fatal(err)
	}
	st.upPath = st.req.Path
	accepted := true
	allocs := testing.AllocsPerRun(200, func() {
		st.upgrade = s.upgradeRequested(st)
		st.upHead = appendRequestHead(st, st.upHead[:0])
		accepted = accepted && switchAccepted(st)
	})
	if !accepted {
		t.Fatalf("101 refused; upstream head %q", st.upHead)
	}
	if allocs != 0 {
		t.Fatalf("%v allocations per upgrade check", allocs)
	}
}
