package loadtest

import (
	"context"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// benchWorker returns a connected worker and its request, against a server
// that reads exactly one request and writes one fixed response per round
// trip, allocating nothing itself, so that allocation counts and benchmark
// numbers are the client's own.
func benchWorker(t testing.TB) (*worker, []byte) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r, err := newRunner(Config{Target: ln.Addr().String(), Schedule: Schedule{Closed: true}, Duration: time.Hour, Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	req := r.reqs[0]
	var wg sync.WaitGroup
	var conn net.Conn
	wg.Add(1)
	go func() {
		defer wg.Done()
		c, err := ln.Accept()
		if err != nil {
			return
		}
		conn = c
		buf := make([]byte, len(req))
		resp := []byte("HTTP/1.1 200 OK\r\nServer: bench\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\nhello, world\n")
		for {
			if _, err := io.ReadFull(c, buf); err != nil {
				return
			}
			if _, err := c.Write(resp); err != nil {
				return
			}
		}
	}()
	w := r.workers[0]
	if status, cause := w.do(context.Background(), req); status != 200 || cause >= 0 {
		t.Fatalf("first request: status %d cause %d", status, cause)
	}
	t.Cleanup(func() {
		w.drop()
		ln.Close()
		wg.Wait()
		if conn != nil {
			conn.Close()
		}
	})
	return w, req
}

// BenchmarkRoundTrip is the client's cost per request over loopback TCP,
// the server's included: an upper bound on what the generator adds.
func BenchmarkRoundTrip(b *testing.B) {
	w, req := benchWorker(b)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if status, cause := w.do(ctx, req); status != 200 || cause >= 0 {
			b.Fatalf("status %d cause %d", status, cause)
		}
	}
}

// BenchmarkRecord is the per-response bookkeeping: counters and one HDR
// histogram record.
func BenchmarkRecord(b *testing.B) {
	r, err := newRunner(Config{Target: "127.0.0.1:1", Schedule: Schedule{Closed: true}, Duration: time.Minute})
	if err != nil {
		b.Fatal(err)
	}
	w := r.workers[0]
	now := time.Now()
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		w.account(200, -1, time.Duration(i%100000)*time.Microsecond, now)
	}
}
