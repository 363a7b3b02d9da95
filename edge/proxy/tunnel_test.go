package proxy

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/cloudwego/netpoll"

	"github.com/snapgate/snapgate/edge/upstream"
)

// Tunnels against shutdown, a client that takes no bytes, and idleness.

// shutdownCutsOff shuts g down with a 200 ms context while a tunnel or an
// upload is open: it must return about then, not after the exchange's own
// 5 s timeouts.
func shutdownCutsOff(t *testing.T, g *gateway) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := g.srv.Shutdown(ctx)
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("Shutdown with a 200ms context took %v (err %v): the exchange was not cut off", d.Round(time.Millisecond), err)
	}
}

// Shutdown(ctx) cuts a tunnel off once ctx ends. Closing only the client
// side did not: a tunnel whose client already sent its FIN has only the
// upstream-to-client direction left, blocked reading the upstream.
func TestShutdownCutsOffHalfClosedTunnel(t *testing.T) {
	release := make(chan struct{})
	addr := upgradedBackend(t, func(c *net.TCPConn, br *bufio.Reader) {
		io.Copy(io.Discard, br) // until the client's FIN, passed on
		<-release               // then silent, with the connection open
	})
	defer close(release)
	g := startGateway(t, oneRoute(addr), upstream.Options{}, func(c *Config) { c.IdleTimeout = 5 * time.Second })
	c, _ := openTunnel(t, g.addr)
	defer c.Close()
	io.WriteString(c, "ping")
	c.(*net.TCPConn).CloseWrite()
	time.Sleep(100 * time.Millisecond) // the FIN goes through to the backend

	shutdownCutsOff(t, g)
}

// The same with both directions blocked on the upstream: the backend
// reads nothing (a write upstream waits for WriteTimeout) and sends
// nothing (a read waits for IdleTimeout).
func TestShutdownCutsOffTunnelStuckOnUpstream(t *testing.T) {
	release := make(chan struct{})
	addr := upgradedBackend(t, func(c *net.TCPConn, br *bufio.Reader) { <-release })
	defer close(release)
	g := startGateway(t, oneRoute(addr), upstream.Options{}, func(c *Config) {
		c.IdleTimeout, c.WriteTimeout = 5*time.Second, 5*time.Second
	})
	c, _ := openTunnel(t, g.addr)
	defer c.Close()
	chunk := make([]byte, 1<<20)
	for {
		c.SetWriteDeadline(time.Now().Add(300 * time.Millisecond))
		if _, err := c.Write(chunk); err != nil {
			break // held back: the edge is blocked writing upstream
		}
	}
	shutdownCutsOff(t, g)
}

// A detached upload is cut off too: its exchange waits on the upstream
// (here for a response head the backend never sends), which closing the
// client connection alone did not end; Shutdown waited UpstreamTimeout.
func TestShutdownCutsOffUploadWaitingOnUpstream(t *testing.T) {
	gotBody, release := make(chan struct{}), make(chan struct{})
	addr := oneRequestBackend(t, func(c *net.TCPConn, br *bufio.Reader) {
		io.CopyN(io.Discard, br, 200<<10)
		close(gotBody)
		<-release // no answer
	})
	defer close(release)
	g := startGateway(t, oneRoute(addr), upstream.Options{}, func(c *Config) { c.UpstreamTimeout = 5 * time.Second })
	c := rawConn(t, g.addr)
	defer c.Close()
	io.WriteString(c, "POST /u HTTP/1.1\r\nHost: x\r\nContent-Length: "+strconv.Itoa(200<<10)+"\r\n\r\n")
	time.Sleep(50 * time.Millisecond) // the head alone: the body streams
	io.WriteString(c, strings.Repeat("x", 200<<10))
	select {
	case <-gotBody:
	case <-time.After(5 * time.Second):
		t.Fatal("the body did not reach the backend")
	}
	shutdownCutsOff(t, g)
}

