package routing

import (
	"math/rand/v2"
	"time"

	"github.com/cespare/xxhash/v2"

	"github.com/snapgate/snapgate/edge/upstream"
	"github.com/snapgate/snapgate/fbs"
)

// PickKey carries the request's hash key for LBHash clusters. The zero
// value means "no key": a hash cluster then balances round robin.
type PickKey struct {
	Hash uint64
	Set  bool
}

// KeyOf hashes a header value, cookie value or client address into a
// PickKey.
func KeyOf(b []byte) PickKey { return PickKey{Hash: xxhash.Sum64(b), Set: true} }

// HashOn says what a cluster's consistent hash is keyed on, so the proxy
// extracts just that from the request: Kind is fbs.HashOnHeader (Name is
// the lowercase header name), fbs.HashOnCookie (Name is the cookie name),
// fbs.HashOnSourceIP, or fbs.HashOnNone for clusters that do not hash.
type HashOn struct {
	Kind uint8
	Name []byte
}

// balancer is the per-cluster endpoint choice. Its state is atomics only:
// the request path takes no lock.
type balancer struct {
	lb     uint8
	hashOn HashOn
	// Weighted round robin: turn c is order[c mod total], one cycle of
	// the smooth order listed at swap; for clusters too large to list,
	// the endpoint whose cumulative weight range holds position
	// c·stride mod cycle.
	order   []uint16
	weights []uint32    // cumulative weights (divided by their gcd)
	total   uint64      // sum of weights (divided by their gcd)
	cycle   uint64      // counter values per cycle: total, or the prime at or above it
	stride  uint64      // about cycle/phi
	ring    *maglevRing // for hash
}

// goldenRatio is 1/phi; a stride of cycle/phi spreads consecutive counter
// values evenly over the weight space (the three-distance theorem).
const goldenRatio = 0.6180339887498949

// maxOrderWork bounds the steps of listing a smooth order at swap
// (endpoints × weight sum): about a millisecond, like a Maglev table.
const maxOrderWork = 1 << 20

func newBalancer(cv fbs.ClusterView) balancer {
	b := balancer{lb: cv.LB(), hashOn: HashOn{Kind: cv.HashOn(), Name: cv.HashOnName()}}
	n := cv.NumEndpoints()
	switch b.lb {
	case fbs.LBWeightedRoundRobin:
		ws := make([]uint64, n)
		var g uint64
		for j := range ws {
			ws[j] = uint64(cv.EndpointWeight(j))
			g = gcd(g, ws[j])
		}
		b.weights = make([]uint32, n)
		for j := range ws {
			ws[j] /= g
			b.total += ws[j]
			b.weights[j] = uint32(b.total)
		}
		if b.total*uint64(n) <= maxOrderWork {
			b.order = smoothOrder(ws, b.total)
			b.cycle = b.total
			break
		}
		b.cycle = primeAtLeast(b.total)
		b.stride = min(max(uint64(float64(b.cycle)*goldenRatio+0.5), 1), b.cycle-1)
	case fbs.LBHash:
		b.ring = ringFor(cv)
	}
	return b
}

// smoothOrder lists one cycle of nginx's smooth weighted round robin: on
// every turn each endpoint's credit grows by its weight, and the endpoint
// with the most credit (the first on a tie) takes the turn and pays the
// weight sum. Each endpoint gets exactly its weight per cycle, spread
// out: equal weights alternate, and 5:1:1 goes AABACAA.
func smoothOrder(ws []uint64, total uint64) []uint16 {
	order := make([]uint16, total)
	credit := make([]int64, len(ws))
	for t := range order {
		best := 0
		for j, w := range ws {
			credit[j] += int64(w)
			if credit[j] > credit[best] {
				best = j
			}
		}
		credit[best] -= int64(total)
		order[t] = uint16(best)
	}
	return order
}

