package proxy

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/snapgate/snapgate/edge/telemetry"
	"github.com/snapgate/snapgate/edge/upstream"
	"github.com/snapgate/snapgate/fbs"
)

// lbState is one catch-all route "r" to cluster "c" over backends with the
// given weights and policy, at version v.
func lbState(v uint64, lb uint8, backends []*testBackend, weights ...uint16) fbs.State {
	st := oneRoute()
	st.Version = v
	st.Clusters[0].LB = lb
	for i, b := range backends {
		e := fbs.Endpoint{Address: b.addr()}
		if i < len(weights) {
			e.Weight = weights[i]
		}
		st.Clusters[0].Endpoints = append(st.Clusters[0].Endpoints, e)
	}
	return st
}

// TestTurnsSurviveSwaps: a snapshot swap that leaves a cluster alone must
// not restart its round robin. Each swap used to build the cluster's
// cursor anew at 0, so with a swap between any two requests (health
// changes publish up to 10 versions a second) every request went to the
// first endpoint; weighted round robin lost its exact shares the same way.
func TestTurnsSurviveSwaps(t *testing.T) {
	for _, tc := range []struct {
		lb      uint8
		weights []uint16
		want    []int64
	}{
		{fbs.LBRoundRobin, nil, []int64{10, 10, 10}},
		{fbs.LBWeightedRoundRobin, []uint16{3, 1, 1}, []int64{18, 6, 6}},
	} {
		t.Run(fmt.Sprint("lb", tc.lb), func(t *testing.T) {
			bs := []*testBackend{newTestBackend(t, "a"), newTestBackend(t, "b"), newTestBackend(t, "c")}
			v := uint64(1)
			g := startGateway(t, lbState(v, tc.lb, bs, tc.weights...), upstream.Options{}, nil)
			c := dialProxy(t, g.addr)
			var total int64
			for _, w := range tc.want {
				total += w
			}
			for range total {
				v++
				g.swap(lbState(v, tc.lb, bs, tc.weights...))
				if r := c.do(get("x.example", "/")); r.status != 200 {
					t.Fatalf("status %d: %s", r.status, r.body)
				}
			}
			for i, b := range bs {
				if got := b.hits.Load(); got != tc.want[i] {
					t.Errorf("backend %s: %d of %d requests, want %d", b.name, got, total, tc.want[i])
				}
			}
		})
	}
}

