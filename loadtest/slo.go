package loadtest

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// SLO is a set of objectives a run must meet.
type SLO struct {
	Objectives []Objective
}

// Objective is one bound: a latency quantile (Errors false) or the error rate
// (Errors true).
type Objective struct {
	// Name as written: "p99", "p999", "p99.9", "max" or "errors".
	Name string
	// Errors marks an error-rate objective; MaxErrorRate is then the highest
	// allowed Result.ErrorRate (0.001 for 0.1%).
	Errors       bool
	MaxErrorRate float64
	// Quantile (0 < q ≤ 1; 1 for max) must be at most MaxLatency.
	Quantile   float64
	MaxLatency time.Duration
}

// Violation is an objective a run missed.
type Violation struct {
	Objective string `json:"objective"`
	Limit     string `json:"limit"`
	Actual    string `json:"actual"`
}

func (v Violation) String() string {
	return fmt.Sprintf("%s %s > %s", v.Objective, v.Actual, v.Limit)
}

// ParseSLO parses objectives such as "p99=2ms,p999=10ms,max=50ms,errors=0.1%".
// A latency key is p followed by the percentile, its first two digits being
// the integer part (p50, p99, p999 = 99.9, p9999 = 99.99) or written with a
// dot (p99.9); "max" bounds the slowest response. "errors" bounds the error
// rate and needs a percent sign. Each key may appear once.
func ParseSLO(s string) (SLO, error) {
	if strings.TrimSpace(s) == "" {
		return SLO{}, errors.New("slo: empty; want objectives such as p99=2ms,errors=0.1%")
	}
	var slo SLO
	seen := map[string]string{}
	for _, item := range strings.Split(s, ",") {
		item = strings.TrimSpace(item)
		key, val, ok := strings.Cut(item, "=")
		if !ok || key == "" || val == "" {
			return SLO{}, fmt.Errorf("slo %q: objective %q: want key=value, as in p99=2ms", s, item)
		}
		o, err := parseObjective(key, val)
		if err != nil {
			return SLO{}, fmt.Errorf("slo %q: %w", s, err)
		}
		id := "errors"
		if !o.Errors {
			id = strconv.FormatFloat(o.Quantile, 'g', -1, 64)
		}
		if prev, dup := seen[id]; dup {
			return SLO{}, fmt.Errorf("slo %q: %s and %s bound the same thing", s, prev, key)
		}
		seen[id] = key
		slo.Objectives = append(slo.Objectives, o)
	}
	return slo, nil
}

func parseObjective(key, val string) (Objective, error) {
	o := Objective{Name: key}
	if key == "errors" {
		num, ok := strings.CutSuffix(val, "%")
		if !ok {
			return o, fmt.Errorf("errors=%s: want a percentage such as 0.1%%", val)
		}
		p, err := strconv.ParseFloat(num, 64)
		if err != nil || !(p >= 0 && p <= 100) {
			return o, fmt.Errorf("errors=%s: want 0%% to 100%%", val)
		}
		o.Errors, o.MaxErrorRate = true, p/100
		return o, nil
	}
	switch {
	case key == "max":
		o.Quantile = 1
	case strings.HasPrefix(key, "p"):
		q, err := parsePercentileKey(key[1:])
		if err != nil {
			return o, fmt.Errorf("objective %q: %w", key, err)
		}
		o.Quantile = q
	default:
		return o, fmt.Errorf("objective %q: unknown; want pNN (p50, p99, p999), max or errors", key)
	}
	d, err := time.ParseDuration(val)
	if err != nil {
		return o, fmt.Errorf("%s=%s: want a duration such as 2ms", key, val)
	}
	if d <= 0 {
		return o, fmt.Errorf("%s=%s: must be positive", key, val)
	}
	o.MaxLatency = d
	return o, nil
}

// parsePercentileKey turns "99", "999" or "99.9" into a quantile (0.99, 0.999).
func parsePercentileKey(s string) (float64, error) {
	dots := 0
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '.':
			dots++
		case c < '0' || c > '9':
			return 0, fmt.Errorf("percentile %q: want digits, as in p99 or p99.9", s)
		}
	}
	if dots > 1 || len(s) < 2 || s[0] == '.' || s[len(s)-1] == '.' {
		return 0, fmt.Errorf("percentile %q: want p followed by at least two digits, as in p50 or p99.9", s)
	}
	if dots == 0 && len(s) > 2 {
		if strings.HasPrefix(s, "100") {
			// p999 reads as 99.9, so p100 would read as the 10th
			// percentile.
			return 0, fmt.Errorf("percentile %q: p100 is the slowest response: use max", s)
		}
		s = s[:2] + "." + s[2:]
	}
	p, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return 0, fmt.Errorf("percentile %q: %w", s, err)
	}
	if !(p > 0 && p < 100) {
		return 0, fmt.Errorf("percentile %s: want above 0 and below 100 (use max for the slowest)", s)
	}
	return p / 100, nil
}

// String formats s in the syntax ParseSLO reads.
func (s SLO) String() string {
	parts := make([]string, len(s.Objectives))
	for i, o := range s.Objectives {
		parts[i] = o.Name + "=" + o.limit()
	}
	return strings.Join(parts, ",")
}

func (o Objective) limit() string {
	if o.Errors {
		return fmtPercent(o.MaxErrorRate)
	}
	return o.MaxLatency.String()
}

// Check returns the objectives r misses, or nil. A latency objective with no
// complete response at all is missed: no evidence is not a pass.
func (r *Result) Check(slo SLO) []Violation {
	var out []Violation
	for _, o := range slo.Objectives {
		if o.Errors {
			if r.ErrorRate > o.MaxErrorRate {
				out = append(out, Violation{Objective: o.Name, Limit: o.limit(), Actual: fmtPercent(r.ErrorRate)})
			}
			continue
		}
		if r.Completed == 0 {
			out = append(out, Violation{Objective: o.Name, Limit: o.limit(), Actual: "no responses"})
			continue
		}
		if v := r.latencyAt(o.Quantile); v > o.MaxLatency {
			out = append(out, Violation{Objective: o.Name, Limit: o.limit(), Actual: fmtDur(v)})
		}
	}
	return out
}

// latencyAt reads quantile q from the histogram, or from the curve for a
// Result decoded from JSON (the first point at or above q).
func (r *Result) latencyAt(q float64) time.Duration {
	if r.hist != nil {
		if q >= 1 {
			return time.Duration(r.hist.Max())
		}
		return time.Duration(atQuantile(r.hist, q))
	}
	for _, p := range r.Curve {
		if p.Quantile >= q-1e-12 {
			return p.Latency
		}
	}
	return r.Latency.Max
}
