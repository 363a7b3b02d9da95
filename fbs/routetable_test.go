package fbs

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
)

// TestRouteTableBuildsMatchBuild drives a RouteTable and one Builder
// through random puts and deletes, cluster, policy and shard count
// changes, and invalid routes that stay in the table for a few builds
// before they are fixed or deleted. Every build, by Build and by
// BuildSnapshot, must return the bytes, or the error, of Build from
// scratch: of the same table, and of the same routes as State.Routes.
// Every other file goes back through Recycle, the buffer first filled
// with garbage, so later builds write into used memory.
func TestRouteTableBuildsMatchBuild(t *testing.T) {
	for seed := range uint64(3) {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 0x7ab1e))
			st := genState(400, seed)
			st.Shards = 16
			st, tbl := inTable(st)
			st.Auth.Policies = []Policy{{ID: "pol-b"}, {ID: "pol-d"}}
			var b Builder
			var bad []string // ids of invalid routes in the table
			next := 0
			ids := func() []string {
				out := make([]string, 0, tbl.Len())
				for _, r := range tbl.routes {
					out = append(out, r.ID)
				}
				return out
			}
			var owned, failed, recycled int
			var lastFile []byte
			for step := range 200 {
				st.Version++
				st.ParentVersion = st.Version - 1
				for range 1 + rng.IntN(3) {
					all := ids()
					switch k := rng.IntN(40); {
					case k < 12: // put a new route
						r := Route{ID: fmt.Sprintf("new-%05d", next), Host: []string{"a.example", "*.b.example", WildcardHost}[rng.IntN(3)],
							Prefix: fmt.Sprintf("/n%d/%d", rng.IntN(60), next), Cluster: st.Clusters[rng.IntN(len(st.Clusters))].Name,
							Exact: rng.IntN(5) == 0, Priority: uint32(rng.IntN(2))}
						if rng.IntN(4) == 0 {
							r.Methods = []string{"GET"}
						}
						next++
						tbl.Put(r)
					case k < 22: // change a route
						rt := tbl.routes[tbl.at[all[rng.IntN(len(all))]]]
						switch rng.IntN(4) {
						case 0:
							rt.TimeoutMs += 100
						case 1:
							rt.Prefix += "/" + rt.ID // most likely another shard
						case 2:
							rt.Cluster = st.Clusters[rng.IntN(len(st.Clusters))].Name
						default:
							rt.Policy = []string{"", "pol-b", "pol-d"}[rng.IntN(3)]
						}
						tbl.Put(rt)
					case k < 28: // delete a route
						tbl.Delete(all[rng.IntN(len(all))])
					case k < 30: // delete one that does not exist
						tbl.Delete("no-such-route")
					case k < 32: // a new cluster sorting first shifts every cluster index
						st.Clusters = append(slices.Clone(st.Clusters), Cluster{Name: fmt.Sprintf("c-%05d", 99999-next)})
						next++
					case k < 33: // endpoints only: same context
						st.Clusters = slices.Clone(st.Clusters)
						c := &st.Clusters[rng.IntN(len(st.Clusters))]
						c.Endpoints = append(slices.Clone(c.Endpoints), Endpoint{Address: fmt.Sprintf("10.9.%d.1:80", step%250)})
					case k < 34: // a new policy sorting first shifts every policy index
						st.Auth.Policies = append(slices.Clone(st.Auth.Policies), Policy{ID: fmt.Sprintf("pol-a%05d", 99999-next)})
						next++
					case k < 35:
						st.Shards = []int{0, 8, 16}[rng.IntN(3)]
					case k < 36:
						tbl.Put(tbl.routes[rng.IntN(tbl.Len())]) // unchanged
					default: // an invalid route, kept for a few builds
						r := tbl.routes[rng.IntN(tbl.Len())]
						switch rng.IntN(4) {
						case 0:
							r.Cluster = "no-such-cluster"
						case 1:
							r.Policy = "no-such-policy"
						case 2:
							r.Host = "UPPER.example"
						default:
							r.ID += "-twin" // same key and conditions as r
						}
						tbl.Put(r)
						bad = append(bad, r.ID)
					}
				}
				if len(bad) > 0 && rng.IntN(3) == 0 { // fix the invalid routes
					for _, id := range bad {
						if rng.IntN(2) == 0 {
							tbl.Delete(id)
						} else if i, ok := tbl.at[id]; ok {
							r := tbl.routes[i]
							r.Cluster, r.Policy, r.Host, r.Prefix = st.Clusters[0].Name, "", "fixed.example", "/fixed/"+id
							tbl.Put(r)
						}
					}
					bad = bad[:0]
				}

				want, wantErr := Build(st)
				if step%4 == 0 {
					slice := st
					slice.Table, slice.Routes = nil, slices.Clone(tbl.routes)
					if fromSlice, err := Build(slice); !sameResult(fromSlice, err, want, wantErr) {
						t.Fatalf("step %d: Build of the table and of its routes differ (%v, %v)", step, wantErr, err)
					}
				}
				if tbl.owner == &b {
					owned++ // incremental unless the context changed
				}
				var got []byte
				var gotErr error
				if step%2 == 0 {
					got, gotErr = b.Build(st)
				} else {
					var snap *Snapshot
					if snap, gotErr = b.BuildSnapshot(st); gotErr == nil {
						got = snap.Bytes()
					}
				}
				if !sameResult(got, gotErr, want, wantErr) {
					t.Fatalf("step %d: Builder gave %d bytes, error %v; Build %d bytes, error %v", step, len(got), gotErr, len(want), wantErr)
				}
				if wantErr != nil {
					failed++
					continue
				}
				if step%3 == 0 {
					mustOpen(t, got)
				}
				if lastFile != nil && step%2 == 0 {
					copy(lastFile[:cap(lastFile)], bytes.Repeat([]byte{0xa5}, cap(lastFile)))
					b.Recycle(lastFile)
					recycled++
					lastFile = nil
				} else {
					lastFile = got
				}
			}
			if failed < 10 || owned < 80 || recycled < 30 {
				t.Fatalf("the sequence exercised too little: %d failed builds, %d by the table's owner, %d recycled files", failed, owned, recycled)
			}
		})
	}
}

