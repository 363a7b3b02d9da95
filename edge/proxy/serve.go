package proxy

import (
	"bytes"
	"context"
	"errors"
	"io"
	"time"

	"github.com/cloudwego/netpoll"

	"github.com/snapgate/snapgate/edge/h1"
	"github.com/snapgate/snapgate/edge/routing"
	"github.com/snapgate/snapgate/edge/telemetry"
	"github.com/snapgate/snapgate/edge/upstream"
	"github.com/snapgate/snapgate/fbs"
)

// onRequest runs when a client connection has input. It must consume all
// of it or close the connection, or netpoll calls it again in a busy loop
// (deps.md §1), so it serves requests until the input is empty.
func (s *Server) onRequest(ctx context.Context, c netpoll.Connection) error {
	st, _ := ctx.Value(ctxKey{}).(*connState)
	if st == nil {
		return c.Close()
	}
	if st.detached != nil {
		// The connection is leaving netpoll: its input, including bytes that
		// arrive before the detach completes, belongs to resumeDetached.
		// Serving it here would parse body bytes as a request and rewrite
		// the state the detached exchange is using.
		return nil
	}
	st.busy.Store(true)
	keep, served := true, false
	for keep && c.Reader().Len() > 0 {
		if s.skipEmptyLines(c.Reader()) {
			break
		}
		keep = s.serveOne(st)
		served = true
	}
	st.closeFIN()
	if !keep {
		if st.detached != nil {
			// The exchange continues in resumeDetached, run by
			// netpoll's close callback once this handler returned.
			c.(detacher).Detach()
			return nil
		}
		c.Close()
	}
	if served {
		// Empty lines alone do not keep an idle connection open.
		st.lastActive.Store(monoNow())
	}
	st.busy.Store(false)
	return nil
}

// skipEmptyLines consumes input that is only empty lines (h1.EmptyLines),
// so that a client's CRLF after a body leaves the connection idle instead
// of starting a request head whose header timeout would send the client an
// unsolicited 408 later. It reports whether it did.
func (s *Server) skipEmptyLines(r netpoll.Reader) bool {
	n := r.Len()
	if n > 2*h1.MaxLeadingCRLF { // a request: no Peek on the hot path
		return false
	}
	buf, err := r.Peek(n)
	if err != nil || !h1.EmptyLines(buf) {
		return false
	}
	r.Skip(n)
	r.Release()
	return true
}

// serveOne proxies one request. It reports whether the client connection
// stays open; on true the request's bytes have been consumed.
func (s *Server) serveOne(st *connState) (keep bool) {
	r := st.conn.Reader()
	// Every slice into the client input dies here, after the response to
	// the client has been flushed.
	defer r.Release()

	st.rc, st.ridLen, st.isHead, st.bodyUnread, st.lingerAfter = s.metrics.Route(nil), 0, false, false, false
	st.staleHeader, st.retryAfter, st.pol = false, 0, requestPolicy{}
	hn, ok := s.readHead(st)
	if !ok {
		return false
	}
	req := &st.req
	st.setMethod(req.Method)
	s.setRequestID(st)

	tab := s.cfg.Tables.Acquire()
	if tab == nil {
		return s.failBeforeBody(st, hn, telemetry.CauseNoTable, 503, "no routing table")
	}
	defer func() {
		if st.detached == nil {
			tab.Release()
		}
	}()
	mr := &st.matchReq
	mr.Host, mr.Path, mr.Method, mr.Headers = req.Host, req.Path, req.Method, st
	if !tab.RouteRequest(mr, &st.match) {
		return s.failBeforeBody(st, hn, telemetry.CauseNoRoute, 404, "no route")
	}
	if bytes.IndexByte(req.Path, ';') >= 0 && !s.sameRouteWithoutParams(st, tab) {
		return s.failBeforeBody(st, hn, telemetry.CauseBadRequest, 400, "path parameters change the route")
	}
	st.rc = s.routeCounters(tab, &st.match)
	if !s.checkStaleness(st) {
		return s.failStale(st, hn)
	}
	if !s.enforcePolicy(st, tab) {
		return s.refusePolicy(st, hn)
	}
	st.upPath = req.Path
	if out, ok := st.match.Rewrite(st.pathBuf[:0], req.Path); ok {
		st.pathBuf = out
		st.upPath = out
	}
	st.upgrade = s.upgradeRequested(st) && detachSupported(st.conn)
	// Everything read from the request head is taken now: the head's
	// slices alias netpoll's buffer, and a later Peek that spans buffer
	// nodes (readBody) may reuse the memory they point into.
	key := s.pickKey(st, tab, st.match.ClusterIndex())
	st.upHead = appendRequestHead(st, st.upHead[:0])
	st.upHeadLen = len(st.upHead)

	total, ok := s.readBody(st, hn)
	if !ok {
		if st.lingerAfter && s.reserveDetach() && !s.detach(st, tab, hn, &detachedExchange{linger: true}) {
			s.detachWG.Done()
		}
		return false
	}
	if total < 0 && s.reserveDetach() {
		if s.detach(st, tab, hn, &detachedExchange{key: key}) {
			return false
		}
		s.detachWG.Done()
	}
	keep = req.KeepAlive && !s.draining.Load()
	if !s.forward(st, tab, hn, total, keep, key) {
		if dx := st.switched; dx != nil {
			// A 101 went out: the tunnel runs off netpoll once this
			// handler returns (tunnel), or not at all while shutting down.
			st.switched = nil
			if !s.detach(st, tab, total, dx) {
				s.detachWG.Done()
				dx.endTunnel()
			}
		}
		return false
	}
	if total > 0 {
		if err := r.Skip(total); err != nil {
			return false
		}
	}
	return keep
}

