package fbs

import (
	"bytes"
	"encoding/binary"

	"github.com/snapgate/snapgate/fbs/snapfb"
)

// Request is what Snapshot.MatchRequest looks at. The caller owns it
// (typically per connection), so matching does not allocate.
type Request struct {
	Host   []byte // lowercased, without port
	Path   []byte // the request path; anything from the first '?' is ignored
	Method []byte // e.g. "GET"; compared byte for byte with route methods
	// Headers answers header conditions; nil means no header is present.
	Headers HeaderSource
}

// HeaderSource looks up a request header by lowercase name. It returns the
// value of the first field with that name. Implementations must not
// allocate or retain name.
type HeaderSource interface {
	Header(name []byte) (value []byte, ok bool)
}

// Match is the result of a match. Its byte slices alias the snapshot bytes
// and stay valid as long as the snapshot does. The caller owns the Match
// value (typically on its stack or in per-connection state), which is what
// keeps matching free of allocations.
type Match struct {
	r            snapfb.Route
	prefix       []byte
	index        int
	clusterIndex int
	timeoutMs    uint32
}

// ID is the matched route's id.
func (m *Match) ID() []byte { return m.r.Id() }

// Host is the matched route's host: the request host, a "*." wildcard or "*".
func (m *Match) Host() []byte { return m.r.Host() }

// Prefix is the matched route's path prefix (the whole path when Exact).
func (m *Match) Prefix() []byte { return m.prefix }

// Exact reports whether the route matched the whole path exactly.
func (m *Match) Exact() bool { return m.r.Exact() }

// Cluster is the name of the matched route's cluster.
func (m *Match) Cluster() []byte { return m.r.Cluster() }

// ClusterIndex is the index of the route's cluster for Snapshot.ClusterAt,
// so that per-cluster runtime state can live in a slice built at swap.
func (m *Match) ClusterIndex() int { return m.clusterIndex }

// Index is the route's dense ordinal in the snapshot, 0..NumRoutes()-1, so
// that per-route runtime state (metrics) can live in a slice built at swap.
// It is stable for a given snapshot, not across snapshots.
func (m *Match) Index() int { return m.index }

// Policy is the index in Snapshot.Auth().Policies of the route's own
// policy, -1 for none.
func (m *Match) Policy() int { return int(m.r.Policy()) - 1 }

// TimeoutMs is the route's upstream timeout in milliseconds (0 = default).
func (m *Match) TimeoutMs() uint32 { return m.timeoutMs }

// Priority is the route's priority.
func (m *Match) Priority() uint32 { return m.r.Priority() }

// RewritePrefix is what replaces the matched prefix, or nil for none.
func (m *Match) RewritePrefix() []byte { return m.r.RewritePrefix() }

// RetryAttempts is how many more attempts an idempotent request may make on
// another endpoint, 0..MaxRetryAttempts.
func (m *Match) RetryAttempts() int { return int(m.r.RetryAttempts()) }

// MaxStalenessMs is the route's staleness bound in milliseconds: how long
// ago ctrl must have confirmed the snapshot as the latest; 0 = unbounded.
func (m *Match) MaxStalenessMs() uint32 { return m.r.MaxStalenessMs() }

// OnStaleReject reports whether the route answers 503 past its staleness
// bound; otherwise it keeps serving from the snapshot in service.
func (m *Match) OnStaleReject() bool { return m.r.OnStale() == onStaleReject }

// StaleHeader reports whether the route's responses carry the staleness.
func (m *Match) StaleHeader() bool { return m.r.StaleHeader() }

// RetryOnConnectFailure reports whether a failed connect is retried.
func (m *Match) RetryOnConnectFailure() bool { return m.r.RetryOn()&RetryOnConnectFailure != 0 }

// RetryOnReset reports whether a connection reset before any response byte
// is retried.
func (m *Match) RetryOnReset() bool { return m.r.RetryOn()&RetryOnReset != 0 }

// RetryOn reports whether an upstream response with status is retried.
func (m *Match) RetryOn(status int) bool {
	for j, n := 0, m.r.RetryStatusesLength(); j < n; j++ {
		if int(m.r.RetryStatuses(j)) == status {
			return true
		}
	}
	return false
}

