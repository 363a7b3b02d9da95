package bench

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"sync"
)

// BodySize is the size of every backend response body.
const BodySize = 64

// maxRequestHead bounds a request head the backend buffers (431 beyond).
const maxRequestHead = 8 << 10

// BackendBody is the 64-byte body the backend named name answers with: the
// name first (so the churn probe can tell backends apart), padded with dots.
func BackendBody(name string) []byte {
	b := bytes.Repeat([]byte{'.'}, BodySize)
	b[BodySize-1] = '\n'
	copy(b[:BodySize-1], name)
	return b
}

// cannedResponse is a whole keep-alive response, built once and written
// as is.
func cannedResponse(status string, body []byte) []byte {
	head := fmt.Sprintf("HTTP/1.1 %s\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n", status, len(body))
	return append([]byte(head), body...)
}

// answerFunc returns the whole response to the request whose head is
// given. It runs on the connection's goroutine, once per request, and must
// not keep head.
type answerFunc func(head []byte) []byte

// ServeBackend answers every request on ln with 200 and BackendBody(name)
// until ctx ends. It is deliberately minimal, one goroutine per keep-alive
// connection writing pre-built bytes, so that it is never what a benchmark
// measures. Pipelined requests are answered in one write.
func ServeBackend(ctx context.Context, ln net.Listener, name string) error {
	resp := cannedResponse("200 OK", BackendBody(name))
	return serveHTTP(ctx, ln, "backend "+name, func([]byte) []byte { return resp })
}

// serveHTTP accepts connections on ln until ctx ends and answers each
// request with answer; what names the server in errors.
func serveHTTP(ctx context.Context, ln net.Listener, what string, answer answerFunc) error {
	var wg sync.WaitGroup
	var mu sync.Mutex
	conns := map[net.Conn]struct{}{}
	stop := context.AfterFunc(ctx, func() {
		ln.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
	})
	defer stop()
	var err error
	for {
		c, aerr := ln.Accept()
		if aerr != nil {
			if ctx.Err() == nil {
				err = fmt.Errorf("%s: accept on %s: %w", what, ln.Addr(), aerr)
			}
			break
		}
		mu.Lock()
		if ctx.Err() != nil {
			mu.Unlock()
			c.Close()
			break
		}
		conns[c] = struct{}{}
		mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			serveBackendConn(c, answer)
			mu.Lock()
			delete(conns, c)
			mu.Unlock()
			c.Close()
		}()
	}
	ln.Close()
	wg.Wait()
	return err
}

func serveBackendConn(c net.Conn, answer answerFunc) {
	in := make([]byte, 16<<10)
	out := make([]byte, 0, 16<<10)
	have, discard := 0, 0 // bytes buffered; body bytes still to skip
	for {
		n, err := c.Read(in[have:])
		if n == 0 && err != nil {
			return
		}
		have += n
		buf := in[:have]
		out = out[:0]
		for {
			if discard > 0 {
				k := min(discard, len(buf))
				buf, discard = buf[k:], discard-k
				if discard > 0 {
					break
				}
			}
			head, body, code := ScanRequest(buf)
			if code != 0 {
				out = append(out, errorResponse(code)...)
				c.Write(out)
				return
			}
			if head == 0 {
				break
			}
			out = append(out, answer(buf[:head])...)
			buf, discard = buf[head:], body
		}
		if len(out) > 0 {
			if _, err := c.Write(out); err != nil {
				return
			}
		}
		have = copy(in, buf)
		if have == len(in) { // an incomplete head filled the buffer
			c.Write(errorResponse(431))
			return
		}
	}
}

func errorResponse(code int) []byte {
	text := map[int]string{400: "Bad Request", 431: "Request Header Fields Too Large", 501: "Not Implemented"}[code]
	return fmt.Appendf(nil, "HTTP/1.1 %d %s\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", code, text)
}

var (
	crlf2          = []byte("\r\n\r\n")
	hContentLength = []byte("content-length")
	hTransferEnc   = []byte("transfer-encoding")
)

// ScanRequest looks at the start of buf for one complete HTTP/1.1 request
// head. It returns the head's length (0 while incomplete) and the body length
// from Content-Length; a non-zero code is the error status to answer with
// before closing: 400 for a malformed head, 431 for an oversized one, 501 for
// Transfer-Encoding (the backend does not decode chunked bodies).
func ScanRequest(buf []byte) (head, body, code int) {
	end := bytes.Index(buf, crlf2)
	if end < 0 {
		if len(buf) > maxRequestHead {
			return 0, 0, 431
		}
		return 0, 0, 0
	}
	if end+4 > maxRequestHead {
		return 0, 0, 431
	}
	lines := buf[:end]
	reqLine, rest, _ := bytes.Cut(lines, []byte("\r\n"))
	if bytes.Count(reqLine, []byte(" ")) != 2 || !bytes.HasPrefix(reqLine[bytes.LastIndexByte(reqLine, ' ')+1:], []byte("HTTP/1.")) {
		return 0, 0, 400
	}
	seenCL := false
	for len(rest) > 0 {
		var line []byte
		line, rest, _ = bytes.Cut(rest, []byte("\r\n"))
		name, value, ok := bytes.Cut(line, []byte(":"))
		if !ok || len(name) == 0 || bytes.ContainsAny(name, " \t") {
			return 0, 0, 400
		}
		switch {
		case bytes.EqualFold(name, hTransferEnc):
			return 0, 0, 501
		case bytes.EqualFold(name, hContentLength):
			n, ok := parseLength(bytes.TrimSpace(value))
			if !ok || seenCL {
				return 0, 0, 400
			}
			seenCL, body = true, n
		}
	}
	return end + 4, body, 0
}

// parseLength parses a Content-Length value: digits only, at most 1 TiB.
func parseLength(v []byte) (int, bool) {
	if len(v) == 0 || len(v) > 13 {
		return 0, false
	}
	n := 0
	for _, c := range v {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, n <= 1<<40
}