// TestInFlightAndConnectionsReleased drives a request down every way an
// exchange can end (a refused connect, a reset, an upstream timeout, a
// retried 503, a client hanging up while the backend works, in the middle
// of the response body and in the middle of a streamed upload) and checks
// that every endpoint's in-flight count (what least_request balances on)
// and the client connection gauge go back to 0.
func TestInFlightAndConnectionsReleased(t *testing.T) {
	web := newTestBackend(t, "web")
	reset := newScriptedBackend(t, func(*http.Request, int) string { return "" })
	slow := newScriptedBackend(t, func(*http.Request, int) string {
		time.Sleep(300 * time.Millisecond)
		return "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
	})
	unavailable := newScriptedBackend(t, func(*http.Request, int) string {
		return "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n"
	})
	refused := deadAddr(t)
	cluster := func(name string, addrs ...string) fbs.Cluster {
		c := fbs.Cluster{Name: name, LB: fbs.LBLeastRequest}
		for _, a := range addrs {
			c.Endpoints = append(c.Endpoints, fbs.Endpoint{Address: a})
		}
		return c
	}
	st := fbs.State{Version: 1,
		Clusters: []fbs.Cluster{
			cluster("web", web.addr()), cluster("refused", refused), cluster("reset", reset.addr()),
			cluster("slow", slow.addr()), cluster("flaky", unavailable.addr(), web.addr()),
		},
		Routes: []fbs.Route{
			{ID: "web", Host: "*", Prefix: "/", Cluster: "web"},
			{ID: "refused", Host: "*", Prefix: "/refused", Cluster: "refused"},
			{ID: "reset", Host: "*", Prefix: "/reset", Cluster: "reset"},
			{ID: "timeout", Host: "*", Prefix: "/timeout", Cluster: "slow", TimeoutMs: 100},
			{ID: "retry", Host: "*", Prefix: "/retry", Cluster: "flaky", RetryAttempts: 1, RetryStatuses: []uint16{503}},
		},
	}
	g := startGateway(t, st, upstream.Options{}, nil)

	for _, tc := range []struct {
		path   string
		status int
	}{{"/refused", 502}, {"/reset", 502}, {"/timeout", 504}, {"/retry", 200}, {"/retry", 200}, {"/", 200}} {
		c := dialProxy(t, g.addr)
		if r := c.do(get("x.example", tc.path)); r.status != tc.status {
			t.Fatalf("%s: status %d, want %d: %s", tc.path, r.status, tc.status, r.body)
		}
		c.c.Close()
	}
	// Each request is counted once, by its final status; an attempt
	// that was retried is not counted.
	for _, want := range []string{
		`snapgate_edge_requests_total{route="refused",class="5xx"} 1`,
		`snapgate_edge_requests_total{route="reset",class="5xx"} 1`,
		`snapgate_edge_requests_total{route="timeout",class="5xx"} 1`,
		`snapgate_edge_requests_total{route="retry",class="2xx"} 2`,
		`snapgate_edge_requests_total{route="retry",class="5xx"} 0`,
		`snapgate_edge_errors_total{cause="connect_failed"} 1`,
		`snapgate_edge_errors_total{cause="upstream_closed"} 1`,
		`snapgate_edge_errors_total{cause="upstream_timeout"} 1`,
	} {
		hasSample(t, g.metrics, want)
	}
	// The client hangs up while the backend takes 300 ms to answer.
	c := dialProxy(t, g.addr)
	c.send(get("x.example", "/slow"))
	c.c.Close()
	// The client hangs up after the first bytes of a large body.
	c = dialProxy(t, g.addr)
	c.send(get("x.example", "/big"))
	if _, err := io.ReadFull(c.br, make([]byte, 1000)); err != nil {
		t.Fatal(err)
	}
	c.c.Close()
	// The client hangs up in the middle of an upload that streams.
	c = dialProxy(t, g.addr)
	c.send("POST /upload HTTP/1.1\r\nHost: x.example\r\nContent-Length: 1048576\r\n\r\n" + strings.Repeat("x", 200<<10))
	time.Sleep(50 * time.Millisecond) // let the upload reach the backend
	c.c.Close()

	for _, addr := range []string{web.addr(), refused, reset.addr(), slow.addr(), unavailable.addr()} {
		p := g.reg.Acquire(addr)
		waitUntil(t, addr+"'s requests in flight to end", func() bool { return p.InFlight() == 0 })
		g.reg.Release(p)
	}
	waitNoClientConnections(t, g.metrics)
}

// waitNoClientConnections waits for the client connection gauge to show
// that every connection was counted closed.
func waitNoClientConnections(t *testing.T, m *telemetry.Metrics) {
	t.Helper()
	waitUntil(t, "the client connection gauge to reach 0", func() bool {
		return strings.Contains("\n"+scrape(m), "\nsnapgate_edge_client_connections 0\n")
	})
}

