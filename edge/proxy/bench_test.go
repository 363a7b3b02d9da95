package proxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/snapgate/snapgate/edge/routing"
	"github.com/snapgate/snapgate/edge/upstream"
	"github.com/snapgate/snapgate/fbs"
)

// fastBackend answers every request head with a fixed 64-byte response,
// with no per-request allocation, so what a benchmark measures is the proxy.
type fastBackend struct {
	ln net.Listener
	wg sync.WaitGroup
}

var fastResponse = []byte("HTTP/1.1 200 OK\r\nContent-Length: 64\r\n\r\n" + string(bytes.Repeat([]byte("x"), 64)))

func newFastBackend(tb testing.TB) *fastBackend {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	b := &fastBackend{ln: ln}
	var mu sync.Mutex
	var conns []net.Conn
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			b.wg.Add(1)
			go func() {
				defer b.wg.Done()
				serveFixed(c)
			}()
		}
	}()
	tb.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		b.wg.Wait()
	})
	return b
}

// serveFixed counts request heads (requests carry no body) and answers each.
func serveFixed(c net.Conn) {
	buf := make([]byte, 64<<10)
	state := 0 // progress through "\r\n\r\n", kept across reads
	for {
		n, err := c.Read(buf)
		if err != nil {
			return
		}
		for _, ch := range buf[:n] {
			switch {
			case ch == "\r\n\r\n"[state]:
				state++
			case ch == '\r':
				state = 1
			default:
				state = 0
			}
			if state == 4 {
				state = 0
				if _, err := c.Write(fastResponse); err != nil {
					return
				}
			}
		}
	}
}

// benchProxy starts a proxy in front of a fastBackend and returns a
// keep-alive client connection and the exact length of one response.
func benchProxy(tb testing.TB) (conn net.Conn, respLen int) {
	return benchProxyRoute(tb, fbs.Route{}, nil, 200)
}

// benchProxyRoute is benchProxy with the route's staleness settings taken
// from stale, the freshness source fresh, and the status every response
// is expected to have.
func benchProxyRoute(tb testing.TB, stale fbs.Route, fresh FreshnessFunc, status int) (conn net.Conn, respLen int) {
	return benchProxyWith(tb, benchSetup{route: stale, fresh: fresh, status: status, req: benchRequest})
}

// benchSetup is one benchmarked route: its staleness settings and policy
// (route.Policy names one of auth's), the freshness source, the request
// sent and the status every response is expected to have.
type benchSetup struct {
	route  fbs.Route
	auth   fbs.Auth
	fresh  FreshnessFunc
	req    []byte
	status int
	extra  []fbs.Route // more routes to cluster "c", after route
}

func benchProxyWith(tb testing.TB, bs benchSetup) (conn net.Conn, respLen int) {
	be := newFastBackend(tb)
	fresh, status := bs.fresh, bs.status
	stale := bs.route
	b, err := fbs.Build(fbs.State{Version: 1, Clusters: []fbs.Cluster{{Name: "c", Endpoints: []fbs.Endpoint{{Address: be.ln.Addr().String()}}}},
		Auth: bs.auth,
		Routes: append([]fbs.Route{{ID: "r", Host: "bench.example", Prefix: "/", Cluster: "c", Policy: stale.Policy,
			MaxStalenessMs: stale.MaxStalenessMs, OnStaleReject: stale.OnStaleReject, StaleHeader: stale.StaleHeader}}, bs.extra...)})
	if err != nil {
		tb.Fatal(err)
	}
	snap, err := fbs.Open(b)
	if err != nil {
		tb.Fatal(err)
	}
	reg := upstream.NewRegistry(upstream.Options{})
	var h routing.Holder
	if _, err := h.Swap(routing.NewTable(snap, nil, reg)); err != nil {
		tb.Fatal(err)
	}
	srv, err := New(Config{Addr: "127.0.0.1:0", Tables: &h, Freshness: fresh})
	if err != nil {
		tb.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve() }()
	conn, err = net.Dial("tcp", srv.Addr().String())
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		<-done
		h.Close()
		reg.Close()
	})
	conn.SetDeadline(time.Now().Add(time.Minute))
	// Learn the response length once with a real HTTP parser.
	if _, err := conn.Write(bs.req); err != nil {
		tb.Fatal(err)
	}
	var counter countingReader
	counter.r = conn
	resp, err := http.ReadResponse(bufio.NewReaderSize(&counter, 16), nil)
	if err != nil {
		tb.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != status || status == 200 && len(body) != 64 {
		tb.Fatalf("bench response %d %q, want status %d", resp.StatusCode, body, status)
	}
	return conn, counter.n
}

type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	// Small reads so that bufio does not read past the first response.
	n, err := c.r.Read(p[:1])
	c.n += n
	return n, err
}

var benchRequest = []byte("GET /v1/items?limit=10 HTTP/1.1\r\nHost: bench.example\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n")

func roundTrip(tb testing.TB, conn net.Conn, resp []byte) { roundTripReq(tb, conn, benchRequest, resp) }

func roundTripReq(tb testing.TB, conn net.Conn, req, resp []byte) {
	if _, err := conn.Write(req); err != nil {
		tb.Fatal(err)
	}
	if _, err := io.ReadFull(conn, resp); err != nil {
		tb.Fatal(err)
	}
}

