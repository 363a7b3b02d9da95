package loadtest

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"
)

// buildRequests renders one complete request per path up front, so sending a
// request is a single Write of bytes that never change.
func buildRequests(c *Config) ([][]byte, error) {
	if c.Method == "" {
		return nil, fmt.Errorf("config: method is empty")
	}
	for i := 0; i < len(c.Method); i++ {
		if !isTokenChar(c.Method[i]) {
			return nil, fmt.Errorf("config: method %q: invalid character %q", c.Method, c.Method[i])
		}
	}
	if err := checkFieldValue("host", c.Host); err != nil {
		return nil, err
	}
	if c.Host == "" {
		return nil, fmt.Errorf("config: host is empty")
	}
	for _, h := range c.Headers {
		if h[0] == "" {
			return nil, fmt.Errorf("config: header %q: empty name", h[0]+": "+h[1])
		}
		for i := 0; i < len(h[0]); i++ {
			if !isTokenChar(h[0][i]) {
				return nil, fmt.Errorf("config: header name %q: invalid character %q", h[0], h[0][i])
			}
		}
		switch strings.ToLower(h[0]) {
		case "host", "content-length", "transfer-encoding":
			return nil, fmt.Errorf("config: header %q is set by the client (use Host / Body)", h[0])
		}
		if err := checkFieldValue("header "+h[0], h[1]); err != nil {
			return nil, err
		}
	}
	if len(c.Paths) == 0 {
		return nil, fmt.Errorf("config: no paths")
	}
	sendLength := len(c.Body) > 0
	switch c.Method {
	case "POST", "PUT", "PATCH":
		sendLength = true // these announce an empty body explicitly (RFC 9110 §8.6)
	}
	reqs := make([][]byte, len(c.Paths))
	for i, p := range c.Paths {
		if err := checkPath(p); err != nil {
			return nil, err
		}
		var b bytes.Buffer
		b.WriteString(c.Method)
		b.WriteByte(' ')
		b.WriteString(p)
		b.WriteString(" HTTP/1.1\r\nHost: ")
		b.WriteString(c.Host)
		b.WriteString("\r\n")
		for _, h := range c.Headers {
			b.WriteString(h[0])
			b.WriteString(": ")
			b.WriteString(h[1])
			b.WriteString("\r\n")
		}
		if sendLength {
			b.WriteString("Content-Length: ")
			b.WriteString(strconv.Itoa(len(c.Body)))
			b.WriteString("\r\n")
		}
		b.WriteString("\r\n")
		b.Write(c.Body)
		reqs[i] = b.Bytes()
	}
	return reqs, nil
}

// checkPath accepts an origin-form request target ("/a?b") or an
// absolute-form one ("http://h/a"): no spaces, controls or non-ASCII bytes.
func checkPath(p string) error {
	if !strings.HasPrefix(p, "/") && !strings.HasPrefix(p, "http://") && !strings.HasPrefix(p, "https://") {
		return fmt.Errorf("config: path %q: must start with / (or be an absolute http:// URL)", p)
	}
	for i := 0; i < len(p); i++ {
		if c := p[i]; c <= ' ' || c >= 0x7f {
			return fmt.Errorf("config: path %q: invalid byte %q at %d (escape it)", p, c, i)
		}
	}
	return nil
}

func checkFieldValue(what, v string) error {
	for i := 0; i < len(v); i++ {
		if c := v[i]; (c < ' ' && c != '\t') || c == 0x7f {
			return fmt.Errorf("config: %s value %q: control byte %q at %d", what, v, c, i)
		}
	}
	return nil
}
