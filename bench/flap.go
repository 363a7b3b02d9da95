package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/snapgate/snapgate/loadtest"
)

// The health flap storm (issue 7): flapEndpoints endpoints of one cluster
// go down and up, each on its own random schedule, while ctrl's active
// probe judges them and load goes through the edge. The scenario reports
// the snapshot versions the storm causes against ctrl's cap (and fails if
// any second holds more), how long the edge takes to acknowledge them, and
// how many requests reach an endpoint while it is down.
const (
	flapEndpoints  = 100
	flapClusterID  = "flap"
	flapRouteID    = "flap"
	flapPrefix     = "/flap"
	flapHealthPath = "/healthz"
	// The probe: ctrl's shortest interval, and damping that turns an
	// endpoint unhealthy after flapUnhealthyAfter failures (N) and back
	// after flapHealthyAfter successes (M), with no hold time.
	flapInterval       = 100 * time.Millisecond
	flapJitter         = 20 * time.Millisecond
	flapUnhealthyAfter = 2
	flapHealthyAfter   = 2
	// Each down or up phase lasts a uniform random time in
	// [flapPhaseMin, flapPhaseMax).
	flapPhaseMin = 100 * time.Millisecond
	flapPhaseMax = time.Second
	// flapSeed fixes the schedules, so runs flap alike.
	flapSeed = 7
	// healthFlushInterval is how long ctrl batches health writes before
	// one store write (docs/health.md), part of the detection bound.
	healthFlushInterval = 20 * time.Millisecond
	// propagationMetric is ctrl's commit-to-ACK histogram.
	propagationMetric = "snapgate_ctrl_propagation_seconds"
)

// FlapStats is the flap scenario's outcome, in report.json as "flap".
type FlapStats struct {
	Endpoints int           `json:"endpoints"`
	Window    time.Duration `json:"window_ns"`
	// Cap is ctrl's --health-max-versions-per-second.
	Cap int `json:"cap_versions_per_second"`
	// Versions are the snapshots ctrl built in the window (its log's
	// "snapshot built" lines); PerSecond the count in each whole second
	// from the window's start; Busiest the most in any one-second window;
	// MinGap the least time between two consecutive builds.
	Versions          int           `json:"versions"`
	VersionsPerSecond float64       `json:"versions_per_second"`
	PerSecond         []int         `json:"versions_each_second"`
	Busiest           int           `json:"busiest_second_versions"`
	MinGap            time.Duration `json:"min_gap_ns"`
	// Transitions and Publications are ctrl's health counters over the
	// window: damped state changes, and changes of the published state.
	Transitions  float64 `json:"transitions"`
	Publications float64 `json:"publications"`
	// Propagation is commit to edge ACK, from ctrl's histogram: bucket
	// upper bounds of p50 and p99, and the mean, in seconds.
	Acks            float64       `json:"acks"`
	PropagationP50  float64       `json:"propagation_p50_le_seconds"`
	PropagationP99  float64       `json:"propagation_p99_le_seconds"`
	PropagationMean float64       `json:"propagation_mean_seconds"`
	Bound           time.Duration `json:"detection_bound_ns"`
	Requests        int64         `json:"requests_at_endpoints"`
	DownHits        int64         `json:"down_hits"`
	DownHitsBeyond  int64         `json:"down_hits_beyond_bound"`
	DownTimeShare   float64       `json:"down_time_share"`
	BeyondTimeShare float64       `json:"down_beyond_bound_time_share"`
	DownAgeP50      time.Duration `json:"down_age_p50_ns"`
	DownAgeP99      time.Duration `json:"down_age_p99_ns"`
	DownAgeMax      time.Duration `json:"down_age_max_ns"`
}

// DownShare is the share of the requests the endpoints received that
// reached a down one.
func (s *FlapStats) DownShare() float64 { return share(s.DownHits, s.Requests) }

// BeyondShare is the share that reached one down for longer than Bound.
func (s *FlapStats) BeyondShare() float64 { return share(s.DownHitsBeyond, s.Requests) }

func share(n, of int64) float64 {
	if of == 0 {
		return 0
	}
	return float64(n) / float64(of)
}