func gcd(a, b uint64) uint64 {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

// primeAtLeast returns the smallest prime at or above n (at least 2).
// Without a listed order, positions are taken modulo it rather than
// modulo the weight sum: a prime is coprime with every stride, so the
// stride can be the golden one, where a sum may have no coprime stride
// near it (6 has only 1 and 5: weights 3:3 went AAABBB). The positions
// from the sum up to the prime are gaps, turns nobody takes. Called at
// swap; sums are at most 1024 × 1000, where primes are at most 114 apart.
func primeAtLeast(n uint64) uint64 {
	for p := max(n, 2); ; p++ {
		prime := true
		for d := uint64(2); d*d <= p; d++ {
			if p%d == 0 {
				prime = false
				break
			}
		}
		if prime {
			return p
		}
	}
}

// pick chooses an endpoint of cs not in avoid (nil for none) that is
// neither marked unhealthy by ctrl (outside panic) nor ejected locally;
// false when every candidate is excluded. Endpoints in slow start may be
// passed over for others (slowStart.admit), except by consistent hashing,
// which keeps a key on its endpoint.
//
// Local ejection only steers a request's first attempt away while an
// endpoint that is not ejected is left: when every endpoint ctrl lets it
// use is ejected here, the policy picks among them as if none were, as
// Envoy's panic mode routes to every host and nginx clears its failure
// marks once every server of a group has failed. Otherwise one slow
// request on a route with a short timeout, to a cluster's only routable
// endpoint, or a blip that failed each endpoint once, would be up to 30 s
// of 503s for every route to the cluster. A retry never goes to an
// ejected endpoint: the failed attempt's own answer stands instead
// (retryPlan.take in package proxy).
//
// The fallback is decided before drawing: a pass that finds nothing would
// still advance the shared round-robin counter by up to maxTurnDraws, and
// with that step a multiple of the endpoint count every first attempt
// would land on one endpoint.
func (cs *clusterState) pick(key PickKey, avoid *Tried) (*upstream.Pool, bool) {
	first := avoid == nil || avoid.n == 0
	if first && !cs.anyUsable(exclude{ejected: true}) {
		return cs.choose(key, exclude{})
	}
	if p, ok := cs.choose(key, exclude{avoid: avoid, ejected: true}); ok || !first {
		return p, ok
	}
	return cs.choose(key, exclude{}) // the last one was ejected since the check
}

// exclude is what a pick skips besides the endpoints ctrl marked
// unhealthy: those a retrying request failed on, and, when ejected is
// set, those ejected on this edge.
type exclude struct {
	avoid   *Tried
	ejected bool
}

// choose is pick's pass with ex.
func (cs *clusterState) choose(key PickKey, ex exclude) (*upstream.Pool, bool) {
	pools := cs.pools
	n := len(pools)
	if n == 0 {
		return nil, false
	}
	b := &cs.bal
	if b.lb == fbs.LBHash && key.Set {
		ring := b.ring.table
		start := int(key.Hash % uint64(len(ring)))
		// Walking on along the table visits endpoints in a key-specific
		// order, so the keys of an excluded endpoint spread over the others
		// instead of all landing on one neighbour.
		for i := 0; i < len(ring); i++ {
			j := int(ring[(start+i)%len(ring)])
			if cs.usable(j, ex) {
				return pools[j], true
			}
			if i == n && !cs.anyUsable(ex) {
				return nil, false
			}
		}
		return nil, false
	}
	// The clock is read only while some endpoint of the cluster ramps up.
	var now int64
	ramp := cs.ramp
	if ramp != nil {
		if now = time.Now().UnixMilli(); !ramp.active(now) {
			ramp = nil
		}
	}
	if b.lb == fbs.LBLeastRequest && n > 1 {
		i := rand.IntN(n)
		j := rand.IntN(n - 1)
		if j >= i {
			j++
		}
		aOK := cs.usable(i, ex) && (ramp == nil || ramp.admit(i, now))
		cOK := cs.usable(j, ex) && (ramp == nil || ramp.admit(j, now))
		a, c := pools[i], pools[j]
		switch {
		case aOK && cOK:
			if c.InFlight() < a.InFlight() {
				return c, true
			}
			return a, true
		case aOK:
			return a, true
		case cOK:
			return c, true
		}
		return cs.leastLoaded(ex)
	}
	return cs.roundRobin(ex, ramp, now)
}

// roundRobin draws counter values until one lands on a usable endpoint
// that ramp admits. An excluded endpoint's turn thus goes to whichever
// endpoint's turn comes next in the cycle, and every usable turn serves
// one request: the usable endpoints share requests in proportion to their
// weights, instead of an excluded endpoint's share all going to its
// neighbour in list order. After a cycle's worth of draws (at most
// maxTurnDraws) it falls back to a weighted draw among the usable
// endpoints (spreadUsable).
func (cs *clusterState) roundRobin(ex exclude, ramp *slowStart, now int64) (*upstream.Pool, bool) {
	draws := uint64(len(cs.pools))
	if cs.bal.lb == fbs.LBWeightedRoundRobin {
		draws = cs.bal.cycle
	}
	for range min(draws, maxTurnDraws) {
		k := cs.turn(cs.next.Add(1) - 1)
		if k >= 0 && cs.usable(k, ex) && (ramp == nil || ramp.admit(k, now)) {
			return cs.pools[k], true
		}
	}
	return cs.spreadUsable(ex, ramp, now)
}

// spreadUsable draws a usable endpoint at random in proportion to its
// weight (1 unless weighted round robin): the fallback when the turns in
// a row all fell on excluded endpoints, as they do behind a heavy
// endpoint's long run of turns or a block of endpoints that are down. A
// scan from the last turn, which it replaces, gave all those requests to
// the next usable endpoint in list order (with the 1000 of 1000:1:1
// ejected, one of the two equal endpoints took 16 times the other's
// share). If ramp refuses the drawn endpoint, the next admitted one in
// list order takes it.
func (cs *clusterState) spreadUsable(ex exclude, ramp *slowStart, now int64) (*upstream.Pool, bool) {
	var total uint64
	for j := range cs.pools {
		if cs.usable(j, ex) {
			total += cs.weight(j)
		}
	}
	if total == 0 {
		return nil, false
	}
	r := rand.Uint64N(total)
	for j := range cs.pools {
		if !cs.usable(j, ex) {
			continue
		}
		if w := cs.weight(j); r >= w {
			r -= w
			continue
		}
		if ramp == nil || ramp.admit(j, now) {
			return cs.pools[j], true
		}
		return cs.firstUsable(j, ex, ramp, now)
	}
	// An endpoint was ejected between the two passes.
	return cs.firstUsable(0, ex, ramp, now)
}

// weight is endpoint j's share of turns: its weight divided by the gcd of
// the cluster's weights for weighted round robin, 1 otherwise.
func (cs *clusterState) weight(j int) uint64 {
	w := cs.bal.weights
	switch {
	case w == nil:
		return 1
	case j == 0:
		return uint64(w[0])
	}
	return uint64(w[j] - w[j-1])
}

// maxTurnDraws bounds the atomic counter steps one pick may take when many
// turns in a row belong to excluded endpoints.
const maxTurnDraws = 64

// turn is the endpoint whose turn counter value c is: c mod n, or for
// weighted round robin its place in the smooth order, or the endpoint
// whose cumulative weight range holds c's position on the golden-ratio
// stride; -1 for a position in the gap between the weight sum and the
// cycle.
func (cs *clusterState) turn(c uint64) int {
	b := &cs.bal
	if b.lb != fbs.LBWeightedRoundRobin {
		return int(c % uint64(len(cs.pools)))
	}
	if b.order != nil {
		return int(b.order[c%b.total])
	}
	pos := (c % b.cycle) * b.stride % b.cycle
	if pos >= b.total {
		return -1
	}
	// A loop, not sort.Search, whose closure could escape.
	lo, hi := 0, len(cs.pools)-1
	for lo < hi {
		mid := int(uint(lo+hi) >> 1)
		if uint64(b.weights[mid]) > pos {
			hi = mid
		} else {
			lo = mid + 1
		}
	}
	return lo
}

// usable reports whether endpoint j may take a request: not down by
// ctrl's verdict and not excluded by ex.
func (cs *clusterState) usable(j int, ex exclude) bool {
	p := cs.pools[j]
	return !ex.avoid.has(p) && (cs.down == nil || !cs.down[j]) && (!ex.ejected || p.Healthy())
}

// Tried is the set of endpoints a request already failed on, which its
// retries skip (Balance). It holds as many as a request makes attempts.
type Tried struct {
	pools [fbs.MaxRetryAttempts + 1]*upstream.Pool
	n     int
}

// Add records p; past capacity (more attempts than a route may make) it
// is dropped.
func (t *Tried) Add(p *upstream.Pool) {
	if t.n < len(t.pools) {
		t.pools[t.n] = p
		t.n++
	}
}

// has reports whether p was tried; a nil *Tried holds nothing.
func (t *Tried) has(p *upstream.Pool) bool {
	if t == nil {
		return false
	}
	for _, q := range t.pools[:t.n] {
		if q == p {
			return true
		}
	}
	return false
}

// firstUsable returns the first usable endpoint from index j on
// (wrapping) that ramp admits; if ramp refuses every usable one, the
// first of those, since a ramping endpoint beats none.
func (cs *clusterState) firstUsable(j int, ex exclude, ramp *slowStart, now int64) (*upstream.Pool, bool) {
	n := len(cs.pools)
	refused := -1
	for i := range n {
		k := (j + i) % n
		if !cs.usable(k, ex) {
			continue
		}
		if ramp == nil || ramp.admit(k, now) {
			return cs.pools[k], true
		}
		if refused < 0 {
			refused = k
		}
	}
	if refused >= 0 {
		return cs.pools[refused], true
	}
	return nil, false
}

func (cs *clusterState) anyUsable(ex exclude) bool {
	for j := range cs.pools {
		if cs.usable(j, ex) {
			return true
		}
	}
	return false
}

// leastLoaded scans for the usable endpoint with the fewest requests in
// flight; the fallback when both power-of-two choices are unusable.
func (cs *clusterState) leastLoaded(ex exclude) (*upstream.Pool, bool) {
	var best *upstream.Pool
	for j, p := range cs.pools {
		if cs.usable(j, ex) && (best == nil || p.InFlight() < best.InFlight()) {
			best = p
		}
	}
	return best, best != nil
}
