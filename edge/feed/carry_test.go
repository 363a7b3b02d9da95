package feed

import (
	"bytes"
	"testing"

	"github.com/snapgate/snapgate/edge/routing"
	"github.com/snapgate/snapgate/edge/upstream"
	"github.com/snapgate/snapgate/fbs"
	"github.com/snapgate/snapgate/wire"
)

// TestUnchangedShardsShareWalksAfterBoot: every snapshot the feed puts in
// service shares the verified walks of its unchanged shards with the one
// it replaces (what fbs.Snapshot.CarryRoutes and the proxy's counter
// indexes rely on), in steady state and also for the first DELTA or FULL
// after a boot, when the table in service was mapped from disk and the
// feed has no delta base of its own.
func TestUnchangedShardsShareWalksAfterBoot(t *testing.T) {
	s, enc, st := newDeltaTest(t)
	snaps := map[uint64]*fbs.Snapshot{}
	build := func(v uint64) []byte {
		st.Version, st.ParentVersion = v, v-1
		st.Routes[int(v)%len(st.Routes)].TimeoutMs = uint32(v) // one route changes
		b, err := fbs.Build(st)
		if err != nil {
			t.Fatal(err)
		}
		snaps[v] = mustOpenT(t, bytes.Clone(b))
		return b
	}
	delta := func(v uint64) []byte {
		build(v)
		p, err := enc.AppendDelta(nil, snaps[v-1], snaps[v])
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	full := func(v uint64) []byte { return wire.AppendFull(nil, wire.Full{Version: v, Snapshot: build(v)}) }
	var carried, byID int
	s.holder.SetOnInstall(func(old, tab *routing.Table) {
		var from *fbs.Snapshot
		if old != nil {
			from = old.Snapshot()
		}
		tab.Snapshot().CarryRoutes(from, func(_, _, n int) { carried += n }, func(int, []byte) { byID++ })
	})
	reg := upstream.NewRegistry(upstream.Options{})
	defer reg.Close()
	boot := func(v uint64) { // what edge.Node does at start: map the newest file, no feed base
		m, err := s.c.cfg.Store.Map(v)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.holder.Replace(routing.NewTable(m.Snapshot(), func() { m.Unmap() }, reg)); err != nil {
			t.Fatal(err)
		}
		s.c.setBase(nil)
	}
	apply := func(what string, v uint64, handle func([]byte) error, payload []byte) {
		t.Helper()
		carried, byID = 0, 0
		if err := handle(payload); err != nil || s.holder.Version() != v {
			t.Fatalf("%s: %v, v%d in service", what, err, s.holder.Version())
		}
		// One shard of 8 holds the changed route.
		if carried < 150 || byID > 50 {
			t.Errorf("%s: %d routes carried, %d looked up by id; want one shard's by id", what, carried, byID)
		}
	}
	if err := s.handleFull(full(1)); err != nil {
		t.Fatal(err)
	}
	apply("DELTA in steady state", 2, s.handleDelta, delta(2))
	boot(2)
	apply("first DELTA after a boot", 3, s.handleDelta, delta(3))
	boot(3)
	apply("first FULL after a boot", 4, s.handleFull, full(4))
}
