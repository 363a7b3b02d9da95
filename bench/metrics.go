package bench

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// maxMetricsBytes bounds one /metrics page; ctrl's is a few KiB.
const maxMetricsBytes = 4 << 20

// scrapeTimeout bounds one scrape; as long as a ctl command may take,
// since ctrl answers both late on a starved CPU.
const scrapeTimeout = ctlTimeout

// scrapeMetrics fetches and parses http://addr/metrics.
func scrapeMetrics(ctx context.Context, addr string) (map[string]float64, error) {
	ctx, cancel := context.WithTimeout(ctx, scrapeTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		return nil, fmt.Errorf("metrics %s: %w", addr, err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("metrics %s: %w", addr, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxMetricsBytes+1))
	if err != nil {
		return nil, fmt.Errorf("metrics %s: %w", addr, err)
	}
	if resp.StatusCode != http.StatusOK || len(body) > maxMetricsBytes {
		return nil, fmt.Errorf("metrics %s: status %d, %d bytes", addr, resp.StatusCode, len(body))
	}
	m, err := ParseMetrics(body)
	if err != nil {
		return nil, fmt.Errorf("metrics %s: %w", addr, err)
	}
	return m, nil
}

// ParseMetrics reads the Prometheus text format: one sample a line,
// `series value [timestamp]`, where series is the metric name with its
// label set as written (`x_bucket{le="0.5"}`). Comments and blank lines are
// skipped; any other line that is not a sample is an error naming it.
func ParseMetrics(text []byte) (map[string]float64, error) {
	m := map[string]float64{}
	n := 0
	for line := range bytes.Lines(text) {
		n++
		s := strings.TrimSpace(string(line))
		if s == "" || s[0] == '#' {
			continue
		}
		var series, rest string
		if i := strings.IndexByte(s, '{'); i >= 0 && i < strings.IndexByte(s+" ", ' ') {
			j := strings.LastIndexByte(s, '}')
			if j < i {
				return nil, fmt.Errorf("line %d: unterminated label set: %q", n, s)
			}
			series, rest = s[:j+1], s[j+1:]
		} else {
			series, rest, _ = strings.Cut(s, " ")
		}
		fields := strings.Fields(rest)
		if series == "" || series[0] == '{' || len(fields) == 0 || len(fields) > 2 {
			return nil, fmt.Errorf("line %d: want `series value [timestamp]`, got %q", n, s)
		}
		v, err := strconv.ParseFloat(fields[0], 64)
		if err != nil {
			return nil, fmt.Errorf("line %d: value %q of %s is not a number", n, fields[0], series)
		}
		m[series] = v
	}
	return m, nil
}

// histogramDelta is what a Prometheus (le) histogram recorded between two
// scrapes.
type histogramDelta struct {
	le         []float64 // bucket upper bounds, ascending, +Inf last
	cum        []float64 // observations at or below each bound
	sum, count float64
}

// histogramBetween subtracts the histogram name of before from after.
func histogramBetween(before, after map[string]float64, name string) (histogramDelta, error) {
	type bucket struct{ le, n float64 }
	var buckets []bucket
	prefix := name + `_bucket{le="`
	for series, v := range after {
		bound, ok := strings.CutPrefix(series, prefix)
		if !ok {
			continue
		}
		le, err := strconv.ParseFloat(strings.TrimSuffix(bound, `"}`), 64)
		if err != nil {
			return histogramDelta{}, fmt.Errorf("histogram %s: bucket %q: %w", name, series, err)
		}
		buckets = append(buckets, bucket{le, v - before[series]})
	}
	slices.SortFunc(buckets, func(a, b bucket) int { return cmp.Compare(a.le, b.le) })
	if len(buckets) == 0 || !math.IsInf(buckets[len(buckets)-1].le, 1) {
		return histogramDelta{}, fmt.Errorf("histogram %s: no +Inf bucket in the scrape", name)
	}
	h := histogramDelta{sum: after[name+"_sum"] - before[name+"_sum"], count: after[name+"_count"] - before[name+"_count"]}
	for _, b := range buckets {
		h.le, h.cum = append(h.le, b.le), append(h.cum, b.n)
	}
	return h, nil
}

// quantile returns the upper bound of the bucket holding quantile q, the
// most a histogram can say; NaN when nothing was recorded.
func (h histogramDelta) quantile(q float64) float64 {
	total := h.cum[len(h.cum)-1]
	if total <= 0 {
		return math.NaN()
	}
	for i, c := range h.cum {
		if c >= q*total {
			return h.le[i]
		}
	}
	return math.Inf(1)
}

// fmtBucket prints a quantile's bucket bound in seconds as "≤ 16ms".
func fmtBucket(s float64) string {
	switch {
	case math.IsNaN(s):
		return "—"
	case math.IsInf(s, 1):
		return "above the largest bucket"
	}
	return "≤ " + fmtLatency(time.Duration(s*float64(time.Second)))
}
