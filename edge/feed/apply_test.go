package feed

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/snapgate/snapgate/fbs"
	"github.com/snapgate/snapgate/wire"
)

// TestApplyRecyclesMemorySafely drives one stream through DELTAs, a
// corrupt DELTA (NACKed), FULLs from the version in service and from
// another one, checking after each frame that the delta base, the file on
// disk and the mapping in service all hold exactly the file of the version
// in service: the rebuild memory the feed recycles (a former base's, or a
// refused file's) is never memory a snapshot still reads.
func TestApplyRecyclesMemorySafely(t *testing.T) {
	s, enc, st := newDeltaTest(t)
	files := map[uint64][]byte{}
	snaps := map[uint64]*fbs.Snapshot{}
	build := func(v uint64) *fbs.Snapshot {
		st.Version, st.ParentVersion = v, v-1
		st.Routes[int(v)%len(st.Routes)].TimeoutMs = uint32(v)
		b, err := fbs.Build(st)
		if err != nil {
			t.Fatal(err)
		}
		files[v] = b
		snaps[v] = mustOpenT(t, bytes.Clone(b))
		return snaps[v]
	}
	check := func(step string, want uint64) {
		t.Helper()
		if got := s.holder.Version(); got != want {
			t.Fatalf("%s: v%d in service, want v%d (%s)", step, got, want, s.c.Status().LastError)
		}
		if !bytes.Equal(s.c.base.Bytes(), files[want]) {
			t.Fatalf("%s: the delta base is not v%d's file", step, want)
		}
		tbl := s.holder.Acquire()
		defer tbl.Release()
		if !bytes.Equal(tbl.Snapshot().Bytes(), files[want]) {
			t.Fatalf("%s: the mapping in service is not v%d's file", step, want)
		}
	}
	delta := func(from, to uint64) []byte {
		p, err := enc.AppendDelta(nil, snaps[from], snaps[to])
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	full := func(v uint64) []byte { return wire.AppendFull(nil, wire.Full{Version: v, Snapshot: files[v]}) }

	build(1)
	if err := s.handleFull(full(1)); err != nil {
		t.Fatal(err)
	}
	check("FULL v1", 1)
	for v := uint64(2); v <= 4; v++ {
		build(v)
		if err := s.handleDelta(delta(v-1, v)); err != nil {
			t.Fatal(err)
		}
		check(fmt.Sprintf("DELTA v%d", v), v)
	}
	// A DELTA whose rebuilt file fails its hash: NACKed, v4 stays.
	build(5)
	bad := delta(4, 5)
	bad[len(bad)-1] ^= 0xff
	if err := s.handleDelta(bad); err != nil {
		t.Fatal(err)
	}
	check("corrupt DELTA v5", 4)
	if err := s.handleDelta(delta(4, 5)); err != nil {
		t.Fatal(err)
	}
	check("DELTA v5", 5)
	// A FULL verified after the snapshot in service, then DELTAs from it.
	build(6)
	build(7)
	if err := s.handleFull(full(7)); err != nil {
		t.Fatal(err)
	}
	check("FULL v7", 7)
	for v := uint64(8); v <= 10; v++ {
		build(v)
		if err := s.handleDelta(delta(v-1, v)); err != nil {
			t.Fatal(err)
		}
		check(fmt.Sprintf("DELTA v%d", v), v)
	}
	// A FULL whose file is corrupt (trailer fixed up by nobody): NACKed.
	build(11)
	corrupt := bytes.Clone(files[11])
	corrupt[len(corrupt)/2] ^= 0xff
	if err := s.handleFull(wire.AppendFull(nil, wire.Full{Version: 11, Snapshot: corrupt})); err != nil {
		t.Fatal(err)
	}
	check("corrupt FULL v11", 10)
	if err := s.handleDelta(delta(10, 11)); err != nil {
		t.Fatal(err)
	}
	check("DELTA v11", 11)
}

// A snapshot delivered after ctrl announced a newer one (DELTAs queued
// behind a slow link) is applied but not confirmed as current: routes with
// a staleness bound kept serving it as fresh although ctrl had moved on.
// The one ctrl announced as its latest is confirmed on delivery.
func TestOlderDeliveryNotConfirmed(t *testing.T) {
	s := newTestStream(t)
	defer s.close()
	st := fbs.State{Shards: 2, Clusters: []fbs.Cluster{{Name: "web", Endpoints: []fbs.Endpoint{{Address: "127.0.0.1:9000"}}}},
		Routes: []fbs.Route{{ID: "r", Host: "*", Prefix: "/", Cluster: "web"}}}
	full := func(v uint64) []byte {
		st.Version = v
		b, err := fbs.Build(st)
		if err != nil {
			t.Fatal(err)
		}
		return wire.AppendFull(nil, wire.Full{Version: v, Snapshot: b})
	}
	s.c.noteLatest(20) // a heartbeat announced v20
	if err := s.handleFull(full(11)); err != nil {
		t.Fatal(err)
	}
	if got := s.holder.Version(); got != 11 {
		t.Fatalf("v%d in service, want v11", got)
	}
	if v, at := s.c.Freshness(); v == 11 && !at.IsZero() {
		t.Fatal("v11 confirmed as current after ctrl announced v20")
	}
	if err := s.handleFull(full(20)); err != nil {
		t.Fatal(err)
	}
	if v, at := s.c.Freshness(); v != 20 || at.IsZero() {
		t.Fatalf("ctrl's latest, delivered: freshness v%d at %v, want v20 confirmed", v, at)
	}
}

func mustOpenT(t *testing.T, b []byte) *fbs.Snapshot {
	t.Helper()
	s, err := fbs.Open(b)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// newDeltaTest returns a test stream and a delta encoder, both closed with
// the test, and a state of 200 routes over 8 shards to build versions of.
func newDeltaTest(t *testing.T) (*testStream, *wire.DeltaEncoder, fbs.State) {
	s := newTestStream(t)
	t.Cleanup(s.close)
	enc, err := wire.NewDeltaEncoder()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { enc.Close() })
	st := fbs.State{Shards: 8, Clusters: []fbs.Cluster{{Name: "web", Endpoints: []fbs.Endpoint{{Address: "127.0.0.1:9000"}}}}}
	for i := range 200 {
		st.Routes = append(st.Routes, fbs.Route{ID: fmt.Sprintf("r%03d", i), Host: "*", Prefix: fmt.Sprintf("/p%d", i), Cluster: "web"})
	}
	return s, enc, st
}
