package h1

import (
	"errors"
	"strings"
	"testing"
)

func parseReq(t *testing.T, raw string) (*Request, int, error) {
	t.Helper()
	var r Request
	n, err := ParseRequest([]byte(raw), &r, Limits{})
	return &r, n, err
}

func statusOf(err error) int {
	var e *Error
	if errors.As(err, &e) {
		return e.Status
	}
	return 0
}

func TestParseRequestAccepts(t *testing.T) {
	raw := "\r\nGET http://Example.COM:8080/a/b?x=1&y HTTP/1.1\r\n" +
		"Host: ignored.example\r\n" +
		"X-Forwarded-For: 10.0.0.1\r\n" +
		"Connection: keep-alive, X-Hop\r\n" +
		"Expect: 100-continue\r\n" +
		"Content-Length:  0 \r\n\r\nNEXT"
	r, n, err := parseReq(t, raw)
	if err != nil {
		t.Fatal(err)
	}
	if n != len(raw)-len("NEXT") {
		t.Fatalf("n=%d want %d", n, len(raw)-4)
	}
	check := func(name, got, want string) {
		t.Helper()
		if got != want {
			t.Errorf("%s = %q, want %q", name, got, want)
		}
	}
	check("method", string(r.Method), "GET")
	check("path", string(r.Path), "/a/b")
	check("query", string(r.Query), "x=1&y")
	check("host", string(r.Host), "example.com")
	check("authority", string(r.Authority), "Example.COM:8080")
	check("connection", string(r.Connection), "keep-alive, X-Hop")
	if r.Minor != 1 || !r.KeepAlive || !r.Expect100 || r.ContentLength != 0 || r.Chunked || r.NumHeaders != 5 {
		t.Fatalf("unexpected request %+v", r)
	}
	if string(r.Headers[1].Name) != "X-Forwarded-For" || string(r.Headers[1].Value) != "10.0.0.1" {
		t.Fatalf("header 1 = %q: %q", r.Headers[1].Name, r.Headers[1].Value)
	}
}

// RFC 9110 §10.1.1: an HTTP/1.0 client's 100-continue is ignored.
func TestParseRequestExpectHTTP10(t *testing.T) {
	r, _, err := parseReq(t, "PUT / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n")
	if err != nil || r.Expect100 {
		t.Fatalf("err=%v Expect100=%v", err, r.Expect100)
	}
}

