package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net"
	"os"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestVersionRate(t *testing.T) {
	from := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(ms ...int) []time.Time {
		var ts []time.Time
		for _, m := range ms {
			ts = append(ts, from.Add(time.Duration(m)*time.Millisecond))
		}
		return ts
	}
	// Builds every 100 ms, one of them 40 ms late: the window from 860 ms
	// catches 11. The last, partial second counts only in the total.
	times := at(0, 100, 200, 300, 400, 500, 600, 700, 860, 900, 1000, 1100, 1200, 1300, 1400, 1500, 1600, 1700, 1800, 2500)
	total, perSecond, busiest, minGap := versionRate(times, from, from.Add(2600*time.Millisecond))
	if total != 20 || !slices.Equal(perSecond, []int{10, 9}) || busiest != 11 || minGap != 40*time.Millisecond {
		t.Fatalf("versionRate = %d, %v, %d, %v", total, perSecond, busiest, minGap)
	}
	total, perSecond, busiest, minGap = versionRate(nil, from, from.Add(time.Second))
	if total != 0 || !slices.Equal(perSecond, []int{0}) || busiest != 0 || minGap != 0 {
		t.Fatalf("no builds: %d, %v, %d, %v", total, perSecond, busiest, minGap)
	}
}

func TestOverlap(t *testing.T) {
	t0 := time.Unix(1000, 0)
	s := func(n int) time.Time { return t0.Add(time.Duration(n) * time.Second) }
	for _, tc := range []struct {
		a, b, c, d int
		want       time.Duration
	}{
		{0, 10, 2, 5, 3 * time.Second},
		{3, 4, 0, 10, time.Second},
		{0, 3, 2, 10, time.Second},
		{0, 2, 3, 10, 0},
		{5, 4, 0, 10, 0}, // a bound past the end of its phase
	} {
		if got := overlap(s(tc.a), s(tc.b), s(tc.c), s(tc.d)); got != tc.want {
			t.Errorf("overlap(%d, %d, %d, %d) = %v, want %v", tc.a, tc.b, tc.c, tc.d, got, tc.want)
		}
	}
}

func TestFlapStatsCap(t *testing.T) {
	for _, tc := range []struct {
		busiest int
		ok      bool
	}{{9, true}, {10, true}, {11, false}} {
		s := FlapStats{Cap: 10, Busiest: tc.busiest}
		if err := s.checkCap(); (err == nil) != tc.ok {
			t.Errorf("busiest %d: checkCap = %v", tc.busiest, err)
		}
	}
}

const metricsPage = `# HELP x
# TYPE snapgate_ctrl_propagation_seconds histogram
snapgate_ctrl_propagation_seconds_bucket{le="0.001"} 1
snapgate_ctrl_propagation_seconds_bucket{le="0.002"} 3
snapgate_ctrl_propagation_seconds_bucket{le="0.004"} 9
snapgate_ctrl_propagation_seconds_bucket{le="+Inf"} 10
snapgate_ctrl_propagation_seconds_sum 0.025
snapgate_ctrl_propagation_seconds_count 10
snapgate_ctrl_health_transitions_total{to="healthy"} 4
snapgate_ctrl_health_published_total 7 1700000000000

go_goroutines 12
`

func TestParseMetricsAndHistogram(t *testing.T) {
	m, err := ParseMetrics([]byte(metricsPage))
	if err != nil {
		t.Fatal(err)
	}
	if m[`snapgate_ctrl_health_transitions_total{to="healthy"}`] != 4 || m["snapgate_ctrl_health_published_total"] != 7 || m["go_goroutines"] != 12 || len(m) != 9 {
		t.Fatalf("ParseMetrics = %v", m)
	}
	before := map[string]float64{`snapgate_ctrl_propagation_seconds_bucket{le="0.001"}`: 1, `snapgate_ctrl_propagation_seconds_bucket{le="0.002"}`: 1,
		`snapgate_ctrl_propagation_seconds_bucket{le="0.004"}`: 1, `snapgate_ctrl_propagation_seconds_bucket{le="+Inf"}`: 1,
		"snapgate_ctrl_propagation_seconds_sum": 0.001, "snapgate_ctrl_propagation_seconds_count": 1}
	h, err := histogramBetween(before, m, "snapgate_ctrl_propagation_seconds")
	if err != nil {
		t.Fatal(err)
	}
	// 9 new observations: 0 ≤ 1 ms, 2 in (1, 2], 6 in (2, 4], 1 above.
	if h.count != 9 || math.Abs(h.sum-0.024) > 1e-9 || h.quantile(0.2) != 0.002 || h.quantile(0.5) != 0.004 || !math.IsInf(h.quantile(0.99), 1) {
		t.Fatalf("histogram %+v: p20 %g p50 %g p99 %g", h, h.quantile(0.2), h.quantile(0.5), h.quantile(0.99))
	}
	if fmtBucket(0.004) != "≤ 4ms" || fmtBucket(math.NaN()) != "—" {
		t.Errorf("fmtBucket: %q %q", fmtBucket(0.004), fmtBucket(math.NaN()))
	}
	if _, err := histogramBetween(nil, m, "missing"); err == nil {
		t.Error("a histogram absent from the scrape was accepted")
	}
	for _, bad := range []string{"x", "x{a=\"1\" 2", "x 1 2 3", "x one", "{} 1"} {
		if _, err := ParseMetrics([]byte(bad)); err == nil || !strings.Contains(err.Error(), "line 1") {
			t.Errorf("ParseMetrics(%q) = %v, want an error naming line 1", bad, err)
		}
	}
}

