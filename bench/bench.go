// Package bench is snapgate's SLO benchmark harness. It starts real processes
// on 127.0.0.1 (ctrl, an edge, sample backends, and nginx and HAProxy when
// installed), configures snapgate through `snapgate ctl`, drives load with
// loadtest from this process, measures the proxy's CPU time per request from
// /proc, and writes a report: a Markdown table, one latency-percentile SVG per
// scenario and the raw loadtest JSON.
//
// CPU time per request is the lead metric: on a shared machine throughput
// swings by ±15 % from run to run, while the CPU a proxy spends on each
// request barely moves.
package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/snapgate/snapgate/loadtest"
)

// Scenario names for Options.Scenarios.
const (
	ScenarioSteady = "steady"    // fixed rates and max throughput: direct, snapgate, peers
	ScenarioChurn  = "churn"     // route updates under load
	ScenarioLarge  = "large"     // a 100,000-route table
	ScenarioLimit  = "ratelimit" // three edges sharing one cluster-scope rate limit
	ScenarioFlap   = "flap"      // a health flap storm: 100 endpoints going down and up
)

// scenarios are every scenario name, in the default order.
var scenarios = []string{ScenarioSteady, ScenarioChurn, ScenarioLarge, ScenarioLimit, ScenarioFlap}

// Target names in reports.
const (
	TargetDirect   = "direct"
	TargetSnapgate = "snapgate"
	TargetNginx    = "nginx"
	TargetHAProxy  = "haproxy"
)

// Route is a route for Options.PutRoutes: host, path prefix and cluster.
type Route struct {
	ID, Host, Prefix, Cluster string
}

// Options configures Run. Zero fields take the defaults of the mode (quick
// unless Full).
type Options struct {
	// Bin is the snapgate binary that runs ctrl, edge, ctl and the sample
	// backend (`snapgate bench backend`). Required.
	Bin string
	// Full selects the long ladder and durations; the default quick mode
	// finishes in under 5 minutes on 2 CPUs.
	Full bool
	// Scenarios to run, in order. Default: all of them (steady, churn,
	// large, ratelimit, flap).
	Scenarios []string
	// Rates are the open-loop rates of the steady scenario (req/s). Default:
	// quick 1000, 5000; full 1000, 2000, 5000, 10000, 20000.
	Rates []float64
	// NoMax skips the closed-loop (max throughput) runs.
	NoMax bool
	// Rounds repeats the steady and max runs: every target once per round,
	// so that a ratio pairs runs a minute apart at most. A shared machine's runs swing ±10–40 % from one to the next;
	// the report's summary gives each ratio's median and range over the
	// rounds. Default 1.
	Rounds int
	// Duration is each measured run; Warmup an unmeasured run before it at
	// the same rate. Default: quick 5s and 1s; full 15s and 3s.
	Duration, Warmup time.Duration
	// Conns is the load generator's keep-alive connections. Default 16.
	Conns int
	// NoPeers skips nginx and HAProxy even when installed.
	NoPeers bool
	// NoPin runs without CPU pinning.
	NoPin bool
	// ChurnRate is route updates per second; ChurnLoad the request rate
	// served meanwhile; ChurnDuration how long. Default 10/s, 1000/s, and
	// quick 10s, full 30s.
	ChurnRate, ChurnLoad float64
	ChurnDuration        time.Duration
	// LargeRoutes is the size of the large table (default quick 10000,
	// full 100000) and
	// LargeRate the request rate it is measured at (default 1000).
	LargeRoutes int
	LargeRate   float64
	// LimitDuration is the ratelimit scenario's window. Default: quick
	// 20s, full 1m.
	LimitDuration time.Duration
	// FlapDuration is the flap scenario's measured window and FlapRate the
	// request rate offered meanwhile. Default: quick 15s, full 1m; 1000/s.
	FlapDuration time.Duration
	FlapRate     float64
	// HealthMaxVersionsPerSecond is ctrl's cap on health-caused snapshot
	// versions (--health-max-versions-per-second), which the flap scenario
	// checks. Default 10, ctrl's own default.
	HealthMaxVersionsPerSecond int
	// PutRoutes writes many routes to ctrl's admin socket quickly (bench
	// cannot import ctrl; cmd/snapgate passes an admin.Client bulk writer).
	// Without it the large scenario is skipped.
	PutRoutes func(ctx context.Context, socket string, routes []Route) error
	// Log receives progress lines. Default: discarded.
	Log io.Writer
}

