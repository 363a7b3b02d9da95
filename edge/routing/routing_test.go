package routing

import (
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/snapgate/snapgate/edge/upstream"
	"github.com/snapgate/snapgate/fbs"
)

func buildSnap(t testing.TB, version uint64, clusters []fbs.Cluster, routes []fbs.Route) *fbs.Snapshot {
	t.Helper()
	b, err := fbs.Build(fbs.State{Version: version, ParentVersion: version - 1, Clusters: clusters, Routes: routes})
	if err != nil {
		t.Fatal(err)
	}
	s, err := fbs.Open(b)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func twoClusterSnap(t testing.TB, version uint64) *fbs.Snapshot {
	return buildSnap(t, version,
		[]fbs.Cluster{
			{Name: "api", Endpoints: []fbs.Endpoint{{Address: "127.0.0.1:1"}, {Address: "127.0.0.1:2"}}, ConnectTimeoutMs: 250},
			{Name: "empty"},
		},
		[]fbs.Route{
			{ID: "r1", Host: "a.example", Prefix: "/api", Cluster: "api", TimeoutMs: 1500},
			{ID: "r2", Host: "*", Prefix: "/", Cluster: "empty"},
		})
}

func TestTableRouteAndPick(t *testing.T) {
	reg := upstream.NewRegistry(upstream.Options{})
	defer reg.Close()
	released := 0
	tab := NewTable(twoClusterSnap(t, 7), func() { released++ }, reg)
	var m fbs.Match
	if !tab.Route([]byte("a.example"), []byte("/api/x"), &m) || string(m.ID()) != "r1" || m.TimeoutMs() != 1500 {
		t.Fatalf("route: %q", m.ID())
	}
	api := m.ClusterIndex()
	if got := tab.ConnectTimeout(api).Milliseconds(); got != 250 {
		t.Fatalf("connect timeout %d", got)
	}
	var seen []string
	for range 4 {
		p, ok := tab.Pick(api)
		if !ok {
			t.Fatal("no pool")
		}
		seen = append(seen, p.Addr())
	}
	if seen[0] == seen[1] || seen[0] != seen[2] || seen[1] != seen[3] {
		t.Fatalf("not round robin: %v", seen)
	}
	if !tab.Route([]byte("other"), []byte("/x"), &m) || string(m.ID()) != "r2" {
		t.Fatalf("wildcard: %q", m.ID())
	}
	if _, ok := tab.Pick(m.ClusterIndex()); ok {
		t.Fatal("empty cluster picked")
	}
	if _, ok := tab.Pick(99); ok {
		t.Fatal("out of range picked")
	}
	if reg.Len() != 2 {
		t.Fatalf("registry has %d pools", reg.Len())
	}
	tab.Release()
	if released != 1 || reg.Len() != 0 {
		t.Fatalf("released=%d pools=%d", released, reg.Len())
	}
}

func TestHolderSwapVersions(t *testing.T) {
	reg := upstream.NewRegistry(upstream.Options{})
	defer reg.Close()
	var h Holder
	if h.Acquire() != nil || h.Version() != 0 {
		t.Fatal("empty holder")
	}
	var rel [3]int
	t5 := NewTable(twoClusterSnap(t, 5), func() { rel[0]++ }, reg)
	if old, err := h.Swap(t5); err != nil || old != nil {
		t.Fatal(err)
	}
	t4 := NewTable(twoClusterSnap(t, 4), func() { rel[1]++ }, reg)
	_, err := h.Swap(t4)
	var se *StaleVersionError
	if !errors.As(err, &se) || se.Current != 5 || se.Offered != 4 {
		t.Fatalf("stale swap: %v", err)
	}
	t4.Release()
	same := NewTable(twoClusterSnap(t, 5), func() { rel[1]++ }, reg)
	if _, err := h.Swap(same); err == nil {
		t.Fatal("equal version accepted")
	}
	same.Release()

	held := h.Acquire()
	t6 := NewTable(twoClusterSnap(t, 6), func() { rel[2]++ }, reg)
	if old, err := h.Swap(t6); err != nil || old != t5 {
		t.Fatalf("swap 6: %v", err)
	}
	if rel[0] != 0 {
		t.Fatal("released while a request holds it")
	}
	// Pools shared by address survive the swap.
	if reg.Len() != 2 {
		t.Fatalf("pools=%d", reg.Len())
	}
	held.Release()
	if rel[0] != 1 || rel[1] != 2 || h.Version() != 6 {
		t.Fatalf("rel=%v version=%d", rel, h.Version())
	}
	h.Close()
	if rel[2] != 1 || h.Acquire() != nil || reg.Len() != 0 {
		t.Fatalf("close: rel=%v pools=%d", rel, reg.Len())
	}
}

// TestHolderOnInstall: the install hook sees the table in service when it
// is set, then every table about to go into service with the one it
// replaces, before a request can acquire it; a refused table never.
func TestHolderOnInstall(t *testing.T) {
	reg := upstream.NewRegistry(upstream.Options{})
	defer reg.Close()
	var h Holder
	defer h.Close()
	t1 := NewTable(twoClusterSnap(t, 1), nil, reg)
	if _, err := h.Swap(t1); err != nil {
		t.Fatal(err)
	}
	type call struct{ old, t, inService *Table }
	var calls []call
	h.SetOnInstall(func(old, tab *Table) {
		in := h.Acquire()
		in.Release()
		calls = append(calls, call{old, tab, in})
	})
	t2 := NewTable(twoClusterSnap(t, 2), nil, reg)
	if _, err := h.Swap(t2); err != nil {
		t.Fatal(err)
	}
	stale := NewTable(twoClusterSnap(t, 2), nil, reg)
	if _, err := h.Swap(stale); err == nil {
		t.Fatal("equal version accepted")
	}
	stale.Release()
	t0 := NewTable(twoClusterSnap(t, 0), nil, reg)
	if _, err := h.Replace(t0); err != nil {
		t.Fatal(err)
	}
	want := []call{{nil, t1, t1}, {t1, t2, t1}, {t2, t0, t2}}
	if !slices.Equal(calls, want) {
		t.Fatalf("hook calls %+v, want %+v", calls, want)
	}
}

// TestHolderRefcountRace hammers Acquire/Release from readers while a
// writer swaps many tables: every release func runs exactly once, never
// while a reader holds its table. Run with -race.
func TestHolderRefcountRace(t *testing.T) {
	reg := upstream.NewRegistry(upstream.Options{})
	defer reg.Close()
	snap := twoClusterSnap(t, 1)
	const tables = 300
	var released [tables + 2]atomic.Int32
	var inUse [tables + 2]atomic.Int32
	newTab := func(v uint64) *Table {
		// Same snapshot bytes, distinct versions: only the counting matters.
		tab := NewTable(snap, func() {
			if inUse[v].Load() != 0 {
				t.Errorf("table %d released while in use", v)
			}
			released[v].Add(1)
		}, reg)
		tab.version = v
		return tab
	}
	var h Holder
	if _, err := h.Swap(newTab(1)); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var acquired atomic.Int64
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var m fbs.Match
			for {
				select {
				case <-stop:
					return
				default:
				}
				tab := h.Acquire()
				v := tab.Version()
				inUse[v].Add(1)
				if released[v].Load() != 0 {
					t.Errorf("acquired released table %d", v)
				}
				tab.Route([]byte("a.example"), []byte("/api"), &m)
				tab.Pick(m.ClusterIndex())
				inUse[v].Add(-1)
				tab.Release()
				acquired.Add(1)
			}
		}()
	}
	for v := uint64(2); v <= tables; v++ {
		if _, err := h.Swap(newTab(v)); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
	h.Close()
	for v := 1; v <= tables; v++ {
		if n := released[v].Load(); n != 1 {
			t.Fatalf("table %d released %d times", v, n)
		}
	}
	if reg.Len() != 0 {
		t.Fatalf("%d pools leaked", reg.Len())
	}
	t.Logf("%d acquisitions across %d swaps", acquired.Load(), tables)
}

func BenchmarkAcquireRoutePick(b *testing.B) {
	reg := upstream.NewRegistry(upstream.Options{})
	defer reg.Close()
	var h Holder
	if _, err := h.Swap(NewTable(twoClusterSnap(b, 1), nil, reg)); err != nil {
		b.Fatal(err)
	}
	defer h.Close()
	host, path := []byte("a.example"), []byte("/api/v1/items")
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		var m fbs.Match
		for pb.Next() {
			tab := h.Acquire()
			if !tab.Route(host, path, &m) {
				b.Error("no route")
			}
			tab.Pick(m.ClusterIndex())
			tab.Release()
		}
	})
}
