package h1

import "testing"

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
