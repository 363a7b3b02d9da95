package proxy

import (
	"context"
	"errors"
	"time"

	"github.com/cloudwego/netpoll"

	"github.com/snapgate/snapgate/edge/h1"
	"github.com/snapgate/snapgate/edge/routing"
	"github.com/snapgate/snapgate/edge/upstream"
)

// onRequest runs when a client connection has input. It must consume all
// of it or close the connection, or netpoll calls it again in a busy loop
// (deps.md §1), so it serves requests until the input is empty.
func (s *Server) onRequest(ctx context.Context, c netpoll.Connection) error {
	st, _ := ctx.Value(ctxKey{}).(*connState)
	if st == nil {
		return c.Close()
	}
	st.busy.Store(true)
	for c.Reader().Len() > 0 {
		if !s.serveOne(st) {
			c.Close()
			break
		}
	}
	st.lastActive.Store(time.Now().UnixNano())
	st.busy.Store(false)
	return nil
}

// serveOne proxies one request. It reports whether the client connection
// stays open; on true the request's bytes have been consumed.
func (s *Server) serveOne(st *connState) (keep bool) {
	r := st.conn.Reader()
	// Every slice into the client input dies here, after the response to
	// the client has been flushed.
	defer r.Release()

	hn, ok := s.readHead(st)
	if !ok {
		return false
	}
	req := &st.req

	tab := s.cfg.Tables.Acquire()
	if tab == nil {
		return s.failBeforeBody(st, hn, 503, "no routing table")
	}
	defer tab.Release()
	if !tab.Route(req.Host, req.Path, &st.match) {
		return s.failBeforeBody(st, hn, 404, "no route")
	}
	ci := st.match.ClusterIndex()
	pool, ok := tab.Pick(ci)
	if !ok {
		return s.failBeforeBody(st, hn, 503, "no endpoints")
	}

	total, ok := s.readBody(st, hn)
	if !ok {
		return false
	}
	keep = req.KeepAlive && !s.draining.Load()
	if !s.forward(st, tab, ci, pool, hn, total, keep) {
		return false
	}
	if err := r.Skip(total); err != nil {
		return false
	}
	return keep
}

