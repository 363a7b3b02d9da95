package fbs

import (
	"fmt"
	"strings"
	"testing"
)

// TestFilterNoFalseNegatives checks that every stored key passes its shard's
// filter and that keys the table lacks mostly do not: the filter is what
// keeps a miss probe off the index.
func TestFilterNoFalseNegatives(t *testing.T) {
	st := genState(20_000, 21)
	s := mustOpen(t, mustBuild(t, st))
	for _, r := range st.Routes {
		kh := routeHashString(routeKey(&r))
		if !s.shards[kh%uint64(len(s.shards))].mayContain(kh) {
			t.Fatalf("route %q: key missing from its shard's filter", r.ID)
		}
	}
	const probes = 100_000
	pass := 0
	for i := range probes {
		kh := RouteHash([]byte(fmt.Sprintf("absent%d.example.com", i)), []byte("/nothing"))
		if s.shards[kh%uint64(len(s.shards))].mayContain(kh) {
			pass++
		}
	}
	// 16..32 bits per key, 5 bits per key in one word: about 1% at 16.
	if rate := float64(pass) / probes; rate > 0.03 {
		t.Errorf("filter passes %.2f%% of absent keys, want <= 3%%", 100*rate)
	}
}

func TestFilterWords(t *testing.T) {
	for _, c := range []struct{ keys, want int }{{0, 1}, {1, 1}, {4, 1}, {5, 2}, {400, 128}, {2048, 512}} {
		if got := filterWords(c.keys); got != c.want {
			t.Errorf("filterWords(%d) = %d, want %d", c.keys, got, c.want)
		}
	}
}

// TestOpenRejectsBadFilter clears a shard's filter (a false negative would
// make its routes unreachable) and truncates one to a non-power-of-two
// length; Open must refuse both.
func TestOpenRejectsBadFilter(t *testing.T) {
	st := genState(300, 22)
	st.Shards = 4
	good := mustBuild(t, st)
	s := mustOpen(t, good)
	sh := &s.shards[1]
	// The filter reaches to the end of the shard's capacity.
	off := sh.off + cap(sh.buf) - cap(sh.filter)
	f := sh.filter

	b := append([]byte(nil), good...)
	clear(b[off : off+len(f)])
	if _, err := Open(fixTrailer(b)); err == nil || !strings.Contains(err.Error(), "filter") {
		t.Errorf("cleared filter: Open error %v, want a filter error", err)
	}

	b = append([]byte(nil), good...)
	// The vector length precedes the vector; 3 words is not a power of two.
	b[off-4], b[off-3], b[off-2], b[off-1] = 3, 0, 0, 0
	if _, err := Open(fixTrailer(b)); err == nil || !strings.Contains(err.Error(), "filter") {
		t.Errorf("3-word filter: Open error %v, want a filter error", err)
	}
}
