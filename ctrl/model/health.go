package model

import (
	"fmt"
	"strconv"
	"strings"
)

// Active probe types (HealthCheck.Type).
const (
	ProbeHTTP = "http"
	ProbeTCP  = "tcp"
)

// Health-check defaults, applied by HealthCheck.Effective to absent (zero)
// fields. docs/health.md explains each choice.
const (
	DefaultProbeIntervalMs    = 5_000
	DefaultProbeTimeoutMs     = 1_000
	DefaultProbePath          = "/"
	DefaultUnhealthyThreshold = 3
	DefaultHealthyThreshold   = 2
	// DefaultPassiveExpiryMs is how long an endpoint of a cluster without
	// active probes stays unhealthy after its last failure. Without it such
	// an endpoint would never come back: edges stop sending it traffic, so
	// no success could ever be observed.
	DefaultPassiveExpiryMs = 30_000
)

// DefaultExpectedStatuses is what an HTTP probe accepts when
// expected_statuses is absent: any 2xx or 3xx (redirects are not followed).
var DefaultExpectedStatuses = []string{"200-399"}

// Health-check limits.
const (
	MinProbeIntervalMs    = 100
	MaxProbeIntervalMs    = 3_600_000 // one hour
	MaxHealthThreshold    = 100
	MaxHoldMs             = 3_600_000
	MinPassiveExpiryMs    = 1_000
	MaxPassiveExpiryMs    = 3_600_000
	MaxSlowStartMs        = MaxTimeoutMs
	MaxExpectedStatuses   = 16
	MaxProbePathLen       = MaxPrefixLen
	maxPanicThresholdPerc = 100
)

// HealthCheck says how ctrl judges a cluster's endpoints: the optional
// active probe, and the damping every observation source goes through.
// A cluster without one gets Effective(nil): no active probe, defaults for
// the rest. Zero fields mean their default.
type HealthCheck struct {
	// Type is ProbeHTTP or ProbeTCP; "" means no active probe (external
	// and edge reports still count).
	Type string `json:"type,omitempty"`
	// Path is the HTTP probe's request target (GET); default "/".
	Path string `json:"path,omitempty"`
	// IntervalMs is the time between two probes of one endpoint.
	IntervalMs uint32 `json:"interval_ms,omitempty"`
	// JitterMs spreads probes: each wait is IntervalMs plus a uniform
	// random offset in [-JitterMs, +JitterMs]; at most IntervalMs/2.
	// The first probe of an endpoint always waits a random part of one
	// interval, so probes are spread even without it.
	JitterMs uint32 `json:"jitter_ms,omitempty"`
	// TimeoutMs bounds one probe (connect, request, response head); at
	// most IntervalMs.
	TimeoutMs uint32 `json:"timeout_ms,omitempty"`
	// ExpectedStatuses are HTTP statuses that count as healthy: "200" or
	// a range "200-299".
	ExpectedStatuses []string `json:"expected_statuses,omitempty"`
	// UnhealthyThreshold N: consecutive failures that turn an endpoint unhealthy.
	UnhealthyThreshold uint32 `json:"unhealthy_threshold,omitempty"`
	// HealthyThreshold M: consecutive successes that turn it healthy again.
	HealthyThreshold uint32 `json:"healthy_threshold,omitempty"`
	// MinHoldMs is the least time an endpoint stays in a state before it
	// may change again; 0 = no hold.
	MinHoldMs uint32 `json:"min_hold_ms,omitempty"`
	// PanicThresholdPercent: when fewer than this share of the cluster's
	// endpoints are healthy, every endpoint is routable again; 0 disables.
	PanicThresholdPercent uint32 `json:"panic_threshold_percent,omitempty"`
	// SlowStartMs is how long an endpoint that came back ramps up its
	// share of traffic; 0 disables.
	SlowStartMs uint32 `json:"slow_start_ms,omitempty"`
	// PassiveExpiryMs applies only without an active probe: an unhealthy
	// endpoint turns healthy again once no failure was reported for this
	// long.
	PassiveExpiryMs uint32 `json:"passive_expiry_ms,omitempty"`
}

// StatusRange is an inclusive range of HTTP status codes.
type StatusRange struct{ Lo, Hi uint16 }

// Contains reports whether code lies in the range.
func (r StatusRange) Contains(code int) bool { return code >= int(r.Lo) && code <= int(r.Hi) }