// inTable returns st with its routes moved into a new RouteTable.
func inTable(st State) (State, *RouteTable) {
	tbl := NewRouteTable()
	for _, r := range st.Routes {
		tbl.Put(r)
	}
	st.Routes, st.Table = nil, tbl
	return st, tbl
}

func sameResult(got []byte, gotErr error, want []byte, wantErr error) bool {
	if wantErr != nil || gotErr != nil {
		return wantErr != nil && gotErr != nil && wantErr.Error() == gotErr.Error()
	}
	return bytes.Equal(got, want)
}

// TestRouteTableIncrementalPlacesChangedOnly pins the point of the table: a
// build after a one-route change in an unchanged context places that route
// only, and re-encodes only its shard.
func TestRouteTableIncrementalPlacesChangedOnly(t *testing.T) {
	st := genState(2000, 8)
	st.Shards = 32
	st, tbl := inTable(st)
	var b Builder
	if _, err := b.Build(st); err != nil {
		t.Fatal(err)
	}
	before := shardMemory(&b)
	r := tbl.routes[1234]
	r.TimeoutMs += 7
	tbl.Put(r)
	got, err := b.Build(st)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, mustBuild(t, st)) {
		t.Fatal("bytes differ from Build after a one-route change")
	}
	if len(b.check) != 1 || b.check[0] != 1234 {
		t.Fatalf("placed table positions %v, want [1234]", b.check)
	}
	edited := int(routeKeyHash(&r) % 32)
	for i, c := range b.cache {
		if reused := &c.data[0] == before[i]; reused == (i == edited) {
			t.Errorf("shard %d: reused %v, want reused only for shards other than %d", i, reused, edited)
		}
	}
	if len(tbl.changed) != 0 || tbl.owner != &b {
		t.Fatalf("after a successful build: %d changed ids, owner %p, want 0 and %p", len(tbl.changed), tbl.owner, &b)
	}
}

// TestRouteTableTwoBuilders checks that a table built by another Builder
// in between still builds Build's bytes with the first (by a full pass).
func TestRouteTableTwoBuilders(t *testing.T) {
	st := genState(300, 2)
	st, tbl := inTable(st)
	var b1, b2 Builder
	for step, b := range []*Builder{&b1, &b2, &b1, &b1, &b2} {
		r := tbl.routes[step*7]
		r.Priority++
		tbl.Put(r)
		tbl.Delete(tbl.routes[step*11].ID)
		got, err := b.Build(st)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, mustBuild(t, st)) {
			t.Fatalf("step %d: bytes differ from Build", step)
		}
	}
}

