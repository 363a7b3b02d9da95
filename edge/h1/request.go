package h1

// Request is a parsed request head. Every slice aliases the buffer given to
// ParseRequest except Host, which aliases the Request itself; a Request must
// therefore not be copied while its Host is in use. Reuse one per connection.
type Request struct {
	Method []byte
	Target []byte // as received
	// Path is the normalised path (path.go): what routing matches and what
	// is forwarded. It aliases the input when the path was already normal,
	// else the Request's own buffer. "/" for an absolute-form target
	// without a path, "*" for OPTIONS *.
	Path    []byte
	RawPath []byte // the path as received, before '?'
	Query   []byte // after '?', nil when there is no '?'
	// Authority is host[:port] of an absolute-form target, nil otherwise.
	// RFC 9112 §3.2.2: it replaces the Host field when forwarding.
	Authority []byte
	// Host is the routing host: lowercase, without port, from Authority when
	// present, else from the Host field. Empty only for HTTP/1.0 without Host.
	Host  []byte
	Minor int // HTTP/1.Minor, 0 or 1

	Headers    [MaxHeaders]Header
	NumHeaders int

	ContentLength int64 // -1 when absent
	Chunked       bool  // Transfer-Encoding present with chunked as final coding
	KeepAlive     bool
	Expect100     bool // Expect: 100-continue from an HTTP/1.1 client
	Upgrade       bool // an Upgrade field was present (the proxy strips it)
	// Connection is the Connection field value (nil when absent); the proxy
	// removes the fields it names (RFC 9110 §7.6.1).
	Connection []byte

	hostBuf [255]byte // RFC 1035 bounds a DNS name at 255 octets
	// pathBuf holds a normalised path that differs from the input. It grows
	// to the longest such path seen on the connection and is then reused.
	pathBuf []byte
}

// Fields returns the parsed header fields.
func (r *Request) Fields() []Header { return r.Headers[:r.NumHeaders] }

func (r *Request) reset() {
	r.Method, r.Target, r.Path, r.RawPath, r.Query, r.Authority, r.Host = nil, nil, nil, nil, nil, nil, nil
	r.Minor, r.NumHeaders = 0, 0
	r.ContentLength = -1
	r.Chunked, r.KeepAlive, r.Expect100, r.Upgrade = false, false, false, false
	r.Connection = nil
}

var slashPath = []byte("/")

