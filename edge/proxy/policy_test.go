package proxy

import (
	"bufio"
	"crypto"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/snapgate/snapgate/edge/telemetry"
	"github.com/snapgate/snapgate/edge/upstream"
	"github.com/snapgate/snapgate/fbs"
)

// recorder is a backend that answers with what it received, so a test
// sees exactly which fields went upstream.
type recorder struct {
	name string
	hits atomic.Int64
	srv  *httptest.Server
}

func newRecorder(t *testing.T, name string) *recorder {
	r := &recorder{name: name}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, q *http.Request) {
		r.hits.Add(1)
		fmt.Fprintf(w, "backend=%s uri=%s host=%s consumer=%q user=%q authorization=%q key=%q",
			r.name, q.RequestURI, q.Host, q.Header.Values("X-Consumer-Id"), q.Header.Values("X-User"),
			q.Header.Values("Authorization"), q.Header.Values("X-Api-Key"))
	}))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *recorder) addr() string { return r.srv.Listener.Addr().String() }

var (
	policyRSAOnce sync.Once
	policyRSA     *rsa.PrivateKey
)

func rsaKey(t testing.TB) *rsa.PrivateKey {
	policyRSAOnce.Do(func() {
		var err error
		if policyRSA, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			panic(err)
		}
	})
	return policyRSA
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func rsaKeySet(t testing.TB) []byte {
	pub := rsaKey(t).PublicKey
	return []byte(fmt.Sprintf(`{"keys":[{"kty":"RSA","alg":"RS256","kid":"r1","n":%q,"e":"AQAB"}]}`, b64(pub.N.Bytes())))
}

// jwt signs claims with alg: RS256 with the test key, HS256 with secret,
// "none" with nothing.
func jwt(t testing.TB, alg, claims string, secret []byte) string {
	in := b64([]byte(`{"alg":"`+alg+`","kid":"r1","typ":"JWT"}`)) + "." + b64([]byte(claims))
	switch alg {
	case "RS256":
		h := sha256.Sum256([]byte(in))
		sig, err := rsa.SignPKCS1v15(rand.Reader, rsaKey(t), crypto.SHA256, h[:])
		if err != nil {
			t.Fatal(err)
		}
		return in + "." + b64(sig)
	case "HS256":
		m := hmac.New(sha256.New, secret)
		m.Write([]byte(in))
		return in + "." + b64(m.Sum(nil))
	}
	return in + "."
}

func claims(sub, aud string, exp time.Time) string {
	return fmt.Sprintf(`{"iss":"https://idp.example","sub":%q,"aud":%q,"exp":%d}`, sub, aud, exp.Unix())
}