// A 101 that arrives while the edge shuts down is not relayed: no tunnel
// can start, and a client that got the switch would see its connection
// dropped at once. It gets a 503 instead.
func TestNoSwitchDuringShutdown(t *testing.T) {
	requested, answer := make(chan struct{}), make(chan struct{})
	backend := oneRequestBackend(t, func(c *net.TCPConn, br *bufio.Reader) {
		close(requested)
		select {
		case <-answer:
		case <-time.After(5 * time.Second):
			return
		}
		io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
		io.Copy(c, br) // echo
	})
	g := startGateway(t, oneRoute(backend), upstream.Options{}, nil)
	c := rawConn(t, g.addr)
	io.WriteString(c, "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
	<-requested
	shut := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		shut <- g.srv.Shutdown(ctx)
	}()
	waitUntil(t, "shutdown to start", func() bool {
		g.srv.mu.Lock()
		defer g.srv.mu.Unlock()
		return g.srv.shutdown
	})
	close(answer)
	r, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(r.Body)
	if r.StatusCode != 503 || string(body) != "shutting down\n" {
		t.Fatalf("a switch answered during shutdown: %d %q, want 503 shutting down (no 101 the edge cannot tunnel)", r.StatusCode, body)
	}
	if err := <-shut; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	hasSample(t, g.metrics, `snapgate_edge_errors_total{cause="shutting_down"} 1`)
}