func (o *Options) withDefaults() (Options, error) {
	d := *o
	if d.Bin == "" {
		return d, errors.New("bench: Options.Bin (the snapgate binary) is required")
	}
	if _, err := os.Stat(d.Bin); err != nil {
		return d, fmt.Errorf("bench: snapgate binary: %w", err)
	}
	if len(d.Scenarios) == 0 {
		d.Scenarios = slices.Clone(scenarios)
	}
	for _, s := range d.Scenarios {
		if !slices.Contains(scenarios, s) {
			return d, fmt.Errorf("bench: unknown scenario %q: want one of %s", s, strings.Join(scenarios, ", "))
		}
	}
	def := func(dur *time.Duration, quick, full time.Duration) {
		if *dur == 0 {
			*dur = quick
			if d.Full {
				*dur = full
			}
		}
	}
	def(&d.Duration, 5*time.Second, 15*time.Second)
	def(&d.Warmup, time.Second, 3*time.Second)
	def(&d.ChurnDuration, 10*time.Second, 30*time.Second)
	def(&d.LimitDuration, 20*time.Second, time.Minute)
	def(&d.FlapDuration, 15*time.Second, time.Minute)
	if len(d.Rates) == 0 {
		d.Rates = []float64{1000, 5000}
		if d.Full {
			d.Rates = []float64{1000, 2000, 5000, 10000, 20000}
		}
	}
	for _, r := range d.Rates {
		if r <= 0 || r > 1e6 {
			return d, fmt.Errorf("bench: rate %g: want 0 < rate <= 1e6", r)
		}
	}
	if d.Conns == 0 {
		d.Conns = 16
	}
	if d.Rounds == 0 {
		d.Rounds = 1
	}
	if d.Rounds < 1 || d.Rounds > 100 {
		return d, fmt.Errorf("bench: rounds %d: want 1–100", d.Rounds)
	}
	if d.ChurnRate == 0 {
		d.ChurnRate = 10
	}
	if d.ChurnLoad == 0 {
		d.ChurnLoad = 1000
	}
	if d.LargeRoutes == 0 {
		// ctrl commits (and fsyncs) one route write at a time, a few
		// hundred per second here: 100,000 takes minutes, too long for
		// the quick mode's 5-minute budget.
		d.LargeRoutes = 10000
		if d.Full {
			d.LargeRoutes = 100000
		}
	}
	if d.LargeRate == 0 {
		d.LargeRate = 1000
	}
	if d.FlapRate == 0 {
		d.FlapRate = 1000
	}
	if d.HealthMaxVersionsPerSecond == 0 {
		d.HealthMaxVersionsPerSecond = 10
	}
	if d.Conns < 1 || d.ChurnRate <= 0 || d.ChurnRate > 1000 || d.ChurnLoad <= 0 || d.LargeRoutes < 1 || d.LargeRoutes > 1e6 || d.LargeRate <= 0 ||
		d.Duration < 0 || d.Warmup < 0 || d.ChurnDuration < 0 || d.FlapDuration < time.Second || d.FlapRate <= 0 || d.FlapRate > 1e6 ||
		d.HealthMaxVersionsPerSecond < 1 || d.HealthMaxVersionsPerSecond > 1000 {
		return d, fmt.Errorf("bench: out-of-range option (conns %d, churn rate %g, churn load %g, large routes %d, large rate %g, flap duration %v, flap rate %g, health max versions per second %d)",
			d.Conns, d.ChurnRate, d.ChurnLoad, d.LargeRoutes, d.LargeRate, d.FlapDuration, d.FlapRate, d.HealthMaxVersionsPerSecond)
	}
	if d.Log == nil {
		d.Log = io.Discard
	}
	return d, nil
}

// Cluster and backend names in the gateway's configuration.
const (
	backendA = "backend-a"
	backendB = "backend-b"
)

