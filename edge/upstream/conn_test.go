package upstream

import (
	"bytes"
	"net"
	"sync"
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
	c, err := dial(ln.Addr().String(), time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := ln.Accept()
	if err != nil {
		c.Close()
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

// Stream hands out what netpoll had already read before reading the
// socket itself, so a body split across the switch arrives whole and in
// order.
func TestConnStreamKeepsBufferedBytes(t *testing.T) {
	c, srv := dialPair(t)
	body := make([]byte, 3*ReadBufferSize+17)
	for i := range body {
		body[i] = byte(i % 253)
	}
	first := body[:2*ReadBufferSize]
	if _, err := srv.Write(first); err != nil {
		t.Fatal(err)
	}
	// netpoll reads eagerly: wait until it holds more than Buf takes.
	var got []byte
	waitFor(t, "netpoll to buffer the first part", func() bool {
		return c.np.Reader().Len() >= len(first)
	})
	if _, err := c.Fill(time.Second); err != nil {
		t.Fatal(err)
	}
	got = append(got, c.Buf[c.Start:c.End]...)
	c.Consume(c.Buffered())
	if err := c.Stream(); err != nil {
		t.Fatal(err)
	}
	if !c.Streaming() || c.IsActive() {
		t.Fatalf("after Stream: streaming=%v active=%v", c.Streaming(), c.IsActive())
	}
	go func() {
		srv.Write(body[len(first):])
		srv.Close()
	}()
	for {
		_, err := c.Fill(5 * time.Second)
		got = append(got, c.Buf[c.Start:c.End]...)
		c.Consume(c.Buffered())
		if err != nil {
			break
		}
	}
	if !bytes.Equal(got, body) {
		t.Fatalf("got %d bytes, want %d, equal prefix %d", len(got), len(body), commonPrefix(got, body))
	}
}

func commonPrefix(a, b []byte) int {
	n := 0
	for n < len(a) && n < len(b) && a[n] == b[n] {
		n++
	}
	return n
}

// After Stream the backend is read only when the proxy asks: a sender
// that nobody reads stalls once the socket buffers fill, where netpoll
// would have taken everything into memory.
func TestConnStreamBackpressure(t *testing.T) {
	c, srv := dialPair(t)
	if err := c.Stream(); err != nil {
		t.Fatal(err)
	}
	srv.SetWriteDeadline(time.Now().Add(500 * time.Millisecond))
	n, err := srv.Write(make([]byte, 256<<20))
	if err == nil {
		t.Fatalf("256 MiB written to an unread connection (%d bytes)", n)
	}
	t.Logf("sender stalled after %d KiB: %v", n>>10, err)
}

// A streamed connection is closed by Put, not parked.
func TestPoolClosesStreamed(t *testing.T) {
	_, p := backendPool(t, Options{})
	c, _, err := p.Get(0)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Stream(); err != nil {
		t.Fatal(err)
	}
	p.Put(c)
	if p.Idle() != 0 || !c.closed.Load() || p.Open() != 0 {
		t.Fatalf("idle=%d closed=%v open=%d", p.Idle(), c.closed.Load(), p.Open())
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
	c, err := dial(ln.Addr().String(), time.Second, nil)
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

// Close may run while the exchange's goroutine moves the connection off
// netpoll: Shutdown cuts a detached exchange off that way. The two used to
// race on the connection's state; Close could find neither the netpoll
// connection nor the streaming one and dereference nil (the edge panicked
// while shutting down), or leave the socket open. Every connection must
// end closed, whichever comes first.
func TestCloseDuringStream(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	const n = 100
	closed := make(chan bool, n)
	go func() {
		for range n {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetReadDeadline(time.Now().Add(2 * time.Second))
				var b [1]byte
				_, err := c.Read(b[:])
				ne, ok := err.(net.Error)
				closed <- !(ok && ne.Timeout()) // EOF or reset: our side closed
			}()
		}
	}()
	for range n {
		u, err := dial(ln.Addr().String(), time.Second, nil)
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		wg.Add(2)
		go func() { defer wg.Done(); u.Stream() }()
		go func() { defer wg.Done(); u.Close() }()
		wg.Wait()
		u.Close()
	}
	for i := range n {
		if !<-closed {
			t.Fatalf("connection %d still open 2 s after Close raced with Stream", i)
		}
	}
}