// policyGateway runs a proxy with protected routes on a.example in front
// of the secure backend and a catch-all open route in front of another.
func policyGateway(t *testing.T) (addr string, secure, open *recorder, m *telemetry.Metrics) {
	secure, open = newRecorder(t, "secure"), newRecorder(t, "open")
	hash := func(k string) [32]byte { return sha256.Sum256([]byte(k)) }
	st := fbs.State{
		Version: 1,
		Auth: fbs.Auth{
			Consumers: []fbs.Consumer{
				{ID: "alice", Groups: []string{"staff"}, APIKeyHashes: [][32]byte{hash("key-alice")},
					JWT: []fbs.JWTLink{{Issuer: "idp", Subject: "alice@example.com"}}},
				{ID: "bob", APIKeyHashes: [][32]byte{hash("key-bob")}},
			},
			Issuers: []fbs.Issuer{{ID: "idp", Iss: "https://idp.example", Audiences: []string{"api"},
				Algorithms: []string{"RS256"}, KeySet: rsaKeySet(t), ClockSkewMs: 1000}},
			Policies: []fbs.Policy{
				{ID: "p-key", Methods: fbs.AuthAPIKey, Required: true},
				{ID: "p-jwt", Methods: fbs.AuthJWT, Required: true},
				{ID: "p-staff", Methods: fbs.AuthAPIKey, AllowGroups: []string{"staff"}, ConsumerHeader: "X-User", KeepCredentials: true},
				{ID: "p-optional", Methods: fbs.AuthAPIKey},
				{ID: "p-limit", RateLimits: []fbs.RateLimit{{Key: fbs.LimitByIP, Rate: 1, Burst: 2}}},
				{ID: "p-busy", RateLimits: []fbs.RateLimit{{Key: fbs.LimitByRoute, Rate: 100, Burst: 10}}},
				{ID: "p-tenant", RateLimits: []fbs.RateLimit{{Key: fbs.LimitByHeader, Header: "x-tenant", Rate: 1, Burst: 1}}},
			},
		},
		Clusters: []fbs.Cluster{
			{Name: "secure", Endpoints: []fbs.Endpoint{{Address: secure.addr()}}},
			{Name: "open", Endpoints: []fbs.Endpoint{{Address: open.addr()}}},
		},
		Routes: []fbs.Route{
			{ID: "admin", Host: "a.example", Prefix: "/admin", Cluster: "secure", Policy: "p-key"},
			{ID: "jwt", Host: "a.example", Prefix: "/jwt", Cluster: "secure", Policy: "p-jwt"},
			{ID: "staff", Host: "a.example", Prefix: "/staff", Cluster: "secure", Policy: "p-staff"},
			{ID: "optional", Host: "a.example", Prefix: "/optional", Cluster: "secure", Policy: "p-optional"},
			{ID: "limited", Host: "a.example", Prefix: "/limited", Cluster: "secure", Policy: "p-limit"},
			{ID: "busy", Host: "a.example", Prefix: "/busy", Cluster: "secure", Policy: "p-busy"},
			{ID: "tenant", Host: "a.example", Prefix: "/tenant", Cluster: "secure", Policy: "p-tenant"},
			{ID: "any", Host: "*", Prefix: "/", Cluster: "open"},
		},
	}
	addr, m = startProxy(t, st, nil)
	return addr, secure, open, m
}

func dialProxy(t *testing.T, addr string) *client {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	t.Cleanup(func() { c.Close() })
	return &client{t: t, c: c, br: bufio.NewReader(c)}
}

func request(path string, fields ...string) string {
	return "GET " + path + " HTTP/1.1\r\nHost: a.example\r\n" + strings.Join(fields, "") + "\r\n"
}

// refused checks a policy refusal's status, JSON body and content type.
func refused(t *testing.T, r result, status int, code, reason string) {
	t.Helper()
	want := `{"error":"` + code + `","reason":"` + reason + `"}`
	if r.status != status || r.body != want || r.header.Get("Content-Type") != "application/json" {
		t.Fatalf("got %d %q (%s), want %d %s", r.status, r.body, r.header.Get("Content-Type"), status, want)
	}
}