// readHead waits until a complete request head is buffered; blocking Peek
// is netpoll's way to wait for more bytes. The whole head must arrive
// within HeaderTimeout of the call.
func (s *Server) readHead(st *connState) (int, bool) {
	c := st.conn
	r := c.Reader()
	c.SetReadDeadline(time.Now().Add(s.cfg.HeaderTimeout))
	n := r.Len()
	for {
		buf, err := r.Peek(n)
		if err != nil {
			if upstream.IsTimeout(err) {
				s.writeError(st, 408, "request header timeout", true)
			}
			return 0, false
		}
		hn, perr := h1.ParseRequest(buf, &st.req, s.cfg.Limits)
		if perr != nil {
			var he *h1.Error
			if errors.As(perr, &he) {
				s.writeError(st, he.Status, he.Reason, true)
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

// failBeforeBody answers a request refused before its body was read. The
// connection survives only if the body is already buffered and can be
// skipped; otherwise framing would be lost, so it closes.
func (s *Server) failBeforeBody(st *connState, hn, status int, reason string) bool {
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
	s.writeError(st, status, reason, !keep)
	if keep {
		return r.Skip(int(total)) == nil
	}
	return false
}

// readBody waits until the whole request body is buffered and validated,
// and returns the request's total length. A chunked body is checked by the
// ChunkedScanner and later forwarded byte for byte, so a malformed one
// never reaches the upstream.
func (s *Server) readBody(st *connState, hn int) (int, bool) {
	req := &st.req
	r := st.conn.Reader()
	switch {
	case req.Chunked:
		if req.Expect100 && r.Len() == hn {
			s.writeContinue(st)
		}
		st.chunks.Reset()
		scanned := 0
		for {
			if avail := r.Len(); avail > hn+scanned {
				buf, err := r.Peek(avail)
				if err != nil {
					return 0, false
				}
				k, done, serr := st.chunks.Scan(buf[hn+scanned:])
				scanned += k
				if serr != nil {
					var he *h1.Error
					if errors.As(serr, &he) {
						s.writeError(st, he.Status, he.Reason, true)
					}
					return 0, false
				}
				if done {
					return hn + scanned, true
				}
				if int64(scanned) > s.cfg.MaxBodyBytes {
					s.writeError(st, 413, "request body too large", true)
					return 0, false
				}
			}
			if _, err := r.Peek(r.Len() + 1); err != nil {
				s.bodyReadFailed(st, err)
				return 0, false
			}
		}
	case req.ContentLength > 0:
		if req.ContentLength > s.cfg.MaxBodyBytes {
			s.writeError(st, 413, "request body too large", true)
			return 0, false
		}
		total := hn + int(req.ContentLength)
		if req.Expect100 && r.Len() < total {
			s.writeContinue(st)
		}
		if _, err := r.Peek(total); err != nil {
			s.bodyReadFailed(st, err)
			return 0, false
		}
		return total, true
	}
	return hn, true
}

func (s *Server) bodyReadFailed(st *connState, err error) {
	if upstream.IsTimeout(err) {
		s.writeError(st, 408, "request body timeout", true)
	}
}

// forward sends the buffered request upstream and relays the response.
// It reports whether the client connection may serve another request. A
// reused keep-alive connection may have been closed by the backend just
// before we wrote; for idempotent requests that failed before any response
// byte, it retries once on a fresh connection, as browsers and Go's
// transport do.
func (s *Server) forward(st *connState, tab *routing.Table, ci int, pool *upstream.Pool, hn, total int, keep bool) bool {
	connectTimeout := tab.ConnectTimeout(ci)
	if connectTimeout <= 0 {
		connectTimeout = s.cfg.ConnectTimeout
	}
	timeout := time.Duration(st.match.TimeoutMs()) * time.Millisecond
	if timeout <= 0 {
		timeout = s.cfg.UpstreamTimeout
	}
	for attempt := 0; ; attempt++ {
		u, reused, err := pool.Get(connectTimeout)
		if err != nil {
			var de *upstream.DialError
			if errors.As(err, &de) && de.Timeout() {
				s.writeError(st, 504, "upstream connect timeout", !keep)
			} else {
				s.writeError(st, 502, "upstream connect failed", !keep)
			}
			s.cfg.Logger.Warn("upstream connect failed", "addr", pool.Addr(), "err", err)
			return keep
		}
		res := s.exchange(st, u, hn, total, timeout, keep)
		switch res {
		case exchangeOK:
			pool.Put(u)
			return keep
		case exchangeOKClose:
			pool.Discard(u)
			return keep && st.resp.Body != h1.BodyClose
		case exchangeStale:
			pool.Discard(u)
			if reused && attempt == 0 && idempotent(st.req.Method) {
				continue
			}
			s.writeError(st, 502, "upstream connection closed", !keep)
			return keep
		case exchangeTimeout:
			pool.Discard(u)
			s.writeError(st, 504, "upstream timeout", !keep)
			return keep
		case exchangeBadResponse:
			pool.Discard(u)
			s.writeError(st, 502, "bad upstream response", !keep)
			return keep
		default: // exchangeAborted: the client already has part of a response
			pool.Discard(u)
			return false
		}
	}
}

func idempotent(m []byte) bool {
	switch string(m) {
	case "GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE":
		return true
	}
	return false
}

type exchangeResult uint8

const (
	exchangeOK          exchangeResult = iota // done; upstream conn reusable
	exchangeOKClose                           // done; upstream conn must close
	exchangeStale                             // failed before any response byte
	exchangeTimeout                           // no response head in time
	exchangeBadResponse                       // response head unparsable
	exchangeAborted                           // failed mid-response; close the client
)

// exchange writes the request on u, reads the response head and relays
// the response to the client.
func (s *Server) exchange(st *connState, u netpoll.Connection, hn, total int, timeout time.Duration, keep bool) exchangeResult {
	buf, err := st.conn.Reader().Peek(total)
	if err != nil {
		return exchangeAborted
	}
	u.SetWriteTimeout(s.cfg.WriteTimeout)
	u.SetReadTimeout(timeout)
	uw := u.Writer()
	s.writeRequestHead(st, uw)
	if total > hn {
		uw.WriteBinary(buf[hn:total])
	}
	if err := uw.Flush(); err != nil {
		return exchangeStale
	}

	ur := u.Reader()
	defer ur.Release()
	n := max(ur.Len(), 1)
	for {
		rb, err := ur.Peek(n)
		if err != nil {
			switch {
			case upstream.IsTimeout(err):
				return exchangeTimeout
			case ur.Len() == 0:
				return exchangeStale
			}
			return exchangeBadResponse
		}
		rn, perr := h1.ParseResponse(rb, &st.resp, st.req.Method)
		if perr != nil {
			return exchangeBadResponse
		}
		if rn == 0 {
			n = max(ur.Len(), n+1)
			continue
		}
		resp := &st.resp
		if resp.Status == 101 || (st.req.Minor == 0 && resp.Body == h1.BodyChunked) {
			// We never forward Upgrade, and chunked cannot reach an
			// HTTP/1.0 client: either means the upstream misbehaved.
			return exchangeBadResponse
		}
		if resp.Status < 200 {
			// 100 answers an Expect we handled ourselves; other 1xx are
			// forwarded to HTTP/1.1 clients (RFC 9110 §15.2).
			if resp.Status != 100 && st.req.Minor == 1 {
				s.writeResponseHead(st, st.conn.Writer(), false, true)
			}
			ur.Skip(rn)
			n = max(ur.Len(), 1)
			continue
		}
		ur.Skip(rn)
		break
	}

	closeClient := !keep || st.resp.Body == h1.BodyClose
	cw := st.conn.Writer()
	s.writeResponseHead(st, cw, closeClient, false)
	if !s.relayBody(st, u, cw) {
		return exchangeAborted
	}
	if err := cw.Flush(); err != nil {
		return exchangeAborted
	}
	if st.resp.KeepAlive && ur.Len() == 0 && u.IsActive() {
		return exchangeOK
	}
	return exchangeOKClose
}

// flushEvery bounds how much of a response we hold before flushing to the
// client and releasing the upstream buffer.
const flushEvery = 1 << 20

// relayBody copies the response body from u to the client per its framing.
// Slices from u's reader go to the client writer without a copy above
// netpoll's 4 KiB threshold, so the upstream buffer is released only after
// a client Flush.
func (s *Server) relayBody(st *connState, u netpoll.Connection, cw netpoll.Writer) bool {
	ur := u.Reader()
	pending := 0
	next := func(n int) bool {
		p, err := ur.Next(n)
		if err != nil {
			return false
		}
		if _, err := cw.WriteBinary(p); err != nil {
			return false
		}
		if pending += n; pending >= flushEvery {
			if cw.Flush() != nil {
				return false
			}
			ur.Release()
			pending = 0
		}
		return true
	}
	wait := func() (int, error) {
		if l := ur.Len(); l > 0 {
			return l, nil
		}
		if _, err := ur.Peek(1); err != nil {
			return 0, err
		}
		return ur.Len(), nil
	}
	resp := &st.resp
	switch resp.Body {
	case h1.BodyLength:
		for remaining := resp.ContentLength; remaining > 0; {
			avail, err := wait()
			if err != nil {
				return false
			}
			k := min(int64(avail), remaining)
			if !next(int(k)) {
				return false
			}
			remaining -= k
		}
	case h1.BodyChunked:
		st.chunks.Reset()
		for {
			avail, err := wait()
			if err != nil {
				return false
			}
			p, err := ur.Peek(avail)
			if err != nil {
				return false
			}
			k, done, serr := st.chunks.Scan(p)
			if serr != nil || !next(k) {
				return false
			}
			if done {
				return true
			}
		}
	case h1.BodyClose:
		for {
			avail, err := wait()
			if err != nil {
				// The upstream closing is the end of this body; a timeout
				// is not.
				return !upstream.IsTimeout(err)
			}
			if !next(avail) {
				return false
			}
		}
	}
	return true
}
