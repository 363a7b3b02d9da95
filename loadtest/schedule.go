package loadtest

import (
	"errors"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"
)

// maxRate bounds a stage's rate. Ten million requests per second is far past
// what one client process can send; a larger number is a typo.
const maxRate = 1e7

// maxLength bounds a schedule's length, far past any sensible run, so that
// sums of stage durations cannot overflow.
const maxLength = 30 * 24 * time.Hour

// Stage is one piece of an open-loop schedule: the rate moves linearly from
// From to To requests per second over Duration (From == To for a step). A zero
// Duration means "until the run ends" and is allowed only on the last stage.
type Stage struct {
	From, To float64
	Duration time.Duration
}

// Schedule says when requests are sent. Closed means closed loop: every
// connection sends its next request as soon as the previous response is in,
// which measures maximum throughput but hides stalls. Otherwise Stages is an
// open-loop rate plan; past its end the last stage's final rate is held.
type Schedule struct {
	Closed bool
	Stages []Stage
}

// ParseSchedule parses the --rate syntax:
//
//	max                      closed loop, as fast as the connections allow
//	1000                     1000 requests/s for the whole run
//	1000:5s,2000:5s          steps: 1000/s for 5 s, then 2000/s for 5 s
//	100-1000:10s,1000        a linear ramp over 10 s, then 1000/s until the end
//
// Only the last stage may omit its duration; a ramp needs one.
func ParseSchedule(s string) (Schedule, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return Schedule{}, errors.New("schedule: empty; want a rate such as 1000, steps such as 1000:5s,2000:5s, or max")
	}
	if s == "max" {
		return Schedule{Closed: true}, nil
	}
	parts := strings.Split(s, ",")
	sch := Schedule{Stages: make([]Stage, 0, len(parts))}
	for i, p := range parts {
		st, err := parseStage(strings.TrimSpace(p), i == len(parts)-1)
		if err != nil {
			return Schedule{}, fmt.Errorf("schedule %q: stage %d %q: %w", s, i+1, p, err)
		}
		sch.Stages = append(sch.Stages, st)
	}
	if err := sch.Validate(); err != nil {
		return Schedule{}, err
	}
	return sch, nil
}

func parseStage(p string, last bool) (Stage, error) {
	ratePart, durPart, hasDur := strings.Cut(p, ":")
	var st Stage
	if hasDur {
		d, err := time.ParseDuration(durPart)
		if err != nil {
			return Stage{}, fmt.Errorf("duration %q: %w", durPart, err)
		}
		if d <= 0 {
			return Stage{}, fmt.Errorf("duration %q: must be positive", durPart)
		}
		st.Duration = d
	} else if !last {
		return Stage{}, errors.New("missing duration (only the last stage may omit it, as in 1000:5s,2000)")
	}
	from, to, isRamp := strings.Cut(ratePart, "-")
	var err error
	if st.From, err = parseRate(from); err != nil {
		return Stage{}, err
	}
	st.To = st.From
	if isRamp {
		if st.To, err = parseRate(to); err != nil {
			return Stage{}, err
		}
		if !hasDur {
			return Stage{}, errors.New("a ramp needs a duration, as in 100-1000:10s")
		}
	}
	return st, nil
}

func parseRate(s string) (float64, error) {
	if s == "" {
		return 0, errors.New("missing rate")
	}
	r, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return 0, fmt.Errorf("rate %q: not a number", s)
	}
	if math.IsNaN(r) || r < 0 || r > maxRate {
		return 0, fmt.Errorf("rate %q: want 0 to %g requests/s", s, float64(maxRate))
	}
	return r, nil
}

// Validate checks a Schedule built in Go rather than parsed.
func (s Schedule) Validate() error {
	if s.Closed {
		if len(s.Stages) > 0 {
			return errors.New("schedule: a closed-loop schedule has no stages")
		}
		return nil
	}
	if len(s.Stages) == 0 {
		return errors.New("schedule: no stages")
	}
	positive := false
	var total time.Duration
	for i, st := range s.Stages {
		if st.Duration > maxLength-total {
			return fmt.Errorf("schedule: longer than %v", maxLength)
		}
		total += st.Duration
		for _, r := range []float64{st.From, st.To} {
			if math.IsNaN(r) || r < 0 || r > maxRate {
				return fmt.Errorf("schedule: stage %d: rate %g: want 0 to %g requests/s", i+1, r, float64(maxRate))
			}
			positive = positive || r > 0
		}
		if st.Duration < 0 || (st.Duration == 0 && i != len(s.Stages)-1) {
			return fmt.Errorf("schedule: stage %d: duration %v: only the last stage may be open-ended", i+1, st.Duration)
		}
		if st.Duration == 0 && st.From != st.To {
			return fmt.Errorf("schedule: stage %d: a ramp needs a duration", i+1)
		}
	}
	if !positive {
		return errors.New("schedule: every rate is 0, nothing would be sent")
	}
	return nil
}

