package fbs

import (
	"bytes"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/snapgate/snapgate/fbs/snapfb"
)

// healthState is a small state whose clusters carry every health field.
func healthState() State {
	return State{
		Version: 7, ParentVersion: 6, Shards: 2,
		Clusters: []Cluster{
			{Name: "api", Panic: true, SlowStartMs: 30000, Endpoints: []Endpoint{
				{Address: "10.0.0.1:80", Unhealthy: true},
				{Address: "10.0.0.2:80", RecoveredAtMs: 1893456000123},
				{Address: "10.0.0.3:80", Unhealthy: true, RecoveredAtMs: 1 << 40},
			}},
			{Name: "web", Endpoints: []Endpoint{{Address: "10.0.1.1:80"}}},
		},
		Routes: []Route{
			{ID: "a", Host: "*", Prefix: "/api", Cluster: "api"},
			{ID: "w", Host: "*", Prefix: "/", Cluster: "web"},
		},
	}
}

// withoutHealth clears every health field of st's clusters (copying them).
func withoutHealth(st State) State {
	st.Clusters = slices.Clone(st.Clusters)
	for i := range st.Clusters {
		c := &st.Clusters[i]
		c.Panic, c.SlowStartMs = false, 0
		c.Endpoints = slices.Clone(c.Endpoints)
		for j := range c.Endpoints {
			c.Endpoints[j].Unhealthy, c.Endpoints[j].RecoveredAtMs = false, 0
		}
	}
	return st
}

func TestHealthRoundTrip(t *testing.T) {
	st := healthState()
	s := mustOpen(t, mustBuild(t, st))
	for i, c := range st.Clusters {
		v := s.ClusterAt(s.ClusterIndex([]byte(c.Name)))
		if v.Panic() != c.Panic || v.SlowStartMs() != c.SlowStartMs {
			t.Fatalf("cluster %d: panic %v slow start %d, want %v %d", i, v.Panic(), v.SlowStartMs(), c.Panic, c.SlowStartMs)
		}
		for j, e := range c.Endpoints {
			if v.EndpointUnhealthy(j) != e.Unhealthy || v.EndpointRecoveredAtMs(j) != e.RecoveredAtMs {
				t.Fatalf("cluster %q endpoint %d: unhealthy %v recovered %d, want %+v", c.Name, j, v.EndpointUnhealthy(j), v.EndpointRecoveredAtMs(j), e)
			}
		}
		n := len(c.Endpoints)
		if v.EndpointUnhealthy(n) || v.EndpointUnhealthy(-1) || v.EndpointRecoveredAtMs(n) != 0 {
			t.Fatalf("cluster %q: out-of-range endpoint reports health", c.Name)
		}
	}
	if z := s.ClusterAt(-1); z.Panic() || z.SlowStartMs() != 0 || z.EndpointUnhealthy(0) || z.EndpointRecoveredAtMs(0) != 0 {
		t.Fatal("the zero ClusterView reports health")
	}
}

// TestHealthFieldsAbsentKeepBytes: a state without health builds exactly
// the bytes an encoder that never wrote the fields would (FlatBuffers
// omits default values), so its content hash is the pre-health one; any
// health field changes the hash.
func TestHealthFieldsAbsentKeepBytes(t *testing.T) {
	plain := withoutHealth(healthState())
	a := mustBuild(t, plain)
	// The generated code must not have written the zero-valued fields:
	// every Endpoint and Cluster vtable then lacks the new slots.
	root := snapfb.GetRootAsSnapshot(a[:len(a)-TrailerSize], 0)
	var c snapfb.Cluster
	var e snapfb.Endpoint
	for i := range root.ClustersLength() {
		root.Clusters(&c, i)
		ct := c.Table()
		if ct.Offset(18) != 0 || ct.Offset(20) != 0 {
			t.Fatalf("cluster %d: zero health fields were written", i)
		}
		for j := range c.EndpointsLength() {
			c.Endpoints(&e, j)
			et := e.Table()
			if et.Offset(8) != 0 || et.Offset(10) != 0 {
				t.Fatalf("cluster %d endpoint %d: zero health fields were written", i, j)
			}
		}
	}
	base := mustOpen(t, a).ContentHash()
	seen := map[uint64]string{base: "none"}
	for name, edit := range map[string]func(*State){
		"panic":           func(s *State) { s.Clusters[1].Panic = true },
		"slow_start_ms":   func(s *State) { s.Clusters[0].SlowStartMs = 1 },
		"unhealthy":       func(s *State) { s.Clusters[0].Endpoints[2].Unhealthy = true },
		"recovered_at_ms": func(s *State) { s.Clusters[0].Endpoints[0].RecoveredAtMs = 1 },
		"recovered high":  func(s *State) { s.Clusters[0].Endpoints[0].RecoveredAtMs = 1 << 32 },
	} {
		st := withoutHealth(plain)
		edit(&st)
		h := mustOpen(t, mustBuild(t, st)).ContentHash()
		if other, dup := seen[h]; dup {
			t.Errorf("%s: content hash %x equals that of %s", name, h, other)
		}
		seen[h] = name
	}
}

