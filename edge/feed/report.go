package feed

import (
	"slices"
	"sync"
	"time"

	"github.com/snapgate/snapgate/wire"
)

// Passive health reports (docs/health.md, "Edge reports"): the edge's
// ejections and recoveries, queued per cluster that lists the endpoint and
// sent to ctrl in REPORT frames at most every ReportInterval. They are
// advisory: past MaxQueuedReports the oldest are dropped, and a batch lost
// with a broken stream is not resent.
//
// Revisions form a hybrid clock: each observation takes the larger of the
// previous revision + 1 and the wall clock in unix nanos. They rise within
// a process, and a restarted edge starts above its last run's revisions
// unless the clock stepped back further than the restart took; ctrl would
// then ignore its reports of an endpoint until the clock catches up.

// reportQueue holds observations waiting for ctrl, oldest first.
type reportQueue struct {
	mu       sync.Mutex
	obs      []wire.Observation
	lastRev  uint64
	dropped  uint64
	clusters []string // ClustersOf's scratch
}

// ObserveEndpoint queues an observation of addr for each cluster of the
// snapshot in service that lists it: ok false when this edge ejected it,
// with why; ok true (cause wire.CauseRecovered) when it first succeeded
// after an ejection. It does not block on the network.
func (c *Client) ObserveEndpoint(addr string, ok bool, cause wire.Cause) {
	if c.cfg.ClustersOf == nil {
		return
	}
	now := time.Now().UnixNano()
	q := &c.reports
	q.mu.Lock()
	defer q.mu.Unlock()
	q.clusters = c.cfg.ClustersOf(addr, q.clusters[:0])
	for _, cl := range q.clusters {
		q.lastRev = max(q.lastRev+1, uint64(now))
		o := wire.Observation{Cluster: cl, Endpoint: addr, OK: ok, Cause: cause, Revision: q.lastRev, UnixNano: now}
		if err := o.Validate(); err != nil {
			c.log.Warn("feed: cannot report endpoint health to ctrl", "err", err)
			continue
		}
		if len(q.obs) == c.cfg.MaxQueuedReports {
			q.obs = append(q.obs[:0], q.obs[1:]...)
			q.dropped++
		}
		q.obs = append(q.obs, o)
	}
}

// takeReports moves up to wire.MaxReportObservations queued observations,
// oldest first, to dst[:0], and returns how many were dropped since the
// last call.
func (c *Client) takeReports(dst []wire.Observation) ([]wire.Observation, uint64) {
	q := &c.reports
	q.mu.Lock()
	defer q.mu.Unlock()
	n := min(len(q.obs), wire.MaxReportObservations)
	dst = append(dst[:0], q.obs[:n]...)
	q.obs = append(q.obs[:0], q.obs[n:]...)
	d := q.dropped
	q.dropped = 0
	return dst, d
}

// reportLoop sends the queued observations every ReportInterval while the
// session lasts; only for a ctrl that answered in protocol 3 or later.
// Observations whose cause the session's version lacks (Cause5xx below 4)
// are dropped: an older ctrl would refuse the whole REPORT as malformed.
func (s *stream) reportLoop(done <-chan struct{}) {
	tick := time.NewTicker(s.c.cfg.ReportInterval)
	defer tick.Stop()
	var (
		obs        []wire.Observation
		buf        []byte
		unsendable uint64
	)
	ver := s.w.Version()
	defer func() {
		if unsendable > 0 {
			s.c.log.Warn("feed: health reports ctrl's protocol version cannot carry were dropped", "protocol", ver, "dropped", unsendable)
		}
	}()
	for {
		select {
		case <-done:
			return
		case <-tick.C:
			var dropped uint64
			obs, dropped = s.c.takeReports(obs)
			if dropped > 0 {
				s.c.log.Warn("feed: health reports dropped while ctrl was away or slow", "dropped", dropped)
			}
			n := len(obs)
			obs = slices.DeleteFunc(obs, func(o wire.Observation) bool { return !o.Cause.KnownIn(ver) })
			if n > len(obs) && unsendable == 0 {
				s.c.log.Warn("feed: ctrl's protocol version cannot carry some health reports; dropping them for this session", "protocol", ver, "cause", wire.Cause5xx)
			}
			unsendable += uint64(n - len(obs))
			if len(obs) == 0 {
				continue
			}
			// ctrl takes at most wire.MaxEdgePayload in a frame: a batch
			// with long names goes as several REPORTs.
			for rest := obs; len(rest) > 0; {
				n := wire.FitReport(rest, wire.MaxEdgePayload)
				var err error
				// Every queued observation passed Validate, so this cannot fail.
				if buf, err = wire.AppendReport(buf[:0], wire.Report{Observations: rest[:n]}); err != nil {
					s.c.log.Error("feed: encoding health report", "err", err)
					break
				}
				if err := s.send(wire.TypeReport, buf); err != nil {
					s.conn.Close() // the reader sees it and reconnects
					return
				}
				rest = rest[n:]
			}
		}
	}
}