// detach prepares to finish an exchange off netpoll (detach.go) and
// reports whether it will: the client's first consumed bytes are taken
// now (the request head of a streamed-body exchange, which serveOne has
// already built the upstream head from; the whole request before a
// tunnel); the caller then returns false and onRequest detaches the
// connection. The caller holds a reservation (reserveDetach), which the
// exchange keeps; on false, it is still the caller's. Without detach
// support it does not: a body then streams through netpoll's buffer.
func (s *Server) detach(st *connState, tab *routing.Table, consumed int, dx *detachedExchange) bool {
	if !detachSupported(st.conn) {
		return false
	}
	r := st.conn.Reader()
	if err := r.Skip(consumed); err != nil {
		return false
	}
	r.Release()
	dx.tab = tab
	st.detached = dx
	return true
}

// reserveDetach counts one more detached exchange for Shutdown to wait for
// (detachWG); false once the edge is shutting down. A tunnel reserves
// before its 101 goes out, so that no switch is relayed that cannot run.
func (s *Server) reserveDetach() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.shutdown {
		return false
	}
	s.detachWG.Add(1)
	return true
}

// readHead waits until a complete request head is buffered; blocking Peek
// is netpoll's way to wait for more bytes. The whole head must arrive
// within HeaderTimeout of the call.
func (s *Server) readHead(st *connState) (int, bool) {
	c := st.conn
	r := c.Reader()
	n := r.Len()
	waits := false
	parsed := 0 // bytes buffered at the last parse
	for {
		if n > r.Len() && !waits {
			// Set only when the head is not all here: most requests
			// arrive whole, and a deadline costs two clock reads.
			c.SetReadDeadline(time.Now().Add(s.cfg.HeaderTimeout))
			waits = true
		}
		buf, err := r.Peek(n)
		if err != nil {
			if upstream.IsTimeout(err) {
				st.req.Minor = 1
				s.writeError(st, telemetry.CauseHeaderTimeout, 408, "request header timeout", true)
			}
			return 0, false
		}
		if !h1.WorthReparsing(buf, parsed) {
			// A head trickling in: parsing it whole again for every few
			// bytes would cost the square of its length.
			n = max(r.Len(), n+1)
			continue
		}
		parsed = len(buf)
		hn, perr := h1.ParseRequest(buf, &st.req, s.cfg.Limits)
		if perr != nil {
			var he *h1.Error
			if errors.As(perr, &he) {
				s.writeError(st, telemetry.CauseBadRequest, he.Status, he.Reason, true)
			}
			return 0, false
		}
		if hn > 0 {
			// Body reads get a per-wait timeout instead: a large upload
			// may take long, a stalled one may not.
			c.SetReadTimeout(s.cfg.HeaderTimeout)
			return hn, true
		}
		n = max(r.Len(), n+1)
	}
}

// sameRouteWithoutParams reports whether the request's path, read as a
// servlet container reads it (every segment's ';' parameters dropped,
// h1.StripParams), routes as its literal path did, or not at all. Routing
// keeps ';' literal, so /admin;x is not under a route /admin; a Java
// backend behind the route it did match would still serve /admin, past
// /admin's policy. Such a request is refused instead (docs/http.md).
func (s *Server) sameRouteWithoutParams(st *connState, tab *routing.Table) bool {
	st.paramPath = h1.StripParams(st.paramPath, st.req.Path)
	st.paramReq = st.matchReq
	st.paramReq.Path = st.paramPath
	return !tab.RouteRequest(&st.paramReq, &st.paramMatch) || st.paramMatch.Index() == st.match.Index()
}

