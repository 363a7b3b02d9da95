package h1

// ChunkedScanner validates a chunked message body (RFC 9112 §7.1) as it
// streams past, without copying or decoding it: the proxy forwards the
// framing verbatim once the scanner has vouched for it. The zero value is
// ready to use; Reset makes it reusable for the next message.
type ChunkedScanner struct {
	state     uint8
	digits    uint8  // 1 once the current chunk-size has a hex digit
	extToken  bool   // the current chunk-ext name/value has at least one byte
	remaining uint64 // data bytes left in the current chunk (also the size being parsed)
	lineLen   int    // bytes in the current chunk-size line
	trailer   int    // bytes in the trailer section
	held      int    // bytes since the current chunk-size line began, outside chunk data (Pending)
	broken    *Error // first error; sticky because the framing is untrusted from then on
	// The current trailer field's name, lowercased with '_' read as '-',
	// while it fits; nameLen keeps counting (up to 255) past that.
	name    [maxTrailerName]byte
	nameLen uint8
	filter  TrailerFilter // nil: only forbiddenTrailer's fields
}

// TrailerFilter names trailer fields a body may not carry besides
// forbiddenTrailer's: a request policy's credential and consumer fields,
// which the edge strips from the head and must not let through behind the
// body either.
type TrailerFilter interface {
	// ForbidsTrailer is given the name lowercased, with '_' read as '-'.
	ForbidsTrailer(name []byte) bool
}

// maxTrailerName is the longest trailer field name a filtered scan accepts:
// it must hold the name to ask the filter. Real trailer names are short.
const maxTrailerName = 128

const (
	csSize uint8 = iota
	csExtName
	csExtValStart
	csExtToken
	csExtQuoted
	csExtQuotedEsc
	csExtAfterQuote
	csSizeLF
	csData
	csDataCR
	csDataLF
	csTrailerStart
	csTrailerName
	csTrailerValue
	csTrailerLF
	csFinalLF
	csDone
)

// Bounds on framing overhead. Chunk extensions and trailers carry nothing
// we use; the caps stop a peer from making us scan megabytes of them.
const (
	maxChunkLine     = 4 << 10
	maxTrailerBytes  = 16 << 10
	maxChunkSizeHex  = 15 // < 2^60 bytes: no overflow, far beyond any real chunk
	qdtextBackslash  = '\\'
	qdtextDoubleQuot = '"'
)

// Reset prepares the scanner for a new body.
func (s *ChunkedScanner) Reset() { *s = ChunkedScanner{} }

// ResetFiltered prepares the scanner for a new body whose trailer may not
// carry the fields f forbids either.
func (s *ChunkedScanner) ResetFiltered(f TrailerFilter) { *s = ChunkedScanner{filter: f} }

// Done reports whether the last chunk and the trailer section have ended.
func (s *ChunkedScanner) Done() bool { return s.state == csDone }

// Pending is how many of the bytes Scan took belong to a chunk-size line
// not yet ended, or to the last chunk and its trailer section before they
// ended: a forwarder holds them back, so that a body the scanner later
// refuses (a bad trailer, say) never reaches the next hop ended, and a
// backend cannot act on it. They are at most a line plus the trailer
// section's bound; 0 once the body is done.
func (s *ChunkedScanner) Pending() int {
	if s.state == csDone {
		return 0
	}
	return s.held
}

// Scan consumes the next bytes of the body. It returns how many bytes of p
// belong to the body (all of p unless done) and whether the body ended with
// them. After an error the scanner stays broken; the framing is untrusted.
func (s *ChunkedScanner) Scan(p []byte) (n int, done bool, err error) {
	if s.broken != nil {
		return 0, false, s.broken
	}
	if e := s.scan(p, &n); e != nil {
		s.broken = e
		return n, false, e
	}
	return n, s.state == csDone, nil
}

func (s *ChunkedScanner) scan(p []byte, np *int) *Error {
	if s.state == csDone {
		return nil
	}
	i := 0
	defer func() { *np = i }()
	for i < len(p) {
		c := p[i]
		prev := s.state
		switch s.state {
		case csSize:
			if v := hexVal[c]; v >= 0 {
				// At most maxChunkSizeHex significant digits: leading
				// zeros are any number (RFC 9112 §7.1), bounded by the line.
				if s.remaining >= 1<<(4*(maxChunkSizeHex-1)) {
					return errChunkSize
				}
				s.digits = 1
				s.remaining = s.remaining<<4 | uint64(v)
			} else if s.digits == 0 {
				return errChunkSize
			} else if c == ';' {
				s.state, s.extToken = csExtName, false
			} else if c == '\r' {
				s.state = csSizeLF
			} else {
				return errChunkSize
			}
			if s.lineLen++; s.lineLen > maxChunkLine {
				return errChunkLineLong
			}
		case csExtName, csExtValStart, csExtToken, csExtQuoted, csExtQuotedEsc, csExtAfterQuote:
			if e := s.ext(c); e != nil {
				return e
			}
			if s.lineLen++; s.lineLen > maxChunkLine {
				return errChunkLineLong
			}
		case csSizeLF:
			if c != '\n' {
				return errChunkCRLF
			}
			if s.remaining == 0 {
				s.state = csTrailerStart
			} else {
				s.state = csData
			}
		case csData:
			avail := uint64(len(p) - i)
			if avail > s.remaining {
				avail = s.remaining
			}
			s.remaining -= avail
			i += int(avail)
			if s.remaining == 0 {
				s.state = csDataCR
			}
			continue
		case csDataCR:
			if c != '\r' {
				return errChunkCRLF
			}
			s.state = csDataLF
		case csDataLF:
			if c != '\n' {
				return errChunkCRLF
			}
			s.state, s.digits, s.lineLen = csSize, 0, 0
		case csTrailerStart:
			switch {
			case c == '\r':
				s.state = csFinalLF
			case tcharTab[c]:
				s.state = csTrailerName
				s.nameLen = 0
				s.nameByte(c)
			default:
				return errTrailer // includes obs-fold and bare LF
			}
			if s.trailer++; s.trailer > maxTrailerBytes {
				return errTrailerLarge
			}
		case csTrailerName, csTrailerValue, csTrailerLF:
			if e := s.trailerByte(c); e != nil {
				return e
			}
			if s.trailer++; s.trailer > maxTrailerBytes {
				return errTrailerLarge
			}
		case csFinalLF:
			if c != '\n' {
				return errChunkCRLF
			}
			s.state = csDone
			i++
			return nil
		}
		switch {
		case s.state == csData || s.state == csDataCR || s.state == csDataLF || prev == csDataLF:
			s.held = 0 // chunk data, or the line that ended before it
		default:
			s.held++
		}
		i++
	}
	return nil
}

