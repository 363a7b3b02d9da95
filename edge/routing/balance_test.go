package routing

import (
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/snapgate/snapgate/edge/upstream"
	"github.com/snapgate/snapgate/fbs"
)

func lbTable(t testing.TB, reg *upstream.Registry, c fbs.Cluster) *Table {
	t.Helper()
	c.Name = "c"
	snap := buildSnap(t, 1, []fbs.Cluster{c}, []fbs.Route{{ID: "r", Host: "*", Prefix: "/", Cluster: "c"}})
	return NewTable(snap, nil, reg)
}

func endpoints(n int) []fbs.Endpoint {
	eps := make([]fbs.Endpoint, n)
	for i := range eps {
		eps[i] = fbs.Endpoint{Address: "127.0.0.1:" + strconv.Itoa(10000+i)}
	}
	return eps
}

func TestWeightedRoundRobinExactAndSmooth(t *testing.T) {
	reg := upstream.NewRegistry(upstream.Options{})
	defer reg.Close()
	eps := endpoints(3)
	eps[0].Weight, eps[1].Weight, eps[2].Weight = 5, 3, 1
	tab := lbTable(t, reg, fbs.Cluster{Endpoints: eps, LB: fbs.LBWeightedRoundRobin})
	defer tab.Release()
	for cycle := range 3 {
		counts := map[string]int{}
		var seq []string
		for range 9 {
			p, ok := tab.Balance(0, PickKey{}, nil)
			if !ok {
				t.Fatal("no pick")
			}
			counts[p.Addr()]++
			seq = append(seq, p.Addr())
		}
		if counts[eps[0].Address] != 5 || counts[eps[1].Address] != 3 || counts[eps[2].Address] != 1 {
			t.Fatalf("cycle %d: counts %v, want 5/3/1", cycle, counts)
		}
		// Smooth: the heavy endpoint is never picked more than twice in a row.
		for i := 2; i < len(seq); i++ {
			if seq[i] == seq[i-1] && seq[i] == seq[i-2] {
				t.Fatalf("cycle %d: not smooth: %v", cycle, seq)
			}
		}
	}
}

// TestExcludedTurnsSpread: round robin gives an excluded endpoint's turns
// to the endpoints whose turns come next, so the usable ones share in
// proportion to their weights; before, all of an excluded endpoint's turns
// went to its next neighbour in list order (with two of four endpoints
// down, one of the others took three quarters of the requests).
func TestExcludedTurnsSpread(t *testing.T) {
	reg := upstream.NewRegistry(upstream.Options{})
	defer reg.Close()
	for _, tc := range []struct {
		lb      uint8
		weights []uint16
		down    []int
		want    []int // requests per endpoint out of the sum
	}{
		{fbs.LBRoundRobin, []uint16{1, 1, 1, 1}, []int{1, 2}, []int{500, 0, 0, 500}},
		{fbs.LBWeightedRoundRobin, []uint16{1, 2, 3, 4}, []int{2}, []int{100, 200, 0, 400}},
		{fbs.LBWeightedRoundRobin, []uint16{5, 1, 1, 1, 2}, []int{0, 3}, []int{0, 250, 250, 0, 500}},
	} {
		eps := endpoints(len(tc.weights))
		for i, w := range tc.weights {
			eps[i].Weight = w
		}
		for _, i := range tc.down {
			eps[i].Unhealthy = true
		}
		tab := lbTable(t, reg, fbs.Cluster{Endpoints: eps, LB: tc.lb})
		total := 0
		for _, w := range tc.want {
			total += w
		}
		got := map[string]int{}
		for range total {
			p, ok := tab.Balance(0, PickKey{}, nil)
			if !ok {
				t.Fatalf("lb %d: no pick", tc.lb)
			}
			got[p.Addr()]++
		}
		tab.Release()
		for i, w := range tc.want {
			if d := got[eps[i].Address] - w; d < -1 || d > 1 {
				t.Errorf("lb %d weights %v down %v: endpoint %d got %d of %d requests, want %d: %v", tc.lb, tc.weights, tc.down, i, got[eps[i].Address], total, w, got)
			}
		}
	}
}