// ParseRequest parses a request head from the start of buf.
//
// It returns n > 0, the head length including the final CRLFCRLF, on
// success; n == 0 and a nil error when buf holds only a valid prefix of a
// head (read more and call again with the longer buffer); or an *Error.
// Leading empty lines (RFC 9112 §2.2) are counted in n.
func ParseRequest(buf []byte, req *Request, lim Limits) (n int, err error) {
	lim = lim.WithDefaults()
	req.reset()
	off, more, e := skipEmptyLines(buf)
	if e != nil {
		return 0, e
	}
	if more {
		return 0, nil
	}
	start := off
	line, off, ok, e := nextLine(buf, off)
	if e != nil {
		return 0, e
	}
	if !ok {
		if len(buf)-start > lim.MaxRequestLine {
			return 0, errRequestLineLong
		}
		if e := parseRequestLine(buf[start:], req, true); e != nil {
			return 0, e
		}
		return 0, nil
	}
	if len(line) > lim.MaxRequestLine {
		return 0, errRequestLineLong
	}
	if e := parseRequestLine(line, req, false); e != nil {
		return 0, e
	}

	var hostSeen, clSeen, teSeen, connClose, connKeepAlive bool
	for {
		if off > lim.MaxHeaderBytes {
			return 0, errHeadTooLarge
		}
		lineStart := off
		line, off, ok, e = nextLine(buf, off)
		if e != nil {
			return 0, e
		}
		if !ok {
			if len(buf) >= lim.MaxHeaderBytes {
				return 0, errHeadTooLarge
			}
			if e := checkPartialField(buf[lineStart:]); e != nil {
				return 0, e
			}
			return 0, nil
		}
		if off > lim.MaxHeaderBytes {
			return 0, errHeadTooLarge
		}
		if len(line) == 0 {
			break
		}
		name, value, e := splitField(line)
		if e != nil {
			return 0, e
		}
		if req.NumHeaders >= lim.MaxHeaders {
			return 0, errTooManyHeaders
		}
		req.Headers[req.NumHeaders] = Header{Name: name, Value: value}
		req.NumHeaders++

		if lookalikeFramingName(name) {
			return 0, errSuspiciousName
		}
		switch len(name) {
		case 4:
			if EqualFold(name, "host") {
				if hostSeen {
					return 0, errHostMultiple
				}
				hostSeen = true
				if req.Authority == nil {
					if !req.setHost(value) {
						return 0, errHostInvalid
					}
				} else if _, ok := splitHostPort(value); !ok {
					return 0, errHostInvalid
				}
			}
		case 6:
			if EqualFold(name, "expect") {
				if !EqualFold(value, "100-continue") {
					return 0, errExpectation
				}
				// RFC 9110 §10.1.1: an HTTP/1.0 client knows no 1xx, so
				// its 100-continue is ignored.
				req.Expect100 = req.Minor == 1
			}
		case 7:
			if EqualFold(name, "upgrade") {
				req.Upgrade = true
			}
		case 10:
			if EqualFold(name, "connection") {
				if req.Connection != nil {
					// Two Connection lines are legal; we keep the tokens of
					// both by refusing to guess which one the proxy strips.
					return 0, errConnMultiple
				}
				req.Connection = value
				connClose = HasToken(value, "close")
				connKeepAlive = HasToken(value, "keep-alive")
			}
		case 14:
			if EqualFold(name, "content-length") {
				if clSeen {
					return 0, errCLDuplicate
				}
				clSeen = true
				v, ok := parseDecimal(value)
				if !ok {
					return 0, errCLInvalid
				}
				req.ContentLength = v
			}
		case 17:
			if EqualFold(name, "transfer-encoding") {
				if e := scanTransferCodings(value, &teSeen, &req.Chunked); e != nil {
					return 0, e
				}
			}
		}
	}

	if req.Minor == 1 && !hostSeen {
		return 0, errHostMissing // RFC 9112 §3.2
	}
	if teSeen {
		switch {
		case clSeen:
			return 0, errTEAndCL // RFC 9112 §6.1: ought to be handled as an error
		case req.Minor == 0:
			return 0, errTEHTTP10 // RFC 9112 §6.1: faulty framing
		case !req.Chunked:
			return 0, errTENotFinal // RFC 9112 §6.3: 400 and close
		}
	}
	if (teSeen || req.ContentLength > 0) && bodylessMethod(req.Method) {
		// Content on GET/HEAD/TRACE has no defined semantics (RFC 9110 §9.3);
		// backends disagree on whether to read it, which is a desync vector.
		return 0, errBodyNotAllowed
	}
	if req.Minor == 1 {
		req.KeepAlive = !connClose
	} else {
		req.KeepAlive = connKeepAlive && !connClose
	}
	return off, nil
}

// scanTransferCodings applies one Transfer-Encoding field value. The only
// coding taken is chunked, once over all fields, without parameters (a
// parameter on chunked is a known smuggling trick). Any other coding, even
// before chunked, gets 501 (RFC 9112 §6.1): backends disagree on lists
// such as "identity, chunked" (gunicorn before 22 read no body), so
// forwarding one would frame the body differently at the next hop.
func scanTransferCodings(v []byte, seen, chunked *bool) *Error {
	for list := v; ; {
		var elem []byte
		elem, list = NextToken(list)
		if !isToken(elem) {
			return errTEInvalid
		}
		if *chunked {
			if EqualFold(elem, "chunked") {
				return errTEChunkedTwice
			}
			return errTENotFinal
		}
		*seen = true
		if !EqualFold(elem, "chunked") {
			return errTEUnsupported
		}
		*chunked = true
		if list == nil {
			return nil
		}
	}
}

