package health

import "time"

// gate spaces publications at least interval apart, so any window of one
// second holds at most MaxVersionsPerSecond of them whatever the flap rate.
// Changes that arrive in between are coalesced by the caller into the next
// publication. It is pure: callers pass the time.
type gate struct {
	interval time.Duration
	last     time.Time
	fired    bool
}

// next reports whether a publication may happen at now, and if not, when.
func (g *gate) next(now time.Time) (ok bool, at time.Time) {
	if !g.fired {
		return true, time.Time{}
	}
	at = g.last.Add(g.interval)
	if now.Before(at) {
		return false, at
	}
	return true, time.Time{}
}

// fire records a publication at now.
func (g *gate) fire(now time.Time) {
	g.last, g.fired = now, true
}