// TestTrailerCannotCarryPolicyFields: what a policy strips from the head
// (any policy's consumer header, the request's credential field) may not
// come behind a chunked body either: a backend that merges trailers into
// the header section would take the client's X-User for the edge's. Such a
// request is refused (400, nothing reaches the backend); other trailers
// pass.
func TestTrailerCannotCarryPolicyFields(t *testing.T) {
	addr, secure, _, _ := policyGateway(t)
	post := func(trailer string) string {
		return "POST /admin HTTP/1.1\r\nHost: a.example\r\nX-Api-Key: key-bob\r\nTransfer-Encoding: chunked\r\n\r\n" +
			"1\r\na\r\n0\r\n" + trailer + "\r\n"
	}
	for _, trailer := range []string{"X-User: alice\r\n", "x_user: alice\r\n", "X-Api-Key: key-alice\r\n",
		"X-Consumer-Id: alice\r\n", "X-Checksum: 1\r\n" + strings.Repeat("x", maxTrailerNameForTest+1) + ": long\r\n"} {
		before := secure.hits.Load()
		c := dialProxy(t, addr)
		r := c.do(post(trailer))
		if r.status != 400 || !r.close {
			t.Errorf("trailer %q: %d %q close=%v, want 400 and close", trailer, r.status, r.body, r.close)
		}
		if n := secure.hits.Load() - before; n != 0 {
			t.Errorf("trailer %q: the backend got %d requests", trailer, n)
		}
	}
	c := dialProxy(t, addr)
	if r := c.do(post("X-Checksum: 1\r\n")); r.status != 200 || !strings.Contains(r.body, `consumer=["bob"]`) {
		t.Fatalf("an ordinary trailer: %d %q", r.status, r.body)
	}
	// A second credential behind the body, where the head's would be a
	// 401: under keep_credentials (the key is forwarded, so not stripped)
	// and under a JWT policy (which reads the key header too).
	tok := jwt(t, "RS256", claims("alice@example.com", "api", time.Now().Add(time.Hour)), nil)
	for _, req := range []string{
		"POST /staff HTTP/1.1\r\nHost: a.example\r\nX-Api-Key: key-alice\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\nX-Api-Key: key-bob\r\n\r\n",
		"POST /jwt HTTP/1.1\r\nHost: a.example\r\nAuthorization: Bearer " + tok + "\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\nX-Api-Key: key-bob\r\n\r\n",
	} {
		before := secure.hits.Load()
		if r := dialProxy(t, addr).do(req); r.status != 400 || secure.hits.Load() != before {
			t.Errorf("a second credential in the trailer of %q: %d %q", req[:strings.Index(req, " HTTP")], r.status, r.body)
		}
	}
}

// maxTrailerNameForTest is h1's maxTrailerName: a longer trailer name
// cannot be checked against a policy, so it is refused.
const maxTrailerNameForTest = 128

// TestProtectedRouteSpellings: no spelling of a protected route's host or
// path reaches its backend without credentials. Spellings that the edge
// normalises to the route get its 401; the others go to the route they
// match, and the backend receives what that route received, never the
// protected path.
func TestProtectedRouteSpellings(t *testing.T) {
	addr, secure, open, _ := policyGateway(t)
	for _, raw := range []string{
		request("/admin"),
		request("/admin/x"),
		request("/./admin"),
		request("/x/../admin"),
		request("/admin/."),
		request("//admin"),
		request("/admin//x"),
		request("/%61dmin"),
		request("/%2e/admin"),
		request("/admin?x=/open"),
		"GET /admin HTTP/1.1\r\nHost: A.EXAMPLE\r\n\r\n",
		"GET /admin HTTP/1.1\r\nHost: a.example.\r\n\r\n",
		"GET /admin HTTP/1.1\r\nHost: a.example:8080\r\n\r\n",
		"GET /admin HTTP/1.1\r\nHost: A.Example.:80\r\n\r\n",
		"GET http://a.example/admin HTTP/1.1\r\nHost: other.example\r\n\r\n",
		"GET http://A.EXAMPLE./%61dmin HTTP/1.1\r\nHost: a.example\r\n\r\n",
		"GET /admin HTTP/1.0\r\nHost: a.example\r\n\r\n",
	} {
		r := dialProxy(t, addr).do(raw)
		if r.status != 401 {
			t.Errorf("%q: status %d %q, want 401", raw, r.status, r.body)
		}
	}
	// Malformed spellings never reach routing.
	for _, raw := range []string{
		request("/admin%2Fx"),
		request("/%2Fadmin"),
		request("/admin%5Cx"),
		request("/%zzadmin"),
		request("/%2E%2E/admin"),
		"GET /admin HTTP/1.1\r\nHost: a.example\r\nHost: other.example\r\n\r\n",
		"GET /admin HTTP/1.1\r\nHost: other.example\r\nHost: a.example\r\n\r\n",
		"GET /admin HTTP/1.1\r\nHost: a.example..\r\n\r\n",
		"GET /admin\\x HTTP/1.1\r\nHost: a.example\r\n\r\n",
	} {
		if r := dialProxy(t, addr).do(raw); r.status != 400 {
			t.Errorf("%q: status %d %q, want 400", raw, r.status, r.body)
		}
	}
	if n := secure.hits.Load(); n != 0 {
		t.Fatalf("the protected backend got %d requests without credentials", n)
	}
	// Other spellings are other routes: the open backend gets them as
	// they were routed, so it is never told it serves /admin on a.example.
	for raw, want := range map[string]string{
		request("/ADMIN"):  "uri=/ADMIN host=a.example",
		request("/Admin/"): "uri=/Admin/ host=a.example",
		request("/adminx"): "uri=/adminx host=a.example",
		"GET http://other.example/admin HTTP/1.1\r\nHost: a.example\r\n\r\n": "uri=/admin host=other.example",
		"GET /admin HTTP/1.1\r\nHost: b.example\r\n\r\n":                     "uri=/admin host=b.example",
	} {
		r := dialProxy(t, addr).do(raw)
		if r.status != 200 || !strings.Contains(r.body, "backend=open "+want) {
			t.Errorf("%q: %d %q, want the open backend with %s", raw, r.status, r.body, want)
		}
	}
	if n := secure.hits.Load(); n != 0 {
		t.Fatalf("the protected backend got %d requests without credentials", n)
	}
	if open.hits.Load() != 5 {
		t.Fatalf("open backend hits %d, want 5", open.hits.Load())
	}
}

