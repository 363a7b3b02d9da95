package routing

import (
	"strconv"
	"testing"
	"time"

	"github.com/snapgate/snapgate/edge/upstream"
	"github.com/snapgate/snapgate/fbs"
)

var allLB = []uint8{fbs.LBRoundRobin, fbs.LBWeightedRoundRobin, fbs.LBLeastRequest, fbs.LBHash}

func healthCluster(lb uint8, eps []fbs.Endpoint) fbs.Cluster {
	c := fbs.Cluster{Endpoints: eps, LB: lb}
	if lb == fbs.LBHash {
		c.HashOn = fbs.HashOnSourceIP
	}
	return c
}

// TestUnhealthySkipped: endpoints ctrl marks unhealthy are never picked by
// any policy, with or without a hash key; a cluster whose endpoints are all
// unhealthy has no pick (the proxy's 503); panic makes every endpoint
// routable again.
func TestUnhealthySkipped(t *testing.T) {
	reg := upstream.NewRegistry(upstream.Options{})
	defer reg.Close()
	for _, lb := range allLB {
		eps := endpoints(4)
		eps[1].Unhealthy, eps[3].Unhealthy = true, true
		tab := lbTable(t, reg, healthCluster(lb, eps))
		seen := map[string]int{}
		for i := range 400 {
			p, ok := tab.Balance(0, KeyOf([]byte(strconv.Itoa(i))), nil)
			if !ok {
				t.Fatalf("lb %d: no pick with two healthy endpoints", lb)
			}
			seen[p.Addr()]++
		}
		if seen[eps[1].Address]+seen[eps[3].Address] != 0 || seen[eps[0].Address] == 0 || seen[eps[2].Address] == 0 {
			t.Fatalf("lb %d: picks %v, want only %s and %s", lb, seen, eps[0].Address, eps[2].Address)
		}
		p, _ := tab.Balance(0, PickKey{}, nil)
		if q, ok := tab.Balance(0, PickKey{}, triedOf(p)); !ok || q == p {
			t.Fatalf("lb %d: avoiding one of two healthy endpoints gave %v %v", lb, q, ok)
		}
		tab.Release()

		for j := range eps {
			eps[j].Unhealthy = true
		}
		tab = lbTable(t, reg, healthCluster(lb, eps))
		if p, ok := tab.Balance(0, KeyOf([]byte("k")), nil); ok {
			t.Fatalf("lb %d: every endpoint unhealthy but %s was picked", lb, p.Addr())
		}
		tab.Release()

		c := healthCluster(lb, eps)
		c.Panic = true
		tab = lbTable(t, reg, c)
		seen = map[string]int{}
		for i := range 400 {
			p, ok := tab.Balance(0, KeyOf([]byte(strconv.Itoa(i))), nil)
			if !ok {
				t.Fatalf("lb %d: panic mode but no pick", lb)
			}
			seen[p.Addr()]++
		}
		if len(seen) != len(eps) {
			t.Fatalf("lb %d: panic mode picked %v, want every endpoint", lb, seen)
		}
		tab.Release()
	}
}

// rampShare returns the share of picks endpoint 0 of two gets when it
// recovered `ago` before now with a window of `window`.
func rampShare(t *testing.T, reg *upstream.Registry, lb uint8, ago, window time.Duration) float64 {
	t.Helper()
	eps := endpoints(2)
	eps[0].RecoveredAtMs = uint64(time.Now().Add(-ago).UnixMilli())
	eps[1].RecoveredAtMs = uint64(time.Now().Add(-time.Hour).UnixMilli())
	c := healthCluster(lb, eps)
	c.SlowStartMs = uint32(window.Milliseconds())
	tab := lbTable(t, reg, c)
	defer tab.Release()
	const picks = 20000
	n := 0
	for range picks {
		p, ok := tab.Pick(0)
		if !ok {
			t.Fatal("no pick")
		}
		if p.Addr() == eps[0].Address {
			n++
		}
	}
	return float64(n) / picks
}