// env is everything one Run started.
type env struct {
	opts   Options
	pin    Pinning
	dir    string
	ticks  int64
	procs  []*proc
	back   map[string]*proc  // backend name → process
	addrs  map[string]string // backend name and target name → address
	gw     *gateway
	peers  map[string]*proc
	report *Report
}

// Run runs the selected scenarios and returns the report. On failure or
// cancellation it returns the report of what completed with the error; it
// stops every process it started before returning.
func Run(ctx context.Context, opts Options) (*Report, error) {
	o, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	mode := "quick"
	if o.Full {
		mode = "full"
	}
	e := &env{opts: o, pin: DetectPinning(!o.NoPin), ticks: ClockTicks(),
		back: map[string]*proc{}, addrs: map[string]string{}, peers: map[string]*proc{}}
	e.report = &Report{Start: time.Now().UTC(), Mode: mode, Machine: DescribeMachine(), ClockTicks: e.ticks,
		Pinning: e.pin.Note, Conns: o.Conns, Duration: o.Duration, Warmup: o.Warmup}
	if e.pin.Enabled {
		if err := pinSelf(e.pin.LoadCPU); err != nil {
			e.pin = Pinning{Note: "pinning unavailable: " + err.Error()}
			e.report.Pinning = e.pin.Note
		} else {
			// The runtime follows the new affinity down to one P. Two Ps
			// on the one CPU date from when the pacer slept in nanosleep
			// and held its P: with one, responses waited for it (~70 µs
			// on every proxied row). The pacer now waits on the runtime
			// poller (loadtest fineTimer); the second P stays so that
			// runs compare with reports since then. An explicit setting
			// also stops the runtime's update.
			runtime.GOMAXPROCS(2)
		}
	}
	if e.dir, err = os.MkdirTemp("", "snapgate-bench-"); err != nil {
		return nil, fmt.Errorf("bench: work dir: %w", err)
	}
	e.report.WorkDir = e.dir
	defer func() {
		for _, err := range e.stopAll() {
			e.report.Notes = append(e.report.Notes, "cleanup: "+err.Error())
		}
	}()
	if err := e.setup(ctx); err != nil {
		return e.report, err
	}
	for _, s := range o.Scenarios {
		var err error
		switch s {
		case ScenarioSteady:
			err = e.steady(ctx)
		case ScenarioChurn:
			err = e.churn(ctx)
		case ScenarioLarge:
			err = e.large(ctx)
		case ScenarioLimit:
			err = e.fleetRateLimit(ctx)
		case ScenarioFlap:
			err = e.flapStorm(ctx)
		}
		if err != nil {
			return e.report, fmt.Errorf("bench: scenario %s: %w", s, err)
		}
	}
	return e.report, nil
}

func (e *env) logf(format string, args ...any) {
	fmt.Fprintf(e.opts.Log, "bench: "+format+"\n", args...)
}

func (e *env) note(format string, args ...any) {
	n := fmt.Sprintf(format, args...)
	e.report.Notes = append(e.report.Notes, n)
	e.logf("%s", n)
}

