package fbs

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/snapgate/snapgate/fbs/snapfb"
)

func TestBuildDeterministic(t *testing.T) {
	st := genState(2000, 1)
	want := mustBuild(t, st)

	rng := rand.New(rand.NewPCG(7, 7))
	for range 3 {
		sh := st
		sh.Routes = slices.Clone(st.Routes)
		sh.Clusters = slices.Clone(st.Clusters)
		rng.Shuffle(len(sh.Routes), func(i, j int) { sh.Routes[i], sh.Routes[j] = sh.Routes[j], sh.Routes[i] })
		rng.Shuffle(len(sh.Clusters), func(i, j int) { sh.Clusters[i], sh.Clusters[j] = sh.Clusters[j], sh.Clusters[i] })
		if got := mustBuild(t, sh); !bytes.Equal(got, want) {
			t.Fatalf("shuffled input built different bytes (%d vs %d bytes)", len(got), len(want))
		}
	}

	next := st
	next.Version, next.ParentVersion = st.Version+1, st.Version
	other := mustBuild(t, next)
	if bytes.Equal(other, want) {
		t.Fatal("a different version built identical bytes")
	}
	a, b := mustOpen(t, want), mustOpen(t, other)
	if a.ContentHash() != b.ContentHash() {
		t.Fatalf("content hash depends on the version: %x vs %x", a.ContentHash(), b.ContentHash())
	}
	if b.Version() != st.Version+1 || b.ParentVersion() != st.Version {
		t.Fatalf("versions: got %d/%d", b.Version(), b.ParentVersion())
	}

	changed := st
	changed.Routes = slices.Clone(st.Routes)
	changed.Routes[0].TimeoutMs++
	if c := mustOpen(t, mustBuild(t, changed)); c.ContentHash() == a.ContentHash() {
		t.Fatal("a changed route kept the content hash")
	}
	changed = st
	changed.Clusters = slices.Clone(st.Clusters)
	changed.Clusters[0].Endpoints = []Endpoint{{Address: "10.9.9.9:1"}}
	if c := mustOpen(t, mustBuild(t, changed)); c.ContentHash() == a.ContentHash() {
		t.Fatal("a changed cluster kept the content hash")
	}
}

func TestRoundTrip(t *testing.T) {
	for _, shards := range []int{0, 1, 7, 1024} {
		st := genState(3000, 2)
		st.Shards = shards
		s := mustOpen(t, mustBuild(t, st))
		wantShards := shards
		if shards == 0 {
			wantShards = DefaultShards(len(st.Routes))
		}
		if s.NumShards() != wantShards || s.NumRoutes() != len(st.Routes) || s.NumClusters() != len(st.Clusters) {
			t.Fatalf("shards=%d: got %d shards, %d routes, %d clusters", shards, s.NumShards(), s.NumRoutes(), s.NumClusters())
		}
		var m Match
		for _, r := range st.Routes {
			if !s.Match([]byte(r.Host), []byte(r.Prefix), &m) {
				t.Fatalf("shards=%d: route %q (%s%s) not found", shards, r.ID, r.Host, r.Prefix)
			}
			if string(m.ID()) != r.ID || string(m.Host()) != r.Host || string(m.Prefix()) != r.Prefix ||
				string(m.Cluster()) != r.Cluster || m.TimeoutMs() != r.TimeoutMs {
				t.Fatalf("route %q: matched %q %q %q %q %d", r.ID, m.ID(), m.Host(), m.Prefix(), m.Cluster(), m.TimeoutMs())
			}
			if name := s.ClusterAt(m.ClusterIndex()).Name(); string(name) != r.Cluster {
				t.Fatalf("route %q: ClusterIndex %d names %q, want %q", r.ID, m.ClusterIndex(), name, r.Cluster)
			}
		}
	}
}

