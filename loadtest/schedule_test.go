package loadtest

import (
	"math"
	"strings"
	"testing"
	"time"
)

func TestParseSchedule(t *testing.T) {
	for _, tc := range []struct {
		in     string
		want   Schedule
		str    string
		length time.Duration
	}{
		{"max", Schedule{Closed: true}, "max", 0},
		{"1000", Schedule{Stages: []Stage{{1000, 1000, 0}}}, "1000", 0},
		{" 2.5 ", Schedule{Stages: []Stage{{2.5, 2.5, 0}}}, "2.5", 0},
		{"1000:5s,2000:5s", Schedule{Stages: []Stage{{1000, 1000, 5 * time.Second}, {2000, 2000, 5 * time.Second}}}, "1000:5s,2000:5s", 10 * time.Second},
		{"100-1000:10s,1000", Schedule{Stages: []Stage{{100, 1000, 10 * time.Second}, {1000, 1000, 0}}}, "100-1000:10s,1000", 0},
		{"0:1s,500:500ms", Schedule{Stages: []Stage{{0, 0, time.Second}, {500, 500, 500 * time.Millisecond}}}, "0:1s,500:500ms", 1500 * time.Millisecond},
	} {
		got, err := ParseSchedule(tc.in)
		if err != nil {
			t.Errorf("ParseSchedule(%q): %v", tc.in, err)
			continue
		}
		if got.Closed != tc.want.Closed || len(got.Stages) != len(tc.want.Stages) {
			t.Errorf("ParseSchedule(%q) = %+v, want %+v", tc.in, got, tc.want)
			continue
		}
		for i := range got.Stages {
			if got.Stages[i] != tc.want.Stages[i] {
				t.Errorf("ParseSchedule(%q) stage %d = %+v, want %+v", tc.in, i, got.Stages[i], tc.want.Stages[i])
			}
		}
		if s := got.String(); s != tc.str {
			t.Errorf("ParseSchedule(%q).String() = %q, want %q", tc.in, s, tc.str)
		}
		if l := got.Length(); l != tc.length {
			t.Errorf("ParseSchedule(%q).Length() = %v, want %v", tc.in, l, tc.length)
		}
	}
}

func TestParseScheduleErrors(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", "empty"},
		{"fast", `rate "fast": not a number`},
		{"-5", "missing rate"},
		{"1e9", "want 0 to 1e+07"},
		{"NaN", "want 0 to"},
		{"1000:5x", `duration "5x"`},
		{"1000:0s", "must be positive"},
		{"1000:-1s", "must be positive"},
		{"1000,2000:5s", "missing duration"},
		{"100-1000", "a ramp needs a duration"},
		{"100-:1s", "missing rate"},
		{"0", "nothing would be sent"},
		{"0:1s,0:2s", "nothing would be sent"},
		{"1000:5s,,2000", "stage 2"},
		{"max,1000", `stage 1 "max"`},
		{"max:1s", `rate "max": not a number`},
	} {
		_, err := ParseSchedule(tc.in)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseSchedule(%q) error = %v, want it to contain %q", tc.in, err, tc.want)
		}
	}
}

func TestPlanSlots(t *testing.T) {
	mustPlan := func(s string, warmup, length time.Duration) plan {
		t.Helper()
		sch, err := ParseSchedule(s)
		if err != nil {
			t.Fatal(err)
		}
		return newPlan(sch, warmup, length)
	}
	near := func(name string, got, want time.Duration) {
		t.Helper()
		if d := got - want; d < -time.Microsecond || d > time.Microsecond {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}

	p := mustPlan("1000", 0, time.Second)
	if n := p.slots(p.total); n != 1000 {
		t.Errorf("constant 1000/s over 1s: %d slots, want 1000", n)
	}
	near("constant slot 0", p.at(0), 0)
	near("constant slot 250", p.at(250), 250*time.Millisecond)
	near("constant slot 999", p.at(999), 999*time.Millisecond)

	// Steps: 100/s for 1s, then 1000/s; slot 100 starts the second step.
	p = mustPlan("100:1s,1000:1s", 0, 2*time.Second)
	if n := p.slots(p.total); n != 1100 {
		t.Errorf("steps: %d slots, want 1100", n)
	}
	near("step slot 99", p.at(99), 990*time.Millisecond)
	near("step slot 100", p.at(100), time.Second)
	near("step slot 600", p.at(600), 1500*time.Millisecond)

	// Ramp 0→1000 over 1 s: count(t) = 500 t², so slot k is due at √(k/500).
	p = mustPlan("0-1000:1s", 0, time.Second)
	if n := p.slots(p.total); n != 500 {
		t.Errorf("ramp: %d slots, want 500", n)
	}
	for _, k := range []int64{0, 1, 125, 499} {
		near("ramp slot", p.at(k), time.Duration(math.Sqrt(float64(k)/500)*1e9))
	}

	// Longer than the schedule: the last rate is held. Shorter: cut.
	p = mustPlan("100:1s,200:1s", 0, 3*time.Second)
	if n := p.slots(p.total); n != 500 {
		t.Errorf("held: %d slots, want 500", n)
	}
	p = mustPlan("0-1000:2s", 0, time.Second)
	if n := p.slots(p.total); n != 250 {
		t.Errorf("cut ramp: %d slots, want 250", n)
	}

	// Warmup runs at the starting rate ahead of the schedule.
	p = mustPlan("200:1s", 500*time.Millisecond, time.Second)
	if w, n := p.slots(0.5), p.slots(p.total); w != 100 || n != 300 {
		t.Errorf("warmup: %d warmup slots of %d, want 100 of 300", w, n)
	}
	near("first measured slot", p.at(100), 500*time.Millisecond)

	// A pause stage sends nothing; slots resume after it.
	p = mustPlan("0:1s,10:1s", 0, 2*time.Second)
	near("after pause", p.at(0), time.Second)
	if r := p.rateAt(0.5); r != 0 {
		t.Errorf("rate during pause = %v", r)
	}
	if r := p.rateAt(1.5); r != 10 {
		t.Errorf("rate after pause = %v", r)
	}

	// Slot times never go backwards.
	p = mustPlan("10-5000:300ms,5000:100ms,100-1:200ms", 0, 600*time.Millisecond)
	prev := time.Duration(-1)
	for k := int64(0); k < p.slots(p.total); k++ {
		at := p.at(k)
		if at < prev || at > time.Duration(p.total*1e9) {
			t.Fatalf("slot %d at %v after %v (total %v)", k, at, prev, p.total)
		}
		prev = at
	}
}

func BenchmarkPlanAt(b *testing.B) {
	sch, _ := ParseSchedule("100-1000:10s,1000:10s,2000:10s")
	p := newPlan(sch, time.Second, 30*time.Second)
	n := p.slots(p.total)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		p.at(int64(i) % n)
	}
}
