package proxy

import (
	"strconv"

	"github.com/cloudwego/netpoll"

	"github.com/snapgate/snapgate/edge/h1"
	"github.com/snapgate/snapgate/edge/telemetry"
)

// hopByHop reports fields that describe one connection, not the message
// (RFC 9110 §7.6.1: Connection, Proxy-Connection, Keep-Alive, TE, Upgrade;
// Transfer-Encoding is hop-by-hop too, but we forward the chunked framing
// verbatim, so its field goes with it).
func hopByHop(name []byte) bool {
	switch len(name) {
	case 2:
		return h1.EqualFold(name, "te")
	case 7:
		return h1.EqualFold(name, "upgrade")
	case 10:
		return h1.EqualFold(name, "connection") || h1.EqualFold(name, "keep-alive")
	case 16:
		return h1.EqualFold(name, "proxy-connection")
	}
	return false
}

// namedByConnection reports whether the Connection field lists name, which
// makes that field hop-by-hop as well. Framing and routing fields are never
// stripped this way: "Connection: Content-Length" is an attack, not a hint.
func namedByConnection(conn, name []byte) bool {
	if conn == nil || protectedField(name) {
		return false
	}
	for list := conn; list != nil; {
		var tok []byte
		tok, list = h1.NextToken(list)
		if len(tok) == len(name) && equalFoldBytes(tok, name) {
			return true
		}
	}
	return false
}

func protectedField(name []byte) bool {
	return (len(name) == 4 && h1.EqualFold(name, "host")) || isContentLength(name) || isTransferEncoding(name)
}

func isContentLength(name []byte) bool {
	return len(name) == 14 && h1.EqualFold(name, "content-length")
}

func isTransferEncoding(name []byte) bool {
	return len(name) == 17 && h1.EqualFold(name, "transfer-encoding")
}