// ext advances through chunk-ext = *( ";" token [ "=" ( token / quoted-string ) ] ).
// No whitespace anywhere: BWS here is what llhttp's strict mode and
// careful proxies refuse, because parsers disagree about it.
func (s *ChunkedScanner) ext(c byte) *Error {
	switch s.state {
	case csExtName:
		switch {
		case tcharTab[c]:
			s.extToken = true
		case !s.extToken:
			return errChunkExt
		case c == '=':
			s.state = csExtValStart
		case c == ';':
			s.extToken = false
		case c == '\r':
			s.state = csSizeLF
		default:
			return errChunkExt
		}
	case csExtValStart:
		switch {
		case c == qdtextDoubleQuot:
			s.state = csExtQuoted
		case tcharTab[c]:
			s.state = csExtToken
		default:
			return errChunkExt
		}
	case csExtToken:
		switch {
		case tcharTab[c]:
		case c == ';':
			s.state, s.extToken = csExtName, false
		case c == '\r':
			s.state = csSizeLF
		default:
			return errChunkExt
		}
	case csExtQuoted:
		switch {
		case c == qdtextDoubleQuot:
			s.state = csExtAfterQuote
		case c == qdtextBackslash:
			s.state = csExtQuotedEsc
		case c == '\t' || c == ' ' || (c >= 0x21 && c != 0x7f):
		default:
			return errChunkExt
		}
	case csExtQuotedEsc:
		if !vcharTab[c] {
			return errChunkExt
		}
		s.state = csExtQuoted
	case csExtAfterQuote:
		switch c {
		case ';':
			s.state, s.extToken = csExtName, false
		case '\r':
			s.state = csSizeLF
		default:
			return errChunkExt
		}
	}
	return nil
}

func (s *ChunkedScanner) trailerByte(c byte) *Error {
	switch s.state {
	case csTrailerName:
		switch {
		case tcharTab[c]:
			s.nameByte(c)
		case c == ':':
			name := s.name[:min(int(s.nameLen), len(s.name))]
			if forbiddenTrailer(name, int(s.nameLen)) {
				return errTrailerField
			}
			if s.filter != nil && (int(s.nameLen) > len(name) || s.filter.ForbidsTrailer(name)) {
				return errTrailerField
			}
			s.state = csTrailerValue
		default:
			return errTrailer
		}
	case csTrailerValue:
		switch {
		case vcharTab[c]:
		case c == '\r':
			s.state = csTrailerLF
		default:
			return errTrailer
		}
	case csTrailerLF:
		if c != '\n' {
			return errTrailer
		}
		s.state = csTrailerStart
	}
	return nil
}

// nameByte adds c to the trailer name being read; past maxTrailerName
// only the length keeps counting.
func (s *ChunkedScanner) nameByte(c byte) {
	if int(s.nameLen) < len(s.name) {
		c = lower(c)
		if c == '_' {
			c = '-'
		}
		s.name[s.nameLen] = c
	}
	if s.nameLen < 255 {
		s.nameLen++
	}
}

// forbiddenTrailer reports a trailer field that must not follow a body
// (RFC 9110 §6.5.1) because a recipient that merges trailers into the
// header section (some do) would let it override what the edge checked or
// set: framing, routing, connection control, credentials, and the fields
// the edge sets. (Content metadata such as Content-Type is left alone:
// llhttp's suite has it in a valid trailer, and it decides nothing here.)
// name is lowercase with '_' as '-'; n is its full length.
func forbiddenTrailer(name []byte, n int) bool {
	if n != len(name) {
		return false
	}
	switch string(name) {
	case "content-length", "transfer-encoding", "host", "connection", "keep-alive", "te", "trailer",
		"upgrade", "authorization", "proxy-authorization", "cookie", "forwarded", "x-forwarded-for",
		"x-forwarded-host", "x-forwarded-proto", "x-request-id", "x-consumer-id",
		"x-original-url", "x-rewrite-url", "x-http-method-override", "x-http-method", "x-method-override":
		return true
	}
	return false
}
