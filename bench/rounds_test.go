package bench

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// roundsScenario is three rounds of direct, snapgate, nginx and haproxy
// whose CPU and p99 differ per round, so that pairing runs of different
// rounds would give other ratios; haproxy's second round erred, and in
// nginx's third its core time shows another load on its CPU.
func roundsScenario() *Scenario {
	us := time.Microsecond
	run := func(target string, round int, cpu float64, p99 time.Duration) *RunResult {
		return &RunResult{Target: target, Label: target + " #" + string(rune('0'+round)), Round: round, CPUPerReqUS: cpu,
			CPUResolutionUS: 1, CoreCPUPerReqUS: cpu + 5, HeapAllocsPerReq: -1, RSSBytes: 8 << 20, Result: fixedResult("open", 5000, p99/4, p99, 25000)}
	}
	sc := &Scenario{Name: "steady-5000", Title: "Steady state at 5000 req/s"}
	for round, c := range []struct{ nginx, snap, ha float64 }{{100, 90, 110}, {80, 88, 90}, {120, 96, 100}} {
		r := round + 1
		sc.Runs = append(sc.Runs, run(TargetDirect, r, 40, 300*us), run(TargetSnapgate, r, c.snap, time.Duration(c.snap*20)*us),
			run(TargetNginx, r, c.nginx, time.Duration(c.nginx*20)*us), run(TargetHAProxy, r, c.ha, time.Duration(c.ha*20)*us))
	}
	sc.Runs[1].HeapAllocsPerReq, sc.Runs[5].HeapAllocsPerReq, sc.Runs[9].HeapAllocsPerReq = 1.02, 1.04, 1.01
	sc.Runs[7].Result.ErrorRate = 0.01 // haproxy #2
	sc.Runs[10].CoreCPUPerReqUS = 200  // nginx #3: 1.67× its CPU µs/req
	sc.Summary = sc.summarize()
	return sc
}

func TestSummarizePairsRunsOfOneRound(t *testing.T) {
	sc := roundsScenario()
	if len(sc.Summary) != 4 || sc.Summary[0].Target != TargetDirect || sc.Summary[1].Target != TargetSnapgate {
		t.Fatalf("summary targets: %+v", sc.Summary)
	}
	s := sc.Summary[1]
	near := func(name string, got *Spread, med, lo, hi float64, n int) {
		t.Helper()
		const eps = 1e-9
		if got == nil || got.N != n || got.Median-med > eps || med-got.Median > eps || got.Min-lo > eps || lo-got.Min > eps || got.Max-hi > eps || hi-got.Max > eps {
			t.Errorf("%s = %+v, want median %.4f (%.4f–%.4f) over %d", name, got, med, lo, hi, n)
		}
	}
	// Per round snapgate/nginx: 0.9, 1.1, and round 3 left out (nginx's
	// core over 1.25× its CPU).
	near("snapgate CPU ×nginx", s.CPUxNginx, 1.0, 0.9, 1.1, 2)
	near("snapgate p99 ×nginx", s.P99xNginx, 1.0, 0.9, 1.1, 2)
	// Core is CPU + 5 in the fixture: 95/105 and 93/85.
	near("snapgate core ×nginx", s.CorexNginx, (95.0/105+93.0/85)/2, 95.0/105, 93.0/85, 2)
	near("nginx CPU", sc.Summary[2].CPUPerReqUS, 90, 80, 100, 2)
	// haproxy's erred round 2 is left out: 90/110 and 96/100, an even count.
	near("snapgate CPU ×haproxy", s.CPUxHAProxy, (90.0/110+0.96)/2, 90.0/110, 0.96, 2)
	near("snapgate CPU", s.CPUPerReqUS, 90, 88, 96, 3)
	near("snapgate p99 µs", s.P99US, 1800, 1760, 1920, 3)
	if sc.Summary[2].CPUxNginx != nil || sc.Summary[3].CPUxHAProxy != nil {
		t.Errorf("a target's ratio to itself: %+v %+v", sc.Summary[2].CPUxNginx, sc.Summary[3].CPUxHAProxy)
	}
	near("haproxy CPU", sc.Summary[3].CPUPerReqUS, 105, 100, 110, 2)
}

func TestRoundsMarkdownAndPlot(t *testing.T) {
	sc := roundsScenario()
	var b strings.Builder
	sc.markdown(&b)
	md := b.String()
	for _, want := range []string{
		// Each row's ratios are to nginx of its own round.
		"| snapgate #2 | 5000 | 5000 | 440µs | 1.76ms | 3.52ms | 5.28ms | 0.008% (2) | 88.0 ±1.0 | 93.0 | 8.0 MiB | 5.87× | 5.87× | 2.20× | 1.10× | 1.10× | 1.09× |",
		"| snapgate #3 | 5000 | 5000 | 480µs | 1.92ms | 3.84ms | 5.76ms | 0.008% (2) | 96.0 ±1.0 | 101.0 | 8.0 MiB | 6.40× | 6.40× | 2.40× | 0.80× | 0.80× | 0.51× |",
		"Over 3 rounds (every target once per round, each round starting one target later;",
		"| snapgate | 3 | 90.0 (88.0–96.0) | 1.8ms (1.76ms–1.92ms) | 1.00× (0.90×–1.10×) | 1.00× (0.90×–1.09×) | 1.00× (0.90×–1.10×) | 0.89× (0.82×–0.96×) | 0.89× (0.83×–0.96×) | 0.89× (0.82×–0.96×) |",
		"or whose core µs/req is over 1.25× their CPU µs/req (another load on the proxy's CPU), left out with their pairs",
		"| haproxy | 2 | 105.0 (100.0–110.0) |",
		"over each run, in round order (all of its goroutines, one /metrics scrape included): 1.02, 1.04, 1.01.",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks\n%s\nin\n%s", want, md)
		}
	}
	// One line per target: the run with the median p99.
	got := []string{}
	for _, r := range sc.plotted() {
		got = append(got, r.Label)
	}
	if want := "direct #2 snapgate #1 nginx #1 haproxy #3"; strings.Join(got, " ") != want {
		t.Errorf("plotted %q, want %q", strings.Join(got, " "), want)
	}
}

func TestRoundsOption(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "snapgate")
	if err := os.WriteFile(bin, nil, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []int{-1, 101} {
		if _, err := (&Options{Bin: bin, Rounds: bad}).withDefaults(); err == nil || !strings.Contains(err.Error(), "rounds") {
			t.Errorf("rounds %d: %v, want an error naming rounds", bad, err)
		}
	}
	if d, err := (&Options{Bin: bin}).withDefaults(); err != nil || d.Rounds != 1 {
		t.Errorf("default rounds %d, %v; want 1", d.Rounds, err)
	}
}
