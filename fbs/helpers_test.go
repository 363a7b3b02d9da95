package fbs

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
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

// refMatch is the specification of Match as a linear scan: exact host before
// "*", then the longest prefix that matches segment-aware.
func refMatch(routes []Route, host, path string) (Route, bool) {
	for i := 0; i < len(path); i++ {
		if path[i] == '?' {
			path = path[:i]
			break
		}
	}
	if path == "" {
		return Route{}, false
	}
	hosts := []string{host, WildcardHost}
	if host == WildcardHost || host == "" {
		hosts = []string{WildcardHost}
	}
	for _, h := range hosts {
		best, found := Route{}, false
		for _, r := range routes {
			if r.Host != h || !prefixMatches(r.Prefix, path) {
				continue
			}
			if !found || len(r.Prefix) > len(best.Prefix) {
				best, found = r, true
			}
		}
		if found {
			return best, true
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
