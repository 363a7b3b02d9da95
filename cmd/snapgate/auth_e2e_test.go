package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// echoCaller is a backend that says which consumer the edge named and
// whether an API key reached it.
func echoCaller(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		fmt.Fprintf(w, "who=%s key=%t", r.Header.Get("X-Consumer-Id"), r.Header.Get("X-Api-Key") != "")
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// call sends GET path through the edge with the given headers.
func (g *gateway) call(path string, headers map[string]string) (*http.Response, string) {
	g.t.Helper()
	req, _ := http.NewRequest("GET", "http://"+g.web+path, nil)
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := (&http.Client{Timeout: 3 * time.Second}).Do(req)
	if err != nil {
		g.t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// TestPolicyEndToEnd: real ctrl and edge processes. An operator creates a
// consumer, has ctrl generate its API key and protects a route with a
// policy; the edge then refuses requests without the key, forwards those
// with it under the consumer's id (the key itself stripped, a spoofed id
// overwritten), rate-limits the consumer, and keeps enforcing all of it
// with ctrl killed.
func TestPolicyEndToEnd(t *testing.T) {
	up := echoCaller(t)
	g := newGateway(t)
	ctrl := g.startCtrl()
	g.startEdge()
	g.mustCtl("cluster", "put", "--id", "app", "--endpoint", up)
	g.mustCtl("route", "put", "--id", "api", "--host", "*", "--prefix", "/api", "--cluster", "app")
	g.mustCtl("route", "put", "--id", "open", "--host", "*", "--prefix", "/open", "--cluster", "app")
	g.mustCtl("consumer", "put", "--id", "alice", "--group", "staff")
	var added struct {
		APIKey string `json:"api_key"`
	}
	if err := json.Unmarshal([]byte(g.mustCtl("-o", "json", "consumer", "add-key", "alice", "--id", "laptop")), &added); err != nil || !strings.HasPrefix(added.APIKey, "sg_") {
		t.Fatalf("add-key: key %q, err %v", added.APIKey, err)
	}
	if out := g.mustCtl("-o", "json", "consumer", "get", "alice"); strings.Contains(out, added.APIKey) {
		t.Fatal("consumer get shows the API key again")
	}
	policy := filepath.Join(g.dir, "policy.json")
	doc := `{"id": "api-policy", "scope": {"route": "api"},
	 "auth": {"methods": ["api_key"], "required": true},
	 "rate_limits": [{"key": "consumer", "rate": 1, "burst": 3}]}`
	if err := os.WriteFile(policy, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	g.mustCtl("policy", "put", "-f", policy, "--expected-version", "0")
	if code, out := g.ctl("policy", "put", "-f", policy, "--expected-version", "0"); code != 1 || !strings.Contains(out, "conflict") {
		t.Fatalf("stale policy put: exit %d %q, want 1 and a conflict", code, out)
	}

	waitFor(t, 5*time.Second, "the policy to reach the edge", func() bool {
		resp, _ := g.call("/api/x", nil)
		return resp.StatusCode == 401
	})
	check := func(stage string) {
		t.Helper()
		resp, body := g.call("/api/x", nil)
		if resp.StatusCode != 401 || resp.Header.Get("WWW-Authenticate") == "" || !strings.Contains(body, `"error":"unauthorized"`) {
			t.Fatalf("%s: no key: %d %q %v", stage, resp.StatusCode, body, resp.Header)
		}
		if resp, _ := g.call("/api/x", map[string]string{"X-Api-Key": added.APIKey + "x"}); resp.StatusCode != 401 {
			t.Fatalf("%s: wrong key: %d", stage, resp.StatusCode)
		}
		if resp, body := g.call("/open/x", map[string]string{"X-Consumer-Id": "mallory"}); resp.StatusCode != 200 || body != "who= key=false" {
			t.Fatalf("%s: unprotected route with a spoofed id: %d %q", stage, resp.StatusCode, body)
		}
		// The bucket holds 3 and refills 1/s: within a short burst of six
		// the consumer gets some through and the rest 429.
		ok, limited := 0, 0
		for range 6 {
			resp, body := g.call("/api/x", map[string]string{"X-Api-Key": added.APIKey, "X-Consumer-Id": "bob"})
			switch resp.StatusCode {
			case 200:
				ok++
				if body != "who=alice key=false" {
					t.Fatalf("%s: upstream saw %q, want alice without the key", stage, body)
				}
			case 429:
				limited++
				if resp.Header.Get("Retry-After") == "" || !strings.Contains(body, `"error":"rate_limited"`) {
					t.Fatalf("%s: 429 without Retry-After or reason: %v %q", stage, resp.Header, body)
				}
			default:
				t.Fatalf("%s: with key: %d %q", stage, resp.StatusCode, body)
			}
		}
		if ok == 0 || limited == 0 {
			t.Fatalf("%s: %d admitted, %d limited; want both", stage, ok, limited)
		}
	}
	check("ctrl up")
	ctrl.kill(syscall.SIGKILL)
	time.Sleep(3 * time.Second) // the bucket refills
	check("ctrl killed")
}