// Rewrite appends to dst the target to send upstream for target (the
// request path the route matched, optionally followed by a query) and
// reports whether the route rewrites at all; when it does not, dst is
// returned unchanged. The matched prefix is replaced by RewritePrefix,
// joined to the rest with exactly one '/': prefix "/api" with rewrite "/"
// maps "/api/x" to "/x", not "//x". A prefix's trailing '/' is the
// boundary to the rest, not part of what is replaced, so prefix "/api/"
// (or "/") with rewrite "/v2" maps "/api/x" to "/v2/x" as prefix "/api"
// does, not to "/v2x". An exact path is replaced whole.
func (m *Match) Rewrite(dst, target []byte) ([]byte, bool) {
	rw := m.r.RewritePrefix()
	if len(rw) == 0 || len(target) < len(m.prefix) {
		return dst, false
	}
	n := len(m.prefix)
	if n > 0 && m.prefix[n-1] == '/' && !m.r.Exact() {
		n--
	}
	rest := target[n:]
	if rw[len(rw)-1] == '/' && len(rest) > 0 && rest[0] == '/' {
		rest = rest[1:]
	}
	dst = append(dst, rw...)
	return append(dst, rest...), true
}

// Match finds the route for host and path with no method and no headers,
// so routes with method or header conditions never match. It is the
// pre-conditions API, kept for callers that have not moved to MatchRequest.
func (s *Snapshot) Match(host, path []byte, m *Match) bool {
	req := Request{Host: host, Path: path}
	return s.MatchRequest(&req, m)
}

// maxCandidates bounds the prefix candidates hashed in one forward pass;
// 64 states (1 KiB) stay on the stack. Longer paths fall back to hashing
// each remaining candidate on its own (see matchHost).
const maxCandidates = 64

type candidate struct {
	n int    // prefix length
	h uint64 // RouteHash of host and path[:n]
}

// MatchRequest finds the route for req and fills m. It reports whether a
// route matched and does not allocate.
//
// Order (docs/routing.md): hosts from most to least specific (the exact
// host, then "*." wildcards from the longest suffix, then "*"); within a
// host the exact path, then the longest segment-aware prefix; within one
// host and path the routes in match order (priority descending, then more
// conditions, then id), the first whose method and header conditions hold.
//
// Each (host, path) candidate is one probe into one shard's hash index, read
// straight from the snapshot bytes; a per-snapshot set of the prefix and
// path lengths in use skips candidates no route can have, and the shard's
// bloom filter ends most probes for absent keys before they touch the
// index, so a request costs about one index probe per matched route
// whatever the table size.
func (s *Snapshot) MatchRequest(req *Request, m *Match) bool {
	path := req.Path
	if i := bytes.IndexByte(path, '?'); i >= 0 {
		path = path[:i]
	}
	if len(path) == 0 || len(s.shards) == 0 {
		return false
	}
	host := req.Host
	if len(host) > 0 && s.matchHost(false, host, path, req, m) {
		return true
	}
	if s.wildHosts {
		for i := 0; i < len(host); i++ {
			if host[i] == '.' && s.wildLens.has(len(host)-i) && s.matchHost(true, host[i:], path, req, m) {
				return true
			}
		}
	}
	return s.anyHost && s.matchHost(true, nil, path, req, m)
}

// matchHost tries the candidates of one host: "*"+h when star, else h.
func (s *Snapshot) matchHost(star bool, h, path []byte, req *Request, m *Match) bool {
	hh := uint64(fnvOffset)
	if star {
		hh = (hh ^ '*') * fnvPrime
	}
	for _, c := range h {
		hh = (hh ^ uint64(c)) * fnvPrime
	}
	hh *= fnvPrime // the 0x00 separator
	if s.exactLens.has(len(path)) {
		he := (hh ^ '=') * fnvPrime
		for _, c := range path {
			he = (he ^ uint64(c)) * fnvPrime
		}
		if s.probe(he, star, h, true, path, req, m) {
			return true
		}
	}

	// One forward pass hashes every candidate prefix; they are tried
	// longest first. A candidate ends at the end of the path, just after a
	// '/' ("/a/" form) or just before one ("/a" form, which matches because
	// the next byte is '/').
	var cands [maxCandidates]candidate
	nc, dropped := 0, false
	limit := min(len(path), s.maxPrefix)
	hp := hh
	for k := 0; k <= limit; k++ {
		if k > 0 && (k == len(path) || path[k-1] == '/' || path[k] == '/') && s.prefixLens.has(k) {
			if nc == maxCandidates {
				// Keep the longest: shift out the shortest.
				copy(cands[:], cands[1:])
				nc--
				dropped = true
			}
			cands[nc] = candidate{k, hp}
			nc++
		}
		if k < limit {
			hp = (hp ^ uint64(path[k])) * fnvPrime
		}
	}
	for i := nc - 1; i >= 0; i-- {
		c := cands[i]
		if s.probe(c.h, star, h, false, path[:c.n], req, m) {
			return true
		}
	}
	if !dropped {
		return false
	}
	// More candidates than fit: hash the shorter ones one by one.
	for k := cands[0].n - 1; k > 0; k-- {
		if (path[k-1] == '/' || path[k] == '/') && s.prefixLens.has(k) {
			hk := hh
			for _, c := range path[:k] {
				hk = (hk ^ uint64(c)) * fnvPrime
			}
			if s.probe(hk, star, h, false, path[:k], req, m) {
				return true
			}
		}
	}
	return false
}