// A 101 head whose flush to the client fails (write timeout: a client not
// reading) is left in netpoll's output buffer, which the detach then
// frees; the tunnel starts anyway and the client gets tunnel bytes with no
// (or a truncated) 101 before them. The old tunnel returned on a failed
// Flush. Backend: many 103 heads fill the client's buffers, then a 101,
// then an echo.
func TestNoTunnelAfterUnflushed101(t *testing.T) {
	backend := oneRequestBackend(t, func(c *net.TCPConn, br *bufio.Reader) {
		hint := "HTTP/1.1 103 Early Hints\r\nLink: " + strings.Repeat("x", 3000) + "\r\n\r\n"
		bw := bufio.NewWriter(c)
		for range 40 {
			bw.WriteString(hint)
		}
		bw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
		bw.Flush()
		io.Copy(c, br) // echo
	})
	g := startGateway(t, oneRoute(backend), upstream.Options{}, func(c *Config) {
		c.WriteTimeout, c.IdleTimeout = 20*time.Millisecond, 10*time.Second
	})
	d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		rc.Control(func(fd uintptr) { syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
		return nil
	}}
	c, err := d.Dial("tcp", g.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	limitPeerSndbuf(t, c, 8192)
	io.WriteString(c, "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
	// Read nothing until the edge has started the tunnel or given up on
	// the client (its connection closed).
	tunnel := false
	waitUntil(t, "a tunnel, or the client connection closed", func() bool {
		g.srv.mu.Lock()
		tunnel = len(g.srv.detachedConns) > 0
		g.srv.mu.Unlock()
		return tunnel || strings.Contains("\n"+scrape(g.metrics), "\nsnapgate_edge_client_connections 0\n")
	})
	var got bytes.Buffer
	c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	io.Copy(&got, c) // drain what the client's buffers held
	io.WriteString(c, "ping")
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	io.Copy(&got, c)
	s := got.String()
	t.Logf("tunnel %v; client got %d bytes: %d 103s, %d 101s", tunnel, len(s), strings.Count(s, "HTTP/1.1 103 "), strings.Count(s, "HTTP/1.1 101 "))
	i := strings.Index(s, "ping")
	if i < 0 {
		if tunnel && strings.Contains(s, "HTTP/1.1 101 ") {
			t.Fatal("the tunnel started after a whole 101, but carried no bytes")
		}
		return // no switch reached the client, and no tunnel bytes either
	}
	if !strings.Contains(s[:i], "HTTP/1.1 101 ") {
		tail := s[max(0, i-200):min(len(s), i+4)]
		t.Fatalf("tunnel bytes reached the client without the 101 head before them (%d bytes of 103s first); the bytes before the echo end %q", i, tail)
	}
}

// A tunnel closes once nothing moved either way for IdleTimeout, counted
// from the last byte: a read that began before it waits only what is left
// (it waited a whole new IdleTimeout, up to twice the timeout in all).
func TestTunnelIdleCountsFromLastByte(t *testing.T) {
	release := make(chan struct{})
	addr := upgradedBackend(t, func(c *net.TCPConn, br *bufio.Reader) {
		io.Copy(io.Discard, br) // takes the client's bytes, sends nothing
		<-release
	})
	defer close(release)
	const idle = time.Second
	g := startGateway(t, oneRoute(addr), upstream.Options{}, func(c *Config) { c.IdleTimeout = idle })
	c, br := openTunnel(t, g.addr)
	time.Sleep(100 * time.Millisecond)
	io.WriteString(c, "ping") // the last byte to move
	last := time.Now()
	c.(*net.TCPConn).CloseWrite()
	io.ReadAll(br) // until the edge closes the idle tunnel
	if d := time.Since(last); d > idle+idle/2 {
		t.Fatalf("tunnel closed %v after the last byte moved, IdleTimeout %v", d.Round(time.Millisecond), idle)
	}
}

// limitPeerSndbuf sets SO_SNDBUF on the edge's end of c (this process),
// which stops its autotuning.
func limitPeerSndbuf(t *testing.T, c net.Conn, n int) {
	for end := time.Now().Add(2 * time.Second); time.Now().Before(end); time.Sleep(time.Millisecond) {
		if trySndbuf(c, n) {
			return
		}
	}
	t.Fatal("edge's socket not found")
}

func trySndbuf(c net.Conn, n int) bool {
	want := c.LocalAddr().(*net.TCPAddr)
	ents, _ := os.ReadDir("/proc/self/fd")
	for _, e := range ents {
		fd, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		sa, err := syscall.Getpeername(fd)
		if err != nil {
			continue
		}
		in4, ok := sa.(*syscall.SockaddrInet4)
		if !ok || in4.Port != want.Port {
			continue
		}
		if la, err := syscall.Getsockname(fd); err == nil {
			if l4, ok := la.(*syscall.SockaddrInet4); ok && l4.Port == want.Port {
				continue // the client's own end
			}
		}
		return syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_SNDBUF, n) == nil
	}
	return false
}

// netpoll stores an accepted connection in its own map only after
// registering it, so one served and closed in between (a request refused
// at once) stays there, never idle, and netpoll's Shutdown waited for it
// until its context ended (seen in CI as "shutdown: context deadline
// exceeded"). Shutdown also ends its wait once every connection the server
// set up has closed. The stale entry is planted here: a closed netpoll
// connection in netpoll's map.
func TestShutdownIgnoresStaleNetpollEntry(t *testing.T) {
	g := startGateway(t, oneRoute(deadAddr(t)), upstream.Options{}, nil)
	c := rawConn(t, g.addr) // Serve has handed the loop its listener once this connects
	c.Close()
	stale, err := netpoll.DialConnection("tcp", g.addr, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	stale.Close() // closed outside a handler: netpoll never counts it idle again
	conns := netpollServerConns(t, g.srv.loop)
	conns.Store(-1, stale)
	waitUntil(t, "the test connections to close", func() bool {
		g.srv.mu.Lock()
		defer g.srv.mu.Unlock()
		return len(g.srv.conns) == 0
	})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	start := time.Now()
	if err := g.srv.Shutdown(ctx); err != nil || time.Since(start) > 2*time.Second {
		t.Fatalf("Shutdown: %v after %v; want nil at once", err, time.Since(start).Round(time.Millisecond))
	}
}

// netpollServerConns is netpoll's map of a serving event loop's
// connections (eventLoop.svr.connections), found by reflection.
func netpollServerConns(t *testing.T, loop netpoll.EventLoop) *sync.Map {
	t.Helper()
	v := reflect.ValueOf(loop)
	if v.Kind() != reflect.Pointer {
		t.Skipf("netpoll event loop %T is not a pointer", loop)
	}
	svr := v.Elem().FieldByName("svr")
	if !svr.IsValid() || svr.Kind() != reflect.Pointer || svr.IsNil() {
		t.Skip("netpoll event loop has no server field")
	}
	f := reflect.NewAt(svr.Type().Elem(), svr.UnsafePointer()).Elem().FieldByName("connections")
	if !f.IsValid() || f.Type() != reflect.TypeOf(sync.Map{}) {
		t.Skip("netpoll server has no connections map")
	}
	return (*sync.Map)(unsafe.Pointer(f.UnsafeAddr()))
}
