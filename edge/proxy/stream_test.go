package proxy

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// rawConn dials addr with a deadline that bounds the whole test exchange.
func rawConn(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	t.Cleanup(func() { c.Close() })
	return c
}

func TestTrailersPassThrough(t *testing.T) {
	gotTrailer := make(chan string, 1)
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		gotTrailer <- string(body) + "|" + r.Trailer.Get("X-Checksum")
		w.Header().Set("Trailer", "X-Digest")
		w.WriteHeader(200)
		io.WriteString(w, "response body")
		w.(http.Flusher).Flush() // forces chunked framing
		w.Header().Set("X-Digest", "abc123")
	}))
	defer be.Close()
	addr, _ := startProxy(t, oneRoute(be.Listener.Addr().String()), nil)

	c := rawConn(t, addr)
	// A body big enough to stream is sent in two writes so the proxy
	// forwards it in pieces; the trailer must still arrive.
	big := strings.Repeat("a", 100<<10)
	io.WriteString(c, "POST /t HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum\r\n\r\n")
	io.WriteString(c, "19000\r\n"+big+"\r\n")
	time.Sleep(20 * time.Millisecond)
	io.WriteString(c, "0\r\nX-Checksum: 42\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if string(body) != "response body" || resp.Trailer.Get("X-Digest") != "abc123" {
		t.Fatalf("client got body %q trailer %v", body, resp.Trailer)
	}
	if got := <-gotTrailer; got != big+"|42" {
		t.Fatalf("backend got %d bytes, trailer %q", len(got), got[strings.LastIndexByte(got, '|'):])
	}
}

func TestEarlyHintsForwarded(t *testing.T) {
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", "</style.css>; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
		w.Header().Del("Link")
		io.WriteString(w, "final")
	}))
	defer be.Close()
	addr, _ := startProxy(t, oneRoute(be.Listener.Addr().String()), nil)
	c := rawConn(t, addr)
	io.WriteString(c, "GET /h HTTP/1.1\r\nHost: x\r\n\r\n")
	br := bufio.NewReader(c)
	line, _ := br.ReadString('\n')
	if line != "HTTP/1.1 103 Early Hints\r\n" {
		t.Fatalf("first line %q, want the 103", line)
	}
	var hint bool
	for {
		l, err := br.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if l == "\r\n" {
			break
		}
		hint = hint || strings.HasPrefix(l, "Link: </style.css>")
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	if !hint || resp.StatusCode != 200 || string(body) != "final" {
		t.Fatalf("hint=%v final %d %q", hint, resp.StatusCode, body)
	}
}

func TestBodyTimeoutWhileStreaming(t *testing.T) {
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
	}))
	defer be.Close()
	addr, m := startProxy(t, oneRoute(be.Listener.Addr().String()), func(c *Config) {
		c.HeaderTimeout = 200 * time.Millisecond
	})
	c := rawConn(t, addr)
	// 1 MiB announced (streamed: above BufferBodyBytes), 1 KiB sent, then
	// silence.
	io.WriteString(c, "POST /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 1048576\r\n\r\n")
	c.Write(bytes.Repeat([]byte("b"), 1024))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 408 || string(body) != "request body timeout\n" || !resp.Close {
		t.Fatalf("got %d %q close=%v", resp.StatusCode, body, resp.Close)
	}
	if !strings.Contains(scrape(m), `snapgate_edge_errors_total{cause="client_timeout"} 1`) {
		t.Fatal("timeout not counted")
	}
}

func scrape(m interface{ WritePrometheus(io.Writer) }) string {
	var b strings.Builder
	m.WritePrometheus(&b)
	return b.String()
}

// TestUpstreamAnswersEarly: the backend refuses a large upload after its
// head and hangs up while the client is still sending. The client must
// get the backend's answer and a closed connection, not a 502.
func TestUpstreamAnswersEarly(t *testing.T) {
	backend := oneRequestBackend(t, func(c *net.TCPConn, br *bufio.Reader) {
		io.WriteString(c, "HTTP/1.1 413 Content Too Large\r\nContent-Length: 9\r\nConnection: close\r\n\r\ntoo large")
		// Half-close, then drain briefly as servers do (a lingering
		// close), so the answer is not lost to a reset.
		c.CloseWrite()
		c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		io.Copy(io.Discard, br)
	})
	addr, _ := startProxy(t, oneRoute(backend), nil)
	c := rawConn(t, addr)
	const size = 64 << 20
	io.WriteString(c, "PUT /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 67108864\r\n\r\n")
	sendDone := make(chan struct{})
	go func() {
		defer close(sendDone)
		chunk := make([]byte, 64<<10)
		for sent := 0; sent < size; sent += len(chunk) {
			if _, err := c.Write(chunk); err != nil {
				return // the proxy closed on us: expected
			}
		}
	}()
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 413 || string(body) != "too large" || !resp.Close {
		t.Fatalf("got %d %q close=%v", resp.StatusCode, body, resp.Close)
	}
	c.Close()
	<-sendDone
}

// TestRefusedChunkedBodyNeverEndsUpstream: a streamed chunked body goes
// upstream as it arrives, but the last chunk waits for its trailer
// section: when the trailer is refused (here a Host field), the backend
// has not seen the body end, so it cannot act on it.
func TestRefusedChunkedBodyNeverEndsUpstream(t *testing.T) {
	got := make(chan []byte, 1)
	ln := serveConns(t, func(c net.Conn, _ int) {
		b, _ := io.ReadAll(c) // until the edge closes its side
		got <- b
	})
	addr, _ := startProxy(t, oneRoute(ln.Addr().String()), nil)
	c := rawConn(t, addr)
	io.WriteString(c, "POST /p HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n")
	time.Sleep(200 * time.Millisecond) // the edge streams what it has
	io.WriteString(c, "Host: evil\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 400 {
		t.Fatalf("status %d, want 400 for a Host trailer", resp.StatusCode)
	}
	select {
	case b := <-got:
		if !bytes.Contains(b, []byte("3\r\nabc\r\n")) || bytes.Contains(b, []byte("\r\n0\r\n")) {
			t.Fatalf("the backend received %q; want the first chunk and not the last", b)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the upstream connection was never closed")
	}
}
