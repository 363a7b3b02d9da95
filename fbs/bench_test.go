package fbs

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"testing"

	"github.com/klauspost/compress/zstd"
)

var benchSizes = []int{1000, 100_000}

// matchSizes adds 1M routes for the lookup benchmark; that snapshot is
// built once per benchmark process (benchBytes).
var matchSizes = []int{1000, 100_000, 1_000_000}

var benchStates = map[int]State{}

var benchFiles = map[int][]byte{}

func benchBytes(tb testing.TB, n int) []byte {
	if b, ok := benchFiles[n]; ok {
		return b
	}
	b := mustBuild(tb, benchState(n))
	benchFiles[n] = b
	return b
}

func benchState(n int) State {
	if st, ok := benchStates[n]; ok {
		return st
	}
	st := genState(n, 42)
	benchStates[n] = st
	return st
}

func BenchmarkBuild(b *testing.B) {
	for _, n := range benchSizes {
		b.Run(fmt.Sprintf("routes=%d", n), func(b *testing.B) {
			st := benchState(n)
			var size int
			b.ReportAllocs()
			for b.Loop() {
				out, err := Build(st)
				if err != nil {
					b.Fatal(err)
				}
				size = len(out)
			}
			b.ReportMetric(float64(size), "snapshot-B")
		})
	}
}