// TestSlowStartShare: a recovered endpoint's share of picks grows with the
// time since it recovered, from about a tenth of its fair share to all of it; a start
// in the future (ctrl's clock ahead) counts as now. Consistent hashing
// ignores slow start so that keys stay on their endpoint.
func TestSlowStartShare(t *testing.T) {
	reg := upstream.NewRegistry(upstream.Options{})
	defer reg.Close()
	for _, lb := range []uint8{fbs.LBRoundRobin, fbs.LBWeightedRoundRobin, fbs.LBLeastRequest} {
		// The ramp scales the endpoint's weight by f = max(0.1,
		// elapsed/window): its share of two is f/(1+f) with round robin
		// (a refused turn passes to the next turn), f/2 with least request
		// (a refused choice goes to the other).
		for _, tc := range []struct {
			ago      time.Duration
			min, max float64
		}{
			{0, 0.03, 0.10},
			{-time.Hour, 0.03, 0.10},
			{30 * time.Minute, 0.20, 0.36},
			{2 * time.Hour, 0.45, 0.55},
		} {
			got := rampShare(t, reg, lb, tc.ago, time.Hour)
			if got < tc.min || got > tc.max {
				t.Errorf("lb %d, recovered %v ago: share %.3f, want %.2f..%.2f", lb, tc.ago, got, tc.min, tc.max)
			}
		}
	}
	eps := endpoints(3)
	eps[0].RecoveredAtMs = uint64(time.Now().UnixMilli())
	c := healthCluster(fbs.LBHash, eps)
	c.SlowStartMs = 3600000
	tab := lbTable(t, reg, c)
	defer tab.Release()
	for i := range 200 {
		k := KeyOf([]byte(strconv.Itoa(i)))
		p, _ := tab.Balance(0, k, nil)
		for range 5 {
			if q, _ := tab.Balance(0, k, nil); q != p {
				t.Fatal("slow start moved a hash key off its endpoint")
			}
		}
	}
}

// TestSlowStartOnlyEndpointStillServes: a ramping endpoint refused by the
// ramp is still picked when every other endpoint is excluded.
func TestSlowStartOnlyEndpointStillServes(t *testing.T) {
	reg := upstream.NewRegistry(upstream.Options{})
	defer reg.Close()
	for _, lb := range []uint8{fbs.LBRoundRobin, fbs.LBWeightedRoundRobin, fbs.LBLeastRequest} {
		eps := endpoints(2)
		eps[0].RecoveredAtMs = uint64(time.Now().UnixMilli())
		eps[1].Unhealthy = true
		c := healthCluster(lb, eps)
		c.SlowStartMs = 3600000
		tab := lbTable(t, reg, c)
		for range 200 {
			if p, ok := tab.Pick(0); !ok || p.Addr() != eps[0].Address {
				t.Fatalf("lb %d: the only routable endpoint was not picked", lb)
			}
		}
		tab.Release()
	}
}

// TestSlowStartEnds: once the window has passed, picks are even again and
// stop reading the clock.
func TestSlowStartEnds(t *testing.T) {
	reg := upstream.NewRegistry(upstream.Options{})
	defer reg.Close()
	eps := endpoints(2)
	eps[0].RecoveredAtMs = uint64(time.Now().UnixMilli())
	c := fbs.Cluster{Endpoints: eps, SlowStartMs: 50}
	tab := lbTable(t, reg, c)
	defer tab.Release()
	ramp := tab.clusters[0].ramp
	if ramp == nil {
		t.Fatal("no ramp for an endpoint that just recovered")
	}
	deadline := time.Now().Add(5 * time.Second)
	for ramp.active(time.Now().UnixMilli()) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	n := 0
	for range 1000 {
		if p, _ := tab.Pick(0); p.Addr() == eps[0].Address {
			n++
		}
	}
	if n != 500 || !ramp.over.Load() {
		t.Fatalf("after the window: %d of 1000 picks, over %v; want 500, true", n, ramp.over.Load())
	}
	c.Endpoints[0].RecoveredAtMs = uint64(time.Now().Add(-time.Second).UnixMilli())
	tab2 := lbTable(t, reg, c)
	defer tab2.Release()
	if tab2.clusters[0].ramp != nil {
		t.Fatal("a ramp that ended before the swap was kept")
	}
}

// BenchmarkBalanceHealth compares picks in a cluster without health
// fields, with an unhealthy endpoint, and with one in slow start (which
// reads the clock and draws a random number per pick).
func BenchmarkBalanceHealth(b *testing.B) {
	reg := upstream.NewRegistry(upstream.Options{})
	defer reg.Close()
	down := endpoints(5)
	down[1].Unhealthy = true
	ramp := endpoints(5)
	ramp[2].RecoveredAtMs = uint64(time.Now().UnixMilli())
	for _, bc := range []struct {
		name string
		c    fbs.Cluster
	}{
		{"plain", fbs.Cluster{Endpoints: endpoints(5)}},
		{"unhealthy", fbs.Cluster{Endpoints: down}},
		{"slow-start", fbs.Cluster{Endpoints: ramp, SlowStartMs: 3600000}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			tab := lbTable(b, reg, bc.c)
			defer tab.Release()
			b.ReportAllocs()
			for b.Loop() {
				if _, ok := tab.Pick(0); !ok {
					b.Fatal("no pick")
				}
			}
		})
	}
}
