package fbs

import (
	"bytes"
	"testing"
)

func fuzzSeeds(f *testing.F) {
	f.Add([]byte{})
	f.Add(mustBuild(f, State{}))
	f.Add(mustBuild(f, State{Version: 3, Shards: 1, Clusters: []Cluster{{Name: "c"}},
		Routes: []Route{{ID: "r", Host: "*", Prefix: "/", Cluster: "c"}}}))
	f.Add(mustBuild(f, genState(5, 12)))
	st := genState(20, 13)
	st.Shards = 3
	f.Add(mustBuild(f, st))
}

// FuzzOpen feeds arbitrary bytes to Open. Nearly all fail the trailer hash,
// which is the point: it checks the length and hash gate on garbage.
func FuzzOpen(f *testing.F) {
	fuzzSeeds(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := Open(b)
		if err == nil {
			exercise(s)
		}
	})
}

// FuzzOpenFixedTrailer recomputes the trailer of each input first, so the
// fuzzer's mutations reach the identifier check and the structural walk.
// Whatever Open accepts must serve every accessor without panicking and must
// survive a rebuild: Build of its routes and clusters opens to the same
// content hash (the accepted structure is what Build would produce).
func FuzzOpenFixedTrailer(f *testing.F) {
	fuzzSeeds(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		b = fixTrailer(bytes.Clone(b))
		s, err := Open(b)
		if err != nil {
			return
		}
		exercise(s)
		st := State{Shards: s.NumShards()}
		s.ForEachRoute(func(r Route) bool { st.Routes = append(st.Routes, r); return true })
		for i := range s.NumClusters() {
			v := s.ClusterAt(i)
			c := Cluster{Name: string(v.Name()), ConnectTimeoutMs: v.ConnectTimeoutMs()}
			for j := range v.NumEndpoints() {
				c.Endpoints = append(c.Endpoints, Endpoint{Address: string(v.Endpoint(j))})
			}
			st.Clusters = append(st.Clusters, c)
		}
		var m Match
		for _, r := range st.Routes {
			if !s.Match([]byte(r.Host), []byte(r.Prefix), &m) || string(m.ID()) != r.ID {
				t.Fatalf("accepted snapshot: route %q (%q %q) does not match itself", r.ID, r.Host, r.Prefix)
			}
		}
		rebuilt, err := Build(st)
		if err != nil {
			t.Fatalf("accepted snapshot does not rebuild: %v", err)
		}
		if r := mustOpen(t, rebuilt); r.ContentHash() != s.ContentHash() {
			t.Fatalf("accepted snapshot rebuilds to content hash %x, stored %x", r.ContentHash(), s.ContentHash())
		}
	})
}

// FuzzMatch checks Match against the linear reference on arbitrary request
// hosts and paths (outside bytes on the edge's request path).
func FuzzMatch(f *testing.F) {
	st := State{
		Clusters: []Cluster{{Name: "a"}},
		Routes: []Route{
			{ID: "1", Host: "h", Prefix: "/", Cluster: "a"},
			{ID: "2", Host: "h", Prefix: "/a", Cluster: "a"},
			{ID: "3", Host: "h", Prefix: "/a/", Cluster: "a"},
			{ID: "4", Host: "h", Prefix: "/a/b", Cluster: "a"},
			{ID: "5", Host: "*", Prefix: "/x", Cluster: "a"},
			{ID: "6", Host: "*", Prefix: "//", Cluster: "a"},
			{ID: "7", Host: "g", Prefix: "/a/b/", Cluster: "a"},
		},
		Shards: 4,
	}
	s := mustOpen(f, mustBuild(f, st))
	for _, seed := range [][2]string{{"h", "/a/b/c"}, {"g", "/x/y"}, {"", "//"}, {"h", "/a?b"}, {"*", "*"}, {"g", "/a/b/"}} {
		f.Add(seed[0], seed[1])
	}
	f.Fuzz(func(t *testing.T, host, path string) {
		var m Match
		got := s.Match([]byte(host), []byte(path), &m)
		ref, ok := refMatch(st.Routes, host, path)
		if got != ok || (ok && string(m.ID()) != ref.ID) {
			t.Fatalf("Match(%q, %q) = %v %q, reference %v %q", host, path, got, m.ID(), ok, ref.ID)
		}
	})
}
