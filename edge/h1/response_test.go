package h1

import (
	"strings"
	"testing"
)

func TestParseResponse(t *testing.T) {
	tests := []struct {
		name, raw, method string
		body              BodyKind
		cl                int64
		keepAlive         bool
		status            int
	}{
		{"length", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", "GET", BodyLength, 5, true, 200},
		{"chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", "GET", BodyChunked, -1, true, 200},
		{"close delimited", "HTTP/1.1 200 OK\r\n\r\n", "GET", BodyClose, -1, false, 200},
		{"chunked not final", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", "GET", BodyClose, -1, false, 200},
		{"head", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", "HEAD", BodyNone, 5, true, 200},
		{"204", "HTTP/1.1 204 No Content\r\n\r\n", "GET", BodyNone, -1, true, 204},
		{"304 with TE", "HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n", "GET", BodyNone, -1, true, 304},
		{"100", "HTTP/1.1 100 Continue\r\n\r\n", "PUT", BodyNone, -1, true, 100},
		{"http10 keep-alive", "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n", "GET", BodyLength, 0, true, 200},
		{"http10 default close", "HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", "GET", BodyLength, 0, false, 200},
		{"connection close", "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", "GET", BodyLength, 0, false, 200},
		{"no reason", "HTTP/1.1 301\r\n\r\n", "GET", BodyClose, -1, false, 301},
		{"empty reason", "HTTP/1.1 200 \r\nContent-Length: 0\r\n\r\n", "GET", BodyLength, 0, true, 200},
		{"leading CRLF", "\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", "GET", BodyLength, 0, true, 200},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var r Response
			n, err := ParseResponse([]byte(tc.raw), &r, []byte(tc.method))
			if err != nil || n != len(tc.raw) {
				t.Fatalf("n=%d err=%v", n, err)
			}
			if r.Body != tc.body || r.ContentLength != tc.cl || r.KeepAlive != tc.keepAlive || r.Status != tc.status {
				t.Fatalf("body=%d cl=%d ka=%v status=%d", r.Body, r.ContentLength, r.KeepAlive, r.Status)
			}
			if coded := strings.Contains(tc.raw, "Transfer-Encoding"); r.TransferCoded != coded {
				t.Fatalf("TransferCoded=%v, want %v", r.TransferCoded, coded)
			}
		})
	}
}

func TestParseResponseRejects(t *testing.T) {
	for _, raw := range []string{
		"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
		"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
		"HTTP/1.1 200 OK\nContent-Length: 0\r\n\r\n",
		"HTTP/1.1 200 OK\rContent-Length: 0\r\n\r\n",
		"HTTP/1.1 200 OK\r\n X: folded\r\n\r\n",
		"HTTP/1.1 200 OK\r\nX : y\r\n\r\n",
		"HTTP/1.1  200 OK\r\n\r\n",
		"HTTP/1.1 2 OK\r\n\r\n",
		"HTTP/1.1 099 OK\r\n\r\n",
		"HTTP/1.1 200OK\r\n\r\n",
		"HTTP/2.0 200 OK\r\n\r\n",
		"HTTP/0.9 200 OK\r\n\r\n",
		"RTSP/1.1 200 OK\r\n\r\n",
		"HTTP/1.1\t200 OK\r\n\r\n",
		"HTTP/1.1 200 OK\r\nX: a\x00\r\n\r\n",
		"HTTP/1.1 200 OK\r\nConnection: close\r\nConnection: keep-alive\r\n\r\n",
	} {
		var r Response
		n, err := ParseResponse([]byte(raw), &r, []byte("GET"))
		if err == nil {
			t.Errorf("accepted %q (n=%d)", raw, n)
		} else if statusOf(err) != 502 {
			t.Errorf("%q: status %d, want 502", raw, statusOf(err))
		}
	}
}

func TestParseResponseIncremental(t *testing.T) {
	raw := "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n"
	var r Response
	for i := 0; i < len(raw); i++ {
		if n, err := ParseResponse([]byte(raw[:i]), &r, []byte("GET")); n != 0 || err != nil {
			t.Fatalf("prefix %d: n=%d err=%v", i, n, err)
		}
	}
}