func (e *env) flapStorm(ctx context.Context) (err error) {
	capPerSec := e.opts.HealthMaxVersionsPerSecond
	sc := &Scenario{Name: "flap", Title: fmt.Sprintf("Health flap storm: %d endpoints flapping under %g req/s", flapEndpoints, e.opts.FlapRate),
		About: fmt.Sprintf("One cluster of %d endpoints (served by the bench process); each goes down (503 on every path, health path included) and up in turn, every phase %v–%v at random. "+
			"ctrl probes GET %s every %v ±%v, unhealthy after %d failures, healthy after %d successes, no hold; its cap is %d health-caused versions/s. "+
			"Edges do not eject endpoints on 5xx, so a request that reaches a down endpoint is one that ctrl's verdict let through.",
			flapEndpoints, flapPhaseMin, flapPhaseMax, flapHealthPath, flapInterval, flapJitter, flapUnhealthyAfter, flapHealthyAfter, capPerSec)}
	e.report.Scenarios = append(e.report.Scenarios, sc)
	if e.gw.ctrlMetrics == "" {
		return errors.New("ctrl runs without --metrics-listen; the scenario reads propagation lag from ctrl's metrics")
	}
	f, err := startFlapper(flapEndpoints)
	if err != nil {
		return err
	}
	// undo deletes what the scenario wrote, newest first; without it ctrl
	// would keep probing the closed endpoints for the rest of the run.
	var undo [][]string
	defer func() {
		f.endStorm()
		for _, args := range slices.Backward(undo) {
			if _, cerr := e.gw.ctl(context.WithoutCancel(ctx), args...); cerr != nil {
				e.note("flap cleanup: %v", cerr)
			}
		}
		if cerr := f.close(); cerr != nil && err == nil {
			err = cerr
		}
	}()

	doc, err := flapClusterDoc(f.addrs())
	if err != nil {
		return err
	}
	file := filepath.Join(e.dir, "flap-cluster.json")
	if err := os.WriteFile(file, doc, 0o600); err != nil {
		return fmt.Errorf("writing %s: %w", file, err)
	}
	if _, err := e.gw.ctl(ctx, "cluster", "put", "-f", file); err != nil {
		return err
	}
	undo = append(undo, []string{"cluster", "delete", flapClusterID})
	if _, err := e.gw.ctl(ctx, "route", "put", "--id", flapRouteID, "--host", "*", "--prefix", flapPrefix, "--cluster", flapClusterID); err != nil {
		return err
	}
	undo = append(undo, []string{"route", "delete", flapRouteID})
	// Not waitApplied: the probes' health writes move the store revision
	// past the snapshot. The route answering proves the edge has it.
	if err := waitBody(ctx, e.gw.addr, flapPrefix+"/ready", "flap-", startupWait); err != nil {
		return err
	}

	f.startStorm(flapSeed)
	// Let the storm reach its stride before the window opens.
	if err := sleepCtx(ctx, max(e.opts.Warmup, flapPhaseMax)); err != nil {
		return err
	}
	before, err := scrapeMetrics(ctx, e.gw.ctrlMetrics)
	if err != nil {
		return err
	}
	sched, err := loadtest.ParseSchedule(fmt.Sprint(e.opts.FlapRate))
	if err != nil {
		return err
	}
	cfg := loadtest.Config{Target: e.gw.addr, Paths: []string{flapPrefix + "/item"}, Conns: e.opts.Conns, Schedule: sched, Timeout: 2 * time.Second}
	e.logf("flap storm: %d endpoints, window %v", flapEndpoints, e.opts.FlapDuration)
	f.recording.Store(true)
	from := time.Now()
	run, err := e.measured(ctx, TargetSnapgate, "snapgate under a flap storm", cfg, e.opts.FlapDuration)
	to := time.Now()
	f.recording.Store(false)
	if err != nil {
		return err
	}
	sc.Runs = append(sc.Runs, run)
	after, err := scrapeMetrics(ctx, e.gw.ctrlMetrics)
	if err != nil {
		return err
	}
	f.endStorm()

	builds, err := snapshotBuilds(e.gw.ctrl.logPath)
	if err != nil {
		return err
	}
	st, err := f.stats(builds, before, after, from, to, capPerSec)
	if err != nil {
		return err
	}
	sc.Flap = st
	sc.Facts = st.facts()
	sc.Extra = append(sc.Extra, Series{Label: "age of the down endpoint at each down hit", Points: curveOf(f.ages())})
	e.logf("flap storm: %d versions (%.1f/s, busiest second %d, cap %d), %.2f%% of requests reached a down endpoint, %.3f%% beyond the %v bound",
		st.Versions, st.VersionsPerSecond, st.Busiest, capPerSec, 100*st.DownShare(), 100*st.BeyondShare(), st.Bound.Round(time.Millisecond))
	return st.checkCap()
}

