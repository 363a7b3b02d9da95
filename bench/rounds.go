package bench

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Spread is a figure over a scenario's rounds: its median, smallest and
// largest value, and how many rounds gave one.
type Spread struct {
	Median float64 `json:"median"`
	Min    float64 `json:"min"`
	Max    float64 `json:"max"`
	N      int     `json:"n"`
}

// spreadOf is the Spread of v; the median of an even count is the mean of
// the middle two. ok is false for no values.
func spreadOf(v []float64) (Spread, bool) {
	if len(v) == 0 {
		return Spread{}, false
	}
	v = slices.Sorted(slices.Values(v))
	n := len(v)
	med := v[n/2]
	if n%2 == 0 {
		med = (v[n/2-1] + v[n/2]) / 2
	}
	return Spread{Median: med, Min: v[0], Max: v[n-1], N: n}, true
}

// Summary is one target's figures over a scenario's rounds. A ratio pairs
// the target's run with the peer's run of the same round, and only rounds
// where neither run is left out (leftOut) count; a nil ratio had no such
// round, or the target is the peer.
type Summary struct {
	Target       string  `json:"target"`
	CPUPerReqUS  *Spread `json:"cpu_us_per_request,omitempty"`
	P99US        *Spread `json:"p99_us,omitempty"`
	CPUxNginx    *Spread `json:"cpu_x_nginx,omitempty"`
	CorexNginx   *Spread `json:"core_x_nginx,omitempty"`
	P99xNginx    *Spread `json:"p99_x_nginx,omitempty"`
	CPUxHAProxy  *Spread `json:"cpu_x_haproxy,omitempty"`
	CorexHAProxy *Spread `json:"core_x_haproxy,omitempty"`
	P99xHAProxy  *Spread `json:"p99_x_haproxy,omitempty"`
}

// maxCoreOverCPU bounds a run's core µs/req against its CPU µs/req. The
// interrupt work of waking the proxy, which no process is charged for,
// adds 10-15 % here; more means something else ran on the proxy's CPU,
// and that run's figures compare it with a disturbed neighbour.
const maxCoreOverCPU = 1.25

// leftOut reports whether r stays out of the summary: it had errors, or
// its core time shows another load on the proxy's CPU.
func leftOut(r *RunResult) bool {
	return erred(r) || (r.CPUPerReqUS > 0 && r.CoreCPUPerReqUS > maxCoreOverCPU*r.CPUPerReqUS)
}

// byTarget groups runs by target, the targets in the order they first ran.
func byTarget(runs []*RunResult) (targets []string, of map[string][]*RunResult) {
	of = map[string][]*RunResult{}
	for _, r := range runs {
		if of[r.Target] == nil {
			targets = append(targets, r.Target)
		}
		of[r.Target] = append(of[r.Target], r)
	}
	return targets, of
}

// summarize gives each target of sc, in the order they ran, its Summary.
func (sc *Scenario) summarize() []Summary {
	targets, of := byTarget(sc.Runs)
	cpu := func(r *RunResult) float64 { return r.CPUPerReqUS }
	core := func(r *RunResult) float64 { return r.CoreCPUPerReqUS }
	p99 := func(r *RunResult) float64 { return float64(r.Result.Latency.P99) / float64(time.Microsecond) }
	spread := func(target, peer string, f func(*RunResult) float64) *Spread {
		var v []float64
		for _, r := range of[target] {
			if leftOut(r) || f(r) < 0 {
				continue
			}
			if peer == "" {
				v = append(v, f(r))
				continue
			}
			base := sc.baseline(peer, r.Round)
			if base == nil || leftOut(base) || f(base) <= 0 {
				continue
			}
			v = append(v, f(r)/f(base))
		}
		if s, ok := spreadOf(v); ok && target != peer {
			return &s
		}
		return nil
	}
	out := make([]Summary, 0, len(targets))
	for _, t := range targets {
		out = append(out, Summary{Target: t,
			CPUPerReqUS: spread(t, "", cpu), P99US: spread(t, "", p99),
			CPUxNginx: spread(t, TargetNginx, cpu), CorexNginx: spread(t, TargetNginx, core), P99xNginx: spread(t, TargetNginx, p99),
			CPUxHAProxy: spread(t, TargetHAProxy, cpu), CorexHAProxy: spread(t, TargetHAProxy, core), P99xHAProxy: spread(t, TargetHAProxy, p99)})
	}
	return out
}

// summaryMarkdown renders sc.Summary, if any.
func (sc *Scenario) summaryMarkdown(b *strings.Builder) {
	if len(sc.Summary) == 0 {
		return
	}
	rounds := 0
	for _, r := range sc.Runs {
		rounds = max(rounds, r.Round)
	}
	fmt.Fprintf(b, "Over %d rounds (every target once per round, each round starting one target later; a ratio pairs two runs of one round; runs with errors, or whose core µs/req is over %.2f× their CPU µs/req (another load on the proxy's CPU), left out with their pairs), median (min–max):\n\n", rounds, maxCoreOverCPU)
	b.WriteString("| target | rounds | CPU µs/req | p99 | CPU ×nginx | core ×nginx | p99 ×nginx | CPU ×haproxy | core ×haproxy | p99 ×haproxy |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	num := func(s *Spread, format func(float64) string) string {
		if s == nil {
			return "—"
		}
		return fmt.Sprintf("%s (%s–%s)", format(s.Median), format(s.Min), format(s.Max))
	}
	fixed1 := func(v float64) string { return strconv.FormatFloat(v, 'f', 1, 64) }
	ratio := func(v float64) string { return strconv.FormatFloat(v, 'f', 2, 64) + "×" }
	latency := func(v float64) string { return fmtLatency(time.Duration(v * float64(time.Microsecond))) }
	for _, s := range sc.Summary {
		n := 0
		if s.P99US != nil {
			n = s.P99US.N
		}
		fmt.Fprintf(b, "| %s | %d | %s | %s | %s | %s | %s | %s | %s | %s |\n", s.Target, n, num(s.CPUPerReqUS, fixed1), num(s.P99US, latency),
			num(s.CPUxNginx, ratio), num(s.CorexNginx, ratio), num(s.P99xNginx, ratio),
			num(s.CPUxHAProxy, ratio), num(s.CorexHAProxy, ratio), num(s.P99xHAProxy, ratio))
	}
	b.WriteString("\n")
}

// plotted is the runs a scenario's plot draws: all of them, or over
// several rounds each target's run with the median p99 (the lower middle
// one of an even count) among its runs without errors, so that the plot
// stays one line per target.
func (sc *Scenario) plotted() []*RunResult {
	if len(sc.Summary) == 0 {
		return sc.Runs
	}
	targets, of := byTarget(sc.Runs)
	out := make([]*RunResult, 0, len(targets))
	for _, t := range targets {
		rs := slices.DeleteFunc(slices.Clone(of[t]), erred)
		if len(rs) == 0 {
			rs = slices.Clone(of[t])
		}
		slices.SortStableFunc(rs, func(a, b *RunResult) int { return cmp.Compare(a.Result.Latency.P99, b.Result.Latency.P99) })
		out = append(out, rs[(len(rs)-1)/2])
	}
	return out
}

// roundAllocs lists the edge's heap allocations per request of each run
// that has them, in round order.
func roundAllocs(runs []*RunResult) string {
	var v []string
	for _, r := range runs {
		if r.HeapAllocsPerReq >= 0 {
			v = append(v, strconv.FormatFloat(r.HeapAllocsPerReq, 'f', 2, 64))
		}
	}
	return strings.Join(v, ", ")
}