// failBeforeBody answers a request refused before its body was read. The
// connection survives only if the body is already buffered and can be
// skipped; otherwise framing would be lost, so it closes.
func (s *Server) failBeforeBody(st *connState, hn int, cause telemetry.Cause, status int, reason string) bool {
	req := &st.req
	total := int64(hn)
	switch {
	case req.Chunked:
		total = -1
	case req.ContentLength > 0:
		total += req.ContentLength
	}
	r := st.conn.Reader()
	keep := req.KeepAlive && !s.draining.Load() && total >= 0 && int64(r.Len()) >= total
	s.writeError(st, cause, status, reason, !keep)
	if keep {
		return r.Skip(int(total)) == nil
	}
	return false
}

// readBody decides how the request body travels. A body that is already
// buffered, or a Content-Length body up to BufferBodyBytes, is waited for
// and sent whole, which keeps the request retryable; it returns the
// request's total length. Anything larger streams (total -1): forwarded in
// pieces as it arrives, so memory per connection does not grow with the
// body. A chunked body is validated by the ChunkedScanner on either path,
// so a malformed one never completes a request upstream.
func (s *Server) readBody(st *connState, hn int) (int, bool) {
	req := &st.req
	r := st.conn.Reader()
	switch {
	case req.Chunked:
		// The trailer may not carry what the policy keeps from the head
		// (requestPolicy.ForbidsTrailer).
		st.chunks.ResetFiltered(&st.pol)
		if avail := r.Len(); avail > hn {
			buf, err := r.Peek(avail)
			if err != nil {
				return 0, false
			}
			k, done, serr := st.chunks.Scan(buf[hn:])
			if serr != nil {
				s.bodyFramingFailed(st, serr)
				return 0, false
			}
			if done {
				return hn + k, true
			}
		}
		// Streaming re-scans from the start of the body.
		st.chunks.ResetFiltered(&st.pol)
		if req.Expect100 && r.Len() == hn {
			s.writeContinue(st)
		}
		return -1, true
	case req.ContentLength > 0:
		if s.cfg.MaxBodyBytes > 0 && req.ContentLength > s.cfg.MaxBodyBytes {
			s.writeError(st, telemetry.CauseBadRequest, 413, "request body too large", true)
			// The client is likely still sending the body: closing on it
			// would reset the connection and could destroy the 413.
			st.lingerAfter = true
			return 0, false
		}
		total := int64(hn) + req.ContentLength
		if req.Expect100 && int64(r.Len()) < total {
			s.writeContinue(st)
		}
		if req.ContentLength > s.cfg.BufferBodyBytes && int64(r.Len()) < total {
			return -1, true
		}
		if _, err := r.Peek(int(total)); err != nil {
			s.clientReadFailed(st, err)
			return 0, false
		}
		return int(total), true
	}
	return hn, true
}

func (s *Server) bodyFramingFailed(st *connState, err error) {
	var he *h1.Error
	if errors.As(err, &he) {
		s.writeError(st, telemetry.CauseBadRequest, he.Status, he.Reason, true)
	}
}

func (s *Server) clientReadFailed(st *connState, err error) {
	if upstream.IsTimeout(err) {
		s.writeError(st, telemetry.CauseHeaderTimeout, 408, "request body timeout", true)
	}
}

// forward sends the request upstream and relays the response, retrying
// per the route's policy. It reports whether the client connection may
// serve another request.
//
// Retries go to another endpoint of the cluster and only happen while
// nothing of the response reached the client and the request can be sent
// again: an idempotent method whose body is still buffered (total >= 0).
// Independently of the policy, a reused keep-alive connection that the
// backend closed just before our write is retried once on a fresh
// connection to the same endpoint, as browsers and Go's transport do.
func (s *Server) forward(st *connState, tab *routing.Table, hn, total int, keep bool, key routing.PickKey) bool {
	ci := st.match.ClusterIndex()
	connectTimeout := tab.ConnectTimeout(ci)
	if connectTimeout <= 0 {
		connectTimeout = s.cfg.ConnectTimeout
	}
	timeout := time.Duration(st.match.TimeoutMs()) * time.Millisecond
	if timeout <= 0 {
		timeout = s.cfg.UpstreamTimeout
	}
	st.retry = retryPlan{tab: tab, cluster: ci, key: key}
	defer func() { st.retry = retryPlan{} }()
	if total >= 0 && idempotent(st.method()) {
		st.retry.left = st.match.RetryAttempts()
	}
	pool, ok := tab.Balance(ci, key, nil)
	if !ok {
		if total < 0 {
			keep = false
		}
		s.writeError(st, telemetry.CauseNoEndpoint, 503, "no endpoints", !keep)
		return keep
	}
	kept := false
	for s.attempt(st, pool, connectTimeout, hn, total, timeout, keep, &kept) {
		pool = st.retry.next
	}
	return kept
}

