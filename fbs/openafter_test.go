package fbs

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"
)

// spliced returns the file Build(st) makes, but with the given shard bytes
// in place of Build's: a file with a correct content hash and trailer whose
// shards may come from another state, and so from another context.
func spliced(t testing.TB, st State, shards [][]byte) []byte {
	t.Helper()
	clusters, err := sortedClusters(st.Clusters)
	if err != nil {
		t.Fatal(err)
	}
	refs, err := prepareAuth(&st, clusters)
	if err != nil {
		t.Fatal(err)
	}
	return assemble(nil, st.Version, st.ParentVersion, shards, clusters, refs)
}

func shardsOf(s *Snapshot) [][]byte {
	out := make([][]byte, s.NumShards())
	for i := range out {
		out[i] = bytes.Clone(s.ShardData(i))
	}
	return out
}

// sameVerdict fails unless OpenAfter(prev, b) returns what Open(b) does:
// the same error, or a Snapshot equal field by field.
func sameVerdict(t *testing.T, what string, prev *Snapshot, b []byte) *Snapshot {
	t.Helper()
	want, wantErr := Open(b)
	got, gotErr := OpenAfter(prev, b)
	switch {
	case (wantErr == nil) != (gotErr == nil) || (wantErr != nil && wantErr.Error() != gotErr.Error()):
		t.Fatalf("%s: OpenAfter error %v, Open error %v", what, gotErr, wantErr)
	case wantErr == nil && !reflect.DeepEqual(got, want):
		t.Fatalf("%s: OpenAfter's Snapshot differs from Open's", what)
	}
	return got
}

// contextFamily returns valid states that share most routes but differ in
// what a shard's checks read besides its bytes: one route, the shard
// count, a cluster sorting first (every cluster_index moves), a renamed
// cluster, and the policies (a policy sorting first moves every policy
// reference; one fewer).
func contextFamily() []State {
	base := authState()
	for i := range 40 {
		base.Routes = append(base.Routes, Route{ID: fmt.Sprintf("g%02d", i), Host: fmt.Sprintf("h%d.example", i%5),
			Prefix: fmt.Sprintf("/p/%d", i), Cluster: []string{"api", "web"}[i%2], Policy: []string{"", "keys", "strict"}[i%3]})
	}
	base.Shards = 4
	edit := func(fn func(*State)) State {
		st := base
		st.Routes = slices.Clone(base.Routes)
		st.Clusters = slices.Clone(base.Clusters)
		st.Auth.Policies = slices.Clone(base.Auth.Policies)
		fn(&st)
		return st
	}
	return []State{
		base,
		edit(func(st *State) { st.Routes[5].TimeoutMs = 777 }),
		edit(func(st *State) { st.Shards = 5 }),
		edit(func(st *State) {
			st.Clusters = append(st.Clusters, Cluster{Name: "aaa", Endpoints: []Endpoint{{Address: "127.0.0.1:3"}}})
		}),
		edit(func(st *State) {
			st.Clusters[1].Name = "wex"
			for i := range st.Routes {
				if st.Routes[i].Cluster == "web" {
					st.Routes[i].Cluster = "wex"
				}
			}
		}),
		edit(func(st *State) { st.Auth.Policies = append(st.Auth.Policies, Policy{ID: "aaa"}) }),
		edit(func(st *State) { st.Auth.Policies = append(st.Auth.Policies, Policy{ID: "zzz"}) }),
	}
}