func TestStateRoutesAndTable(t *testing.T) {
	tbl := NewRouteTable()
	st := State{Table: tbl, Routes: []Route{{ID: "r"}}}
	if _, err := Build(st); err == nil {
		t.Fatal("Build took a State with both Routes and Table")
	}
	var b Builder
	if _, err := b.Build(st); err == nil {
		t.Fatal("Builder took a State with both Routes and Table")
	}
}

// TestBuilderRecycle checks that a file handed back is written over by the
// next build, and that one not handed back is not: its bytes stay intact
// through later builds. Files handed back twice or not from this Builder
// are ignored.
func TestBuilderRecycle(t *testing.T) {
	st := genState(500, 3)
	var b Builder
	build := func() []byte { return buildNext(t, &b, &st) }

	held := build()
	heldCopy := bytes.Clone(held)
	f := build()
	b.Recycle(f)
	g := build()
	if !sameMemory(f, g) {
		t.Fatal("the next build did not reuse the recycled file's memory")
	}
	b.Recycle(f) // again: already taken back
	h := build()
	if sameMemory(h, g) || sameMemory(h, held) {
		t.Fatal("a file recycled twice, or one still held, was reused")
	}
	b.Recycle(bytes.Clone(g)) // not a file this Builder returned
	if i := build(); sameMemory(i, g) || sameMemory(i, held) {
		t.Fatal("a foreign buffer led to reusing a file in use")
	}
	if !bytes.Equal(held, heldCopy) {
		t.Fatal("a file never handed back was written over")
	}
}

// TestRouteTableConflictsMatchBuild drives a table with a tiny key space,
// so that routes of one key (and conflicts between them) are common, over
// one or two shards, with a Builder that also builds other inputs in
// between: State.Routes and a second table. Every build must give Build's
// bytes or Build's error.
func TestRouteTableConflictsMatchBuild(t *testing.T) {
	var failed, succeeded int
	for seed := range uint64(40) {
		rng := rand.New(rand.NewPCG(seed, 0xc0f1))
		st := State{Version: 1, Clusters: []Cluster{{Name: "c1"}, {Name: "c2"}}}
		st.Auth.Policies = []Policy{{ID: "p1"}}
		st, tbl := inTable(st)
		other := NewRouteTable()
		var b, b2 Builder
		route := func(id string) Route {
			r := Route{ID: id, Host: []string{"a", "b", "c"}[rng.IntN(3)], Prefix: []string{"/", "/x", "/y"}[rng.IntN(3)],
				Cluster: []string{"c1", "c2", "c2", "c2", "c3"}[rng.IntN(5)], Priority: uint32(rng.IntN(2)), Exact: rng.IntN(4) == 0}
			if rng.IntN(2) == 0 {
				r.Methods = []string{"GET"}
			}
			if rng.IntN(2) == 0 {
				r.Headers = []HeaderMatch{{Name: "h", Present: true}}
			}
			if rng.IntN(4) == 0 {
				r.Policy = "p1"
			}
			return r
		}
		for step := range 300 {
			st.Version++
			for range 1 + rng.IntN(3) {
				id := fmt.Sprintf("r%d", rng.IntN(12))
				switch k := rng.IntN(20); {
				case k < 10:
					tbl.Put(route(id))
				case k < 15:
					tbl.Delete(id)
				case k < 16:
					if i, ok := tbl.at[id]; ok {
						tbl.Put(tbl.routes[i])
					}
				case k < 17:
					st.Shards = rng.IntN(3)
				case k < 18:
					if len(st.Clusters) == 2 {
						st.Clusters = []Cluster{{Name: "c1"}, {Name: "c2"}, {Name: "c3"}}
					} else {
						st.Clusters = []Cluster{{Name: "c1"}, {Name: "c2"}}
					}
				default:
					other.Put(route(id))
				}
			}
			want, wantErr := Build(st)
			bb := &b
			if rng.IntN(10) == 0 {
				bb = &b2 // another Builder on the same table
			}
			var got []byte
			var gotErr error
			if rng.IntN(2) == 0 {
				got, gotErr = bb.Build(st)
			} else if snap, err := bb.BuildSnapshot(st); err != nil {
				gotErr = err
			} else {
				got = snap.Bytes()
			}
			if wantErr != nil {
				failed++
			} else {
				succeeded++
			}
			if !sameResult(got, gotErr, want, wantErr) {
				t.Fatalf("seed %d step %d: Builder: %d bytes, error %v; Build: %d bytes, error %v", seed, step, len(got), gotErr, len(want), wantErr)
			}
			if got != nil && rng.IntN(2) == 0 {
				mem := got[:cap(got)]
				for i := range mem {
					mem[i] = 0x5a
				}
				bb.Recycle(got)
			}
			switch rng.IntN(8) {
			case 0: // the same Builder builds something else in between
				o := st
				o.Table, o.Routes = other, nil
				b.Build(o)
			case 1:
				o := st
				o.Table, o.Routes = nil, slices.Clone(other.routes)
				b.Build(o)
			}
		}
	}
	if failed < 1000 || succeeded < 1000 {
		t.Fatalf("the sequence exercised too little: %d failed builds, %d succeeded", failed, succeeded)
	}
}