func TestLeastRequestPrefersLessLoaded(t *testing.T) {
	reg := upstream.NewRegistry(upstream.Options{})
	defer reg.Close()
	tab := lbTable(t, reg, fbs.Cluster{Endpoints: endpoints(2), LB: fbs.LBLeastRequest})
	defer tab.Release()
	busy, _ := tab.Balance(0, PickKey{}, nil)
	for range 5 {
		busy.Begin()
	}
	for range 100 {
		p, _ := tab.Balance(0, PickKey{}, nil)
		if p == busy {
			t.Fatal("picked the endpoint with 5 requests in flight over an idle one")
		}
	}
	for range 5 {
		busy.End()
	}
	if busy.InFlight() != 0 {
		t.Fatalf("in flight %d", busy.InFlight())
	}
}

func TestConsistentHash(t *testing.T) {
	reg := upstream.NewRegistry(upstream.Options{})
	defer reg.Close()
	const n, keys = 10, 20000
	eps := endpoints(n)
	c := fbs.Cluster{Endpoints: eps, LB: fbs.LBHash, HashOn: fbs.HashOnHeader, HashOnName: "x-user"}
	tab := lbTable(t, reg, c)
	defer tab.Release()
	if h := tab.HashOn(0); h.Kind != fbs.HashOnHeader || string(h.Name) != "x-user" {
		t.Fatalf("HashOn = %+v", h)
	}
	before := make([]string, keys)
	for k := range keys {
		key := KeyOf([]byte(fmt.Sprintf("user-%d", k)))
		p, _ := tab.Balance(0, key, nil)
		q, _ := tab.Balance(0, key, nil)
		if p != q {
			t.Fatal("same key, different endpoints")
		}
		before[k] = p.Addr()
	}
	c.Endpoints = eps[:n-1] // remove the last endpoint
	tab2 := lbTable(t, reg, c)
	defer tab2.Release()
	moved, strays := 0, 0
	for k := range keys {
		p, _ := tab2.Balance(0, KeyOf([]byte(fmt.Sprintf("user-%d", k))), nil)
		if p.Addr() != before[k] {
			moved++
			if before[k] != eps[n-1].Address {
				strays++ // a key of a surviving endpoint moved
			}
		}
	}
	if ideal := keys / n; moved < ideal*8/10 || moved > ideal*13/10 || strays > keys/50 {
		t.Fatalf("%d of %d keys moved (%d from surviving endpoints) removing 1 of %d endpoints, want about %d", moved, keys, strays, n, ideal)
	}
}

