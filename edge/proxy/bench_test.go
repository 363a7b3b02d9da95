package proxy

import (
	"bufio"
	"bytes"
	"context"
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
	be := newFastBackend(tb)
	b, err := fbs.Build(fbs.State{Version: 1, Clusters: []fbs.Cluster{{Name: "c", Endpoints: []fbs.Endpoint{{Address: be.ln.Addr().String()}}}},
		Routes: []fbs.Route{{ID: "r", Host: "bench.example", Prefix: "/", Cluster: "c"}}})
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
	srv, err := New(Config{Addr: "127.0.0.1:0", Tables: &h})
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
	if _, err := conn.Write(benchRequest); err != nil {
		tb.Fatal(err)
	}
	var counter countingReader
	counter.r = conn
	resp, err := http.ReadResponse(bufio.NewReaderSize(&counter, 16), nil)
	if err != nil {
		tb.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || len(body) != 64 {
		tb.Fatalf("bench response %d %q", resp.StatusCode, body)
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

func roundTrip(tb testing.TB, conn net.Conn, resp []byte) {
	if _, err := conn.Write(benchRequest); err != nil {
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