func TestMatchSemantics(t *testing.T) {
	st := State{
		Clusters: []Cluster{{Name: "a"}, {Name: "b"}},
		Routes: []Route{
			{ID: "api", Host: "example.com", Prefix: "/api", Cluster: "a"},
			{ID: "api-slash", Host: "example.com", Prefix: "/api/", Cluster: "a"},
			{ID: "api-v1", Host: "example.com", Prefix: "/api/v1", Cluster: "b"},
			{ID: "exact-root", Host: "example.com", Prefix: "/", Cluster: "a"},
			{ID: "docs-slash", Host: "docs.example.com", Prefix: "/guide/", Cluster: "b"},
			{ID: "wild-static", Host: "*", Prefix: "/static", Cluster: "b", TimeoutMs: 5},
			{ID: "wild-api", Host: "*", Prefix: "/api", Cluster: "b"},
		},
	}
	s := mustOpen(t, mustBuild(t, st))
	cases := []struct {
		host, path, want string // want "" = no match
	}{
		{"example.com", "/api", "api"},
		{"example.com", "/api/", "api-slash"},
		{"example.com", "/api/x", "api-slash"},
		{"example.com", "/api/v1", "api-v1"},
		{"example.com", "/api/v1/users", "api-v1"},
		{"example.com", "/api/v10", "api-slash"},
		{"example.com", "/apix", "exact-root"},
		{"example.com", "/api?x=/api/v1", "api"},
		{"example.com", "/", "exact-root"},
		{"example.com", "/static/x", "exact-root"}, // exact host wins over "*" even with a shorter prefix
		{"docs.example.com", "/guide/", "docs-slash"},
		{"docs.example.com", "/guide/x/y", "docs-slash"},
		{"docs.example.com", "/guide", ""},         // "/guide/" matches only below it; no "*" route for it
		{"docs.example.com", "/api/x", "wild-api"}, // host fallback
		{"docs.example.com", "/static", "wild-static"},
		{"docs.example.com", "/staticx", ""},
		{"other.org", "/static/img/a.png", "wild-static"},
		{"", "/static", "wild-static"},
		{"*", "/api", "wild-api"},
		{"other.org", "", ""},
		{"other.org", "*", ""},
		{"EXAMPLE.COM", "/x", ""}, // the caller lowercases
	}
	var m Match
	for _, c := range cases {
		got := ""
		if s.Match([]byte(c.host), []byte(c.path), &m) {
			got = string(m.ID())
		}
		if got != c.want {
			t.Errorf("Match(%q, %q) = %q, want %q", c.host, c.path, got, c.want)
		}
		ref, ok := refMatch(st.Routes, c.host, c.path)
		if ok != (got != "") || (ok && ref.ID != got) {
			t.Errorf("Match(%q, %q) = %q disagrees with the reference %q", c.host, c.path, got, ref.ID)
		}
	}
	if !s.Match([]byte("x.org"), []byte("/static"), &m) || m.TimeoutMs() != 5 || string(m.Cluster()) != "b" ||
		m.ClusterIndex() != 1 || string(m.Host()) != "*" || string(m.Prefix()) != "/static" {
		t.Fatalf("wildcard match fields: %q %q %q %d %d", m.Host(), m.Prefix(), m.Cluster(), m.ClusterIndex(), m.TimeoutMs())
	}
}

// TestMatchAgainstReference checks random request paths against the linear
// reference matcher.
func TestMatchAgainstReference(t *testing.T) {
	st := genState(500, 3)
	s := mustOpen(t, mustBuild(t, st))
	rng := rand.New(rand.NewPCG(3, 3))
	var m Match
	for range 20000 {
		r := st.Routes[rng.IntN(len(st.Routes))]
		host := r.Host
		if rng.IntN(3) == 0 {
			host = "unknown.example.com"
		}
		path := r.Prefix
		switch rng.IntN(5) {
		case 0:
			path += "/x"
		case 1:
			path += "x"
		case 2:
			path = strings.TrimSuffix(path, "/")
		case 3:
			path += "/deep/er?q=1"
		}
		ref, ok := refMatch(st.Routes, host, path)
		got := s.Match([]byte(host), []byte(path), &m)
		if got != ok || (ok && string(m.ID()) != ref.ID) {
			t.Fatalf("Match(%q, %q) = %v %q, reference %v %q", host, path, got, m.ID(), ok, ref.ID)
		}
	}
}