// deadAddr is a loopback address nothing listens on: connects are refused.
func deadAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// TestEjectionEndToEnd: a refused endpoint is ejected on its first failure
// and gets no requests while ejected, which the admin metrics show; a
// cluster whose endpoints are all ejected, or whose only endpoint is,
// still has them tried (routing's pick); the next failure after an
// ejection ended ejects for twice as long; one success ends it.
func TestEjectionEndToEnd(t *testing.T) {
	live := newTestBackend(t, "live")
	dead, dead2 := deadAddr(t), deadAddr(t)
	st := fbs.State{Version: 1,
		Clusters: []fbs.Cluster{
			{Name: "pair", Endpoints: []fbs.Endpoint{{Address: dead}, {Address: live.addr()}}},
			{Name: "lone", Endpoints: []fbs.Endpoint{{Address: dead}}},
			{Name: "gone", Endpoints: []fbs.Endpoint{{Address: dead}, {Address: dead2}}},
		},
		Routes: []fbs.Route{
			{ID: "pair", Host: "*", Prefix: "/", Cluster: "pair"},
			{ID: "lone", Host: "*", Prefix: "/lone", Cluster: "lone"},
			{ID: "gone", Host: "*", Prefix: "/gone", Cluster: "gone"},
		},
	}
	const base = time.Second // long enough that the 10 requests below fit in it, loaded or not
	g := startGateway(t, st, upstream.Options{EjectBase: base, EjectMax: 4 * base}, nil)
	c := dialProxy(t, g.addr)

	statuses := map[int]int{}
	for range 10 {
		statuses[c.do(get("x.example", "/")).status]++
	}
	if statuses[502] != 1 || statuses[200] != 9 {
		t.Fatalf("statuses %v, want one 502 (the refused endpoint, then ejected) and 9 × 200", statuses)
	}
	for _, want := range []string{
		"snapgate_edge_endpoints_ejected 1",
		`snapgate_edge_endpoint_ejected{addr="` + dead + `",cause="connect-failure"} 1`,
		`snapgate_edge_errors_total{cause="connect_failed"} 1`,
	} {
		hasSample(t, g.metrics, want)
	}
	// dead is ejected; dead2 fails and is ejected too; then both are
	// tried as if neither were, not refused with 503 until one returns.
	for i := range 3 {
		if r := c.do(get("x.example", "/gone")); r.status != 502 || r.body != "upstream connect failed\n" {
			t.Fatalf("request %d to a cluster whose endpoints are all ejected: %d %q, want 502 (tried anyway)", i, r.status, r.body)
		}
	}
	// The only endpoint of a cluster is tried although ejected: the
	// failure does not extend its ejection.
	if r := c.do(get("x.example", "/lone")); r.status != 502 {
		t.Fatalf("the ejected only endpoint: %d %q, want 502 (tried anyway)", r.status, r.body)
	}

	// Once the ejection has ended the endpoint is tried again; failing
	// again ejects it for twice as long.
	p := g.reg.Acquire(dead)
	defer g.reg.Release(p)
	waitUntil(t, "the ejection to end", p.Healthy)
	if r := c.do(get("x.example", "/lone")); r.status != 502 {
		t.Fatalf("after the ejection: %d, want 502", r.status)
	}
	ej, ok := ejectionOf(g.reg, dead)
	if !ok || ej.Ejections != 2 {
		t.Fatalf("ejections %+v, want the second of %s", g.reg.Ejections(), dead)
	}
	if d := time.Until(ej.Until); d <= base || d > 2*base {
		t.Fatalf("second ejection lasts %v, want about %v", d, 2*base)
	}

	// The endpoint comes back: its first success ends the ejection
	// history, so the next failure ejects for base again.
	ln, err := net.Listen("tcp", dead)
	if err != nil {
		t.Skipf("cannot listen on %s again: %v", dead, err)
	}
	back := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "back") })}
	go back.Serve(ln)
	waitUntil(t, "the second ejection to end", p.Healthy)
	if r := c.do(get("x.example", "/lone")); r.status != 200 || r.body != "back" {
		t.Fatalf("endpoint back: %d %q", r.status, r.body)
	}
	if _, ok := ejectionOf(g.reg, dead); ok {
		t.Fatalf("still ejected after a success: %+v", g.reg.Ejections())
	}
	back.Close()
	if r := c.do(get("x.example", "/lone")); r.status != 502 {
		t.Fatalf("endpoint gone again: %d, want 502", r.status)
	}
	if ej, ok := ejectionOf(g.reg, dead); !ok || ej.Ejections != 1 || time.Until(ej.Until) > base {
		t.Fatalf("ejections after a success and a failure %+v, want a first one of %v", g.reg.Ejections(), base)
	}
}

// ejectionOf is addr's running ejection, if any.
func ejectionOf(reg *upstream.Registry, addr string) (upstream.Ejection, bool) {
	for _, e := range reg.Ejections() {
		if e.Addr == addr {
			return e, true
		}
	}
	return upstream.Ejection{}, false
}