// TestOpenAfterMatchesOpen is the differential test: for every previous
// snapshot (nil, or any valid one), OpenAfter accepts and refuses what
// Open does, with the same error, and returns Open's Snapshot. The inputs
// are the valid files, files whose shards are byte-identical to another
// state's but sit in another context (spliced: a reused walk there would be
// wrong), mixes of shards from two states, and random corruptions of all
// of them with the trailer fixed so that they reach the walk.
func TestOpenAfterMatchesOpen(t *testing.T) {
	fam := contextFamily()
	files := make([][]byte, len(fam))
	prevs := []*Snapshot{nil}
	for i, st := range fam {
		files[i] = mustBuild(t, st)
		prevs = append(prevs, mustOpen(t, files[i]))
	}
	rng := rand.New(rand.NewPCG(5, 55))
	inputs := slices.Clone(files)
	for i, st := range fam {
		for j := range fam {
			if j == i {
				continue
			}
			other := shardsOf(prevs[1+j])
			inputs = append(inputs, spliced(t, st, other))
			mine := shardsOf(prevs[1+i])
			for k := range mine {
				if k < len(other) && rng.IntN(2) == 0 {
					mine[k] = other[k]
				}
			}
			inputs = append(inputs, spliced(t, st, mine))
		}
	}
	refused := 0
	for n, b := range inputs {
		for p, prev := range prevs {
			if s := sameVerdict(t, fmt.Sprintf("input %d after prev %d", n, p), prev, b); s == nil {
				refused++
			}
		}
	}
	if refused == 0 {
		t.Fatal("no spliced input was refused: the test does not reach a context change")
	}
	for k := range 2000 {
		b := bytes.Clone(inputs[rng.IntN(len(inputs))])
		for range 1 + rng.IntN(3) {
			b[rng.IntN(len(b)-TrailerSize)] ^= byte(1 + rng.IntN(255))
		}
		fixTrailer(b)
		sameVerdict(t, fmt.Sprintf("mutation %d", k), prevs[rng.IntN(len(prevs))], b)
	}
}

// TestOpenAfterReusesUnchangedShards checks that the reuse happens: after a
// one-route edit, every shard but the edited one keeps prev's walk; after a
// context change, none does.
func TestOpenAfterReusesUnchangedShards(t *testing.T) {
	st := genState(500, 3)
	st.Shards = 16
	prev := mustOpen(t, mustBuild(t, st))
	st.Routes = slices.Clone(st.Routes)
	st.Routes[7].TimeoutMs++
	next, err := OpenAfter(prev, mustBuild(t, st))
	if err != nil {
		t.Fatal(err)
	}
	walked := 0
	for i := range next.sums {
		if next.sums[i] != prev.sums[i] {
			walked++
		}
	}
	if walked != 1 {
		t.Fatalf("one route changed, %d shards walked, want 1", walked)
	}

	st.Clusters = append(slices.Clone(st.Clusters), Cluster{Name: "zzz-last"})
	renamed, err := OpenAfter(next, mustBuild(t, st))
	if err != nil {
		t.Fatal(err)
	}
	for i := range renamed.sums {
		if renamed.sums[i] == next.sums[i] {
			t.Fatalf("cluster list changed, shard %d reused its walk", i)
		}
	}
}

// TestOpenAfterKeepsNoReferenceToPrev overwrites prev's bytes after
// OpenAfter (as an unmap would take them away) and checks that the result
// still equals Open's and serves every accessor: it reads only its own
// bytes, for a changed file and for one equal to prev's.
func TestOpenAfterKeepsNoReferenceToPrev(t *testing.T) {
	st := genState(300, 4)
	st.Shards = 8
	first := mustBuild(t, st)
	st.Routes = slices.Clone(st.Routes)
	st.Routes[3].TimeoutMs++
	for name, next := range map[string][]byte{"changed": mustBuild(t, st), "equal": bytes.Clone(first)} {
		t.Run(name, func(t *testing.T) {
			prevBytes := bytes.Clone(first)
			prev := mustOpen(t, prevBytes)
			got, err := OpenAfter(prev, next)
			if err != nil {
				t.Fatal(err)
			}
			for i := range prevBytes {
				prevBytes[i] = 0xff
			}
			if want := mustOpen(t, next); !reflect.DeepEqual(got, want) {
				t.Fatal("after prev's bytes changed, OpenAfter's Snapshot differs from Open's")
			}
			exercise(got)
			var m Match
			for _, r := range st.Routes {
				if !got.Match([]byte(r.Host), []byte(r.Prefix), &m) {
					t.Fatalf("route %q does not match itself", r.ID)
				}
			}
		})
	}
}