func TestAPIKeyForwarding(t *testing.T) {
	addr, _, _, m := policyGateway(t)
	c := dialProxy(t, addr)

	r := c.do(request("/admin"))
	refused(t, r, 401, "unauthorized", "credentials required")
	if got := r.header.Get("WWW-Authenticate"); got != `ApiKey realm="snapgate", header="x-api-key"` {
		t.Errorf("challenge %q", got)
	}
	if r.close {
		t.Fatal("a 401 without a body closed the connection")
	}
	refused(t, c.do(request("/admin", "X-Api-Key: wrong\r\n")), 401, "unauthorized", "invalid api key")
	// A credential sent twice is ambiguous: which one would the backend read?
	refused(t, c.do(request("/admin", "X-Api-Key: key-alice\r\n", "X-Api-Key: key-bob\r\n")), 401, "unauthorized", "invalid api key")

	// The consumer header is the edge's: a client's copy never passes,
	// and the key is not forwarded.
	r = c.do(request("/admin", "X-Consumer-Id: mallory\r\n", "x-api-key: key-alice\r\n", "x-consumer-id: eve\r\n"))
	if r.status != 200 || !strings.Contains(r.body, `consumer=["alice"] user=[] authorization=[] key=[]`) {
		t.Fatalf("forwarded %d %q", r.status, r.body)
	}
	// A policy with its own header and keep_credentials.
	r = c.do(request("/staff", "X-User: mallory\r\n", "X-Consumer-Id: eve\r\n", "X-Api-Key: key-alice\r\n"))
	if r.status != 200 || !strings.Contains(r.body, `consumer=[] user=["alice"] authorization=[] key=["key-alice"]`) {
		t.Fatalf("forwarded %d %q", r.status, r.body)
	}
	// Another policy's consumer header is stripped too, under any policy
	// or none: the staff backend trusts X-User whatever route reached it.
	r = c.do(request("/admin", "X-User: alice\r\n", "X-Api-Key: key-bob\r\n"))
	if r.status != 200 || !strings.Contains(r.body, `consumer=["bob"] user=[]`) {
		t.Fatalf("a spoofed X-User under another policy forwarded %d %q", r.status, r.body)
	}
	r = c.do(request("/limited", "x-user: alice\r\n"))
	if r.status != 200 || !strings.Contains(r.body, `user=[]`) {
		t.Fatalf("a spoofed X-User under a rate-limit-only policy forwarded %d %q", r.status, r.body)
	}
	r = c.do("GET /x HTTP/1.1\r\nHost: open.example\r\nX-User: alice\r\n\r\n")
	if r.status != 200 || !strings.Contains(r.body, `user=[]`) {
		t.Fatalf("a spoofed X-User on a route without a policy forwarded %d %q", r.status, r.body)
	}
	// Anonymous on an optional policy: no consumer header at all.
	r = c.do(request("/optional", "X-Consumer-Id: mallory\r\n"))
	if r.status != 200 || !strings.Contains(r.body, `consumer=[]`) {
		t.Fatalf("anonymous forwarded %d %q", r.status, r.body)
	}
	// Routes without a policy drop the default consumer header too.
	r = c.do("GET /x HTTP/1.1\r\nHost: open.example\r\nX-Consumer-Id: mallory\r\n\r\n")
	if r.status != 200 || !strings.Contains(r.body, `backend=open`) || !strings.Contains(r.body, `consumer=[]`) {
		t.Fatalf("open route forwarded %d %q", r.status, r.body)
	}

	// ACL: bob is authenticated but not staff.
	r = c.do(request("/staff", "X-Api-Key: key-bob\r\n"))
	refused(t, r, 403, "forbidden", "consumer not in an allowed group")
	if r.header.Get("WWW-Authenticate") != "" {
		t.Error("a 403 carries a challenge")
	}

	// A refused request with a buffered body keeps the connection; the
	// next request on it is served.
	c.send("POST /admin HTTP/1.1\r\nHost: a.example\r\nContent-Length: 5\r\n\r\nhello")
	refused(t, c.read("POST"), 401, "unauthorized", "credentials required")
	if r := c.do(request("/admin", "X-Api-Key: key-alice\r\n")); r.status != 200 {
		t.Fatalf("after a refused POST: %d %q", r.status, r.body)
	}
	hasSample(t, m, `snapgate_edge_auth_decisions_total{policy="p-key",outcome="401"} 4`)
	hasSample(t, m, `snapgate_edge_auth_decisions_total{policy="p-key",outcome="ok"} 3`)
	hasSample(t, m, `snapgate_edge_auth_decisions_total{policy="p-staff",outcome="403"} 1`)
	hasSample(t, m, `snapgate_edge_errors_total{cause="unauthorized"} 4`)
}