// Length is the sum of the stage durations; 0 if the last stage is open-ended.
func (s Schedule) Length() time.Duration {
	var total time.Duration
	for _, st := range s.Stages {
		if st.Duration == 0 {
			return 0
		}
		total += st.Duration
	}
	return total
}

// String formats s in the syntax ParseSchedule reads.
func (s Schedule) String() string {
	if s.Closed {
		return "max"
	}
	var b strings.Builder
	for i, st := range s.Stages {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.FormatFloat(st.From, 'f', -1, 64))
		if st.To != st.From {
			b.WriteByte('-')
			b.WriteString(strconv.FormatFloat(st.To, 'f', -1, 64))
		}
		if st.Duration > 0 {
			b.WriteByte(':')
			b.WriteString(st.Duration.String())
		}
	}
	return b.String()
}

// segment is a piece of the run's timeline with a linear rate and the number
// of requests scheduled before it.
type segment struct {
	start, dur float64 // seconds from the start of the run
	from, to   float64 // requests/s at start and end
	before     float64 // requests scheduled before start
}

func (g segment) count() float64 { return (g.from + g.to) / 2 * g.dur }

// plan is a schedule laid out over one run: warmup, stages, and the final rate
// held until the end. Slot k (the k-th request, from 0) is due at the time the
// cumulative count reaches k, so every request has an exact scheduled time
// that no stall on the client or the server can move.
type plan struct {
	segs  []segment
	total float64 // seconds
}

// newPlan lays s out over warmup+length. The warmup runs at the rate the
// schedule starts with.
func newPlan(s Schedule, warmup, length time.Duration) plan {
	var p plan
	add := func(dur, from, to float64) {
		if dur <= 0 {
			return
		}
		var start, before float64
		if n := len(p.segs); n > 0 {
			last := p.segs[n-1]
			start, before = last.start+last.dur, last.before+last.count()
		}
		p.segs = append(p.segs, segment{start: start, dur: dur, from: from, to: to, before: before})
	}
	add(warmup.Seconds(), s.Stages[0].From, s.Stages[0].From)
	left := length.Seconds()
	for _, st := range s.Stages {
		if left <= 0 {
			break
		}
		d := st.Duration.Seconds()
		if st.Duration == 0 || d > left {
			d = left
		}
		// A truncated ramp ends at the rate it had reached, not its target.
		to := st.From
		if st.Duration > 0 {
			to = st.From + (st.To-st.From)*d/st.Duration.Seconds()
		}
		add(d, st.From, to)
		left -= d
	}
	if left > 0 {
		r := s.Stages[len(s.Stages)-1].To
		add(left, r, r)
	}
	p.total = (warmup + length).Seconds()
	return p
}

// countAt is the number of requests scheduled in [0, t), t in seconds.
func (p plan) countAt(t float64) float64 {
	var n float64
	for _, g := range p.segs {
		if t <= g.start {
			break
		}
		x := math.Min(t-g.start, g.dur)
		n = g.before + g.from*x + (g.to-g.from)/g.dur*x*x/2
	}
	return n
}

// slots is the number of requests due in [0, t): slot k is due at the time the
// count reaches k, so it falls before t exactly when k < countAt(t). The
// epsilon absorbs float error at boundaries (1000/s over 1 s is 1000 slots).
func (p plan) slots(t float64) int64 {
	return int64(math.Ceil(p.countAt(t) - 1e-6))
}

// at returns the offset of slot k from the start of the run. Within a segment
// the count is from·x + c·x²/2 (c the rate's slope); solving for x with the
// form 2m/(a+√(a²+2cm)) avoids cancellation when the slope is near zero.
func (p plan) at(k int64) time.Duration {
	m := float64(k)
	i := sort.Search(len(p.segs), func(i int) bool { return p.segs[i].before+p.segs[i].count() > m })
	if i == len(p.segs) {
		return time.Duration(p.total * 1e9)
	}
	g := p.segs[i]
	m -= g.before
	if m <= 0 {
		return time.Duration(g.start * 1e9)
	}
	c := (g.to - g.from) / g.dur
	x := 2 * m / (g.from + math.Sqrt(g.from*g.from+2*c*m))
	return time.Duration((g.start + math.Min(x, g.dur)) * 1e9)
}

// rateAt is the scheduled rate at t seconds, for the progress line.
func (p plan) rateAt(t float64) float64 {
	for _, g := range p.segs {
		if t < g.start+g.dur {
			return g.from + (g.to-g.from)*math.Max(t-g.start, 0)/g.dur
		}
	}
	return 0
}