func equalFoldBytes(a, b []byte) bool {
	for i := range a {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

// Fields the proxy sets itself; a client's own copies are dropped so they
// cannot be spoofed, in any spelling a backend takes for them (nameIs).
// Expect is dropped because the proxy answers 100-continue itself.
// X-Request-Id is re-added with the id we kept or generated, X-Consumer-Id
// by a policy that authenticated the request. Forwarded (RFC 7239) is the
// standard spelling of what X-Forwarded-* carry, which frameworks prefer
// when present: only the edge may say where a request came from. The
// client's X-Forwarded-For is kept (the edge appends to it) in its own
// spelling only: another would reach a CGI backend as the whole chain.
func setByProxy(name []byte) bool {
	switch len(name) {
	case 6:
		return h1.NameIs(name, "expect")
	case 9:
		return h1.NameIs(name, "forwarded")
	case 12:
		return h1.NameIs(name, "x-request-id")
	case 13:
		return isConsumerIDField(name)
	case 15:
		return h1.NameIs(name, "x-forwarded-for") && !isXFF(name)
	case 16:
		return h1.NameIs(name, "x-forwarded-host")
	case 17:
		return h1.NameIs(name, "x-forwarded-proto")
	}
	return false
}

func isXFF(name []byte) bool { return len(name) == 15 && h1.EqualFold(name, "x-forwarded-for") }

// overridesRequestLine reports fields that some backends take over the
// request line: X-Original-URL and X-Rewrite-URL (IIS URL rewrite, and
// Symfony or Laminas trusting it) replace the path; X-HTTP-Method-Override,
// X-HTTP-Method and X-Method-Override (Rack, Express's method-override,
// Spring's filter) the method. The edge chose the route and its policy
// from the request line, so a client's copy would reach a handler that
// route does not cover. Dropped in every spelling, like setByProxy's.
func overridesRequestLine(name []byte) bool {
	switch len(name) {
	case 13:
		return h1.NameIs(name, "x-rewrite-url") || h1.NameIs(name, "x-http-method")
	case 14:
		return h1.NameIs(name, "x-original-url")
	case 17:
		return h1.NameIs(name, "x-method-override")
	case 22:
		return h1.NameIs(name, "x-http-method-override")
	}
	return false
}

// forwardsField reports whether a client field goes upstream as received.
func forwardsField(st *connState, name []byte) bool {
	return !hopByHop(name) && !setByProxy(name) && !overridesRequestLine(name) &&
		!namedByConnection(st.req.Connection, name) && !st.pol.stripsField(name)
}

// appendRequestHead appends the upstream request head to w: the request line in
// origin-form with the normalised (and possibly rewritten) path, so the
// backend sees the path routing saw; the end-to-end fields;
// X-Forwarded-For/-Proto/-Host and X-Request-Id. HTTP/1.0 clients are
// forwarded as HTTP/1.0 so the upstream never answers them with chunked
// framing. An upgrade request (upgradeRequested) keeps its Upgrade offer.
func appendRequestHead(st *connState, w []byte) []byte {
	req := &st.req
	w = append(w, req.Method...)
	w = append(w, ' ')
	w = append(w, st.upPath...)
	if req.Query != nil {
		w = append(w, '?')
		w = append(w, req.Query...)
	}
	if req.Minor == 0 {
		w = append(w, " HTTP/1.0\r\n"...)
	} else {
		w = append(w, " HTTP/1.1\r\n"...)
	}

	// The client IP goes behind the last X-Forwarded-For that is itself
	// forwarded: one the client named in Connection is dropped, and the
	// edge's own entry must not be dropped with it.
	lastXFF := -1
	fields := req.Fields()
	for i := range fields {
		if isXFF(fields[i].Name) && forwardsField(st, fields[i].Name) {
			lastXFF = i
		}
	}
	var hostValue []byte
	for i := range fields {
		f := &fields[i]
		if !forwardsField(st, f.Name) {
			continue
		}
		if len(f.Name) == 4 && h1.EqualFold(f.Name, "host") {
			hostValue = f.Value
			if req.Authority != nil {
				// RFC 9112 §3.2.2: the target's authority replaces Host.
				continue
			}
		}
		// The framing fields go upstream in one spelling each, as the
		// parser read them: a backend that parses "CHUNKED" or
		// "Content-Length: 010" its own way would frame the body apart
		// from the edge.
		switch {
		case isTransferEncoding(f.Name): // only chunked passes the parser
			w = append(w, "Transfer-Encoding: chunked\r\n"...)
			continue
		case isContentLength(f.Name):
			w = append(w, "Content-Length: "...)
			w = strconv.AppendInt(w, req.ContentLength, 10)
			w = append(w, "\r\n"...)
			continue
		}
		w = append(w, f.Name...)
		w = append(w, ": "...)
		w = append(w, f.Value...)
		if i == lastXFF {
			w = append(w, ", "...)
			w = append(w, st.clientIP...)
		}
		w = append(w, "\r\n"...)
	}
	if req.Authority != nil {
		hostValue = req.Authority
		w = append(w, "Host: "...)
		w = append(w, hostValue...)
		w = append(w, "\r\n"...)
	}
	if lastXFF < 0 {
		w = append(w, "X-Forwarded-For: "...)
		w = append(w, st.clientIP...)
		w = append(w, "\r\n"...)
	}
	w = append(w, "X-Forwarded-Proto: http\r\n"...)
	if hostValue != nil {
		w = append(w, "X-Forwarded-Host: "...)
		w = append(w, hostValue...)
		w = append(w, "\r\n"...)
	}
	w = append(w, "X-Request-Id: "...)
	w = append(w, st.requestID()...)
	w = append(w, "\r\n"...)
	w = st.pol.appendConsumer(w)
	switch {
	case st.upgrade:
		w = appendUpgradeOffer(st, w)
	case req.Minor == 0:
		// Keep the pooled upstream connection alive for 1.0 clients too.
		w = append(w, "Connection: keep-alive\r\n"...)
	}
	w = append(w, "\r\n"...)
	return w
}

// writeResponseHead relays the upstream response head to the client
// without hop-by-hop fields, adding our own Connection field and the
// request id (replacing the upstream's, so the client sees one id). A 101
// keeps its Upgrade fields, which switchAccepted checked. An interim (1xx)
// head is flushed at once; the error is that flush's.
func (s *Server) writeResponseHead(st *connState, w netpoll.Writer, closeClient, interim bool) error {
	resp := &st.resp
	w.WriteString("HTTP/1.1 ")
	w.WriteBinary(strconv.AppendInt(st.num[:0], int64(resp.Status), 10))
	w.WriteByte(' ')
	w.WriteBinary(resp.Reason)
	w.WriteString("\r\n")
	// RFC 9110 §8.6 and RFC 9112 §6.1: no Content-Length or
	// Transfer-Encoding on a 1xx or 204, and no Transfer-Encoding to an
	// HTTP/1.0 client (only bodiless responses carrying one get here). A
	// backend that sends them anyway must not make a downstream parser wait
	// for a body that never comes. A bodiless answer (HEAD, 304) with both
	// loses its Content-Length: Transfer-Encoding overrides it and a
	// forwarder must remove it (RFC 9112 §6.3 rule 3), and a downstream
	// parser that does not know the message is bodiless must not see both
	// (with a body, both is a 502 in ParseResponse).
	noLength := resp.Status < 200 || resp.Status == 204 || resp.TransferCoded
	noCoding := resp.Status < 200 || resp.Status == 204 || st.req.Minor == 0
	switched := resp.Status == 101
	for _, f := range resp.Fields() {
		// A 101's Upgrade is relayed as received: the tunnel speaks what
		// the backend named.
		relay := switched && isUpgradeField(f.Name)
		if !relay && (hopByHop(f.Name) || isRequestID(f.Name) || isStalenessField(f.Name) || namedByConnection(resp.Connection, f.Name) ||
			(noLength && isContentLength(f.Name)) || (noCoding && isTransferEncoding(f.Name))) {
			continue
		}
		w.WriteBinary(f.Name)
		w.WriteString(": ")
		w.WriteBinary(f.Value)
		w.WriteString("\r\n")
	}
	if resp.Status >= 200 || switched {
		w.WriteString("X-Request-Id: ")
		w.WriteBinary(st.requestID())
		w.WriteString("\r\n")
		s.writeStaleness(st, w)
	}
	switch {
	case switched:
		w.WriteString("Connection: Upgrade\r\n")
	case interim:
	case closeClient:
		w.WriteString("Connection: close\r\n")
	case st.req.Minor == 0:
		w.WriteString("Connection: keep-alive\r\n")
	}
	w.WriteString("\r\n")
	if interim {
		return s.flush(st, w)
	}
	return nil
}

// writeError answers the client with a short plain-text body (a JSON one
// for a policy refusal, policy.go) and counts it. closeConn adds
// Connection: close; the caller then closes the connection.
func (s *Server) writeError(st *connState, cause telemetry.Cause, status int, reason string, closeConn bool) {
	s.metrics.Error(cause)
	st.rc.Observe(status)
	refused := st.pol.refusal.code != ""
	contentType, n := "text/plain; charset=utf-8", len(reason)+1
	if refused {
		contentType, n = st.pol.refusalBody(reason)
	}
	w := st.cw
	w.WriteString("HTTP/1.1 ")
	w.WriteBinary(strconv.AppendInt(st.num[:0], int64(status), 10))
	w.WriteByte(' ')
	w.WriteString(statusText(status))
	w.WriteString("\r\nContent-Type: ")
	w.WriteString(contentType)
	w.WriteString("\r\nContent-Length: ")
	w.WriteBinary(strconv.AppendInt(st.num[:0], int64(n), 10))
	if st.ridLen == 0 {
		s.newRequestID(st) // refused before the head parsed
	}
	w.WriteString("\r\nX-Request-Id: ")
	w.WriteBinary(st.requestID())
	if st.retryAfter > 0 {
		w.WriteString("\r\nRetry-After: ")
		w.WriteBinary(strconv.AppendInt(st.num[:0], st.retryAfter, 10))
	}
	switch {
	case closeConn:
		w.WriteString("\r\nConnection: close")
	case st.req.Minor == 0:
		w.WriteString("\r\nConnection: keep-alive")
	}
	w.WriteString("\r\n")
	s.writeStaleness(st, w)
	s.writeRefusalFields(st, w)
	w.WriteString("\r\n")
	switch {
	case st.isHead:
	case refused:
		st.pol.writeRefusalBody(w, reason)
	default:
		w.WriteString(reason)
		w.WriteByte('\n')
	}
	s.flush(st, w)
}

func (s *Server) writeContinue(st *connState) {
	w := st.cw
	w.WriteString("HTTP/1.1 100 Continue\r\n\r\n")
	s.flush(st, w)
}

func statusText(code int) string {
	switch code {
	case 400:
		return "Bad Request"
	case 401:
		return "Unauthorized"
	case 403:
		return "Forbidden"
	case 404:
		return "Not Found"
	case 408:
		return "Request Timeout"
	case 413:
		return "Content Too Large"
	case 414:
		return "URI Too Long"
	case 417:
		return "Expectation Failed"
	case 429:
		return "Too Many Requests"
	case 431:
		return "Request Header Fields Too Large"
	case 501:
		return "Not Implemented"
	case 502:
		return "Bad Gateway"
	case 503:
		return "Service Unavailable"
	case 504:
		return "Gateway Timeout"
	case 505:
		return "HTTP Version Not Supported"
	}
	return "Error"
}