// checkCap fails a storm in which some one-second window held more
// versions than ctrl's cap. (The mean over the whole window is no test:
// N builds at least 1/cap apart fit in a window of (N-1)/cap, so a short
// window can hold one more than cap × its length.)
func (s *FlapStats) checkCap() error {
	if s.Busiest > s.Cap {
		return fmt.Errorf("ctrl built %d snapshot versions within one second of the storm, above its cap of %d/s", s.Busiest, s.Cap)
	}
	return nil
}

// flapClusterDoc is the storm cluster's document for `ctl cluster put -f`.
func flapClusterDoc(addrs []string) ([]byte, error) {
	type endpoint struct {
		Address string `json:"address"`
	}
	type health struct {
		Type               string   `json:"type"`
		Path               string   `json:"path"`
		IntervalMs         int64    `json:"interval_ms"`
		JitterMs           int64    `json:"jitter_ms"`
		TimeoutMs          int64    `json:"timeout_ms"`
		ExpectedStatuses   []string `json:"expected_statuses"`
		UnhealthyThreshold int      `json:"unhealthy_threshold"`
		HealthyThreshold   int      `json:"healthy_threshold"`
	}
	doc := struct {
		ID        string     `json:"id"`
		Endpoints []endpoint `json:"endpoints"`
		Health    health     `json:"health"`
	}{ID: flapClusterID, Health: health{Type: "http", Path: flapHealthPath, IntervalMs: flapInterval.Milliseconds(),
		JitterMs: flapJitter.Milliseconds(), TimeoutMs: flapInterval.Milliseconds(), ExpectedStatuses: []string{"200-299"},
		UnhealthyThreshold: flapUnhealthyAfter, HealthyThreshold: flapHealthyAfter}}
	for _, a := range addrs {
		doc.Endpoints = append(doc.Endpoints, endpoint{a})
	}
	return json.MarshalIndent(doc, "", "  ")
}

// flapper serves the storm's endpoints from the bench process: while an
// endpoint is up every path answers 200 and BackendBody(name), while it is
// down 503 (the health path too). Each counts the requests it gets, other
// than health probes, while recording is set.
type flapper struct {
	eps         []*flapEndpoint
	cancelServe context.CancelFunc
	serving     sync.WaitGroup
	serveErrs   []error

	stopStorm context.CancelFunc
	storm     sync.WaitGroup

	recording        atomic.Bool
	upHits, downHits atomic.Int64
	mu               sync.Mutex
	downAges         []time.Duration // how long the endpoint had been down, per down hit
}

type flapEndpoint struct {
	name, addr string
	downSince  atomic.Int64 // unix nanoseconds; 0 while up
	// downs are the down phases; written by the storm goroutine, read
	// once it has ended.
	downs []span
}

type span struct{ from, to time.Time }

// startFlapper listens on n ports of 127.0.0.1 and serves them, all up.
func startFlapper(n int) (*flapper, error) {
	ctx, cancel := context.WithCancel(context.Background())
	f := &flapper{cancelServe: cancel, serveErrs: make([]error, n)}
	for i := range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			f.close()
			return nil, fmt.Errorf("flap endpoint %d: %w", i, err)
		}
		ep := &flapEndpoint{name: fmt.Sprintf("flap-%03d", i), addr: ln.Addr().String()}
		f.eps = append(f.eps, ep)
		answer := f.answer(ep)
		f.serving.Go(func() { f.serveErrs[i] = serveHTTP(ctx, ln, "flap endpoint "+ep.name, answer) })
	}
	return f, nil
}

func (f *flapper) addrs() []string {
	a := make([]string, len(f.eps))
	for i, ep := range f.eps {
		a[i] = ep.addr
	}
	return a
}

// healthRequest starts the request line of ctrl's probe.
var healthRequest = []byte("GET " + flapHealthPath + " ")

func (f *flapper) answer(ep *flapEndpoint) answerFunc {
	up := cannedResponse("200 OK", BackendBody(ep.name))
	down := cannedResponse("503 Service Unavailable", BackendBody("down "+ep.name))
	return func(head []byte) []byte {
		since := ep.downSince.Load()
		if f.recording.Load() && !bytes.HasPrefix(head, healthRequest) {
			f.count(since)
		}
		if since != 0 {
			return down
		}
		return up
	}
}

