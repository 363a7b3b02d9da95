package h1

// Character classes as 256-entry tables: one indexed load per byte keeps the
// scanners branch-light and allocation-free.
var (
	tcharTab  [256]bool // RFC 9110 §5.6.2 tchar
	vcharTab  [256]bool // field-vchar plus SP and HTAB (RFC 9110 §5.5), obs-text included
	targetTab [256]bool // bytes allowed in a request-target
	// hostTab holds the bytes of a host name or IPv4 address: letters,
	// digits, '-', '.' and '_'. RFC 3986's reg-name also allows
	// sub-delims and percent-encoding, which no DNS name has and which
	// backends read differently: "evil.test,a.example.com" matches a
	// "*.example.com" route, and frameworks take its first element as the
	// host (X-Forwarded-Host poisoning).
	hostTab [256]bool
	hexVal  [256]int8 // hex digit value, -1 otherwise
)

func init() {
	for c := '0'; c <= '9'; c++ {
		tcharTab[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		tcharTab[c] = true
		tcharTab[c-'a'+'A'] = true
	}
	for _, c := range []byte("!#$%&'*+-.^_`|~") {
		tcharTab[c] = true
	}
	for c := 0x21; c <= 0xff; c++ {
		if c != 0x7f {
			vcharTab[c] = true
		}
	}
	vcharTab[' '] = true
	vcharTab['\t'] = true
	// Request targets: visible ASCII only. '#' is rejected because a fragment
	// is never part of a request-target (RFC 9112 §3.2) and a backend that
	// strips it would see a different path than the one we routed on.
	for c := 0x21; c <= 0x7e; c++ {
		if c != '#' {
			targetTab[c] = true
		}
	}
	for c := '0'; c <= '9'; c++ {
		hostTab[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		hostTab[c] = true
		hostTab[c-'a'+'A'] = true
	}
	for _, c := range []byte("-._") {
		hostTab[c] = true
	}
	for i := range hexVal {
		hexVal[i] = -1
	}
	for c := '0'; c <= '9'; c++ {
		hexVal[c] = int8(c - '0')
	}
	for c := 'a'; c <= 'f'; c++ {
		hexVal[c] = int8(c - 'a' + 10)
		hexVal[c-'a'+'A'] = int8(c - 'a' + 10)
	}
}

func lower(c byte) byte {
	if c >= 'A' && c <= 'Z' {
		return c + ('a' - 'A')
	}
	return c
}

// EqualFold reports whether a equals the lowercase ASCII string b, ignoring
// ASCII case in a. It exists because bytes.EqualFold handles Unicode and is
// slower; header names and tokens are ASCII.
func EqualFold(a []byte, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		if lower(a[i]) != b[i] {
			return false
		}
	}
	return true
}

// NameIs reports whether the field name is want (lowercase, '-'
// separated) for a backend: ASCII case is ignored and '_' is taken for
// '-' on both sides, since CGI-style backends (Rack, WSGI, PHP) map
// X_Consumer_Id and X-Consumer-Id to the same variable.
func NameIs[T ~string | ~[]byte](name []byte, want T) bool {
	if len(name) != len(want) {
		return false
	}
	for i, c := range name {
		if c = lower(c); c == '_' {
			c = '-'
		}
		w := lower(want[i])
		if w == '_' {
			w = '-'
		}
		if c != w {
			return false
		}
	}
	return true
}

func isToken(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	for _, c := range b {
		if !tcharTab[c] {
			return false
		}
	}
	return true
}

// trimOWS removes optional whitespace (SP / HTAB) from both ends.
func trimOWS(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

// NextToken splits a comma-separated list value (RFC 9110 §5.6.1): it returns
// the first element with OWS trimmed and the rest after the comma. Empty
// elements come back as empty slices; callers decide whether they are legal.
func NextToken(list []byte) (elem, rest []byte) {
	for i, c := range list {
		if c == ',' {
			return trimOWS(list[:i]), list[i+1:]
		}
	}
	return trimOWS(list), nil
}

// HasToken reports whether the comma-separated list value contains tok
// (lowercase) as an element, ignoring case.
func HasToken(list []byte, tok string) bool {
	for list != nil {
		var e []byte
		e, list = NextToken(list)
		if EqualFold(e, tok) {
			return true
		}
	}
	return false
}

// parseDecimal parses 1*DIGIT into a non-negative int64; ok is false on an
// empty input, a non-digit or overflow.
func parseDecimal(b []byte) (int64, bool) {
	if len(b) == 0 {
		return 0, false
	}
	var v int64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		d := int64(c - '0')
		if v > (1<<63-1-d)/10 {
			return 0, false
		}
		v = v*10 + d
	}
	return v, true
}