func TestParseRequestFraming(t *testing.T) {
	tests := []struct {
		name, raw string
		cl        int64
		chunked   bool
		keepAlive bool
		host      string
	}{
		{"http11 default keep-alive", "GET / HTTP/1.1\r\nHost: a\r\n\r\n", -1, false, true, "a"},
		{"http11 close", "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", -1, false, false, "a"},
		{"http10 default close", "GET / HTTP/1.0\r\n\r\n", -1, false, false, ""},
		{"http10 keep-alive", "GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", -1, false, true, ""},
		{"content-length zeros", "PUT / HTTP/1.1\r\nHost: a\r\nContent-Length: 003\r\n\r\n", 3, false, true, "a"},
		{"chunked", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n", -1, true, true, "a"},
		{"chunked case", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: ChUnKeD\r\n\r\n", -1, true, true, "a"},
		{"CHUNKED in capitals", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:  CHUNKED \r\n\r\n", -1, true, true, "a"},
		{"host port stripped and lowered", "GET / HTTP/1.1\r\nHost: WWW.Example.com:443\r\n\r\n", -1, false, true, "www.example.com"},
		{"ipv6 host", "GET / HTTP/1.1\r\nHost: [::1]:80\r\n\r\n", -1, false, true, "[::1]"},
		{"get with zero length", "GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n", 0, false, true, "a"},
		{"options asterisk", "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", -1, false, true, "a"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, n, err := parseReq(t, tc.raw)
			if err != nil || n != len(tc.raw) {
				t.Fatalf("n=%d err=%v", n, err)
			}
			if r.ContentLength != tc.cl || r.Chunked != tc.chunked || r.KeepAlive != tc.keepAlive || string(r.Host) != tc.host {
				t.Fatalf("cl=%d chunked=%v ka=%v host=%q", r.ContentLength, r.Chunked, r.KeepAlive, r.Host)
			}
		})
	}
}

// TestParseRequestRejects covers every ambiguity listed in DESIGN.md "Bad input".
func TestParseRequestRejects(t *testing.T) {
	tests := []struct {
		name, raw string
		status    int
	}{
		{"CL and TE", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", 400},
		{"TE and CL", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n", 400},
		{"duplicate CL same", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n", 400},
		{"conflicting CL", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n", 400},
		{"CL list", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 3\r\n\r\n", 400},
		{"CL sign", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +3\r\n\r\n", 400},
		{"CL hex", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x3\r\n\r\n", 400},
		{"CL empty", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length:\r\n\r\n", 400},
		{"CL inner space", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1 2\r\n\r\n", 400},
		{"CL overflow", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 9223372036854775808\r\n\r\n", 400},
		// A coding other than chunked is not one the edge can vouch for at
		// the next hop (RFC 9112 §6.1: 501).
		{"TE identity", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\n\r\n", 501},
		{"TE identity then chunked", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity, chunked\r\n\r\n", 501},
		{"TE gzip then chunked", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n", 501},
		{"TE chunked not final", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", 400},
		{"TE chunked twice", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", 400},
		{"TE chunked param", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked;q=1\r\n\r\n", 400},
		{"TE empty element", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: , chunked\r\n\r\n", 400},
		{"TE xchunked", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n", 501},
		{"TE in HTTP/1.0", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400},
		{"obs-fold", "GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n", 400},
		{"leading space first field", "GET / HTTP/1.1\r\n Host: a\r\n\r\n", 400},
		{"bare LF in fields", "GET / HTTP/1.1\nHost: a\r\n\r\n", 400},
		{"bare LF end", "GET / HTTP/1.1\r\nHost: a\r\n\n", 400},
		{"bare CR in value", "GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n", 400},
		{"bare CR after request line", "GET / HTTP/1.1\rHost: a\r\n\r\n", 400},
		{"space before colon", "GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400},
		{"tab before colon", "GET / HTTP/1.1\r\nHost\t: a\r\n\r\n", 400},
		{"bad name char", "GET / HTTP/1.1\r\nHost: a\r\nX@Y: 1\r\n\r\n", 400},
		{"empty name", "GET / HTTP/1.1\r\nHost: a\r\n: 1\r\n\r\n", 400},
		{"no colon", "GET / HTTP/1.1\r\nHost: a\r\nXY\r\n\r\n", 400},
		{"NUL in value", "GET / HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n", 400},
		{"DEL in value", "GET / HTTP/1.1\r\nHost: a\r\nX: a\x7fb\r\n\r\n", 400},
		{"formfeed in value", "GET / HTTP/1.1\r\nHost: a\r\nX: a\x0cb\r\n\r\n", 400},
		{"missing Host", "GET / HTTP/1.1\r\n\r\n", 400},
		{"multiple Host", "GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", 400},
		{"empty Host", "GET / HTTP/1.1\r\nHost: \r\n\r\n", 400},
		{"Host with path", "GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", 400},
		{"Host with userinfo", "GET / HTTP/1.1\r\nHost: u@a\r\n\r\n", 400},
		{"Host bad port", "GET / HTTP/1.1\r\nHost: a:99999\r\n\r\n", 400},
		{"Host empty port", "GET / HTTP/1.1\r\nHost: a:\r\n\r\n", 400},
		// Sub-delims and escapes in a host: a list, or a name that is one
		// thing to the edge and another to the backend.
		{"Host comma list", "GET / HTTP/1.1\r\nHost: evil.test,x.example.com\r\n\r\n", 400},
		{"Host semicolon", "GET / HTTP/1.1\r\nHost: a;b\r\n\r\n", 400},
		{"Host percent", "GET / HTTP/1.1\r\nHost: a%00b\r\n\r\n", 400},
		{"Host escaped slash", "GET / HTTP/1.1\r\nHost: a.example%2fadmin\r\n\r\n", 400},
		{"Host sub-delims", "GET / HTTP/1.1\r\nHost: a!$&'()*+=b\r\n\r\n", 400},
		{"Host tilde", "GET / HTTP/1.1\r\nHost: ~a\r\n\r\n", 400},
		{"Host name in brackets", "GET / HTTP/1.1\r\nHost: [:a.example:]\r\n\r\n", 400},
		{"Host IPv6 zone", "GET / HTTP/1.1\r\nHost: [fe80::1%25eth0]\r\n\r\n", 400},
		{"absolute-form comma host", "GET http://evil.test,a/ HTTP/1.1\r\nHost: a\r\n\r\n", 400},
		{"invalid method char", "GE(T / HTTP/1.1\r\nHost: a\r\n\r\n", 400},
		{"unknown method", "MKCOLA / HTTP/1.1\r\nHost: a\r\n\r\n", 501},
		{"lowercase method", "get / HTTP/1.1\r\nHost: a\r\n\r\n", 501},
		{"CONNECT", "CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n", 400},
		{"authority form", "GET a:443 HTTP/1.1\r\nHost: a\r\n\r\n", 400},
		{"asterisk for GET", "GET * HTTP/1.1\r\nHost: a\r\n\r\n", 400},
		{"relative target", "GET a/b HTTP/1.1\r\nHost: a\r\n\r\n", 400},
		{"fragment", "GET /a#b HTTP/1.1\r\nHost: a\r\n\r\n", 400},
		{"space in target", "GET /a b HTTP/1.1\r\nHost: a\r\n\r\n", 400},
		{"tab in target", "GET /a\tb HTTP/1.1\r\nHost: a\r\n\r\n", 400},
		{"utf8 in target", "GET /\xce\xb4 HTTP/1.1\r\nHost: a\r\n\r\n", 400},
		{"userinfo", "GET http://u:p@a/ HTTP/1.1\r\nHost: a\r\n\r\n", 400},
		{"ftp scheme", "GET ftp://a/ HTTP/1.1\r\nHost: a\r\n\r\n", 400},
		{"double space", "GET  / HTTP/1.1\r\nHost: a\r\n\r\n", 400},
		{"trailing space", "GET / HTTP/1.1 \r\nHost: a\r\n\r\n", 400},
		{"HTTP/0.9", "GET /\r\n\r\n", 400},
		{"HTTP/2.0", "GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505},
		{"HTTP/1.2", "GET / HTTP/1.2\r\nHost: a\r\n\r\n", 505},
		{"lowercase http", "GET / http/1.1\r\nHost: a\r\n\r\n", 400},
		{"two digit minor", "GET / HTTP/1.10\r\nHost: a\r\n\r\n", 400},
		{"GET with body", "GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n", 400},
		{"HEAD chunked", "HEAD / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n", 400},
		{"bad expectation", "PUT / HTTP/1.1\r\nHost: a\r\nExpect: magic\r\n\r\n", 417},
		{"too many empty lines", "\r\n\r\n\r\n\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", 400},
		{"request line too long", "GET /" + strings.Repeat("a", DefaultMaxRequestLine) + " HTTP/1.1\r\nHost: a\r\n\r\n", 414},
		{"request line too long partial", "GET /" + strings.Repeat("a", DefaultMaxRequestLine), 414},
		{"head too large", "GET / HTTP/1.1\r\nHost: a\r\nX: " + strings.Repeat("a", DefaultMaxHeaderBytes) + "\r\n\r\n", 431},
		{"head too large partial", "GET / HTTP/1.1\r\nHost: a\r\nX: " + strings.Repeat("a", DefaultMaxHeaderBytes), 431},
		{"too many headers", "GET / HTTP/1.1\r\nHost: a\r\n" + strings.Repeat("X: 1\r\n", DefaultMaxHeaders) + "\r\n", 431},
		// Incomplete inputs that are already wrong must fail now, not at the timeout.
		{"partial bad version", "GET / HTTP/5.6", 505},
		{"partial obs-fold", "GET / HTTP/1.1\r\n Host: foo", 400},
		{"partial bad method", "G@T", 400},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, n, err := parseReq(t, tc.raw)
			if err == nil {
				t.Fatalf("accepted (n=%d), want %d", n, tc.status)
			}
			if got := statusOf(err); got != tc.status {
				t.Fatalf("status %d (%v), want %d", got, err, tc.status)
			}
		})
	}
}

// TestParseRequestIncremental feeds a valid head one byte at a time: every
// prefix must ask for more, the full head must parse to the same length.
func TestParseRequestIncremental(t *testing.T) {
	raw := "\r\nPOST /upload?x HTTP/1.1\r\nHost: a.example:81\r\nTransfer-Encoding: chunked\r\nX: \t v \t\r\n\r\n"
	var r Request
	for i := 0; i < len(raw); i++ {
		n, err := ParseRequest([]byte(raw[:i]), &r, Limits{})
		if n != 0 || err != nil {
			t.Fatalf("prefix %d: n=%d err=%v", i, n, err)
		}
	}
	n, err := ParseRequest([]byte(raw), &r, Limits{})
	if err != nil || n != len(raw) || !r.Chunked || string(r.Headers[2].Value) != "v" {
		t.Fatalf("n=%d err=%v chunked=%v", n, err, r.Chunked)
	}
}

func TestLimitsWithDefaults(t *testing.T) {
	l := Limits{MaxHeaders: 10000}.WithDefaults()
	if l.MaxRequestLine != DefaultMaxRequestLine || l.MaxHeaderBytes != DefaultMaxHeaderBytes || l.MaxHeaders != MaxHeaders {
		t.Fatalf("%+v", l)
	}
	var r Request
	_, err := ParseRequest([]byte("GET /abcdef HTTP/1.1\r\nHost: a\r\n\r\n"), &r, Limits{MaxRequestLine: 8})
	if statusOf(err) != 414 {
		t.Fatalf("err=%v", err)
	}
}

func TestHasToken(t *testing.T) {
	if !HasToken([]byte("close, token, Upgrade"), "upgrade") || HasToken([]byte("keep-alivex"), "keep-alive") {
		t.Fatal("HasToken")
	}
}