func BenchmarkOpen(b *testing.B) {
	for _, n := range benchSizes {
		b.Run(fmt.Sprintf("routes=%d", n), func(b *testing.B) {
			data := benchBytes(b, n)
			b.SetBytes(int64(len(data)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Open(data); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(len(data)), "snapshot-B")
		})
	}
}

// matchStates caches matchState by route count: the 1M-route one takes
// seconds to generate and build.
var matchStates = map[int]State{}

var matchFiles = map[int][]byte{}

// matchState is genState(n) with a twentieth of its routes replaced by "*."
// wildcard routes ("*.tK.example.com", about 10 per wildcard host), so that
// the request mix exercises every host step: exact, wildcard suffix, "*".
func matchState(tb testing.TB, n int) (State, []byte) {
	if st, ok := matchStates[n]; ok {
		return st, matchFiles[n]
	}
	st := genState(n-n/20, 42)
	rng := rand.New(rand.NewPCG(uint64(n), 7))
	seen := make(map[string]bool, n/20)
	for len(st.Routes) < n {
		host := fmt.Sprintf("*.t%d.example.com", rng.IntN(n/200+1))
		prefix := fmt.Sprintf("/api%d", rng.IntN(n))
		if rng.IntN(2) == 0 {
			prefix = fmt.Sprintf("/web/%d/", rng.IntN(n))
		}
		if seen[host+prefix] {
			continue
		}
		seen[host+prefix] = true
		st.Routes = append(st.Routes, Route{ID: fmt.Sprintf("wild-%06d", len(st.Routes)), Host: host, Prefix: prefix,
			Cluster: st.Clusters[rng.IntN(len(st.Clusters))].Name})
	}
	b := mustBuild(tb, st)
	matchStates[n], matchFiles[n] = st, b
	return st, b
}

// matchMix returns count requests against st, deterministic, in this mix:
//
//	30% a route's host and exactly its prefix (a tenth with a query)
//	20% one segment below a prefix ("/users/42" appended)
//	10% six segments below a prefix (many candidate prefixes per host)
//	10% a subdomain of a "*." route's domain, below its prefix
//	10% an unknown host below a "*" route's prefix (exact host and wildcard
//	    suffixes are tried first, then "*")
//	20% a known host with a path no route of that host covers, which walks
//	    every candidate of the host and then of "*" (the catch-all "/")
func matchMix(st State, count int) []Request {
	var plain, wild, anyHost []Route
	for _, r := range st.Routes {
		switch {
		case r.Host == WildcardHost:
			anyHost = append(anyHost, r)
		case r.Host[0] == '*':
			wild = append(wild, r)
		default:
			plain = append(plain, r)
		}
	}
	below := func(prefix, rest string) string {
		if prefix[len(prefix)-1] == '/' {
			return prefix + rest
		}
		return prefix + "/" + rest
	}
	rng := rand.New(rand.NewPCG(uint64(len(st.Routes)), 9))
	reqs := make([]Request, count)
	for i := range reqs {
		var host, path string
		switch k := rng.IntN(10); {
		case k < 3:
			r := plain[rng.IntN(len(plain))]
			host, path = r.Host, r.Prefix
			if rng.IntN(10) == 0 {
				path += "?page=2"
			}
		case k < 5:
			r := plain[rng.IntN(len(plain))]
			host, path = r.Host, below(r.Prefix, "users/42")
		case k < 6:
			r := plain[rng.IntN(len(plain))]
			host, path = r.Host, below(r.Prefix, "a/b/c/d/e/f")
		case k < 7:
			r := wild[rng.IntN(len(wild))]
			host, path = fmt.Sprintf("u%d", rng.IntN(100))+r.Host[1:], below(r.Prefix, "x")
		case k < 8:
			r := anyHost[rng.IntN(len(anyHost))]
			host, path = fmt.Sprintf("h%d.example.org", rng.IntN(1000)), below(r.Prefix, "x")
		default:
			r := plain[rng.IntN(len(plain))]
			host, path = r.Host, fmt.Sprintf("/nothing/%d/here", rng.IntN(1000))
		}
		reqs[i] = Request{Host: []byte(host), Path: []byte(path), Method: []byte("GET")}
	}
	return reqs
}

// benchMatch runs MatchRequest over reqs in order, cycling.
func benchMatch(b *testing.B, s *Snapshot, reqs []Request) {
	var m Match
	hits := 0
	for i := range reqs {
		if s.MatchRequest(&reqs[i], &m) {
			hits++
		}
	}
	mask := len(reqs) - 1 // a power of two
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	b.ReportAllocs()
	cpu0 := threadCPU()
	i := 0
	for b.Loop() {
		s.MatchRequest(&reqs[i&mask], &m)
		i++
	}
	if cpu := threadCPU() - cpu0; cpu0 != 0 && b.N > 0 {
		b.ReportMetric(float64(cpu)/float64(b.N), "cpu-ns/op")
	}
	b.ReportMetric(100*float64(hits)/float64(len(reqs)), "hit-%")
}

// BenchmarkMatch cycles through 4096 requests of matchMix; their routes'
// bytes mostly stay in the CPU caches, as a gateway's hot routes do.
func BenchmarkMatch(b *testing.B) {
	for _, n := range matchSizes {
		b.Run(fmt.Sprintf("routes=%d", n), func(b *testing.B) {
			st, data := matchState(b, n)
			benchMatch(b, mustOpen(b, data), matchMix(st, 4096))
		})
	}
}

// BenchmarkMatchCold is BenchmarkMatch over 1<<18 distinct requests, so that
// nearly every request touches index and route bytes that are not cached:
// the worst case of a table far larger than the caches.
func BenchmarkMatchCold(b *testing.B) {
	for _, n := range matchSizes[1:] {
		b.Run(fmt.Sprintf("routes=%d", n), func(b *testing.B) {
			st, data := matchState(b, n)
			benchMatch(b, mustOpen(b, data), matchMix(st, 1<<18))
		})
	}
}

// deltaChanges are the one-route edits whose delta size we track.
var deltaChanges = []struct {
	name   string
	mutate func(*State)
}{
	{"timeout", func(s *State) { s.Routes[len(s.Routes)/2].TimeoutMs += 250 }},
	{"cluster", func(s *State) {
		r := &s.Routes[len(s.Routes)/2]
		r.Cluster = s.Clusters[(slices.IndexFunc(s.Clusters, func(c Cluster) bool { return c.Name == r.Cluster })+1)%len(s.Clusters)].Name
	}},
	{"add", func(s *State) {
		s.Routes = append(s.Routes, Route{ID: "route-new", Host: "new.example.com", Prefix: "/fresh/", Cluster: s.Clusters[0].Name})
	}},
	{"delete", func(s *State) { s.Routes = slices.Delete(s.Routes, len(s.Routes)/3, len(s.Routes)/3+1) }},
}

// deltaWindow is the zstd window a delta needs: matches reach back over the
// whole dictionary (the previous snapshot) from anywhere in the new one. With
// the encoder's default window (8 MiB at SpeedDefault) a 100k-route delta
// finds no matches and is as large as a full snapshot.
func deltaWindow(prev, next []byte) int {
	w := zstd.MinWindowSize
	for w < len(prev)+len(next) && w < zstd.MaxWindowSize {
		w <<= 1
	}
	return w
}

// deltaSize returns the size of next compressed with zstd at level lvl
// with prev as raw dictionary (deps.md §4), after checking it round-trips.
func deltaSize(tb testing.TB, lvl zstd.EncoderLevel, prev, next []byte) int {
	tb.Helper()
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(lvl), zstd.WithEncoderConcurrency(1),
		zstd.WithWindowSize(deltaWindow(prev, next)), zstd.WithEncoderDictRaw(1, prev))
	if err != nil {
		tb.Fatal(err)
	}
	defer enc.Close()
	frame := enc.EncodeAll(next, nil)
	dec, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderDictRaw(1, prev),
		zstd.WithDecoderMaxWindow(zstd.MaxWindowSize))
	if err != nil {
		tb.Fatal(err)
	}
	defer dec.Close()
	got, err := dec.DecodeAll(frame, nil)
	if err != nil || !slices.Equal(got, next) {
		tb.Fatalf("delta does not round-trip: %v", err)
	}
	return len(frame)
}

