package proxy

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// sumServer answers every request with the length and SHA-256 of the body
// it received; started (if not nil) hears of each request's head.
func sumServer(t *testing.T, started chan<- struct{}) *httptest.Server {
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if started != nil {
			started <- struct{}{}
		}
		h := sha256.New()
		n, err := io.Copy(h, r.Body)
		fmt.Fprintf(w, "%d %x %v", n, h.Sum(nil), err)
	}))
	t.Cleanup(be.Close)
	return be
}

func sumOf(b []byte) string {
	s := sha256.Sum256(b)
	return fmt.Sprintf("%d %s <nil>", len(b), hex.EncodeToString(s[:]))
}

// TestDetachedUploadIntact: a streamed body whose first part arrives in
// the same segment as the head (so it sits in netpoll's buffer when the
// connection is detached) and whose rest arrives later must reach the
// backend byte for byte, and the client gets the answer with
// Connection: close.
func TestDetachedUploadIntact(t *testing.T) {
	started := make(chan struct{}, 1)
	be := sumServer(t, started)
	addr, _ := startProxy(t, oneRoute(be.Listener.Addr().String()), nil)
	body := make([]byte, 3<<20)
	for i := range body {
		body[i] = byte(i * 7)
	}
	for _, chunked := range []bool{false, true} {
		t.Run(fmt.Sprintf("chunked=%v", chunked), func(t *testing.T) {
			c := rawConn(t, addr)
			var wire bytes.Buffer
			if chunked {
				wire.WriteString("POST /u HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
				for off := 0; off < len(body); off += 100000 {
					p := body[off:min(off+100000, len(body))]
					wire.WriteString(strconv.FormatInt(int64(len(p)), 16) + "\r\n")
					wire.Write(p)
					wire.WriteString("\r\n")
				}
				wire.WriteString("0\r\n\r\n")
			} else {
				wire.WriteString("POST /u HTTP/1.1\r\nHost: x\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n")
				wire.Write(body)
			}
			b := wire.Bytes()
			// Head plus 1000 body bytes first; the rest, in pieces, once
			// the backend has the head, so the body is sure to stream.
			first := bytes.Index(b, []byte("\r\n\r\n")) + 4 + 1000
			c.Write(b[:first])
			go func() {
				<-started
				for off := first; off < len(b); off += 256 << 10 {
					if _, err := c.Write(b[off:min(off+256<<10, len(b))]); err != nil {
						return
					}
				}
			}()
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				t.Fatal(err)
			}
			got, _ := io.ReadAll(resp.Body)
			if string(got) != sumOf(body) || !resp.Close {
				t.Fatalf("backend saw %q (close=%v), want %q", got, resp.Close, sumOf(body))
			}
		})
	}
}

