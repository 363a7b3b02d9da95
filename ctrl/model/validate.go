package model

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
)

// Validate checks the route on its own and returns FieldErrors listing every
// problem, or nil. Whether its cluster exists is checked by ctrl.
func (r *Route) Validate() error {
	var c collector
	checkID(&c, "id", r.ID)
	checkRouteHost(&c, "host", r.Host)
	checkPrefix(&c, "prefix", r.Prefix)
	if r.Cluster == "" {
		c.add("cluster", "required: the id of the cluster that serves this route")
	} else {
		checkID(&c, "cluster", r.Cluster)
	}
	checkTimeout(&c, "timeout_ms", r.TimeoutMs)
	return c.err()
}

// Validate checks the cluster on its own and returns FieldErrors listing
// every problem, or nil.
func (cl *Cluster) Validate() error {
	var c collector
	checkID(&c, "id", cl.ID)
	switch {
	case len(cl.Endpoints) == 0:
		c.add("endpoints", "at least one endpoint is required")
	case len(cl.Endpoints) > MaxEndpoints:
		c.add("endpoints", fmt.Sprintf("at most %d endpoints are allowed, got %d", MaxEndpoints, len(cl.Endpoints)))
	default:
		seen := make(map[string]int, len(cl.Endpoints))
		for i, ep := range cl.Endpoints {
			field := fmt.Sprintf("endpoints[%d].address", i)
			canon, reason := canonicalEndpoint(ep.Address)
			if reason != "" {
				c.add(field, reason)
				continue
			}
			if j, dup := seen[canon]; dup {
				c.add(field, fmt.Sprintf("duplicates endpoints[%d] (%q)", j, cl.Endpoints[j].Address))
				continue
			}
			seen[canon] = i
		}
	}
	checkTimeout(&c, "connect_timeout_ms", cl.ConnectTimeoutMs)
	return c.err()
}

// ValidID reports whether s is a valid document id: [a-z0-9][a-z0-9._-]{0,63}.
func ValidID(s string) bool {
	if len(s) == 0 || len(s) > maxIDLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		b := s[i]
		switch {
		case b >= 'a' && b <= 'z', b >= '0' && b <= '9':
		case (b == '.' || b == '_' || b == '-') && i > 0:
		default:
			return false
		}
	}
	return true
}

func checkID(c *collector, field, id string) {
	switch {
	case id == "":
		c.add(field, "required")
	case len(id) > maxIDLen:
		c.add(field, fmt.Sprintf("must be at most %d characters, got %d", maxIDLen, len(id)))
	case !ValidID(id):
		c.add(field, fmt.Sprintf("%q is not a valid id: use lowercase letters, digits, '.', '_' and '-', starting with a letter or digit", id))
	}
}

func checkTimeout(c *collector, field string, ms uint32) {
	if ms > MaxTimeoutMs {
		c.add(field, fmt.Sprintf("must be at most %d (10 minutes), got %d; 0 means the edge default", MaxTimeoutMs, ms))
	}
}

func checkRouteHost(c *collector, field, host string) {
	switch {
	case host == "":
		c.add(field, `required: an exact lowercase hostname, or "*" for any host`)
		return
	case host == WildcardHost:
		return
	case strings.HasPrefix(host, "*."):
		c.add(field, `wildcard subdomains are not supported: use an exact hostname, or "*" for any host`)
		return
	case strings.ContainsRune(host, ':'):
		c.add(field, "must not contain a port or an IPv6 literal: the edge matches the Host header without its port")
		return
	}
	if strings.ToLower(host) != host {
		c.add(field, "must be lowercase: the edge lowercases the request host before matching, so this route could never match")
		return
	}
	if ip, err := netip.ParseAddr(host); err == nil && ip.Is4() {
		return
	}
	if reason := hostnameProblem(host); reason != "" {
		c.add(field, reason)
	}
}

// hostnameProblem checks s as a DNS name in text form (RFC 1123 labels,
// case-insensitive) and returns why it is not one, or "".
func hostnameProblem(s string) string {
	if len(s) > MaxHostLen {
		return fmt.Sprintf("must be at most %d characters, got %d", MaxHostLen, len(s))
	}
	if strings.HasSuffix(s, ".") {
		return `must not end with "." : hosts are matched exactly as clients send them, without the root dot`
	}
	labels := strings.Split(s, ".")
	for _, l := range labels {
		if l == "" {
			return "has an empty label (\"..\" or a leading \".\")"
		}
		if len(l) > 63 {
			return fmt.Sprintf("label %q is longer than 63 characters", l)
		}
		if l[0] == '-' || l[len(l)-1] == '-' {
			return fmt.Sprintf("label %q must not start or end with '-'", l)
		}
		for i := 0; i < len(l); i++ {
			b := l[i]
			if !(b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= '0' && b <= '9' || b == '-') {
				return fmt.Sprintf("invalid character %q: a hostname has letters, digits, '-' and '.'", b)
			}
		}
	}
	// An all-digit last label is what a mistyped IPv4 address (1.2.3.256)
	// looks like; no real top-level domain is numeric (RFC 3696 §2).
	if strings.Trim(labels[len(labels)-1], "0123456789") == "" {
		return "is neither a valid IPv4 address nor a hostname (the last label is all digits)"
	}
	return ""
}