// Effective returns h with every absent field set to its default. h may be
// nil (a cluster without a health section). Fields that only apply to an
// active probe stay zero without one, and PassiveExpiryMs stays zero with
// one. It does not validate.
func (h *HealthCheck) Effective() HealthCheck {
	var e HealthCheck
	if h != nil {
		e = *h
		e.ExpectedStatuses = append([]string(nil), h.ExpectedStatuses...)
	}
	if e.UnhealthyThreshold == 0 {
		e.UnhealthyThreshold = DefaultUnhealthyThreshold
	}
	if e.HealthyThreshold == 0 {
		e.HealthyThreshold = DefaultHealthyThreshold
	}
	if e.Type == "" {
		if e.PassiveExpiryMs == 0 {
			e.PassiveExpiryMs = DefaultPassiveExpiryMs
		}
		return e
	}
	if e.IntervalMs == 0 {
		e.IntervalMs = DefaultProbeIntervalMs
	}
	if e.TimeoutMs == 0 {
		e.TimeoutMs = min(DefaultProbeTimeoutMs, e.IntervalMs)
	}
	if e.Type == ProbeHTTP {
		if e.Path == "" {
			e.Path = DefaultProbePath
		}
		if len(e.ExpectedStatuses) == 0 {
			e.ExpectedStatuses = append([]string(nil), DefaultExpectedStatuses...)
		}
	}
	return e
}

// StatusRanges parses ExpectedStatuses; entries Validate would reject are
// skipped.
func (h *HealthCheck) StatusRanges() []StatusRange {
	out := make([]StatusRange, 0, len(h.ExpectedStatuses))
	for _, s := range h.ExpectedStatuses {
		if r, reason := parseStatusRange(s); reason == "" {
			out = append(out, r)
		}
	}
	return out
}

// parseStatusRange parses "200" or "200-299" and returns why s is not one.
func parseStatusRange(s string) (StatusRange, string) {
	lo, hi, isRange := strings.Cut(s, "-")
	if !isRange {
		hi = lo
	}
	a, ok1 := parseStatus(lo)
	b, ok2 := parseStatus(hi)
	switch {
	case !ok1 || !ok2:
		return StatusRange{}, fmt.Sprintf(`%q is not a status code from 100 to 599 or a range such as "200-299"`, s)
	case a > b:
		return StatusRange{}, fmt.Sprintf("%q is an empty range: %d is greater than %d", s, a, b)
	}
	return StatusRange{Lo: a, Hi: b}, ""
}

func parseStatus(s string) (uint16, bool) {
	if len(s) != 3 || s[0] < '1' || s[0] > '5' {
		return 0, false
	}
	n, err := strconv.ParseUint(s, 10, 16)
	return uint16(n), err == nil
}

// checkHealth validates a cluster's health section; fields are reported
// under "health.".
func checkHealth(c *collector, h *HealthCheck) {
	probe := h.Type == ProbeHTTP || h.Type == ProbeTCP
	if !probe && h.Type != "" {
		c.add("health.type", fmt.Sprintf(`%q is not a probe type: use "http" or "tcp", or leave it out for no active probe`, h.Type))
	}
	needsProbe := func(field string) {
		c.add("health."+field, `only applies to an active probe: set "type" to "http" or "tcp"`)
	}
	if h.Type == "" {
		if h.Path != "" {
			needsProbe("path")
		}
		if h.IntervalMs != 0 {
			needsProbe("interval_ms")
		}
		if h.JitterMs != 0 {
			needsProbe("jitter_ms")
		}
		if h.TimeoutMs != 0 {
			needsProbe("timeout_ms")
		}
		if len(h.ExpectedStatuses) != 0 {
			needsProbe("expected_statuses")
		}
	}
	if h.Type == ProbeTCP {
		if h.Path != "" {
			c.add("health.path", `only applies to "type": "http"`)
		}
		if len(h.ExpectedStatuses) != 0 {
			c.add("health.expected_statuses", `only applies to "type": "http"`)
		}
	}
	if probe {
		checkProbeTiming(c, h)
	}
	if h.Type == ProbeHTTP {
		if h.Path != "" {
			checkProbePath(c, h.Path)
		}
		checkExpectedStatuses(c, h.ExpectedStatuses)
	}
	checkThreshold(c, "health.unhealthy_threshold", h.UnhealthyThreshold)
	checkThreshold(c, "health.healthy_threshold", h.HealthyThreshold)
	if h.MinHoldMs > MaxHoldMs {
		c.add("health.min_hold_ms", fmt.Sprintf("must be at most %d (one hour), got %d", MaxHoldMs, h.MinHoldMs))
	}
	if h.PanicThresholdPercent > maxPanicThresholdPerc {
		c.add("health.panic_threshold_percent", fmt.Sprintf("must be from 0 (disabled) to 100, got %d", h.PanicThresholdPercent))
	}
	if h.SlowStartMs > MaxSlowStartMs {
		c.add("health.slow_start_ms", fmt.Sprintf("must be at most %d (10 minutes), got %d", MaxSlowStartMs, h.SlowStartMs))
	}
	if e := h.PassiveExpiryMs; e != 0 {
		switch {
		case h.Type != "":
			c.add("health.passive_expiry_ms", "only applies without an active probe: the probe brings endpoints back")
		case e < MinPassiveExpiryMs || e > MaxPassiveExpiryMs:
			c.add("health.passive_expiry_ms", fmt.Sprintf("must be from %d to %d (one hour), got %d", MinPassiveExpiryMs, MaxPassiveExpiryMs, e))
		}
	}
}