func TestBuildRejects(t *testing.T) {
	base := func() State {
		return State{
			Clusters: []Cluster{{Name: "c1", Endpoints: []Endpoint{{Address: "127.0.0.1:1"}}}},
			Routes:   []Route{{ID: "r1", Host: "a.com", Prefix: "/", Cluster: "c1"}},
		}
	}
	cases := []struct {
		name   string
		mutate func(*State)
		want   []string // substrings of the error
	}{
		{"empty id", func(s *State) { s.Routes[0].ID = "" }, []string{"field id", "empty"}},
		{"empty host", func(s *State) { s.Routes[0].Host = "" }, []string{`route "r1"`, "field host"}},
		{"empty prefix", func(s *State) { s.Routes[0].Prefix = "" }, []string{`route "r1"`, "field prefix"}},
		{"relative prefix", func(s *State) { s.Routes[0].Prefix = "api" }, []string{`route "r1"`, "field prefix", `start with "/"`}},
		{"empty cluster ref", func(s *State) { s.Routes[0].Cluster = "" }, []string{`route "r1"`, "field cluster"}},
		{"missing cluster", func(s *State) { s.Routes[0].Cluster = "nope" }, []string{`route "r1"`, "field cluster", `"nope" does not exist`}},
		{"uppercase host", func(s *State) { s.Routes[0].Host = "A.com" }, []string{`route "r1"`, "field host", "lowercase"}},
		{"host with port", func(s *State) { s.Routes[0].Host = "a.com:80" }, []string{"field host", "port"}},
		{"host with NUL", func(s *State) { s.Routes[0].Host = "a\x00b" }, []string{"field host", "0x00"}},
		{"partial wildcard", func(s *State) { s.Routes[0].Host = "a.*.com" }, []string{"field host", `"*"`}},
		{"empty wildcard", func(s *State) { s.Routes[0].Host = "*." }, []string{"field host", "domain"}},
		{"retry attempts", func(s *State) { s.Routes[0].RetryAttempts = 6 }, []string{"retry.attempts"}},
		{"retry status", func(s *State) { s.Routes[0].RetryStatuses = []uint16{99} }, []string{"retry.on"}},
		{"retry bits", func(s *State) { s.Routes[0].RetryOn = 4 }, []string{"retry.on"}},
		{"rewrite", func(s *State) { s.Routes[0].RewritePrefix = "x" }, []string{"rewrite_prefix"}},
		{"upper header", func(s *State) { s.Routes[0].Headers = []HeaderMatch{{Name: "X", Present: true}} }, []string{"headers[0].name"}},
		{"header both", func(s *State) { s.Routes[0].Headers = []HeaderMatch{{Name: "x", Value: "1", Present: true}} }, []string{"headers[0]"}},
		{"empty method", func(s *State) { s.Routes[0].Methods = []string{""} }, []string{"methods[0]"}},
		{"same conditions", func(s *State) {
			s.Routes = append(s.Routes, Route{ID: "r2", Host: "a.com", Prefix: "/", Cluster: "c1", Priority: 9})
		}, []string{`route "r2"`, "same conditions", `route "r1"`}},
		{"weight", func(s *State) { s.Clusters[0].Endpoints[0].Weight = MaxWeight + 1 }, []string{"weight"}},
		{"lb", func(s *State) { s.Clusters[0].LB = 9 }, []string{"field lb"}},
		{"hash without key", func(s *State) { s.Clusters[0].LB = LBHash }, []string{"field hash_on"}},
		{"hash_on without hash", func(s *State) { s.Clusters[0].HashOn = HashOnSourceIP }, []string{"field hash_on"}},
		{"hash header without name", func(s *State) { s.Clusters[0].LB, s.Clusters[0].HashOn = LBHash, HashOnHeader }, []string{"hash_on_name"}},
		{"duplicate host+prefix", func(s *State) {
			s.Routes = append(s.Routes, Route{ID: "r2", Host: "a.com", Prefix: "/", Cluster: "c1"})
		}, []string{`route "r2"`, "host+prefix", `route "r1"`}},
		{"duplicate exact path", func(s *State) {
			s.Routes = append(s.Routes, Route{ID: "r2", Host: "b.com", Prefix: "/x", Exact: true, Cluster: "c1"},
				Route{ID: "r3", Host: "b.com", Prefix: "/x", Exact: true, Cluster: "c1"})
		}, []string{`route "r3"`, `route "r2"`}},
		{"duplicate id", func(s *State) {
			s.Routes = append(s.Routes, Route{ID: "r1", Host: "b.com", Prefix: "/", Cluster: "c1"})
		}, []string{`route "r1"`, "duplicate route id"}},
		{"duplicate cluster", func(s *State) { s.Clusters = append(s.Clusters, Cluster{Name: "c1"}) }, []string{`cluster "c1"`, "duplicate"}},
		{"empty cluster name", func(s *State) { s.Clusters = append(s.Clusters, Cluster{}) }, []string{"field name", "empty"}},
		{"empty endpoint", func(s *State) { s.Clusters[0].Endpoints[0].Address = "" }, []string{`cluster "c1"`, "endpoints[0].address"}},
		{"negative shards", func(s *State) { s.Shards = -1 }, []string{"field Shards"}},
		{"too many shards", func(s *State) { s.Shards = MaxShards + 1 }, []string{"field Shards"}},
	}
	for _, c := range cases {
		st := base()
		c.mutate(&st)
		_, err := Build(st)
		if err == nil {
			t.Errorf("%s: Build accepted it", c.name)
			continue
		}
		if !errors.Is(err, ErrInvalidState) {
			t.Errorf("%s: %v does not wrap ErrInvalidState", c.name, err)
		}
		for _, w := range c.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error %q lacks %q", c.name, err, w)
			}
		}
	}
	if _, err := Build(base()); err != nil {
		t.Fatalf("base state: %v", err)
	}
	if _, err := Build(State{Shards: MaxShards}); err != nil {
		t.Fatalf("empty state with MaxShards: %v", err)
	}
}