// TestRetryWithoutAnotherEndpoint: a request whose route may retry, on a
// cluster with no other usable endpoint, gets the answer of the attempt it
// made: the connect failure (502), or the backend's own 503. It used to
// get the edge's 503 "no endpoints", counted as no_endpoint, so the
// same failure answered and counted differently with a retry policy.
func TestRetryWithoutAnotherEndpoint(t *testing.T) {
	busy := newScriptedBackend(t, func(*http.Request, int) string {
		return "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 5\r\n\r\nbusy\n"
	})
	other := newTestBackend(t, "other")
	dead := deadAddr(t)
	st := fbs.State{Version: 1,
		Clusters: []fbs.Cluster{
			{Name: "dead", Endpoints: []fbs.Endpoint{{Address: dead}}},
			// other is marked unhealthy by ctrl, so busy is the only choice.
			{Name: "busy", Endpoints: []fbs.Endpoint{{Address: busy.addr()}, {Address: other.addr(), Unhealthy: true}}},
		},
		Routes: []fbs.Route{
			{ID: "dead", Host: "*", Prefix: "/dead", Cluster: "dead", RetryAttempts: 2, RetryOn: fbs.RetryOnConnectFailure},
			{ID: "busy", Host: "*", Prefix: "/busy", Cluster: "busy", RetryAttempts: 2, RetryStatuses: []uint16{503}},
		},
	}
	g := startGateway(t, st, upstream.Options{}, nil)
	c := dialProxy(t, g.addr)
	if r := c.do(get("x.example", "/dead")); r.status != 502 || r.body != "upstream connect failed\n" {
		t.Errorf("refused, no other endpoint: %d %q, want 502 upstream connect failed", r.status, r.body)
	}
	if r := c.do(get("x.example", "/busy")); r.status != 503 || r.body != "busy\n" {
		t.Errorf("503, no other endpoint: %d %q, want the backend's 503", r.status, r.body)
	}
	if n := len(busy.requests()); n != 1 {
		t.Errorf("busy backend got %d requests, want 1", n)
	}
	if other.hits.Load() != 0 {
		t.Error("the unhealthy endpoint got a retry")
	}
	for _, want := range []string{
		`snapgate_edge_errors_total{cause="connect_failed"} 1`,
		`snapgate_edge_errors_total{cause="no_endpoint"} 0`,
		`snapgate_edge_requests_total{route="busy",class="5xx"} 1`,
	} {
		hasSample(t, g.metrics, want)
	}
}

// A request retried after a retryable status leaves the client
// connection as open as any other answer: the failed attempt's verdict on
// the connection must not carry over to the retry. It did, and every
// retried answer went out with Connection: close.
func TestRetryKeepsClientConnection(t *testing.T) {
	busy := newScriptedBackend(t, func(*http.Request, int) string {
		return "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 5\r\n\r\nbusy\n"
	})
	ok := newTestBackend(t, "ok")
	st := oneRoute(busy.addr(), ok.addr())
	st.Routes[0].RetryAttempts, st.Routes[0].RetryStatuses = 1, []uint16{503}
	addr, _ := startProxy(t, st, nil)
	c := dialProxy(t, addr)
	for i := range 4 {
		r := c.do(get("x.example", "/"))
		if r.status != 200 || r.close {
			t.Fatalf("request %d: status %d close=%v, want 200 on a kept connection", i, r.status, r.close)
		}
	}
	if len(busy.requests()) == 0 {
		t.Fatal("no request went to the busy endpoint first: the retry was not exercised")
	}
}

// The keep-alive race (a pooled connection the backend closes as the
// request arrives) is redone once on a fresh connection per endpoint, not
// once per request: after a redo on the first endpoint and a retryable
// status from it, the same race on the retry's endpoint is redone too,
// rather than ejecting a healthy endpoint and answering 502.
func TestKeepAliveRaceOnRetryEndpoint(t *testing.T) {
	// Both backends answer the warm-up request on a connection and then
	// close it when the next request arrives; a fresh connection's first
	// request gets 503 from a and 200 from b.
	script := func(status string) func(r *http.Request, n int) string {
		return func(r *http.Request, n int) string {
			switch {
			case strings.HasSuffix(r.URL.Path, "/warm"):
				return "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nwarm"
			case n > 0:
				return "" // hang up without an answer
			}
			return "HTTP/1.1 " + status + "\r\nContent-Length: 2\r\n\r\nab"
		}
	}
	a, b := newScriptedBackend(t, script("503 Busy")), newScriptedBackend(t, script("200 OK"))
	st := fbs.State{Version: 1,
		Clusters: []fbs.Cluster{
			{Name: "a", Endpoints: []fbs.Endpoint{{Address: a.addr()}}},
			{Name: "b", Endpoints: []fbs.Endpoint{{Address: b.addr()}}},
			// a's weight makes it the first pick.
			{Name: "ab", Endpoints: []fbs.Endpoint{{Address: a.addr(), Weight: fbs.MaxWeight}, {Address: b.addr(), Weight: 1}}},
		},
		Routes: []fbs.Route{
			{ID: "a", Host: "*", Prefix: "/a", Cluster: "a"},
			{ID: "b", Host: "*", Prefix: "/b", Cluster: "b"},
			{ID: "ab", Host: "*", Prefix: "/ab", Cluster: "ab", RetryAttempts: 1, RetryStatuses: []uint16{503}},
		},
	}
	g := startGateway(t, st, upstream.Options{}, nil)
	c := dialProxy(t, g.addr)
	for _, path := range []string{"/a/warm", "/b/warm"} {
		if r := c.do(get("x.example", path)); r.status != 200 {
			t.Fatalf("%s: status %d", path, r.status)
		}
	}
	if r := c.do(get("x.example", "/ab/x")); r.status != 200 || r.body != "ab" {
		t.Fatalf("status %d %q, want b's 200", r.status, r.body)
	}
	if n, m := len(a.requests()), len(b.requests()); n != 3 || m != 3 {
		t.Fatalf("a saw %d requests and b %d, want 3 each (warm-up, the race, the redo)", n, m)
	}
	hasSample(t, g.metrics, `snapgate_edge_errors_total{cause="upstream_closed"} 0`)
}