func FuzzParseMetrics(f *testing.F) {
	f.Add([]byte(metricsPage))
	f.Add([]byte("a{b=\"}\"} 1\n"))
	f.Add([]byte("x NaN\ny +Inf 12\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := ParseMetrics(b)
		if err != nil {
			return
		}
		for series := range m {
			if series == "" || strings.ContainsAny(series, "\n") {
				t.Fatalf("accepted series %q from %q", series, b)
			}
		}
		// Whatever parsed, the histogram code must not panic on it.
		if h, err := histogramBetween(m, m, "x"); err == nil {
			h.quantile(0.5)
		}
	})
}

func TestFlapClusterDoc(t *testing.T) {
	doc, err := flapClusterDoc([]string{"127.0.0.1:1", "127.0.0.1:2"})
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		ID        string `json:"id"`
		Endpoints []struct {
			Address string `json:"address"`
		} `json:"endpoints"`
		Health map[string]any `json:"health"`
	}
	if err := json.Unmarshal(doc, &got); err != nil {
		t.Fatal(err)
	}
	if got.ID != flapClusterID || len(got.Endpoints) != 2 || got.Endpoints[1].Address != "127.0.0.1:2" ||
		got.Health["interval_ms"] != 100.0 || got.Health["unhealthy_threshold"] != 2.0 || got.Health["path"] != flapHealthPath {
		t.Fatalf("cluster document:\n%s", doc)
	}
}

// flapGet sends one request over c and returns status and body.
func flapGet(t *testing.T, c net.Conn, r *bufio.Reader, path string) (int, string) {
	t.Helper()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", path)
	status, body, err := readResponse(r, nil)
	if err != nil {
		t.Fatal(err)
	}
	return status, string(body)
}

func TestFlapperServesAndCounts(t *testing.T) {
	f, err := startFlapper(2)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := f.close(); err != nil {
			t.Error(err)
		}
	}()
	ep := f.eps[1]
	c, err := net.Dial("tcp", ep.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := bufio.NewReader(c)
	if st, body := flapGet(t, c, r, "/flap/x"); st != 200 || !strings.HasPrefix(body, "flap-001.") {
		t.Fatalf("up: %d %q", st, body)
	}
	f.recording.Store(true)
	flapGet(t, c, r, "/flap/x")
	ep.downs = append(ep.downs, span{from: time.Now()})
	ep.downSince.Store(time.Now().Add(-time.Second).UnixNano())
	if st, body := flapGet(t, c, r, flapHealthPath); st != 503 || !strings.HasPrefix(body, "down flap-001") {
		t.Fatalf("health path while down: %d %q", st, body)
	}
	if st, _ := flapGet(t, c, r, "/flap/y"); st != 503 {
		t.Fatalf("down: %d", st)
	}
	ep.goUp(time.Now())
	if st, _ := flapGet(t, c, r, flapHealthPath); st != 200 {
		t.Fatalf("health path while up: %d", st)
	}
	f.recording.Store(false)
	flapGet(t, c, r, "/flap/z")
	ages := f.ages()
	if f.upHits.Load() != 1 || f.downHits.Load() != 1 || len(ages) != 1 || ages[0] < time.Second {
		t.Fatalf("counted %d up, %d down, ages %v; want 1, 1 and one age of at least 1s", f.upHits.Load(), f.downHits.Load(), ages)
	}
}

