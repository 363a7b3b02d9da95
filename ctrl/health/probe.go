package health

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"slices"
	"syscall"
	"time"

	"github.com/snapgate/snapgate/ctrl/model"
)

// probeSpec is an active probe's configuration; equal specs keep a running
// probe when SetClusters is called again.
type probeSpec struct {
	http     bool
	path     string
	interval time.Duration
	jitter   time.Duration
	timeout  time.Duration
	statuses []model.StatusRange
}

func probeSpecOf(hc model.HealthCheck) (probeSpec, bool) {
	if hc.Type == "" {
		return probeSpec{}, false
	}
	ms := func(v uint32) time.Duration { return time.Duration(v) * time.Millisecond }
	return probeSpec{
		http:     hc.Type == model.ProbeHTTP,
		path:     hc.Path,
		interval: ms(hc.IntervalMs),
		jitter:   ms(hc.JitterMs),
		timeout:  ms(hc.TimeoutMs),
		statuses: hc.StatusRanges(),
	}, true
}

func (s probeSpec) equal(o probeSpec) bool {
	return s.http == o.http && s.path == o.path && s.interval == o.interval && s.jitter == o.jitter &&
		s.timeout == o.timeout && slices.Equal(s.statuses, o.statuses)
}

type probeKey struct{ cluster, addr string }

// prober is the goroutine probing one endpoint.
type prober struct {
	spec   probeSpec
	cancel context.CancelFunc
	done   chan struct{}
}

// reconcileProbes makes the running probes match want: unchanged ones keep
// running, the others stop (and are waited for) or start. The caller holds
// probeMu, not mu: a stopping probe may be inside observeProbe.
func (t *Tracker) reconcileProbes(want map[probeKey]probeSpec) {
	for k, p := range t.probers {
		if spec, ok := want[k]; !ok || !spec.equal(p.spec) {
			p.cancel()
			<-p.done
			delete(t.probers, k)
		}
	}
	for k, spec := range want {
		if _, ok := t.probers[k]; ok {
			continue
		}
		ctx, cancel := context.WithCancel(context.Background())
		p := &prober{spec: spec, cancel: cancel, done: make(chan struct{})}
		t.probers[k] = p
		go t.runProbe(ctx, k, p)
	}
}

// runProbe probes one endpoint until ctx ends. The first probe waits a
// random part of one interval, so endpoints configured together are not
// probed in lockstep; later probes start the interval ± jitter after the
// one before started, however long it took: counted from its end, a
// backend that hangs was probed every interval + timeout, up to twice the
// interval, past the documented detection bound.
func (t *Tracker) runProbe(ctx context.Context, k probeKey, p *prober) {
	defer close(p.done)
	timer := time.NewTimer(rand.N(p.spec.interval))
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		start := time.Now()
		ok, detail := t.probeOnce(ctx, k.addr, &p.spec)
		if ctx.Err() != nil {
			return // stopped mid-probe: the failure is ours, not the endpoint's
		}
		t.observeProbe(k, ok, detail)
		wait := p.spec.interval
		if j := p.spec.jitter; j > 0 {
			wait += rand.N(2*j+1) - j
		}
		timer.Reset(max(wait-time.Since(start), 0))
	}
}

// probeOnce runs one probe and returns its verdict and what it saw.
func (t *Tracker) probeOnce(ctx context.Context, addr string, s *probeSpec) (bool, string) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	if !s.http {
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return false, describeErr(err, s.timeout)
		}
		_ = c.Close()
		return true, "connected"
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+s.path, nil)
	if err != nil {
		return false, clip("request: " + err.Error())
	}
	req.Header.Set("User-Agent", "snapgate-health/1")
	resp, err := t.httpc.Do(req)
	if err != nil {
		return false, describeErr(err, s.timeout)
	}
	// Drain a little so the server sees a clean close; the verdict is
	// the status alone.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxProbeBody))
	_ = resp.Body.Close()
	for _, r := range s.statuses {
		if r.Contains(resp.StatusCode) {
			return true, fmt.Sprintf("status %d", resp.StatusCode)
		}
	}
	return false, fmt.Sprintf("status %d", resp.StatusCode)
}

const (
	maxProbeBody   = 64 << 10
	maxProbeHeader = 64 << 10
)

// newProbeClient returns the HTTP client of the probes: a fresh connection
// per probe (a probe tests that the endpoint accepts connections, and no
// idle connection outlives a removed endpoint), no proxy from the
// environment, and redirects returned as they are.
func newProbeClient() *http.Client {
	return &http.Client{
		Transport: &http.Transport{
			DialContext:            (&net.Dialer{}).DialContext,
			DisableKeepAlives:      true,
			DisableCompression:     true,
			MaxResponseHeaderBytes: maxProbeHeader,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// describeErr names a probe failure the way operators search for it.
func describeErr(err error, timeout time.Duration) string {
	var ne net.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return fmt.Sprintf("timeout after %v", timeout)
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connect refused"
	case errors.Is(err, syscall.ECONNRESET):
		return "connection reset"
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		return "unreachable"
	}
	return clip(err.Error())
}

// clip makes s a valid Observation.Detail.
func clip(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c < 0x20 || c == 0x7f {
			b[i] = ' '
		}
	}
	if len(b) > MaxDetailLen {
		b = b[:MaxDetailLen]
	}
	return string(b)
}