func TestJWTEndToEnd(t *testing.T) {
	addr, secure, _, _ := policyGateway(t)
	now := time.Now()
	pub := rsaKey(t).PublicKey
	for name, tok := range map[string]string{
		"alg none":        jwt(t, "none", claims("alice@example.com", "api", now.Add(time.Hour)), nil),
		"expired":         jwt(t, "RS256", claims("alice@example.com", "api", now.Add(-time.Hour)), nil),
		"wrong audience":  jwt(t, "RS256", claims("alice@example.com", "billing", now.Add(time.Hour)), nil),
		"RS/HS confusion": jwt(t, "HS256", claims("alice@example.com", "api", now.Add(time.Hour)), pub.N.Bytes()),
		"garbage":         "not.a.token",
	} {
		r := dialProxy(t, addr).do(request("/jwt", "Authorization: Bearer "+tok+"\r\n"))
		refused(t, r, 401, "unauthorized", "invalid bearer token")
		if got := r.header.Get("WWW-Authenticate"); got != `Bearer realm="snapgate", error="invalid_token"` {
			t.Errorf("%s: challenge %q", name, got)
		}
		if strings.Contains(r.body, tok) {
			t.Errorf("%s: the body echoes the token", name)
		}
	}
	if secure.hits.Load() != 0 {
		t.Fatalf("invalid tokens reached the backend %d times", secure.hits.Load())
	}
	tok := jwt(t, "RS256", claims("alice@example.com", "api", now.Add(time.Hour)), nil)
	c := dialProxy(t, addr)
	for range 3 { // the first verifies, the others hit the cache
		r := c.do(request("/jwt", "Authorization: Bearer "+tok+"\r\n", "X-Consumer-Id: mallory\r\n"))
		if r.status != 200 || !strings.Contains(r.body, `consumer=["alice"] user=[] authorization=[]`) {
			t.Fatalf("valid token: %d %q", r.status, r.body)
		}
	}
	// A valid token whose subject is no consumer is a 403.
	r := c.do(request("/jwt", "Authorization: Bearer "+jwt(t, "RS256", claims("nobody", "api", now.Add(time.Hour)), nil)+"\r\n"))
	refused(t, r, 403, "forbidden", "token subject is not a known consumer")
}

