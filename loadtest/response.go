package loadtest

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
)

// ErrBadResponse wraps every response the client cannot frame: a malformed
// status line or header, ambiguous or invalid framing, an oversized head.
var ErrBadResponse = errors.New("bad response")

const (
	// readBufSize bounds one status or header line (bufio.Reader.ReadSlice
	// fails with ErrBufferFull past it). 8 KiB matches common server limits.
	readBufSize = 8 << 10
	// maxHeaderLines bounds the header block so a broken server cannot keep a
	// worker parsing forever.
	maxHeaderLines = 128
	// maxInterim bounds 1xx responses before the final one.
	maxInterim = 8
	// maxBodyLen keeps Content-Length and chunk-size arithmetic far from
	// overflow; no load-test response is a terabyte.
	maxBodyLen = 1 << 40
)

// response is what a worker needs from a response: its status and whether
// the connection can carry another request.
type response struct {
	status    int
	keepAlive bool
}

func badf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrBadResponse, fmt.Sprintf(format, args...))
}

// readResponse reads one whole response from br and discards its body. head
// says the request was HEAD (no body follows whatever the headers say). It
// allocates nothing on success: lines are slices into br's buffer and bodies
// are skipped with Discard.
func readResponse(br *bufio.Reader, head bool) (response, error) {
	for range maxInterim + 1 {
		r, framing, length, err := readHead(br)
		if err != nil {
			return response{}, err
		}
		if r.status == 101 {
			return response{}, badf("status 101: the client does not switch protocols")
		}
		if r.status < 200 {
			continue // interim response (100 Continue, 103 Early Hints): the real one follows
		}
		if head || r.status == 204 || r.status == 304 {
			return r, nil
		}
		switch framing {
		case frameLength:
			if _, err := br.Discard(int(length)); err != nil {
				return response{}, bodyErr(err)
			}
		case frameChunked:
			if err := discardChunked(br); err != nil {
				return response{}, err
			}
		case frameClose:
			// No length: the body runs to the end of the connection.
			if _, err := io.Copy(io.Discard, br); err != nil {
				return response{}, err
			}
			r.keepAlive = false
		}
		return r, nil
	}
	return response{}, badf("more than %d interim (1xx) responses", maxInterim)
}

