package h1

import "bytes"

// MaxHeaders is the capacity of the fixed header arrays in Request and
// Response. A fixed array keeps a parsed message inside one reusable struct
// (no slice growth per request); 128 is well above what browsers and common
// clients send (nginx/haproxy default to ~100) and costs 6 KiB per message.
const MaxHeaders = 128

// Header is one field line: Name as received (case preserved), Value with
// surrounding whitespace removed. Both alias the parsed buffer.
type Header struct {
	Name, Value []byte
}

// Limits bound what a request head may cost us. Zero fields take defaults.
type Limits struct {
	// MaxRequestLine bounds the request line (without CRLF); longer → 414.
	// Default 8 KiB, the common server default (nginx large_client_header_buffers).
	MaxRequestLine int
	// MaxHeaderBytes bounds the whole head: request line, fields and the
	// final empty line; larger → 431. Default 16 KiB.
	MaxHeaderBytes int
	// MaxHeaders bounds the number of field lines; more → 431. Default 64,
	// capped at the MaxHeaders array capacity.
	MaxHeaders int
}

// Default limits; see the Limits fields for why these values.
const (
	DefaultMaxRequestLine = 8 << 10
	DefaultMaxHeaderBytes = 16 << 10
	DefaultMaxHeaders     = 64
	// MaxResponseHead bounds an upstream response head; upstreams are ours
	// but still untrusted bytes.
	MaxResponseHead = 64 << 10
)

// WithDefaults returns l with zero or out-of-range fields replaced by defaults.
func (l Limits) WithDefaults() Limits {
	if l.MaxRequestLine <= 0 {
		l.MaxRequestLine = DefaultMaxRequestLine
	}
	if l.MaxHeaderBytes <= 0 {
		l.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	if l.MaxHeaders <= 0 {
		l.MaxHeaders = DefaultMaxHeaders
	}
	if l.MaxHeaders > MaxHeaders {
		l.MaxHeaders = MaxHeaders
	}
	return l
}

// MaxLeadingCRLF is how many empty lines we skip before a start line
// (RFC 9112 §2.2 says "at least one"); more than that is garbage.
const MaxLeadingCRLF = 4

// WorthReparsing reports whether a head that ParseRequest found incomplete
// when parsed bytes were buffered, now buf, may have a new verdict: it is
// the first parse, or a line ended since, or ReparseStep more bytes came.
// Parsing a trickling head whole again for every few bytes would cost the
// square of its length (67–86 ms of CPU for 16 KiB fed a byte at a time);
// this way garbage inside a line is refused at most ReparseStep bytes late,
// and a limit is overrun by at most that much before it is refused.
func WorthReparsing(buf []byte, parsed int) bool {
	return parsed == 0 || len(buf)-parsed >= ReparseStep || bytes.IndexByte(buf[parsed:], '\n') >= 0
}

// ReparseStep bounds the bytes a trickling head may gain without a line end
// before it is parsed again (WorthReparsing).
const ReparseStep = 256

// EmptyLines reports whether buf is nothing but one to MaxLeadingCRLF
// empty lines (CRLF): what some clients send after a request's body, which
// a server reading for the next request line should ignore (RFC 9112 §2.2)
// rather than take for the start of a request.
func EmptyLines(buf []byte) bool {
	if len(buf) == 0 || len(buf)%2 != 0 || len(buf) > 2*MaxLeadingCRLF {
		return false
	}
	for i := 0; i < len(buf); i += 2 {
		if buf[i] != '\r' || buf[i+1] != '\n' {
			return false
		}
	}
	return true
}

// skipEmptyLines skips leading CRLFs. more reports that buf ended inside one.
func skipEmptyLines(buf []byte) (off int, more bool, err *Error) {
	for i := 0; off < len(buf); i++ {
		switch buf[off] {
		case '\r':
			if off+1 >= len(buf) {
				return off, true, nil
			}
			if buf[off+1] != '\n' {
				return off, false, errBareCR
			}
			if i >= MaxLeadingCRLF {
				return off, false, errRequestLine
			}
			off += 2
		case '\n':
			return off, false, errBareLF
		default:
			return off, false, nil
		}
	}
	return off, true, nil
}

// nextLine returns the line starting at off without its CRLF and the offset
// after it. ok is false when buf has no LF yet. A LF not preceded by CR is
// rejected; a CR inside the line is caught by the callers' byte classes.
func nextLine(buf []byte, off int) (line []byte, next int, ok bool, err *Error) {
	i := bytes.IndexByte(buf[off:], '\n')
	if i < 0 {
		return nil, off, false, nil
	}
	if i == 0 || buf[off+i-1] != '\r' {
		return nil, off, false, errBareLF
	}
	return buf[off : off+i-1], off + i + 1, true, nil
}

// splitField splits a complete field line into name and trimmed value.
func splitField(line []byte) (name, value []byte, err *Error) {
	if line[0] == ' ' || line[0] == '\t' {
		return nil, nil, errObsFold
	}
	i := 0
	for ; i < len(line) && tcharTab[line[i]]; i++ {
	}
	if i == len(line) {
		return nil, nil, errNoColon
	}
	switch c := line[i]; {
	case c == ':':
	case c == ' ' || c == '\t':
		return nil, nil, errSpaceBeforeCol
	case c == '\r':
		return nil, nil, errBareCR
	default:
		return nil, nil, errHeaderName
	}
	if i == 0 {
		return nil, nil, errHeaderName
	}
	name = line[:i]
	value = line[i+1:]
	for _, c := range value {
		if !vcharTab[c] {
			if c == '\r' {
				return nil, nil, errBareCR
			}
			return nil, nil, errHeaderValue
		}
	}
	return name, trimOWS(value), nil
}

// checkPartialField validates the start of a field line whose LF has not
// arrived yet, so that garbage is rejected now instead of after a timeout.
func checkPartialField(p []byte) *Error {
	if len(p) == 0 {
		return nil
	}
	if p[0] == ' ' || p[0] == '\t' {
		return errObsFold
	}
	i := 0
	for ; i < len(p) && tcharTab[p[i]]; i++ {
	}
	if i == len(p) {
		return nil
	}
	switch c := p[i]; {
	case c == ':':
	case c == ' ' || c == '\t':
		return errSpaceBeforeCol
	case c == '\r':
		if i == len(p)-1 {
			return nil // maybe a CRLF ending a colon-less line: reported once the LF arrives
		}
		return errBareCR
	default:
		return errHeaderName
	}
	if i == 0 {
		return errHeaderName
	}
	for j := i + 1; j < len(p); j++ {
		if c := p[j]; !vcharTab[c] {
			if c == '\r' {
				if j == len(p)-1 {
					return nil
				}
				return errBareCR
			}
			return errHeaderValue
		}
	}
	return nil
}
