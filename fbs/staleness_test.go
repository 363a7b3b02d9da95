package fbs

import (
	"bytes"
	"strings"
	"testing"

	"github.com/cespare/xxhash/v2"

	"github.com/snapgate/snapgate/fbs/snapfb"
)

func stalenessState() State {
	return State{Version: 3, ParentVersion: 2,
		Clusters: []Cluster{{Name: "c", Endpoints: []Endpoint{{Address: "127.0.0.1:1"}}}},
		Routes: []Route{
			{ID: "strict", Host: "a.example", Prefix: "/pay", Cluster: "c", MaxStalenessMs: 2000, OnStaleReject: true},
			{ID: "lenient", Host: "a.example", Prefix: "/", Cluster: "c", MaxStalenessMs: 60000, StaleHeader: true},
			{ID: "plain", Host: "b.example", Prefix: "/", Cluster: "c"},
		}}
}

func TestStalenessFieldsRoundTrip(t *testing.T) {
	st := stalenessState()
	b := mustBuild(t, st)
	s := mustOpen(t, b)
	want := map[string]Route{}
	for _, r := range st.Routes {
		want[r.ID] = r
	}
	s.ForEachRoute(func(r Route) bool {
		w := want[r.ID]
		if r.MaxStalenessMs != w.MaxStalenessMs || r.OnStaleReject != w.OnStaleReject || r.StaleHeader != w.StaleHeader {
			t.Errorf("route %s stored as bound %d reject %v header %v, want %d %v %v",
				r.ID, r.MaxStalenessMs, r.OnStaleReject, r.StaleHeader, w.MaxStalenessMs, w.OnStaleReject, w.StaleHeader)
		}
		delete(want, r.ID)
		return true
	})
	if len(want) != 0 {
		t.Fatalf("routes missing after round trip: %v", want)
	}
	var m Match
	for _, tc := range []struct {
		host, path   string
		bound        uint32
		reject, head bool
	}{
		{"a.example", "/pay/x", 2000, true, false},
		{"a.example", "/other", 60000, false, true},
		{"b.example", "/", 0, false, false},
	} {
		if !s.Match([]byte(tc.host), []byte(tc.path), &m) {
			t.Fatalf("%s%s: no match", tc.host, tc.path)
		}
		if m.MaxStalenessMs() != tc.bound || m.OnStaleReject() != tc.reject || m.StaleHeader() != tc.head {
			t.Errorf("%s%s: Match says bound %d reject %v header %v, want %d %v %v", tc.host, tc.path,
				m.MaxStalenessMs(), m.OnStaleReject(), m.StaleHeader(), tc.bound, tc.reject, tc.head)
		}
	}

	// Determinism (P5): same state in another order, same bytes; and the
	// new fields reach the content hash.
	rev := st
	rev.Routes = []Route{st.Routes[2], st.Routes[0], st.Routes[1]}
	if !bytes.Equal(b, mustBuild(t, rev)) {
		t.Fatal("route order changed the bytes")
	}
	for i, mod := range []func(*Route){
		func(r *Route) { r.MaxStalenessMs++ },
		func(r *Route) { r.OnStaleReject = !r.OnStaleReject },
		func(r *Route) { r.StaleHeader = !r.StaleHeader },
	} {
		ch := st
		ch.Routes = append([]Route(nil), st.Routes...)
		mod(&ch.Routes[0])
		if mustOpen(t, mustBuild(t, ch)).ContentHash() == s.ContentHash() {
			t.Errorf("change %d did not change the content hash", i)
		}
	}
}

// TestOpenRejectsUnknownOnStale stores an on_stale mode this edge does not
// know: Open must refuse the snapshot rather than guess.
func TestOpenRejectsUnknownOnStale(t *testing.T) {
	st := stalenessState()
	st.Shards = 1
	b := mustBuild(t, st)
	s := mustOpen(t, b)
	var sh snapfb.Shard
	if !s.root.Shards(&sh, 0) {
		t.Fatal("no shard 0")
	}
	data := sh.DataBytes() // aliases b
	rs := snapfb.GetRootAsRouteShard(data, 0)
	var r snapfb.Route
	mutated := false
	for j := range rs.RoutesLength() {
		rs.Routes(&r, j)
		if r.OnStale() == onStaleReject {
			mutated = r.MutateOnStale(2)
		}
	}
	if !mutated {
		t.Fatal("no stored on_stale to corrupt")
	}
	// Keep the content hash and trailer consistent so that only the
	// field's value is wrong.
	h := xxhash.New()
	h.Write(data)
	var scratch [4]byte
	hashClusters(h, st.Clusters, scratch[:])
	root := snapfb.GetRootAsSnapshot(b[:len(b)-TrailerSize], 0)
	root.MutateContentHash(h.Sum64())
	_, err := Open(fixTrailer(b))
	if err == nil || !strings.Contains(err.Error(), "on_stale 2") {
		t.Fatalf("Open with on_stale 2 = %v, want an error naming on_stale", err)
	}
}
