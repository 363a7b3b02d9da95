package routing

import "bytes"

// CookieValue returns the value of cookie name in a Cookie header value
// ("a=1; b=2", RFC 6265 §5.4), without allocating. Surrounding double
// quotes are kept: the value only feeds a hash.
func CookieValue(header, name []byte) ([]byte, bool) {
	for len(header) > 0 {
		var pair []byte
		if i := bytes.IndexByte(header, ';'); i >= 0 {
			pair, header = header[:i], header[i+1:]
		} else {
			pair, header = header, nil
		}
		pair = bytes.TrimLeft(pair, " \t")
		eq := bytes.IndexByte(pair, '=')
		if eq < 0 {
			continue
		}
		if bytes.Equal(bytes.TrimRight(pair[:eq], " \t"), name) {
			return bytes.Trim(pair[eq+1:], " \t"), true
		}
	}
	return nil, false
}
