package health

import (
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)

func ms(n int) time.Duration { return time.Duration(n) * time.Millisecond }

// step is one line of a damper transcript: at offset `at`, record ok (or
// only settle when tick), then expect the state, whether it changed and
// when the damper wants to be woken (-1 = not at all).
type step struct {
	at      int // ms
	tick    bool
	ok      bool
	healthy bool
	changed bool
	wake    int // ms, -1 none
}

func runTranscript(t *testing.T, p params, steps []step) *damper {
	t.Helper()
	d := newDamper(t0)
	for i, s := range steps {
		now := t0.Add(ms(s.at))
		if !s.tick {
			d.record(s.ok, "test", now)
		}
		changed, wake := d.settle(p, now)
		wantWake := time.Time{}
		if s.wake >= 0 {
			wantWake = t0.Add(ms(s.wake))
		}
		if d.healthy != s.healthy || changed != s.changed || !wake.Equal(wantWake) {
			t.Fatalf("step %d (%+v): healthy=%v changed=%v wake=%v; want %v %v %v (reason %q)",
				i, s, d.healthy, changed, wake, s.healthy, s.changed, wantWake, d.reason)
		}
	}
	return &d
}

func TestDamperThresholds(t *testing.T) {
	p := params{unhealthyAfter: 3, healthyAfter: 2}
	d := runTranscript(t, p, []step{
		{at: 0, ok: false, healthy: true, wake: -1},
		{at: 1, ok: false, healthy: true, wake: -1},
		{at: 2, ok: true, healthy: true, wake: -1}, // a success breaks the failure streak
		{at: 3, ok: false, healthy: true, wake: -1},
		{at: 4, ok: false, healthy: true, wake: -1},
		{at: 5, ok: false, healthy: false, changed: true, wake: -1}, // third in a row
		{at: 6, ok: false, healthy: false, wake: -1},
		{at: 7, ok: true, healthy: false, wake: -1},
		{at: 8, ok: false, healthy: false, wake: -1}, // breaks the success streak
		{at: 9, ok: true, healthy: false, wake: -1},
		{at: 10, ok: true, healthy: true, changed: true, wake: -1},
	})
	if !d.recoveredAt.Equal(t0.Add(ms(10))) || !d.since.Equal(t0.Add(ms(10))) {
		t.Fatalf("recoveredAt %v since %v, want both at 10ms", d.recoveredAt, d.since)
	}
	if !strings.Contains(d.reason, "2 consecutive successes reached healthy_threshold 2") {
		t.Fatalf("reason %q", d.reason)
	}
}

func TestDamperHold(t *testing.T) {
	p := params{unhealthyAfter: 1, healthyAfter: 1, minHold: ms(1000)}
	runTranscript(t, p, []step{
		// The endpoint started at 0: the first failure waits for the hold.
		{at: 100, ok: false, healthy: true, wake: 1000},
		{at: 999, tick: true, healthy: true, wake: 1000},
		{at: 1000, tick: true, healthy: false, changed: true, wake: -1},
		// A success during the next hold is held back ...
		{at: 1500, ok: true, healthy: false, wake: 2000},
		// ... and dropped when a failure contradicts it before the hold ends.
		{at: 1600, ok: false, healthy: false, wake: -1},
		{at: 2000, tick: true, healthy: false, wake: -1},
		{at: 2100, ok: true, healthy: true, changed: true, wake: -1},
	})
}

func TestDamperPassiveExpiry(t *testing.T) {
	p := params{unhealthyAfter: 2, healthyAfter: 2, passiveExpiry: ms(5000), minHold: ms(100)}
	d := runTranscript(t, p, []step{
		{at: 200, ok: false, healthy: true, wake: -1},
		{at: 300, ok: false, healthy: false, changed: true, wake: 5300},
		{at: 4000, ok: false, healthy: false, wake: 9000}, // a later failure postpones the expiry
		{at: 8999, tick: true, healthy: false, wake: 9000},
		{at: 9000, tick: true, healthy: true, changed: true, wake: -1},
		{at: 9100, ok: false, healthy: true, wake: -1}, // the failure streak starts over
	})
	if !strings.Contains(d.reason, "passive_expiry_ms") {
		t.Fatalf("reason %q", d.reason)
	}
}

func TestGate(t *testing.T) {
	g := gate{interval: ms(200)}
	if ok, _ := g.next(t0); !ok {
		t.Fatal("a fresh gate is closed")
	}
	g.fire(t0)
	if ok, at := g.next(t0.Add(ms(199))); ok || !at.Equal(t0.Add(ms(200))) {
		t.Fatalf("next at 199ms = %v %v, want closed until 200ms", ok, at)
	}
	if ok, _ := g.next(t0.Add(ms(200))); !ok {
		t.Fatal("gate closed at 200ms")
	}
}
