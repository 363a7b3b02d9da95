package loadtest

import (
	"strings"
	"testing"
	"time"
)

func TestParseSLO(t *testing.T) {
	slo, err := ParseSLO("p99=2ms, p999=10ms,p99.99=20ms,p50=500us,max=1s,errors=0.1%")
	if err != nil {
		t.Fatal(err)
	}
	want := []Objective{
		{Name: "p99", Quantile: 0.99, MaxLatency: 2 * time.Millisecond},
		{Name: "p999", Quantile: 0.999, MaxLatency: 10 * time.Millisecond},
		{Name: "p99.99", Quantile: 0.9999, MaxLatency: 20 * time.Millisecond},
		{Name: "p50", Quantile: 0.5, MaxLatency: 500 * time.Microsecond},
		{Name: "max", Quantile: 1, MaxLatency: time.Second},
		{Name: "errors", Errors: true, MaxErrorRate: 0.001},
	}
	if len(slo.Objectives) != len(want) {
		t.Fatalf("got %+v", slo.Objectives)
	}
	for i, o := range slo.Objectives {
		w := want[i]
		if o.Name != w.Name || o.Errors != w.Errors || o.MaxLatency != w.MaxLatency ||
			abs(o.Quantile-w.Quantile) > 1e-12 || abs(o.MaxErrorRate-w.MaxErrorRate) > 1e-12 {
			t.Errorf("objective %d = %+v, want %+v", i, o, w)
		}
	}
	if s := slo.String(); s != "p99=2ms,p999=10ms,p99.99=20ms,p50=500µs,max=1s,errors=0.1%" {
		t.Errorf("String() = %q", s)
	}
	again, err := ParseSLO(slo.String())
	if err != nil || again.String() != slo.String() {
		t.Errorf("round trip: %v %v", again, err)
	}
}

func abs(f float64) float64 {
	if f < 0 {
		return -f
	}
	return f
}

func TestParseSLOErrors(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", "empty"},
		{"p99", "want key=value"},
		{"p99=", "want key=value"},
		{"=2ms", "want key=value"},
		{"p99=2ms,,errors=1%", "want key=value"},
		{"p99=fast", "want a duration"},
		{"p99=2", "want a duration"},
		{"p99=0s", "must be positive"},
		{"p99=-1ms", "must be positive"},
		{"p9=1ms", "at least two digits"},
		{"p100=1ms", "use max"},
		{"p1000=1ms", "use max"},
		{"p=1ms", "at least two digits"},
		{"p9x=1ms", "want digits"},
		{"p99..9=1ms", "at least two digits"},
		{"p99.=1ms", "at least two digits"},
		{"p00=1ms", "above 0 and below 100"},
		{"p100.0=1ms", "below 100"},
		{"latency=1ms", "unknown"},
		{"P99=1ms", "unknown"},
		{"errors=1", "percentage"},
		{"errors=x%", "0% to 100%"},
		{"errors=101%", "0% to 100%"},
		{"errors=-1%", "0% to 100%"},
		{"p999=1ms,p99.9=2ms", "bound the same thing"},
		{"errors=1%,errors=2%", "bound the same thing"},
	} {
		_, err := ParseSLO(tc.in)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseSLO(%q) error = %v, want it to contain %q", tc.in, err, tc.want)
		}
	}
}

func FuzzParseSLO(f *testing.F) {
	for _, s := range []string{"p99=2ms,p999=10ms,errors=0.1%", "max=1s", "p99.99=1us", "errors=100%", "p1=", "=,="} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		slo, err := ParseSLO(s)
		if err != nil {
			return
		}
		// Whatever parses must print back into the same objectives.
		again, err := ParseSLO(slo.String())
		if err != nil || again.String() != slo.String() {
			t.Fatalf("%q → %q → %v, %v", s, slo.String(), again, err)
		}
		for _, o := range slo.Objectives {
			if !o.Errors && (o.Quantile <= 0 || o.Quantile > 1 || o.MaxLatency <= 0) {
				t.Fatalf("%q: bad objective %+v", s, o)
			}
		}
	})
}

func FuzzParseSchedule(f *testing.F) {
	for _, s := range []string{"max", "1000", "1000:5s,2000:5s", "100-1000:10s,1000", "0:1s,5:1s", "1e3:1ms"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		sch, err := ParseSchedule(s)
		if err != nil {
			return
		}
		again, err := ParseSchedule(sch.String())
		if err != nil || again.String() != sch.String() {
			t.Fatalf("%q → %q → %v, %v", s, sch.String(), again, err)
		}
		if sch.Closed {
			return
		}
		// Lay it out over a short run and check the slots stay ordered and
		// inside the run.
		p := newPlan(sch, 10*time.Millisecond, 100*time.Millisecond)
		n := min(p.slots(p.total), 2000)
		prev := time.Duration(-1)
		for k := int64(0); k < n; k++ {
			at := p.at(k)
			if at < prev || at > 110*time.Millisecond {
				t.Fatalf("%q: slot %d at %v after %v", s, k, at, prev)
			}
			prev = at
		}
	})
}
