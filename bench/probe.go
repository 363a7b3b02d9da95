package bench

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"time"
)

// probeTimeout bounds one probe exchange.
const probeTimeout = 2 * time.Second

// maxProbeBody bounds a response body the probe reads; ours are 64 bytes,
// the edge's error pages a few hundred.
const maxProbeBody = 64 << 10

var errNoLength = errors.New("response without Content-Length")

// prober sends GET requests one at a time over one keep-alive connection and
// returns each response body, to see which backend answered.
type prober struct {
	addr, path string
	conn       net.Conn
	r          *bufio.Reader
	req        []byte
	body       []byte
}

func newProber(addr, path string) *prober {
	return &prober{addr: addr, path: path,
		req: fmt.Appendf(nil, "GET %s HTTP/1.1\r\nHost: bench\r\n\r\n", path)}
}

// get returns the status and body of one exchange; the body is valid until
// the next call. A broken connection is redialled on the next call.
func (p *prober) get() (int, []byte, error) {
	if p.conn == nil {
		c, err := net.DialTimeout("tcp", p.addr, probeTimeout)
		if err != nil {
			return 0, nil, fmt.Errorf("probe %s: %w", p.addr, err)
		}
		p.conn, p.r = c, bufio.NewReaderSize(c, 4096)
	}
	p.conn.SetDeadline(time.Now().Add(probeTimeout))
	if _, err := p.conn.Write(p.req); err != nil {
		p.close()
		return 0, nil, fmt.Errorf("probe %s%s: write: %w", p.addr, p.path, err)
	}
	status, body, err := readResponse(p.r, p.body[:0])
	if err != nil {
		p.close()
		return 0, nil, fmt.Errorf("probe %s%s: %w", p.addr, p.path, err)
	}
	p.body = body
	return status, body, nil
}

func (p *prober) close() {
	if p.conn != nil {
		p.conn.Close()
		p.conn, p.r = nil, nil
	}
}

// readResponse reads one HTTP/1.1 response framed by Content-Length and
// appends its body to dst. It is the probe's only parser of outside bytes, so
// it bounds every line and the body.
func readResponse(r *bufio.Reader, dst []byte) (int, []byte, error) {
	line, err := readLine(r)
	if err != nil {
		return 0, dst, fmt.Errorf("status line: %w", err)
	}
	proto, rest, _ := bytes.Cut(line, []byte(" "))
	code, _, _ := bytes.Cut(rest, []byte(" "))
	status, err := strconv.Atoi(string(code))
	if !bytes.HasPrefix(proto, []byte("HTTP/1.")) || err != nil || len(code) != 3 || status < 100 {
		return 0, dst, fmt.Errorf("malformed status line %q", line)
	}
	length := -1
	for i := 0; ; i++ {
		if i > 100 {
			return 0, dst, errors.New("more than 100 header fields")
		}
		line, err := readLine(r)
		if err != nil {
			return 0, dst, fmt.Errorf("header: %w", err)
		}
		if len(line) == 0 {
			break
		}
		name, value, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			return 0, dst, fmt.Errorf("malformed header line %q", line)
		}
		if bytes.EqualFold(name, hContentLength) {
			n, ok := parseLength(bytes.TrimSpace(value))
			if !ok || length >= 0 || n > maxProbeBody {
				return 0, dst, fmt.Errorf("bad or repeated Content-Length %q", value)
			}
			length = n
		}
	}
	if length < 0 {
		return 0, dst, errNoLength
	}
	start := len(dst)
	dst = append(dst, make([]byte, length)...)
	if _, err := io.ReadFull(r, dst[start:]); err != nil {
		return 0, dst[:start], fmt.Errorf("body: %w", err)
	}
	return status, dst, nil
}

// readLine reads a CRLF-terminated line of at most the reader's buffer size.
func readLine(r *bufio.Reader) ([]byte, error) {
	line, err := r.ReadSlice('\n')
	if err != nil {
		return nil, err
	}
	if len(line) < 2 || line[len(line)-2] != '\r' {
		return nil, errors.New("line not terminated by CRLF")
	}
	return line[:len(line)-2], nil
}
