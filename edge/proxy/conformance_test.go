package proxy

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/snapgate/snapgate/edge/upstream"
	"github.com/snapgate/snapgate/fbs"
)

// scriptedBackend is a raw TCP backend: for the n-th request (from 0) on a
// connection, answer returns the raw response bytes to write, or "" to
// close the connection without answering. Every request head it received
// is recorded, with its body read per Content-Length or chunked framing.
type scriptedBackend struct {
	ln   net.Listener
	mu   sync.Mutex
	seen []*http.Request
}

func newScriptedBackend(t *testing.T, answer func(r *http.Request, n int) string) *scriptedBackend {
	t.Helper()
	return newHangupBackend(t, func(r *http.Request, n int) (string, bool) {
		raw := answer(r, n)
		return raw, raw == ""
	})
}

// newHangupBackend is newScriptedBackend whose answer also says whether to
// close the connection right after writing its bytes.
func newHangupBackend(t *testing.T, answer func(r *http.Request, n int) (raw string, hangUp bool)) *scriptedBackend {
	t.Helper()
	b := &scriptedBackend{}
	b.ln = serveConns(t, func(c net.Conn, _ int) {
		eachRequest(c, func(r *http.Request, n int) bool {
			b.mu.Lock()
			b.seen = append(b.seen, r)
			b.mu.Unlock()
			raw, hangUp := answer(r, n)
			_, err := io.WriteString(c, raw)
			return err == nil && !hangUp
		})
	})
	return b
}

// eachRequest reads requests from c (their bodies read and dropped) and
// calls handle with each and its number on c, until c ends or handle
// returns false.
func eachRequest(c net.Conn, handle func(r *http.Request, n int) bool) {
	br := bufio.NewReader(c)
	for n := 0; ; n++ {
		r, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		io.Copy(io.Discard, r.Body)
		if !handle(r, n) {
			return
		}
	}
}

// serveConns listens on 127.0.0.1 and runs handle on each connection it
// accepts (numbered from 0), each on its own goroutine with a 10 s
// deadline, closing the connection when handle returns. When the test
// ends, the listener and every connection are closed and the goroutines
// waited for.
func serveConns(t *testing.T, handle func(c net.Conn, i int)) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex // guards conns and closed
	conns := map[net.Conn]bool{}
	closed := false
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns[c] = true
			if closed { // accepted as the test ended
				c.Close()
			}
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				handle(c, i)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		closed = true
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln
}

func (b *scriptedBackend) addr() string { return b.ln.Addr().String() }

func (b *scriptedBackend) requests() []*http.Request {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]*http.Request(nil), b.seen...)
}

// readHead reads one raw response head from br, for checks on fields
// http.ReadResponse would normalise away.
func readHead(t *testing.T, br *bufio.Reader) string {
	t.Helper()
	var head strings.Builder
	for {
		l, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("reading head %q: %v", head.String(), err)
		}
		head.WriteString(l)
		if l == "\r\n" {
			return head.String()
		}
	}
}

// A client that names X-Forwarded-For in Connection loses its own copy
// (a hop-by-hop field) but must not strip the edge's entry with it.
func TestConnectionCannotDropForwardedFor(t *testing.T) {
	f := newFixture(t, nil)
	c := f.dial()
	r := c.do("GET /xff HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 203.0.113.9\r\nConnection: X-Forwarded-For\r\n\r\n")
	if !strings.Contains(r.body, `xff="127.0.0.1"`) {
		t.Fatalf("backend saw %q", r.body)
	}
}

// A reused upstream connection the backend closes on a POST: the POST
// cannot be retried, so it gets a 502, but its body was read whole and
// the client connection stays usable for the next request.
func TestKeepAliveAfterUpstreamClosed(t *testing.T) {
	be := newScriptedBackend(t, func(r *http.Request, n int) string {
		if n > 0 {
			return "" // the backend drops its idle connection as the POST arrives
		}
		return "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
	})
	addr, _ := startProxy(t, oneRoute(be.addr()), nil)
	c := dialProxy(t, addr)
	if r := c.do("GET /first HTTP/1.1\r\nHost: x\r\n\r\n"); r.status != 200 {
		t.Fatalf("first: %d", r.status)
	}
	c.send("POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabcGET /next HTTP/1.1\r\nHost: x\r\n\r\n")
	r := c.read("POST")
	if r.status != 502 || r.body != "upstream connection closed\n" || r.close {
		t.Fatalf("POST: %d %q close=%v", r.status, r.body, r.close)
	}
	if r := c.read("GET"); r.status != 200 || r.body != "ok" {
		t.Fatalf("next request on the same connection: %d %q", r.status, r.body)
	}
}

