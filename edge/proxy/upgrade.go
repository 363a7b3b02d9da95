package proxy

import (
	"errors"

	"github.com/cloudwego/netpoll"

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

// tunnel relays bytes both ways after a 101 until either side closes or
// stays silent for IdleTimeout. The upstream-to-client half runs on its own
// goroutine (an upgrade is rare; the allocation is fine); each half closes
// the other side when it ends, which unblocks the other half's read.
// request is how many client bytes the request still holds in the reader
// (its head and buffered body, already sent upstream): the tunnel starts
// after them, so the body does not reach the backend twice.
//
// A client's FIN is passed on: the upstream's sending side is shut down
// and what it still sends reaches the client (halfclose.go) until it
// closes or goes idle. netpoll may take the FIN for a close before the 101
// went out; the client's bytes still go upstream first.
func (s *Server) tunnel(st *connState, u *upstream.Conn, request int) {
	c := st.conn
	cw := c.Writer()
	// Bytes the upstream sent right behind its 101 go first. A failed
	// flush ends only the upstream-to-client half (below, on its first
	// write): the client's own bytes are still passed on.
	if n := u.Buffered(); n > 0 {
		cw.WriteBinary(u.Buf[u.Start:u.End])
		u.Consume(n)
	}
	s.flush(st, cw)
	r := c.Reader()
	if err := r.Skip(request); err != nil {
		return
	}
	r.Release()
	// A tunnel carries any amount either way: off netpoll, the upstream is
	// read only as fast as the client takes it.
	if u.Stream() != nil {
		return
	}
	idle := s.cfg.IdleTimeout
	c.SetReadTimeout(idle)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			n, err := u.Read(u.Buf, idle)
			if n > 0 {
				cw.WriteBinary(u.Buf[:n])
				if s.flush(st, cw) != nil {
					break
				}
			}
			if err != nil {
				break
			}
		}
		c.Close()
	}()
	var err error
	for {
		n := r.Len()
		if n == 0 {
			if _, err = r.Peek(1); err != nil {
				break
			}
			n = r.Len()
		}
		var p []byte
		if p, err = r.Next(n); err != nil {
			break
		}
		err = u.Write(p, s.cfg.WriteTimeout)
		r.Release()
		if err != nil {
			break
		}
	}
	if errors.Is(err, netpoll.ErrEOF) && u.CloseWrite() == nil {
		<-done // the upstream's answer to the FIN, until it closes or idles
	}
	u.Close()
	<-done
}