// The redo after a keep-alive race dials: when every idle connection to
// an endpoint is stale (the backend restarted, a middlebox dropped them),
// taking the next idle one only meets the same hang-up, and the request
// answered 502 and ejected a healthy endpoint.
func TestStaleRedoDials(t *testing.T) {
	be := newScriptedBackend(t, func(r *http.Request, n int) string {
		if strings.HasSuffix(r.URL.Path, "/warm") {
			time.Sleep(200 * time.Millisecond) // both warm-ups overlap: two connections
			return "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nwarm"
		}
		if n > 0 {
			return "" // a reused connection: hang up
		}
		return "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
	})
	g := startGateway(t, oneRoute(be.addr()), upstream.Options{}, nil)
	var wg sync.WaitGroup
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := dialProxy(t, g.addr)
			if r := c.do(get("x.example", "/warm")); r.status != 200 {
				t.Errorf("warm-up: status %d", r.status)
			}
		}()
	}
	wg.Wait()
	c := dialProxy(t, g.addr)
	if r := c.do(get("x.example", "/x")); r.status != 200 || r.body != "ok" {
		t.Fatalf("status %d %q, want 200 from a new connection", r.status, r.body)
	}
	if ej := g.reg.Ejections(); len(ej) != 0 {
		t.Fatalf("a keep-alive race ejected the endpoint: %+v", ej)
	}
}

// A request in flight when its endpoint is ejected does not end the
// ejection by succeeding afterwards (TestOldAnswerDoesNotEndEjection end
// to end): a route's timeout ejects the endpoint while a slower route's
// request to it is still running.
func TestInFlightAnswerKeepsEjection(t *testing.T) {
	be := newTestBackend(t, "b")
	st := fbs.State{Version: 1,
		Clusters: []fbs.Cluster{{Name: "c", Endpoints: []fbs.Endpoint{{Address: be.addr()}}}},
		Routes: []fbs.Route{
			{ID: "long", Host: "long", Prefix: "/", Cluster: "c"},
			{ID: "short", Host: "short", Prefix: "/", Cluster: "c", TimeoutMs: 100},
		},
	}
	g := startGateway(t, st, upstream.Options{EjectBase: 5 * time.Second, EjectMax: 30 * time.Second}, nil)
	done := make(chan result, 1)
	go func() { done <- dialProxy(t, g.addr).do(get("long", "/slow")) }()
	time.Sleep(50 * time.Millisecond) // the long request is in flight
	if r := dialProxy(t, g.addr).do(get("short", "/slow")); r.status != 504 {
		t.Fatalf("short route: status %d, want 504", r.status)
	}
	if r := <-done; r.status != 200 {
		t.Fatalf("long route: status %d, want 200", r.status)
	}
	if ej := g.reg.Ejections(); len(ej) != 1 {
		t.Fatalf("ejections %+v after the in-flight answer, want the 5 s one still running", ej)
	}
}