// TestHealthBuilderMatchesBuild: health changes alone reuse every shard
// in the Builder and give Build's bytes.
func TestHealthBuilderMatchesBuild(t *testing.T) {
	st := genState(2000, 5)
	st.Shards = 16
	var b Builder
	if _, err := b.Build(st); err != nil {
		t.Fatal(err)
	}
	before := shardMemory(&b)
	for step := range 5 {
		st.Clusters = slices.Clone(st.Clusters)
		c := &st.Clusters[step*7%len(st.Clusters)]
		c.Endpoints = slices.Clone(c.Endpoints)
		c.Endpoints[0].Unhealthy = !c.Endpoints[0].Unhealthy
		c.Endpoints[0].RecoveredAtMs = uint64(1e12 + step)
		c.Panic = step%2 == 0
		c.SlowStartMs = uint32(step * 1000)
		got, err := b.Build(st)
		if err != nil {
			t.Fatal(err)
		}
		if want := mustBuild(t, st); !bytes.Equal(got, want) {
			t.Fatalf("step %d: Builder bytes differ from Build", step)
		}
		for i, c := range b.cache {
			if &c.data[0] != before[i] {
				t.Fatalf("step %d: shard %d re-encoded for a health-only change", step, i)
			}
		}
	}
}

// TestHealthCorruption: with the trailer recomputed, a changed health
// field fails the content hash, and damage anywhere in a health-carrying
// snapshot is rejected or survived, never a panic.
func TestHealthCorruption(t *testing.T) {
	good := mustBuild(t, healthState())
	s := mustOpen(t, good)
	for name, mutate := range map[string]func(root *snapfb.Snapshot) bool{
		"panic": func(root *snapfb.Snapshot) bool {
			var c snapfb.Cluster
			root.Clusters(&c, 0)
			return c.MutatePanic(false)
		},
		"slow_start_ms": func(root *snapfb.Snapshot) bool {
			var c snapfb.Cluster
			root.Clusters(&c, 0)
			return c.MutateSlowStartMs(1)
		},
		"unhealthy": func(root *snapfb.Snapshot) bool {
			var c snapfb.Cluster
			var e snapfb.Endpoint
			root.Clusters(&c, 0)
			c.Endpoints(&e, 0)
			return e.MutateUnhealthy(false)
		},
		"recovered_at_ms": func(root *snapfb.Snapshot) bool {
			var c snapfb.Cluster
			var e snapfb.Endpoint
			root.Clusters(&c, 0)
			c.Endpoints(&e, 1)
			return e.MutateRecoveredAtMs(e.RecoveredAtMs() + 1)
		},
	} {
		b := bytes.Clone(good)
		if !mutate(snapfb.GetRootAsSnapshot(b[:len(b)-TrailerSize], 0)) {
			t.Fatalf("%s: field not present to mutate", name)
		}
		_, err := Open(fixTrailer(b))
		if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "content_hash") {
			t.Errorf("%s changed: Open error %v, want a content_hash mismatch", name, err)
		}
	}
	if s.ContentHash() == mustOpen(t, mustBuild(t, withoutHealth(healthState()))).ContentHash() {
		t.Fatal("health does not reach the content hash")
	}
	rejected := 0
	for pos := 0; pos < len(good)-TrailerSize; pos++ {
		b := bytes.Clone(good)
		b[pos] ^= 0xff
		if o, err := Open(fixTrailer(b)); err != nil {
			rejected++
		} else {
			exercise(o)
		}
	}
	if rejected == 0 {
		t.Fatal("no corruption was rejected")
	}
}