// TestBuilderRecycleAfterReserveWindow plays a publisher that keeps n
// files as delta bases (ctrl: Reserve(KeepBases)) and hands each back once
// n newer ones are out: the file must go back into use however large n
// is, not only while it is among the last 16 files built.
func TestBuilderRecycleAfterReserveWindow(t *testing.T) {
	// Few clusters: the root size estimate's slack, which each reuse of a
	// buffer loses, stays well inside the file's headroom.
	st := genState(3000, 5)
	st.Clusters = st.Clusters[:2]
	for i := range st.Routes {
		st.Routes[i].Cluster = st.Clusters[i%2].Name
	}
	var b Builder
	build := func() []byte { return buildNext(t, &b, &st) }
	const keep = 20
	recent := [][]byte{build()}
	b.Reserve(keep)
	var recycled []byte
	for range 3 * keep {
		next := build()
		if recycled != nil && !sameMemory(next, recycled) {
			t.Fatalf("a file handed back %d builds after it was lent went unused", keep+1)
		}
		recent = append(recent, next) // published
		if len(recent) > keep {
			recycled = recent[0] // left the delta bases
			recent = recent[1:]
			b.Recycle(recycled)
		}
	}
}

// TestBuilderRecycleKeepsWholeBuffer hands every file back at once over
// many builds of a config with thousands of clusters, whose root size
// estimate leaves tens of KB of slack before each file: every build must
// still write into the one recycled buffer. Handing back only the file's
// part of it lost that slack per reuse, and after a few builds the buffer
// no longer fit and every build took fresh memory.
func TestBuilderRecycleKeepsWholeBuffer(t *testing.T) {
	st := genState(20_000, 6) // 1,251 clusters of 1-3 endpoints
	var b Builder
	var prev []byte
	for i := range 40 {
		file := buildNext(t, &b, &st)
		if prev != nil && !sameMemory(file, prev) {
			t.Fatalf("build %d: the recycled buffer went unused (file %d bytes, buffer %d)", i, len(file), cap(prev))
		}
		b.Recycle(file)
		prev = file
	}
}

// buildNext changes one route of st (its timeout), moves st to the next
// version and builds it with b.
func buildNext(t *testing.T, b *Builder, st *State) []byte {
	t.Helper()
	st.Version++
	st.Routes = slices.Clone(st.Routes)
	st.Routes[int(st.Version)%len(st.Routes)].TimeoutMs++
	file, err := b.Build(*st)
	if err != nil {
		t.Fatal(err)
	}
	return file
}

// sameMemory reports whether two files were written into one buffer.
func sameMemory(a, b []byte) bool { return &a[:cap(a)][cap(a)-1] == &b[:cap(b)][cap(b)-1] }

// shardMemory is where b's cached shards are: a shard re-encoded since
// moves.
func shardMemory(b *Builder) []*byte {
	at := make([]*byte, len(b.cache))
	for i, c := range b.cache {
		at[i] = &c.data[0]
	}
	return at
}