// Each retry goes to an endpoint the request has not failed on yet: with
// consistent hashing the walk for a key went A → B → A, since only the
// last failed endpoint was avoided.
func TestRetriesVisitDistinctEndpoints(t *testing.T) {
	var bs []*scriptedBackend
	var eps []fbs.Endpoint
	for range 3 {
		b := newScriptedBackend(t, func(*http.Request, int) string {
			return "HTTP/1.1 503 Busy\r\nContent-Length: 4\r\n\r\nbusy"
		})
		bs = append(bs, b)
		eps = append(eps, fbs.Endpoint{Address: b.addr()})
	}
	st := fbs.State{Version: 1,
		Clusters: []fbs.Cluster{{Name: "c", Endpoints: eps, LB: fbs.LBHash, HashOn: fbs.HashOnHeader, HashOnName: "x-user"}},
		Routes:   []fbs.Route{{ID: "r", Host: "*", Prefix: "/", Cluster: "c", RetryAttempts: 3, RetryStatuses: []uint16{503}}},
	}
	g := startGateway(t, st, upstream.Options{}, nil)
	for _, user := range []string{"u1", "u2", "u3"} {
		r := dialProxy(t, g.addr).do("GET / HTTP/1.1\r\nHost: x\r\nX-User: " + user + "\r\n\r\n")
		if r.status != 503 {
			t.Fatalf("%s: status %d, want the last endpoint's 503", user, r.status)
		}
	}
	// Three requests, each on all three endpoints once; the fourth attempt
	// the route allows finds no endpoint left and is not made.
	for i, b := range bs {
		if n := len(b.requests()); n != 3 {
			t.Fatalf("endpoint %d got %d attempts, want 3 (one per request)", i, n)
		}
	}
}

// TestRouteIndexFollowsReplace: after a diverged edge's Replace puts a
// lower version in service, its requests still find their route counters
// by index. The index was kept for the higher version that left, so
// every request went down the lookup by route name instead.
func TestRouteIndexFollowsReplace(t *testing.T) {
	be := newTestBackend(t, "b")
	st := oneRoute(be.addr())
	st.Version = 5
	g := startGateway(t, st, upstream.Options{}, nil)
	c := dialProxy(t, g.addr)
	if r := c.do(get("x.example", "/")); r.status != 200 {
		t.Fatalf("status %d", r.status)
	}
	st.Version = 3
	tab := g.table(st)
	if _, err := g.tables.Replace(tab); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if r := c.do(get("x.example", "/")); r.status != 200 {
			t.Fatalf("status %d", r.status)
		}
	}
	if ri := g.srv.routeIdx.Load(); ri == nil || ri.tab != tab {
		t.Fatal("the route index is not the replacing table's")
	}
	hasSample(t, g.metrics, `snapgate_edge_requests_total{route="r",class="2xx"} 4`)
}

