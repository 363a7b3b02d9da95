package fbs

import (
	"strings"
	"testing"
)

func TestMatchRequestSemantics(t *testing.T) {
	st := State{Clusters: []Cluster{{Name: "a"}, {Name: "b"}}, Routes: fuzzRoutes, Shards: 3}
	st.Routes = append(st.Routes, Route{ID: "rw", Host: "r", Prefix: "/api", RewritePrefix: "/", Cluster: "b",
		RetryAttempts: 2, RetryOn: RetryOnConnectFailure | RetryOnReset, RetryStatuses: []uint16{503, 502}, Priority: 3})
	s := mustOpen(t, mustBuild(t, st))
	cases := []struct {
		name, host, path, method string
		hdr                      mapHeaders
		want                     string
	}{
		{"exact path beats prefix", "h", "/a", "GET", nil, "8"},
		{"prefix below exact", "h", "/a/z", "DELETE", nil, "3"},
		{"method condition", "h", "/a", "POST", nil, "9"},
		{"priority beats conditions", "h", "/a", "POST", mapHeaders{"x-env": "x"}, "11"},
		{"unconditioned route last", "h", "/a", "DELETE", nil, "2"},
		{"segment-aware", "h", "/ax", "GET", mapHeaders{"x-env": "canary"}, "1"},
		{"longest prefix", "h", "/a/b/c", "GET", nil, "4"},
		{"wildcard longest suffix", "c.b.a.example.com", "/p", "GET", nil, "13"},
		{"exact host beats wildcard", "b.a.example.com", "/q", "GET", nil, "14"},
		{"wildcard falls back to shorter suffix", "b.a.example.com", "/z", "GET", nil, "12"},
		{"wildcard does not match the bare domain", "example.com", "/x", "GET", nil, "5"},
		{"more conditions first", "x.example.com", "/p", "GET", mapHeaders{"x-a": "1"}, "15"},
		{"tie broken by id", "x.example.com", "/p", "POST", mapHeaders{"x-a": "1", "x-b": "1"}, "16"},
		{"any host exact", "nowhere", "/x/y", "GET", nil, "18"},
		{"any host prefix", "nowhere", "/x/y/z", "GET", nil, "5"},
	}
	var m Match
	for _, c := range cases {
		req := Request{Host: []byte(c.host), Path: []byte(c.path), Method: []byte(c.method)}
		if c.hdr != nil {
			req.Headers = c.hdr
		}
		if !s.MatchRequest(&req, &m) || string(m.ID()) != c.want {
			t.Errorf("%s: got %q, want %q", c.name, m.ID(), c.want)
		}
	}
	if s.MatchRequest(&Request{Host: []byte("r"), Path: []byte("/apix")}, &m) {
		t.Fatalf("segment-unaware prefix match: %q", m.ID())
	}
	if !s.MatchRequest(&Request{Host: []byte("r"), Path: []byte("/api/v1")}, &m) || string(m.ID()) != "rw" {
		t.Fatal("rewrite route not matched")
	}
	if m.RetryAttempts() != 2 || !m.RetryOn(502) || !m.RetryOn(503) || m.RetryOn(504) || !m.RetryOnConnectFailure() || !m.RetryOnReset() {
		t.Fatal("retry policy accessors")
	}
	if m.Priority() != 3 || m.Exact() || s.ClusterAt(m.ClusterIndex()).Name() == nil || string(s.ClusterAt(m.ClusterIndex()).Name()) != "b" {
		t.Fatal("route accessors")
	}
	for _, c := range []struct{ in, want string }{{"/api/v1?q=1", "/v1?q=1"}, {"/api", "/"}, {"/api?x", "/?x"}} {
		if got, ok := m.Rewrite(nil, []byte(c.in)); !ok || string(got) != c.want {
			t.Errorf("Rewrite(%q) = %q %v, want %q", c.in, got, ok, c.want)
		}
	}
	// Index is dense and unique.
	seen := make([]bool, s.NumRoutes())
	for i := range s.shards {
		sh := &s.shards[i]
		for j := range sh.n {
			k := sh.base + j
			if k >= len(seen) || seen[k] {
				t.Fatalf("ordinal %d out of range or repeated", k)
			}
			seen[k] = true
		}
	}
}

// TestRewriteJoinsSegments: a rewrite joins the replacement and the rest of
// the path with one '/', whether or not the route's prefix ends in '/', and
// replaces an exact path whole.
func TestRewriteJoinsSegments(t *testing.T) {
	st := State{Clusters: []Cluster{{Name: "a"}}, Shards: 2, Routes: []Route{
		{ID: "slash-v2", Host: "a", Prefix: "/api/", RewritePrefix: "/v2", Cluster: "a"},
		{ID: "slash-v2-slash", Host: "b", Prefix: "/api/", RewritePrefix: "/v2/", Cluster: "a"},
		{ID: "slash-root", Host: "c", Prefix: "/api/", RewritePrefix: "/", Cluster: "a"},
		{ID: "root-v2", Host: "d", Prefix: "/", RewritePrefix: "/v2", Cluster: "a"},
		{ID: "root-root", Host: "e", Prefix: "/", RewritePrefix: "/", Cluster: "a"},
		{ID: "plain-v2", Host: "f", Prefix: "/api", RewritePrefix: "/v2", Cluster: "a"},
		{ID: "exact-slash", Host: "g", Prefix: "/old/", Exact: true, RewritePrefix: "/new", Cluster: "a"},
		{ID: "exact", Host: "g", Prefix: "/old", Exact: true, RewritePrefix: "/new/", Cluster: "a"},
	}}
	s := mustOpen(t, mustBuild(t, st))
	for _, c := range []struct{ host, target, route, want string }{
		{"a", "/api/x/y?q=1", "slash-v2", "/v2/x/y?q=1"},
		{"a", "/api/", "slash-v2", "/v2/"},
		{"a", "/api/?q", "slash-v2", "/v2/?q"},
		{"b", "/api/x", "slash-v2-slash", "/v2/x"},
		{"b", "/api/", "slash-v2-slash", "/v2/"},
		{"c", "/api/x", "slash-root", "/x"},
		{"d", "/x", "root-v2", "/v2/x"},
		{"d", "/", "root-v2", "/v2/"},
		{"e", "/x/y", "root-root", "/x/y"},
		{"f", "/api/x", "plain-v2", "/v2/x"},
		{"f", "/api", "plain-v2", "/v2"},
		{"g", "/old/?q", "exact-slash", "/new?q"},
		{"g", "/old", "exact", "/new/"},
	} {
		var m Match
		path, _, _ := strings.Cut(c.target, "?")
		if !s.MatchRequest(&Request{Host: []byte(c.host), Path: []byte(path)}, &m) || string(m.ID()) != c.route {
			t.Errorf("%s %s: matched %q, want %q", c.host, c.target, m.ID(), c.route)
			continue
		}
		if got, ok := m.Rewrite(nil, []byte(c.target)); !ok || string(got) != c.want {
			t.Errorf("route %s: Rewrite(%q) = %q %v, want %q", c.route, c.target, got, ok, c.want)
		}
	}
}