// lookalikeFramingName reports names such as Transfer_Encoding or
// Content--Length: legal tokens that some servers normalize into the real
// framing fields (CGI maps '-' to '_'), so one hop frames the message
// differently from the next.
func lookalikeFramingName(name []byte) bool {
	if len(name) < 13 || len(name) > 40 {
		return false
	}
	var target string
	switch lower(name[0]) {
	case 'c':
		if len(name) == 14 && EqualFold(name, "content-length") {
			return false
		}
		target = "contentlength"
	case 't':
		if len(name) == 17 && EqualFold(name, "transfer-encoding") {
			return false
		}
		target = "transferencoding"
	default:
		return false
	}
	j := 0
	for _, c := range name {
		if c == '-' || c == '_' {
			continue
		}
		if j >= len(target) || lower(c) != target[j] {
			return false
		}
		j++
	}
	return j == len(target)
}

func bodylessMethod(m []byte) bool {
	switch string(m) {
	case "GET", "HEAD", "TRACE":
		return true
	}
	return false
}

// knownMethod reports whether m is a method we forward. A registry list
// instead of "any token" follows llhttp's strict mode: an unknown method is
// more often an attack or a typo than a real extension.
func knownMethod(m []byte) bool {
	switch string(m) {
	case "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "TRACE", "PATCH",
		"PROPFIND", "PROPPATCH", "MKCOL", "COPY", "MOVE", "LOCK", "UNLOCK",
		"SEARCH", "REPORT", "MKACTIVITY", "CHECKOUT", "MERGE", "M-SEARCH",
		"NOTIFY", "SUBSCRIBE", "UNSUBSCRIBE", "PURGE", "MKCALENDAR", "LINK",
		"UNLINK", "BIND", "REBIND", "UNBIND", "ACL", "QUERY":
		return true
	}
	return false
}

// parseRequestLine parses "method SP request-target SP HTTP-version". With
// partial set, line is a prefix without its CRLF and running out of bytes is
// not an error; only what is already wrong is reported.
func parseRequestLine(line []byte, req *Request, partial bool) *Error {
	i := 0
	for i < len(line) && tcharTab[line[i]] {
		i++
	}
	if i == len(line) {
		if partial {
			return nil
		}
		return errRequestLine
	}
	if line[i] != ' ' {
		if line[i] == '\r' && partial && i == len(line)-1 {
			return nil
		}
		return errMethod
	}
	if i == 0 {
		return errRequestLine
	}
	method := line[:i]
	if !partial {
		if string(method) == "CONNECT" {
			return errConnect
		}
		if !knownMethod(method) {
			return errUnknownMethod
		}
	}
	i++
	ts := i
	for i < len(line) && targetTab[line[i]] {
		i++
	}
	if i == len(line) {
		if partial {
			return nil
		}
		return errRequestLine
	}
	if line[i] != ' ' {
		if line[i] == '\r' && partial && i == len(line)-1 {
			return nil
		}
		return errTarget
	}
	if i == ts {
		return errRequestLine
	}
	target := line[ts:i]
	ver := line[i+1:]
	if partial {
		return checkPartialVersion(ver)
	}
	minor, e := parseVersion(ver)
	if e != nil {
		return e
	}
	req.Method, req.Target, req.Minor = method, target, minor
	return req.parseTarget(target)
}

const httpPrefix = "HTTP/"

// parseVersion accepts exactly HTTP/1.0 and HTTP/1.1; other well-formed
// versions get 505, anything else 400.
func parseVersion(v []byte) (int, *Error) {
	if len(v) != 8 || string(v[:5]) != httpPrefix || v[6] != '.' ||
		v[5] < '0' || v[5] > '9' || v[7] < '0' || v[7] > '9' {
		return 0, errVersion
	}
	if v[5] != '1' || (v[7] != '0' && v[7] != '1') {
		return 0, errVersionUnsupp
	}
	return int(v[7] - '0'), nil
}

func checkPartialVersion(v []byte) *Error {
	if len(v) > 0 && v[len(v)-1] == '\r' {
		v = v[:len(v)-1]
	}
	if len(v) >= 8 {
		_, e := parseVersion(v)
		if e == nil && len(v) > 8 {
			return errVersion
		}
		return e
	}
	for j, c := range v {
		switch {
		case j < 5:
			if c != httpPrefix[j] {
				return errVersion
			}
		case j == 6:
			if c != '.' {
				return errVersion
			}
		default:
			if c < '0' || c > '9' {
				return errVersion
			}
		}
	}
	return nil
}

