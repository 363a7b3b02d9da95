package proxy

import (
	"errors"
	"io"
	"net"
	"sync/atomic"
	"time"

	"github.com/snapgate/snapgate/edge/h1"
	"github.com/snapgate/snapgate/edge/upstream"
)

// Protocol upgrades (RFC 9110 §7.8), e.g. WebSocket: which requests go
// upstream with their Upgrade offer, which 101 answers the client gets,
// and the byte tunnel that follows one.

// upgradeRequested decides, before the upstream head is built, whether the
// request goes upstream with its Upgrade offer and Connection: Upgrade.
// It must be an HTTP/1.1 request naming upgrade in Connection, and:
//
//   - its body must not be able to stream: a 101 can only be tunnelled
//     after a request that was read whole, and whether a chunked body, or a
//     Content-Length body above BufferBodyBytes, streams depends on how
//     much of it arrived with the head. A fixed rule on the framing alone
//     keeps a backend from being asked to switch on a path that cannot
//     tunnel (readBody buffers exactly the Content-Length bodies up to
//     BufferBodyBytes);
//   - no Upgrade field may name h2c anywhere in its list: after a 101 the
//     backend would serve HTTP/2 requests for any path on the tunnel, past
//     the routing and policy this edge applied to the first request ("h2c
//     smuggling"); RFC 9113 §3.1 deprecates that upgrade anyway. The whole
//     offer is dropped rather than filtered: no real client offers h2c next
//     to another protocol, and one that does is probing;
//   - the offer must name at least one protocol.
//
// serveOne also requires that the client connection can leave netpoll
// (detach.go), where the tunnel runs.
//
// A request that fails these goes upstream as a plain request, and a 101
// to it is a 502.
func (s *Server) upgradeRequested(st *connState) bool {
	req := &st.req
	if !req.Upgrade || req.Minor != 1 || !h1.HasToken(req.Connection, "upgrade") {
		return false
	}
	if req.Chunked || req.ContentLength > s.cfg.BufferBodyBytes {
		return false
	}
	offered := false
	for _, f := range req.Fields() {
		if !isUpgradeField(f.Name) {
			continue
		}
		for list := f.Value; list != nil; {
			var p []byte
			p, list = h1.NextToken(list)
			if h1.EqualFold(p, "h2c") {
				return false
			}
			offered = offered || len(p) > 0
		}
	}
	return offered
}

// appendUpgradeOffer appends the client's Upgrade fields as one list, and
// records where that list sits in w so that switchAccepted can hold a 101
// against it without a copy (offsets, not a slice: w may still grow and
// move). w must start at st.upHead[0].
func appendUpgradeOffer(st *connState, w []byte) []byte {
	w = append(w, "Upgrade: "...)
	st.offerStart = len(w)
	sep := false
	for _, f := range st.req.Fields() {
		if !isUpgradeField(f.Name) {
			continue
		}
		if sep {
			w = append(w, ", "...)
		}
		w = append(w, f.Value...)
		sep = true
	}
	st.offerEnd = len(w)
	return append(w, "\r\nConnection: Upgrade\r\n"...)
}

// switchAccepted reports whether a 101 may reach the client (RFC 9110
// §7.8): the request went upstream with an offer, and the 101 carries
// Upgrade naming only protocols of that offer (compared ignoring case, as
// §7.8 asks). The offer is read back from the upstream head
// (appendRequestHead records where), so the check costs no copy. h2c is
// never in an offer (upgradeRequested), so a switch to it is refused too.
func switchAccepted(st *connState) bool {
	if !st.upgrade {
		return false
	}
	offer := st.upHead[st.offerStart:st.offerEnd]
	named := false
	for _, f := range st.resp.Fields() {
		if !isUpgradeField(f.Name) {
			continue
		}
		for list := f.Value; list != nil; {
			var p []byte
			p, list = h1.NextToken(list)
			if len(p) == 0 {
				continue // empty list elements are allowed and mean nothing (RFC 9110 §5.6.1)
			}
			if !inList(offer, p) {
				return false
			}
			named = true
		}
	}
	return named
}

// inList reports whether the comma-separated list holds elem, ignoring case.
func inList(list, elem []byte) bool {
	for list != nil {
		var e []byte
		e, list = h1.NextToken(list)
		if len(e) == len(elem) && equalFoldBytes(e, elem) {
			return true
		}
	}
	return false
}