func TestFlapStormSchedules(t *testing.T) {
	f, err := startFlapper(3)
	if err != nil {
		t.Fatal(err)
	}
	defer f.close()
	f.startStorm(flapSeed)
	time.Sleep(2 * flapPhaseMax)
	f.endStorm()
	f.endStorm() // a second end is a no-op
	for _, ep := range f.eps {
		if ep.downSince.Load() != 0 {
			t.Errorf("%s still down after the storm", ep.name)
		}
		if len(ep.downs) == 0 {
			t.Errorf("%s never went down in %v", ep.name, 2*flapPhaseMax)
		}
		for i, s := range ep.downs {
			// Timers fire late on a busy machine, never early.
			if d := s.to.Sub(s.from); d < flapPhaseMin && i < len(ep.downs)-1 {
				t.Errorf("%s: down phase %d lasted %v, below %v", ep.name, i, d, flapPhaseMin)
			}
			if i > 0 && s.from.Sub(ep.downs[i-1].to) < flapPhaseMin {
				t.Errorf("%s: up phase before down %d lasted %v", ep.name, i, s.from.Sub(ep.downs[i-1].to))
			}
		}
	}
}

// TestFlapAgainstRealProcesses runs the flap scenario briefly with a cap
// of 4 versions per second, below ctrl's default, and checks the storm's
// versions against it: Run fails the scenario otherwise.
func TestFlapAgainstRealProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	bin := buildSnapgate(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	var log bytes.Buffer
	const capPerSec = 4
	// A steady run after the storm: the harness's wait for the edge to apply
	// ctrl's configuration must not be fooled by the probes' health writes.
	rep, err := Run(ctx, Options{Bin: bin, Scenarios: []string{ScenarioFlap, ScenarioSteady}, FlapDuration: 2 * time.Second, FlapRate: 200,
		HealthMaxVersionsPerSecond: capPerSec, Rates: []float64{200}, Duration: time.Second, NoMax: true,
		Warmup: 200 * time.Millisecond, Conns: 4, NoPeers: true, NoPin: true, Log: &log})
	if rep != nil {
		defer os.RemoveAll(rep.WorkDir)
	}
	if err != nil {
		t.Fatalf("Run: %v\nlog:\n%s", err, log.String())
	}
	if len(rep.Scenarios) != 2 || !strings.HasPrefix(rep.Scenarios[1].Name, ScenarioSteady) || len(rep.Scenarios[1].Runs) == 0 {
		t.Fatalf("the steady scenario after the storm did not run: %d scenarios (%v)", len(rep.Scenarios), rep.Scenarios[len(rep.Scenarios)-1].Name)
	}
	sc := rep.Scenarios[0]
	st := sc.Flap
	if sc.Name != "flap" || st == nil || len(sc.Runs) != 1 {
		t.Fatalf("scenario %q, flap %+v, %d runs", sc.Name, st, len(sc.Runs))
	}
	t.Logf("%d versions (%v per second, busiest %d), %.0f transitions, %.0f ACKs, p99 ≤ %gs, %d of %d requests down, %d beyond %v",
		st.Versions, st.PerSecond, st.Busiest, st.Transitions, st.Acks, st.PropagationP99, st.DownHits, st.Requests, st.DownHitsBeyond, st.Bound)
	if st.Versions == 0 || st.Transitions < float64(st.Versions) || st.Acks == 0 || st.Requests == 0 || st.DownHits == 0 {
		t.Errorf("the storm did not happen as planned: %+v", st)
	}
	if st.Busiest > capPerSec {
		t.Errorf("versions outran the cap of %d/s: %+v", capPerSec, st)
	}
	if st.DownTimeShare < 0.2 || st.DownTimeShare > 0.8 || st.Bound <= flapUnhealthyAfter*flapInterval {
		t.Errorf("down %.2f of the time, bound %v", st.DownTimeShare, st.Bound)
	}
	md := rep.Markdown()
	for _, want := range []string{"snapshot versions: ", "against a cap of 4/s", "requests that reached a down endpoint: ", "propagation, commit → edge ACK"} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q:\n%s", want, md)
		}
	}
	js, err := json.Marshal(rep)
	if err != nil || !bytes.Contains(js, []byte(`"busiest_second_versions"`)) {
		t.Errorf("report.json lacks the flap numbers: %v", err)
	}
	assertStopped(t, rep.WorkDir)
}
