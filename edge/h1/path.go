package h1

import "unicode/utf8"

// Path normalisation. Routing decides which policy applies from the path, so
// the path a route saw must be the path the backend acts on: a backend that
// resolves /public/%2e%2e/admin to /admin after we matched it as /public is a
// policy bypass (DESIGN P1). ParseRequest therefore normalises the path once,
// routing matches the result, and the proxy forwards the result.
//
// The rules, applied in one pass (docs/http.md lists them with examples):
//
//  1. Percent-encoded unreserved characters (ALPHA DIGIT - . _ ~, RFC 3986
//     §2.3) and ':' and '@' are decoded; every other escape is kept, with
//     its hex digits uppercased (§6.2.2.1). Decoding happens once: %252e
//     stays %252E. ':' and '@' delimit nothing inside a path and backends
//     decode them, so with %3A kept, /admin%3Aops missed a route /admin:ops
//     and took the catch-all's policy while the backend served /admin:ops.
//     The sub-delims (! $ & ' ( ) * + , ; =) stay escaped: frameworks give
//     them meaning (a ';' starts parameters, a ',' separates ids), so an
//     escaped one is not the same path.
//  2. %2F, %5C and a raw '\' are rejected: a backend that turns them into
//     separators would see segments we never matched on.
//  3. %00 is rejected (C backends truncate at it); other escaped controls
//     stay escaped, as RFC 3986 allows. Escapes of bytes ≥ 0x80 must form
//     valid, shortest-form UTF-8 (an overlong %C0%AF is '/' to a lax decoder).
//  4. Runs of '/' collapse to one. Most backends (nginx merge_slashes,
//     many frameworks) do the same, and a prefix route /admin must not be
//     skipped by writing //admin.
//  5. "." and ".." segments are removed (RFC 3986 §5.2.4); a ".." that would
//     climb above the root is rejected rather than clamped, because a client
//     that sends it is probing, not browsing.
//  6. ';' is an ordinary character: /a;b is the segment "a;b" for routing.
//     But a dot segment with parameters ("..;", ".;x") is rejected: Java
//     servlet containers drop the parameters and then resolve the dots, so
//     /public/..;/admin, routed as a /public path, is /admin to them.
//
// Errors are preallocated like every other parse error.
var (
	errPathBackslash = &Error{400, "backslash in path"}
	errPathEncSep    = &Error{400, "encoded slash or backslash in path"}
	errPathPercent   = &Error{400, "bad percent-encoding in path"}
	errPathNUL       = &Error{400, "encoded NUL in path"}
	errPathUTF8      = &Error{400, "invalid UTF-8 in path"}
	errPathAboveRoot = &Error{400, "path climbs above root"}
	errPathDotParams = &Error{400, "dot segment with parameters in path"}
)

func unreserved(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		c == '-' || c == '.' || c == '_' || c == '~'
}

// decodedInPath reports a character whose escape normalisation decodes
// (rule 1).
func decodedInPath(c byte) bool { return unreserved(c) || c == ':' || c == '@' }

const upperHex = "0123456789ABCDEF"

// pathIsNormal reports whether p (starting with '/') is already in normal
// form, so that the common request keeps aliasing the input and costs one
// scan instead of a copy.
func pathIsNormal(p []byte) bool {
	for i := 0; i < len(p); i++ {
		switch p[i] {
		case '%', '\\':
			return false
		case '/':
			if i+1 < len(p) {
				switch p[i+1] {
				case '/':
					return false
				case '.':
					// "/." or "/.." as a whole segment, or with ';' parameters,
					// needs work; "/.well-known" does not.
					j := i + 2
					if j < len(p) && p[j] == '.' {
						j++
					}
					if j == len(p) || p[j] == '/' || p[j] == ';' {
						return false
					}
				}
			}
		}
	}
	return true
}