// retryPlan is what a request may still retry: attempts left, and where
// the next one goes.
type retryPlan struct {
	tab     *routing.Table
	cluster int
	key     routing.PickKey
	left    int
	tried   routing.Tried  // the endpoints attempts failed on
	next    *upstream.Pool // set by take
}

// take reports whether the request is retried after failing on pool: an
// attempt is left and the cluster has a usable endpoint the request has
// not failed on yet, which becomes next. Without one the failed attempt's
// own answer stands (a 502, 504, or the backend's retryable status)
// rather than a 503 "no endpoints" that would hide what happened.
func (p *retryPlan) take(pool *upstream.Pool) bool {
	if p.left <= 0 {
		return false
	}
	p.tried.Add(pool)
	next, ok := p.tab.Balance(p.cluster, p.key, &p.tried)
	if !ok {
		return false
	}
	p.left--
	p.next = next
	return true
}

// attempt makes one try on pool. It returns true when the caller should
// retry on st.retry.next; otherwise *kept says whether the client
// connection stays open (keep is whether it may). The pool's in-flight
// count (least-request) and its health (local ejection, 5xx streak) are
// updated here. A pooled connection the backend closed as the request
// arrived is redone once on a newly dialed one, per endpoint: each
// endpoint may lose that race.
func (s *Server) attempt(st *connState, pool *upstream.Pool, connectTimeout time.Duration, hn, total int, timeout time.Duration, keep bool, kept *bool) (retry bool) {
	epoch := pool.Begin()
	defer pool.End()
	staleRetried := false
	retryable := total >= 0 && idempotent(st.method())
	for {
		var u *upstream.Conn
		var reused bool
		var err error
		if staleRetried {
			// The idle connections are as old as the stale one.
			u, err = pool.Dial(connectTimeout)
		} else {
			u, reused, err = pool.Get(connectTimeout)
		}
		if err != nil {
			var de *upstream.DialError
			timedOut := errors.As(err, &de) && de.Timeout()
			if timedOut {
				pool.ReportFailure(upstream.FailTimeout)
			} else {
				pool.ReportFailure(upstream.FailConnect)
			}
			if st.match.RetryOnConnectFailure() && st.retry.take(pool) {
				return true
			}
			if timedOut {
				s.writeError(st, telemetry.CauseConnectTimeout, 504, "upstream connect timeout", !keep || total < 0)
			} else {
				s.writeError(st, telemetry.CauseConnectFailed, 502, "upstream connect failed", !keep || total < 0)
			}
			s.cfg.Logger.Warn("upstream connect failed", "addr", pool.Addr(), "err", err)
			*kept = keep && total >= 0
			return false
		}
		if dx := st.detached; dx != nil {
			dx.using(u) // Shutdown can cut the upload off
		}
		res := s.exchange(st, pool, u, hn, total, timeout, keep)
		if dx := st.detached; dx != nil {
			dx.using(nil)
		}
		switch res {
		case exchangeStale, exchangeTimeout, exchangeClientFailed, exchangeCutOff, exchangeBodyCutOff, exchangeBodyTimeout:
			// No whole answer to judge the endpoint by; a failure of its
			// own is reported below.
		case exchangeBadResponse:
			pool.ReportSuccessSince(epoch)
		default: // a parsed response head, even if the client failed to take it
			pool.ReportResponseSince(st.resp.Status, epoch) // a 5xx streak is reported, not ejected
		}
		*kept = false
		switch res {
		case exchangeOK:
			pool.Put(u)
			*kept = keep
		case exchangeOKClose:
			pool.Discard(u)
			*kept = keep && !st.bodyUnread && st.resp.Body != h1.BodyClose
		case exchangeUpgraded:
			// serveOne hands it to the tunnel, which counts as in flight
			// on pool until it closes (least-request).
			pool.Begin()
			st.switched = &detachedExchange{tunnel: u, pool: pool}
		case exchangeRetryStatus:
			pool.Discard(u)
			return true
		case exchangeStale:
			pool.Discard(u)
			if retryable {
				if reused && !staleRetried {
					// A keep-alive race, not an endpoint failure.
					staleRetried = true
					continue
				}
				pool.ReportFailure(upstream.FailReset)
				if st.match.RetryOnReset() && st.retry.take(pool) {
					return true
				}
			} else if !reused {
				pool.ReportFailure(upstream.FailReset)
			}
			// A buffered request was read whole: the client connection is
			// still in step and may carry the next request.
			s.writeError(st, telemetry.CauseUpstreamClosed, 502, "upstream connection closed", !keep || total < 0)
			*kept = keep && total >= 0
		case exchangeTimeout:
			pool.Discard(u)
			pool.ReportFailure(upstream.FailTimeout)
			s.writeError(st, telemetry.CauseUpstreamTimeout, 504, "upstream timeout", !keep || total < 0)
			*kept = keep && total >= 0
		case exchangeBadResponse, exchangeCutOff:
			pool.Discard(u)
			if res == exchangeCutOff {
				// The backend had the request and broke off its answer.
				pool.ReportFailure(upstream.FailReset)
			}
			s.writeError(st, telemetry.CauseBadResponse, 502, "bad upstream response", !keep || total < 0)
			*kept = keep && total >= 0
		case exchangeClientFailed:
			pool.Discard(u)
		case exchangeShuttingDown:
			pool.Discard(u)
			s.writeError(st, telemetry.CauseShuttingDown, 503, "shutting down", true)
		case exchangeBodyCutOff, exchangeBodyTimeout:
			pool.Discard(u)
			if st.resp.Body == h1.BodyClose {
				resetClient(st)
			}
			if res == exchangeBodyTimeout {
				pool.ReportFailure(upstream.FailTimeout)
			} else {
				pool.ReportFailure(upstream.FailReset)
			}
			s.metrics.Error(telemetry.CauseAborted)
		default: // exchangeAborted: the client already has part of a response
			pool.Discard(u)
			s.metrics.Error(telemetry.CauseAborted)
		}
		return false
	}
}

