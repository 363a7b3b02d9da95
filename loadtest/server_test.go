package loadtest

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// testServer is a raw HTTP/1.1 server on 127.0.0.1 whose behaviour each test
// scripts through respond. It reads request heads (and Content-Length
// bodies) itself, so tests control every byte it writes.
type testServer struct {
	ln       net.Listener
	respond  func(s *testServer, n int64, req []byte, w *bufio.Writer) (keep bool)
	reqs     atomic.Int64
	accepted atomic.Int64
	wg       sync.WaitGroup

	mu    sync.Mutex
	conns map[net.Conn]struct{}
	seen  [][]byte // raw requests, when record is set
	recd  bool
}

const okResponse = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"

func respondOK(_ *testServer, _ int64, _ []byte, w *bufio.Writer) bool {
	w.WriteString(okResponse)
	return true
}

func startServer(t testing.TB, respond func(s *testServer, n int64, req []byte, w *bufio.Writer) bool) *testServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	s := &testServer{ln: ln, respond: respond, conns: map[net.Conn]struct{}{}}
	s.wg.Add(1)
	go s.accept()
	t.Cleanup(s.close)
	return s
}

func (s *testServer) addr() string { return s.ln.Addr().String() }

func (s *testServer) accept() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.accepted.Add(1)
		s.mu.Lock()
		s.conns[c] = struct{}{}
		s.mu.Unlock()
		s.wg.Add(1)
		go s.serve(c)
	}
}

func (s *testServer) serve(c net.Conn) {
	defer s.wg.Done()
	defer func() {
		c.Close()
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
	}()
	br := bufio.NewReader(c)
	bw := bufio.NewWriter(c)
	for {
		var req bytes.Buffer
		length := 0
		for {
			line, err := br.ReadSlice('\n')
			if err != nil {
				return
			}
			req.Write(line)
			if k, v, ok := bytes.Cut(bytes.TrimSpace(line), []byte(":")); ok && bytes.EqualFold(k, []byte("content-length")) {
				length, _ = strconv.Atoi(string(bytes.TrimSpace(v)))
			}
			if len(line) <= 2 {
				break
			}
		}
		body := make([]byte, length)
		if _, err := io.ReadFull(br, body); err != nil {
			return
		}
		req.Write(body)
		n := s.reqs.Add(1) - 1
		s.mu.Lock()
		if s.recd {
			s.seen = append(s.seen, req.Bytes())
		}
		s.mu.Unlock()
		keep := s.respond(s, n, req.Bytes(), bw)
		if bw.Flush() != nil || !keep {
			return
		}
	}
}

func (s *testServer) close() {
	s.ln.Close()
	s.mu.Lock()
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

func (s *testServer) requests() [][]byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([][]byte(nil), s.seen...)
}

// stallOnce returns a responder that answers at once, except that the first
// request arriving after `after` from now waits `stall` before its answer.
func stallOnce(after, stall time.Duration) func(*testServer, int64, []byte, *bufio.Writer) bool {
	at := time.Now().Add(after)
	var once sync.Once
	return func(_ *testServer, _ int64, _ []byte, w *bufio.Writer) bool {
		if time.Now().After(at) {
			once.Do(func() { time.Sleep(stall) })
		}
		w.WriteString(okResponse)
		return true
	}
}
