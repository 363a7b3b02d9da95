package fbs

import (
	"bytes"
	"testing"
)

// fuzzSeedFiles are the seed files of the Open fuzz targets.
func fuzzSeedFiles(tb testing.TB) [][]byte {
	st := genState(20, 13)
	st.Shards = 3
	return [][]byte{
		{},
		mustBuild(tb, State{}),
		mustBuild(tb, State{Version: 3, Shards: 1, Clusters: []Cluster{{Name: "c"}},
			Routes: []Route{{ID: "r", Host: "*", Prefix: "/", Cluster: "c"}}}),
		mustBuild(tb, genState(5, 12)),
		mustBuild(tb, st),
		mustBuild(tb, authState()),
		mustBuild(tb, healthState()),
	}
}

func fuzzSeeds(f *testing.F) {
	for _, b := range fuzzSeedFiles(f) {
		f.Add(b)
	}
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
		st := State{Shards: s.NumShards(), FleetSize: uint32(s.fleetSize)}
		if a := s.Auth(); a != nil {
			st.Auth = *a
		}
		policyID := func(i int) string {
			if i < 0 {
				return ""
			}
			return st.Auth.Policies[i].ID
		}
		st.GlobalPolicy = policyID(s.GlobalPolicy())
		s.ForEachRoute(func(r Route) bool { st.Routes = append(st.Routes, r); return true })
		for i := range s.NumClusters() {
			v := s.ClusterAt(i)
			c := Cluster{Name: string(v.Name()), ConnectTimeoutMs: v.ConnectTimeoutMs(), Policy: policyID(v.Policy()),
				Panic: v.Panic(), SlowStartMs: v.SlowStartMs()}
			for j := range v.NumEndpoints() {
				c.Endpoints = append(c.Endpoints, Endpoint{Address: string(v.Endpoint(j)),
					Unhealthy: v.EndpointUnhealthy(j), RecoveredAtMs: v.EndpointRecoveredAtMs(j)})
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

// fuzzRoutes exercise every match feature: wildcard hosts, exact paths,
// priorities, method and header conditions and id tie-breaks.
var fuzzRoutes = []Route{
	{ID: "1", Host: "h", Prefix: "/", Cluster: "a"},
	{ID: "2", Host: "h", Prefix: "/a", Cluster: "a"},
	{ID: "3", Host: "h", Prefix: "/a/", Cluster: "a"},
	{ID: "4", Host: "h", Prefix: "/a/b", Cluster: "a"},
	{ID: "5", Host: "*", Prefix: "/x", Cluster: "a"},
	{ID: "6", Host: "*", Prefix: "//", Cluster: "a"},
	{ID: "7", Host: "g", Prefix: "/a/b/", Cluster: "a"},
	{ID: "8", Host: "h", Prefix: "/a", Exact: true, Methods: []string{"GET"}, Cluster: "a"},
	{ID: "9", Host: "h", Prefix: "/a", Methods: []string{"POST", "PUT"}, Cluster: "a"},
	{ID: "10", Host: "h", Prefix: "/a", Headers: []HeaderMatch{{Name: "x-env", Value: "canary"}}, Cluster: "a"},
	{ID: "11", Host: "h", Prefix: "/a", Headers: []HeaderMatch{{Name: "x-env", Present: true}}, Priority: 5, Cluster: "a"},
	{ID: "12", Host: "*.example.com", Prefix: "/", Cluster: "a"},
	{ID: "13", Host: "*.a.example.com", Prefix: "/p", Cluster: "a"},
	{ID: "14", Host: "b.a.example.com", Prefix: "/q", Cluster: "a"},
	{ID: "15", Host: "*.example.com", Prefix: "/p", Methods: []string{"GET"}, Headers: []HeaderMatch{{Name: "x-a", Present: true}}, Cluster: "a"},
	{ID: "16", Host: "*.example.com", Prefix: "/p", Headers: []HeaderMatch{{Name: "x-b", Present: true}}, Cluster: "a"},
	{ID: "17", Host: "*.example.com", Prefix: "/p", Headers: []HeaderMatch{{Name: "x-a", Present: true}}, Cluster: "a"},
	{ID: "18", Host: "*", Prefix: "/x/y", Exact: true, Cluster: "a"},
}

// mapHeaders is a HeaderSource over a map, for tests.
type mapHeaders map[string]string

func (h mapHeaders) Header(name []byte) ([]byte, bool) {
	v, ok := h[string(name)]
	return []byte(v), ok
}

// FuzzMatch checks MatchRequest against the linear reference on arbitrary
// request hosts, paths, methods and header values (outside bytes on the
// edge's request path).
func FuzzMatch(f *testing.F) {
	st := State{Clusters: []Cluster{{Name: "a"}}, Routes: fuzzRoutes, Shards: 4}
	s := mustOpen(f, mustBuild(f, st))
	seeds := []struct{ host, path, method, env, xa, xb string }{
		{"h", "/a/b/c", "GET", "", "", ""}, {"g", "/x/y", "GET", "", "", ""}, {"", "//", "", "", "", ""},
		{"h", "/a?b", "POST", "", "", ""}, {"*", "*", "GET", "", "", ""}, {"g", "/a/b/", "GET", "", "", ""},
		{"h", "/a", "GET", "canary", "", ""}, {"h", "/a/z", "PUT", "other", "", ""},
		{"c.b.a.example.com", "/p/1", "GET", "", "1", "1"}, {"x.example.com", "/p", "POST", "", "", "1"},
		{"example.com", "/p", "GET", "", "", ""}, {".example.com", "/x/y", "GET", "", "", ""},
	}
	for _, sd := range seeds {
		f.Add(sd.host, sd.path, sd.method, sd.env, sd.xa, sd.xb)
	}
	f.Fuzz(func(t *testing.T, host, path, method, env, xa, xb string) {
		hdr := mapHeaders{}
		for name, v := range map[string]string{"x-env": env, "x-a": xa, "x-b": xb} {
			if v != "" {
				hdr[name] = v
			}
		}
		req := Request{Host: []byte(host), Path: []byte(path), Method: []byte(method), Headers: hdr}
		var m Match
		got := s.MatchRequest(&req, &m)
		ref, ok := refMatchRequest(st.Routes, host, path, method, hdr)
		if got != ok || (ok && string(m.ID()) != ref.ID) {
			t.Fatalf("MatchRequest(%q, %q, %q, %v) = %v %q, reference %v %q", host, path, method, hdr, got, m.ID(), ok, ref.ID)
		}
	})
}
