package h1

// BodyKind says how a response body is delimited (RFC 9112 §6.3).
type BodyKind uint8

const (
	BodyNone    BodyKind = iota // HEAD, 1xx, 204, 304: no body whatever the fields say
	BodyLength                  // Content-Length bytes
	BodyChunked                 // chunked transfer coding, validate with ChunkedScanner
	BodyClose                   // until the upstream closes the connection
)

// Response is a parsed response head; slices alias the parsed buffer.
type Response struct {
	Minor  int
	Status int
	Reason []byte

	Headers    [MaxHeaders]Header
	NumHeaders int

	ContentLength int64 // -1 when absent
	TransferCoded bool  // a Transfer-Encoding field was present
	Body          BodyKind
	KeepAlive     bool   // the upstream allows reusing the connection
	Connection    []byte // the Connection field value, nil when absent
}

// Fields returns the parsed header fields.
func (r *Response) Fields() []Header { return r.Headers[:r.NumHeaders] }

// ParseResponse parses a response head from the start of buf, given the
// method of the request it answers (HEAD responses have no body). Results
// follow ParseRequest: n > 0 on success, 0/nil for "need more", or *Error
// (status 502: the upstream spoke garbage).
func ParseResponse(buf []byte, resp *Response, reqMethod []byte) (n int, err error) {
	// Field-wise reset: assigning a fresh Response would copy the 6 KiB header array.
	resp.Minor, resp.Status, resp.Reason, resp.NumHeaders = 0, 0, nil, 0
	resp.ContentLength, resp.TransferCoded, resp.Body, resp.KeepAlive, resp.Connection = -1, false, BodyNone, false, nil
	off, more, e := skipEmptyLines(buf)
	if e != nil {
		return 0, errStatusLine
	}
	if more {
		return 0, nil
	}
	start := off
	line, off, ok, e := nextLine(buf, off)
	if e != nil {
		return 0, errStatusLine
	}
	if !ok {
		if len(buf) > MaxResponseHead {
			return 0, errRespTooLarge
		}
		if e := checkPartialStatusLine(buf[start:]); e != nil {
			return 0, e
		}
		return 0, nil
	}
	if e := parseStatusLine(line, resp); e != nil {
		return 0, e
	}

	var clSeen, teSeen, chunked, connClose, connKeepAlive bool
	for {
		lineStart := off
		line, off, ok, e = nextLine(buf, off)
		if e != nil {
			return 0, errRespHeader
		}
		if !ok {
			if len(buf) > MaxResponseHead {
				return 0, errRespTooLarge
			}
			if checkPartialField(buf[lineStart:]) != nil {
				return 0, errRespHeader
			}
			return 0, nil
		}
		if off > MaxResponseHead {
			return 0, errRespTooLarge
		}
		if len(line) == 0 {
			break
		}
		name, value, e := splitField(line)
		if e != nil {
			return 0, errRespHeader
		}
		if resp.NumHeaders >= MaxHeaders {
			return 0, errRespTooLarge
		}
		resp.Headers[resp.NumHeaders] = Header{Name: name, Value: value}
		resp.NumHeaders++
		switch len(name) {
		case 10:
			if EqualFold(name, "connection") {
				if resp.Connection != nil {
					return 0, errRespFraming
				}
				resp.Connection = value
				connClose = HasToken(value, "close")
				connKeepAlive = HasToken(value, "keep-alive")
			}
		case 14:
			if EqualFold(name, "content-length") {
				if clSeen {
					return 0, errRespFraming
				}
				clSeen = true
				v, ok := parseDecimal(value)
				if !ok {
					return 0, errRespFraming
				}
				resp.ContentLength = v
			}
		case 17:
			if EqualFold(name, "transfer-encoding") {
				// Unlike requests, a response may end with a coding other
				// than chunked; it is then delimited by close (§6.3 rule 4).
				for list := value; ; {
					var elem []byte
					elem, list = NextToken(list)
					if !isToken(elem) {
						return 0, errRespFraming
					}
					teSeen = true
					if EqualFold(elem, "chunked") {
						if chunked {
							return 0, errRespFraming
						}
						chunked = true
					} else {
						chunked = false
					}
					if list == nil {
						break
					}
				}
			}
		}
	}

	resp.TransferCoded = teSeen
	if resp.Minor == 1 {
		resp.KeepAlive = !connClose
	} else {
		resp.KeepAlive = connKeepAlive && !connClose
	}
	switch {
	case resp.Status < 200 || resp.Status == 204 || resp.Status == 304 || string(reqMethod) == "HEAD":
		resp.Body = BodyNone
	case teSeen && (clSeen || resp.Minor == 0):
		// Both framings, or chunked from an HTTP/1.0 server (§6.1): whoever
		// we pick, someone else may pick the other. Refuse.
		return 0, errRespFraming
	case teSeen && chunked:
		resp.Body = BodyChunked
	case teSeen:
		resp.Body = BodyClose
	case clSeen:
		resp.Body = BodyLength
	default:
		resp.Body = BodyClose
	}
	if resp.Body == BodyClose {
		resp.KeepAlive = false
	}
	return off, nil
}

// parseStatusLine parses "HTTP/1.x SP 3DIGIT [SP reason-phrase]". The
// missing SP before an empty reason is tolerated, as every client does.
func parseStatusLine(line []byte, resp *Response) *Error {
	if len(line) < 12 || line[8] != ' ' {
		return errStatusLine
	}
	minor, e := parseVersion(line[:8])
	if e != nil {
		if e == errVersionUnsupp {
			return errRespVersion
		}
		return errStatusLine
	}
	st := 0
	for _, c := range line[9:12] {
		if c < '0' || c > '9' {
			return errStatusLine
		}
		st = st*10 + int(c-'0')
	}
	if st < 100 {
		return errStatusLine
	}
	rest := line[12:]
	if len(rest) > 0 {
		if rest[0] != ' ' {
			return errStatusLine
		}
		rest = rest[1:]
		for _, c := range rest {
			if !vcharTab[c] {
				return errStatusLine
			}
		}
	}
	resp.Minor, resp.Status, resp.Reason = minor, st, rest
	return nil
}

func checkPartialStatusLine(p []byte) *Error {
	if len(p) > 0 && p[len(p)-1] == '\r' {
		p = p[:len(p)-1]
	}
	v := p
	if len(v) > 8 {
		v = v[:8]
	}
	if e := checkPartialVersion(v); e != nil {
		if e == errVersionUnsupp {
			return errRespVersion
		}
		return errStatusLine
	}
	if len(p) > 8 && p[8] != ' ' {
		return errStatusLine
	}
	for j := 9; j < len(p) && j < 12; j++ {
		if p[j] < '0' || p[j] > '9' {
			return errStatusLine
		}
	}
	for j := 12; j < len(p); j++ {
		if (j == 12 && p[j] != ' ') || !vcharTab[p[j]] {
			return errStatusLine
		}
	}
	return nil
}