// FuzzOpenAfter compares OpenAfter with Open on arbitrary files (trailer
// fixed, so that mutations reach the walk) after one of several valid
// previous snapshots, some sharing shards with the seeds and some in
// another context.
func FuzzOpenAfter(f *testing.F) {
	var prevs []*Snapshot
	for _, st := range contextFamily() {
		b := mustBuild(f, st)
		prevs = append(prevs, mustOpen(f, b))
		f.Add(uint8(len(prevs)), b)
	}
	for i, b := range fuzzSeedFiles(f) {
		prevs = append(prevs, nil)
		if s, err := Open(b); err == nil {
			prevs[len(prevs)-1] = s
		}
		f.Add(uint8(i), b)
	}
	st := reachingState()
	_, past := reaching(f, st, len(mustBuild(f, st))+3)
	f.Add(uint8(0), past)
	f.Fuzz(func(t *testing.T, sel uint8, b []byte) {
		b = fixTrailer(bytes.Clone(b))
		b = b[:len(b):len(b)]
		if s := sameVerdict(t, "fuzz input", prevs[int(sel)%len(prevs)], b); s != nil {
			exercise(s)
		}
		// The verdict does not depend on the memory after b: the feed
		// verifies in recycled buffers.
		roomy := append(bytes.Repeat([]byte{0xff}, len(b)+64)[:0], b...)
		_, exactErr := Open(b)
		_, roomyErr := Open(roomy)
		if fmt.Sprint(exactErr) != fmt.Sprint(roomyErr) {
			t.Fatalf("Open says %v, with spare capacity %v", exactErr, roomyErr)
		}
	})
}