// TestDetachedUploadsConcurrent runs uploads of random sizes and write
// patterns in parallel (under -race too) so that detaching races with
// netpoll's poller reading the same connections.
func TestDetachedUploadsConcurrent(t *testing.T) {
	be := sumServer(t, nil)
	addr, _ := startProxy(t, oneRoute(be.Listener.Addr().String()), nil)
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for i := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(i), 1))
			body := make([]byte, 65<<10+rng.IntN(2<<20))
			for j := range body {
				body[j] = byte(rng.Uint32())
			}
			c := rawConn(t, addr)
			head := "PUT /p HTTP/1.1\r\nHost: x\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n"
			go func() {
				c.Write([]byte(head))
				for off := 0; off < len(body); {
					n := min(1+rng.IntN(200<<10), len(body)-off)
					if _, err := c.Write(body[off : off+n]); err != nil {
						return
					}
					off += n
				}
			}()
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				errs <- err
				return
			}
			got, _ := io.ReadAll(resp.Body)
			if string(got) != sumOf(body) {
				errs <- fmt.Errorf("upload %d: backend saw %q, want %q", i, got, sumOf(body))
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// A backend that takes the head of a streamed upload and then stops
// reading: the write times out. If it never answers, the client gets a
// 504 "upstream timeout", counted as a timeout, not a 502 "upstream
// connection closed" as if it had hung up; if it then does hang up (a
// reset), that is what the client hears.
func TestStalledUploadTimesOut(t *testing.T) {
	for _, tc := range []struct {
		name        string
		buffered    bool // a Content-Length body read whole first, then written in one go
		hangUp      bool
		status      int
		body, cause string
		otherCause  string
	}{
		{"no answer", false, false, 504, "upstream timeout", "upstream_timeout", "upstream_closed"},
		{"reset after stalling", false, true, 502, "upstream connection closed", "upstream_closed", "upstream_timeout"},
		{"buffered, no answer", true, false, 504, "upstream timeout", "upstream_timeout", "upstream_closed"},
		{"buffered, reset after stalling", true, true, 502, "upstream connection closed", "upstream_closed", "upstream_timeout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			done := make(chan struct{})
			var conns atomic.Int32
			ln := serveConns(t, func(c net.Conn, _ int) {
				conns.Add(1)
				c.Read(make([]byte, 4096)) // the head, then nothing more
				if !tc.hangUp {
					<-done
					return
				}
				time.Sleep(400 * time.Millisecond) // past the proxy's write timeout
				c.(*net.TCPConn).SetLinger(0)
			})
			t.Cleanup(func() { close(done) }) // before serveConns waits for its handlers
			size := 256 << 20
			addr, m := startProxy(t, oneRoute(ln.Addr().String()), func(c *Config) {
				c.WriteTimeout = 200 * time.Millisecond
				c.UpstreamTimeout = map[bool]time.Duration{false: 300 * time.Millisecond, true: 3 * time.Second}[tc.hangUp]
				if tc.buffered {
					// More than the loopback socket buffers take, so that
					// the write to the upstream blocks.
					size = 24 << 20
					c.BufferBodyBytes = int64(size)
				}
			})
			c := rawConn(t, addr)
			if _, err := c.Write([]byte("POST /u HTTP/1.1\r\nHost: x\r\nContent-Length: " + strconv.Itoa(size) + "\r\n\r\n")); err != nil {
				t.Fatal(err)
			}
			go func() {
				chunk := make([]byte, 1<<20)
				for sent := 0; sent < size; sent += len(chunk) {
					if _, err := c.Write(chunk); err != nil {
						return
					}
				}
			}()
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tc.status || !strings.Contains(string(body), tc.body) {
				t.Fatalf("got %d %q; want %d %s", resp.StatusCode, body, tc.status, tc.body)
			}
			hasSample(t, m, `snapgate_edge_errors_total{cause="`+tc.cause+`"} 1`)
			hasSample(t, m, `snapgate_edge_errors_total{cause="`+tc.otherCause+`"} 0`)
			if n := conns.Load(); n != 1 {
				t.Errorf("the upstream saw %d connections, want 1: nothing is redone after a stall", n)
			}
		})
	}
}

// TestBufferedEarlyAnswerKeepsClient: a buffered request was read whole
// before it went upstream, so a backend's early answer after a stalled
// write leaves the client connection in step for its next request.
func TestBufferedEarlyAnswerKeepsClient(t *testing.T) {
	done := make(chan struct{})
	ln := serveConns(t, func(c net.Conn, i int) {
		c.Read(make([]byte, 4096)) // a head, then nothing more
		if i == 0 {
			time.Sleep(400 * time.Millisecond) // past the proxy's write timeout
			c.Write([]byte("HTTP/1.1 413 Payload Too Large\r\nContent-Length: 0\r\n\r\n"))
		} else {
			c.Write([]byte("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"))
		}
		<-done
	})
	t.Cleanup(func() { close(done) }) // before serveConns waits for its handlers
	size := 24 << 20                  // more than the loopback socket buffers take
	addr, m := startProxy(t, oneRoute(ln.Addr().String()), func(c *Config) {
		c.WriteTimeout = 200 * time.Millisecond
		c.UpstreamTimeout = 3 * time.Second
		c.BufferBodyBytes = int64(size)
	})
	c := rawConn(t, addr)
	go func() {
		c.Write([]byte("POST /u HTTP/1.1\r\nHost: x\r\nContent-Length: " + strconv.Itoa(size) + "\r\n\r\n"))
		c.Write(make([]byte, size))
	}()
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.ReadAll(resp.Body)
	if resp.StatusCode != 413 || resp.Close {
		t.Fatalf("first answer %d, close %v; want the backend's early 413 on a kept connection", resp.StatusCode, resp.Close)
	}
	c.Write([]byte("GET /next HTTP/1.1\r\nHost: x\r\n\r\n"))
	if resp, err = http.ReadResponse(br, nil); err != nil || resp.StatusCode != 200 {
		t.Fatalf("next request on the client connection: %v %v", resp, err)
	}
	hasSample(t, m, `snapgate_edge_errors_total{cause="upstream_timeout"} 0`)
}