func TestEmptyState(t *testing.T) {
	s := mustOpen(t, mustBuild(t, State{Version: 1}))
	var m Match
	if s.NumRoutes() != 0 || s.NumClusters() != 0 || s.Match([]byte("a"), []byte("/"), &m) {
		t.Fatal("empty snapshot matched or counted something")
	}
}

func TestClusterAccessors(t *testing.T) {
	st := genState(100, 4)
	s := mustOpen(t, mustBuild(t, st))
	sorted := slices.Clone(st.Clusters)
	slices.SortFunc(sorted, func(a, b Cluster) int { return strings.Compare(a.Name, b.Name) })
	for i, c := range sorted {
		v := s.ClusterAt(i)
		if string(v.Name()) != c.Name || v.ConnectTimeoutMs() != c.ConnectTimeoutMs || v.NumEndpoints() != len(c.Endpoints) {
			t.Fatalf("cluster %d: %q %d %d, want %+v", i, v.Name(), v.ConnectTimeoutMs(), v.NumEndpoints(), c)
		}
		for j, e := range c.Endpoints {
			if string(v.Endpoint(j)) != e.Address {
				t.Fatalf("cluster %q endpoint %d: %q, want %q", c.Name, j, v.Endpoint(j), e.Address)
			}
		}
		if v.Endpoint(len(c.Endpoints)) != nil || v.Endpoint(-1) != nil {
			t.Fatalf("cluster %q: out-of-range endpoint returned an address", c.Name)
		}
		if got := s.ClusterIndex([]byte(c.Name)); got != i {
			t.Fatalf("ClusterIndex(%q) = %d, want %d", c.Name, got, i)
		}
	}
	if s.ClusterIndex([]byte("zzz")) != -1 || s.ClusterIndex(nil) != -1 {
		t.Fatal("ClusterIndex found a missing cluster")
	}
	for _, i := range []int{-1, len(sorted)} {
		v := s.ClusterAt(i)
		if v.Name() != nil || v.NumEndpoints() != 0 || v.Endpoint(0) != nil || v.ConnectTimeoutMs() != 0 {
			t.Fatalf("ClusterAt(%d) is not the zero view", i)
		}
	}
}