// pickKey extracts what the cluster's consistent hash is keyed on. A
// missing header or cookie gives the zero key (round robin).
func (s *Server) pickKey(st *connState, tab *routing.Table, ci int) routing.PickKey {
	on := tab.HashOn(ci)
	switch on.Kind {
	case fbs.HashOnHeader:
		if v, ok := st.Header(on.Name); ok {
			return routing.KeyOf(v)
		}
	case fbs.HashOnCookie:
		if c, ok := st.Header(cookieName); ok {
			if v, ok := routing.CookieValue(c, on.Name); ok {
				return routing.KeyOf(v)
			}
		}
	case fbs.HashOnSourceIP:
		return routing.KeyOf(st.clientIP)
	}
	return routing.PickKey{}
}

var cookieName = []byte("cookie")

func idempotent(m []byte) bool {
	switch string(m) {
	case "GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE":
		return true
	}
	return false
}

type exchangeResult uint8

const (
	exchangeOK           exchangeResult = iota // done; upstream conn reusable
	exchangeOKClose                            // done; upstream conn must close
	exchangeUpgraded                           // 101 relayed; tunnel the two connections
	exchangeRetryStatus                        // a retryable status; nothing sent to the client
	exchangeStale                              // failed before any response byte
	exchangeTimeout                            // no response head in time
	exchangeBadResponse                        // response head unparsable or not allowed
	exchangeCutOff                             // the upstream closed inside a head or after a relayed 1xx
	exchangeClientFailed                       // the client body failed mid-stream; answered if possible
	exchangeAborted                            // failed mid-response; close the client
	exchangeBodyCutOff                         // the upstream closed mid-body; close the client
	exchangeBodyTimeout                        // the upstream went quiet mid-body; close the client
	exchangeShuttingDown                       // a 101 arrived during shutdown: no tunnel, nothing sent to the client
)

