package upstream

import (
	"bytes"
	"io"
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

// A connection is read only when the proxy asks: a sender that nobody
// reads stalls once the socket buffers fill. (On netpoll, its poller would
// have taken everything into memory.)
func TestConnBackpressure(t *testing.T) {
	c, srv := dialPair(t)
	srv.SetWriteDeadline(time.Now().Add(500 * time.Millisecond))
	n, err := srv.Write(make([]byte, 256<<20))
	if err == nil {
		t.Fatalf("256 MiB written to an unread connection (%d bytes)", n)
	}
	t.Logf("sender stalled after %d KiB: %v", n>>10, err)

	// What was sent arrives whole once read.
	srv.SetWriteDeadline(time.Time{})
	var got int
	for got < n {
		k, err := c.Fill(5 * time.Second)
		if err != nil {
			t.Fatalf("after %d of %d bytes: %v", got, n, err)
		}
		got += k
		c.Consume(c.Buffered())
	}
}

// A connection carries a body larger than its buffer and then the next
// exchange: the pool keeps it, and nothing of the first body is left.
func TestConnLargeBodyThenReuse(t *testing.T) {
	b, p := backendPool(t, Options{})
	c, _, err := p.Get(0)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "accept", func() bool { return b.accepted.Load() == 1 })
	b.mu.Lock()
	srv := b.conns[0]
	b.mu.Unlock()
	body := make([]byte, 5*ReadBufferSize+3)
	for i := range body {
		body[i] = byte(i % 251)
	}
	go srv.Write(append(body, "next"...))
	var got []byte
	for len(got) < len(body) {
		if c.Buffered() == 0 {
			if _, err := c.Fill(5 * time.Second); err != nil {
				t.Fatal(err)
			}
		}
		k := min(c.Buffered(), len(body)-len(got))
		got = append(got, c.Buf[c.Start:c.Start+k]...)
		c.Consume(k)
	}
	if !bytes.Equal(got, body) {
		t.Fatalf("body differs from byte %d", commonPrefix(got, body))
	}
	for c.Buffered() < 4 {
		if _, err := c.Fill(5 * time.Second); err != nil {
			t.Fatal(err)
		}
	}
	if string(c.Buf[c.Start:c.End]) != "next" {
		t.Fatalf("after the body: %q", c.Buf[c.Start:c.End])
	}
	c.Consume(4)
	p.Put(c)
	again, reused, err := p.Get(0)
	if err != nil || !reused || again != c {
		t.Fatalf("Get after a large body: reused=%v same=%v err=%v", reused, again == c, err)
	}
	p.Put(again)
}

func commonPrefix(a, b []byte) int {
	n := 0
	for n < len(a) && n < len(b) && a[n] == b[n] {
		n++
	}
	return n
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

// Close from another goroutine ends a read that waits without a
// deadline (Shutdown cuts a detached exchange off that way) and closes the
// socket.
func TestCloseEndsWaitingRead(t *testing.T) {
	c, srv := dialPair(t)
	done := make(chan error, 1)
	go func() {
		_, err := c.Fill(0)
		done <- err
	}()
	time.Sleep(20 * time.Millisecond) // let Fill park on the poller
	c.Close()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("Fill returned no error after Close")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Fill still waiting 5 s after Close")
	}
	srv.SetReadDeadline(time.Now().Add(5 * time.Second))
	var b [1]byte
	if _, err := srv.Read(b[:]); err == nil {
		t.Fatal("the backend read a byte; want EOF after Close")
	} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatal("the socket stayed open after Close")
	}
}