// probe looks up the key ("*" if star)+h+"\x00"+("=" if exact)+p, whose
// hash is kh, and tries its routes in match order.
func (s *Snapshot) probe(kh uint64, star bool, h []byte, exact bool, p []byte, req *Request, m *Match) bool {
	sh := &s.shards[kh%uint64(len(s.shards))]
	// Most candidates of a request name no route; the filter (one word, in
	// cache far more often than the index) ends those probes early.
	if !sh.mayContain(kh) {
		return false
	}
	fp, pos := slotOf(kh)
	// Open proved that every index has an empty slot, so this ends.
	for pos &= sh.mask; ; pos = (pos + 1) & sh.mask {
		f, keyEnd, first, count := sh.slot(pos)
		if f == 0 {
			return false
		}
		if f != fp {
			continue
		}
		key, _ := sh.keyAt(keyEnd)
		if !keyEqualsParts(key, star, h, exact, p) {
			continue
		}
		for j := int(first); j < int(first+count); j++ {
			sh.routeAt(&m.r, j)
			if conditionsHold(&m.r, req) {
				m.index = sh.base + j
				m.clusterIndex = int(m.r.ClusterIndex())
				m.timeoutMs = m.r.TimeoutMs()
				m.prefix = m.r.Prefix()
				return true
			}
		}
		return false
	}
}

// conditionsHold checks a route's method and header conditions.
func conditionsHold(r *snapfb.Route, req *Request) bool {
	if n := r.MethodsLength(); n > 0 {
		ok := false
		for j := 0; j < n && !ok; j++ {
			ok = bytes.Equal(r.Methods(j), req.Method)
		}
		if !ok {
			return false
		}
	}
	if n := r.HeadersLength(); n > 0 {
		if req.Headers == nil {
			return false
		}
		var hm snapfb.HeaderMatch
		for j := range n {
			r.Headers(&hm, j)
			v, ok := req.Headers.Header(hm.Name())
			if !ok || (!hm.Present() && !bytes.Equal(v, hm.Value())) {
				return false
			}
		}
	}
	return true
}

// slot reads index slot pos (pos <= mask) from the raw index bytes.
func (sh *shardIndex) slot(pos uint32) (fp, keyEnd, first, count uint32) {
	b := sh.idx[pos*4*slotWords:]
	b = b[:16]
	return binary.LittleEndian.Uint32(b), binary.LittleEndian.Uint32(b[4:]),
		binary.LittleEndian.Uint32(b[8:]), binary.LittleEndian.Uint32(b[12:])
}

// keyAt returns the FlatBuffers string whose position is keyEnd bytes
// before the end of the shard buffer; false if it does not fit.
func (sh *shardIndex) keyAt(keyEnd uint32) ([]byte, bool) {
	p := len(sh.buf) - int(keyEnd)
	if p < 0 || p+4 > len(sh.buf) {
		return nil, false
	}
	n := int(binary.LittleEndian.Uint32(sh.buf[p:]))
	if n > len(sh.buf)-p-4 {
		return nil, false
	}
	return sh.buf[p+4 : p+4+n], true
}

// keyEqualsParts reports whether key equals ("*" if star)+h+"\x00"+("=" if
// exact)+p without building the latter (building it would allocate).
func keyEqualsParts(key []byte, star bool, h []byte, exact bool, p []byte) bool {
	n := len(h) + 1 + len(p)
	if star {
		n++
	}
	if exact {
		n++
	}
	if len(key) != n {
		return false
	}
	if star {
		if key[0] != '*' {
			return false
		}
		key = key[1:]
	}
	if !bytes.Equal(key[:len(h)], h) || key[len(h)] != 0 {
		return false
	}
	key = key[len(h)+1:]
	if exact {
		if key[0] != '=' {
			return false
		}
		key = key[1:]
	}
	return bytes.Equal(key, p)
}

// keyEquals reports whether key is the stored key of a route with host,
// exact and prefix.
func keyEquals(key, host []byte, exact bool, prefix []byte) bool {
	return keyEqualsParts(key, false, host, exact, prefix)
}

// lenSet is a set of lengths below lenSetBits; larger lengths always test
// true, so it only ever skips work, never a match.
type lenSet [lenSetBits / 64]uint64

const lenSetBits = 2048

func (l *lenSet) add(n int) {
	if n < lenSetBits {
		l[n/64] |= 1 << (n % 64)
	}
}

func (l *lenSet) has(n int) bool {
	return n >= lenSetBits || l[n/64]&(1<<(n%64)) != 0
}