func TestForEachRoute(t *testing.T) {
	st := genState(700, 5)
	b := mustBuild(t, st)
	s := mustOpen(t, b)
	if &s.Bytes()[0] != &b[0] || len(s.Bytes()) != len(b) {
		t.Fatal("Bytes does not return the opened slice")
	}
	var got []Route
	s.ForEachRoute(func(r Route) bool { got = append(got, r); return true })
	cmp := func(a, b Route) int { return strings.Compare(a.ID, b.ID) }
	want := slices.Clone(st.Routes)
	slices.SortFunc(want, cmp)
	slices.SortFunc(got, cmp)
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("ForEachRoute returned %d routes that differ from the %d built", len(got), len(want))
	}
	n := 0
	s.ForEachRoute(func(Route) bool { n++; return n < 3 })
	if n != 3 {
		t.Fatalf("ForEachRoute did not stop when fn returned false: %d calls", n)
	}
}

// TestRouteAtMatchesGenerated pins routeShardRoutesSlot to the generated
// accessor: the fast path must read the same tables.
func TestRouteAtMatchesGenerated(t *testing.T) {
	s := mustOpen(t, mustBuild(t, genState(300, 6)))
	var rs snapfb.RouteShard
	var a, b snapfb.Route
	for i := range s.shards {
		sh := &s.shards[i]
		rs.Init(sh.buf, 0)
		root := snapfb.GetRootAsRouteShard(sh.buf, 0)
		if root.RoutesLength() != sh.n {
			t.Fatalf("shard %d: %d routes, generated accessor says %d", i, sh.n, root.RoutesLength())
		}
		for j := range sh.n {
			sh.routeAt(&a, j)
			root.Routes(&b, j)
			if a.Table().Pos != b.Table().Pos {
				t.Fatalf("shard %d route %d: routeAt at %d, generated at %d", i, j, a.Table().Pos, b.Table().Pos)
			}
		}
	}
}

func TestKeyEqualsParts(t *testing.T) {
	cases := []struct {
		key   string
		star  bool
		h     string
		exact bool
		p     string
		want  bool
	}{
		{"a\x00/b", false, "a", false, "/b", true},
		{"a\x00=/b", false, "a", true, "/b", true},
		{"a\x00=/b", false, "a", false, "/b", false},
		{"a\x00/b", false, "a", true, "/b", false},
		{"*.a\x00/", true, ".a", false, "/", true},
		{"*\x00/", true, "", false, "/", true},
		{"*\x00/", false, "*", false, "/", true},
		{"x.a\x00/", true, ".a", false, "/", false},
		{"a\x01/b", false, "a", false, "/b", false},
		{"ab\x00/", false, "a", false, "b\x00/", false},
		{"", false, "", false, "", false},
	}
	for _, c := range cases {
		if got := keyEqualsParts([]byte(c.key), c.star, []byte(c.h), c.exact, []byte(c.p)); got != c.want {
			t.Errorf("keyEqualsParts(%q, %v, %q, %v, %q) = %v, want %v", c.key, c.star, c.h, c.exact, c.p, got, c.want)
		}
	}
}