// NormalizePath returns the normal form of the origin-form path p (which
// starts with '/' and has no query), appended to dst[:0]. When p is
// already normal it returns p itself and dst is untouched. It never
// allocates when cap(dst) >= len(p): the normal form is never longer.
func NormalizePath(dst, p []byte) ([]byte, *Error) {
	if pathIsNormal(p) {
		return p, nil
	}
	out := dst[:0]
	for i := 0; i < len(p); {
		// p[i] is '/': collapse the run, then copy one segment.
		for i < len(p) && p[i] == '/' {
			i++
		}
		segStart := len(out)
		out = append(out, '/')
		for i < len(p) && p[i] != '/' {
			c := p[i]
			switch c {
			case '\\':
				return nil, errPathBackslash
			case '%':
				var e *Error
				if out, i, e = appendEscape(out, p, i); e != nil {
					return nil, e
				}
				continue
			}
			out = append(out, c)
			i++
		}
		last := i == len(p)
		switch seg := out[segStart+1:]; {
		case dotWithParams(seg):
			return nil, errPathDotParams
		case len(seg) == 1 && seg[0] == '.':
			out = out[:segStart]
		case len(seg) == 2 && seg[0] == '.' && seg[1] == '.':
			if segStart == 0 {
				return nil, errPathAboveRoot
			}
			j := segStart - 1
			for out[j] != '/' {
				j--
			}
			out = out[:j]
		default:
			continue
		}
		if last {
			// RFC 3986 §5.2.4: a trailing dot segment leaves the slash.
			out = append(out, '/')
		}
	}
	if len(out) == 0 {
		out = append(out, '/')
	}
	return out, nil
}

// StripParams appends to dst[:0] the normal-form path p (NormalizePath's
// result) as a servlet container reads it: each segment without its ';'
// parameters, and the empty segments that leaves merged, so /a;x/b and
// /;x/a/b are /a/b. Routing keeps ';' literal; the proxy checks that this
// reading picks the same route (docs/http.md). Dot segments with
// parameters never reach it: NormalizePath refuses them.
func StripParams(dst, p []byte) []byte {
	out := dst[:0]
	for i := 0; i < len(p); {
		// p[i] is '/': copy the segment up to its parameters.
		out = append(out, '/')
		i++
		for i < len(p) && p[i] != '/' && p[i] != ';' {
			out = append(out, p[i])
			i++
		}
		for i < len(p) && p[i] != '/' {
			i++
		}
		if i < len(p) && out[len(out)-1] == '/' {
			out = out[:len(out)-1] // an emptied segment merges with the next
		}
	}
	return out
}

// dotWithParams reports a segment "." or ".." followed by ';' parameters.
func dotWithParams(seg []byte) bool {
	n := 0
	for n < len(seg) && n < 2 && seg[n] == '.' {
		n++
	}
	return n > 0 && n < len(seg) && seg[n] == ';'
}

// appendEscape handles the escape at p[i] == '%' and returns the new
// output and the index after what it consumed.
func appendEscape(out, p []byte, i int) ([]byte, int, *Error) {
	v, ok := hexByte(p, i)
	if !ok {
		return nil, 0, errPathPercent
	}
	switch {
	case decodedInPath(v):
		return append(out, v), i + 3, nil
	case v == '/' || v == '\\':
		return nil, 0, errPathEncSep
	case v == 0:
		return nil, 0, errPathNUL
	case v < 0x80:
		return append(out, '%', upperHex[v>>4], upperHex[v&15]), i + 3, nil
	}
	// A UTF-8 sequence spelled as escapes: collect it whole and check it,
	// so that overlong forms and stray continuation bytes never pass.
	var seq [utf8.UTFMax]byte
	n := 0
	switch {
	case v&0xe0 == 0xc0:
		n = 2
	case v&0xf0 == 0xe0:
		n = 3
	case v&0xf8 == 0xf0:
		n = 4
	default:
		return nil, 0, errPathUTF8
	}
	for k := range n {
		b, ok := hexByte(p, i+3*k)
		if !ok {
			return nil, 0, errPathUTF8
		}
		seq[k] = b
	}
	if !utf8.Valid(seq[:n]) {
		return nil, 0, errPathUTF8
	}
	for k := range n {
		out = append(out, '%', upperHex[seq[k]>>4], upperHex[seq[k]&15])
	}
	return out, i + 3*n, nil
}

func hexByte(p []byte, i int) (byte, bool) {
	if i+2 >= len(p) || p[i] != '%' {
		return 0, false
	}
	hi, lo := hexVal[p[i+1]], hexVal[p[i+2]]
	if hi < 0 || lo < 0 {
		return 0, false
	}
	return byte(hi)<<4 | byte(lo), true
}