// exchange writes the request on u, a connection of pool, reads the
// response head and relays the response to the client, unless its status
// is one the route retries and st.retry has somewhere to retry it.
// total < 0 streams the request body.
func (s *Server) exchange(st *connState, pool *upstream.Pool, u *upstream.Conn, hn, total int, timeout time.Duration, keep bool) exchangeResult {
	wt := s.cfg.WriteTimeout
	st.upHead = st.upHead[:st.upHeadLen] // a retry drops the small body appended below
	early := false                       // the upstream stopped taking the body; only an early answer may follow
	stalled := false                     // ... because a write to it timed out: it stopped reading
	var send []byte                      // a request not yet written: the first read writes it (Conn.Send)
	interim := false                     // a 1xx reached the client: no retry from here on
	// A write that timed out met an upstream that stopped reading, not a
	// closed connection: only an early answer may follow, and without one
	// it is a timeout (504, ejected as such), not a stale connection to
	// redo the request on. wrote reports whether a write's err leaves the
	// exchange going, marking it stalled on a timeout.
	wrote := func(err error) bool {
		if err != nil && upstream.IsTimeout(err) {
			early, stalled = true, true
			return true
		}
		return err == nil
	}
	if total < 0 {
		if err := u.Write(st.upHead, wt); !wrote(err) {
			return exchangeStale
		}
		if !early {
			switch res := s.streamBody(st, u, hn); res {
			case exchangeOK:
			case exchangeStale, exchangeTimeout:
				early, stalled = true, res == exchangeTimeout
			default:
				return res
			}
		}
	} else {
		buf, err := st.conn.Reader().Peek(total)
		if err != nil {
			return exchangeClientFailed
		}
		body := buf[hn:total]
		// One write for a head and a small body; a larger body goes in a
		// second write rather than growing the per-connection head buffer.
		if len(body) <= smallBody {
			st.upHead = append(st.upHead, body...)
			body = nil
		}
		if len(body) > 0 {
			err := u.Write(st.upHead, wt)
			if err == nil {
				err = u.Write(body, wt)
			}
			if !wrote(err) {
				return exchangeStale
			}
		} else {
			send = st.upHead // written by the first read's Send
		}
	}
	sent := monoNow()

	// timeout bounds the wait for a whole head, not each read of it: a
	// backend dripping its head must not hold the request past it. An
	// interim (1xx) head relayed to the client starts the wait again; one
	// that is not (a 100, or any to an HTTP/1.0 client) shows the client
	// nothing, so it does not. The clock is read only when a head takes
	// more than one read.
	headStart, wait, refill := sent, timeout, false
	parsed := 0 // bytes buffered at the last parse that found the head incomplete
	interims := 0
	// malformedTail reports whether bytes WorthReparsing let wait since
	// the last parse make the head malformed: a close or a timeout after
	// them ends an answer the edge cannot parse, a 502 that does not
	// eject (docs/routing.md, "Ejection"), not one broken off.
	malformedTail := func() bool {
		buf := u.Buf[u.Start:u.End]
		if parsed == 0 || len(buf) <= parsed {
			return false
		}
		_, perr := h1.ParseResponse(buf, &st.resp, st.method())
		return perr != nil
	}
	for {
		if buf := u.Buf[u.Start:u.End]; len(buf) > 0 && h1.WorthReparsing(buf, parsed) {
			// WorthReparsing: a head trickling in is not parsed whole
			// again for every few bytes, which would cost the square of
			// its length, as for request heads (readHead).
			rn, perr := h1.ParseResponse(buf, &st.resp, st.method())
			if perr != nil {
				return exchangeBadResponse
			}
			parsed = len(buf)
			if rn > 0 {
				parsed = 0
				resp := &st.resp
				if resp.Status == 101 {
					if !switchAccepted(st) {
						return exchangeBadResponse // not a switch the client offered
					}
					// The tunnel's place among detached exchanges is
					// taken before the client sees the switch: during
					// shutdown there is none, and no 101 goes out.
					if !s.reserveDetach() {
						return exchangeShuttingDown
					}
					s.metrics.ObserveUpstream(time.Duration(monoNow() - sent))
					st.rc.Observe(101)
					if s.writeResponseHead(st, st.cw, false, true) != nil {
						s.detachWG.Done()
						return exchangeAborted // the client never got the 101
					}
					u.Consume(rn)
					return exchangeUpgraded
				}
				if st.req.Minor == 0 && resp.TransferCoded && resp.Body != h1.BodyNone {
					// A transfer-coded body cannot reach an HTTP/1.0 client
					// (RFC 9112 §6.1), and we forward codings as received.
					return exchangeBadResponse
				}
				if resp.Status >= 200 {
					u.Consume(rn)
					break
				}
				if interims++; interims > maxInterims {
					return exchangeBadResponse
				}
				// 100 answers an Expect we handled ourselves; other 1xx are
				// forwarded to HTTP/1.1 clients (RFC 9110 §15.2). The head
				// is flushed before Consume: its fields alias u.Buf.
				if resp.Status != 100 && st.req.Minor == 1 {
					if s.writeResponseHead(st, st.cw, false, true) != nil {
						return exchangeAborted // the client is not taking bytes
					}
					interim = true
					headStart, wait, refill = monoNow(), timeout, false
				}
				u.Consume(rn)
				continue
			}
		}
		if refill && timeout > 0 {
			if wait = timeout - time.Duration(monoNow()-headStart); wait <= 0 {
				if malformedTail() {
					return exchangeBadResponse
				}
				if early && !stalled {
					return exchangeStale
				}
				return exchangeTimeout
			}
		}
		refill = true
		var err error
		if send != nil {
			var ok bool
			ok, _, err = u.Send(send, wt, wait)
			send = nil
			if !ok {
				if !wrote(err) {
					return exchangeStale
				}
				continue // stalled: only an early answer may follow
			}
		} else {
			_, err = u.Fill(wait)
		}
		if err != nil {
			switch {
			case malformedTail():
				return exchangeBadResponse
			case early && upstream.IsTimeout(err):
				// It stopped reading the body and did not answer.
				return exchangeTimeout
			case early:
				return exchangeStale
			case upstream.IsTimeout(err):
				return exchangeTimeout
			case u.Buffered() == 0 && !interim:
				return exchangeStale
			case errors.Is(err, upstream.ErrBufferFull):
				return exchangeBadResponse // a head over ReadBufferSize: unparsable, not broken off
			}
			// A close inside a head, or after a relayed 1xx: the backend
			// had the request and broke off its answer.
			return exchangeCutOff
		}
	}
	s.metrics.ObserveUpstream(time.Duration(monoNow() - sent))
	if !early && !interim && st.match.RetryOn(st.resp.Status) && st.retry.take(pool) {
		return exchangeRetryStatus
	}
	st.rc.Observe(st.resp.Status)

	// An early answer leaves the rest of a streamed body unread: the
	// client connection cannot carry another request. A buffered one was
	// read whole, so the client connection stays in step.
	st.bodyUnread = early && total < 0
	closeClient := !keep || st.bodyUnread || st.resp.Body == h1.BodyClose
	cw := st.cw
	s.writeResponseHead(st, cw, closeClient, false)
	switch s.relayBody(st, u, cw, timeout) {
	case relayAborted:
		return exchangeAborted
	case relayCutOff, relayClosed:
		return exchangeBodyCutOff
	case relayTimedOut:
		return exchangeBodyTimeout
	}
	// The one flush of a small response: head and body in one write.
	if err := s.flush(st, cw); err != nil {
		return exchangeAborted
	}
	if st.resp.KeepAlive && !early && u.Buffered() == 0 && !framedButBodiless(&st.resp) {
		return exchangeOK
	}
	return exchangeOKClose
}

