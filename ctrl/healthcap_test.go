package ctrl

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/snapgate/snapgate/ctrl/admin"
	"github.com/snapgate/snapgate/ctrl/model"
)

// buildRecorder is a slog handler that keeps the time and cause of every
// "snapshot built" record.
type buildRecorder struct {
	mu     sync.Mutex
	builds []loggedBuild
}

type loggedBuild struct {
	at         time.Time
	healthOnly bool
}

type recorderHandler struct{ r *buildRecorder }

func (h recorderHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h recorderHandler) Handle(_ context.Context, rec slog.Record) error {
	if rec.Message != "snapshot built" {
		return nil
	}
	b := loggedBuild{at: rec.Time}
	rec.Attrs(func(a slog.Attr) bool {
		if a.Key == "health_only" {
			b.healthOnly = a.Value.Bool()
		}
		return true
	})
	h.r.mu.Lock()
	h.r.builds = append(h.r.builds, b)
	h.r.mu.Unlock()
	return nil
}
func (h recorderHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h recorderHandler) WithGroup(string) slog.Handler      { return h }

// TestHealthBuildsKeepTheCap: during a health storm with config writes
// mixed in, a build caused by health alone always comes at least one
// publication interval (1s / MaxVersionsPerSecond) after the build before
// it, whatever caused that one. Before, the tracker spaced its
// publications but not the builds: a health build could follow a config
// build (or a late health build) by a few milliseconds, and a one-second
// window held more versions than the cap.
func TestHealthBuildsKeepTheCap(t *testing.T) {
	const perSecond = 4
	interval := time.Second / perSecond
	rec := &buildRecorder{}
	h := startCtrl(t, t.TempDir(), func(c *Config) {
		c.Logger = slog.New(recorderHandler{rec})
		c.Health.MaxVersionsPerSecond = perSecond
	})
	cx := ctx(t)
	const endpoints = 8
	var addrs []string
	for i := range endpoints {
		addrs = append(addrs, fmt.Sprintf("10.0.0.%d:80", i+1))
	}
	c := cluster("api", addrs...)
	c.Health = &model.HealthCheck{UnhealthyThreshold: 1, HealthyThreshold: 1}
	if _, err := h.c.PutCluster(cx, c, nil); err != nil {
		t.Fatal(err)
	}
	rec.mu.Lock()
	from := len(rec.builds)
	rec.mu.Unlock()

	// Flip an endpoint every 10 ms and write a route every 300 ms, for 2.5 s.
	state := [endpoints]bool{}
	rev := uint64(0)
	end := time.Now().Add(2500 * time.Millisecond)
	nextWrite := time.Now()
	writes := 0
	for i := 0; time.Now().Before(end); i++ {
		j := i % endpoints
		state[j] = !state[j]
		st := admin.StateHealthy
		if state[j] {
			st = admin.StateUnhealthy
		}
		rev++
		if _, err := h.c.ReportHealth(cx, admin.HealthReport{Cluster: "api", Endpoint: addrs[j], State: st, Revision: rev, Source: "storm"}); err != nil {
			t.Fatal(err)
		}
		if time.Now().After(nextWrite) {
			// A route write: it does not touch the health tracker, whose
			// cluster changes publish at once and restart its own spacing.
			if _, err := h.c.PutRoute(cx, model.Route{ID: "r", Host: "*", Prefix: fmt.Sprintf("/v%d", writes), Cluster: "api"}, nil); err != nil {
				t.Fatal(err)
			}
			writes++
			nextWrite = nextWrite.Add(300 * time.Millisecond)
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(2 * interval)

	rec.mu.Lock()
	builds := append([]loggedBuild(nil), rec.builds[from:]...)
	rec.mu.Unlock()
	healthOnly, config := 0, 0
	for i, b := range builds {
		if !b.healthOnly {
			config++
			continue
		}
		healthOnly++
		if i == 0 {
			continue
		}
		// The record's time is taken just after the build; the previous
		// build's end is what the wait counts from, a moment before its
		// record.
		if gap := b.at.Sub(builds[i-1].at); gap < interval-5*time.Millisecond {
			t.Errorf("health-only build %d came %v after the build before it (a route write's: %v), under the %v interval", i, gap, !builds[i-1].healthOnly, interval)
		}
	}
	t.Logf("%d builds: %d health-only, %d with config writes (%d writes)", len(builds), healthOnly, config, writes)
	if healthOnly < 4 || config < 3 {
		t.Fatalf("the storm did not exercise both causes: %d health-only and %d config builds", healthOnly, config)
	}
}
