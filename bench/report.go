package bench

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/snapgate/snapgate/loadtest"
)

// Report is one bench run: its setup and its scenarios.
type Report struct {
	Start      time.Time     `json:"start"`
	Mode       string        `json:"mode"` // quick or full
	Machine    Machine       `json:"machine"`
	Pinning    string        `json:"pinning"`
	ClockTicks int64         `json:"clock_ticks"`
	Conns      int           `json:"conns"`
	Duration   time.Duration `json:"duration_ns"`
	Warmup     time.Duration `json:"warmup_ns"`
	WorkDir    string        `json:"work_dir"`
	Notes      []string      `json:"notes"`
	Scenarios  []*Scenario   `json:"scenarios"`
}

// Machine is where the numbers came from.
type Machine struct {
	CPUs   int    `json:"cpus"`
	Model  string `json:"cpu_model"`
	Kernel string `json:"kernel"`
	Go     string `json:"go"`
}

// Scenario is one table and one plot of the report.
type Scenario struct {
	Name  string       `json:"name"` // file-safe: steady-1000, max, churn, large
	Title string       `json:"title"`
	About string       `json:"about"`
	Runs  []*RunResult `json:"runs"`
	Facts []Fact       `json:"facts"`
	// Extra are plot series that are not load runs (churn propagation).
	Extra []Series `json:"extra,omitempty"`
	// Flap is the flap scenario's outcome.
	Flap *FlapStats `json:"flap,omitempty"`
	// Summary is each target's figures over the rounds, when there were
	// more than one (Options.Rounds).
	Summary []Summary `json:"summary,omitempty"`
}

// RunResult is one measured load run against one target.
type RunResult struct {
	Target string `json:"target"` // direct, snapgate, nginx, haproxy
	Label  string `json:"label"`
	// Round is the run's round (1..Options.Rounds) in the steady and max
	// scenarios, 0 elsewhere.
	Round int `json:"round,omitempty"`
	// CPUTicks is the target's utime+stime over the measured run;
	// CPUPerReqUS that in µs per completed request, -1 when nothing completed.
	CPUTicks    uint64  `json:"cpu_ticks"`
	CPUPerReqUS float64 `json:"cpu_us_per_request"`
	// CPUResolutionUS is two clock ticks per completed request: the kernel
	// floors utime and stime to whole ticks separately, so their sum over a
	// run is exact only to ± two.
	CPUResolutionUS float64 `json:"cpu_resolution_us"`
	// CoreCPUPerReqUS is the busy time of the CPU the proxy is pinned to
	// (wall time minus its measured idle time, CPUIdle) per completed
	// request; -1 when not pinned and for direct rows, whose backend runs
	// elsewhere. Besides the proxy's own time it holds what no process is
	// charged for: interrupts and softirq work the CPU does while idle
	// (each wake-up of the proxy is an interrupt there), and any other
	// process on that CPU.
	CoreCPUPerReqUS float64 `json:"core_cpu_us_per_request"`
	// HeapAllocsPerReq is the edge process's heap allocations
	// (snapgate_edge_heap_allocs_objects_total) over the measured run per
	// completed request (one /metrics scrape included); -1 for other
	// targets and when the edge has no admin listener.
	HeapAllocsPerReq float64          `json:"heap_allocs_per_request"`
	RSSBytes         int64            `json:"rss_bytes"`
	Result           *loadtest.Result `json:"result"`
}

// chargeExtra adds n requests that went through the target during the run
// without being part of its load (the churn probe's) to the requests the
// CPU figures are divided by: their CPU is in CPUTicks all the same.
func (r *RunResult) chargeExtra(n int) {
	if r.CPUPerReqUS < 0 || n <= 0 {
		return
	}
	f := float64(r.Result.Completed) / float64(r.Result.Completed+int64(n))
	r.CPUPerReqUS *= f
	r.CPUResolutionUS *= f
	if r.CoreCPUPerReqUS >= 0 {
		r.CoreCPUPerReqUS *= f
	}
	if r.HeapAllocsPerReq >= 0 {
		r.HeapAllocsPerReq *= f
	}
}

// Fact is a named number of a scenario that is not a load run.
type Fact struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// baseline returns the run of target in round of sc, or nil.
func (sc *Scenario) baseline(target string, round int) *RunResult {
	for _, r := range sc.Runs {
		if r.Target == target && r.Round == round {
			return r
		}
	}
	return nil
}