// checkPrefix keeps prefixes to a strict subset of RFC 3986 paths. The edge
// matches the raw request path byte for byte, so anything a backend might
// decode or normalise differently (escapes, dot segments, empty segments)
// would let a request reach a backend under a prefix it does not match, or
// match a route the operator did not mean.
func checkPrefix(c *collector, field, p string) {
	if p == "" {
		c.add(field, `required: a path starting with "/" ("/" matches every path)`)
		return
	}
	if p[0] != '/' {
		c.add(field, `must start with "/"`)
		return
	}
	if len(p) > MaxPrefixLen {
		c.add(field, fmt.Sprintf("must be at most %d bytes, got %d", MaxPrefixLen, len(p)))
		return
	}
	for i := 0; i < len(p); i++ {
		b := p[i]
		var reason string
		switch {
		case b < 0x20 || b == 0x7f:
			reason = fmt.Sprintf("contains a control character (0x%02x) at byte %d", b, i)
		case b == ' ':
			reason = fmt.Sprintf("contains whitespace at byte %d", i)
		case b >= 0x80:
			reason = fmt.Sprintf("contains a non-ASCII byte at byte %d: request paths are ASCII on the wire", i)
		case b == '?':
			reason = `must not contain "?": the query string is not part of the path the edge matches`
		case b == '#':
			reason = `must not contain "#": fragments are never sent to a server`
		case b == '%':
			reason = `must not contain "%"-escapes: the edge matches raw paths, and a backend that decodes them would see a different path`
		case !isPathChar(b):
			reason = fmt.Sprintf("character %q at byte %d is not allowed in a path (RFC 3986)", b, i)
		}
		if reason != "" {
			c.add(field, reason)
			return
		}
	}
	switch {
	case strings.Contains(p, "//"):
		c.add(field, `must not contain "//": backends disagree on whether empty segments collapse`)
	case strings.Contains(p, ".."):
		c.add(field, `must not contain "..": a dot segment lets a path escape the prefix once a backend normalises it`)
	case strings.Contains(p, "/./") || strings.HasSuffix(p, "/."):
		c.add(field, `must not contain a "." segment: backends remove it, so the edge and the backend would see different paths`)
	}
}

// isPathChar reports whether b may appear in a prefix: RFC 3986 pchar
// without pct-encoded, plus "/".
func isPathChar(b byte) bool {
	switch {
	case b >= 'a' && b <= 'z', b >= 'A' && b <= 'Z', b >= '0' && b <= '9':
		return true
	}
	return strings.IndexByte("-._~!$&'()*+,;=:@/", b) >= 0
}

// canonicalEndpoint validates a "host:port" address and returns a canonical
// form used to detect duplicates (lowercase name, normalised IP, numeric port),
// or the reason it is invalid.
func canonicalEndpoint(addr string) (string, string) {
	if addr == "" {
		return "", `required: "host:port"`
	}
	if len(addr) > MaxEndpointAddrLen {
		return "", fmt.Sprintf("must be at most %d bytes, got %d", MaxEndpointAddrLen, len(addr))
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		reason := err.Error()
		var ae *net.AddrError
		if errors.As(err, &ae) {
			reason = ae.Err
		}
		return "", fmt.Sprintf(`must be "host:port" (IPv6 as "[addr]:port"): %s`, reason)
	}
	if port == "" {
		return "", "port is missing"
	}
	for i := 0; i < len(port); i++ {
		if port[i] < '0' || port[i] > '9' {
			return "", fmt.Sprintf("port %q must be a number from 1 to 65535", port)
		}
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil || n == 0 {
		return "", fmt.Sprintf("port %q must be a number from 1 to 65535", port)
	}
	if host == "" {
		return "", "host is missing"
	}
	if strings.ContainsRune(host, ':') || strings.HasPrefix(addr, "[") {
		ip, err := netip.ParseAddr(host)
		if err != nil || !ip.Is6() || ip.Zone() != "" {
			return "", fmt.Sprintf("%q is not an IPv6 address without a zone", host)
		}
		return netip.AddrPortFrom(ip, uint16(n)).String(), ""
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		return netip.AddrPortFrom(ip, uint16(n)).String(), ""
	}
	if reason := hostnameProblem(host); reason != "" {
		return "", "host " + reason
	}
	return strings.ToLower(host) + ":" + strconv.FormatUint(n, 10), ""
}
