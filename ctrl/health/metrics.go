package health

import "github.com/VictoriaMetrics/metrics"

// trackerMetrics are created once, in Open; nothing builds a metric name
// per observation.
type trackerMetrics struct {
	accepted, stale, duplicate *metrics.Counter
	toHealthy, toUnhealthy     *metrics.Counter
	published, flushErrors     *metrics.Counter
	// Gauges follow the published state, which is what edges route on.
	unhealthy, panicking *metrics.Gauge
}

func newTrackerMetrics(set *metrics.Set) *trackerMetrics {
	return &trackerMetrics{
		accepted:    set.NewCounter(`snapgate_ctrl_health_observations_total{result="accepted"}`),
		stale:       set.NewCounter(`snapgate_ctrl_health_observations_total{result="stale"}`),
		duplicate:   set.NewCounter(`snapgate_ctrl_health_observations_total{result="duplicate"}`),
		toHealthy:   set.NewCounter(`snapgate_ctrl_health_transitions_total{to="healthy"}`),
		toUnhealthy: set.NewCounter(`snapgate_ctrl_health_transitions_total{to="unhealthy"}`),
		published:   set.NewCounter(`snapgate_ctrl_health_published_total`),
		flushErrors: set.NewCounter(`snapgate_ctrl_health_flush_errors_total`),
		unhealthy:   set.NewGauge(`snapgate_ctrl_health_unhealthy_endpoints`, nil),
		panicking:   set.NewGauge(`snapgate_ctrl_health_panic_clusters`, nil),
	}
}
