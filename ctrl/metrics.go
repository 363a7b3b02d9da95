package ctrl

import (
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/VictoriaMetrics/metrics"
)

// ctrlMetrics are ctrl's own metrics. They share one set with the publisher
// (sent bytes, propagation lag, connected edges), so one scrape shows both.
type ctrlMetrics struct {
	set *metrics.Set
	// buildSeconds is fbs.Build time per snapshot; Prometheus (le) buckets
	// from 1 ms to ~33 s, since vmrange buckets need VictoriaMetrics to query.
	buildSeconds  *metrics.PrometheusHistogram
	snapshotBytes *metrics.Gauge
	version       *metrics.Gauge
}

func newCtrlMetrics(set *metrics.Set) *ctrlMetrics {
	return &ctrlMetrics{
		set:           set,
		buildSeconds:  set.NewPrometheusHistogramExt("snapgate_ctrl_snapshot_build_seconds", metrics.ExponentialBuckets(0.001, 2, 16)),
		snapshotBytes: set.NewGauge("snapgate_ctrl_snapshot_bytes", nil),
		version:       set.NewGauge("snapgate_ctrl_snapshot_version", nil),
	}
}

func (m *ctrlMetrics) built(version uint64, took time.Duration, size int) {
	m.buildSeconds.Update(took.Seconds())
	m.snapshotBytes.Set(float64(size))
	m.version.Set(float64(version))
}

// listenMetrics binds the metrics listener, or returns nil when addr is
// empty (metrics disabled).
func (s *Server) listenMetrics(addr string) error {
	if addr == "" {
		return nil
	}
	ln, err := listenTCP("metrics listener", addr)
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		s.metrics.set.WritePrometheus(w)
	})
	s.metricsLn = ln
	s.metricsSrv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, IdleTimeout: time.Minute}
	return nil
}

// serveMetrics serves /metrics until Close; nil at once if disabled.
func (s *Server) serveMetrics() error {
	if s.metricsSrv == nil {
		return nil
	}
	if err := s.metricsSrv.Serve(s.metricsLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("metrics listener %s: %w", s.metricsLn.Addr(), err)
	}
	return nil
}

func (s *Server) closeMetrics() error {
	if s.metricsSrv == nil {
		return nil
	}
	return s.metricsSrv.Close()
}

// MetricsAddr is the bound metrics address, "" when metrics are disabled.
func (s *Server) MetricsAddr() string {
	if s.metricsLn == nil {
		return ""
	}
	return s.metricsLn.Addr().String()
}
