//go:build !race

package fbs

import "testing"

// TestMatchAllocs pins the request path to zero allocations: exact host,
// host fallback to "*", a deep path walking several candidates, and a miss.
// (Excluded under -race, whose instrumentation allocates.)
func TestMatchAllocs(t *testing.T) {
	st := genState(2000, 11)
	s := mustOpen(t, mustBuild(t, st))
	r := st.Routes[0]
	reqs := [][2][]byte{
		{[]byte(r.Host), []byte(r.Prefix)},
		{[]byte("nobody.example.com"), []byte("/static/1/assets/img/logo.png?v=3")},
		{[]byte("svc1.example.com"), []byte("/a/b/c/d/e/f/g/h")},
		{[]byte("svc1.example.com"), []byte("nothing")},
	}
	var m Match
	for _, req := range reqs {
		allocs := testing.AllocsPerRun(200, func() {
			s.Match(req[0], req[1], &m)
			_ = m.ClusterIndex()
		})
		if allocs != 0 {
			t.Errorf("Match(%q, %q): %v allocs, want 0", req[0], req[1], allocs)
		}
	}
	v := s.ClusterAt(0)
	if allocs := testing.AllocsPerRun(200, func() {
		v = s.ClusterAt(v.NumEndpoints() % s.NumClusters())
		_ = v.Endpoint(0)
		_ = s.ClusterIndex(v.Name())
	}); allocs != 0 {
		t.Errorf("ClusterAt/Endpoint/ClusterIndex: %v allocs, want 0", allocs)
	}
}

// TestMatchRequestAllocs covers conditions, wildcards and the Match
// accessors the proxy calls per request.
func TestMatchRequestAllocs(t *testing.T) {
	st := State{Clusters: []Cluster{{Name: "a"}}, Routes: fuzzRoutes}
	st.Routes = append(st.Routes, Route{ID: "rw", Host: "r", Prefix: "/api", RewritePrefix: "/", Cluster: "a",
		RetryAttempts: 2, RetryOn: RetryOnConnectFailure, RetryStatuses: []uint16{502, 503}})
	s := mustOpen(t, mustBuild(t, st))
	hdr := mapHeaders{"x-a": "1", "x-env": "canary"}
	reqs := []Request{
		{Host: []byte("c.b.a.example.com"), Path: []byte("/p/1"), Method: []byte("GET"), Headers: hdr},
		{Host: []byte("h"), Path: []byte("/a/x"), Method: []byte("PUT"), Headers: hdr},
		{Host: []byte("r"), Path: []byte("/api/v1?q=1"), Method: []byte("GET")},
		{Host: []byte("zz"), Path: []byte("/none"), Method: []byte("GET")},
	}
	var m Match
	buf := make([]byte, 0, 256)
	for i := range reqs {
		req := &reqs[i]
		allocs := testing.AllocsPerRun(200, func() {
			if s.MatchRequest(req, &m) {
				_, _ = m.Rewrite(buf[:0], req.Path)
				_ = m.RetryOn(503) && m.RetryOnConnectFailure() && m.RetryAttempts() > 0
				_ = m.Index() + m.ClusterIndex()
			}
		})
		if allocs != 0 {
			t.Errorf("MatchRequest(%q, %q): %v allocs, want 0", req.Host, req.Path, allocs)
		}
	}
}