func TestRateLimitAnswer(t *testing.T) {
	addr, _, _, m := policyGateway(t)
	c := dialProxy(t, addr)
	start := time.Now()
	ok := 0
	var limited result
	for range 10 {
		r := c.do(request("/limited"))
		if r.status == 200 {
			ok++
			continue
		}
		limited = r
		break
	}
	// Burst 2 at 1/s: at most 2 + elapsed seconds (+1 for a partly
	// elapsed interval) pass before the first 429.
	if max := 2 + int(time.Since(start).Seconds()) + 1; ok > max || limited.status == 0 {
		t.Fatalf("%d requests passed before a 429 (at most %d), last %+v", ok, max, limited)
	}
	refused(t, limited, 429, "rate_limited", "rate limit exceeded")
	h := limited.header
	if h.Get("Retry-After") != "1" || h.Get("RateLimit-Policy") != `"p-limit/ip";q=2;w=2` || h.Get("RateLimit") != `"p-limit/ip";r=0;t=1` {
		t.Fatalf("429 fields: Retry-After %q RateLimit-Policy %q RateLimit %q", h.Get("Retry-After"), h.Get("RateLimit-Policy"), h.Get("RateLimit"))
	}
	if limited.close {
		t.Fatal("a 429 closed the connection")
	}
	hasSample(t, m, `snapgate_edge_auth_decisions_total{policy="p-limit",outcome="429"} 1`)
}