// stopAll stops every process, proxies first so nothing logs spurious
// upstream errors during teardown.
func (e *env) stopAll() []error {
	var errs []error
	for _, p := range e.peers {
		if err := p.stop(); err != nil {
			errs = append(errs, err)
		}
	}
	if e.gw != nil {
		errs = append(errs, e.gw.stop()...)
	}
	for _, p := range e.procs {
		if err := p.stop(); err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}

// setup starts the backends, the gateway with its configuration, and the
// peers.
func (e *env) setup(ctx context.Context) error {
	for _, name := range []string{backendA, backendB} {
		addr, err := freeAddr()
		if err != nil {
			return err
		}
		p, err := startProc(name, e.dir, e.pin, e.pin.LoadCPU, e.opts.Bin, "bench", "backend", "--listen", addr, "--name", name)
		if err != nil {
			return err
		}
		e.procs = append(e.procs, p)
		if err := waitTCP(ctx, p, addr); err != nil {
			return err
		}
		e.back[name], e.addrs[name] = p, addr
	}
	e.addrs[TargetDirect] = e.addrs[backendA]
	e.logf("backends on %s and %s", e.addrs[backendA], e.addrs[backendB])

	gw, err := startGateway(ctx, e.opts.Bin, e.dir, e.pin, e.opts.HealthMaxVersionsPerSecond)
	if err != nil {
		return err
	}
	e.gw = gw
	e.addrs[TargetSnapgate] = gw.addr
	if err := e.configure(ctx); err != nil {
		return err
	}
	if err := waitTCP(ctx, gw.edge, gw.addr); err != nil {
		return err
	}
	if err := waitBody(ctx, gw.addr, "/", backendA, startupWait); err != nil {
		return fmt.Errorf("edge: %w", err)
	}
	e.logf("ctrl and edge serving on %s", gw.addr)

	if e.opts.NoPeers {
		e.note("peers skipped (--no-peers)")
		return nil
	}
	listen := map[string]string{}
	for _, n := range []string{TargetNginx, TargetHAProxy} {
		if listen[n], err = freeAddr(); err != nil {
			return err
		}
	}
	peers, err := preparePeers(e.dir, listen, e.addrs[backendA])
	if err != nil {
		return err
	}
	for _, pr := range peers {
		if pr.skip != "" {
			e.note("%s skipped: %s", pr.name, pr.skip)
			continue
		}
		p, err := startProc(pr.name, e.dir, e.pin, e.pin.ProxyCPU, pr.bin, pr.args...)
		if err != nil {
			return err
		}
		e.peers[pr.name] = p
		if err := waitTCP(ctx, p, listen[pr.name]); err != nil {
			return err
		}
		if err := waitBody(ctx, listen[pr.name], "/", backendA, startupWait); err != nil {
			return fmt.Errorf("%s: %w", pr.name, err)
		}
		e.addrs[pr.name] = listen[pr.name]
		e.logf("%s serving on %s", pr.name, listen[pr.name])
	}
	return nil
}

// baseRoutes is the gateway's table for steady and churn: ten routes, like a
// small real gateway, with "/" the one the load hits.
func baseRoutes() [][]string {
	routes := [][]string{
		{"--id", "main", "--host", "*", "--prefix", "/", "--cluster", backendA},
		{"--id", "churn", "--host", "*", "--prefix", "/churn", "--cluster", backendA},
	}
	for i := range 8 {
		routes = append(routes, []string{"--id", fmt.Sprintf("filler-%d", i), "--host", "*",
			"--prefix", fmt.Sprintf("/filler/%d", i), "--cluster", backendB})
	}
	return routes
}

// configure applies the clusters and the base routes through `snapgate ctl`.
func (e *env) configure(ctx context.Context) error {
	for _, name := range []string{backendA, backendB} {
		if _, err := e.gw.ctl(ctx, "cluster", "put", "--id", name, "--endpoint", e.addrs[name]); err != nil {
			return err
		}
	}
	for _, r := range baseRoutes() {
		if _, err := e.gw.ctl(ctx, append([]string{"route", "put"}, r...)...); err != nil {
			return err
		}
	}
	_, err := e.gw.waitApplied(ctx, startupWait)
	return err
}

// targetPID is the process whose CPU a run is charged to: the proxy, or the
// backend for the direct runs.
func (e *env) targetPID(target string) (int, bool) {
	switch target {
	case TargetDirect:
		return e.back[backendA].pid(), true
	case TargetSnapgate:
		return e.gw.edge.pid(), true
	}
	if p, ok := e.peers[target]; ok {
		return p.pid(), true
	}
	return 0, false
}

// measure runs a warmup and then the measured part on the same
// connections, with the target's CPU time sampled right around the latter.
func (e *env) measure(ctx context.Context, target, label, schedule string, paths []string, dur time.Duration) (*RunResult, error) {
	sched, err := loadtest.ParseSchedule(schedule)
	if err != nil {
		return nil, err
	}
	cfg := loadtest.Config{Target: e.addrs[target], Paths: paths, Conns: e.opts.Conns, Schedule: sched, Timeout: 2 * time.Second, Warmup: e.opts.Warmup}
	return e.measured(ctx, target, label, cfg, dur)
}

// measured runs cfg for dur (after its warmup) and charges the target's CPU
// time over the measured part to it. The warmup is part of the same run,
// so the measured part opens no connection: a warmup run of its own closed
// its connections, and every measured run then paid 16 connects.
func (e *env) measured(ctx context.Context, target, label string, cfg loadtest.Config, dur time.Duration) (*RunResult, error) {
	pid, ok := e.targetPID(target)
	if !ok {
		return nil, fmt.Errorf("%s: no process for target %q", label, target)
	}
	cfg.Duration = dur
	// Found before the run: the scan of /proc takes milliseconds of the
	// load generator's CPU, which the window's samples must not.
	tree, err := ProcessTree(pid)
	if err != nil {
		return nil, fmt.Errorf("%s: cpu: %w", label, err)
	}
	var allocs *allocCounter
	var before, after Usage
	var berr, uerr, idleErr, idleErr2 error
	var idleBefore, idleAfter uint64
	var start time.Time
	var wall time.Duration
	cfg.OnWindow = func(begin bool) {
		if begin {
			allocs = e.allocCounter(ctx, target)
			before, berr = UsageOf(tree)
			idleBefore, idleErr = e.proxyCPUIdle()
			start = time.Now()
			return
		}
		wall = time.Since(start)
		idleAfter, idleErr2 = e.proxyCPUIdle()
		after, uerr = UsageOf(tree)
	}
	res, err := loadtest.Run(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", label, err)
	}
	if berr != nil {
		return nil, fmt.Errorf("%s: cpu before: %w", label, berr)
	}
	if uerr != nil {
		return nil, fmt.Errorf("%s: cpu after: %w", label, uerr)
	}
	r := &RunResult{Target: target, Label: label, Result: res, RSSBytes: after.RSSBytes,
		CPUTicks: after.Ticks - before.Ticks, CPUPerReqUS: -1, CoreCPUPerReqUS: -1, HeapAllocsPerReq: allocs.perRequest(ctx, res.Completed)}
	if res.Completed > 0 {
		tickUS := 1e6 / float64(e.ticks) / float64(res.Completed)
		r.CPUPerReqUS = float64(r.CPUTicks) * tickUS
		r.CPUResolutionUS = 2 * tickUS
		// The direct row's target (the backend) does not run on the
		// proxy's CPU.
		if idleErr == nil && idleErr2 == nil && target != TargetDirect {
			busy := wall.Seconds()*float64(e.ticks) - float64(idleAfter-idleBefore)
			r.CoreCPUPerReqUS = max(0, busy) * tickUS
		}
	}
	e.logf("%-28s %8.0f/s  p50 %-8v p99 %-8v errors %.3g%%  cpu %.1fµs/req  core %.1fµs/req", label, res.Rate,
		res.Latency.P50, res.Latency.P99, res.ErrorRate*100, r.CPUPerReqUS, r.CoreCPUPerReqUS)
	return r, nil
}

// allocCounter reads the edge's heap allocation count at the start of a
// run, for snapgate runs of a binary whose edge has an admin listener.
// The runtime counts a span's objects when the span is handed to a P and
// takes back the unused ones at GC, so the count is exact only to a few
// spans: over a quick run's 25,000 requests that is a few hundredths per
// request, as is the one /metrics scrape counted in it.
func (e *env) allocCounter(ctx context.Context, target string) *allocCounter {
	if target != TargetSnapgate || e.gw.edgeAdmin == "" {
		return nil
	}
	a := &allocCounter{addr: e.gw.edgeAdmin}
	var err error
	if a.start, err = a.read(ctx); err != nil {
		e.note("heap allocations not counted: %v", err)
		return nil
	}
	return a
}

// allocCounter counts the edge's heap allocations over a run.
type allocCounter struct {
	addr  string
	start float64
}

func (a *allocCounter) read(ctx context.Context) (float64, error) {
	m, err := scrapeMetrics(ctx, a.addr)
	if err != nil {
		return 0, err
	}
	v, ok := m["snapgate_edge_heap_allocs_objects_total"]
	if !ok {
		return 0, fmt.Errorf("metrics %s: no snapgate_edge_heap_allocs_objects_total", a.addr)
	}
	return v, nil
}

// perRequest is the run's allocations per completed request; -1 without
// a counter, requests or a final reading.
func (a *allocCounter) perRequest(ctx context.Context, completed int64) float64 {
	if a == nil || completed <= 0 {
		return -1
	}
	end, err := a.read(ctx)
	if err != nil {
		return -1
	}
	return max(0, end-a.start) / float64(completed)
}

// proxyCPUIdle reads the idle ticks of the CPU the proxy under test is
// pinned to; an error when it is not pinned.
func (e *env) proxyCPUIdle() (uint64, error) {
	if !e.pin.Enabled {
		return 0, errors.New("not pinned")
	}
	return CPUIdle(e.pin.ProxyCPU)
}

// targets lists what steady measures, in report order.
func (e *env) targets() []string {
	t := []string{TargetDirect, TargetSnapgate}
	for _, p := range []string{TargetNginx, TargetHAProxy} {
		if _, ok := e.addrs[p]; ok {
			t = append(t, p)
		}
	}
	return t
}

func (e *env) steady(ctx context.Context) error {
	for _, rate := range e.opts.Rates {
		sc := &Scenario{Name: fmt.Sprintf("steady-%g", rate), Title: fmt.Sprintf("Steady state at %g req/s", rate),
			About: "Open loop: latency counts from each request's scheduled send time. CPU is the proxy process's (the backend's for direct)."}
		if err := e.rounds(ctx, sc, fmt.Sprint(rate)); err != nil {
			return err
		}
	}
	if e.opts.NoMax {
		return nil
	}
	sc := &Scenario{Name: "max", Title: "Maximum throughput (closed loop)",
		About: fmt.Sprintf("Closed loop, %d connections sending back to back. Load generator and backend share one CPU, so the ceiling is partly theirs.", e.opts.Conns)}
	return e.rounds(ctx, sc, "max")
}

// rounds adds sc to the report and measures every target at schedule,
// Rounds times over. Each round starts one target later than the one
// before, so that no target always runs at the same point of a round: the
// machine's load drifts within a round, and a fixed order would charge one
// target with it every time. (The cyclic order stays: each target still
// follows the same one, except in the round it goes first.)
func (e *env) rounds(ctx context.Context, sc *Scenario, schedule string) error {
	e.report.Scenarios = append(e.report.Scenarios, sc)
	targets := e.targets()
	for round := 1; round <= e.opts.Rounds; round++ {
		k := (round - 1) % len(targets)
		for _, t := range append(targets[k:len(targets):len(targets)], targets[:k]...) {
			label := t
			if e.opts.Rounds > 1 {
				label = fmt.Sprintf("%s #%d", t, round)
			}
			r, err := e.measure(ctx, t, label, schedule, nil, e.opts.Duration)
			if err != nil {
				return err
			}
			r.Round = round
			sc.Runs = append(sc.Runs, r)
		}
	}
	if e.opts.Rounds > 1 {
		sc.Summary = sc.summarize()
	}
	return nil
}

// propagationTimeout is how long the churn scenario waits for one update to
// show before counting it as missed.
const propagationTimeout = 5 * time.Second

// probeInterval paces the churn probe: one request per interval at most,
// which is the resolution of a propagation time. Back to back, the probe
// kept the edge's CPU busy for the ~20 ms of every propagation (a closed
// loop), so the measured load queued behind it and the edge's CPU per
// request counted requests nobody tallied.
const probeInterval = time.Millisecond

// churn flips route "churn" between the two backends through `snapgate ctl`
// at ChurnRate while ChurnLoad requests/s go through the edge, and measures
// from ctl's acknowledgement (its exit) to the first response from the new
// backend.
func (e *env) churn(ctx context.Context) error {
	sc := &Scenario{Name: "churn", Title: fmt.Sprintf("Config churn: %g route updates/s under %g req/s", e.opts.ChurnRate, e.opts.ChurnLoad),
		About: "Route `churn` alternates between two backends via `snapgate ctl route put`; propagation runs from ctl's acknowledgement to the first response from the new backend (a probe sends one request per millisecond on one connection, and its requests count in CPU µs/req). ctrl runs with its default 20ms debounce, which is part of every propagation time."}
	e.report.Scenarios = append(e.report.Scenarios, sc)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type loadOut struct {
		r   *RunResult
		err error
	}
	done := make(chan loadOut, 1)
	go func() {
		r, err := e.measure(ctx, TargetSnapgate, "snapgate under churn", fmt.Sprint(e.opts.ChurnLoad), nil, e.opts.ChurnDuration)
		done <- loadOut{r, err}
	}()
	// Let the warmup pass so updates overlap the measured window.
	if err := sleepCtx(ctx, e.opts.Warmup); err != nil {
		return err
	}
	probe := newProber(e.gw.addr, "/churn/probe")
	defer probe.close()
	var prop, ctlTime []time.Duration
	missed, failed, probes := 0, 0, 0
	var firstErr error
	interval := time.Duration(float64(time.Second) / e.opts.ChurnRate)
	tick := time.NewTicker(interval)
	defer tick.Stop()
	cur := backendA
	stopAt := time.Now().Add(e.opts.ChurnDuration)
	for time.Now().Before(stopAt) {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
		next := backendB
		if cur == backendB {
			next = backendA
		}
		start := time.Now()
		if _, err := e.gw.ctl(ctx, "route", "put", "--id", "churn", "--host", "*", "--prefix", "/churn", "--cluster", next); err != nil {
			failed++
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		ack := time.Now()
		ctlTime = append(ctlTime, ack.Sub(start))
		cur = next
		seen := false
		for at := ack; time.Since(ack) < propagationTimeout; {
			if err := sleepCtx(ctx, time.Until(at)); err != nil {
				return err
			}
			at = time.Now().Add(probeInterval)
			status, body, err := probe.get()
			probes++
			if err == nil && status == 200 && strings.HasPrefix(string(body), next) {
				prop = append(prop, time.Since(ack))
				seen = true
				break
			}
		}
		if !seen {
			missed++
		}
	}
	out := <-done
	if out.err != nil {
		return out.err
	}
	out.r.chargeExtra(probes)
	sc.Runs = append(sc.Runs, out.r)
	if failed > 0 {
		e.note("churn: %d ctl updates failed; first: %v", failed, firstErr)
	}
	if len(prop) == 0 {
		return fmt.Errorf("no route update reached the edge (%d missed, %d failed)", missed, failed)
	}
	ps := durationStats(prop)
	cs := durationStats(ctlTime)
	sc.Facts = append(sc.Facts,
		Fact{"route updates acknowledged", fmt.Sprint(len(ctlTime))},
		Fact{"propagation ack → first new response p50 / p99 / max", fmt.Sprintf("%s / %s / %s", fmtLatency(ps.p50), fmtLatency(ps.p99), fmtLatency(ps.max))},
		Fact{"updates not seen within " + propagationTimeout.String(), fmt.Sprint(missed)},
		Fact{"probe requests (one per " + probeInterval.String() + " while waiting; counted in CPU µs/req, not in the latencies)", fmt.Sprint(probes)},
		Fact{"ctl command (process start to acknowledged exit) p50 / p99", fmt.Sprintf("%s / %s", fmtLatency(cs.p50), fmtLatency(cs.p99))},
	)
	sc.Extra = append(sc.Extra, Series{Label: "propagation (ack → new backend)", Points: curveOf(prop)})
	return nil
}

// large measures lookups through the 10-route table, then adds LargeRoutes
// routes (each to backend B, so a probe proves the big table is in use) and
// measures the same request paths again.
func (e *env) large(ctx context.Context) error {
	if e.opts.PutRoutes == nil {
		e.note("large table skipped: no bulk route writer (Options.PutRoutes)")
		return nil
	}
	n := e.opts.LargeRoutes
	sc := &Scenario{Name: "large", Title: fmt.Sprintf("Large table: %d routes vs 10 at %g req/s", n, e.opts.LargeRate),
		About: fmt.Sprintf("A freshly started edge; the same requests (1000 distinct paths spread over the table) first through the 10-route table, where they fall to route `/`, then after %d routes `/r/NNNNNN` (to the other backend) were added.", n)}
	e.report.Scenarios = append(e.report.Scenarios, sc)
	paths := make([]string, 0, 1000)
	step := max(n/1000, 1)
	for i := 0; i < n && len(paths) < 1000; i += step {
		paths = append(paths, fmt.Sprintf("/r/%06d/item", i))
	}
	// A fresh edge process, so that what earlier scenarios left behind
	// (hundreds of snapshot swaps under churn) does not colour the lookup
	// comparison.
	if err := e.gw.restartEdge(ctx); err != nil {
		return fmt.Errorf("restarting the edge: %w", err)
	}
	if err := waitBody(ctx, e.gw.addr, "/", backendA, startupWait); err != nil {
		return err
	}
	rate := fmt.Sprint(e.opts.LargeRate)
	small, err := e.measure(ctx, TargetSnapgate, "snapgate, 10 routes", rate, paths, e.opts.Duration)
	if err != nil {
		return err
	}
	sc.Runs = append(sc.Runs, small)

	routes := make([]Route, n)
	for i := range routes {
		routes[i] = Route{ID: fmt.Sprintf("r-%06d", i), Host: "*", Prefix: fmt.Sprintf("/r/%06d", i), Cluster: backendB}
	}
	e.logf("adding %d routes", n)
	start := time.Now()
	if err := e.opts.PutRoutes(ctx, e.gw.socket, routes); err != nil {
		return fmt.Errorf("adding %d routes: %w", n, err)
	}
	written := time.Since(start)
	st, err := e.gw.waitApplied(ctx, 5*time.Minute)
	if err != nil {
		return err
	}
	applied := time.Since(start)
	if err := waitBody(ctx, e.gw.addr, paths[len(paths)/2], backendB, 10*time.Second); err != nil {
		return fmt.Errorf("large table not in use: %w", err)
	}
	e.logf("%d routes written in %v, applied by the edge after %v", n, written.Round(time.Millisecond), applied.Round(time.Millisecond))
	big, err := e.measure(ctx, TargetSnapgate, fmt.Sprintf("snapgate, %d routes", st.Routes), rate, paths, e.opts.Duration)
	if err != nil {
		return err
	}
	sc.Runs = append(sc.Runs, big)
	sc.Facts = append(sc.Facts,
		Fact{"routes written through the admin socket", fmt.Sprintf("%d in %s (%.0f/s over concurrent admin connections; each acknowledged once fsynced, concurrent writes share fsyncs)", n, fmtSeconds(written), float64(n)/written.Seconds())},
		Fact{"write start → edge applied the final snapshot", fmtSeconds(applied)},
		Fact{"snapshot size (ctl status)", fmt.Sprintf("%d routes, %s", st.Routes, fmtBytes(int64(st.SnapshotBytes)))},
	)
	if b, err := lastSnapshotBuild(e.gw.ctrl.logPath, n); err == nil {
		sc.Facts = append(sc.Facts, Fact{"snapshot build time (ctrl log, fbs.Build)", fmt.Sprintf("%s for version %d, %d routes", fmtLatency(b.BuildTime), b.Version, b.Routes)})
	} else {
		e.note("large: snapshot build time unavailable: %v", err)
	}
	return nil
}

// DescribeMachine reads what the report says about the machine.
func DescribeMachine() Machine {
	m := Machine{CPUs: runtime.NumCPU(), Go: runtime.Version(), Model: "unknown", Kernel: "unknown"}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.Lines(string(b)) {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.Model = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	return m
}

type stats struct{ p50, p99, max time.Duration }

// durationStats uses nearest rank on the sorted samples.
func durationStats(d []time.Duration) stats {
	s := slices.Clone(d)
	slices.Sort(s)
	at := func(q float64) time.Duration {
		i := int(q*float64(len(s))+0.999999) - 1
		return s[min(max(i, 0), len(s)-1)]
	}
	return stats{p50: at(0.5), p99: at(0.99), max: s[len(s)-1]}
}

// curveOf turns samples into a percentile curve like loadtest's.
func curveOf(d []time.Duration) []loadtest.Point {
	s := slices.Clone(d)
	slices.Sort(s)
	pts := make([]loadtest.Point, 0, len(s))
	for i, v := range s {
		pts = append(pts, loadtest.Point{Quantile: float64(i) / float64(len(s)), Latency: v})
	}
	return pts
}
