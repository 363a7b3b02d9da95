package health

import (
	"fmt"
	"time"

	"github.com/snapgate/snapgate/ctrl/model"
)

// params is a cluster's damping configuration in the units damper uses.
type params struct {
	unhealthyAfter uint32 // N consecutive failures
	healthyAfter   uint32 // M consecutive successes
	minHold        time.Duration
	// passiveExpiry is zero when an active probe runs: then only
	// observed successes bring an endpoint back.
	passiveExpiry time.Duration
}

func paramsOf(hc model.HealthCheck) params {
	return params{
		unhealthyAfter: hc.UnhealthyThreshold,
		healthyAfter:   hc.HealthyThreshold,
		minHold:        time.Duration(hc.MinHoldMs) * time.Millisecond,
		passiveExpiry:  time.Duration(hc.PassiveExpiryMs) * time.Millisecond,
	}
}

// damper is one endpoint's health state machine. It is pure: callers pass
// the time, so the rules are testable without clocks or goroutines.
//
// Every accepted observation, whatever its source, extends one streak of
// successes or failures. N consecutive failures turn a healthy endpoint
// unhealthy, M consecutive successes turn an unhealthy one healthy, and no
// transition happens within minHold of the previous one: a threshold met
// during the hold takes effect when the hold ends if the streak still
// stands then. Without an active probe an unhealthy endpoint also turns
// healthy once passiveExpiry passed since its last failure.
type damper struct {
	healthy     bool
	since       time.Time // when the current state began
	recoveredAt time.Time // the last unhealthy -> healthy transition; zero if none
	okStreak    uint32
	failStreak  uint32
	lastFailAt  time.Time
	reason      string // why the endpoint is in its current state
	last        string // the last accepted observation, for reasons
}

// newDamper starts an endpoint healthy, so a new cluster serves at once;
// failures take it out after N observations like any other.
func newDamper(now time.Time) damper {
	return damper{healthy: true, since: now, reason: "new endpoint: healthy until observed otherwise"}
}

// record adds one accepted observation (described by what, for reasons) to
// the streaks.
func (d *damper) record(ok bool, what string, now time.Time) {
	d.last = what
	if ok {
		d.okStreak++
		d.failStreak = 0
		return
	}
	d.failStreak++
	d.okStreak = 0
	d.lastFailAt = now
}

// settle applies the transition rules at now. It reports whether the state
// changed and, if a transition is waiting for the hold or for passive
// expiry, when to settle again (zero otherwise).
func (d *damper) settle(p params, now time.Time) (changed bool, wakeAt time.Time) {
	holdEnd := d.since.Add(p.minHold)
	switch {
	case d.healthy && d.failStreak >= p.unhealthyAfter:
		if now.Before(holdEnd) {
			return false, holdEnd
		}
		d.to(false, now, fmt.Sprintf("%d consecutive failures reached unhealthy_threshold %d; last: %s", d.failStreak, p.unhealthyAfter, d.last))
		changed = true
	case !d.healthy && d.okStreak >= p.healthyAfter:
		if now.Before(holdEnd) {
			return false, holdEnd
		}
		d.to(true, now, fmt.Sprintf("%d consecutive successes reached healthy_threshold %d; last: %s", d.okStreak, p.healthyAfter, d.last))
		return true, time.Time{}
	}
	if d.healthy || p.passiveExpiry == 0 {
		return changed, time.Time{}
	}
	expireAt := d.lastFailAt.Add(p.passiveExpiry)
	if holdEnd := d.since.Add(p.minHold); holdEnd.After(expireAt) {
		expireAt = holdEnd
	}
	if now.Before(expireAt) {
		return changed, expireAt
	}
	d.failStreak = 0
	d.to(true, now, fmt.Sprintf("no failure reported for passive_expiry_ms (%v) and no active probe to wait for", p.passiveExpiry))
	return true, time.Time{}
}

func (d *damper) to(healthy bool, now time.Time, reason string) {
	d.healthy = healthy
	d.since = now
	d.reason = reason
	if healthy {
		d.recoveredAt = now
	}
}