// BenchmarkProxyKeepAlive measures one client connection → proxy → backend,
// keep-alive on both sides, 64-byte responses. allocs/op counts the whole
// process: client, backend, netpoll and us.
func BenchmarkProxyKeepAlive(b *testing.B) {
	conn, n := benchProxy(b)
	resp := make([]byte, n)
	b.ReportAllocs()
	for b.Loop() {
		roundTrip(b, conn, resp)
	}
}

// BenchmarkProxyStalenessHeader is BenchmarkProxyKeepAlive on a route
// with a staleness bound and header: a clock read, a freshness load and
// a formatted header per request.
func BenchmarkProxyStalenessHeader(b *testing.B) {
	conn, n := benchProxyRoute(b, fbs.Route{MaxStalenessMs: 1 << 31, StaleHeader: true}, confirmedLongAgo, 200)
	resp := make([]byte, n)
	b.ReportAllocs()
	for b.Loop() {
		roundTrip(b, conn, resp)
	}
}

// BenchmarkProxyStaleReject measures the 503 "snapshot stale" answer.
func BenchmarkProxyStaleReject(b *testing.B) {
	conn, n := benchProxyRoute(b, fbs.Route{MaxStalenessMs: 2000, OnStaleReject: true}, neverConfirmedSource, 503)
	resp := make([]byte, n)
	b.ReportAllocs()
	for b.Loop() {
		roundTrip(b, conn, resp)
	}
}

// confirmedAt is a fixed 1000 s before the process started, so the
// staleness header keeps seven digits for hours and every response has
// the same length.
var confirmedAt = time.Now().Add(-1000 * time.Second)

func confirmedLongAgo() (uint64, time.Time) { return 1, confirmedAt }

func neverConfirmedSource() (uint64, time.Time) { return 1, time.Time{} }

// BenchmarkDirectBackend is the same client and backend without the proxy:
// the baseline the proxy's cost is read against.
func BenchmarkDirectBackend(b *testing.B) {
	be := newFastBackend(b)
	conn, err := net.Dial("tcp", be.ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	resp := make([]byte, len(fastResponse))
	b.ReportAllocs()
	for b.Loop() {
		roundTrip(b, conn, resp)
	}
}

// Policy benchmarks: the route requires an API key, or a JWT (RS256, so
// the repeat requests measured hit the verified-token cache), and takes a
// token per consumer from a limit too high to refuse.
var (
	benchAPIKeyRequest = []byte("GET /v1/items?limit=10 HTTP/1.1\r\nHost: bench.example\r\nUser-Agent: bench\r\nX-Api-Key: key-bench\r\nAccept: */*\r\n\r\n")
	benchAuth          = func(tb testing.TB) fbs.Auth {
		return fbs.Auth{
			Consumers: []fbs.Consumer{{ID: "bench", APIKeyHashes: [][32]byte{sha256.Sum256([]byte("key-bench"))},
				JWT: []fbs.JWTLink{{Issuer: "idp"}}}},
			Issuers: []fbs.Issuer{{ID: "idp", Iss: "https://idp.example", KeySet: rsaKeySet(tb)}},
			Policies: []fbs.Policy{{ID: "p", Methods: fbs.AuthAPIKey | fbs.AuthJWT, Required: true,
				RateLimits: []fbs.RateLimit{{Key: fbs.LimitByConsumer, Rate: 1_000_000, Burst: 1 << 20}}}},
		}
	}
)

func benchAPIKeySetup(tb testing.TB) benchSetup {
	return benchSetup{route: fbs.Route{Policy: "p"}, auth: benchAuth(tb), req: benchAPIKeyRequest, status: 200}
}

func benchJWTSetup(tb testing.TB) benchSetup {
	tok := jwt(tb, "RS256", fmt.Sprintf(`{"iss":"https://idp.example","sub":"b","exp":%d}`, time.Now().Add(time.Hour).Unix()), nil)
	req := []byte("GET /v1/items?limit=10 HTTP/1.1\r\nHost: bench.example\r\nUser-Agent: bench\r\nAuthorization: Bearer " + tok + "\r\nAccept: */*\r\n\r\n")
	return benchSetup{route: fbs.Route{Policy: "p"}, auth: benchAuth(tb), req: req, status: 200}
}

// BenchmarkProxyAPIKey is BenchmarkProxyKeepAlive on a route whose policy
// checks an API key and a per-consumer rate limit.
func BenchmarkProxyAPIKey(b *testing.B) {
	bs := benchAPIKeySetup(b)
	conn, n := benchProxyWith(b, bs)
	resp := make([]byte, n)
	b.ReportAllocs()
	for b.Loop() {
		roundTripReq(b, conn, bs.req, resp)
	}
}

// BenchmarkProxyJWTCached is the same with a repeated RS256 bearer token.
func BenchmarkProxyJWTCached(b *testing.B) {
	bs := benchJWTSetup(b)
	conn, n := benchProxyWith(b, bs)
	resp := make([]byte, n)
	b.ReportAllocs()
	for b.Loop() {
		roundTripReq(b, conn, bs.req, resp)
	}
}