// Markdown renders the report: setup, then per scenario a table with
// absolute numbers and ratios to direct and to nginx, its facts and its plot.
func (r *Report) Markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "# snapgate bench, %s mode, %s\n\n", r.Mode, r.Start.Format("2006-01-02 15:04 UTC"))
	fmt.Fprintf(&b, "- machine: %d CPUs, %s, Linux %s, %s\n", r.Machine.CPUs, r.Machine.Model, r.Machine.Kernel, r.Machine.Go)
	fmt.Fprintf(&b, "- pinning: %s\n", r.Pinning)
	fmt.Fprintf(&b, "- load: %d keep-alive connections, %s measured after %s warmup per run; 64-byte responses\n",
		r.Conns, fmtSeconds(r.Duration), fmtSeconds(r.Warmup))
	fmt.Fprintf(&b, "- CPU µs/req: utime+stime of the proxy process tree from /proc/<pid>/stat (%d ticks/s) over the measured run, divided by completed requests, ± two ticks (utime and stime are each whole ticks); direct rows charge the backend\n", r.ClockTicks)
	b.WriteString("- core µs/req: the busy time of the CPU the proxy is pinned to (wall time minus that CPU's idle time from /proc/stat, which a tickless kernel measures exactly) per completed request, ± one tick; it adds to CPU µs/req the interrupt work no process is charged for and anything else that ran there\n")
	for _, n := range r.Notes {
		fmt.Fprintf(&b, "- note: %s\n", n)
	}
	for _, sc := range r.Scenarios {
		b.WriteString("\n")
		sc.markdown(&b)
	}
	return b.String()
}

// tableHeader is the column set of every scenario table.
const tableHeader = "| target | rate | achieved/s | p50 | p99 | p99.9 | max | errors | CPU µs/req | core µs/req | RSS | p50 ×direct | p99 ×direct | CPU ×direct | p99 ×nginx | CPU ×nginx | core ×nginx |\n" +
	"|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"

func (sc *Scenario) markdown(b *strings.Builder) {
	fmt.Fprintf(b, "## %s\n\n", sc.Title)
	if sc.About != "" {
		fmt.Fprintf(b, "%s\n\n", sc.About)
	}
	if len(sc.Runs) > 0 {
		b.WriteString(tableHeader)
		for _, r := range sc.Runs {
			b.WriteString(r.row(sc.baseline(TargetDirect, r.Round), sc.baseline(TargetNginx, r.Round)))
		}
		b.WriteString("\n")
		var pacer []string
		for _, r := range sc.Runs {
			if p := r.Result.Pacer; p.Count > 0 {
				pacer = append(pacer, fmt.Sprintf("%s %s / %s", r.Label, fmtLatency(p.P50), fmtLatency(p.P99)))
			}
		}
		if len(pacer) > 0 {
			fmt.Fprintf(b, "Load generator's own lateness (p50 / p99), part of every latency above: %s.\n\n", strings.Join(pacer, "; "))
		}
		if len(sc.Summary) == 0 {
			for _, r := range sc.Runs {
				if r.HeapAllocsPerReq >= 0 {
					fmt.Fprintf(b, "Heap allocations per request in the %s process over the run (all of its goroutines, one /metrics scrape included): %.2f.\n\n", r.Label, r.HeapAllocsPerReq)
				}
			}
		} else if allocs := roundAllocs(sc.Runs); allocs != "" {
			fmt.Fprintf(b, "Heap allocations per request in the snapgate process over each run, in round order (all of its goroutines, one /metrics scrape included): %s.\n\n", allocs)
		}
		sc.summaryMarkdown(b)
	}
	for _, f := range sc.Facts {
		fmt.Fprintf(b, "- %s: %s\n", f.Name, f.Value)
	}
	if len(sc.Facts) > 0 {
		b.WriteString("\n")
	}
	fmt.Fprintf(b, "![%s latency percentiles](%s.svg)\n", sc.Name, sc.Name)
}

func (r *RunResult) row(direct, nginx *RunResult) string {
	res := r.Result
	rate := "max"
	if res.Mode == "open" {
		rate = strconv.FormatFloat(res.TargetRate, 'f', 0, 64)
	}
	errs := fmt.Sprintf("%s (%d)", fmtPercent(res.ErrorRate), errorCount(res))
	cpu := "—"
	if r.CPUPerReqUS >= 0 {
		cpu = strconv.FormatFloat(r.CPUPerReqUS, 'f', 1, 64) + " ±" + strconv.FormatFloat(r.CPUResolutionUS, 'f', 1, 64)
	}
	ratio := func(base *RunResult, f func(*RunResult) float64) string {
		// A row with errors answered some requests cheaply (or not at
		// all): its figures per request compare with nothing.
		if base == nil || base == r || erred(r) || erred(base) {
			return "—"
		}
		num, den := f(r), f(base)
		if num < 0 || den <= 0 {
			return "—"
		}
		return strconv.FormatFloat(num/den, 'f', 2, 64) + "×"
	}
	p50 := func(x *RunResult) float64 { return float64(x.Result.Latency.P50) }
	p99 := func(x *RunResult) float64 { return float64(x.Result.Latency.P99) }
	cpuOf := func(x *RunResult) float64 { return x.CPUPerReqUS }
	coreOf := func(x *RunResult) float64 { return x.CoreCPUPerReqUS }
	core := "—"
	if r.CoreCPUPerReqUS >= 0 {
		core = strconv.FormatFloat(r.CoreCPUPerReqUS, 'f', 1, 64)
	}
	return fmt.Sprintf("| %s | %s | %.0f | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n",
		r.Label, rate, res.Rate, fmtLatency(res.Latency.P50), fmtLatency(res.Latency.P99), fmtLatency(res.Latency.P999),
		fmtLatency(res.Latency.Max), errs, cpu, core, fmtBytes(r.RSSBytes),
		ratio(direct, p50), ratio(direct, p99), ratio(direct, cpuOf), ratio(nginx, p99), ratio(nginx, cpuOf), ratio(nginx, coreOf))
}

