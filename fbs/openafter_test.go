package fbs

import (
	"bytes"
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
	f.Fuzz(func(t *testing.T, sel uint8, b []byte) {
		b = fixTrailer(bytes.Clone(b))
		if s := sameVerdict(t, "fuzz input", prevs[int(sel)%len(prevs)], b); s != nil {
			exercise(s)
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