// editedPair returns a 100k-route snapshot and the one after change c.
func editedPair(tb testing.TB, base State, prev []byte, mutate func(*State)) (*Snapshot, *Snapshot) {
	next := base
	next.Routes = slices.Clone(base.Routes)
	next.Version, next.ParentVersion = base.Version+1, base.Version
	mutate(&next)
	return mustOpen(tb, prev), mustOpen(tb, mustBuild(tb, next))
}

// TestDeltaSize checks that a one-route edit of a 100k-route snapshot changes
// one shard whose own zstd delta (SpeedDefault, previous shard as raw
// dictionary) is at most 4 KiB: what a shard-wise delta has to ship. The
// whole-file delta is measured by BenchmarkDeltaSize; at this size it is
// dominated by zstd's reach, not by the shard count (see the report there).
func TestDeltaSize(t *testing.T) {
	if testing.Short() {
		t.Skip("builds 100k-route snapshots")
	}
	base := genState(100_000, 42)
	prev := mustBuild(t, base)
	for _, c := range deltaChanges[2:] { // add and delete: the length-changing edits
		a, b := editedPair(t, base, prev, c.mutate)
		for i := range a.NumShards() {
			old, cur := a.ShardData(i), b.ShardData(i)
			if bytes.Equal(old, cur) {
				continue
			}
			d := deltaSize(t, zstd.SpeedDefault, old, cur)
			t.Logf("100k routes, %d shards, %s: shard %d (%d B) delta %d B", a.NumShards(), c.name, i, len(cur), d)
			if d > 4096 {
				t.Errorf("%s: shard %d delta %d B exceeds 4 KiB", c.name, i, d)
			}
		}
	}
}

// BenchmarkDeltaSize reports the whole-file zstd delta (previous snapshot as
// raw dictionary, window covering both) for one-route edits of a 100k-route
// snapshot. Run with -benchtime=1x: each op is one encode.
func BenchmarkDeltaSize(b *testing.B) {
	base := genState(100_000, 42)
	for _, shards := range []int{64, 0, 1024} {
		st := base
		st.Shards = shards
		prev := mustBuild(b, st)
		for _, c := range deltaChanges {
			_, next := editedPair(b, st, prev, c.mutate)
			for _, lvl := range []zstd.EncoderLevel{zstd.SpeedDefault, zstd.SpeedBestCompression} {
				b.Run(fmt.Sprintf("shards=%d/%s/%s", next.NumShards(), c.name, lvl), func(b *testing.B) {
					var d int
					for b.Loop() {
						d = deltaSize(b, lvl, prev, next.Bytes())
					}
					b.ReportMetric(float64(d), "delta-B")
					b.ReportMetric(float64(len(prev)), "snapshot-B")
				})
			}
		}
	}
}