// framedButBodiless reports an answer without a body (to HEAD, or 1xx,
// 204, 304) whose framing fields describe one. A backend that writes that
// body anyway, after the head, leaves it on the connection, where the next
// request (another client's) would read it as its response; so such a
// connection is not reused.
func framedButBodiless(resp *h1.Response) bool {
	return resp.Body == h1.BodyNone && (resp.ContentLength > 0 || resp.TransferCoded)
}

// maxInterims bounds the interim (1xx) responses before the final one; a
// backend sending more is broken or hostile (Go's HTTP client gives up
// after 5). With each relayed one restarting the response timeout, it
// would otherwise hold the request for ever.
const maxInterims = 16

// smallBody is the largest buffered request body copied behind the head
// so both go in one write.
const smallBody = 16 << 10

// streamBody forwards the request body after the head as it arrives,
// releasing each piece once the upstream took it. Writes to the upstream
// block, so an upstream slower than the client holds the proxy here.
// The head's bytes are consumed first, so everything that aliases them
// (the Request's slices) is dead afterwards; the proxy only uses copies it
// took earlier. exchangeStale means the upstream stopped taking the body
// (it closed), exchangeTimeout that a write to it timed out (it stopped
// reading).
func (s *Server) streamBody(st *connState, u *upstream.Conn, hn int) exchangeResult {
	r := st.cr
	if hn > 0 {
		if err := r.Skip(hn); err != nil {
			return exchangeClientFailed
		}
		r.Release()
	}
	chunked := st.req.Chunked
	remaining := st.req.ContentLength
	wt := s.cfg.WriteTimeout
	// held counts the bytes at the head of r that the scanner took but that
	// wait for their line, or the last chunk for its trailer section, to
	// end (ChunkedScanner.Pending): a body refused late never reaches the
	// backend ended.
	held := 0
	for {
		avail := r.Len()
		if avail <= held {
			// Nothing new to scan: wait for more of the body.
			if _, err := r.Peek(held + 1); err != nil {
				s.clientReadFailed(st, err)
				return exchangeClientFailed
			}
			continue
		}
		k := avail
		done := false
		if chunked {
			p, err := r.Peek(avail)
			if err != nil {
				return exchangeClientFailed
			}
			n, d, serr := st.chunks.Scan(p[held:])
			if serr != nil {
				s.bodyFramingFailed(st, serr)
				return exchangeClientFailed
			}
			done = d
			k = held + n - st.chunks.Pending()
			held = st.chunks.Pending()
		} else {
			k = int(min(int64(avail), remaining))
			remaining -= int64(k)
			done = remaining == 0
		}
		if k > 0 {
			p, err := r.Next(k)
			if err != nil {
				return exchangeClientFailed
			}
			if err := u.Write(p, wt); err != nil {
				if upstream.IsTimeout(err) {
					return exchangeTimeout // it stopped reading
				}
				return exchangeStale
			}
			r.Release()
		}
		if done {
			return exchangeOK
		}
	}
}

