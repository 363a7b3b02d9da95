//go:build !race

package routing

import (
	"testing"
	"time"

	"github.com/snapgate/snapgate/edge/upstream"
	"github.com/snapgate/snapgate/fbs"
)

// TestHotPathAllocs pins RouteRequest, Balance for every policy (also
// weighted round robin on its stride, and with unhealthy and
// slow-starting endpoints), the in-flight counters and success reports
// to zero allocations.
func TestHotPathAllocs(t *testing.T) {
	reg := upstream.NewRegistry(upstream.Options{})
	defer reg.Close()
	eps := endpoints(5)
	eps[1].Weight = 4
	large := endpoints(300) // beyond maxOrderWork: the stride path
	for j := range large {
		large[j].Weight = uint16(1 + j*7%1000)
	}
	for _, c := range []fbs.Cluster{
		{Endpoints: endpoints(5)}, {Endpoints: eps, LB: fbs.LBWeightedRoundRobin}, {Endpoints: large, LB: fbs.LBWeightedRoundRobin},
		{Endpoints: endpoints(5), LB: fbs.LBLeastRequest}, {Endpoints: endpoints(5), LB: fbs.LBHash, HashOn: fbs.HashOnHeader, HashOnName: "x-user"},
		healthy(fbs.LBRoundRobin), healthy(fbs.LBWeightedRoundRobin), healthy(fbs.LBLeastRequest), healthy(fbs.LBHash),
	} {
		tab := lbTable(t, reg, c)
		req := fbs.Request{Host: []byte("a.example"), Path: []byte("/x/y"), Method: []byte("GET")}
		var m fbs.Match
		cookie := []byte("a=1; sid=42")
		allocs := testing.AllocsPerRun(500, func() {
			if !tab.RouteRequest(&req, &m) {
				t.Fatal("no route")
			}
			v, _ := CookieValue(cookie, []byte("sid"))
			p, ok := tab.Balance(m.ClusterIndex(), KeyOf(v), nil)
			if !ok {
				t.Fatal("no endpoint")
			}
			p.Begin()
			p.ReportSuccess()
			p.End()
			_ = tab.HashOn(m.ClusterIndex())
		})
		if allocs != 0 {
			t.Errorf("lb %d: %v allocs per request, want 0", c.LB, allocs)
		}
		tab.Release()
	}
}

// healthy is a cluster with an unhealthy endpoint and one in slow start.
func healthy(lb uint8) fbs.Cluster {
	c := fbs.Cluster{Endpoints: endpoints(5), LB: lb, SlowStartMs: 3600000}
	if lb == fbs.LBHash {
		c.HashOn, c.HashOnName = fbs.HashOnHeader, "x-user"
	}
	c.Endpoints[1].Unhealthy = true
	c.Endpoints[2].RecoveredAtMs = uint64(time.Now().UnixMilli())
	return c
}
