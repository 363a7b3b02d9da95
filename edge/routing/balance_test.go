package routing

import (
	"fmt"
	"math/rand/v2"
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

// weightedEndpoints is endpoints with these weights, the ones at down
// marked unhealthy by ctrl.
func weightedEndpoints(weights []uint16, down []int) []fbs.Endpoint {
	eps := endpoints(len(weights))
	for i, w := range weights {
		eps[i].Weight = w
	}
	for _, i := range down {
		eps[i].Unhealthy = true
	}
	return eps
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

// TestWeightedRoundRobinSmoothAnyWeights: weighted round robin follows
// nginx's smooth order. Positions used to be taken modulo the weight sum
// on a stride coprime with it, and small sums have no good stride:
// weights 3:3 went AAABBB, 4:2 ABBAAAA. For many weight sets, every run
// of as many picks as the weight sum gives each endpoint exactly its
// weight, and no endpoint takes more turns in a row than 2·ceil(w / (sum -
// w)), twice what its share needs; a cluster too large to list its order
// (endpoints × sum above maxOrderWork) keeps the exact shares.
func TestWeightedRoundRobinSmoothAnyWeights(t *testing.T) {
	reg := upstream.NewRegistry(upstream.Options{})
	defer reg.Close()
	picks := func(ws []uint16, k int) (seq []int, sum int) {
		eps := endpoints(len(ws))
		for i, w := range ws {
			eps[i].Weight = w
			sum += max(int(w), 1)
		}
		tab := lbTable(t, reg, fbs.Cluster{Endpoints: eps, LB: fbs.LBWeightedRoundRobin})
		defer tab.Release()
		idx := map[string]int{}
		for i, e := range eps {
			idx[e.Address] = i
		}
		seq = make([]int, k*sum)
		for i := range seq {
			p, ok := tab.Balance(0, PickKey{}, nil)
			if !ok {
				t.Fatal("no pick")
			}
			seq[i] = idx[p.Addr()]
		}
		return seq, sum
	}
	exact := func(ws []uint16, seq []int, sum, start int) {
		t.Helper()
		counts := make([]int, len(ws))
		for _, j := range seq[start : start+sum] {
			counts[j]++
		}
		for j, w := range ws {
			if counts[j] != max(int(w), 1) {
				t.Fatalf("weights %v: picks %d..%d give endpoint %d %d turns, want %d", ws, start, start+sum, j, counts[j], max(int(w), 1))
			}
		}
	}
	for _, tc := range []struct {
		ws   []uint16
		want string
	}{
		{[]uint16{3, 3}, "ABABAB"}, {[]uint16{2, 2, 2}, "ABCABC"}, {[]uint16{4, 2}, "ABAABA"},
		{[]uint16{5, 1, 1}, "AABACAA"}, {[]uint16{0, 1}, "ABAB"}, {[]uint16{1, 1, 2}, "CABC"},
	} {
		seq, _ := picks(tc.ws, 2)
		got := make([]byte, len(tc.want))
		for i := range got {
			got[i] = byte('A' + seq[i])
		}
		if string(got) != tc.want {
			t.Errorf("weights %v: order %s, want %s", tc.ws, got, tc.want)
		}
	}

	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 200 {
		ws := make([]uint16, 2+rng.IntN(10))
		for j := range ws {
			ws[j] = uint16(1 + rng.IntN([]int{3, 12, 100, 1000}[i%4]))
		}
		seq, sum := picks(ws, 3)
		for _, start := range []int{0, 1, sum / 3, sum} {
			exact(ws, seq, sum, start)
		}
		for i, run := 0, 1; i+1 < len(seq); i++ {
			if seq[i+1] != seq[i] {
				run = 1
				continue
			}
			run++
			if w := int(ws[seq[i]]); run > 2*((w+sum-w-1)/(sum-w)) {
				t.Fatalf("weights %v: endpoint %d took %d turns in a row", ws, seq[i], run)
			}
		}
	}

	large := make([]uint16, 300)
	for j := range large {
		large[j] = uint16(1 + rng.IntN(1000))
	}
	seq, sum := picks(large, 2)
	if sum*len(large) <= maxOrderWork {
		t.Fatalf("%d × %d is not above maxOrderWork", sum, len(large))
	}
	for _, start := range []int{0, 7, sum} {
		exact(large, seq, sum, start)
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
		eps := weightedEndpoints(tc.weights, tc.down)
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

// TestExcludedRunsSpread: when an excluded endpoint holds long runs of turns
// (a heavy weight, or a block of endpoints that are down), the picks that
// run out of draws still spread by weight over the usable endpoints. They
// used to go to the next usable endpoint in list order: with 1000:1:1 and
// the heavy one down, the two equal endpoints got 16:1.
func TestExcludedRunsSpread(t *testing.T) {
	reg := upstream.NewRegistry(upstream.Options{})
	defer reg.Close()
	block := make([]int, 150)
	for i := range block {
		block[i] = i
	}
	ones := func(n int) []uint16 {
		w := make([]uint16, n)
		for i := range w {
			w[i] = 1
		}
		return w
	}
	for _, tc := range []struct {
		name    string
		lb      uint8
		weights []uint16
		down    []int
	}{
		{"100:1:1, heavy down", fbs.LBWeightedRoundRobin, []uint16{100, 1, 1}, []int{0}},
		{"1000:1:1, heavy down", fbs.LBWeightedRoundRobin, []uint16{1000, 1, 1}, []int{0}},
		{"200 endpoints, first 150 down", fbs.LBRoundRobin, ones(200), block},
	} {
		eps := weightedEndpoints(tc.weights, tc.down)
		tab := lbTable(t, reg, fbs.Cluster{Endpoints: eps, LB: tc.lb})
		usable := len(eps) - len(tc.down)
		const perEndpoint = 2000
		got := map[string]int{}
		for range usable * perEndpoint {
			p, ok := tab.Balance(0, PickKey{}, nil)
			if !ok {
				t.Fatalf("%s: no pick", tc.name)
			}
			got[p.Addr()]++
		}
		tab.Release()
		for i := len(tc.down); i < len(eps); i++ {
			if n := got[eps[i].Address]; n < perEndpoint*3/4 || n > perEndpoint*4/3 {
				t.Errorf("%s: endpoint %d got %d requests, want about %d", tc.name, i, n, perEndpoint)
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

// When every endpoint ctrl lets a request use is ejected on the edge, a
// first attempt is balanced among them as if none were, spread like any
// other turn; a retry gets none.
func TestAllEjectedStillServes(t *testing.T) {
	reg := upstream.NewRegistry(upstream.Options{EjectBase: time.Hour, EjectMax: time.Hour})
	defer reg.Close()
	ejectAll := func(tab *Table) {
		for _, p := range tab.clusters[0].pools {
			p.ReportFailure(upstream.FailConnect)
		}
	}
	heal := func(tab *Table) {
		for _, p := range tab.clusters[0].pools {
			p.ReportSuccess()
		}
	}
	// Beyond maxTurnDraws endpoints too: a pass that finds nothing must
	// not move the turn counter (it did by 65 for 65 endpoints, so every
	// first attempt went to one).
	for _, n := range []int{1, 2, 65, 130} {
		for _, lb := range []uint8{fbs.LBRoundRobin, fbs.LBWeightedRoundRobin} {
			eps := endpoints(n)
			if lb == fbs.LBWeightedRoundRobin && n > 1 {
				eps[0].Weight = 64
			}
			tab := lbTable(t, reg, fbs.Cluster{Endpoints: eps, LB: lb})
			ejectAll(tab)
			seen := map[*upstream.Pool]int{}
			for range 200 * n {
				p, ok := tab.Pick(0)
				if !ok {
					t.Fatalf("%d endpoints, lb %d, all ejected: no pick", n, lb)
				}
				seen[p]++
			}
			if len(seen) != n {
				t.Errorf("%d endpoints, lb %d, all ejected: first attempts reached %d of them", n, lb, len(seen))
			}
			if n > 1 {
				p, _ := tab.Pick(0)
				if got, ok := tab.Balance(0, PickKey{}, triedOf(p)); ok {
					t.Errorf("%d endpoints, lb %d: a retry went to the ejected %s", n, lb, got.Addr())
				}
			}
			heal(tab)
			tab.Release()
		}
	}
	// One endpoint down by ctrl's verdict, the other (the only routable
	// one) ejected here: it still serves first attempts, for every policy.
	eps := endpoints(2)
	eps[0].Unhealthy = true
	for _, lb := range []uint8{fbs.LBRoundRobin, fbs.LBWeightedRoundRobin, fbs.LBLeastRequest, fbs.LBHash} {
		c := fbs.Cluster{Endpoints: eps, LB: lb}
		if lb == fbs.LBHash {
			c.HashOn = fbs.HashOnSourceIP
		}
		down := lbTable(t, reg, c)
		routable := down.clusters[0].pools[1]
		routable.ReportFailure(upstream.FailTimeout)
		if routable.Healthy() {
			t.Fatal("the routable endpoint is not ejected")
		}
		for i := range 20 {
			if got, ok := down.Balance(0, KeyOf([]byte(strconv.Itoa(i))), nil); !ok || got != routable {
				t.Fatalf("lb %d: the only routable endpoint, ejected: got %v %v, want %s", lb, got, ok, routable.Addr())
			}
		}
		if got, ok := down.Balance(0, PickKey{}, triedOf(routable)); ok {
			t.Fatalf("lb %d: a retry went to %s, down by ctrl's verdict", lb, got.Addr())
		}
		heal(down)
		down.Release()
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
			if p2, ok := tab.Balance(0, KeyOf([]byte(strconv.Itoa(i))), triedOf(p)); !ok || p2 == p || p2 == bad {
				t.Fatalf("lb %d: avoid ignored", lb)
			}
			// Three endpoints, one ejected, one tried: only one is left.
			if p2, ok := tab.Balance(0, KeyOf([]byte(strconv.Itoa(i))), triedOf(p)); ok {
				if p3, ok := tab.Balance(0, KeyOf([]byte(strconv.Itoa(i))), triedOf(p, p2)); ok {
					t.Fatalf("lb %d: with every endpoint tried or ejected, Balance gave %s", lb, p3.Addr())
				}
			}
		}
		if ej := reg.Ejections(); len(ej) != 1 || ej[0].Addr != bad.Addr() || ej[0].Cause != upstream.FailConnect {
			t.Fatalf("lb %d: ejections %+v", lb, ej)
		}
		bad.ReportSuccess()
		tab.Release()
	}

	// Two endpoints, both ejected (a first attempt still gets one of
	// them: TestAllEjectedStillServes); one comes back.
	tab := lbTable(t, reg, fbs.Cluster{Endpoints: endpoints(2)})
	defer tab.Release()
	p, _ := tab.Pick(0)
	q, _ := tab.Balance(0, PickKey{}, triedOf(p))
	q.ReportFailure(upstream.FailConnect)
	p.ReportFailure(upstream.FailTimeout)
	q.ReportSuccess()
	first := time.Until(reg.Ejections()[0].Until)
	deadline := time.Now().Add(5 * time.Second)
	for !p.Healthy() && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if got, ok := tab.Balance(0, PickKey{}, triedOf(q)); !ok || got != p {
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

// keyMapping is the endpoint address tab's hash cluster picks for each of
// keys keys "user-0", "user-1", ….
func keyMapping(t *testing.T, tab *Table, keys int) []string {
	t.Helper()
	out := make([]string, keys)
	for k := range out {
		p, ok := tab.Balance(0, KeyOf([]byte("user-"+strconv.Itoa(k))), nil)
		if !ok {
			t.Fatal("no pick")
		}
		out[k] = p.Addr()
	}
	return out
}

// TestConsistentHashStability: removing an endpoint from the middle of the
// list (which renumbers the ones after it) moves only its own keys, and
// about as many land on each survivor; adding it back restores the old
// mapping. A key whose endpoint is ejected moves, spread over the others,
// and returns when the ejection ends; keys of other endpoints stay.
func TestConsistentHashStability(t *testing.T) {
	reg := upstream.NewRegistry(upstream.Options{})
	defer reg.Close()
	const n, keys = 8, 16000
	eps := endpoints(n)
	c := fbs.Cluster{Endpoints: eps, LB: fbs.LBHash, HashOn: fbs.HashOnHeader, HashOnName: "x-user"}
	mapping := func(tab *Table) []string { return keyMapping(t, tab, keys) }
	tab := lbTable(t, reg, c)
	defer tab.Release()
	before := mapping(tab)

	const gone = 3
	c.Endpoints = append(append([]fbs.Endpoint(nil), eps[:gone]...), eps[gone+1:]...)
	less := lbTable(t, reg, c)
	after := mapping(less)
	less.Release()
	// Maglev trades a little stability for balance: a few slots of
	// surviving endpoints change hands too.
	landed, strays := map[string]int{}, 0
	for k := range keys {
		switch {
		case before[k] != eps[gone].Address && after[k] != before[k]:
			strays++
		case before[k] == eps[gone].Address:
			landed[after[k]]++
		}
	}
	if strays > keys/100 {
		t.Errorf("%d keys of surviving endpoints moved, want under 1%%", strays)
	}
	moved := 0
	for _, m := range landed {
		moved += m
	}
	if ideal := keys / n; moved < ideal*8/10 || moved > ideal*12/10 || len(landed) != n-1 {
		t.Fatalf("%d keys moved to %d endpoints removing 1 of %d, want about %d over all %d", moved, len(landed), n, ideal, n-1)
	}
	for addr, m := range landed {
		if fair := moved / (n - 1); m < fair/2 || m > fair*2 {
			t.Errorf("%s took %d of the %d moved keys, want about %d", addr, m, moved, fair)
		}
	}

	c.Endpoints = eps
	again := lbTable(t, reg, c)
	restored := mapping(again)
	again.Release()
	for k := range keys {
		if restored[k] != before[k] {
			t.Fatalf("key %d on %s after the endpoint came back, was on %s", k, restored[k], before[k])
		}
	}

	victim := reg.Acquire(eps[gone].Address)
	defer reg.Release(victim)
	victim.ReportFailure(upstream.FailConnect)
	ejected := mapping(tab)
	spread := map[string]bool{}
	for k := range keys {
		switch {
		case before[k] != eps[gone].Address && ejected[k] != before[k]:
			t.Fatalf("key %d of a healthy endpoint moved while another was ejected", k)
		case before[k] == eps[gone].Address:
			if ejected[k] == eps[gone].Address {
				t.Fatalf("key %d still on the ejected endpoint", k)
			}
			spread[ejected[k]] = true
		}
	}
	if len(spread) < n/2 {
		t.Errorf("the ejected endpoint's keys went to %d endpoints, want them spread", len(spread))
	}
	victim.ReportSuccess()
	for k, addr := range mapping(tab) {
		if addr != before[k] {
			t.Fatalf("key %d did not return after the ejection ended", k)
		}
	}
}

// BenchmarkBalancePolicies measures one pick per policy; weighted-large
// is a cluster beyond maxOrderWork, picked on the golden-ratio stride.
func BenchmarkBalancePolicies(b *testing.B) {
	reg := upstream.NewRegistry(upstream.Options{})
	defer reg.Close()
	weighted := endpoints(5)
	for j := range weighted {
		weighted[j].Weight = uint16(j + 1)
	}
	large := endpoints(300)
	for j := range large {
		large[j].Weight = uint16(1 + j*7%1000)
	}
	key := KeyOf([]byte("user-1"))
	for _, bc := range []struct {
		name string
		c    fbs.Cluster
	}{
		{"round-robin", fbs.Cluster{Endpoints: endpoints(5)}},
		{"weighted", fbs.Cluster{Endpoints: weighted, LB: fbs.LBWeightedRoundRobin}},
		{"weighted-large", fbs.Cluster{Endpoints: large, LB: fbs.LBWeightedRoundRobin}},
		{"least-request", fbs.Cluster{Endpoints: endpoints(5), LB: fbs.LBLeastRequest}},
		{"hash", fbs.Cluster{Endpoints: endpoints(5), LB: fbs.LBHash, HashOn: fbs.HashOnHeader, HashOnName: "x-user"}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			tab := lbTable(b, reg, bc.c)
			defer tab.Release()
			b.ReportAllocs()
			for b.Loop() {
				if _, ok := tab.Balance(0, key, nil); !ok {
					b.Fatal("no pick")
				}
			}
		})
	}
}

// triedOf is a Tried holding ps.
func triedOf(ps ...*upstream.Pool) *Tried {
	var t Tried
	for _, p := range ps {
		t.Add(p)
	}
	return &t
}

// Every policy skips all the endpoints in avoid, not only the last one: a
// retry after two failures must not go back to the first (a hash walk
// revisited it, A → B → A).
func TestBalanceSkipsAllTried(t *testing.T) {
	for _, lb := range []uint8{fbs.LBRoundRobin, fbs.LBWeightedRoundRobin, fbs.LBLeastRequest, fbs.LBHash} {
		reg := upstream.NewRegistry(upstream.Options{})
		c := fbs.Cluster{Endpoints: endpoints(4), LB: lb}
		if lb == fbs.LBHash {
			c.HashOn = fbs.HashOnHeader
			c.HashOnName = "x-user"
		}
		tab := lbTable(t, reg, c)
		for i := range 100 {
			key := KeyOf([]byte(strconv.Itoa(i)))
			var tried Tried
			seen := map[*upstream.Pool]bool{}
			for range 4 {
				p, ok := tab.Balance(0, key, &tried)
				if !ok {
					t.Fatalf("lb %d key %d: no endpoint after %d of 4 tried", lb, i, len(seen))
				}
				if seen[p] {
					t.Fatalf("lb %d key %d: %s picked again after it was tried", lb, i, p.Addr())
				}
				seen[p] = true
				tried.Add(p)
			}
			if p, ok := tab.Balance(0, key, &tried); ok {
				t.Fatalf("lb %d key %d: all 4 tried, Balance still gave %s", lb, i, p.Addr())
			}
		}
		tab.Release()
		reg.Close()
	}
}

// TestConsistentHashStableAtEveryCount: removing the last of n endpoints
// moves only its keys whatever n is. The table's length used to follow the
// endpoint count in steps, and crossing a step (5 → 4, 17 → 16, 66 → 65)
// moved 60–97 % of the keys of endpoints that stayed.
func TestConsistentHashStableAtEveryCount(t *testing.T) {
	reg := upstream.NewRegistry(upstream.Options{})
	defer reg.Close()
	const keys = 20000
	mapping := func(eps []fbs.Endpoint) []string {
		tab := lbTable(t, reg, fbs.Cluster{Endpoints: eps, LB: fbs.LBHash, HashOn: fbs.HashOnHeader, HashOnName: "x-user"})
		defer tab.Release()
		return keyMapping(t, tab, keys)
	}
	for _, n := range []int{2, 3, 4, 5, 6, 16, 17, 18, 65, 66, 67, 300} {
		eps := endpoints(n)
		before, after := mapping(eps), mapping(eps[:n-1])
		strays := 0
		for k := range keys {
			if before[k] != eps[n-1].Address && after[k] != before[k] {
				strays++
			}
		}
		if strays > keys/100 {
			t.Errorf("%d → %d endpoints: %d of %d keys of endpoints that stayed moved, want under 1%%", n, n-1, strays, keys)
		}
	}
}

// BenchmarkMaglevBuild is the table's cost per hash cluster at every swap.
func BenchmarkMaglevBuild(b *testing.B) {
	for _, n := range []int{3, 100, 1024} {
		b.Run(fmt.Sprintf("endpoints=%d", n), func(b *testing.B) {
			snap := buildSnap(b, 1, []fbs.Cluster{{Name: "c", Endpoints: endpoints(n), LB: fbs.LBHash, HashOn: fbs.HashOnHeader, HashOnName: "x-user"}},
				[]fbs.Route{{ID: "r", Host: "*", Prefix: "/", Cluster: "c"}})
			cv := snap.ClusterAt(0)
			for b.Loop() {
				maglev(cv)
			}
		})
	}
}

// A hash cluster's Maglev table is built once per endpoint list and shared
// by the tables that follow: swaps come up to 10 a second and the build
// takes about a millisecond per cluster.
func TestMaglevTableShared(t *testing.T) {
	reg := upstream.NewRegistry(upstream.Options{})
	defer reg.Close()
	c := fbs.Cluster{Endpoints: endpoints(5), LB: fbs.LBHash, HashOn: fbs.HashOnHeader, HashOnName: "x-user"}
	a, b := lbTable(t, reg, c), lbTable(t, reg, c)
	defer a.Release()
	defer b.Release()
	if a.clusters[0].bal.ring != b.clusters[0].bal.ring {
		t.Error("two tables with the same endpoint list built two Maglev tables")
	}
	c.Endpoints = endpoints(6)[1:] // as many endpoints, other addresses
	other := lbTable(t, reg, c)
	defer other.Release()
	if other.clusters[0].bal.ring == a.clusters[0].bal.ring {
		t.Fatal("another endpoint list got the same Maglev table")
	}
	if len(other.clusters[0].bal.ring.table) != maglevSize {
		t.Fatalf("table length %d", len(other.clusters[0].bal.ring.table))
	}
}
