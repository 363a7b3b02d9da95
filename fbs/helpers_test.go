package fbs

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/cespare/xxhash/v2"
)

// genState returns a deterministic state with n routes spread over n/8+1
// hosts (a tenth of them wildcard routes) and n/16+1 clusters.
func genState(n int, seed uint64) State {
	rng := rand.New(rand.NewPCG(seed, 0x5eed))
	nClusters := n/16 + 1
	st := State{Version: 10, ParentVersion: 9}
	for i := range nClusters {
		c := Cluster{Name: fmt.Sprintf("cluster-%05d", i), ConnectTimeoutMs: uint32(100 + i%7)}
		for j := range 1 + i%3 {
			c.Endpoints = append(c.Endpoints, Endpoint{Address: fmt.Sprintf("10.%d.%d.%d:8080", i/250%250, i%250, j+1)})
		}
		st.Clusters = append(st.Clusters, c)
	}
	nHosts := n/8 + 1
	seen := make(map[string]bool, n)
	for len(st.Routes) < n {
		host := fmt.Sprintf("svc%d.example.com", rng.IntN(nHosts))
		if rng.IntN(10) == 0 {
			host = WildcardHost
		}
		var prefix string
		switch rng.IntN(4) {
		case 0:
			prefix = fmt.Sprintf("/api%d", rng.IntN(n))
		case 1:
			prefix = fmt.Sprintf("/api%d/v%d/", rng.IntN(n), rng.IntN(3))
		case 2:
			prefix = fmt.Sprintf("/static/%d/assets", rng.IntN(n))
		default:
			prefix = "/"
		}
		if seen[host+"\x00"+prefix] {
			continue
		}
		seen[host+"\x00"+prefix] = true
		st.Routes = append(st.Routes, Route{
			ID:        fmt.Sprintf("route-%06d", len(st.Routes)),
			Host:      host,
			Prefix:    prefix,
			Cluster:   st.Clusters[rng.IntN(nClusters)].Name,
			TimeoutMs: uint32(rng.IntN(3) * 1000),
		})
	}
	return st
}

// fixTrailer rewrites b's trailer so that it matches the bytes before it,
// letting corrupted buffers reach the structural walk.
func fixTrailer(b []byte) []byte {
	if len(b) < TrailerSize {
		return b
	}
	body := b[:len(b)-TrailerSize]
	binary.LittleEndian.PutUint64(b[len(body):], xxhash.Sum64(body))
	return b
}

func mustBuild(t testing.TB, st State) []byte {
	t.Helper()
	b, err := Build(st)
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	return b
}

func mustOpen(t testing.TB, b []byte) *Snapshot {
	t.Helper()
	s, err := Open(b)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return s
}

// refMatch is the specification of Match as a linear scan: hosts from most
// to least specific (exact, "*." wildcards by longest suffix, "*"), then
// the exact path, then the longest segment-aware prefix, then priority,
// conditions and id; the first route whose conditions hold wins.
func refMatch(routes []Route, host, path string) (Route, bool) {
	return refMatchRequest(routes, host, path, "", nil)
}

func refMatchRequest(routes []Route, host, path, method string, headers map[string]string) (Route, bool) {
	if i := strings.IndexByte(path, '?'); i >= 0 {
		path = path[:i]
	}
	if path == "" {
		return Route{}, false
	}
	var hosts []string
	if host != "" {
		hosts = append(hosts, host)
	}
	for i := 0; i < len(host); i++ {
		if host[i] == '.' {
			hosts = append(hosts, "*"+host[i:])
		}
	}
	hosts = append(hosts, WildcardHost)
	holds := func(r Route) bool {
		if len(r.Methods) > 0 && !slices.Contains(r.Methods, method) {
			return false
		}
		for _, h := range r.Headers {
			v, ok := headers[h.Name]
			if !ok || (!h.Present && v != h.Value) {
				return false
			}
		}
		return true
	}
	for _, h := range hosts {
		// Candidate paths, most specific first: the exact path, then
		// prefixes by length.
		var best *Route
		rank := func(r *Route) int {
			if r.Exact {
				return 1 << 20
			}
			return len(r.Prefix)
		}
		for i := range routes {
			r := &routes[i]
			if r.Host != h || !holds(*r) {
				continue
			}
			if r.Exact && r.Prefix != path || !r.Exact && !prefixMatches(r.Prefix, path) {
				continue
			}
			switch {
			case best == nil, rank(r) > rank(best):
				best = r
			case rank(r) == rank(best) && compareMatchOrder(r, best) < 0:
				best = r
			}
		}
		if best != nil {
			return *best, true
		}
	}
	return Route{}, false
}
func prefixMatches(prefix, path string) bool {
	if len(path) < len(prefix) || path[:len(prefix)] != prefix {
		return false
	}
	return len(path) == len(prefix) || prefix[len(prefix)-1] == '/' || path[len(prefix)] == '/'
}