func isUpgradeField(name []byte) bool { return len(name) == 7 && h1.EqualFold(name, "upgrade") }

// tunnel relays bytes both ways after a 101, between the client's
// connection detached from netpoll (detach.go) and the upstream one, on
// the runtime poller too: reads happen only as fast as the other side
// takes the bytes, so TCP flow control holds back a side that sends
// faster, and a tunnel holds one buffer per direction. left is what the client sent
// behind its request. A FIN from either side is passed on to the other;
// the tunnel ends when both sides have finished, when either fails, or
// when nothing moved either way for IdleTimeout. The caller closes u.
func (s *Server) tunnel(nc net.Conn, left []byte, u *upstream.Conn) {
	t := &tunnelState{nc: nc, u: u, idle: s.cfg.IdleTimeout, wt: s.cfg.WriteTimeout}
	t.moved()
	s.mu.Lock()
	s.detachedConns[t] = struct{}{}
	if s.cutOff {
		t.fail()
	}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.detachedConns, t)
		s.mu.Unlock()
	}()
	done := make(chan struct{})
	go func() {
		defer close(done)
		t.toClient()
	}()
	t.toUpstream(left)
	<-done
}

type tunnelState struct {
	nc       net.Conn
	u        *upstream.Conn
	idle, wt time.Duration
	last     atomic.Int64 // unix nanos of the last byte moved either way
}

// Close cuts the tunnel off (Shutdown).
func (t *tunnelState) Close() error { t.fail(); return nil }

func (t *tunnelState) moved() { t.last.Store(time.Now().UnixNano()) }

// quiet reports whether nothing moved either way for the idle timeout: a
// read timing out in one direction is no reason to end a tunnel whose
// other direction is busy.
func (t *tunnelState) quiet() bool {
	return time.Since(time.Unix(0, t.last.Load())) >= t.idle
}

// idleLeft is how long a read may still wait: the idle timeout counts
// from the last byte moved either way.
func (t *tunnelState) idleLeft() time.Duration {
	return max(t.idle-time.Since(time.Unix(0, t.last.Load())), time.Millisecond)
}

// fail ends both directions: each one's blocked read or write returns.
func (t *tunnelState) fail() {
	t.u.Close()
	t.nc.Close()
}

// toUpstream relays the client's bytes, left first, until its FIN, which
// goes on as the upstream connection's.
func (t *tunnelState) toUpstream(left []byte) {
	buf := left[:cap(left)]
	if len(buf) == 0 {
		buf = make([]byte, detachedBufSize)
	}
	t.relay(buf, len(left),
		func(p []byte) error { return t.u.Write(p, t.wt) },
		func(p []byte) (int, error) {
			t.nc.SetReadDeadline(time.Now().Add(t.idleLeft()))
			return t.nc.Read(p)
		},
		t.u.CloseWrite)
}

// toClient relays the upstream's bytes, those read behind its 101 first,
// until its FIN, which goes on as the client connection's.
func (t *tunnelState) toClient() {
	u := t.u
	n := u.Buffered()
	if n > 0 {
		copy(u.Buf, u.Buf[u.Start:u.End])
		u.Consume(n)
	}
	t.relay(u.Buf, n,
		func(p []byte) error {
			t.nc.SetWriteDeadline(time.Now().Add(t.wt))
			_, err := t.nc.Write(p)
			return err
		},
		func(p []byte) (int, error) { return u.Read(p, t.idleLeft()) },
		func() error {
			cw, ok := t.nc.(interface{ CloseWrite() error })
			if !ok {
				return errors.New("proxy: client connection cannot half-close")
			}
			return cw.CloseWrite()
		})
}

// relay moves one direction: it writes the first n bytes of buf, then
// reads into buf and writes again, until the reading side's FIN, which
// goes on through closeWrite. A read timing out ends it only once the
// whole tunnel is quiet; any other failure ends both directions.
func (t *tunnelState) relay(buf []byte, n int, write func([]byte) error, read func([]byte) (int, error), closeWrite func() error) {
	for {
		if n > 0 {
			if write(buf[:n]) != nil {
				t.fail()
				return
			}
			t.moved()
		}
		var err error
		n, err = read(buf)
		switch {
		case n > 0:
		case errors.Is(err, io.EOF):
			if closeWrite() != nil {
				t.fail()
			}
			return
		case upstream.IsTimeout(err) && !t.quiet():
		case err != nil:
			t.fail()
			return
		}
	}
}