func TestRouteHash(t *testing.T) {
	// FNV-1a 64 of "a\x00/" computed by hash/fnv.
	const want uint64 = 0xe5d2de190426dbf1
	if got := RouteHash([]byte("a"), []byte("/")); got != want {
		t.Fatalf("RouteHash = %#x, want %#x", got, want)
	}
	if RouteHash([]byte("ab"), []byte("/")) == RouteHash([]byte("a"), []byte("b/")) {
		t.Fatal("the separator does not separate")
	}
	if routeHashString("svc.example.com\x00/api/") != RouteHash([]byte("svc.example.com"), []byte("/api/")) {
		t.Fatal("routeHashString and RouteHash disagree")
	}
}

func TestDefaultShards(t *testing.T) {
	for _, c := range []struct{ routes, want int }{
		{0, 64}, {1000, 64}, {16383, 64}, {16384, 128}, {100_000, 256}, {1 << 40, MaxShards},
	} {
		if got := DefaultShards(c.routes); got != c.want {
			t.Errorf("DefaultShards(%d) = %d, want %d", c.routes, got, c.want)
		}
	}
}

// TestOneEditChangesOneShard holds the point of sharding: editing, adding or
// deleting one route changes the bytes of exactly one shard.
func TestOneEditChangesOneShard(t *testing.T) {
	base := genState(2000, 14)
	a := mustOpen(t, mustBuild(t, base))
	if a.ShardData(-1) != nil || a.ShardData(a.NumShards()) != nil {
		t.Fatal("ShardData out of range returned bytes")
	}
	for _, c := range deltaChanges {
		next := base
		next.Routes = slices.Clone(base.Routes)
		c.mutate(&next)
		b := mustOpen(t, mustBuild(t, next))
		if a.NumShards() != b.NumShards() {
			t.Fatalf("%s: shard count changed %d → %d", c.name, a.NumShards(), b.NumShards())
		}
		changed := 0
		for i := range a.NumShards() {
			if !bytes.Equal(a.ShardData(i), b.ShardData(i)) {
				changed++
			}
		}
		if changed != 1 {
			t.Errorf("%s: %d shards changed, want 1", c.name, changed)
		}
	}
}

// TestConcurrentMatch shares one Snapshot between goroutines, as the edge
// does; run with -race.
func TestConcurrentMatch(t *testing.T) {
	st := genState(500, 15)
	s := mustOpen(t, mustBuild(t, st))
	var wg sync.WaitGroup
	errs := make(chan string, 4)
	for g := range 4 {
		wg.Go(func() {
			var m Match
			for i := g; i < len(st.Routes); i += 4 {
				r := st.Routes[i]
				if !s.Match([]byte(r.Host), []byte(r.Prefix+"/x"), &m) || s.ClusterAt(m.ClusterIndex()).Name() == nil {
					errs <- r.ID
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for id := range errs {
		t.Errorf("route %q not matched concurrently", id)
	}
}

func TestShardRange(t *testing.T) {
	data, err := Build(State{Version: 3, Clusters: []Cluster{{Name: "c", Endpoints: []Endpoint{{Address: "127.0.0.1:1"}}}},
		Routes: []Route{{ID: "a", Host: "*", Prefix: "/a", Cluster: "c"}, {ID: "b", Host: "x.test", Prefix: "/", Cluster: "c"}}})
	if err != nil {
		t.Fatal(err)
	}
	s, err := Open(data)
	if err != nil {
		t.Fatal(err)
	}
	for i := range s.NumShards() {
		off, n := s.ShardRange(i)
		if !bytes.Equal(data[off:off+n], s.ShardData(i)) || &data[off] != &s.ShardData(i)[0] {
			t.Fatalf("shard %d: ShardRange (%d, %d) does not locate ShardData", i, off, n)
		}
	}
	if off, n := s.ShardRange(s.NumShards()); off != 0 || n != 0 {
		t.Fatalf("out of range: (%d, %d)", off, n)
	}
}
