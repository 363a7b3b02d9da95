package publish

import (
	"github.com/VictoriaMetrics/metrics"
)

// pubMetrics are the publisher's metrics, created once (deps.md §5: never
// build metric names per event).
type pubMetrics struct {
	fullBytes, deltaBytes *metrics.Counter
	fulls, deltas         *metrics.Counter
	authFailures          *metrics.Counter
	handshakesRefused     *metrics.Counter // connections closed over MaxHandshakes
	reports               *metrics.Counter // observations received in REPORTs
	// propagation is commit-to-ACK lag per edge and version. A Prometheus
	// (le) histogram, since vmrange buckets need VictoriaMetrics to query.
	propagation *metrics.PrometheusHistogram
}

func newPubMetrics(set *metrics.Set, s *Server) *pubMetrics {
	set.NewGauge("snapgate_ctrl_edges_connected", func() float64 { return float64(s.connected()) })
	return &pubMetrics{
		fullBytes:         set.NewCounter(`snapgate_ctrl_sent_bytes_total{kind="full"}`),
		deltaBytes:        set.NewCounter(`snapgate_ctrl_sent_bytes_total{kind="delta"}`),
		fulls:             set.NewCounter(`snapgate_ctrl_sent_snapshots_total{kind="full"}`),
		deltas:            set.NewCounter(`snapgate_ctrl_sent_snapshots_total{kind="delta"}`),
		authFailures:      set.NewCounter(`snapgate_ctrl_stream_auth_failures_total`),
		handshakesRefused: set.NewCounter(`snapgate_ctrl_stream_handshakes_refused_total`),
		reports:           set.NewCounter(`snapgate_ctrl_edge_health_observations_total`),
		// 1 ms to ~33 s.
		propagation: set.NewPrometheusHistogramExt(`snapgate_ctrl_propagation_seconds`, metrics.ExponentialBuckets(0.001, 2, 16)),
	}
}