func checkProbeTiming(c *collector, h *HealthCheck) {
	interval := h.IntervalMs
	if interval != 0 && (interval < MinProbeIntervalMs || interval > MaxProbeIntervalMs) {
		c.add("health.interval_ms", fmt.Sprintf("must be from %d to %d (one hour), got %d", MinProbeIntervalMs, MaxProbeIntervalMs, interval))
		return
	}
	if interval == 0 {
		interval = DefaultProbeIntervalMs
	}
	if h.TimeoutMs > interval {
		c.add("health.timeout_ms", fmt.Sprintf("must be at most interval_ms (%d), got %d: a probe must end before the next one starts", interval, h.TimeoutMs))
	}
	if h.JitterMs > interval/2 {
		c.add("health.jitter_ms", fmt.Sprintf("must be at most half of interval_ms (%d), got %d", interval/2, h.JitterMs))
	}
}

// checkProbePath accepts an origin-form request target (RFC 9112 §3.2.1):
// a path starting with "/" and an optional query, visible ASCII only.
func checkProbePath(c *collector, p string) {
	switch {
	case p[0] != '/':
		c.add("health.path", `must start with "/"`)
		return
	case len(p) > MaxProbePathLen:
		c.add("health.path", fmt.Sprintf("must be at most %d bytes, got %d", MaxProbePathLen, len(p)))
		return
	}
	for i := 0; i < len(p); i++ {
		if b := p[i]; b <= 0x20 || b >= 0x7f {
			c.add("health.path", fmt.Sprintf("byte %d (0x%02x) is not visible ASCII: a request target has no spaces or control characters", i, b))
			return
		}
		if p[i] == '#' {
			c.add("health.path", `must not contain "#": fragments are never sent to a server`)
			return
		}
		if p[i] == '%' && (i+2 >= len(p) || !isHex(p[i+1]) || !isHex(p[i+2])) {
			c.add("health.path", fmt.Sprintf(`byte %d: "%%" must start an escape of two hex digits: the probe could not send this path, and its endpoints would all be marked down`, i))
			return
		}
	}
}

func isHex(b byte) bool {
	return '0' <= b && b <= '9' || 'a' <= b && b <= 'f' || 'A' <= b && b <= 'F'
}

func checkExpectedStatuses(c *collector, ss []string) {
	if len(ss) > MaxExpectedStatuses {
		c.add("health.expected_statuses", fmt.Sprintf("at most %d entries are allowed, got %d", MaxExpectedStatuses, len(ss)))
		return
	}
	seen := make(map[string]int, len(ss))
	for i, s := range ss {
		field := fmt.Sprintf("health.expected_statuses[%d]", i)
		if j, dup := seen[s]; dup {
			c.add(field, fmt.Sprintf("%q is listed twice (also expected_statuses[%d])", s, j))
			continue
		}
		seen[s] = i
		if _, reason := parseStatusRange(s); reason != "" {
			c.add(field, reason)
		}
	}
}

func checkThreshold(c *collector, field string, n uint32) {
	if n > MaxHealthThreshold {
		c.add(field, fmt.Sprintf("must be from 1 to %d (0 means the default), got %d", MaxHealthThreshold, n))
	}
}
