package loadtest

import (
	"fmt"
	"io"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Result is what a run measured. Its JSON form (snapgate load -o json) is
// stable: fields are only ever added. Durations are integer nanoseconds.
type Result struct {
	Target   string `json:"target"`
	Mode     string `json:"mode"` // "open" or "closed"
	Schedule string `json:"schedule"`
	Conns    int    `json:"conns"`
	// Start is when the run (its warmup, if any) began.
	Start  time.Time     `json:"start"`
	Warmup time.Duration `json:"warmup_ns"`
	// Duration is the measured window; shorter than asked when Interrupted.
	Duration time.Duration `json:"duration_ns"`
	// Elapsed runs from the window's start to the last measured response,
	// at least Duration; Rate is computed over it.
	Elapsed     time.Duration `json:"elapsed_ns"`
	Interrupted bool          `json:"interrupted"`

	// Scheduled is the number of requests due in the window (open loop), or
	// Sent (closed loop).
	Scheduled int64 `json:"scheduled"`
	// Sent counts requests attempted, including those that failed to connect.
	Sent int64 `json:"sent"`
	// Completed counts complete responses, whatever their status.
	Completed int64 `json:"completed"`
	// Unsent counts scheduled requests never sent: the connections were busy
	// until Timeout after the window's end. They count as errors.
	Unsent int64 `json:"unsent"`
	// Backlogged counts requests sent late because every connection was busy
	// at their scheduled time; their latency includes the wait.
	Backlogged int64 `json:"backlogged"`
	// Status counts responses by status code ("200": n).
	Status map[string]int64 `json:"status"`
	// Errors counts requests without a complete response by cause: refused,
	// connect, timeout, reset, closed, bad_response, other.
	Errors map[string]int64 `json:"errors"`
	// ErrorRate is (errors + unsent + 5xx responses) / Scheduled.
	ErrorRate float64 `json:"error_rate"`

	TargetRate float64 `json:"target_rate"` // Scheduled / Duration; 0 in closed loop
	Rate       float64 `json:"rate"`        // Completed / Elapsed

	// Latency of complete responses, from the scheduled send time (open loop)
	// or the actual send (closed loop), and of requests that timed out, at
	// the time they were given up on (at least Timeout): a latency
	// objective must not pass with requests unanswered.
	Latency Summary `json:"latency"`
	// Pacer is how late the client sent requests it was not backlogged on:
	// the generator's own noise floor. Empty in closed loop.
	Pacer Summary `json:"pacer"`
	// Curve is the latency percentile curve, log-spaced toward the tail.
	Curve []Point `json:"curve"`

	// SLO and Violations are set when Config.SLO had objectives.
	SLO        string      `json:"slo,omitempty"`
	Violations []Violation `json:"violations"`

	hist *hdrhistogram.Histogram
}

// Summary is a latency distribution in a few numbers.
type Summary struct {
	Count int64         `json:"count"`
	Mean  time.Duration `json:"mean_ns"`
	P50   time.Duration `json:"p50_ns"`
	P90   time.Duration `json:"p90_ns"`
	P99   time.Duration `json:"p99_ns"`
	P999  time.Duration `json:"p999_ns"`
	Max   time.Duration `json:"max_ns"`
}

// Point is one point of a latency percentile curve: Quantile (0 to 1) of the
// responses took at most Latency.
type Point struct {
	Quantile float64       `json:"quantile"`
	Latency  time.Duration `json:"latency_ns"`
}

// Percentiles returns the latency percentile curve: quantiles 0, 0.9, 0.99,
// 0.999 … with ten points per decade of 1-q, down to one response, then the
// maximum. Plot it with 1/(1-q) on a log axis.
func (r *Result) Percentiles() []Point { return r.Curve }

// Histogram returns the merged latency histogram (nanoseconds), or nil for a
// Result decoded from JSON.
func (r *Result) Histogram() *hdrhistogram.Histogram { return r.hist }

// Passed reports whether every SLO objective held (true when none was set).
func (r *Result) Passed() bool { return len(r.Violations) == 0 }

func summarize(h *hdrhistogram.Histogram) Summary {
	if h.TotalCount() == 0 {
		return Summary{}
	}
	return Summary{
		Count: h.TotalCount(),
		Mean:  time.Duration(h.Mean()),
		P50:   time.Duration(atQuantile(h, 0.5)),
		P90:   time.Duration(atQuantile(h, 0.9)),
		P99:   time.Duration(atQuantile(h, 0.99)),
		P999:  time.Duration(atQuantile(h, 0.999)),
		Max:   time.Duration(h.Max()),
	}
}

// atQuantile is h's nearest-rank quantile q: the smallest recorded value
// with at least ceil(q·n) of the n samples at or below it. hdrhistogram-go
// rounds that rank to the nearest integer instead (int(q·n + 0.5)), one
// sample low at the edge: with 11 of 1,060 samples slow, its p99 was the
// fast value. Asking it for rank k - 0.25 makes its rounding land on k.
func atQuantile(h *hdrhistogram.Histogram, q float64) int64 {
	n := h.TotalCount()
	if n == 0 {
		return 0
	}
	k := min(max(int64(math.Ceil(q*float64(n)-1e-9)), 1), n)
	return h.ValueAtPercentile(100 * (float64(k) - 0.25) / float64(n))
}

// curve samples h at 1-q = 10^(-i/10) until fewer than one response lies
// beyond q, then adds the maximum.
func curve(h *hdrhistogram.Histogram) []Point {
	n := h.TotalCount()
	if n == 0 {
		return nil
	}
	var pts []Point
	for i := 0; ; i++ {
		tail := math.Pow(10, -float64(i)/10)
		if tail*float64(n) < 1 {
			break
		}
		q := 1 - tail
		pts = append(pts, Point{Quantile: q, Latency: time.Duration(atQuantile(h, q))})
	}
	return append(pts, Point{Quantile: 1, Latency: time.Duration(h.Max())})
}

func (r *runner) result() *Result {
	lat := hdrhistogram.New(latLowest, r.histMax, 3)
	pacer := hdrhistogram.New(pacerLowest, r.histMax, 2)
	res := &Result{
		Target:   r.cfg.Target,
		Mode:     "open",
		Schedule: r.cfg.Schedule.String(),
		Conns:    r.cfg.Conns,
		Start:    r.start,
		Warmup:   r.cfg.Warmup,
		Duration: r.cfg.Duration,
		Status:   map[string]int64{},
		Errors:   map[string]int64{},
		hist:     lat,
	}
	if r.closed {
		res.Mode = "closed"
	}
	var status [600]int64
	var errs [numCauses]int64
	var lastDone time.Time
	for _, w := range r.workers {
		lat.Merge(w.lat)
		pacer.Merge(w.pacer)
		for i, n := range w.status {
			status[i] += n
		}
		for i, n := range w.errs {
			errs[i] += n
		}
		res.Sent += w.sent
		res.Completed += w.completed
		res.Backlogged += w.backlogged
		if w.lastDone.After(lastDone) {
			lastDone = w.lastDone
		}
	}
	var failed int64
	for code, n := range status {
		if n > 0 {
			res.Status[strconv.Itoa(code)] = n
			if code >= 500 {
				failed += n
			}
		}
	}
	for c, n := range errs {
		if n > 0 {
			res.Errors[causeNames[c]] = n
			failed += n
		}
	}

	r.stopMu.Lock()
	stopAt := r.stopAt
	r.stopMu.Unlock()
	if !stopAt.IsZero() && stopAt.Before(r.end) {
		res.Duration = max(stopAt.Sub(r.measureStart), 0)
	}
	if r.closed {
		res.Scheduled = res.Sent
	} else {
		last := r.endSlot
		if !stopAt.IsZero() && stopAt.Before(r.end) {
			last = r.plan.slots(stopAt.Sub(r.start).Seconds())
		}
		res.Scheduled = max(last-r.warmSlots, 0)
		res.Unsent = max(res.Scheduled-res.Sent, 0)
		failed += res.Unsent
		if s := res.Duration.Seconds(); s > 0 {
			res.TargetRate = float64(res.Scheduled) / s
		}
	}
	res.Elapsed = max(res.Duration, lastDone.Sub(r.measureStart))
	if s := res.Elapsed.Seconds(); s > 0 {
		res.Rate = float64(res.Completed) / s
	}
	if res.Scheduled > 0 {
		res.ErrorRate = float64(failed) / float64(res.Scheduled)
	}
	res.Latency = summarize(lat)
	res.Pacer = summarize(pacer)
	res.Curve = curve(lat)
	if len(r.cfg.SLO.Objectives) > 0 {
		res.SLO = r.cfg.SLO.String()
		res.Violations = res.Check(r.cfg.SLO)
		if res.Violations == nil {
			res.Violations = []Violation{}
		}
	}
	return res
}

// WriteText writes r as the human-readable report of snapgate load.
func (r *Result) WriteText(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "target     %s, %s loop, schedule %s, %d conns, %s measured", r.Target, r.Mode, r.Schedule, r.Conns, fmtDur(r.Duration))
	if r.Warmup > 0 {
		fmt.Fprintf(&b, " after %s warmup", fmtDur(r.Warmup))
	}
	if r.Interrupted {
		b.WriteString(" (interrupted)")
	}
	b.WriteString("\n")
	fmt.Fprintf(&b, "requests   scheduled %d, sent %d, completed %d, unsent %d, backlogged %d\n",
		r.Scheduled, r.Sent, r.Completed, r.Unsent, r.Backlogged)
	if r.Mode == "open" {
		fmt.Fprintf(&b, "rate       %.1f/s achieved, %.1f/s scheduled\n", r.Rate, r.TargetRate)
	} else {
		fmt.Fprintf(&b, "rate       %.1f/s achieved\n", r.Rate)
	}
	from := "scheduled send"
	if r.Mode == "closed" {
		from = "actual send"
	}
	fmt.Fprintf(&b, "latency    %s   (from %s)\n", r.Latency.text(), from)
	if r.Pacer.Count > 0 {
		fmt.Fprintf(&b, "pacer      p50 %s  p99 %s  max %s   (how late the client itself sent)\n",
			fmtDur(r.Pacer.P50), fmtDur(r.Pacer.P99), fmtDur(r.Pacer.Max))
	}
	fmt.Fprintf(&b, "status     %s\n", fmtCounts(r.Status, "none"))
	fmt.Fprintf(&b, "errors     %s, error rate %s\n", fmtCounts(r.Errors, "none"), fmtPercent(r.ErrorRate))
	if r.SLO != "" {
		if len(r.Violations) == 0 {
			fmt.Fprintf(&b, "slo        pass (%s)\n", r.SLO)
		} else {
			parts := make([]string, len(r.Violations))
			for i, v := range r.Violations {
				parts[i] = v.String()
			}
			fmt.Fprintf(&b, "slo        FAIL: %s\n", strings.Join(parts, "; "))
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func (s Summary) text() string {
	if s.Count == 0 {
		return "no responses"
	}
	return fmt.Sprintf("p50 %s  p90 %s  p99 %s  p99.9 %s  max %s",
		fmtDur(s.P50), fmtDur(s.P90), fmtDur(s.P99), fmtDur(s.P999), fmtDur(s.Max))
}

func fmtCounts(m map[string]int64, empty string) string {
	if len(m) == 0 {
		return empty
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s: %d", k, m[k])
	}
	return strings.Join(parts, ", ")
}

// fmtDur rounds d to three significant digits: 1.23ms, not 1.234567ms.
func fmtDur(d time.Duration) string {
	if d <= 0 {
		return d.String()
	}
	unit := time.Duration(1)
	for x := d; x >= 1000; x /= 10 {
		unit *= 10
	}
	return d.Round(unit).String()
}

func fmtPercent(f float64) string {
	return strconv.FormatFloat(f*100, 'g', 4, 64) + "%"
}