func (f *flapper) count(downSince int64) {
	if downSince == 0 {
		f.upHits.Add(1)
		return
	}
	f.downHits.Add(1)
	age := time.Duration(time.Now().UnixNano() - downSince)
	f.mu.Lock()
	f.downAges = append(f.downAges, age)
	f.mu.Unlock()
}

// ages returns how long the endpoint had been down at each down hit.
func (f *flapper) ages() []time.Duration {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.downAges)
}

// startStorm starts flapping every endpoint, each on its own schedule.
func (f *flapper) startStorm(seed uint64) {
	ctx, cancel := context.WithCancel(context.Background())
	f.stopStorm = cancel
	for i, ep := range f.eps {
		rng := rand.New(rand.NewPCG(seed, uint64(i)))
		f.storm.Go(func() { ep.flap(ctx, rng) })
	}
}

// endStorm stops the flapping and leaves every endpoint up. It is a no-op
// when no storm runs.
func (f *flapper) endStorm() {
	if f.stopStorm == nil {
		return
	}
	f.stopStorm()
	f.storm.Wait()
	f.stopStorm = nil
}

// close stops serving and returns what went wrong while serving.
func (f *flapper) close() error {
	f.endStorm()
	f.cancelServe()
	f.serving.Wait()
	return errors.Join(f.serveErrs...)
}

// flap takes the endpoint down and up in turn until ctx ends, and leaves
// it up. The first up phase is a random part of the longest one, so that
// the endpoints fall out of step at once.
func (ep *flapEndpoint) flap(ctx context.Context, rng *rand.Rand) {
	t := time.NewTimer(time.Duration(rng.Int64N(int64(flapPhaseMax))))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			if ep.downSince.Load() != 0 {
				ep.goUp(time.Now())
			}
			return
		case <-t.C:
		}
		now := time.Now()
		if ep.downSince.Load() == 0 {
			ep.downs = append(ep.downs, span{from: now})
			ep.downSince.Store(now.UnixNano())
		} else {
			ep.goUp(now)
		}
		t.Reset(flapPhaseMin + time.Duration(rng.Int64N(int64(flapPhaseMax-flapPhaseMin))))
	}
}

func (ep *flapEndpoint) goUp(now time.Time) {
	ep.downSince.Store(0)
	ep.downs[len(ep.downs)-1].to = now
}

// stats computes the outcome of a storm window [from, to) once the storm
// has ended: versions from ctrl's log, lag and counters from its metrics
// scraped before and after, hits from the endpoints.
func (f *flapper) stats(builds []SnapshotBuild, before, after map[string]float64, from, to time.Time, capPerSec int) (*FlapStats, error) {
	window := to.Sub(from)
	st := &FlapStats{Endpoints: len(f.eps), Window: window, Cap: capPerSec}
	var times []time.Time
	for _, b := range builds {
		if !b.Time.Before(from) && b.Time.Before(to) {
			times = append(times, b.Time)
		}
	}
	st.Versions, st.PerSecond, st.Busiest, st.MinGap = versionRate(times, from, to)
	st.VersionsPerSecond = float64(st.Versions) / window.Seconds()
	st.Transitions = after[`snapgate_ctrl_health_transitions_total{to="healthy"}`] + after[`snapgate_ctrl_health_transitions_total{to="unhealthy"}`] -
		before[`snapgate_ctrl_health_transitions_total{to="healthy"}`] - before[`snapgate_ctrl_health_transitions_total{to="unhealthy"}`]
	st.Publications = after["snapgate_ctrl_health_published_total"] - before["snapgate_ctrl_health_published_total"]

	h, err := histogramBetween(before, after, propagationMetric)
	if err != nil {
		return nil, err
	}
	if h.count <= 0 {
		return nil, errors.New("no edge acknowledged a snapshot during the storm")
	}
	st.Acks, st.PropagationP50, st.PropagationP99, st.PropagationMean = h.count, h.quantile(0.5), h.quantile(0.99), h.sum/h.count
	// The bound: N probes, each at most interval + jitter after the
	// previous; one store write; the publication gate; then propagation
	// to the edge at its p99 (beyond the histogram's last bucket, the
	// whole window: nothing is then beyond the bound).
	prop := min(st.PropagationP99, window.Seconds())
	st.Bound = flapUnhealthyAfter*(flapInterval+flapJitter) + healthFlushInterval + time.Second/time.Duration(capPerSec) +
		time.Duration(prop*float64(time.Second))

	st.DownHits, st.Requests = f.downHits.Load(), f.upHits.Load()+f.downHits.Load()
	ages := f.ages()
	for _, a := range ages {
		if a > st.Bound {
			st.DownHitsBeyond++
		}
	}
	if len(ages) > 0 {
		s := durationStats(ages)
		st.DownAgeP50, st.DownAgeP99, st.DownAgeMax = s.p50, s.p99, s.max
	}
	var down, beyond time.Duration
	for _, ep := range f.eps {
		for _, s := range ep.downs {
			down += overlap(s.from, s.to, from, to)
			beyond += overlap(s.from.Add(st.Bound), s.to, from, to)
		}
	}
	endpointTime := float64(window) * float64(len(f.eps))
	st.DownTimeShare, st.BeyondTimeShare = float64(down)/endpointTime, float64(beyond)/endpointTime
	return st, nil
}