// Send writes the request and reads the answer's first bytes: whole when
// the socket takes the request at once, and when it does not (a request
// larger than the socket buffers, to a backend that reads it slowly), in
// which case Write finishes it before the wait. A backend that never
// answers is a timeout after the request went out; one that hung up is
// an error, not a wait. Each case runs after Quiet, as Pool.Get calls it
// on a reused connection, so that Send takes its one-read path.
func TestConnSend(t *testing.T) {
	t.Run("answer", func(t *testing.T) {
		c, srv := dialPair(t)
		go func() {
			b := make([]byte, 4)
			if _, err := io.ReadFull(srv, b); err == nil {
				srv.Write(append([]byte("re:"), b...))
			}
		}()
		if !c.Quiet() {
			t.Fatal("not Quiet")
		}
		wrote, n, err := c.Send([]byte("ping"), time.Second, 5*time.Second)
		for err == nil && c.Buffered() < 7 {
			_, err = c.Fill(5 * time.Second)
		}
		if !wrote || n == 0 || err != nil || string(c.Buf[c.Start:c.End]) != "re:ping" {
			t.Fatalf("wrote=%v n=%d err=%v got %q", wrote, n, err, c.Buf[c.Start:c.End])
		}
	})
	t.Run("request larger than the socket takes", func(t *testing.T) {
		c, srv := dialPair(t)
		req := make([]byte, 32<<20)
		for i := range req {
			req[i] = byte(i % 249)
		}
		sum := make(chan bool, 1)
		go func() {
			got := make([]byte, len(req))
			time.Sleep(50 * time.Millisecond) // the socket fills first
			_, err := io.ReadFull(srv, got)
			ok := err == nil && bytes.Equal(got, req)
			sum <- ok
			if ok {
				srv.Write([]byte("done"))
			}
		}()
		if !c.Quiet() {
			t.Fatal("not Quiet")
		}
		wrote, _, err := c.Send(req, 10*time.Second, 10*time.Second)
		if !wrote || err != nil {
			t.Fatalf("wrote=%v err=%v", wrote, err)
		}
		if !<-sum {
			t.Fatal("the backend did not receive the request intact")
		}
		for c.Buffered() < 4 {
			if _, err := c.Fill(5 * time.Second); err != nil {
				t.Fatal(err)
			}
		}
		if string(c.Buf[c.Start:c.End]) != "done" {
			t.Fatalf("answer %q", c.Buf[c.Start:c.End])
		}
	})
	t.Run("no answer", func(t *testing.T) {
		c, _ := dialPair(t)
		if !c.Quiet() {
			t.Fatal("not Quiet")
		}
		start := time.Now()
		wrote, _, err := c.Send([]byte("ping"), time.Second, 50*time.Millisecond)
		if !wrote || !IsTimeout(err) || time.Since(start) < 50*time.Millisecond {
			t.Fatalf("wrote=%v err=%v after %v; want the request sent and a timeout after 50ms", wrote, err, time.Since(start))
		}
	})
	t.Run("hung up", func(t *testing.T) {
		c, srv := dialPair(t)
		c.Quiet()
		srv.Close()
		done := make(chan error, 1)
		go func() {
			_, _, err := c.Send([]byte("ping"), time.Second, 5*time.Second)
			done <- err
		}()
		select {
		case err := <-done:
			if err == nil || IsTimeout(err) {
				t.Fatalf("err %v; want the hang-up", err)
			}
		case <-time.After(3 * time.Second):
			t.Fatal("Send to a hung-up backend still waiting after 3 s")
		}
	})
	// A backend that speaks first: its bytes are in the socket before
	// Send, and the poller may have reported them already. Without
	// Quiet's word Send reads first, and they are the answer, not a
	// timeout (found by review: they used to be missed).
	t.Run("backend spoke first", func(t *testing.T) {
		c, srv := dialPair(t)
		if _, err := srv.Write([]byte("early")); err != nil {
			t.Fatal(err)
		}
		go io.Copy(io.Discard, srv)
		time.Sleep(20 * time.Millisecond) // queued, and seen by the poller
		wrote, n, err := c.Send([]byte("ping"), time.Second, 2*time.Second)
		if !wrote || n == 0 || err != nil || string(c.Buf[c.Start:c.End]) != "early" {
			t.Fatalf("wrote=%v n=%d err=%v got %q; want the bytes that were waiting", wrote, n, err, c.Buf[c.Start:c.End])
		}
	})
}
