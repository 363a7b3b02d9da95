package fbs

import (
	"bytes"

	"github.com/snapgate/snapgate/fbs/snapfb"
)

// Match is the result of Snapshot.Match. Its byte slices alias the snapshot
// bytes and stay valid as long as the snapshot does. The caller owns the
// Match value (typically on its stack or in per-connection state), which is
// what keeps Snapshot.Match free of allocations.
type Match struct {
	id, host, prefix, cluster []byte
	clusterIndex              int
	timeoutMs                 uint32
}

// ID is the matched route's id.
func (m *Match) ID() []byte { return m.id }

// Host is the matched route's host: the request host or "*".
func (m *Match) Host() []byte { return m.host }

// Prefix is the matched route's path prefix.
func (m *Match) Prefix() []byte { return m.prefix }

// Cluster is the name of the matched route's cluster.
func (m *Match) Cluster() []byte { return m.cluster }

// ClusterIndex is the index of the route's cluster for Snapshot.ClusterAt,
// so that per-cluster runtime state can live in a slice built at swap.
func (m *Match) ClusterIndex() int { return m.clusterIndex }

// TimeoutMs is the route's upstream timeout in milliseconds (0 = default).
func (m *Match) TimeoutMs() uint32 { return m.timeoutMs }

var wildcard = []byte(WildcardHost)

// Match finds the route for a request and fills m. host must be lowercased
// and carry no port; path is the request target's path (anything from the
// first '?' on is ignored). Routes of the exact host are tried first, then
// routes of host "*"; within a host the longest segment-aware prefix wins:
// prefix "/api" matches "/api" and "/api/x" but not "/apix"; "/api/"
// matches "/api/" and everything below it but not "/api"; "/" matches every
// path. It reports whether a route matched and does not allocate.
func (s *Snapshot) Match(host, path []byte, m *Match) bool {
	if i := bytes.IndexByte(path, '?'); i >= 0 {
		path = path[:i]
	}
	if len(path) == 0 {
		return false
	}
	if len(host) > 0 && s.matchHost(host, path, m) {
		return true
	}
	if bytes.Equal(host, wildcard) {
		return false
	}
	return s.matchHost(wildcard, path, m)
}

// matchHost tries the prefixes that can match path, longest first: the whole
// path, then for each '/' from the right, the path up to and including it
// ("/a/b/" form) and up to it ("/a/b" form, which matches because the next
// byte is '/'). Each try is one hashed shard and a binary search, so a
// request costs O(segments · log routes-per-shard) and never scans routes.
func (s *Snapshot) matchHost(host, path []byte, m *Match) bool {
	if s.lookup(host, path, m) {
		return true
	}
	for i := len(path) - 1; i >= 0; i-- {
		if path[i] != '/' {
			continue
		}
		if i+1 < len(path) && s.lookup(host, path[:i+1], m) {
			return true
		}
		if i > 0 && s.lookup(host, path[:i], m) {
			return true
		}
	}
	return false
}

// lookup finds the route with exactly this host and prefix.
func (s *Snapshot) lookup(host, prefix []byte, m *Match) bool {
	if len(prefix) > s.maxPrefix {
		// No route has a prefix this long: skip the hash and the shard
		// search, which on a large snapshot costs cache misses per probe.
		return false
	}
	sh := &s.shards[RouteHash(host, prefix)%uint64(len(s.shards))]
	var r snapfb.Route
	lo, hi := 0, sh.n
	for lo < hi {
		mid := int(uint(lo+hi) >> 1)
		sh.routeAt(&r, mid)
		switch c := compareKey(r.Key(), host, prefix); {
		case c < 0:
			lo = mid + 1
		case c > 0:
			hi = mid
		default:
			m.id = r.Id()
			m.host = r.Host()
			m.prefix = r.Prefix()
			m.cluster = r.Cluster()
			m.timeoutMs = r.TimeoutMs()
			m.clusterIndex = s.ClusterIndex(m.cluster)
			return true
		}
	}
	return false
}

// compareKey compares key with host+"\x00"+prefix without building the
// latter (building it would allocate per request).
func compareKey(key, host, prefix []byte) int {
	n := len(host)
	if len(key) < n {
		if c := bytes.Compare(key, host[:len(key)]); c != 0 {
			return c
		}
		return -1
	}
	if c := bytes.Compare(key[:n], host); c != 0 {
		return c
	}
	rest := key[n:]
	switch {
	case len(rest) == 0:
		return -1
	case rest[0] != 0:
		return 1
	}
	return bytes.Compare(rest[1:], prefix)
}
