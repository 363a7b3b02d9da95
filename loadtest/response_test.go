package loadtest

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
)

func TestReadResponse(t *testing.T) {
	for _, tc := range []struct {
		name, in  string
		head      bool
		status    int
		keepAlive bool
		rest      string // bytes left unread: proves the body was framed exactly
	}{
		{"length", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloNEXT", false, 200, true, "NEXT"},
		{"no reason", "HTTP/1.1 204\r\n\r\nNEXT", false, 204, true, "NEXT"},
		{"bare LF", "HTTP/1.1 200 OK\nContent-Length: 2\n\nokNEXT", false, 200, true, "NEXT"},
		{"case and OWS", "HTTP/1.1 404 Not Found\r\ncontent-length:\t3 \r\n\r\nabcNEXT", false, 404, true, "NEXT"},
		{"same length twice", "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nxNEXT", false, 200, true, "NEXT"},
		{"chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n1;ext=1\r\n!\r\nA\r\n0123456789\r\n0\r\n\r\nNEXT", false, 200, true, "NEXT"},
		{"chunked trailers", "HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\n\r\n3\r\nabc\r\n0\r\nX-Sum: 1\r\nX-B: 2\r\n\r\nNEXT", false, 200, true, "NEXT"},
		{"close header", "HTTP/1.1 200 OK\r\nConnection: keep-alive, Close\r\nContent-Length: 0\r\n\r\nNEXT", false, 200, false, "NEXT"},
		{"http 1.0", "HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\nNEXT", false, 200, false, "NEXT"},
		{"http 1.0 keep-alive", "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\nNEXT", false, 200, true, "NEXT"},
		{"until close", "HTTP/1.1 200 OK\r\n\r\nall of this is body", false, 200, false, ""},
		{"head ignores length", "HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\nNEXT", true, 200, true, "NEXT"},
		{"304 has no body", "HTTP/1.1 304 Not Modified\r\nContent-Length: 99\r\n\r\nNEXT", false, 304, true, "NEXT"},
		{"interim", "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early\r\nLink: x\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\nNEXT", false, 201, true, "NEXT"},
	} {
		br := bufio.NewReaderSize(strings.NewReader(tc.in), readBufSize)
		r, err := readResponse(br, tc.head)
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if r.status != tc.status || r.keepAlive != tc.keepAlive {
			t.Errorf("%s: got %+v, want status %d keepAlive %v", tc.name, r, tc.status, tc.keepAlive)
		}
		if rest, _ := io.ReadAll(br); string(rest) != tc.rest {
			t.Errorf("%s: left %q unread, want %q", tc.name, rest, tc.rest)
		}
	}
}

func TestReadResponseErrors(t *testing.T) {
	long := "HTTP/1.1 200 OK\r\nX: " + strings.Repeat("a", readBufSize) + "\r\n\r\n"
	many := "HTTP/1.1 200 OK\r\n" + strings.Repeat("X: 1\r\n", maxHeaderLines+1) + "\r\n"
	interim := strings.Repeat("HTTP/1.1 100 Continue\r\n\r\n", maxInterim+1)
	for _, tc := range []struct {
		name, in string
		bad      bool // ErrBadResponse; otherwise an EOF of some kind
	}{
		{"empty", "", false},
		{"not http", "SSH-2.0-OpenSSH\r\n", true},
		{"http2 preface", "PRI * HTTP/2.0\r\n", true},
		{"short status", "HTTP/1.1 20\r\n\r\n", true},
		{"letters", "HTTP/1.1 2x0 OK\r\n\r\n", true},
		{"no space after status", "HTTP/1.1 200OK\r\n\r\n", true},
		{"status range", "HTTP/1.1 600 Huh\r\n\r\n", true},
		{"switching", "HTTP/1.1 101 Switching Protocols\r\n\r\n", true},
		{"bare CR", "HTTP/1.1 200 OK\r\nX: a\rb\r\n\r\n", true},
		{"no colon", "HTTP/1.1 200 OK\r\nContent-Length 2\r\n\r\nok", true},
		{"space before colon", "HTTP/1.1 200 OK\r\nContent-Length : 2\r\n\r\nok", true},
		{"fold", "HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n", true},
		{"bad length", "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", true},
		{"huge length", "HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n", true},
		{"conflicting lengths", "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", true},
		{"length and chunked", "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", true},
		{"gzip coding", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", true},
		{"chunked twice", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", true},
		{"bad chunk size", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", true},
		{"huge chunk", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffff\r\n", true},
		{"chunk overrun", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nab\r\n0\r\n\r\n", true},
		{"long line", long, true},
		{"many headers", many, true},
		{"many interim", interim, true},
		{"truncated head", "HTTP/1.1 200 OK\r\nContent-Len", false},
		{"truncated body", "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", false},
		{"truncated chunk", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab", false},
	} {
		_, err := readResponse(bufio.NewReaderSize(strings.NewReader(tc.in), readBufSize), false)
		switch {
		case err == nil:
			t.Errorf("%s: accepted", tc.name)
		case tc.bad && !errors.Is(err, ErrBadResponse):
			t.Errorf("%s: error %v, want ErrBadResponse", tc.name, err)
		case !tc.bad && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF):
			t.Errorf("%s: error %v, want an EOF", tc.name, err)
		case !tc.bad && classify(err, false) != causeClosed:
			t.Errorf("%s: %v classified as %s, want closed", tc.name, err, causeNames[classify(err, false)])
		}
	}
}

func FuzzReadResponse(f *testing.F) {
	for _, s := range []string{
		okResponse,
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;x\r\nhello\r\n0\r\nT: 1\r\n\r\n",
		"HTTP/1.0 404 Not Found\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\nx",
		"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
		"HTTP/1.1 200 OK\r\n\r\nbody until close",
		"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
	} {
		f.Add([]byte(s), false)
	}
	f.Add([]byte("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"), true)
	f.Fuzz(func(t *testing.T, in []byte, head bool) {
		br := bufio.NewReaderSize(bytes.NewReader(in), readBufSize)
		// Read responses until the input is used up: every call must end with
		// a response or an error, never a panic or a loop.
		for range 64 {
			r, err := readResponse(br, head)
			if err != nil {
				return
			}
			if r.status < 200 || r.status > 599 {
				t.Fatalf("final status %d", r.status)
			}
		}
	})
}

// The response parser runs once per request; it must not allocate.
func TestReadResponseAllocs(t *testing.T) {
	in := []byte("HTTP/1.1 200 OK\r\nServer: x\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello" +
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
	rd := bytes.NewReader(in)
	br := bufio.NewReaderSize(rd, readBufSize)
	allocs := testing.AllocsPerRun(200, func() {
		rd.Reset(in)
		br.Reset(rd)
		for range 2 {
			if _, err := readResponse(br, false); err != nil {
				t.Fatal(err)
			}
		}
	})
	if allocs != 0 {
		t.Errorf("readResponse: %v allocs per two responses, want 0", allocs)
	}
}

func BenchmarkReadResponse(b *testing.B) {
	in := []byte("HTTP/1.1 200 OK\r\nServer: x\r\nContent-Type: text/plain\r\nDate: Mon, 01 Jan 2024 00:00:00 GMT\r\nContent-Length: 5\r\n\r\nhello")
	rd := bytes.NewReader(in)
	br := bufio.NewReaderSize(rd, readBufSize)
	b.ReportAllocs()
	b.SetBytes(int64(len(in)))
	for b.Loop() {
		rd.Reset(in)
		br.Reset(rd)
		if _, err := readResponse(br, false); err != nil {
			b.Fatal(err)
		}
	}
}