// TestTrafficAcrossSwaps sends requests from several keep-alive clients
// while snapshots swap under them (50 swaps, made by one client between
// its requests), changing the balancing policy, the endpoint set, weights
// and ctrl's health marks. Every request must be
// answered 200 by a backend, counted once, and leave no request in flight
// and no client connection counted. Run under -race too.
func TestTrafficAcrossSwaps(t *testing.T) {
	bs := []*testBackend{newTestBackend(t, "a"), newTestBackend(t, "b"), newTestBackend(t, "c"), newTestBackend(t, "d")}
	state := func(v uint64) fbs.State {
		st := lbState(v, uint8(v%4), bs[:3+v%2], uint16(1+v%3), 2, 1, 3)
		if st.Clusters[0].LB == fbs.LBHash {
			st.Clusters[0].HashOn, st.Clusters[0].HashOnName = fbs.HashOnHeader, "x-user"
		}
		if v%5 == 0 {
			st.Clusters[0].Endpoints[1].Unhealthy = true
		}
		return st
	}
	g := startGateway(t, state(1), upstream.Options{}, nil)
	const clients, each, swapEvery = 4, 150, 3
	var version atomic.Uint64
	version.Store(1)
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.Dial("tcp", g.addr)
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(20 * time.Second))
			br := bufio.NewReader(c)
			for k := range each {
				if i == 0 && k%swapEvery == 0 {
					// The first client swaps while the others' requests run.
					if err := g.trySwap(state(version.Add(1))); err != nil {
						errs <- err
						return
					}
				}
				req := fmt.Sprintf("GET /k HTTP/1.1\r\nHost: x.example\r\nX-User: u%d-%d\r\n\r\n", i, k%7)
				if _, err := io.WriteString(c, req); err != nil {
					errs <- err
					return
				}
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					errs <- err
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 || resp.Header.Get("X-Backend") == "" {
					errs <- fmt.Errorf("request %d: status %d from %q", k, resp.StatusCode, resp.Header.Get("X-Backend"))
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	var hits int64
	for _, b := range bs {
		hits += b.hits.Load()
		p := g.reg.Acquire(b.addr())
		waitUntil(t, b.name+"'s requests in flight to end", func() bool { return p.InFlight() == 0 })
		g.reg.Release(p)
	}
	if hits != clients*each {
		t.Fatalf("backends got %d requests, want %d", hits, clients*each)
	}
	hasSample(t, g.metrics, fmt.Sprintf(`snapgate_edge_requests_total{route="r",class="2xx"} %d`, clients*each))
	waitNoClientConnections(t, g.metrics)
}

// TestLeastRequestAvoidsBusyEndpoint: with two endpoints, power of two
// choices compares both, so while one holds a request every other
// request goes to the idle one; once it is done both serve again.
func TestLeastRequestAvoidsBusyEndpoint(t *testing.T) {
	release := make(chan struct{})
	var held atomic.Value // the name of the backend holding /hold
	backend := func(name string) *scriptedBackend {
		return newScriptedBackend(t, func(r *http.Request, _ int) string {
			if r.URL.Path == "/hold" {
				held.Store(name)
				<-release
			}
			return "HTTP/1.1 200 OK\r\nX-Backend: " + name + "\r\nContent-Length: 0\r\n\r\n"
		})
	}
	a, b := backend("a"), backend("b")
	free := sync.OnceFunc(func() { close(release) })
	t.Cleanup(free) // before the backends' cleanup, which waits for /hold
	st := oneRoute(a.addr(), b.addr())
	st.Clusters[0].LB = fbs.LBLeastRequest
	g := startGateway(t, st, upstream.Options{}, nil)
	slow := dialProxy(t, g.addr)
	slow.send(get("x.example", "/hold"))
	waitUntil(t, "the held request to reach a backend", func() bool { return held.Load() != nil })
	busy := held.Load().(string)
	c := dialProxy(t, g.addr)
	for range 10 {
		if r := c.do(get("x.example", "/")); r.status != 200 || r.header.Get("X-Backend") == busy {
			t.Fatalf("status %d from %q while %s holds a request", r.status, r.header.Get("X-Backend"), busy)
		}
	}
	free()
	if r := slow.read("GET"); r.status != 200 {
		t.Fatalf("held request: %d", r.status)
	}
	for range 40 { // a tie goes to either: all 40 elsewhere has odds 2^-40
		if c.do(get("x.example", "/")).header.Get("X-Backend") == busy {
			return
		}
	}
	t.Fatalf("%s got nothing after its request ended", busy)
}

// TestHashOnCookie: requests with the same cookie value stick to one
// backend, other values spread, and requests without the cookie (or with
// other cookies only) are balanced round robin.
func TestHashOnCookie(t *testing.T) {
	bs := []*testBackend{newTestBackend(t, "a"), newTestBackend(t, "b"), newTestBackend(t, "c")}
	st := lbState(1, fbs.LBHash, bs)
	st.Clusters[0].HashOn, st.Clusters[0].HashOnName = fbs.HashOnCookie, "sid"
	g := startGateway(t, st, upstream.Options{}, nil)
	c := dialProxy(t, g.addr)
	backend := func(fields string) string {
		t.Helper()
		r := c.do("GET / HTTP/1.1\r\nHost: x.example\r\n" + fields + "\r\n")
		if r.status != 200 {
			t.Fatalf("status %d", r.status)
		}
		return r.header.Get("X-Backend")
	}
	seen := map[string]bool{}
	for k := range 30 {
		sid := fmt.Sprintf("Cookie: theme=dark; sid=s%d\r\n", k)
		first := backend(sid)
		for range 3 {
			if got := backend(sid); got != first {
				t.Fatalf("sid s%d went to %s, then %s", k, first, got)
			}
		}
		seen[first] = true
	}
	if len(seen) != len(bs) {
		t.Fatalf("30 session ids went to %d backends", len(seen))
	}
	for _, fields := range []string{"", "Cookie: theme=dark\r\n"} {
		keyless := map[string]bool{}
		for range len(bs) {
			keyless[backend(fields)] = true
		}
		if len(keyless) != len(bs) {
			t.Fatalf("requests without the cookie (%q) went to %v, want round robin over all", fields, keyless)
		}
	}
}

// TestBrokenOffAnswerEjects: a backend that breaks off its answer (closes
// inside the head, or inside a Content-Length or chunked body, or goes
// quiet mid-body) failed the exchange as much as one that resets before
// any byte, and is ejected after its first such answer. These used to
// count as successes: the endpoint kept half the requests of a
// two-endpoint cluster, and its "success" ended any ejection it had.
func TestBrokenOffAnswerEjects(t *testing.T) {
	for _, tc := range []struct {
		name, raw string
		hangUp    bool
		cause     upstream.FailureKind
	}{
		{"before any byte", "", true, upstream.FailReset},
		{"inside the head", "HTTP/1.1 200 OK\r\nContent-Le", true, upstream.FailReset},
		{"inside a sized body", "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc", true, upstream.FailReset},
		{"inside a chunked body", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab", true, upstream.FailReset},
		{"quiet mid-body", "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc", false, upstream.FailTimeout},
	} {
		t.Run(tc.name, func(t *testing.T) {
			good := newTestBackend(t, "good")
			bad := newHangupBackend(t, func(*http.Request, int) (string, bool) { return tc.raw, tc.hangUp })
			st := fbs.State{Version: 1,
				Clusters: []fbs.Cluster{{Name: "c", Endpoints: []fbs.Endpoint{{Address: bad.addr()}, {Address: good.addr()}}}},
				Routes:   []fbs.Route{{ID: "r", Host: "*", Prefix: "/", Cluster: "c"}}}
			g := startGateway(t, st, upstream.Options{EjectBase: time.Minute}, func(c *Config) { c.UpstreamTimeout = 300 * time.Millisecond })
			failed := 0
			for range 10 {
				c := dialProxy(t, g.addr)
				c.send(get("x.example", "/"))
				resp, err := http.ReadResponse(c.br, &http.Request{Method: "GET"})
				if err == nil {
					var body []byte
					body, err = io.ReadAll(resp.Body)
					if err == nil && (resp.StatusCode != 200 || !strings.HasPrefix(string(body), "backend=good ")) {
						err = fmt.Errorf("%d %q", resp.StatusCode, body)
					}
				}
				if err != nil {
					failed++
				}
				c.c.Close()
			}
			if failed != 1 {
				t.Errorf("%d of 10 requests failed, want 1 (then the endpoint is ejected)", failed)
			}
			if ej, ok := ejectionOf(g.reg, bad.addr()); !ok || ej.Cause != tc.cause {
				t.Errorf("ejection of the breaking endpoint: %+v %v, want one for %v", ej, ok, tc.cause)
			}
		})
	}
}

// A response head too large for the read buffer is an answer the edge
// cannot parse (502 bad upstream response), not one broken off: it does
// not eject the endpoint. It did, as a reset, once broken-off answers
// counted as failures.
func TestOversizedHeadDoesNotEject(t *testing.T) {
	raw := "HTTP/1.1 200 OK\r\nX-Big: " + strings.Repeat("a", 70<<10) + "\r\n\r\n"
	bad := newHangupBackend(t, func(*http.Request, int) (string, bool) { return raw, false })
	good := newTestBackend(t, "good")
	st := fbs.State{Version: 1,
		Clusters: []fbs.Cluster{{Name: "c", Endpoints: []fbs.Endpoint{{Address: bad.addr()}, {Address: good.addr()}}}},
		Routes:   []fbs.Route{{ID: "r", Host: "*", Prefix: "/", Cluster: "c"}}}
	g := startGateway(t, st, upstream.Options{EjectBase: time.Minute}, nil)
	statuses := map[int]int{}
	for range 4 {
		c := dialProxy(t, g.addr)
		statuses[c.do(get("x.example", "/")).status]++
		c.c.Close()
	}
	if statuses[502] != 2 || statuses[200] != 2 {
		t.Errorf("statuses %v, want two 502 (the oversized heads) and two 200", statuses)
	}
	if ej, ok := ejectionOf(g.reg, bad.addr()); ok {
		t.Errorf("ejected for an oversized head: %+v", ej)
	}
}