func TestEjectionSkipsAndExpires(t *testing.T) {
	reg := upstream.NewRegistry(upstream.Options{EjectBase: 50 * time.Millisecond, EjectMax: 200 * time.Millisecond})
	defer reg.Close()
	for _, lb := range []uint8{fbs.LBRoundRobin, fbs.LBWeightedRoundRobin, fbs.LBLeastRequest, fbs.LBHash} {
		c := fbs.Cluster{Endpoints: endpoints(3), LB: lb}
		if lb == fbs.LBHash {
			c.HashOn = fbs.HashOnSourceIP
		}
		tab := lbTable(t, reg, c)
		bad, _ := tab.Balance(0, KeyOf([]byte("10.0.0.1")), nil)
		bad.ReportFailure(upstream.FailConnect)
		for i := range 50 {
			p, ok := tab.Balance(0, KeyOf([]byte(strconv.Itoa(i))), nil)
			if !ok || p == bad {
				t.Fatalf("lb %d: picked the ejected endpoint", lb)
			}
			if p2, ok := tab.Balance(0, KeyOf([]byte(strconv.Itoa(i))), p); !ok || p2 == p || p2 == bad {
				t.Fatalf("lb %d: avoid ignored", lb)
			}
		}
		if ej := reg.Ejections(); len(ej) != 1 || ej[0].Addr != bad.Addr() || ej[0].Cause != upstream.FailConnect {
			t.Fatalf("lb %d: ejections %+v", lb, ej)
		}
		bad.ReportSuccess()
		tab.Release()
	}

	tab := lbTable(t, reg, fbs.Cluster{Endpoints: endpoints(1)})
	defer tab.Release()
	p, _ := tab.Pick(0)
	p.ReportFailure(upstream.FailTimeout)
	if _, ok := tab.Pick(0); ok {
		t.Fatal("all ejected but a pick succeeded")
	}
	first := time.Until(reg.Ejections()[0].Until)
	deadline := time.Now().Add(5 * time.Second)
	for !p.Healthy() && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if _, ok := tab.Pick(0); !ok {
		t.Fatal("ejection did not expire")
	}
	p.ReportFailure(upstream.FailReset) // second ejection: doubled
	second := time.Until(reg.Ejections()[0].Until)
	if first > 50*time.Millisecond || second <= 60*time.Millisecond || second > 100*time.Millisecond {
		t.Fatalf("ejection durations %v then %v, want ≤50ms then about 100ms", first, second)
	}
	p.ReportSuccess()
	if !p.Healthy() || len(reg.Ejections()) != 0 {
		t.Fatal("success did not end the ejection")
	}
}

func TestBalanceRace(t *testing.T) {
	reg := upstream.NewRegistry(upstream.Options{EjectBase: time.Millisecond, EjectMax: 2 * time.Millisecond})
	defer reg.Close()
	eps := endpoints(4)
	eps[0].Weight = 3
	var tabs []*Table
	for _, c := range []fbs.Cluster{
		{Endpoints: endpoints(4)}, {Endpoints: eps, LB: fbs.LBWeightedRoundRobin},
		{Endpoints: endpoints(4), LB: fbs.LBLeastRequest}, {Endpoints: endpoints(4), LB: fbs.LBHash, HashOn: fbs.HashOnCookie, HashOnName: "sid"},
	} {
		tabs = append(tabs, lbTable(t, reg, c))
	}
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 2000 {
				tab := tabs[(g+i)%len(tabs)]
				p, ok := tab.Balance(0, KeyOf([]byte(strconv.Itoa(i))), nil)
				if !ok {
					continue
				}
				p.Begin()
				if i%97 == 0 {
					p.ReportFailure(upstream.FailReset)
				} else {
					p.ReportSuccess()
				}
				p.End()
			}
		}()
	}
	wg.Wait()
	for _, tab := range tabs {
		tab.Release()
	}
}

func TestCookieValue(t *testing.T) {
	for _, c := range []struct {
		h, name, want string
		ok            bool
	}{
		{"sid=abc", "sid", "abc", true},
		{"a=1; sid=xyz; b=2", "sid", "xyz", true},
		{"a=1;sid = q ", "sid", "q", true},
		{"sidx=1; xsid=2", "sid", "", false},
		{"", "sid", "", false},
		{"sid", "sid", "", false},
	} {
		v, ok := CookieValue([]byte(c.h), []byte(c.name))
		if ok != c.ok || string(v) != c.want {
			t.Errorf("CookieValue(%q, %q) = %q %v", c.h, c.name, v, ok)
		}
	}
}

func FuzzCookieValue(f *testing.F) {
	for _, s := range []string{"a=1; sid=x", ";;=;", "sid=\"q\"", " \t sid \t= v"} {
		f.Add(s, "sid")
	}
	f.Fuzz(func(t *testing.T, h, name string) {
		v, ok := CookieValue([]byte(h), []byte(name))
		if !ok && v != nil {
			t.Fatal("value without ok")
		}
	})
}
