package routing

import (
	"math/rand/v2"
	"sync/atomic"

	"github.com/snapgate/snapgate/fbs"
)

// ctrl's health verdicts as carried by the snapshot (docs/health.md):
// unhealthy endpoints are skipped unless the cluster is in panic, and an
// endpoint that recovered within the cluster's slow-start window takes a
// growing share of its picks. Both are decided once per snapshot swap; the
// request path only reads the result.

// downEndpoints returns which endpoints must not be picked: those ctrl
// marked unhealthy, unless the cluster is in panic (then every endpoint
// is routable). nil when none is down.
func downEndpoints(cv fbs.ClusterView) []bool {
	if cv.Panic() {
		return nil
	}
	var down []bool
	for j := range cv.NumEndpoints() {
		if cv.EndpointUnhealthy(j) {
			if down == nil {
				down = make([]bool, cv.NumEndpoints())
			}
			down[j] = true
		}
	}
	return down
}

// minRampShare is the share a recovered endpoint starts with: it must see
// some traffic at once, or nothing would show that it really works.
const minRampShare = 10 // percent

// slowStart ramps endpoints that recovered recently up to their full share.
//
// Clocks: recovered_at_ms is ctrl's wall clock, elapsed time is measured
// on the edge's, so the two should be synchronised (NTP); a skew of s
// shifts the ramp by s. An edge behind ctrl sees a negative elapsed time
// and holds the endpoint at the minimum share; a start ahead of the edge's
// clock at swap is moved back to the swap, so a fast ctrl clock cannot
// stretch a ramp beyond one window after the snapshot arrived.
type slowStart struct {
	window int64   // milliseconds
	from   []int64 // per endpoint: ramp start, unix ms; 0 = not ramping
	until  int64   // the last ramp's end, unix ms
	// over is set by the first pick at or past until, so that picks stop
	// reading the clock once every ramp has ended.
	over atomic.Bool
}

// newSlowStart returns the ramps of cv's endpoints still in their window
// at now (unix ms), or nil if there are none.
func newSlowStart(cv fbs.ClusterView, now int64) *slowStart {
	window := int64(cv.SlowStartMs())
	if window == 0 {
		return nil
	}
	var r *slowStart
	for j := range cv.NumEndpoints() {
		at := int64(min(cv.EndpointRecoveredAtMs(j), 1<<62))
		if at == 0 {
			continue
		}
		at = min(at, now)
		if at+window <= now {
			continue
		}
		if r == nil {
			r = &slowStart{window: window, from: make([]int64, cv.NumEndpoints())}
		}
		r.from[j] = at
		r.until = max(r.until, at+window)
	}
	return r
}

// active reports whether any ramp may still run at now; false for nil.
func (r *slowStart) active(now int64) bool {
	if r == nil || r.over.Load() {
		return false
	}
	if now >= r.until {
		r.over.Store(true)
		return false
	}
	return true
}

// admit decides whether a pick of endpoint j stands at now: always for an
// endpoint not ramping, else with probability max(10%, elapsed/window).
// A refused pick passes the turn on (round robin: to the next turn, so the
// endpoint serves as if its weight were scaled by that probability). It does not allocate: the
// generator is the runtime's per-thread source.
func (r *slowStart) admit(j int, now int64) bool {
	from := r.from[j]
	if from == 0 {
		return true
	}
	elapsed := now - from
	if elapsed >= r.window {
		return true
	}
	return rand.Int64N(r.window) < max(elapsed, r.window*minRampShare/100)
}
