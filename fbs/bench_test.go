package fbs

import (
	"bytes"
	"fmt"
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

// BenchmarkMatch cycles through requests for existing routes, half of them
// with a deeper path and a tenth for an unknown host that falls back to "*".
func BenchmarkMatch(b *testing.B) {
	for _, n := range matchSizes {
		b.Run(fmt.Sprintf("routes=%d", n), func(b *testing.B) {
			st := benchState(n)
			s := mustOpen(b, benchBytes(b, n))
			reqs := make([][2][]byte, 1024)
			for i := range reqs {
				r := st.Routes[(i*7919)%len(st.Routes)]
				host, path := r.Host, r.Prefix
				if i%2 == 0 {
					path += "/users/42"
				}
				if i%10 == 0 {
					host = "unknown.example.com"
				}
				reqs[i] = [2][]byte{[]byte(host), []byte(path)}
			}
			var m Match
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				req := reqs[i&1023]
				s.Match(req[0], req[1], &m)
				i++
			}
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
