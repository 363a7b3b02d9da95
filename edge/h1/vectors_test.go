package h1

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// vectorsDir holds public test vectors copied from their upstream repositories;
// testdata/vectors/SOURCES.md names each source, commit and license.
const vectorsDir = "testdata/vectors"

type llhttpCase struct {
	Source  string `json:"source"`
	Line    int    `json:"line"`
	Name    string `json:"name"`
	Type    string `json:"type"`
	Mode    string `json:"mode"`
	Raw     string `json:"raw_b64"`
	Verdict string `json:"verdict"`
}

func loadLLHTTP(t *testing.T) []llhttpCase {
	t.Helper()
	f, err := os.Open(filepath.Join(vectorsDir, "llhttp", "llhttp-cases.jsonl"))
	if err != nil {
		t.Skipf("llhttp vectors not available: %v", err)
	}
	defer f.Close()
	var out []llhttpCase
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var c llhttpCase
		if err := json.Unmarshal(sc.Bytes(), &c); err != nil {
			t.Fatalf("llhttp-cases.jsonl: %v", err)
		}
		out = append(out, c)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// runMessages parses every message in raw (heads and bodies) the way the
// proxy does and returns the first error; running out of input is not one.
func runMessages(raw []byte, response bool) error {
	for len(raw) > 0 {
		var body BodyKind
		var cl int64
		var n int
		var err error
		if response {
			var r Response
			n, err = ParseResponse(raw, &r, []byte("GET"))
			body, cl = r.Body, r.ContentLength
		} else {
			var r Request
			n, err = ParseRequest(raw, &r, Limits{})
			switch {
			case r.Chunked:
				body = BodyChunked
			case r.ContentLength >= 0:
				body, cl = BodyLength, r.ContentLength
			}
		}
		if err != nil || n == 0 {
			return err
		}
		raw = raw[n:]
		switch body {
		case BodyLength:
			if int64(len(raw)) < cl {
				return nil
			}
			raw = raw[cl:]
		case BodyChunked:
			var s ChunkedScanner
			m, done, err := s.Scan(raw)
			if err != nil || !done {
				return err
			}
			raw = raw[m:]
		case BodyClose:
			return nil
		}
	}
	return nil
}

// llhttpAcceptExempt lists strict-mode "accept" cases a gateway refuses on
// purpose, with the reason. Cases lacking Host get one injected first.
var llhttpAcceptExempt = map[string]string{
	"Funky `Content-Length` with body":              "GET with content: desync-guardian rates it Ambiguous",
	"`host:port` and basic auth":                    "userinfo in the target, RFC 9110 §4.2.4",
	"Fragment in URI":                               "'#' is not part of a request-target, RFC 9112 §3.2",
	"No HTTP version":                               "HTTP/0.9",
	"SOURCE request":                                "non-HTTP method (Icecast)",
	"SOURCE request with ICE":                       "non-HTTP method and version",
	"OPTIONS request with RTSP":                     "non-HTTP version",
	"ANNOUNCE request with RTSP":                    "non-HTTP method and version",
	"RTSP response":                                 "non-HTTP version",
	"ICE response":                                  "non-HTTP version",
	"HTTP version 0.9":                              "HTTP/0.9 response",
	"M-SEARCH request":                              "asterisk-form is for OPTIONS only, RFC 9112 §3.2.4 (SSDP is not proxied)",
	"POST with `chunked` as last transfer-encoding": "'#' in the request-target",
	"POST with `chunked` as last transfer-encoding (multiple headers)": "'#' in the request-target",
	"curl GET":    "Host 0.0.0.0=5000: sub-delims are in no host name, and backends read them differently",
	"Firefox GET": "Host 0.0.0.0=5000: sub-delims are in no host name, and backends read them differently",
}

// injectHost adds a Host field after the first request line when none of
// the messages carry one (README: most strict "accept" cases omit Host).
func injectHost(raw []byte) []byte {
	if bytes.Contains(bytes.ToLower(raw), []byte("\nhost:")) {
		return raw
	}
	return bytes.ReplaceAll(raw, []byte(" HTTP/1.1\r\n"), []byte(" HTTP/1.1\r\nHost: example.com\r\n"))
}

// TestLLHTTPVectors runs the nodejs/llhttp v9.4.2 test cases
// (test/request/*.md, test/response/*.md, MIT; converted to
// /work/shared/vectors/llhttp/llhttp-cases.jsonl): strict "reject" cases
// must be rejected, strict "accept" cases accepted except llhttpAcceptExempt,
// and inputs llhttp accepts only with a leniency flag must be rejected.
func TestLLHTTPVectors(t *testing.T) {
	var checked int
	for _, c := range loadLLHTTP(t) {
		raw, err := base64.StdEncoding.DecodeString(c.Raw)
		if err != nil {
			t.Fatalf("%s:%d: %v", c.Source, c.Line, err)
		}
		response := strings.HasPrefix(c.Type, "response")
		if !response && !strings.HasPrefix(c.Type, "request") {
			continue // url and pause cases
		}
		id := fmt.Sprintf("%s:%d %q", c.Source, c.Line, c.Name)
		switch {
		case strings.HasPrefix(c.Mode, "lenient"):
			// lenient:keep-alive is about bytes after "Connection: close";
			// the proxy closes instead of parsing them, so it does not apply.
			if c.Verdict != "accept" || c.Mode == "lenient:keep-alive" {
				continue
			}
			// Accepted by llhttp only with a leniency flag: we must refuse.
			if runMessages(raw, response) == nil {
				t.Errorf("%s (%s): accepted, a strict parser must reject", id, c.Mode)
			}
			checked++
		case c.Mode != "strict":
		case c.Verdict == "reject" || c.Verdict == "reject-later-message":
			if runMessages(raw, response) == nil {
				t.Errorf("%s: accepted, llhttp rejects it", id)
			}
			checked++
		case c.Verdict == "accept":
			if _, ok := llhttpAcceptExempt[c.Name]; ok {
				if runMessages(raw, response) == nil {
					t.Errorf("%s: exempt case accepted; update llhttpAcceptExempt", id)
				}
				continue
			}
			if !response {
				raw = injectHost(raw)
			}
			if err := runMessages(raw, response); err != nil {
				t.Errorf("%s: rejected: %v", id, err)
			}
			checked++
		}
	}
	t.Logf("checked %d llhttp cases", checked)
}

type desyncCase struct {
	Name    string `yaml:"name"`
	URI     string `yaml:"uri"`
	Method  string `yaml:"method"`
	Version string `yaml:"version"`
	Headers []struct {
		Name  string `yaml:"name"`
		Value string `yaml:"value"`
	} `yaml:"headers"`
	Expected struct {
		Tier   string `yaml:"tier"`
		Reason string `yaml:"reason"`
	} `yaml:"expected"`
}

// desyncCompliantExempt lists Compliant cases refused on purpose.
var desyncCompliantExempt = map[string]string{
	"TE with custom parameters OK":                         "parameters on a transfer coding are refused",
	"Transfer-Encoding with a param: chunked;custom_param": "parameters on a transfer coding are refused",
	"Compliant URL":        "'#' and raw '\\'/'\"' quirks in the target; '#' is refused",
	"International in URI": "raw non-ASCII bytes in the target (llhttp strict refuses them too)",
	"Empty URI":            "an empty request-target is not a request-target",
	// A coding other than chunked gets 501: the edge forwards codings as
	// received, and the next hop may frame a list differently (gunicorn
	// before 22 read no body for "identity, chunked", CVE-2024-1135).
	"Correct TE OK": "a coding other than chunked gets 501",
	"Transfer-Encoding: identity and chunked OK":                "a coding other than chunked gets 501",
	"Multiple transfer encoding headers in a single request OK": "a coding other than chunked gets 501",
	"Different Transfer-Encoding headers":                       "a coding other than chunked gets 501",
	"Different Transfer-Encoding headers combined":              "a coding other than chunked gets 501",
}

// TestDesyncGuardianVectors rebuilds the aws/http-desync-guardian
// (Apache-2.0) tests/*.yaml requests as raw bytes: every Severe or Ambiguous
// case must be rejected; Compliant ones must parse unless exempt. Acceptable
// ones (non-compliant but harmless to that library) are only counted: we
// refuse most of them, e.g. whitespace before the colon.
func TestDesyncGuardianVectors(t *testing.T) {
	files, _ := filepath.Glob(filepath.Join(vectorsDir, "http-desync-guardian", "tests", "*.yaml"))
	if len(files) == 0 {
		t.Skip("desync-guardian vectors not available")
	}
	var rejected, accepted, refusedAcceptable int
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var cases []desyncCase
		if err := yaml.Unmarshal(data, &cases); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		for _, c := range cases {
			var b strings.Builder
			b.WriteString(c.Method + " " + c.URI)
			if c.Version != "" {
				b.WriteString(" " + c.Version)
			}
			b.WriteString("\r\n")
			hasHost := false
			for _, h := range c.Headers {
				hasHost = hasHost || strings.EqualFold(h.Name, "host")
				b.WriteString(h.Name + ":" + h.Value + "\r\n")
			}
			if !hasHost {
				b.WriteString("Host: example.com\r\n")
			}
			b.WriteString("\r\n")
			var r Request
			n, err := ParseRequest([]byte(b.String()), &r, Limits{})
			id := fmt.Sprintf("%s %q (%s/%s)", filepath.Base(f), c.Name, c.Expected.Tier, c.Expected.Reason)
			switch c.Expected.Tier {
			case "Severe", "Ambiguous":
				if err == nil {
					t.Errorf("%s: accepted (n=%d)", id, n)
				}
				rejected++
			case "Compliant":
				_, exempt := desyncCompliantExempt[c.Name]
				if ok := err == nil && n > 0; ok == exempt {
					t.Errorf("%s: n=%d err=%v exempt=%v", id, n, err, exempt)
				}
				accepted++
			case "Acceptable":
				if err != nil {
					refusedAcceptable++
				}
			default:
				t.Errorf("%s: unknown tier", id)
			}
		}
	}
	t.Logf("desync-guardian: %d must-reject, %d compliant, %d Acceptable refused", rejected, accepted, refusedAcceptable)
}
