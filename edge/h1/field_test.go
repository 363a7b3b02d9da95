package h1

import (
	"strings"
	"testing"
)

func TestEmptyLines(t *testing.T) {
	for _, c := range []struct {
		in   string
		want bool
	}{
		{"\r\n", true}, {"\r\n\r\n\r\n\r\n", true}, {"", false}, {"\r", false}, {"\n", false},
		{"\n\r", false}, {"\r\n\r\n\r\n\r\n\r\n", false}, {"\r\nG", false}, {"\r\r", false},
	} {
		if got := EmptyLines([]byte(c.in)); got != c.want {
			t.Errorf("EmptyLines(%q) = %v, want %v", c.in, got, c.want)
		}
	}
}

func TestWorthReparsing(t *testing.T) {
	head := []byte("GET / HTTP/1.1\r\nHost: a.example\r\nX-Long: " + strings.Repeat("v", 600))
	for _, c := range []struct {
		n, parsed int
		want      bool
	}{
		{20, 0, true},                 // the first parse
		{17, 15, true},                // the request line's LF came
		{60, 40, false},               // a few bytes more inside a field
		{40 + ReparseStep, 40, true},  // a step's worth without a line end
		{39 + ReparseStep, 40, false}, // one byte short of it
	} {
		if got := WorthReparsing(head[:c.n], c.parsed); got != c.want {
			t.Errorf("WorthReparsing(%d bytes, parsed %d) = %v, want %v", c.n, c.parsed, got, c.want)
		}
	}
}