// overlap is the length of [a, b) ∩ [c, d).
func overlap(a, b, c, d time.Time) time.Duration {
	if a.Before(c) {
		a = c
	}
	if b.After(d) {
		b = d
	}
	return max(0, b.Sub(a))
}

// versionRate counts sorted times within [from, to): in total, in each
// whole second from from, and the most in any one-second window; and it
// returns the least gap between two of them (0 for fewer than two).
func versionRate(times []time.Time, from, to time.Time) (total int, perSecond []int, busiest int, minGap time.Duration) {
	perSecond = make([]int, int(to.Sub(from)/time.Second))
	j := 0
	for i, t := range times {
		if k := int(t.Sub(from) / time.Second); k < len(perSecond) {
			perSecond[k]++
		}
		for j < len(times) && times[j].Before(t.Add(time.Second)) {
			j++
		}
		busiest = max(busiest, j-i)
		if i > 0 && (i == 1 || t.Sub(times[i-1]) < minGap) {
			minGap = t.Sub(times[i-1])
		}
	}
	return len(times), perSecond, busiest, minGap
}

// facts are the scenario's lines in report.md.
func (s *FlapStats) facts() []Fact {
	verdict := "within the cap"
	if s.checkCap() != nil {
		verdict = "ABOVE the cap"
	}
	return []Fact{
		{"snapshot versions", fmt.Sprintf("%d in %s: %.1f/s against a cap of %d/s; each whole second: %v; busiest one-second window %d (%s), closest two builds %s apart",
			s.Versions, fmtSeconds(s.Window), s.VersionsPerSecond, s.Cap, s.PerSecond, s.Busiest, verdict, fmtLatency(s.MinGap))},
		{"health changes", fmt.Sprintf("%.0f damped transitions (%.0f/s) went out in %.0f publications of the health view",
			s.Transitions, s.Transitions/s.Window.Seconds(), s.Publications)},
		{"propagation, commit → edge ACK (ctrl's histogram)", fmt.Sprintf("p50 %s, p99 %s, mean %s over %.0f ACKs",
			fmtBucket(s.PropagationP50), fmtBucket(s.PropagationP99), fmtLatency(time.Duration(s.PropagationMean*float64(time.Second))), s.Acks)},
		{"detection bound", fmt.Sprintf("%s = %d × (%v + %v jitter) + %v store write + %v publication gate + p99 propagation",
			fmtLatency(s.Bound), flapUnhealthyAfter, flapInterval, flapJitter, healthFlushInterval, time.Second/time.Duration(s.Cap))},
		{"requests that reached a down endpoint", fmt.Sprintf("%d of %d (%s); the endpoints were down %s of the time, the share a gateway without health checks would send them",
			s.DownHits, s.Requests, fmtPercent(s.DownShare()), fmtPercent(s.DownTimeShare))},
		{"… down for longer than the detection bound", fmt.Sprintf("%d (%s); endpoints spent %s of the time down beyond the bound",
			s.DownHitsBeyond, fmtPercent(s.BeyondShare()), fmtPercent(s.BeyondTimeShare))},
		{"age of the down endpoint at a down hit", fmt.Sprintf("p50 %s, p99 %s, max %s", fmtLatency(s.DownAgeP50), fmtLatency(s.DownAgeP99), fmtLatency(s.DownAgeMax))},
	}
}