// BenchmarkOpenAfter verifies a file after a one-route change, after the
// snapshot before it (compare BenchmarkOpen, which walks every shard).
func BenchmarkOpenAfter(b *testing.B) {
	for _, n := range benchSizes {
		b.Run(fmt.Sprintf("routes=%d", n), func(b *testing.B) {
			prev := mustOpen(b, benchBytes(b, n))
			st := benchState(n)
			st.Routes = slices.Clone(st.Routes)
			st.Routes[n/2].TimeoutMs++
			next := mustBuild(b, st)
			b.SetBytes(int64(len(next)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := OpenAfter(prev, next); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// reaching returns the shards of Build(st) with one route's id string
// lengthened to end end bytes after the start of the file (its length
// prefix stays where it is), and the file made of them: a file with a
// correct content hash and trailer whose shard reads bytes outside itself,
// or outside the file.
func reaching(t testing.TB, st State, end int) ([][]byte, []byte) {
	t.Helper()
	s := mustOpen(t, mustBuild(t, st))
	shards := shardsOf(s)
	for k, sh := range shards {
		// The ids "g00".."g39" of contextFamily: 3 bytes, a "g" first.
		p := bytes.Index(sh, []byte("\x03\x00\x00\x00g"))
		if p < 0 {
			continue
		}
		off, _ := s.ShardRange(k)
		binary.LittleEndian.PutUint32(sh[p:], uint32(end-(off+p+4)))
		return shards, spliced(t, st, shards)
	}
	t.Fatal("no route id to lengthen")
	return nil, nil
}

// reachingState is contextFamily's first state with a long endpoint
// address, so that a shorter one shortens the file (TestShardReadsStayInTheShard).
func reachingState() State {
	st := contextFamily()[0]
	st.Clusters = slices.Clone(st.Clusters)
	st.Clusters[0].Endpoints = []Endpoint{{Address: "a-backend-with-a-rather-long-host-name.example:8080"}}
	return st
}

// openAfterSafely is OpenAfter turning a panic into a test failure.
func openAfterSafely(t *testing.T, prev *Snapshot, b []byte) (s *Snapshot, err error) {
	t.Helper()
	defer func() {
		if r := recover(); r != nil {
			t.Fatalf("OpenAfter panicked: %v", r)
		}
	}()
	return OpenAfter(prev, b)
}

// TestShardReadsStayInTheShard: a shard's checks must read its bytes and
// its context only, which is what lets OpenAfter reuse them. A string that
// leaves its shard would make the verdict depend on whatever follows: the
// next bytes of the file, or, past the file's end, the spare capacity of
// the caller's buffer (the feed rebuilds into recycled memory, which holds
// an earlier snapshot's bytes). Such a file is corrupt whatever the memory
// around it, and OpenAfter says so too, without panicking.
func TestShardReadsStayInTheShard(t *testing.T) {
	st := reachingState()
	size := len(mustBuild(t, st))

	t.Run("past the file", func(t *testing.T) {
		_, f := reaching(t, st, size+3)
		exact := f[:len(f):len(f)]
		roomy := append(make([]byte, 0, len(f)+64), f...)
		_, exactErr := Open(exact)
		prev, roomyErr := Open(roomy)
		if exactErr == nil || roomyErr == nil {
			t.Errorf("Open says %v with an exact buffer, %v with spare capacity; want both to refuse", exactErr, roomyErr)
		}
		if s, err := openAfterSafely(t, prev, exact); err == nil {
			// As a mapping of the file would: its accessors now fault.
			defer func() {
				t.Fatalf("OpenAfter accepted a file whose shard reads past its end; exercising it: %v", recover())
			}()
			exercise(s)
		}
	})
	t.Run("into the next bytes", func(t *testing.T) {
		// Two files with identical shards and context; the second has
		// fewer bytes after the shards (a shorter endpoint address), so the
		// id that ends inside the first one's content ends past the second.
		shards, first := reaching(t, st, size-TrailerSize-1)
		shorter := st
		shorter.Clusters = slices.Clone(st.Clusters)
		shorter.Clusters[0].Endpoints = []Endpoint{{Address: "h:1"}}
		second := spliced(t, shorter, shards)
		_, openErr := Open(second)
		if openErr == nil {
			t.Fatal("Open accepted a shard whose route id runs past the end of the file")
		}
		if prev, err := Open(first); err == nil {
			_, afterErr := openAfterSafely(t, prev, second)
			t.Fatalf("Open accepted a shard whose route id runs into the bytes after the shard; "+
				"after it, OpenAfter says %v to a file with the same shards that Open refuses (%v)", afterErr, openErr)
		}
	})
}

// TestCarryRoutes: after OpenAfter, CarryRoutes maps every route of a
// shard that did not change to the same route in the old snapshot (bases
// shifted where an earlier shard grew) and sends only the changed shard's
// routes, by id, to other.
func TestCarryRoutes(t *testing.T) {
	st := genState(2000, 7)
	st.Shards = 16
	old := mustOpen(t, mustBuild(t, st))
	ids := func(s *Snapshot) []string {
		var out []string
		s.ForEachRoute(func(r Route) bool { out = append(out, r.ID); return true })
		return out
	}
	oldIDs := ids(old)

	changed := st
	changed.Version, changed.ParentVersion = 11, 10
	changed.Routes = slices.Clone(st.Routes)
	changed.Routes[5].TimeoutMs += 1000
	added := changed
	added.Routes = append(slices.Clone(changed.Routes), Route{ID: "route-new", Host: "new.example.com", Prefix: "/n", Cluster: st.Clusters[0].Name})

	for _, tc := range []struct {
		name string
		st   State
	}{{"one route changed", changed}, {"one route added", added}} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := OpenAfter(old, mustBuild(t, tc.st))
			if err != nil {
				t.Fatal(err)
			}
			newIDs := ids(s)
			seen := make([]int, s.NumRoutes())
			others := 0
			s.CarryRoutes(old, func(i, oi, n int) {
				for k := range n {
					seen[i+k]++
					if newIDs[i+k] != oldIDs[oi+k] {
						t.Fatalf("route %d (%s) carried from old route %d (%s)", i+k, newIDs[i+k], oi+k, oldIDs[oi+k])
					}
				}
			}, func(i int, id []byte) {
				seen[i]++
				others++
				if string(id) != newIDs[i] {
					t.Fatalf("route %d: id %q, want %q", i, id, newIDs[i])
				}
			})
			for i, n := range seen {
				if n != 1 {
					t.Fatalf("route %d mapped %d times", i, n)
				}
			}
			// One shard of 16 changed: its routes only, about 2000/16.
			if others == 0 || others > 2*len(newIDs)/16 {
				t.Errorf("%d of %d routes looked up by id, want one shard's", others, len(newIDs))
			}
		})
	}

	// Without the old snapshot, or opened without it, nothing is carried.
	for name, s := range map[string]*Snapshot{"nil old": old, "opened alone": mustOpen(t, mustBuild(t, changed))} {
		carried, others := 0, 0
		from := old
		if name == "nil old" {
			from = nil
		}
		s.CarryRoutes(from, func(_, _, n int) { carried += n }, func(int, []byte) { others++ })
		if carried != 0 || others != s.NumRoutes() {
			t.Errorf("%s: %d carried, %d by id; want 0 and %d", name, carried, others, s.NumRoutes())
		}
	}
}