// bodyErr turns a clean EOF inside a body into ErrUnexpectedEOF: the server
// closed the connection before the response was complete.
func bodyErr(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

type framing int

const (
	frameClose framing = iota
	frameLength
	frameChunked
)

// readLine returns one line without its CRLF (a bare LF is accepted, as RFC
// 9112 §2.2 allows). The slice is valid until the next read from br.
func readLine(br *bufio.Reader) ([]byte, error) {
	line, err := br.ReadSlice('\n')
	if err != nil {
		if errors.Is(err, bufio.ErrBufferFull) {
			return nil, badf("line longer than %d bytes", readBufSize)
		}
		return nil, err
	}
	line = line[:len(line)-1]
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	if bytes.IndexByte(line, '\r') >= 0 {
		return nil, badf("bare CR in line")
	}
	return line, nil
}

func readHead(br *bufio.Reader) (r response, f framing, length int64, err error) {
	line, err := readLine(br)
	if err != nil {
		return r, f, 0, err
	}
	var http10 bool
	switch {
	case bytes.HasPrefix(line, []byte("HTTP/1.1 ")):
	case bytes.HasPrefix(line, []byte("HTTP/1.0 ")):
		http10 = true
	default:
		return r, f, 0, badf("status line %.40q: want HTTP/1.1 or HTTP/1.0", line)
	}
	code := line[len("HTTP/1.1 "):]
	if len(code) < 3 || (len(code) > 3 && code[3] != ' ') {
		return r, f, 0, badf("status line %.40q: want a 3-digit status", line)
	}
	for _, c := range code[:3] {
		if c < '0' || c > '9' {
			return r, f, 0, badf("status line %.40q: want a 3-digit status", line)
		}
		r.status = r.status*10 + int(c-'0')
	}
	if r.status < 100 || r.status > 599 {
		return r, f, 0, badf("status %d out of range", r.status)
	}
	r.keepAlive = !http10
	length = -1
	chunked := false
	for i := 0; ; i++ {
		if i == maxHeaderLines {
			return r, f, 0, badf("more than %d header lines", maxHeaderLines)
		}
		line, err := readLine(br)
		if err != nil {
			return r, f, 0, bodyErr(err)
		}
		if len(line) == 0 {
			break
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 {
			return r, f, 0, badf("header line %.40q: no field name", line)
		}
		name, value := line[:colon], trimOWS(line[colon+1:])
		for _, c := range name {
			if !isTokenChar(c) {
				return r, f, 0, badf("header name %.40q: invalid character %q", name, c)
			}
		}
		switch {
		case bytes.EqualFold(name, []byte("Content-Length")):
			n, ok := parseDecimal(value)
			if !ok {
				return r, f, 0, badf("Content-Length %.40q: not a length", value)
			}
			if length >= 0 && length != n {
				return r, f, 0, badf("conflicting Content-Length headers")
			}
			length = n
		case bytes.EqualFold(name, []byte("Transfer-Encoding")):
			if chunked || !bytes.EqualFold(value, []byte("chunked")) {
				return r, f, 0, badf("Transfer-Encoding %.40q: only a single chunked coding is supported", value)
			}
			chunked = true
		case bytes.EqualFold(name, []byte("Connection")):
			if hasToken(value, []byte("close")) {
				r.keepAlive = false
			} else if http10 && hasToken(value, []byte("keep-alive")) {
				r.keepAlive = true
			}
		}
	}
	switch {
	case chunked && length >= 0:
		return r, f, 0, badf("both Content-Length and Transfer-Encoding")
	case chunked:
		f = frameChunked
	case length >= 0:
		f = frameLength
	default:
		f = frameClose
	}
	return r, f, length, nil
}

// discardChunked skips a chunked body and its trailer section.
func discardChunked(br *bufio.Reader) error {
	for {
		line, err := readLine(br)
		if err != nil {
			return bodyErr(err)
		}
		if i := bytes.IndexByte(line, ';'); i >= 0 {
			line = line[:i] // chunk extensions carry nothing we need
		}
		size, ok := parseHex(trimOWS(line))
		if !ok {
			return badf("chunk size %.40q: not a hex number", line)
		}
		if size == 0 {
			break
		}
		if _, err := br.Discard(int(size)); err != nil {
			return bodyErr(err)
		}
		end, err := readLine(br)
		if err != nil {
			return bodyErr(err)
		}
		if len(end) != 0 {
			return badf("chunk data longer than its size")
		}
	}
	for i := 0; ; i++ {
		if i == maxHeaderLines {
			return badf("more than %d trailer lines", maxHeaderLines)
		}
		line, err := readLine(br)
		if err != nil {
			return bodyErr(err)
		}
		if len(line) == 0 {
			return nil
		}
	}
}

func parseDecimal(b []byte) (int64, bool) {
	if len(b) == 0 {
		return 0, false
	}
	var n int64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
		if n > maxBodyLen {
			return 0, false
		}
	}
	return n, true
}

func parseHex(b []byte) (int64, bool) {
	if len(b) == 0 {
		return 0, false
	}
	var n int64
	for _, c := range b {
		var d byte
		switch {
		case c >= '0' && c <= '9':
			d = c - '0'
		case c >= 'a' && c <= 'f':
			d = c - 'a' + 10
		case c >= 'A' && c <= 'F':
			d = c - 'A' + 10
		default:
			return 0, false
		}
		n = n<<4 | int64(d)
		if n > maxBodyLen {
			return 0, false
		}
	}
	return n, true
}

func trimOWS(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

// hasToken reports whether the comma-separated list v contains tok
// (case-insensitively).
func hasToken(v, tok []byte) bool {
	for len(v) > 0 {
		var item []byte
		if i := bytes.IndexByte(v, ','); i >= 0 {
			item, v = v[:i], v[i+1:]
		} else {
			item, v = v, nil
		}
		if bytes.EqualFold(trimOWS(item), tok) {
			return true
		}
	}
	return false
}

// isTokenChar reports whether c may appear in an RFC 9110 token (field names,
// methods).
func isTokenChar(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	return c < 0x80 && bytes.IndexByte([]byte("!#$%&'*+-.^_`|~"), c) >= 0
}
