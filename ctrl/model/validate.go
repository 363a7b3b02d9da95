package model

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// Validate checks the route on its own and returns FieldErrors listing every
// problem, or nil. Whether its cluster exists is checked by ctrl.
func (r *Route) Validate() error {
	var c collector
	checkID(&c, "id", r.ID)
	checkRouteHost(&c, "host", r.Host)
	switch {
	case r.Prefix == "" && r.Path == "":
		c.add("prefix", `required: a path prefix starting with "/" ("/" matches every path), or "path" for one exact path`)
	case r.Prefix != "" && r.Path != "":
		c.add("path", `set either "prefix" or "path", not both`)
	case r.Path != "":
		checkPrefix(&c, "path", r.Path)
	default:
		checkPrefix(&c, "prefix", r.Prefix)
	}
	if r.Cluster == "" {
		c.add("cluster", "required: the id of the cluster that serves this route")
	} else {
		checkID(&c, "cluster", r.Cluster)
	}
	checkTimeout(&c, "timeout_ms", r.TimeoutMs)
	checkMethods(&c, r.Methods)
	checkHeaderMatches(&c, r.Headers)
	if r.Priority > MaxPriority {
		c.add("priority", fmt.Sprintf("must be at most %d, got %d", MaxPriority, r.Priority))
	}
	if r.RewritePrefix != "" {
		checkPrefix(&c, "rewrite_prefix", r.RewritePrefix)
	}
	if r.Retry != nil {
		checkRetry(&c, r.Retry)
	}
	checkStaleness(&c, r)
	return c.err()
}

func checkStaleness(c *collector, r *Route) {
	if b := r.MaxStalenessMs; b != 0 && (b < MinStalenessBoundMs || b > MaxStalenessBoundMs) {
		c.add("max_staleness_ms", fmt.Sprintf("must be 0 (unbounded) or from %d to %d (one day), got %d; ctrl confirms freshness every second, so a tighter bound would flap",
			MinStalenessBoundMs, MaxStalenessBoundMs, b))
	}
	switch r.OnStale {
	case "", OnStaleServe:
	case OnStaleReject:
		if r.MaxStalenessMs == 0 {
			c.add("on_stale", `"reject" needs "max_staleness_ms": without a bound the route is never stale`)
		}
	default:
		c.add("on_stale", fmt.Sprintf(`%q is not a choice: use "serve" (the default) or "reject"`, r.OnStale))
	}
}

// ExactPath reports whether the route matches one exact path, and the
// path or prefix it matches.
func (r *Route) ExactPath() (path string, exact bool) {
	if r.Path != "" {
		return r.Path, true
	}
	return r.Prefix, false
}

// MatchKey identifies what a route matches: two routes with equal keys
// could never both be reachable, so ctrl refuses the second. Methods and
// headers are order-independent.
func (r *Route) MatchKey() string {
	p, exact := r.ExactPath()
	var b strings.Builder
	b.WriteString(r.Host)
	b.WriteByte(0)
	if exact {
		b.WriteByte('=')
	}
	b.WriteString(p)
	methods := slices.Compact(slices.Sorted(slices.Values(r.Methods)))
	for _, m := range methods {
		b.WriteString("\x00m")
		b.WriteString(m)
	}
	hs := slices.Clone(r.Headers)
	slices.SortFunc(hs, func(a, b HeaderMatch) int {
		return strings.Compare(a.Name+"\x00"+a.Value, b.Name+"\x00"+b.Value)
	})
	for _, h := range hs {
		b.WriteString("\x00h")
		b.WriteString(strings.ToLower(h.Name))
		if h.Present {
			b.WriteString("\x00?")
		} else {
			b.WriteString("\x00=")
			b.WriteString(h.Value)
		}
	}
	return b.String()
}

// RetryStatuses returns the status codes in r.On; Validate has checked them.
func (r *Retry) RetryStatuses() []uint16 {
	var out []uint16
	for _, on := range r.On {
		if n, err := strconv.ParseUint(on, 10, 16); err == nil {
			out = append(out, uint16(n))
		}
	}
	return out
}

func checkMethods(c *collector, methods []string) {
	if len(methods) > MaxMethods {
		c.add("methods", fmt.Sprintf("at most %d methods are allowed, got %d", MaxMethods, len(methods)))
		return
	}
	seen := make(map[string]bool, len(methods))
	for i, m := range methods {
		field := fmt.Sprintf("methods[%d]", i)
		switch {
		case m == "":
			c.add(field, "must not be empty")
		case !isToken(m):
			c.add(field, fmt.Sprintf("%q is not an HTTP method token", m))
		case strings.ToUpper(m) != m:
			c.add(field, fmt.Sprintf("%q must be uppercase: methods are case-sensitive and the standard ones are uppercase", m))
		case seen[m]:
			c.add(field, fmt.Sprintf("%q is listed twice", m))
		}
		seen[m] = true
	}
}