// parseTarget accepts origin-form, absolute-form (http/https) and "*" for
// OPTIONS (RFC 9112 §3.2). Authority-form belongs to CONNECT, rejected earlier.
func (req *Request) parseTarget(t []byte) *Error {
	switch {
	case t[0] == '/':
		return req.setPath(t)
	case len(t) == 1 && t[0] == '*':
		if string(req.Method) != "OPTIONS" {
			return errTarget
		}
		req.Path, req.RawPath = t, t
		return nil
	}
	rest, ok := cutScheme(t)
	if !ok {
		return errTarget
	}
	i := 0
	for i < len(rest) && rest[i] != '/' && rest[i] != '?' {
		if rest[i] == '@' {
			return errUserinfo // RFC 9110 §4.2.4: treat userinfo as an error
		}
		i++
	}
	auth := rest[:i]
	if !req.setHost(auth) {
		return errTarget
	}
	req.Authority = auth
	if i == len(rest) || rest[i] == '?' {
		req.Path, req.RawPath = slashPath, slashPath
		if i < len(rest) {
			req.Query = rest[i+1:]
		}
		return nil
	}
	return req.setPath(rest[i:])
}

func cutScheme(t []byte) ([]byte, bool) {
	if len(t) > 7 && EqualFold(t[:7], "http://") {
		return t[7:], true
	}
	if len(t) > 8 && EqualFold(t[:8], "https://") {
		return t[8:], true
	}
	return nil, false
}

func (req *Request) setPath(t []byte) *Error {
	path := t
	for i, c := range t {
		if c == '?' {
			path = t[:i]
			req.Query = t[i+1:]
			break
		}
	}
	req.RawPath = path
	if cap(req.pathBuf) < len(path) && !pathIsNormal(path) {
		req.pathBuf = make([]byte, 0, max(len(path), 256))
	}
	norm, e := NormalizePath(req.pathBuf, path)
	if e != nil {
		return e
	}
	req.Path = norm
	return nil
}

// setHost validates host[:port] and stores the lowercased host.
func (req *Request) setHost(v []byte) bool {
	h, ok := splitHostPort(v)
	if !ok || len(h) > len(req.hostBuf) {
		return false
	}
	// "example.com." is the same name as "example.com" (a fully qualified
	// spelling); routing must not treat them as two hosts. One dot only:
	// "example.com.." is not a name.
	if h[len(h)-1] == '.' {
		h = h[:len(h)-1]
		if len(h) == 0 || h[len(h)-1] == '.' {
			return false
		}
	}
	for i, c := range h {
		req.hostBuf[i] = lower(c)
	}
	req.Host = req.hostBuf[:len(h)]
	return true
}

// splitHostPort validates uri-host [ ":" port ] (RFC 9110 §7.2) and returns
// the host. An empty host is refused: we route on it.
func splitHostPort(v []byte) (host []byte, ok bool) {
	if len(v) == 0 {
		return nil, false
	}
	i := 0
	if v[0] == '[' {
		colons := 0
		// An IPv6 literal: hex digits, colons, and dots of an embedded
		// IPv4 address; no zone (RFC 6874 zones are not for Host).
		for i = 1; i < len(v) && v[i] != ']'; i++ {
			c := v[i]
			if c == ':' {
				colons++
			} else if hexVal[c] < 0 && c != '.' {
				return nil, false
			}
		}
		if i == len(v) || colons < 2 {
			return nil, false
		}
		i++
	} else {
		for i < len(v) && hostTab[v[i]] {
			i++
		}
		if i == 0 {
			return nil, false
		}
	}
	host = v[:i]
	if i == len(v) {
		return host, len(host) <= 255
	}
	if v[i] != ':' {
		return nil, false
	}
	port := v[i+1:]
	if len(port) == 0 || len(port) > 5 {
		return nil, false
	}
	p, ok := parseDecimal(port)
	if !ok || p > 65535 {
		return nil, false
	}
	return host, len(host) <= 255
}
