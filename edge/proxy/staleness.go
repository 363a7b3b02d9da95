package proxy

import (
	"math"
	"strconv"
	"time"

	"github.com/cloudwego/netpoll"

	"github.com/snapgate/snapgate/edge/h1"
	"github.com/snapgate/snapgate/edge/telemetry"
)

// Staleness (invariant P6): a route may bound how long ago ctrl must have
// confirmed that the snapshot in service is the latest. Past the bound the
// route either still forwards (on_stale serve, counted) or answers 503
// "snapshot stale" (reject). A route may also ask for the staleness as a
// response header. docs/routing.md and docs/operations.md describe both.

// neverConfirmed is the staleness of a snapshot ctrl never confirmed since
// the process started (a boot from disk with ctrl unreachable): past every
// bound.
const neverConfirmed = time.Duration(math.MaxInt64)

// stalenessHeader is the response field carrying the staleness in whole
// milliseconds, or "unconfirmed".
const stalenessHeader = "X-Snapgate-Staleness"

// FreshnessFunc reports the snapshot version in service and when ctrl last
// confirmed that it is the latest, zero if never (feed.Client.Freshness).
type FreshnessFunc func() (version uint64, confirmedAt time.Time)

// staleness is how long ago ctrl last confirmed the snapshot in service.
func (s *Server) staleness(now time.Time) time.Duration {
	if s.cfg.Freshness == nil {
		return neverConfirmed
	}
	_, at := s.cfg.Freshness()
	if at.IsZero() {
		return neverConfirmed
	}
	return max(now.Sub(at), 0)
}

// checkStaleness applies the matched route's staleness settings. It
// reports false when the route rejects the request as stale; the caller
// then answers with failStale. Routes without a bound or header cost two
// loads from the mapped route and no clock read.
func (s *Server) checkStaleness(st *connState) bool {
	bound := st.match.MaxStalenessMs()
	wantHeader := st.match.StaleHeader()
	if bound == 0 && !wantHeader {
		return true
	}
	age := s.staleness(time.Now())
	if wantHeader {
		st.staleHeader, st.staleness = true, age
	}
	if bound == 0 || age <= time.Duration(bound)*time.Millisecond {
		return true
	}
	if st.match.OnStaleReject() {
		return false
	}
	s.metrics.StaleServed()
	return true
}

// failStale answers 503 "snapshot stale" with Retry-After, before the body
// was read.
func (s *Server) failStale(st *connState, hn int) bool {
	st.retryAfter = s.staleRetryAfter
	return s.failBeforeBody(st, hn, telemetry.CauseStale, 503, "snapshot stale")
}

// writeStaleness writes the staleness field if the route asked for it.
func (s *Server) writeStaleness(st *connState, w netpoll.Writer) {
	if !st.staleHeader {
		return
	}
	w.WriteString(stalenessHeader + ": ")
	if st.staleness == neverConfirmed {
		w.WriteString("unconfirmed\r\n")
		return
	}
	w.WriteBinary(strconv.AppendInt(st.num[:0], st.staleness.Milliseconds(), 10))
	w.WriteString("\r\n")
}

// isStalenessField matches the edge's own staleness field, which an
// upstream response must not be able to set.
func isStalenessField(name []byte) bool {
	return len(name) == len(stalenessHeader) && h1.EqualFold(name, "x-snapgate-staleness")
}
