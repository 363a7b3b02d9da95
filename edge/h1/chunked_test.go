package h1

import (
	"strings"
	"testing"
)

// scanAll feeds body in pieces of size step and returns consumed bytes.
func scanAll(body string, step int) (int, bool, error) {
	var s ChunkedScanner
	total := 0
	for off := 0; off < len(body); off += step {
		end := min(off+step, len(body))
		n, done, err := s.Scan([]byte(body[off:end]))
		total += n
		if err != nil || done {
			return total, done, err
		}
	}
	return total, false, nil
}

func TestChunkedScanner(t *testing.T) {
	valid := []string{
		"0\r\n\r\n",
		"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
		"A\r\n0123456789\r\n000\r\n\r\n",
		"5;a=b;c;d=\"x y\\\"z\"\r\nhello\r\n0\r\n\r\n",
		"1\r\nx\r\n0\r\nVary: *\r\nX-T: \tv\r\n\r\n",
		"0;last\r\n\r\n",
		"0\r\nContent-Type: text/plain\r\nX-Forwarded-Fort: 1\r\nHost2: x\r\n\r\n",
		"0\r\nX-Checksum-" + strings.Repeat("z", 40) + ": 1\r\n\r\n",
		// Leading zeros do not count against the size's 15 digits.
		"0000000000000001\r\nx\r\n" + strings.Repeat("0", 40) + "\r\n\r\n",
	}
	for _, body := range valid {
		for _, step := range []int{1, 2, 3, 7, len(body)} {
			n, done, err := scanAll(body+"GET / HTTP/1.1\r\n", step)
			if err != nil || !done || n != len(body) {
				t.Errorf("%q step %d: n=%d done=%v err=%v", body, step, n, done, err)
			}
		}
	}
	invalid := []string{
		"\r\n",
		"x\r\n",
		"5 \r\nhello\r\n0\r\n\r\n",
		"5\t\r\nhello\r\n0\r\n\r\n",
		" 5\r\nhello\r\n0\r\n\r\n",
		"5\nhello\r\n0\r\n\r\n",
		"5\r\nhelloX\r\n0\r\n\r\n",
		"5\r\nhello\n0\r\n\r\n",
		"5;\r\nhello\r\n0\r\n\r\n",
		"5; a=b\r\nhello\r\n0\r\n\r\n",
		"5;a=\r\nhello\r\n0\r\n\r\n",
		"5;a=\"b\r\nhello\r\n0\r\n\r\n",
		"5;a=\"b\"c\r\nhello\r\n0\r\n\r\n",
		"-5\r\nhello\r\n0\r\n\r\n",
		"0x5\r\nhello\r\n0\r\n\r\n",
		"1000000000000000\r\n",
		"0001000000000000000\r\n",
		"0\r\n X: y\r\n\r\n",
		"0\r\nX : y\r\n\r\n",
		"0\r\nX: a\x00\r\n\r\n",
		"0\r\n\n",
		"0\r\n\r\r",
		"5;" + strings.Repeat("a", maxChunkLine) + "\r\n",
		"0\r\n" + strings.Repeat("X: y\r\n", maxTrailerBytes/6+1) + "\r\n",
		// Fields a backend merging trailers into the header section would
		// take as framing, routing, credentials or the edge's own.
		"0\r\nContent-Length: 5\r\n\r\n",
		"0\r\ntransfer-encoding: chunked\r\n\r\n",
		"0\r\nHost: evil\r\n\r\n",
		"0\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n",
		"0\r\nX_Consumer_Id: admin\r\n\r\n",
		"0\r\nVary: *\r\nAuthorization: Bearer x\r\n\r\n",
		"0\r\nPROXY-AUTHORIZATION: x\r\n\r\n",
		"0\r\nX_HTTP_Method_Override: DELETE\r\n\r\n",
		"0\r\nX-Original-URL: /admin\r\n\r\n",
	}
	for _, body := range invalid {
		for _, step := range []int{1, len(body)} {
			if _, done, err := scanAll(body, step); err == nil {
				t.Errorf("accepted %q step %d (done=%v)", body, step, done)
			}
		}
	}
}

func TestChunkedScannerStickyError(t *testing.T) {
	var s ChunkedScanner
	if _, _, err := s.Scan([]byte("zz")); err == nil {
		t.Fatal("want error")
	}
	if _, _, err := s.Scan([]byte("0\r\n\r\n")); err == nil || s.Done() {
		t.Fatalf("error not sticky: err=%v done=%v", err, s.Done())
	}
	s.Reset()
	if _, done, err := s.Scan([]byte("0\r\n\r\n")); err != nil || !done {
		t.Fatalf("after Reset: done=%v err=%v", done, err)
	}
}

// TestChunkedScannerPending: the bytes of a chunk-size line not yet ended,
// and of the last chunk with its trailer section until they end, are
// pending; chunk data and ended lines are not; nothing is once done.
func TestChunkedScannerPending(t *testing.T) {
	body := "5\r\nhello\r\n0\r\nX-T: v\r\n\r\n"
	for _, tc := range []struct {
		upTo    int // bytes scanned
		pending int
	}{
		{1, 1},                              // "5"
		{3, 0},                              // "5\r\n": the line ended, data follows
		{6, 0},                              // in the data
		{10, 0},                             // "hello\r\n" ended
		{11, 1},                             // "0"
		{13, 3},                             // "0\r\n": the last chunk
		{len(body) - 1, len(body) - 10 - 1}, // all of it but the final LF
		{len(body), 0},                      // done
	} {
		var s ChunkedScanner
		n, _, err := s.Scan([]byte(body[:tc.upTo]))
		if err != nil || n != tc.upTo || s.Pending() != tc.pending {
			t.Errorf("after %q: n=%d err=%v pending %d, want %d", body[:tc.upTo], n, err, s.Pending(), tc.pending)
		}
	}
}