// TestRateLimitConcurrent: clients on several connections hammer one
// route-keyed limit (100/s, burst 10); over the run the edge admits at
// most burst + rate·t, and at least the burst.
func TestRateLimitConcurrent(t *testing.T) {
	addr, secure, _, _ := policyGateway(t)
	const workers, each = 8, 200
	var admitted, limited atomic.Int64
	start := time.Now()
	var wg sync.WaitGroup
	for range workers {
		c := dialProxy(t, addr)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range each {
				c.send(request("/busy"))
				resp, err := http.ReadResponse(c.br, nil)
				if err != nil {
					t.Error(err)
					return
				}
				resp.Body.Close()
				switch resp.StatusCode {
				case 200:
					admitted.Add(1)
				case 429:
					limited.Add(1)
				default:
					t.Errorf("status %d", resp.StatusCode)
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start).Seconds()
	bound := 10 + int64(100*elapsed) + 1
	if a := admitted.Load(); a < 10 || a > bound {
		t.Fatalf("admitted %d of %d over %.2fs; want 10 to %d", a, workers*each, elapsed, bound)
	}
	if admitted.Load()+limited.Load() != workers*each || secure.hits.Load() != admitted.Load() {
		t.Fatalf("admitted %d + limited %d != %d, backend saw %d", admitted.Load(), limited.Load(), workers*each, secure.hits.Load())
	}
	t.Logf("admitted %d, limited %d over %.2fs (bound %d)", admitted.Load(), limited.Load(), elapsed, bound)
}

// A header-keyed limit cannot be evaded by sending the header twice: keyed
// by the first copy, fresh junk values each got a bucket of their own while
// a backend reading the last copy served the victim tenant without limit.
// A duplicated header counts as not sent (keyed by client address), and an
// underscore spelling is the same header.
func TestHeaderLimitNotEvadedByDuplicates(t *testing.T) {
	addr, _, _, _ := policyGateway(t)
	c := dialProxy(t, addr)
	admitted := 0
	for i := range 5 {
		r := c.do("GET /tenant HTTP/1.1\r\nHost: a.example\r\nX-Tenant: junk" + strconv.Itoa(i) + "\r\nX-Tenant: victim\r\n\r\n")
		if r.status == 200 {
			admitted++
		}
	}
	if admitted != 1 {
		t.Fatalf("%d of 5 duplicated-header requests admitted at burst 1, want 1", admitted)
	}
	c2 := dialProxy(t, addr)
	if r := c2.do("GET /tenant HTTP/1.1\r\nHost: a.example\r\nX-Tenant: t1\r\n\r\n"); r.status != 200 {
		t.Fatalf("tenant t1's first request: %d", r.status)
	}
	if r := c2.do("GET /tenant HTTP/1.1\r\nHost: a.example\r\nX_Tenant: t1\r\n\r\n"); r.status != 429 {
		t.Fatalf("t1 again, spelled X_Tenant: %d, want 429 (same bucket)", r.status)
	}
}

// Each rate limit of a policy takes its own token, whatever its numbers: an
// edge-wide and a cluster-wide limit on one key shared a bucket (and each
// request took two tokens from it) when the fleet's share came to the
// edge-wide numbers; a limit listed twice is one limit. And a change in the
// fleet's size keeps a cluster-wide limit's buckets at the new share
// instead of starting them full on every edge.
func TestRateLimitIdentity(t *testing.T) {
	be := newRecorder(t, "b")
	state := func(version uint64, fleet uint32, limits ...fbs.RateLimit) fbs.State {
		return fbs.State{Version: version, FleetSize: fleet,
			Auth:     fbs.Auth{Policies: []fbs.Policy{{ID: "p", RateLimits: limits}}},
			Clusters: []fbs.Cluster{{Name: "c", Endpoints: []fbs.Endpoint{{Address: be.addr()}}}},
			Routes:   []fbs.Route{{ID: "r", Host: "a.example", Prefix: "/", Cluster: "c", Policy: "p"}}}
	}
	burst := func(addr string) int {
		c := dialProxy(t, addr)
		ok := 0
		for range 10 {
			switch r := c.do("GET /x HTTP/1.1\r\nHost: a.example\r\n\r\n"); r.status {
			case 200:
				ok++
			case 429:
			default:
				t.Fatalf("status %d %q", r.status, r.body)
			}
		}
		return ok
	}
	edge := fbs.RateLimit{Key: fbs.LimitByIP, Rate: 1, Burst: 4}
	cluster := fbs.RateLimit{Key: fbs.LimitByIP, Rate: 2, Burst: 8, ClusterScope: true} // 1/s, burst 4 per edge of 2
	if addr, _ := startProxy(t, state(1, 2, edge, cluster), nil); burst(addr) != 4 {
		t.Error("an edge-wide limit and a cluster-wide one whose share has the same numbers: each admits 4, together 4")
	}
	if addr, _ := startProxy(t, state(1, 0, edge, edge), nil); burst(addr) != 4 {
		t.Error("a limit listed twice admitted less than its burst")
	}
	g := startGateway(t, state(1, 2, fbs.RateLimit{Key: fbs.LimitByIP, Rate: 2, Burst: 6, ClusterScope: true}), upstream.Options{}, nil)
	if got := burst(g.addr); got != 3 {
		t.Fatalf("fleet of 2, burst 6: %d admitted, want 3", got)
	}
	g.swap(state(2, 3, fbs.RateLimit{Key: fbs.LimitByIP, Rate: 2, Burst: 6, ClusterScope: true}))
	if got := burst(g.addr); got > 0 {
		t.Errorf("right after the fleet grew to 3, the exhausted client got %d more", got)
	}
}