// RFC 9110 §10.1.1: a 100-continue from an HTTP/1.0 client is ignored; it
// would not understand a 1xx. The body streams (BufferBodyBytes 1), so the
// edge sends the head upstream only after it decided about a 100; the
// client sends its body once the backend has the head, and what it reads
// first is then fixed. The HTTP/1.1 case shows a 100 would be seen.
func TestHTTP10ExpectIgnored(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	headSeen := make(chan struct{}, 1)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.SetDeadline(time.Now().Add(5 * time.Second))
			if r, err := http.ReadRequest(bufio.NewReader(c)); err == nil {
				headSeen <- struct{}{}
				body, _ := io.ReadAll(r.Body)
				// It closes after each answer, so it says so: a pooled
				// connection it closes unannounced can take the next
				// request (the keep-alive race, not what this tests).
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 4\r\nConnection: close\r\n\r\n"+string(body))
			}
			c.Close()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	addr, _ := startProxy(t, oneRoute(ln.Addr().String()), func(c *Config) { c.BufferBodyBytes = 1 })
	for _, tc := range []struct{ version, want string }{
		{"1.0", "HTTP/1.1 200 OK\r\n"},
		{"1.1", "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n"},
	} {
		c := rawConn(t, addr)
		io.WriteString(c, "PUT /e HTTP/"+tc.version+"\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
		select {
		case <-headSeen:
		case <-time.After(5 * time.Second):
			t.Fatalf("HTTP/%s: the request head did not reach the backend", tc.version)
		}
		io.WriteString(c, "data")
		all, _ := io.ReadAll(c) // the edge closes after a streamed body
		if !strings.HasPrefix(string(all), tc.want) || !strings.HasSuffix(string(all), "\r\n\r\ndata") {
			t.Fatalf("HTTP/%s client got %q, want it to start %q", tc.version, all, tc.want)
		}
	}
}

// A backend may answer an upload before taking its body (413) while the
// client keeps sending. The edge relays the answer and closes, but not with
// the client's bytes unread: that made the kernel reset the connection, and
// the client lost the end of the answer (3970 of 262144 bytes here). It
// sends a FIN and drains the client first (lingerClose).
func TestEarlyAnswerSurvivesClose(t *testing.T) {
	big := strings.Repeat("e", 256<<10)
	addr := oneRequestBackend(t, func(c *net.TCPConn, br *bufio.Reader) {
		io.WriteString(c, "HTTP/1.1 413 Content Too Large\r\nContent-Length: "+strconv.Itoa(len(big))+"\r\nConnection: close\r\n\r\n"+big)
		c.CloseWrite()
		// It drains the body the edge still forwards until the edge closes:
		// closing with bytes unread would reset the upstream connection and
		// drop the end of the answer before the edge read it, which on a
		// loaded machine (-race) it had not always done within the 300 ms
		// this deadline once was.
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		io.Copy(io.Discard, br)
	})
	proxy, _ := startProxy(t, oneRoute(addr), nil)
	// A small receive buffer keeps most of the answer in the edge's send
	// queue, where a reset would drop it.
	d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		return rc.Control(func(fd uintptr) { syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
	}}
	nc, err := d.Dial("tcp", proxy)
	if err != nil {
		t.Fatal(err)
	}
	c := nc.(*net.TCPConn)
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, "PUT /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 67108864\r\n\r\n")
	sending := make(chan struct{})
	go func() {
		defer close(sending)
		chunk := make([]byte, 16<<10)
		for {
			c.SetWriteDeadline(time.Now().Add(2 * time.Second))
			if _, err := c.Write(chunk); err != nil {
				return
			}
		}
	}()
	defer func() { c.Close(); <-sending }()
	time.Sleep(500 * time.Millisecond) // the answer is relayed while the body still flows
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("no answer: %v", err)
	}
	b, err := io.ReadAll(resp.Body)
	if resp.StatusCode != 413 || len(b) != len(big) {
		t.Fatalf("got %d with %d of %d body bytes (%v)", resp.StatusCode, len(b), len(big), err)
	}
}