// erred reports a run with more than 0.1 % errors (errorCount): its
// ratios are left out.
func erred(r *RunResult) bool { return r.Result.ErrorRate > 0.001 }

// errorCount is what Result.ErrorRate counts: failures, unsent and 5xx.
func errorCount(res *loadtest.Result) int64 {
	n := res.Unsent
	for _, c := range res.Errors {
		n += c
	}
	for code, c := range res.Status {
		if code >= "500" && len(code) == 3 {
			n += c
		}
	}
	return n
}

// Write writes report.md, report.json, one SVG per scenario and the raw
// loadtest JSON of every run into dir.
func (r *Report) Write(dir string) error {
	if err := os.MkdirAll(filepath.Join(dir, "raw"), 0o755); err != nil {
		return fmt.Errorf("report: %w", err)
	}
	write := func(name string, data []byte) error {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			return fmt.Errorf("report: %w", err)
		}
		return nil
	}
	if err := write("report.md", []byte(r.Markdown())); err != nil {
		return err
	}
	js, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("report: json: %w", err)
	}
	if err := write("report.json", append(js, '\n')); err != nil {
		return err
	}
	for _, sc := range r.Scenarios {
		if err := write(sc.Name+".svg", sc.SVG()); err != nil {
			return err
		}
		for _, run := range sc.Runs {
			js, err := json.MarshalIndent(run.Result, "", "  ")
			if err != nil {
				return fmt.Errorf("report: json of %s %s: %w", sc.Name, run.Label, err)
			}
			if err := write(filepath.Join("raw", sc.Name+"-"+fileSafe(run.Label)+".json"), append(js, '\n')); err != nil {
				return err
			}
		}
	}
	return nil
}

// SVG plots the scenario's runs and extra series; over several rounds,
// each target's run with the median p99.
func (sc *Scenario) SVG() []byte {
	series := make([]Series, 0, len(sc.Runs)+len(sc.Extra))
	for _, r := range sc.plotted() {
		label := r.Label
		if len(sc.Summary) > 0 {
			label += " (median p99 of its rounds)"
		}
		series = append(series, Series{Label: label, Points: r.Result.Percentiles()})
	}
	series = append(series, sc.Extra...)
	return PlotSVG(sc.Title, series)
}

// fileSafe maps a label to a file name part: letters, digits and '-'.
func fileSafe(s string) string {
	var b strings.Builder
	dash := false
	for _, c := range strings.ToLower(s) {
		if c >= 'a' && c <= 'z' || c >= '0' && c <= '9' {
			b.WriteRune(c)
			dash = false
		} else if !dash && b.Len() > 0 {
			b.WriteByte('-')
			dash = true
		}
	}
	return strings.TrimSuffix(b.String(), "-")
}

// fmtLatency prints three significant digits in µs or ms.
func fmtLatency(d time.Duration) string {
	us := float64(d) / 1e3
	switch {
	case d <= 0:
		return "0"
	case us < 1000:
		return strconv.FormatFloat(us, 'g', 3, 64) + "µs"
	case us < 1e6:
		return strconv.FormatFloat(us/1e3, 'g', 3, 64) + "ms"
	default:
		return strconv.FormatFloat(us/1e6, 'g', 3, 64) + "s"
	}
}

func fmtSeconds(d time.Duration) string {
	return strconv.FormatFloat(d.Seconds(), 'f', 1, 64) + "s"
}

func fmtBytes(n int64) string {
	switch {
	case n <= 0:
		return "—"
	case n < 1<<20:
		return strconv.FormatFloat(float64(n)/(1<<10), 'f', 1, 64) + " KiB"
	default:
		return strconv.FormatFloat(float64(n)/(1<<20), 'f', 1, 64) + " MiB"
	}
}

func fmtPercent(f float64) string {
	return strconv.FormatFloat(f*100, 'g', 3, 64) + "%"
}
