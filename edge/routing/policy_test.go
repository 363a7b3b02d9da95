package routing

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/snapgate/snapgate/edge/auth"
	"github.com/snapgate/snapgate/edge/upstream"
	"github.com/snapgate/snapgate/fbs"
)

type fields map[string]string

func (f fields) Header(name []byte) ([]byte, bool) {
	v, ok := f[string(name)]
	return []byte(v), ok
}

var hsKeySet = []byte(`{"keys":[{"kty":"oct","alg":"HS256","kid":"k","k":"` +
	base64.RawURLEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef")) + `"}]}`)

// policyState is a snapshot with a route per way of getting a policy:
// its own, its cluster's, the global one.
func policyState(a fbs.Auth, fleet uint32) fbs.State {
	return fbs.State{
		Version: 1, FleetSize: fleet, Auth: a, GlobalPolicy: "global",
		Clusters: []fbs.Cluster{
			{Name: "guarded", Endpoints: []fbs.Endpoint{{Address: "127.0.0.1:1"}}, Policy: "cluster"},
			{Name: "plain", Endpoints: []fbs.Endpoint{{Address: "127.0.0.1:2"}}},
		},
		Routes: []fbs.Route{
			{ID: "own", Host: "a.example", Prefix: "/own", Cluster: "guarded", Policy: "route"},
			{ID: "by-cluster", Host: "a.example", Prefix: "/cluster", Cluster: "guarded"},
			{ID: "by-global", Host: "a.example", Prefix: "/global", Cluster: "plain"},
		},
	}
}

func testAuth() fbs.Auth {
	return fbs.Auth{
		Consumers: []fbs.Consumer{
			{ID: "alice", Groups: []string{"staff"}, APIKeyHashes: [][32]byte{sha256.Sum256([]byte("key-alice"))},
				JWT: []fbs.JWTLink{{Issuer: "idp", Subject: "alice@example.com"}}},
			{ID: "bob", APIKeyHashes: [][32]byte{sha256.Sum256([]byte("key-bob"))}},
		},
		Issuers: []fbs.Issuer{{ID: "idp", Iss: "https://idp.example", KeySet: hsKeySet}},
		Policies: []fbs.Policy{
			{ID: "cluster", Methods: fbs.AuthAPIKey, Required: true, AllowGroups: []string{"staff"}},
			{ID: "global", RateLimits: []fbs.RateLimit{{Key: fbs.LimitByIP, Rate: 10, Burst: 5}}},
			{ID: "route", Methods: fbs.AuthAPIKey | fbs.AuthJWT, ConsumerHeader: "X-User", KeepCredentials: true,
				RateLimits: []fbs.RateLimit{
					{Key: fbs.LimitByConsumer, Rate: 100, Burst: 20},
					{Key: fbs.LimitByHeader, Header: "x-tenant", Rate: 300, Burst: 30, ClusterScope: true},
				}},
		},
	}
}

func newPolicyTable(t *testing.T, st fbs.State) (*Table, *upstream.Registry) {
	t.Helper()
	_, snap := openState(t, st)
	reg := upstream.NewRegistry(upstream.Options{})
	t.Cleanup(reg.Close)
	return NewTable(snap, nil, reg), reg
}

// openState builds st and opens it, returning the bytes and the snapshot.
func openState(t *testing.T, st fbs.State) ([]byte, *fbs.Snapshot) {
	t.Helper()
	b, err := fbs.Build(st)
	if err != nil {
		t.Fatal(err)
	}
	snap, err := fbs.Open(b)
	if err != nil {
		t.Fatal(err)
	}
	return b, snap
}

func TestPolicyForRoute(t *testing.T) {
	tab, _ := newPolicyTable(t, policyState(testAuth(), 3))
	defer tab.Release()
	if err := tab.Err(); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]string{"/own": "route", "/cluster": "cluster", "/global": "global"} {
		var m fbs.Match
		if !tab.Route([]byte("a.example"), []byte(path), &m) {
			t.Fatalf("%s: no route", path)
		}
		pi := tab.PolicyFor(&m)
		if pi < 0 || tab.Policy(pi).ID != want {
			t.Errorf("%s: policy %d, want %q", path, pi, want)
		}
	}

	// Without a global policy, a route in a cluster without one has none.
	st := policyState(testAuth(), 1)
	st.GlobalPolicy = ""
	tab2, _ := newPolicyTable(t, st)
	defer tab2.Release()
	var m fbs.Match
	if !tab2.Route([]byte("a.example"), []byte("/global"), &m) || tab2.PolicyFor(&m) != -1 {
		t.Fatalf("route without any policy resolved to %d", tab2.PolicyFor(&m))
	}
}

func TestPolicyCompiled(t *testing.T) {
	tab, _ := newPolicyTable(t, policyState(testAuth(), 3))
	defer tab.Release()
	byID := map[string]*Policy{}
	for i := range tab.NumPolicies() {
		byID[tab.Policy(i).ID] = tab.Policy(i)
	}
	route, global, cluster := byID["route"], byID["global"], byID["cluster"]

	if global.AuthIndex != -1 {
		t.Errorf("rate-limit-only policy has auth index %d, want -1", global.AuthIndex)
	}
	if string(global.ConsumerHeader) != DefaultConsumerHeader || string(route.ConsumerHeader) != "X-User" || !route.KeepCredentials {
		t.Errorf("forward settings: %q %q keep=%v", global.ConsumerHeader, route.ConsumerHeader, route.KeepCredentials)
	}
	// Consumer indexes, key hashes and JWT subjects reached the auth table.
	var d auth.Decision
	now := time.Now()
	tab.Auth().Authenticate(route.AuthIndex, fields{"x-api-key": "key-bob"}, now, &d)
	if d.Status != 0 || d.ConsumerID != "bob" {
		t.Fatalf("api key: %+v", d)
	}
	tab.Auth().Authenticate(cluster.AuthIndex, fields{"x-api-key": "key-bob"}, now, &d)
	if d.Status != 403 {
		t.Fatalf("bob is not staff, got %+v", d)
	}
	tok := signHS256(t, `{"alg":"HS256","kid":"k"}`, `{"iss":"https://idp.example","sub":"alice@example.com","exp":`+itoa(now.Add(time.Hour).Unix())+`}`)
	tab.Auth().Authenticate(route.AuthIndex, fields{"authorization": "Bearer " + tok}, now, &d)
	if d.Status != 0 || d.ConsumerID != "alice" {
		t.Fatalf("jwt: %+v", d)
	}

	// Names, and the cluster-scope limit's per-edge share: 300/3 per
	// second, ceil(30/3) burst, 1 s to refill.
	if len(route.Limits) != 2 {
		t.Fatalf("%d limits", len(route.Limits))
	}
	if got := route.Limits[0].Policy; got != `"route/consumer";q=20;w=1` {
		t.Errorf("consumer limit %s", got)
	}
	if l := route.Limits[1]; l.Policy != `"route/header:x-tenant";q=10;w=1` || string(l.Header) != "x-tenant" || l.Key != fbs.LimitByHeader {
		t.Errorf("cluster limit %s header %q", l.Policy, l.Header)
	}
}

func TestUnenforceablePolicyRefused(t *testing.T) {
	for name, tc := range map[string]struct {
		edit func(*fbs.Auth)
		want string
	}{
		"bad key set": {func(a *fbs.Auth) {
			a.Issuers[0].KeySet = []byte(`{"keys":[{"kty":"oct","alg":"HS256","k":"c2hvcnQ"}]}`)
		}, `issuer "idp": keys`},
		"consumer id with a newline": {func(a *fbs.Auth) { a.Consumers[1].ID = "bob\r\nX-Admin: 1" }, "visible ASCII"},
		"bad password hash": {func(a *fbs.Auth) {
			a.Consumers[1].Basic = []fbs.BasicCredential{{Username: "bob", PasswordHash: "plain"}}
		}, "password hash"},
	} {
		t.Run(name, func(t *testing.T) {
			a := testAuth()
			tc.edit(&a)
			reg := upstream.NewRegistry(upstream.Options{})
			defer reg.Close()
			var h Holder
			good, _ := newPolicyTable(t, policyState(testAuth(), 1))
			if _, err := h.Swap(good); err != nil {
				t.Fatal(err)
			}
			defer h.Close()

			released := 0
			st := policyState(a, 1)
			st.Version = 2
			b, err := fbs.Build(st)
			if err != nil {
				t.Fatal(err)
			}
			snap, err := fbs.Open(b)
			if err != nil {
				t.Fatal(err)
			}
			bad := NewTable(snap, func() { released++ }, reg)
			_, err = h.Swap(bad)
			if !errors.Is(err, ErrPolicy) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Swap: %v, want ErrPolicy mentioning %q", err, tc.want)
			}
			if h.Version() != 1 {
				t.Fatalf("version %d in service after a refused swap, want 1", h.Version())
			}
			if _, ok := bad.Pick(0); ok {
				t.Fatal("a refused table picks endpoints")
			}
			bad.Release()
			if released != 1 {
				t.Fatalf("release ran %d times", released)
			}
		})
	}
}

func signHS256(t *testing.T, hdr, claims string) string {
	t.Helper()
	enc := base64.RawURLEncoding.EncodeToString
	in := enc([]byte(hdr)) + "." + enc([]byte(claims))
	m := hmac.New(sha256.New, []byte("0123456789abcdef0123456789abcdef"))
	m.Write([]byte(in))
	return in + "." + enc(m.Sum(nil))
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

// FuzzPolicyCompile feeds snapshot auth fields that ctrl validates but an
// edge must not trust: compiling never panics, and a table that compiled
// only ever carries ids and header names that are safe to put in a head.
func FuzzPolicyCompile(f *testing.F) {
	f.Add(string(hsKeySet), "X-User", "alice", "route", "x-tenant")
	f.Add(`{"keys":[]}`, "Content-Length", "bob\r\nX: 1", "p\"q", "")
	f.Add(`not json`, "", "", "", "X-Tenant")
	f.Fuzz(func(t *testing.T, keySet, consumerHeader, consumerID, policyID, header string) {
		a := testAuth()
		a.Issuers[0].KeySet = []byte(keySet)
		a.Consumers[1].ID = consumerID
		a.Policies[2].ID = policyID
		a.Policies[2].ConsumerHeader = consumerHeader
		a.Policies[2].RateLimits[1].Header = header
		st := policyState(a, 1)
		st.Routes[0].Policy = policyID
		b, err := fbs.Build(st)
		if err != nil {
			return // ctrl's builder refuses it; nothing reaches an edge
		}
		snap, err := fbs.Open(b)
		if err != nil {
			t.Fatalf("Build output does not open: %v", err)
		}
		reg := upstream.NewRegistry(upstream.Options{})
		defer reg.Close()
		tab := NewTable(snap, nil, reg)
		defer tab.Release()
		if tab.Err() != nil {
			if !errors.Is(tab.Err(), ErrPolicy) {
				t.Fatalf("compile error without ErrPolicy: %v", tab.Err())
			}
			return
		}
		for i := range tab.NumPolicies() {
			p := tab.Policy(i)
			if !visibleASCII(p.ID) || !isToken(string(p.ConsumerHeader)) || fbs.ReservedHeader(string(p.ConsumerHeader), "") {
				t.Fatalf("unsafe policy compiled: %q header %q", p.ID, p.ConsumerHeader)
			}
		}
	})
}

// A swap to a snapshot with the same auth section keeps the authentication
// table, and with it the verdict caches and the password-check budget: a
// snapshot that changed only routes or health used to start them over, so
// every Basic credential cost a PBKDF2 run per version. Another auth
// section gets its own table.
func TestSwapKeepsAuthTable(t *testing.T) {
	var h Holder
	defer h.Close()
	// v1's bytes are wiped when it retires, as the edge unmaps them: the
	// kept auth table must not read them.
	b1, snap1 := openState(t, policyState(testAuth(), 1))
	reg := upstream.NewRegistry(upstream.Options{})
	defer reg.Close()
	v1 := NewTable(snap1, func() { clear(b1) }, reg)
	if _, err := h.Swap(v1); err != nil {
		t.Fatal(err)
	}
	first := v1.Auth()
	st := policyState(testAuth(), 1)
	st.Version = 2
	st.Routes = append(st.Routes, fbs.Route{ID: "more", Host: "b.example", Prefix: "/", Cluster: "plain"})
	v2, _ := newPolicyTable(t, st)
	if v2.Auth() == first {
		t.Fatal("a new table's auth table is the old one before the swap")
	}
	if _, err := h.Swap(v2); err != nil {
		t.Fatal(err)
	}
	if v2.Auth() != first {
		t.Error("a swap that changed only routes replaced the auth table")
	}
	// v1 has retired (its bytes are zero now); v2 authenticates with the
	// table compiled from them.
	var d auth.Decision
	v2.Auth().Authenticate(v2.Policy(0).AuthIndex, fields{"x-api-key": "key-alice"}, time.Now(), &d)
	if d.Status != 0 || d.ConsumerID != "alice" {
		t.Fatalf("alice's key after v1 retired: %+v", d)
	}
	a := testAuth()
	a.Consumers[1].Groups = []string{"staff"}
	st = policyState(a, 1)
	st.Version = 3
	v3, _ := newPolicyTable(t, st)
	if _, err := h.Swap(v3); err != nil {
		t.Fatal(err)
	}
	if v3.Auth() == first {
		t.Error("a swap that changed a consumer kept the old auth table")
	}
	v3.Auth().Authenticate(v3.Policy(0).AuthIndex, fields{"x-api-key": "key-bob"}, time.Now(), &d)
	if d.Status != 0 || d.ConsumerID != "bob" {
		t.Fatalf("bob, staff in v3, under the staff-only policy: %+v", d)
	}
}
