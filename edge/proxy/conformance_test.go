package proxy

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// scriptedBackend is a raw TCP backend: for the n-th request (from 0) on a
// connection, answer returns the raw response bytes to write, or "" to
// close the connection without answering. Every request head it received
// is recorded, with its body read per Content-Length or chunked framing.
type scriptedBackend struct {
	ln   net.Listener
	mu   sync.Mutex
	seen []*http.Request
	wg   sync.WaitGroup
}

func newScriptedBackend(t *testing.T, answer func(r *http.Request, n int) string) *scriptedBackend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &scriptedBackend{ln: ln}
	var conns sync.Map
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Store(c, true)
			b.wg.Add(1)
			go func() {
				defer b.wg.Done()
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				br := bufio.NewReader(c)
				for n := 0; ; n++ {
					r, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					io.Copy(io.Discard, r.Body)
					b.mu.Lock()
					b.seen = append(b.seen, r)
					b.mu.Unlock()
					raw := answer(r, n)
					if raw == "" {
						return
					}
					if _, err := io.WriteString(c, raw); err != nil {
						return
					}
				}
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		conns.Range(func(c, _ any) bool { c.(net.Conn).Close(); return true })
		b.wg.Wait()
	})
	return b
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
// would not understand a 1xx.
func TestHTTP10ExpectIgnored(t *testing.T) {
	f := newFixture(t, nil)
	c := f.dial()
	c.send("PUT /api/e HTTP/1.0\r\nHost: a.example\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
	time.Sleep(50 * time.Millisecond) // a 100 would be on its way by now
	c.send("data")
	line, err := c.br.ReadString('\n')
	if err != nil || line != "HTTP/1.1 200 OK\r\n" {
		t.Fatalf("first line %q (%v), want the final response", line, err)
	}
}

// An h2c upgrade is not passed on: a backend switching to HTTP/2 would
// serve any path on the tunnel, past this edge's routing and policies.
func TestH2CUpgradeNotForwarded(t *testing.T) {
	be := newScriptedBackend(t, func(r *http.Request, n int) string {
		if r.Header.Get("Upgrade") != "" {
			return "HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n"
		}
		return "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
	})
	addr, _ := startProxy(t, oneRoute(be.addr()), nil)
	c := dialProxy(t, addr)
	r := c.do("GET /admin HTTP/1.1\r\nHost: x\r\nUpgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n")
	if r.status != 200 || r.body != "ok" {
		t.Fatalf("client got %d %q", r.status, r.body)
	}
	reqs := be.requests()
	if len(reqs) != 1 || reqs[0].Header.Get("Upgrade") != "" || reqs[0].Header.Get("Http2-Settings") != "" {
		t.Fatalf("backend saw %v", reqs[0].Header)
	}
}

// Framing fields that do not apply downstream are not relayed: none on a
// 1xx or 204 (RFC 9110 §8.6, RFC 9112 §6.1), no Transfer-Encoding to an
// HTTP/1.0 client, and a transfer-coded body for an HTTP/1.0 client is a
// 502 as chunked already was. Each answer keeps the client connection.
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
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan string, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- err.Error()
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		br := bufio.NewReader(c)
		r, err := http.ReadRequest(br)
		if err != nil {
			got <- err.Error()
			return
		}
		body, _ := io.ReadAll(r.Body)
		io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
		tunnel, _ := io.ReadAll(br) // until the edge closes the tunnel
		got <- "body=" + string(body) + " tunnel=" + string(tunnel)
	}()
	addr, _ := startProxy(t, oneRoute(ln.Addr().String()), nil)
	c := rawConn(t, addr)
	io.WriteString(c, "POST /up HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nContent-Length: 5\r\n\r\nhello")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil || resp.StatusCode != 101 {
		t.Fatalf("%v %v", resp, err)
	}
	io.WriteString(c, "frame")
	c.(*net.TCPConn).CloseWrite()
	if g := <-got; g != "body=hello tunnel=frame" {
		t.Fatalf("backend got %q", g)
	}
}
