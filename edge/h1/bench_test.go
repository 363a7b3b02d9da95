package h1

import (
	"fmt"
	"strings"
	"testing"
)

var benchReq = []byte("GET /api/v1/items?limit=10 HTTP/1.1\r\nHost: api.example.com\r\nUser-Agent: bench/1.0\r\nAccept: */*\r\nX-Forwarded-For: 10.1.2.3\r\nConnection: keep-alive\r\n\r\n")
var benchResp = []byte("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 64\r\nDate: Mon, 01 Jan 2024 00:00:00 GMT\r\n\r\n")
var benchChunked = []byte("5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nT: v\r\n\r\n")

func BenchmarkParseRequest(b *testing.B) {
	var req Request
	b.ReportAllocs()
	b.SetBytes(int64(len(benchReq)))
	for b.Loop() {
		if _, err := ParseRequest(benchReq, &req, Limits{}); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkParseResponse(b *testing.B) {
	var resp Response
	b.ReportAllocs()
	b.SetBytes(int64(len(benchResp)))
	for b.Loop() {
		if _, err := ParseResponse(benchResp, &resp, []byte("GET")); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkChunkedScan(b *testing.B) {
	var cs ChunkedScanner
	b.ReportAllocs()
	b.SetBytes(int64(len(benchChunked)))
	for b.Loop() {
		cs.Reset()
		if _, _, err := cs.Scan(benchChunked); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkTricklingHead is the parsing work of a 16 KiB head that arrives
// a byte at a time: parsed again on every byte (every), or as readHead
// does, when WorthReparsing says so (gated).
func BenchmarkTricklingHead(b *testing.B) {
	head := []byte("GET / HTTP/1.1\r\nHost: a.example\r\n")
	for i := 0; len(head) < 16<<10-400; i++ {
		head = fmt.Appendf(head, "X-Field-%d: %s\r\n", i, strings.Repeat("v", 300))
	}
	head = append(head, "\r\n"...)
	for _, gated := range []bool{false, true} {
		name := "every"
		if gated {
			name = "gated"
		}
		b.Run(name, func(b *testing.B) {
			var req Request
			for b.Loop() {
				parsed := 0
				for i := 1; i <= len(head); i++ {
					if gated && !WorthReparsing(head[:i], parsed) {
						continue
					}
					parsed = i
					if n, err := ParseRequest(head[:i], &req, Limits{}); err != nil || (n > 0) != (i == len(head)) {
						b.Fatalf("at %d: n %d err %v", i, n, err)
					}
				}
			}
		})
	}
}