// relayBody copies the response body from u to the client per its framing,
// one read buffer at a time. What is handed to the client writer aliases
// u.Buf (netpoll keeps a reference above 4 KiB), so the writer is flushed
// before every refill; that flush also blocks while the client is slow,
// which stops reading from the upstream: memory per connection stays at
// one buffer. The last piece is left for the caller's flush, so a small
// response leaves in one write with its head. (Nothing else reads u: it is
// on the runtime poller, which only reports that bytes are there.)
func (s *Server) relayBody(st *connState, u *upstream.Conn, cw netpoll.Writer, timeout time.Duration) relayResult {
	var remaining int64
	more := func() relayResult {
		if err := s.flush(st, cw); err != nil {
			return relayAborted
		}
		if _, err := u.Fill(timeout); err != nil {
			switch {
			case upstream.IsTimeout(err):
				return relayTimedOut
			case errors.Is(err, io.EOF):
				return relayClosed
			}
			return relayCutOff
		}
		return relayDone
	}
	resp := &st.resp
	switch resp.Body {
	case h1.BodyLength:
		for remaining = resp.ContentLength; ; {
			if k := min(int64(u.Buffered()), remaining); k > 0 {
				if _, err := cw.WriteBinary(u.Buf[u.Start : u.Start+int(k)]); err != nil {
					return relayAborted
				}
				u.Consume(int(k))
				remaining -= k
			}
			if remaining == 0 {
				return relayDone
			}
			if r := more(); r != relayDone {
				return r
			}
		}
	case h1.BodyChunked:
		// Forwarded verbatim, trailers included: the scanner only checks
		// framing so that a broken body is cut off, never re-framed.
		st.chunks.Reset()
		for {
			if u.Buffered() > 0 {
				k, done, serr := st.chunks.Scan(u.Buf[u.Start:u.End])
				if serr != nil {
					// Misframed, like an unparsable head: not counted
					// against the endpoint (docs/routing.md "Ejection").
					return relayAborted
				}
				if k > 0 {
					if _, err := cw.WriteBinary(u.Buf[u.Start : u.Start+k]); err != nil {
						return relayAborted
					}
					u.Consume(k)
				}
				if done {
					return relayDone
				}
			}
			if r := more(); r != relayDone {
				return r
			}
		}
	case h1.BodyClose:
		for {
			if n := u.Buffered(); n > 0 {
				if _, err := cw.WriteBinary(u.Buf[u.Start:u.End]); err != nil {
					return relayAborted
				}
				u.Consume(n)
			}
			// The upstream's FIN is the end of this body; a reset or
			// a timeout cuts it off.
			if r := more(); r != relayDone {
				if r == relayClosed {
					return relayDone
				}
				return r
			}
		}
	}
	return relayDone
}

// relayResult is how relayBody ended.
type relayResult uint8

const (
	relayDone     relayResult = iota // the whole body went to the client writer
	relayAborted                     // the client stopped taking bytes, or the body was misframed
	relayCutOff                      // the upstream reset (or failed) before the body's end
	relayClosed                      // the upstream closed (FIN): the end of a body framed by the close, else a cut-off
	relayTimedOut                    // the upstream sent nothing for the response timeout
)