func checkHeaderMatches(c *collector, hs []HeaderMatch) {
	if len(hs) > MaxHeaderMatches {
		c.add("headers", fmt.Sprintf("at most %d header conditions are allowed, got %d", MaxHeaderMatches, len(hs)))
		return
	}
	seen := make(map[string]int, len(hs))
	for i, h := range hs {
		field := fmt.Sprintf("headers[%d]", i)
		switch {
		case h.Name == "":
			c.add(field+".name", "required")
			continue
		case !isToken(h.Name):
			c.add(field+".name", fmt.Sprintf("%q is not a header field name", h.Name))
			continue
		case strings.ToLower(h.Name) != h.Name:
			c.add(field+".name", fmt.Sprintf("%q must be lowercase: header names match case-insensitively and are stored lowercase", h.Name))
			continue
		}
		if j, dup := seen[h.Name]; dup {
			c.add(field+".name", fmt.Sprintf("%q already has a condition in headers[%d]", h.Name, j))
			continue
		}
		seen[h.Name] = i
		switch {
		case h.Present && h.Value != "":
			c.add(field, `set either "value" or "present", not both`)
		case !h.Present && h.Value == "":
			c.add(field, `set "value" for an exact match or "present": true for presence`)
		case len(h.Value) > maxHeaderValueLen:
			c.add(field+".value", fmt.Sprintf("must be at most %d bytes, got %d", maxHeaderValueLen, len(h.Value)))
		default:
			for k := 0; k < len(h.Value); k++ {
				if b := h.Value[k]; b < 0x20 && b != '\t' || b == 0x7f {
					c.add(field+".value", fmt.Sprintf("contains a control character (0x%02x) at byte %d", b, k))
					break
				}
			}
			if strings.TrimSpace(h.Value) != h.Value {
				c.add(field+".value", "must not start or end with whitespace: the edge compares the trimmed field value")
			}
		}
	}
}

func checkRetry(c *collector, r *Retry) {
	if r.Attempts > MaxRetryAttempts {
		c.add("retry.attempts", fmt.Sprintf("must be at most %d, got %d", MaxRetryAttempts, r.Attempts))
	}
	if r.Attempts > 0 && len(r.On) == 0 {
		c.add("retry.on", `required when attempts > 0: "connect-failure", "reset" or status codes such as "503"`)
	}
	seen := make(map[string]bool, len(r.On))
	for i, on := range r.On {
		field := fmt.Sprintf("retry.on[%d]", i)
		if seen[on] {
			c.add(field, fmt.Sprintf("%q is listed twice", on))
			continue
		}
		seen[on] = true
		if on == RetryConnectFailure || on == RetryReset {
			continue
		}
		n, err := strconv.ParseUint(on, 10, 16)
		if err != nil || len(on) != 3 || n < 500 || n > 599 {
			c.add(field, fmt.Sprintf(`%q is not "connect-failure", "reset" or a status code from 500 to 599`, on))
		}
	}
}

// isToken reports whether s is an RFC 9110 token.
func isToken(s string) bool {
	for i := 0; i < len(s); i++ {
		b := s[i]
		switch {
		case b >= 'a' && b <= 'z', b >= 'A' && b <= 'Z', b >= '0' && b <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", b) >= 0:
		default:
			return false
		}
	}
	return s != ""
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
		for i, ep := range cl.Endpoints {
			if ep.Weight > MaxWeight {
				c.add(fmt.Sprintf("endpoints[%d].weight", i), fmt.Sprintf("must be from 1 to %d (0 means 1), got %d", MaxWeight, ep.Weight))
			} else if ep.Weight > 1 && cl.LB != LBWeightedRoundRobin {
				c.add(fmt.Sprintf("endpoints[%d].weight", i), `only policy "weighted_round_robin" uses weights`)
			}
		}
	}
	checkTimeout(&c, "connect_timeout_ms", cl.ConnectTimeoutMs)
	switch cl.LB {
	case "", LBRoundRobin, LBWeightedRoundRobin, LBLeastRequest:
		if cl.HashOn != nil {
			c.add("hash_on", `only allowed with "lb": "hash"`)
		}
	case LBHash:
		checkHashOn(&c, cl.HashOn)
	default:
		c.add("lb", fmt.Sprintf(`%q is not a policy: use "round_robin", "weighted_round_robin", "least_request" or "hash"`, cl.LB))
	}
	if cl.Health != nil {
		checkHealth(&c, cl.Health)
	}
	return c.err()
}

func checkHashOn(c *collector, h *HashOn) {
	if h == nil {
		c.add("hash_on", `required with "lb": "hash": {"header": name}, {"cookie": name} or {"source_ip": true}`)
		return
	}
	n := 0
	if h.Header != "" {
		n++
		if !isToken(h.Header) || strings.ToLower(h.Header) != h.Header {
			c.add("hash_on.header", fmt.Sprintf("%q is not a lowercase header field name", h.Header))
		}
	}
	if h.Cookie != "" {
		n++
		if !isToken(h.Cookie) {
			c.add("hash_on.cookie", fmt.Sprintf("%q is not a cookie name", h.Cookie))
		}
	}
	if h.SourceIP {
		n++
	}
	if n != 1 {
		c.add("hash_on", `set exactly one of "header", "cookie" and "source_ip"`)
	}
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
		// A wildcard names a domain; each subdomain at any depth matches.
		if reason := hostnameProblem(host[2:]); reason != "" {
			c.add(field, "wildcard domain "+reason)
		} else if strings.ToLower(host) != host {
			c.add(field, "must be lowercase: the edge lowercases the request host before matching, so this route could never match")
		}
		return
	case strings.Contains(host, "*"):
		c.add(field, `"*" may only be the whole host or start a "*." wildcard`)
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
	case strings.Contains(p, "/.;"):
		c.add(field, `must not contain a "." segment with ";" parameters: the edge refuses such request paths (servlet containers resolve them), so the route could never match`)
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
