//go:build !race

package h1

import "testing"

// The parsers are on the hot path: 0 allocations, pinned here.
func TestParseAllocs(t *testing.T) {
	var req Request
	var resp Response
	var cs ChunkedScanner
	bad := []byte("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n")
	if a := testing.AllocsPerRun(100, func() {
		if _, err := ParseRequest(benchReq, &req, Limits{}); err != nil {
			t.Fatal(err)
		}
		if _, err := ParseRequest(bad, &req, Limits{}); err == nil {
			t.Fatal("bad accepted")
		}
		if _, err := ParseResponse(benchResp, &resp, req.Method); err != nil {
			t.Fatal(err)
		}
		cs.Reset()
		if _, done, err := cs.Scan(benchChunked); !done || err != nil {
			t.Fatal(err)
		}
	}); a != 0 {
		t.Fatalf("%v allocs per run, want 0", a)
	}
}
