package upstream

import (
	"net"
	"testing"
	"time"
)

// dialPair returns a Conn to a real 127.0.0.1 listener and the server's
// side of it.
func dialPair(t *testing.T) (*Conn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	nc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	srv, err := ln.Accept()
	if err != nil {
		nc.Close()
		t.Fatal(err)
	}
	c, err := newConn(nc.(*net.TCPConn), nil)
	if err != nil {
		nc.Close()
		srv.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.Close()
		srv.Close()
	})
	return c, srv
}

// Each wait gets its own timeout: a shorter one replaces a longer deadline
// at once, a timed-out wait is not cut short, and timeout 0 clears it.
func TestConnDeadlineShorterAndCleared(t *testing.T) {
	c, srv := dialPair(t)
	if _, err := srv.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Fill(time.Minute); err != nil {
		t.Fatal(err)
	}
	c.Consume(c.Buffered())

	const short = 50 * time.Millisecond
	start := time.Now()
	_, err := c.Fill(short)
	took := time.Since(start)
	if !IsTimeout(err) {
		t.Fatalf("silent upstream: err %v, want a timeout", err)
	}
	if took < short {
		t.Fatalf("wait ended after %v, before its %v timeout", took, short)
	}
	if took > 30*time.Second {
		t.Fatalf("the minute-long deadline was kept: waited %v", took)
	}

	// Timeout 0: no deadline, so a late answer still arrives.
	done := make(chan struct{})
	go func() {
		defer close(done)
		time.Sleep(2 * short)
		srv.Write([]byte("late"))
	}()
	n, err := c.Fill(0)
	<-done
	if err != nil || n == 0 {
		t.Fatalf("fill without timeout: n=%d err=%v", n, err)
	}
}

// BenchmarkConnExchange is one request/response round trip on a pooled
// connection with the proxy's per-wait timeouts.
func BenchmarkConnExchange(b *testing.B) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	go func() {
		s, err := ln.Accept()
		if err != nil {
			return
		}
		defer s.Close()
		buf := make([]byte, 64)
		for {
			n, err := s.Read(buf)
			if err != nil {
				return
			}
			if _, err := s.Write(buf[:n]); err != nil {
				return
			}
		}
	}()
	nc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	c, err := newConn(nc.(*net.TCPConn), nil)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	msg := []byte("ping")
	b.ReportAllocs()
	for b.Loop() {
		if err := c.Write(msg, 30*time.Second); err != nil {
			b.Fatal(err)
		}
		for c.Buffered() < len(msg) {
			if _, err := c.Fill(30 * time.Second); err != nil {
				b.Fatal(err)
			}
		}
		c.Consume(len(msg))
	}
}