// A body over MaxBodyBytes is refused with 413 before any of it goes
// upstream, and the edge then closes lingering: the client, still sending
// its body, can go on writing for a while instead of having its connection
// reset at its next segment (which over a real network can destroy the 413
// before it is read).
func TestBodyTooLargeLingers(t *testing.T) {
	be := newTestBackend(t, "b")
	addr, _ := startProxy(t, oneRoute(be.addr()), func(c *Config) { c.MaxBodyBytes = 1 << 20 })
	c := rawConn(t, addr).(*net.TCPConn)
	defer c.Close()
	io.WriteString(c, "POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 10485760\r\n\r\n")
	br := bufio.NewReader(c)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadAll(resp.Body); err != nil || resp.StatusCode != 413 || !resp.Close {
		t.Fatalf("status %d close=%v (%v), want 413 and close", resp.StatusCode, resp.Close, err)
	}
	if n, err := br.ReadByte(); err != io.EOF {
		t.Fatalf("after the 413: %v %v, want the edge's FIN", n, err)
	}
	chunk := make([]byte, 16<<10)
	for end := time.Now().Add(300 * time.Millisecond); time.Now().Before(end); {
		c.SetWriteDeadline(time.Now().Add(time.Second))
		if _, err := c.Write(chunk); err != nil {
			t.Fatalf("the body's rest was refused at once (%v): the edge closed without lingering", err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if n := be.hits.Load(); n != 0 {
		t.Fatalf("the backend saw %d requests", n)
	}
}

// An answer to HEAD carries no body, but a backend may write one anyway,
// after the head: it stays on the connection. Pooled, that connection gave
// the next request, another client's, those bytes as its response. An
// answer without a body whose framing fields describe one is therefore not
// pooled. The backend here writes the HEAD's body when the next request
// arrives on the same connection, which is how the edge would see a late
// one.
func TestLateHEADBodyNotPooled(t *testing.T) {
	smuggled := "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nevil"
	good := "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ngood"
	be := newScriptedBackend(t, func(r *http.Request, n int) string {
		switch {
		case r.Method == "HEAD":
			return "HTTP/1.1 200 OK\r\nContent-Length: " + strconv.Itoa(len(smuggled)) + "\r\n\r\n"
		case n > 0: // a connection that answered a HEAD before
			return smuggled + good
		}
		return good
	})
	addr, _ := startProxy(t, oneRoute(be.addr()), nil)
	a := dialProxy(t, addr)
	a.send("HEAD /x HTTP/1.1\r\nHost: a\r\n\r\n")
	if r := a.read("HEAD"); r.status != 200 {
		t.Fatalf("HEAD: status %d", r.status)
	}
	if r := dialProxy(t, addr).do(get("a", "/y")); r.body != "good" {
		t.Fatalf("the next client got %q: another exchange's bytes", r.body)
	}
}

// An h2c upgrade is not passed on: a backend switching to HTTP/2 would
// serve any path on the tunnel, past this edge's routing and policies.
// h2c anywhere in the offer, in any Upgrade field and any case, drops the
// whole offer: the request goes upstream as a plain one.
func TestH2CUpgradeNotForwarded(t *testing.T) {
	be := newScriptedBackend(t, func(r *http.Request, n int) string {
		if r.Header.Get("Upgrade") != "" {
			return "HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n"
		}
		return "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
	})
	addr, _ := startProxy(t, oneRoute(be.addr()), nil)
	c := dialProxy(t, addr)
	for _, fields := range []string{
		"Upgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n",
		"Upgrade: websocket, H2C\r\nConnection: Upgrade\r\n",
		"Upgrade: websocket\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n",
	} {
		r := c.do("GET /admin HTTP/1.1\r\nHost: x\r\n" + fields + "\r\n")
		if r.status != 200 || r.body != "ok" {
			t.Fatalf("%q: client got %d %q", fields, r.status, r.body)
		}
	}
	for _, r := range be.requests() {
		if r.Header.Get("Upgrade") != "" || r.Header.Get("Connection") != "" || r.Header.Get("Http2-Settings") != "" {
			t.Fatalf("backend saw %v", r.Header)
		}
	}
}

// Framing fields that do not apply downstream are not relayed: none on a
// 1xx or 204 (RFC 9110 §8.6, RFC 9112 §6.1), no Transfer-Encoding to an
// HTTP/1.0 client, no Content-Length next to Transfer-Encoding, and a
// transfer-coded body for an HTTP/1.0 client is a 502 as chunked already
// was. Each answer keeps the client connection.
func TestBodilessFramingNotRelayed(t *testing.T) {
	be := newScriptedBackend(t, func(r *http.Request, n int) string {
		switch r.URL.Path {
		case "/204te":
			return "HTTP/1.1 204 No Content\r\nTransfer-Encoding: chunked\r\n\r\n"
		case "/204cl":
			return "HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n"
		case "/103":
			return "HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\nContent-Length: 0\r\n\r\n" +
				"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
		case "/gzip":
			return "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n"
		case "/304both":
			return "HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\nContent-Length: 7\r\n\r\n"
		case "/both":
			return "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 9\r\n\r\n"
		}
		// HEAD answers for a chunked resource.
		return "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
	})
	addr, _ := startProxy(t, oneRoute(be.addr()), nil)
	c := dialProxy(t, addr)
	for _, tc := range []struct{ req, status, absent string }{
		{"GET /204te HTTP/1.1\r\nHost: x\r\n\r\n", "204", "Transfer-Encoding"},
		{"GET /204cl HTTP/1.1\r\nHost: x\r\n\r\n", "204", "Content-Length"},
		{"GET /103 HTTP/1.1\r\nHost: x\r\n\r\n", "103", "Content-Length"},
		{"HEAD /chunked HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n\r\n", "200", "Transfer-Encoding"},
		// Both framings on a bodiless answer: Transfer-Encoding overrides
		// Content-Length, which a forwarder removes (RFC 9112 §6.3).
		{"GET /304both HTTP/1.1\r\nHost: x\r\n\r\n", "304", "Content-Length"},
		{"HEAD /both HTTP/1.1\r\nHost: x\r\n\r\n", "200", "Content-Length"},
		{"HEAD /both HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n\r\n", "200", "Content-Length"},
	} {
		c.send(tc.req)
		head := readHead(t, c.br)
		if !strings.HasPrefix(head, "HTTP/1.1 "+tc.status+" ") || strings.Contains(head, tc.absent+":") ||
			strings.Contains(head, "Connection: close") {
			t.Fatalf("%q: got head %q, want %s without %s", tc.req, head, tc.status, tc.absent)
		}
		if tc.status == "103" {
			if r := c.read("GET"); r.status != 200 || r.body != "ok" {
				t.Fatalf("after the 103: %d %q", r.status, r.body)
			}
		}
	}
	r := c.do("GET /gzip HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n\r\n")
	if r.status != 502 || r.body != "bad upstream response\n" || r.close {
		t.Fatalf("gzip to HTTP/1.0: %d %q close=%v", r.status, r.body, r.close)
	}
}

// An upgrade request with a body: the body goes upstream once, as the
// HTTP/1.1 request's content; the tunnel starts after it.
func TestUpgradeBodyNotRepeated(t *testing.T) {
	backend, got := switchingBackend(t, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
	addr, _ := startProxy(t, oneRoute(backend), nil)
	c := rawConn(t, addr)
	io.WriteString(c, "POST /up HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nContent-Length: 5\r\n\r\nhello")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil || resp.StatusCode != 101 {
		t.Fatalf("%v %v", resp, err)
	}
	io.WriteString(c, "frame")
	c.(*net.TCPConn).CloseWrite()
	if g := <-got; g != "upgrade=websocket body=hello then=frame" {
		t.Fatalf("backend got %q", g)
	}
}

// A client may send the new protocol's bytes right behind its request and
// shut down its side before the 101 is back (netpoll then refuses writes to
// it): those bytes still reach the backend, once, after the request.
func TestTunnelPassesBytesSentBeforeClientFIN(t *testing.T) {
	backend, got := switchingBackend(t, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
	addr, _ := startProxy(t, oneRoute(backend), nil)
	c := rawConn(t, addr)
	io.WriteString(c, "POST /up HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nContent-Length: 5\r\n\r\nhelloframe")
	c.(*net.TCPConn).CloseWrite()
	if g := <-got; g != "upgrade=websocket body=hello then=frame" {
		t.Fatalf("backend got %q", g)
	}
}

// A client's FIN inside a tunnel is passed on as a FIN to the backend,
// and what the backend sends after it still reaches the client: the
// tunnel ends when the backend closes too.
func TestTunnelPassesClientFINOn(t *testing.T) {
	backend := upgradedBackend(t, func(c *net.TCPConn, br *bufio.Reader) {
		rest, _ := io.ReadAll(br) // until the client's FIN, passed on
		io.WriteString(c, "bye:"+string(rest))
	})
	addr, _ := startProxy(t, oneRoute(backend), nil)
	c := rawConn(t, addr)
	io.WriteString(c, "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nping")
	c.(*net.TCPConn).CloseWrite()
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	head, body, _ := strings.Cut(string(got), "\r\n\r\n")
	if !strings.HasPrefix(head, "HTTP/1.1 101 ") || body != "bye:ping" {
		t.Fatalf("client got %q", got)
	}
}

// oneRequestBackend accepts one connection, reads one request from it and
// hands the connection, past the request, to serve. It stops with the test.
func oneRequestBackend(t *testing.T, serve func(c *net.TCPConn, br *bufio.Reader)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		br := bufio.NewReader(c)
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		serve(c.(*net.TCPConn), br)
	}()
	t.Cleanup(func() { ln.Close(); <-done })
	return ln.Addr().String()
}

// upgradedBackend is a oneRequestBackend that answers with a 101 and then
// hands the connection to talk.
func upgradedBackend(t *testing.T, talk func(c *net.TCPConn, br *bufio.Reader)) string {
	t.Helper()
	return oneRequestBackend(t, func(c *net.TCPConn, br *bufio.Reader) {
		io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
		talk(c, br)
	})
}

// openTunnel sends an upgrade request through the edge at addr and reads
// the 101.
func openTunnel(t *testing.T, addr string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c := rawConn(t, addr)
	io.WriteString(c, "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
	br := bufio.NewReader(c)
	if head := readHead(t, br); !strings.HasPrefix(head, "HTTP/1.1 101 ") {
		t.Fatalf("got %q", head)
	}
	return c, br
}

// The idle timeout of a tunnel counts silence in both directions: a
// backend pushing to a client that sends nothing keeps the tunnel open
// well past it, and once both are silent it closes.
func TestTunnelIdleCountsBothDirections(t *testing.T) {
	addr := upgradedBackend(t, func(c *net.TCPConn, _ *bufio.Reader) {
		for range 10 {
			time.Sleep(100 * time.Millisecond)
			if _, err := c.Write([]byte("p")); err != nil {
				return
			}
		}
		io.Copy(io.Discard, c) // until the edge closes the idle tunnel
	})
	g := startGateway(t, oneRoute(addr), upstream.Options{}, func(c *Config) { c.IdleTimeout = 300 * time.Millisecond })
	pool := g.reg.Acquire(addr)
	defer g.reg.Release(pool)
	c, br := openTunnel(t, g.addr)
	first, err := br.ReadByte()
	if err != nil {
		t.Fatal(err)
	}
	// An open tunnel counts as a request in flight (least-request).
	if n := pool.InFlight(); n != 1 {
		t.Fatalf("%d requests in flight during the tunnel, want 1", n)
	}
	rest, err := io.ReadAll(br)
	if got := string(first) + string(rest); err != nil || got != "pppppppppp" {
		t.Fatalf("client got %q, %v; want 10 bytes pushed over 1 s, then the idle tunnel closed", got, err)
	}
	waitUntil(t, "the closed tunnel's count to end", func() bool { return pool.InFlight() == 0 })
	c.Close()
}

// A backend's FIN is passed on to the client, which may still send: its
// bytes reach the backend until its own FIN.
func TestTunnelPassesBackendFINOn(t *testing.T) {
	got := make(chan string, 1)
	addr := upgradedBackend(t, func(c *net.TCPConn, br *bufio.Reader) {
		io.WriteString(c, "done")
		c.CloseWrite()
		rest, _ := io.ReadAll(br)
		got <- string(rest)
	})
	proxy, _ := startProxy(t, oneRoute(addr), nil)
	c, br := openTunnel(t, proxy)
	if b, err := io.ReadAll(br); err != nil || string(b) != "done" {
		t.Fatalf("client got %q, %v; want the backend's bytes, then its FIN", b, err)
	}
	io.WriteString(c, "late")
	c.(*net.TCPConn).CloseWrite()
	if g := <-got; g != "late" {
		t.Fatalf("backend got %q after its FIN", g)
	}
}

// A tunnel holds back a client that sends faster than the backend reads:
// with the backend not reading at all, the client can only fill the
// socket buffers on the way, not the edge's memory. netpoll alone reads a
// client's input eagerly, and the client could push all 256 MiB.
// Everything the client got in then reaches the backend, and the
// client's FIN ends it.
func TestTunnelHoldsBackFastClient(t *testing.T) {
	stalled := make(chan struct{})
	received := make(chan int64, 1)
	backend := upgradedBackend(t, func(c *net.TCPConn, br *bufio.Reader) {
		<-stalled // read nothing until the client is held back
		n, _ := io.Copy(io.Discard, br)
		received <- n
	})
	addr, _ := startProxy(t, oneRoute(backend), nil)
	c, _ := openTunnel(t, addr)
	chunk := make([]byte, 1<<20)
	var sent int64
	for sent < 256<<20 {
		c.SetWriteDeadline(time.Now().Add(500 * time.Millisecond))
		n, err := c.Write(chunk)
		sent += int64(n)
		if err != nil {
			break // held back
		}
	}
	close(stalled)
	if sent >= 64<<20 {
		t.Fatalf("the client pushed %d MiB into a tunnel whose backend reads nothing", sent>>20)
	}
	c.SetWriteDeadline(time.Time{})
	c.(*net.TCPConn).CloseWrite()
	select {
	case n := <-received:
		if n != sent {
			t.Fatalf("backend received %d bytes, the client sent %d", n, sent)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the backend never saw the client's FIN")
	}
	t.Logf("held back after %.1f MiB", float64(sent)/(1<<20))
}

// A client that sends its request and shuts down its side at once (a
// script piping into nc -N, a health checker) has the request proxied
// and gets the answer, as from nginx or HAProxy, and then the edge closes
// the connection. The FIN may arrive before the edge has set the
// connection up, or while the request is upstream: netpoll then counts
// the connection closed, and neither the request nor the answer may be
// dropped with it.
func TestHalfClosedClientIsAnswered(t *testing.T) {
	b := newTestBackend(t, "a")
	addr, _ := startProxy(t, oneRoute(b.addr()), nil)
	const n = 200
	for i := range n {
		c := rawConn(t, addr)
		io.WriteString(c, "GET /fin HTTP/1.1\r\nHost: x\r\n\r\n")
		c.(*net.TCPConn).CloseWrite()
		r, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		body, err := io.ReadAll(r.Body)
		if err != nil || r.StatusCode != 200 || !strings.HasPrefix(string(body), "backend=a method=GET uri=/fin") {
			t.Fatalf("connection %d: %d %q %v", i, r.StatusCode, body, err)
		}
		c.Close()
	}
	if got := b.hits.Load(); got != n {
		t.Fatalf("backend saw %d of %d requests", got, n)
	}
}

// Everything a half-closed client asked for is answered: pipelined
// requests in order, a body larger than the socket buffers, and an
// answer of the edge's own; then the connection closes.
func TestHalfClosedClientPipelineAndLargeBody(t *testing.T) {
	b := newTestBackend(t, "a")
	addr, _ := startProxy(t, oneRoute(b.addr()), nil)
	c := rawConn(t, addr)
	io.WriteString(c, "GET /one HTTP/1.1\r\nHost: x\r\n\r\nGET /big HTTP/1.1\r\nHost: x\r\n\r\n"+
		"GET /bad%zz HTTP/1.1\r\nHost: x\r\n\r\n")
	c.(*net.TCPConn).CloseWrite()
	time.Sleep(50 * time.Millisecond) // let the FIN reach the edge before it answers
	br := bufio.NewReader(c)
	for _, want := range []struct {
		status int
		body   string
	}{{200, "backend=a method=GET uri=/one"}, {200, string(bigBody)}, {400, "bad percent-encoding in path\n"}} {
		r, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("reading the answer with %q: %v", want.body[:min(len(want.body), 40)], err)
		}
		body, err := io.ReadAll(r.Body)
		if err != nil || r.StatusCode != want.status || !strings.HasPrefix(string(body), want.body) {
			t.Fatalf("got %d (%d bytes, %v), want %d %q", r.StatusCode, len(body), err, want.status, want.body[:min(len(want.body), 40)])
		}
	}
	if n, err := br.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Fatalf("after the answers: %d bytes, %v; want the connection closed", n, err)
	}
}

// switchingBackend accepts one connection, reads one request with its
// body, writes answer and then reports the request's Upgrade offer, its
// body and every byte that followed on the connection until the edge
// closed it.
func switchingBackend(t *testing.T, answer string) (addr string, got <-chan string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ch := make(chan string, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		c, err := ln.Accept()
		if err != nil {
			ch <- err.Error()
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		br := bufio.NewReader(c)
		r, err := http.ReadRequest(br)
		if err != nil {
			ch <- err.Error()
			return
		}
		body, _ := io.ReadAll(r.Body)
		io.WriteString(c, answer)
		rest, _ := io.ReadAll(br)
		ch <- "upgrade=" + strings.Join(r.Header.Values("Upgrade"), "|") + " body=" + string(body) + " then=" + string(rest)
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
	})
	return ln.Addr().String(), ch
}

// RFC 9110 §7.8: a server must not switch to a protocol the client did
// not offer, and a 101 must carry Upgrade. A 101 that breaks either is a
// 502 and no tunnel; the client connection stays in step. Protocol names
// compare ignoring case, and several Upgrade fields are one list.
func TestSwitchOnlyToOfferedProtocol(t *testing.T) {
	const ws = "GET /up HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
	for _, tc := range []struct {
		name, req, answer string
		switched          bool
		offer             string // the Upgrade the backend saw
	}{
		{"not offered", ws, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n", false, "websocket"},
		{"one of two not offered", ws, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket, irc\r\nConnection: Upgrade\r\n\r\n", false, "websocket"},
		{"second field not offered", ws, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nUpgrade: irc\r\nConnection: Upgrade\r\n\r\n", false, "websocket"},
		{"no Upgrade", ws, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n\r\n", false, "websocket"},
		{"empty Upgrade", ws, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: \r\nConnection: Upgrade\r\n\r\n", false, "websocket"},
		{"case differs", ws, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: WebSocket\r\nConnection: Upgrade\r\n\r\n", true, "websocket"},
		{"offer of two fields", "GET /up HTTP/1.1\r\nHost: x\r\nUpgrade: irc/6.9\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
			"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n", true, "irc/6.9, websocket"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			be, got := switchingBackend(t, tc.answer)
			addr, _ := startProxy(t, oneRoute(be), nil)
			c := rawConn(t, addr)
			br := bufio.NewReader(c)
			io.WriteString(c, tc.req)
			resp, err := http.ReadResponse(br, &http.Request{Method: "GET"})
			if err != nil {
				t.Fatal(err)
			}
			if !tc.switched {
				body, _ := io.ReadAll(resp.Body)
				if resp.StatusCode != 502 || string(body) != "bad upstream response\n" || resp.Close {
					t.Fatalf("client got %d %q close=%v, want a 502 on a kept connection", resp.StatusCode, body, resp.Close)
				}
				c.(*net.TCPConn).CloseWrite()
				if g, want := <-got, "upgrade="+tc.offer+" body= then="; g != want {
					t.Fatalf("backend: %q, want %q", g, want)
				}
				return
			}
			if resp.StatusCode != 101 || resp.Header.Get("Upgrade") != strings.TrimPrefix(strings.Split(tc.answer, "\r\n")[1], "Upgrade: ") {
				t.Fatalf("client got %d %v, want the backend's 101", resp.StatusCode, resp.Header)
			}
			io.WriteString(c, "frame")
			c.(*net.TCPConn).CloseWrite()
			if g, want := <-got, "upgrade="+tc.offer+" body= then=frame"; g != want {
				t.Fatalf("backend: %q, want %q", g, want)
			}
		})
	}
}

// An upgrade request whose body may stream (chunked, or a Content-Length
// above BufferBodyBytes) goes upstream without Upgrade, whether or not its
// body arrived with the head: a 101 could not be tunnelled after it, and
// the rule must not depend on TCP timing. A small body keeps the offer.
func TestUpgradeNotOfferedWhenBodyMayStream(t *testing.T) {
	be := newScriptedBackend(t, func(r *http.Request, n int) string {
		if r.Header.Get("Upgrade") != "" || r.Header.Get("Connection") != "" {
			return "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
		}
		return "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nplain"
	})
	addr, _ := startProxy(t, oneRoute(be.addr()), func(c *Config) { c.BufferBodyBytes = 8 })
	const up = "POST /up HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
	c := dialProxy(t, addr)
	for _, req := range []string{
		up + "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", // complete with the head: buffered, yet no offer
		up + "Content-Length: 9\r\n\r\n123456789",                        // the same for one byte above the limit
	} {
		if r := c.do(req); r.status != 200 || r.body != "plain" || r.close {
			t.Fatalf("%q: client got %d %q close=%v", req, r.status, r.body, r.close)
		}
	}
	r := c.do(up + "Content-Length: 8\r\n\r\n12345678")
	if r.status != 101 {
		t.Fatalf("a body within BufferBodyBytes: client got %d, want the 101", r.status)
	}
	if n := len(be.requests()); n != 3 {
		t.Fatalf("backend saw %d requests", n)
	}
}

// A 1xx relayed to the client is part of the response: a backend that then
// closes is not a stale keep-alive connection to retry (the backend had the
// request), nor is a retry status after it retried. The client gets the
// 1xx and one final answer; the request reaches the backend once.
func TestNoRetryAfterInterim(t *testing.T) {
	t.Run("close", func(t *testing.T) {
		be := newHangupBackend(t, func(r *http.Request, n int) (string, bool) {
			if n == 0 {
				return "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", false
			}
			return "HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n", true
		})
		st := oneRoute(be.addr())
		st.Routes[0].RetryAttempts, st.Routes[0].RetryOn = 2, fbs.RetryOnReset
		addr, _ := startProxy(t, st, nil)
		c := dialProxy(t, addr)
		if r := c.do("GET /warm HTTP/1.1\r\nHost: x\r\n\r\n"); r.status != 200 {
			t.Fatalf("warm-up: %d", r.status)
		}
		// The PUT is idempotent with a buffered body and goes on the reused
		// connection: before the 103 it would be retried.
		c.send("PUT /p HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nx")
		if head := readHead(t, c.br); !strings.HasPrefix(head, "HTTP/1.1 103 ") {
			t.Fatalf("first: %q", head)
		}
		if r := c.read("PUT"); r.status != 502 || r.body != "bad upstream response\n" || r.close {
			t.Fatalf("after the 103: %d %q close=%v", r.status, r.body, r.close)
		}
		if r := c.do("GET /next HTTP/1.1\r\nHost: x\r\n\r\n"); r.status != 200 {
			t.Fatalf("next request: %d", r.status)
		}
		puts := 0
		for _, r := range be.requests() {
			if r.Method == "PUT" {
				puts++
			}
		}
		if puts != 1 {
			t.Fatalf("backend saw the PUT %d times", puts)
		}
	})
	t.Run("retry status", func(t *testing.T) {
		answer := func(r *http.Request, n int) string {
			return "HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 503 Busy\r\nContent-Length: 4\r\n\r\nbusy"
		}
		a, b := newScriptedBackend(t, answer), newScriptedBackend(t, answer)
		st := oneRoute(a.addr(), b.addr())
		st.Routes[0].RetryAttempts, st.Routes[0].RetryStatuses = 1, []uint16{503}
		addr, _ := startProxy(t, st, nil)
		c := dialProxy(t, addr)
		c.send("GET /p HTTP/1.1\r\nHost: x\r\n\r\n")
		if head := readHead(t, c.br); !strings.HasPrefix(head, "HTTP/1.1 103 ") {
			t.Fatalf("first: %q", head)
		}
		if r := c.read("GET"); r.status != 503 || r.body != "busy" {
			t.Fatalf("after the 103: %d %q", r.status, r.body)
		}
		if n := len(a.requests()) + len(b.requests()); n != 1 {
			t.Fatalf("backends saw %d requests", n)
		}
	})
}

// The route's timeout bounds the wait for the whole response head: a
// backend dripping its head a byte at a time gets the client a 504 (it got
// the 200, 4 s later, when each read had the whole timeout). Each interim
// head starts the wait again, so a backend that keeps announcing 102
// Processing for longer than the timeout is still waited for.
func TestResponseHeadTimeoutIsWhole(t *testing.T) {
	head := "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
	drip := oneRequestBackend(t, func(c *net.TCPConn, _ *bufio.Reader) {
		for i := range len(head) {
			if _, err := io.WriteString(c, head[i:i+1]); err != nil {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
	})
	processing := oneRequestBackend(t, func(c *net.TCPConn, _ *bufio.Reader) {
		for range 4 {
			if _, err := io.WriteString(c, "HTTP/1.1 102 Processing\r\n\r\n"); err != nil {
				return
			}
			time.Sleep(200 * time.Millisecond)
		}
		io.WriteString(c, head)
	})
	st := fbs.State{Version: 1,
		Clusters: []fbs.Cluster{{Name: "drip", Endpoints: []fbs.Endpoint{{Address: drip}}},
			{Name: "processing", Endpoints: []fbs.Endpoint{{Address: processing}}}},
		Routes: []fbs.Route{{ID: "drip", Host: "*", Prefix: "/drip", Cluster: "drip", TimeoutMs: 300},
			{ID: "processing", Host: "*", Prefix: "/processing", Cluster: "processing", TimeoutMs: 300}}}
	addr, _ := startProxy(t, st, nil)
	if r := dialProxy(t, addr).do(get("x", "/drip")); r.status != 504 || r.body != "upstream timeout\n" {
		t.Errorf("a head dripped over 4 s on a 300 ms route: %d %q, want 504 upstream timeout", r.status, r.body)
	}
	c := dialProxy(t, addr)
	c.send(get("x", "/processing"))
	r := c.read("GET")
	for i := 0; i < 4 && r.status == 102; i++ {
		r = c.read("GET")
	}
	if r.status != 200 || r.body != "ok" {
		t.Errorf("four 102s 200 ms apart, then the answer, on a 300 ms route: %d %q, want 200 ok", r.status, r.body)
	}
}

// An empty line after a request's body (old clients send one after a POST)
// is ignored, as RFC 9112 §2.2 asks: the connection stays idle and serves
// the next request. It used to start a request head, and when the header
// timeout ran out the idle client got an unsolicited 408 and a close.
func TestEmptyLineAfterBodyStaysIdle(t *testing.T) {
	b := newTestBackend(t, "b")
	addr, _ := startProxy(t, oneRoute(b.addr()), func(c *Config) {
		c.HeaderTimeout = 200 * time.Millisecond
		c.IdleTimeout = 10 * time.Second
	})
	c := dialProxy(t, addr)
	c.send("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi\r\n")
	if r := c.read("POST"); r.status != 200 {
		t.Fatalf("POST: %d %q", r.status, r.body)
	}
	// Well past the header timeout: nothing may arrive meanwhile.
	c.c.SetReadDeadline(time.Now().Add(600 * time.Millisecond))
	if n, err := c.br.Peek(1); err == nil {
		t.Fatalf("an idle connection got %q", n)
	} else if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
		t.Fatalf("the idle connection ended: %v", err)
	}
	c.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	c.br.Reset(c.c)
	if r := c.do(get("x", "/after")); r.status != 200 || !strings.Contains(r.body, "uri=/after ") {
		t.Fatalf("the next request: %d %q", r.status, r.body)
	}
}

// TestFramingFieldsForwardedCanonically: the framing fields reach the
// backend in one spelling, as the edge's parser read them (a backend that
// reads "CHUNKED" or a leading-zero length its own way would frame the
// body apart from the edge), and a transfer coding other than chunked is
// refused with 501 before anything reaches the backend, lists with chunked
// last included (gunicorn before 22 read no body for "identity, chunked").
func TestFramingFieldsForwardedCanonically(t *testing.T) {
	heads := make(chan string, 8)
	ln := serveConns(t, func(c net.Conn, _ int) {
		br := bufio.NewReader(c)
		for {
			var head strings.Builder
			for {
				line, err := br.ReadString('\n')
				if err != nil {
					return
				}
				head.WriteString(line)
				if line == "\r\n" {
					break
				}
			}
			heads <- head.String()
			if strings.Contains(head.String(), "Transfer-Encoding: chunked\r\n") {
				for line := ""; line != "0\r\n"; {
					var err error
					if line, err = br.ReadString('\n'); err != nil {
						return
					}
				}
				br.ReadString('\n') // the empty trailer section
			} else if i := strings.Index(head.String(), "Content-Length: "); i >= 0 {
				n, _ := strconv.Atoi(strings.TrimSpace(strings.SplitN(head.String()[i+16:], "\r\n", 2)[0]))
				io.CopyN(io.Discard, br, int64(n))
			}
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
		}
	})
	addr, _ := startProxy(t, oneRoute(ln.Addr().String()), nil)
	c := dialProxy(t, addr)
	for _, tc := range []struct{ req, want string }{
		{"POST /cl HTTP/1.1\r\nHost: x\r\nContent-Length: 0003\r\n\r\nabc", "Content-Length: 3\r\n"},
		{"POST /te HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:  CHUNKED \r\n\r\n3\r\nabc\r\n0\r\n\r\n", "Transfer-Encoding: chunked\r\n"},
	} {
		if r := c.do(tc.req); r.status != 200 {
			t.Fatalf("%q: %d %q", tc.req, r.status, r.body)
		}
		select {
		case head := <-heads:
			if !strings.Contains(head, tc.want) || strings.Count(head, "Content-Length")+strings.Count(head, "Transfer-Encoding") != 1 {
				t.Fatalf("%q reached the backend as\n%s\nwant one framing field, %q", tc.req, head, tc.want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%q never reached the backend", tc.req)
		}
	}
	for _, te := range []string{"identity, chunked", "gzip, chunked", "identity\r\nTransfer-Encoding: chunked"} {
		c := dialProxy(t, addr)
		r := c.do("POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: " + te + "\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
		if r.status != 501 || !r.close {
			t.Fatalf("Transfer-Encoding %q: %d %q close=%v, want 501 and the connection closed", te, r.status, r.body, r.close)
		}
	}
	select {
	case head := <-heads:
		t.Fatalf("a refused request reached the backend:\n%s", head)
	case <-time.After(100 * time.Millisecond):
	}
}

// A body framed by the upstream's close (no Content-Length, not chunked)
// ends at its FIN; a reset or a timeout cuts it off, and the client must
// be able to tell (RFC 9112 §8): its connection is reset, not closed as
// after a whole body. It used to get the same FIN either way.
func TestCloseDelimitedCutOffResetsClient(t *testing.T) {
	const head = "HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n"
	const part = `{"items":[1,2,3`
	backend := func(end string) string {
		return oneRequestBackend(t, func(c *net.TCPConn, _ *bufio.Reader) {
			io.WriteString(c, head+part)
			time.Sleep(50 * time.Millisecond)
			switch end {
			case "fin":
				io.WriteString(c, "]}")
			case "reset":
				c.SetLinger(0)
			case "quiet":
				time.Sleep(time.Second) // past the route's 300 ms
			}
		})
	}
	for _, tc := range []struct {
		end      string
		body     string
		complete bool
	}{
		{"fin", part + "]}", true},
		{"reset", part, false},
		{"quiet", part, false},
	} {
		t.Run(tc.end, func(t *testing.T) {
			st := fbs.State{Version: 1,
				Clusters: []fbs.Cluster{{Name: "c", Endpoints: []fbs.Endpoint{{Address: backend(tc.end)}}}},
				Routes:   []fbs.Route{{ID: "r", Host: "*", Prefix: "/", Cluster: "c", TimeoutMs: 300}}}
			addr, _ := startProxy(t, st, nil)
			c := rawConn(t, addr)
			io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				t.Fatal(err)
			}
			body, err := io.ReadAll(resp.Body)
			if resp.StatusCode != 200 || !resp.Close || !strings.HasPrefix(string(body), part) {
				t.Fatalf("got %d close=%v %q", resp.StatusCode, resp.Close, body)
			}
			if tc.complete {
				if err != nil || string(body) != tc.body {
					t.Fatalf("whole body: %q, %v; want %q and a clean end", body, err, tc.body)
				}
				return
			}
			if !errors.Is(err, syscall.ECONNRESET) {
				t.Fatalf("body cut off by a %s: %q, %v; want a connection reset", tc.end, body, err)
			}
		})
	}
}

// Interim (1xx) heads restart the response timeout only when they reach
// the client, and a backend may send at most maxInterims of them. A 100
// (never relayed) every 100 ms used to hold a 300 ms route for ever, and
// any number of 103s were relayed.
func TestInterimHeadsBounded(t *testing.T) {
	continues := oneRequestBackend(t, func(c *net.TCPConn, _ *bufio.Reader) {
		for range 8 {
			if _, err := io.WriteString(c, "HTTP/1.1 100 Continue\r\n\r\n"); err != nil {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
	})
	hints := oneRequestBackend(t, func(c *net.TCPConn, _ *bufio.Reader) {
		io.WriteString(c, strings.Repeat("HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n", maxInterims+1)+
			"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
	})
	st := fbs.State{Version: 1,
		Clusters: []fbs.Cluster{{Name: "continues", Endpoints: []fbs.Endpoint{{Address: continues}}},
			{Name: "hints", Endpoints: []fbs.Endpoint{{Address: hints}}}},
		Routes: []fbs.Route{{ID: "continues", Host: "*", Prefix: "/continues", Cluster: "continues", TimeoutMs: 300},
			{ID: "hints", Host: "*", Prefix: "/hints", Cluster: "hints"}}}
	addr, _ := startProxy(t, st, nil)
	if r := dialProxy(t, addr).do(get("x", "/continues")); r.status != 504 || r.body != "upstream timeout\n" {
		t.Errorf("a 100 Continue every 100 ms on a 300 ms route: %d %q, want 504 upstream timeout", r.status, r.body)
	}
	c := dialProxy(t, addr)
	c.send(get("x", "/hints"))
	relayed := 0
	r := c.read("GET")
	for ; r.status == 103 && relayed <= maxInterims; r = c.read("GET") {
		relayed++
	}
	if relayed != maxInterims || r.status != 502 || r.body != "bad upstream response\n" {
		t.Errorf("%d 103s then a 200: %d relayed, then %d %q; want %d, then 502 bad upstream response", maxInterims+1, relayed, r.status, r.body, maxInterims)
	}
}

// A response head that trickles in is parsed once per line, not once per
// read (h1.WorthReparsing), and still found whole the moment it is.
func TestTricklingResponseHead(t *testing.T) {
	head := "HTTP/1.1 200 OK\r\nX-Long: " + strings.Repeat("a", 600) + "\r\nX-Next: b\r\nContent-Length: 2\r\n\r\nok"
	drip := oneRequestBackend(t, func(c *net.TCPConn, _ *bufio.Reader) {
		c.SetNoDelay(true)
		for i := 0; i < len(head); i += 7 {
			if _, err := io.WriteString(c, head[i:min(i+7, len(head))]); err != nil {
				return
			}
			time.Sleep(time.Millisecond)
		}
	})
	addr, _ := startProxy(t, oneRoute(drip), nil)
	if r := dialProxy(t, addr).do(get("x", "/")); r.status != 200 || r.body != "ok" {
		t.Fatalf("a head dripped 7 bytes at a time: %d %q", r.status, r.body)
	}
}

// A response head whose last bytes make it malformed, but came too few to
// be parsed again at once (h1.WorthReparsing), is still found malformed
// when the backend then closes or goes quiet: 502 bad upstream response,
// no ejection. It was taken for an answer broken off (ejected as a reset)
// or a timeout (504, ejected).
func TestMalformedHeadTailRefused(t *testing.T) {
	for _, end := range []string{"close", "quiet"} {
		t.Run(end, func(t *testing.T) {
			be := oneRequestBackend(t, func(c *net.TCPConn, _ *bufio.Reader) {
				c.SetNoDelay(true)
				io.WriteString(c, "HTTP/1.1 200 OK\r\n")
				time.Sleep(50 * time.Millisecond)
				io.WriteString(c, "X-B\x01d: v")
				if end == "quiet" {
					time.Sleep(time.Second)
				}
			})
			st := fbs.State{Version: 1,
				Clusters: []fbs.Cluster{{Name: "c", Endpoints: []fbs.Endpoint{{Address: be}}}},
				Routes:   []fbs.Route{{ID: "r", Host: "*", Prefix: "/", Cluster: "c", TimeoutMs: 300}}}
			g := startGateway(t, st, upstream.Options{}, nil)
			if r := dialProxy(t, g.addr).do(get("x", "/")); r.status != 502 || r.body != "bad upstream response\n" {
				t.Errorf("got %d %q; want 502 bad upstream response", r.status, r.body)
			}
			if ej := g.reg.Ejections(); len(ej) != 0 {
				t.Errorf("a malformed head ejected the endpoint: %+v", ej)
			}
		})
	}
}
