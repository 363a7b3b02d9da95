package h1

import (
	"bytes"
	"testing"
)

var fuzzRequestSeeds = []string{
	"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
	"POST /x?y HTTP/1.1\r\nHost: A:80\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
	"PUT http://h.example/p HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nConnection: close, x\r\n\r\nabc",
	"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
	"OPTIONS * HTTP/1.1\r\nHost: [::1]:8080\r\nExpect: 100-continue\r\n\r\n",
	"PUT / HTTP/1.0\r\nContent-Length: 1\r\nExpect: 100-continue\r\n\r\nx",
	"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
	"\r\nGET /a/%2e%2E/b HTTP/1.1\r\nHost: a\r\n\r\n",
}

func FuzzParseRequest(f *testing.F) {
	for _, s := range fuzzRequestSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, buf []byte) {
		var r Request
		n, err := ParseRequest(buf, &r, Limits{})
		if err != nil {
			if n != 0 {
				t.Fatalf("n=%d with error %v", n, err)
			}
			if e, ok := err.(*Error); !ok || e.Status < 400 || e.Status > 599 {
				t.Fatalf("bad error %#v", err)
			}
			return
		}
		if n == 0 {
			return
		}
		if n > len(buf) || !bytes.HasSuffix(buf[:n], []byte("\r\n\r\n")) {
			t.Fatalf("n=%d does not end a head in %q", n, buf)
		}
		if r.Chunked && r.ContentLength >= 0 {
			t.Fatal("both chunked and Content-Length")
		}
		if r.Expect100 && r.Minor != 1 {
			t.Fatal("100-continue expected by an HTTP/1.0 client")
		}
		if !bytes.Equal(r.Host, bytes.ToLower(r.Host)) || bytes.IndexByte(r.Host, ':') >= 0 && r.Host[0] != '[' {
			t.Fatalf("host not normalized: %q", r.Host)
		}
		if r.Minor == 1 && len(r.Host) == 0 {
			t.Fatal("HTTP/1.1 without host")
		}
		// The head alone must parse identically: nothing after it matters.
		var r2 Request
		if n2, err2 := ParseRequest(buf[:n], &r2, Limits{}); n2 != n || err2 != nil {
			t.Fatalf("reparse: n=%d err=%v, first n=%d", n2, err2, n)
		}
		// Every prefix must be "need more", never an accept or a different error.
		if m, e := ParseRequest(buf[:n-1], &r2, Limits{}); m != 0 || e != nil {
			t.Fatalf("prefix accepted or rejected: n=%d err=%v", m, e)
		}
	})
}

func FuzzParseResponse(f *testing.F) {
	for _, s := range []string{
		"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
		"HTTP/1.1 204 No Content\r\n\r\n",
		"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
		"HTTP/1.1 301\r\nLocation: /x\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
		"HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\nContent-Length: 7\r\n\r\n",
		"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
	} {
		f.Add([]byte(s), false)
	}
	f.Fuzz(func(t *testing.T, buf []byte, head bool) {
		var r Response
		method := []byte("GET")
		if head {
			method = []byte("HEAD")
		}
		n, err := ParseResponse(buf, &r, method)
		if err != nil {
			if e, ok := err.(*Error); !ok || e.Status != 502 || n != 0 {
				t.Fatalf("bad error %#v n=%d", err, n)
			}
			return
		}
		if n == 0 {
			return
		}
		if n > len(buf) || !bytes.HasSuffix(buf[:n], []byte("\r\n\r\n")) {
			t.Fatalf("n=%d does not end a head", n)
		}
		if r.Status < 100 || r.Status > 999 {
			t.Fatalf("status %d", r.Status)
		}
		if r.Body == BodyLength && (r.ContentLength < 0 || r.TransferCoded) {
			t.Fatalf("BodyLength with length %d, transfer-coded %v", r.ContentLength, r.TransferCoded)
		}
		if r.Body == BodyChunked && !r.TransferCoded {
			t.Fatal("BodyChunked without Transfer-Encoding")
		}
		if r.Body == BodyClose && r.KeepAlive {
			t.Fatal("close-delimited body with keep-alive")
		}
		if m, e := ParseResponse(buf[:n-1], &r, method); m != 0 || e != nil {
			t.Fatalf("prefix: n=%d err=%v", m, e)
		}
	})
}

func FuzzChunked(f *testing.F) {
	for _, s := range []string{
		"0\r\n\r\n",
		"5\r\nhello\r\n6;a=\"b\\\"c\"\r\n world\r\n0\r\nT: v\r\n\r\n",
		"a;x;y=z\r\n0123456789\r\n000\r\n\r\nGET",
		"5 \r\nhello\r\n0\r\n\r\n",
		"ffffffffffffffff\r\n",
	} {
		f.Add([]byte(s), uint8(1))
	}
	f.Fuzz(func(t *testing.T, body []byte, split uint8) {
		var whole ChunkedScanner
		n, done, err := whole.Scan(body)
		if n > len(body) || (done && err != nil) {
			t.Fatalf("n=%d done=%v err=%v", n, done, err)
		}
		if !done && err == nil && n != len(body) {
			t.Fatalf("not done but consumed %d of %d", n, len(body))
		}
		// Streaming must agree with one-shot scanning for any split point.
		cut := int(split) % (len(body) + 1)
		var parts ChunkedScanner
		n1, done1, err1 := parts.Scan(body[:cut])
		n2, done2, err2 := 0, done1, err1
		if !done1 && err1 == nil {
			n2, done2, err2 = parts.Scan(body[cut:])
		}
		if (err == nil) != (err2 == nil) || done != done2 || (err == nil && n != n1+n2) {
			t.Fatalf("split %d: whole (%d,%v,%v) parts (%d+%d,%v,%v)", cut, n, done, err, n1, n2, done2, err2)
		}
		// What is held back lies within what was taken, is bounded, and
		// is nothing once done; split scanning holds back the same.
		if err == nil {
			if p := whole.Pending(); p > n || p > maxChunkLine+maxTrailerBytes+2 || (done && p != 0) || p != parts.Pending() {
				t.Fatalf("pending %d (split %d), consumed %d, done %v", p, parts.Pending(), n, done)
			}
		}
	})
}
