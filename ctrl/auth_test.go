package ctrl

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/snapgate/snapgate/ctrl/admin"
	"github.com/snapgate/snapgate/ctrl/model"
	"github.com/snapgate/snapgate/fbs"
	"github.com/snapgate/snapgate/store"
)

const hsSecret = "-ebuDNsVZ2iJtoZ-akfXTSCt4UO2cruLCsbWlBinggE"

func issuer(id, iss string) model.JWTIssuer {
	return model.JWTIssuer{ID: id, Issuer: iss, Audiences: []string{"api"}, Algorithms: []string{"HS256"}, ClockSkewMs: 5000,
		Keys: model.JWKSet{Keys: []model.JWK{{Kty: "oct", Alg: "HS256", Kid: "h1", K: hsSecret}}}}
}

// passwordHash is a well-formed PBKDF2 string for pw. ctrl checks the form
// and never verifies, so the tests skip the 600 000 iterations (seconds
// under -race); the digest stands in for the derived key.
func passwordHash(t *testing.T, pw string) string {
	t.Helper()
	d := sha256.Sum256([]byte(pw))
	e := base64.RawStdEncoding
	return fmt.Sprintf("$pbkdf2-sha256$i=%d$%s$%s", model.PasswordIterations, e.EncodeToString(d[:16]), e.EncodeToString(d[:]))
}

// authFixture stores clusters web and api, routes home (web) and v1 (api),
// issuer idp, consumer alice linked to it, and a global, a cluster and a
// route policy.
func authFixture(t *testing.T, h *harness) (last admin.Result) {
	t.Helper()
	cx := ctx(t)
	must := func(r admin.Result, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		last = r
	}
	must(h.c.PutCluster(cx, cluster("web", "10.0.0.1:80"), u64(0)))
	must(h.c.PutCluster(cx, cluster("api", "10.0.0.2:80"), u64(0)))
	must(h.c.PutRoute(cx, model.Route{ID: "home", Host: "*", Prefix: "/", Cluster: "web"}, u64(0)))
	must(h.c.PutRoute(cx, model.Route{ID: "v1", Host: "*", Prefix: "/v1", Cluster: "api"}, u64(0)))
	must(h.c.PutRoute(cx, model.Route{ID: "v2", Host: "*", Prefix: "/v2", Cluster: "api"}, u64(0)))
	must(h.c.PutJWTIssuer(cx, issuer("idp", "https://idp.example"), u64(0)))
	must(h.c.PutConsumer(cx, model.Consumer{ID: "alice", Groups: []string{"staff"}, Credentials: model.Credentials{
		JWT: []model.JWTIdentity{{Issuer: "idp", Subject: "alice@example.com"}}}}, u64(0)))
	must(h.c.PutPolicy(cx, model.Policy{ID: "everyone", Scope: model.PolicyScope{Global: true},
		RateLimits: []model.RateLimit{{Key: "ip", Rate: 50, Burst: 10}}}, u64(0)))
	must(h.c.PutPolicy(cx, model.Policy{ID: "api-users", Scope: model.PolicyScope{Cluster: "api"},
		Auth:   &model.PolicyAuth{Methods: []string{"api_key", "jwt"}, Required: true, APIKeyHeader: "x-key"},
		ACL:    &model.ACL{AllowGroups: []string{"staff"}, DenyGroups: []string{"banned"}},
		Claims: &model.ClaimChecks{Iss: []string{"idp"}, Aud: []string{"api"}, Required: []string{"tenant"}},
		RateLimits: []model.RateLimit{{Key: "consumer", Rate: 100, Burst: 20},
			{Key: "header:x-tenant", Rate: 300, Burst: 30, Scope: "edge"}},
		Forward: &model.Forward{ConsumerHeader: "X-Who", KeepCredentials: true}}, u64(0)))
	must(h.c.PutPolicy(cx, model.Policy{ID: "v1-basic", Scope: model.PolicyScope{Route: "v1"},
		Auth: &model.PolicyAuth{Methods: []string{"basic"}}}, u64(0)))
	return last
}

func policyIndex(t *testing.T, snap *fbs.Snapshot, id string) int {
	t.Helper()
	i := slices.IndexFunc(snap.Auth().Policies, func(p fbs.Policy) bool { return p.ID == id })
	if i < 0 {
		t.Fatalf("policy %q missing from the snapshot", id)
	}
	return i
}

func TestPoliciesLandOnTheirScopes(t *testing.T) {
	h := startCtrl(t, t.TempDir(), nil)
	last := authFixture(t, h)
	snap := h.waitSnapshot(last.Revision)
	a := snap.Auth()
	if a == nil || len(a.Consumers) != 1 || len(a.Issuers) != 1 || len(a.Policies) != 3 {
		t.Fatalf("snapshot auth = %+v", a)
	}
	if g := snap.GlobalPolicy(); g != policyIndex(t, snap, "everyone") {
		t.Fatalf("global policy index %d", g)
	}
	var m fbs.Match
	for _, c := range []struct{ path, route, own, cluster string }{
		{"/v1/x", "v1", "v1-basic", "api-users"},
		{"/v2/x", "v2", "", "api-users"},
		{"/x", "home", "", ""},
	} {
		if !snap.Match([]byte("h"), []byte(c.path), &m) || string(m.ID()) != c.route {
			t.Fatalf("%s: no match of route %s", c.path, c.route)
		}
		want := -1
		if c.own != "" {
			want = policyIndex(t, snap, c.own)
		}
		if m.Policy() != want {
			t.Errorf("route %s: policy %d, want %d (%q)", c.route, m.Policy(), want, c.own)
		}
		want = -1
		if c.cluster != "" {
			want = policyIndex(t, snap, c.cluster)
		}
		if got := snap.ClusterAt(m.ClusterIndex()).Policy(); got != want {
			t.Errorf("cluster of route %s: policy %d, want %d (%q)", c.route, got, want, c.cluster)
		}
	}
	p := a.Policies[policyIndex(t, snap, "api-users")]
	want := fbs.Policy{ID: "api-users", Methods: fbs.AuthAPIKey | fbs.AuthJWT, Required: true, APIKeyHeader: "x-key",
		AllowGroups: []string{"staff"}, DenyGroups: []string{"banned"}, Issuers: []string{"idp"}, Audiences: []string{"api"},
		RequiredClaims: []string{"tenant"}, ConsumerHeader: "X-Who", KeepCredentials: true,
		RateLimits: []fbs.RateLimit{{Key: fbs.LimitByConsumer, Rate: 100, Burst: 20}, {Key: fbs.LimitByHeader, Header: "x-tenant", Rate: 300, Burst: 30}}}
	if !equalPolicy(p, want) {
		t.Fatalf("policy in snapshot:\n%+v\nwant\n%+v", p, want)
	}
	if p := a.Policies[policyIndex(t, snap, "v1-basic")]; p.Methods != fbs.AuthBasic || p.ConsumerHeader != model.DefaultConsumerHeader {
		t.Fatalf("v1-basic in snapshot: %+v", p)
	}
	is := a.Issuers[0]
	if is.ID != "idp" || is.Iss != "https://idp.example" || is.ClockSkewMs != 5000 || !bytes.Contains(is.KeySet, []byte(hsSecret)) {
		t.Fatalf("issuer in snapshot: %+v", is)
	}
	if c := a.Consumers[0]; c.ID != "alice" || !slices.Equal(c.Groups, []string{"staff"}) || len(c.JWT) != 1 || c.JWT[0] != (fbs.JWTLink{Issuer: "idp", Subject: "alice@example.com"}) {
		t.Fatalf("consumer in snapshot: %+v", c)
	}
	if snap.FleetSize() != 1 {
		t.Fatalf("fleet size %d without cluster-scope limits", snap.FleetSize())
	}
	st, err := h.c.Status(ctx(t))
	if err != nil || st.Consumers != 1 || st.JWTIssuers != 1 || st.Policies != 3 || st.FleetSize != 0 {
		t.Fatalf("Status = %+v, %v", st, err)
	}
}

func equalPolicy(a, b fbs.Policy) bool {
	return a.ID == b.ID && a.Methods == b.Methods && a.Required == b.Required && a.APIKeyHeader == b.APIKeyHeader &&
		slices.Equal(a.AllowGroups, b.AllowGroups) && slices.Equal(a.DenyGroups, b.DenyGroups) &&
		slices.Equal(a.Issuers, b.Issuers) && slices.Equal(a.Audiences, b.Audiences) &&
		slices.Equal(a.RequiredClaims, b.RequiredClaims) && slices.Equal(a.RateLimits, b.RateLimits) &&
		a.ConsumerHeader == b.ConsumerHeader && a.KeepCredentials == b.KeepCredentials
}

// TestAddKeyShowsTheKeyOnce: the reply carries the key, the snapshot and
// every later reply only its hash.
func TestAddKeyShowsTheKeyOnce(t *testing.T) {
	h := startCtrl(t, t.TempDir(), nil)
	cx := ctx(t)
	created, err := h.c.PutConsumer(cx, model.Consumer{ID: "bob"}, u64(0))
	if err != nil {
		t.Fatal(err)
	}
	res, err := h.c.AddConsumerKey(cx, "bob", "", u64(created.Version))
	if err != nil {
		t.Fatal(err)
	}
	key := res.APIKey
	if !strings.HasPrefix(key, "sg_") || res.Version != created.Version+1 || res.Consumer == nil || len(res.Consumer.Credentials.APIKeys) != 1 {
		t.Fatalf("AddConsumerKey = %+v", res)
	}
	if k := res.Consumer.Credentials.APIKeys[0]; k.ID != "key-1" || k.Hash != model.HashAPIKey(key) {
		t.Fatalf("stored key %+v, want key-1 with the key's hash", k)
	}
	res2, err := h.c.AddConsumerKey(cx, "bob", "ci", nil)
	if err != nil || res2.APIKey == key || res2.Consumer.Credentials.APIKeys[1].ID != "ci" {
		t.Fatalf("second AddConsumerKey = %+v, %v", res2, err)
	}
	_, err = h.c.AddConsumerKey(cx, "bob", "ci", nil)
	wantAdminErr(t, err, admin.CodeConflict, "key_id", `consumer "bob" already has an API key "ci"`)
	_, err = h.c.AddConsumerKey(cx, "nobody", "", nil)
	wantAdminErr(t, err, admin.CodeNotFound, "id", `consumer "nobody" does not exist`)

	snap := h.waitSnapshot(res2.Revision)
	c := snap.Auth().Consumers[0]
	if d := sha256.Sum256([]byte(key)); len(c.APIKeyHashes) != 2 || !slices.Contains(c.APIKeyHashes, d) {
		t.Fatalf("snapshot key hashes %x, want the SHA-256 of the key among 2", c.APIKeyHashes)
	}
	if bytes.Contains(snap.Bytes(), []byte(key)) || bytes.Contains(snap.Bytes(), []byte(res2.APIKey)) {
		t.Fatal("the snapshot holds a plaintext key")
	}
	for _, get := range []func() string{
		func() string { r, _ := h.c.GetConsumer(cx, "bob"); return compactJSON(r) },
		func() string { l, _ := h.c.ListConsumers(cx); return compactJSON(l) },
	} {
		if out := get(); strings.Contains(out, key) || !strings.Contains(out, model.HashAPIKey(key)) {
			t.Fatalf("get/list output %s: want the hash and never the key", out)
		}
	}
	rm, err := h.c.RemoveConsumerKey(cx, "bob", "key-1", u64(res2.Version))
	if err != nil || len(rm.Consumer.Credentials.APIKeys) != 1 || rm.Consumer.Credentials.APIKeys[0].ID != "ci" {
		t.Fatalf("RemoveConsumerKey = %+v, %v", rm, err)
	}
	_, err = h.c.RemoveConsumerKey(cx, "bob", "key-1", nil)
	wantAdminErr(t, err, admin.CodeNotFound, "key_id", `consumer "bob" has no API key "key-1"`)
}

// TestSecretsStayInCtrl: replies leave out password hashes and HMAC keys,
// and putting a reply's document back keeps them.
func TestSecretsStayInCtrl(t *testing.T) {
	h := startCtrl(t, t.TempDir(), nil)
	cx := ctx(t)
	if _, err := h.c.PutJWTIssuer(cx, issuer("idp", "https://idp.example"), nil); err != nil {
		t.Fatal(err)
	}
	carol, err := h.c.PutConsumer(cx, model.Consumer{ID: "carol"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ph := passwordHash(t, "correct horse")
	res, err := h.c.SetConsumerPassword(cx, "carol", "carol", ph, u64(carol.Version))
	if err != nil || len(res.Consumer.Credentials.Basic) != 1 || res.Consumer.Credentials.Basic[0].PasswordHash != "" {
		t.Fatalf("SetConsumerPassword = %+v, %v; want the username without its hash", res, err)
	}
	_, err = h.c.SetConsumerPassword(cx, "carol", "carol", "plaintext", nil)
	wantAdminErr(t, err, admin.CodeInvalid, "credentials.basic[0].password_hash", "pbkdf2")

	got, err := h.c.GetConsumer(cx, "carol")
	if err != nil {
		t.Fatal(err)
	}
	got.Consumer.Groups = []string{"ops"}
	if _, err := h.c.PutConsumer(cx, *got.Consumer, u64(got.Version)); err != nil {
		t.Fatalf("putting back the consumer from get: %v", err)
	}
	gi, err := h.c.GetJWTIssuer(cx, "idp")
	if err != nil || gi.JWTIssuer.Keys.Keys[0].K != "" {
		t.Fatalf("GetJWTIssuer = %+v, %v; want the HMAC key left out", gi, err)
	}
	gi.JWTIssuer.ClockSkewMs = 1000
	last, err := h.c.PutJWTIssuer(cx, *gi.JWTIssuer, u64(gi.Version))
	if err != nil {
		t.Fatalf("putting back the issuer from get: %v", err)
	}
	h.mustNotContain(compactJSON(last), hsSecret, ph)
	snap := h.waitSnapshot(last.Revision)
	a := snap.Auth()
	if c := a.Consumers[0]; !slices.Equal(c.Groups, []string{"ops"}) || len(c.Basic) != 1 || c.Basic[0].PasswordHash != ph {
		t.Fatalf("consumer in snapshot %+v: want group ops and the kept password hash", c)
	}
	if is := a.Issuers[0]; is.ClockSkewMs != 1000 || !bytes.Contains(is.KeySet, []byte(hsSecret)) {
		t.Fatalf("issuer in snapshot %+v: want the kept HMAC key", is)
	}
	l, err := h.c.ListJWTIssuers(cx)
	if err != nil {
		t.Fatal(err)
	}
	h.mustNotContain(compactJSON(l), hsSecret)
}

func (h *harness) mustNotContain(out string, secrets ...string) {
	h.t.Helper()
	for _, s := range secrets {
		if strings.Contains(out, s) {
			h.t.Fatalf("reply %s contains a secret", out)
		}
	}
}

func TestAuthStaleExpectedVersionChangesNothing(t *testing.T) {
	h := startCtrl(t, t.TempDir(), nil)
	last := authFixture(t, h)
	h.waitSnapshot(last.Revision)
	base := h.settled()
	cx := ctx(t)
	builds := h.builds.Load()
	// Versions start at the revision that created a document: read them.
	version := func(get func() (admin.Result, error)) uint64 {
		r, err := get()
		if err != nil {
			t.Fatal(err)
		}
		return r.Version
	}
	pv := version(func() (admin.Result, error) { return h.c.GetPolicy(cx, "v1-basic") })
	cv := version(func() (admin.Result, error) { return h.c.GetConsumer(cx, "alice") })
	iv := version(func() (admin.Result, error) { return h.c.GetJWTIssuer(cx, "idp") })
	pol := model.Policy{ID: "v1-basic", Scope: model.PolicyScope{Route: "v1"}, Auth: &model.PolicyAuth{Methods: []string{"jwt"}}}
	_, err := h.c.PutPolicy(cx, pol, u64(0))
	wantAdminErr(t, err, admin.CodeConflict, "expected_version", fmt.Sprintf(`policy "v1-basic" already exists at version %d`, pv))
	_, err = h.c.PutPolicy(cx, pol, u64(pv+7))
	wantAdminErr(t, err, admin.CodeConflict, "expected_version", fmt.Sprintf(`policy "v1-basic" is at version %d, expected %d`, pv, pv+7))
	_, err = h.c.DeletePolicy(cx, "v1-basic", u64(pv-1))
	wantAdminErr(t, err, admin.CodeConflict, "expected_version", fmt.Sprintf("is at version %d, expected %d", pv, pv-1))
	_, err = h.c.AddConsumerKey(cx, "alice", "", u64(cv+5))
	wantAdminErr(t, err, admin.CodeConflict, "expected_version", fmt.Sprintf(`consumer "alice" is at version %d, expected %d`, cv, cv+5))
	_, err = h.c.SetConsumerPassword(cx, "alice", "alice", passwordHash(t, "pw"), u64(0))
	wantAdminErr(t, err, admin.CodeConflict, "expected_version", "already exists")
	_, err = h.c.PutJWTIssuer(cx, issuer("idp", "https://other.example"), u64(iv+3))
	wantAdminErr(t, err, admin.CodeConflict, "expected_version", fmt.Sprintf(`jwt_issuer "idp" is at version %d, expected %d`, iv, iv+3))
	// A stale write is a conflict whatever it carries: the writer must
	// re-read before anything it sent is worth judging.
	bad := model.Policy{ID: "v1-basic", Scope: model.PolicyScope{Route: "no-such-route"}, Auth: &model.PolicyAuth{Methods: []string{"jwt"}}}
	_, err = h.c.PutPolicy(cx, bad, u64(pv+7))
	wantAdminErr(t, err, admin.CodeConflict, "expected_version", fmt.Sprintf(`policy "v1-basic" is at version %d, expected %d`, pv, pv+7))
	_, err = h.c.AddConsumerKey(cx, "nobody", "", u64(4))
	wantAdminErr(t, err, admin.CodeConflict, "expected_version", `consumer "nobody"`)

	if rev := h.s.store.Revision(); rev != base {
		t.Fatalf("store revision moved from %d to %d on rejected writes", base, rev)
	}
	got, err := h.c.GetPolicy(cx, "v1-basic")
	if err != nil || got.Version != pv || got.Policy.Auth.Methods[0] != "basic" {
		t.Fatalf("GetPolicy after conflicts = %+v, %v", got, err)
	}
	if c, err := h.c.GetConsumer(cx, "alice"); err != nil || len(c.Consumer.Credentials.APIKeys)+len(c.Consumer.Credentials.Basic) != 0 {
		t.Fatalf("GetConsumer after conflicts = %+v, %v", c, err)
	}
	time.Sleep(3 * h.s.cfg.Debounce)
	if h.builds.Load() != builds {
		t.Fatalf("rejected writes built %d snapshots", h.builds.Load()-builds)
	}
}

func TestAuthReferenceRules(t *testing.T) {
	h := startCtrl(t, t.TempDir(), nil)
	authFixture(t, h)
	cx := ctx(t)
	jwtPolicy := func(id string, scope model.PolicyScope, iss ...string) model.Policy {
		return model.Policy{ID: id, Scope: scope, Auth: &model.PolicyAuth{Methods: []string{"jwt"}}, Claims: &model.ClaimChecks{Iss: iss}}
	}
	_, err := h.c.PutPolicy(cx, jwtPolicy("p", model.PolicyScope{Route: "nope"}), nil)
	wantAdminErr(t, err, admin.CodeInvalid, "scope.route", `route "nope" does not exist`)
	_, err = h.c.PutPolicy(cx, jwtPolicy("p", model.PolicyScope{Cluster: "nope"}), nil)
	wantAdminErr(t, err, admin.CodeInvalid, "scope.cluster", `cluster "nope" does not exist`)
	_, err = h.c.PutPolicy(cx, jwtPolicy("p", model.PolicyScope{Route: "v2"}, "idp", "ghost"), nil)
	wantAdminErr(t, err, admin.CodeInvalid, "claims.iss[1]", `jwt_issuer "ghost" does not exist`)
	_, err = h.c.PutPolicy(cx, jwtPolicy("p", model.PolicyScope{Route: "v1"}), nil)
	wantAdminErr(t, err, admin.CodeConflict, "scope", `policy "v1-basic" already applies to "v1" (route)`)
	_, err = h.c.PutPolicy(cx, jwtPolicy("p", model.PolicyScope{Global: true}), nil)
	wantAdminErr(t, err, admin.CodeConflict, "scope", `policy "everyone" already applies to every request`)
	_, err = h.c.PutPolicy(cx, model.Policy{ID: "bad", Scope: model.PolicyScope{Global: true, Route: "v1"}}, nil)
	wantAdminErr(t, err, admin.CodeInvalid, "scope", "exactly one")
	// Every policy's consumer header is stripped from every forwarded
	// request, so it may not be where another policy reads API keys that
	// it forwards (api-users reads x-key with keep_credentials and sends
	// X-Who); without keep_credentials the key is stripped anyway.
	_, err = h.c.PutPolicy(cx, model.Policy{ID: "p", Scope: model.PolicyScope{Route: "v2"},
		Forward: &model.Forward{ConsumerHeader: "X_Key"}}, nil)
	wantAdminErr(t, err, admin.CodeConflict, "forward.consumer_header", `"X_Key" is where policy "api-users" reads the API keys it forwards`)
	_, err = h.c.PutPolicy(cx, model.Policy{ID: "p", Scope: model.PolicyScope{Route: "v2"},
		Auth:    &model.PolicyAuth{Methods: []string{"api_key"}, APIKeyHeader: "x-who"},
		Forward: &model.Forward{KeepCredentials: true}}, nil)
	wantAdminErr(t, err, admin.CodeConflict, "auth.api_key_header", `"x-who" is where policy "api-users" sends the consumer id upstream`)
	if _, err = h.c.PutPolicy(cx, model.Policy{ID: "p", Scope: model.PolicyScope{Route: "v2"},
		Auth: &model.PolicyAuth{Methods: []string{"api_key"}, APIKeyHeader: "x-who"}}, nil); err != nil {
		t.Fatalf("a key header that is another policy's consumer header, without keep_credentials: %v", err)
	}
	if _, err = h.c.DeletePolicy(cx, "p", nil); err != nil {
		t.Fatal(err)
	}

	_, err = h.c.PutConsumer(cx, model.Consumer{ID: "eve", Credentials: model.Credentials{JWT: []model.JWTIdentity{{Issuer: "ghost"}}}}, nil)
	wantAdminErr(t, err, admin.CodeInvalid, "credentials.jwt[0].issuer", `jwt_issuer "ghost" does not exist`)
	key, err := h.c.AddConsumerKey(cx, "alice", "k", nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = h.c.PutConsumer(cx, model.Consumer{ID: "eve", Credentials: model.Credentials{
		APIKeys: []model.APIKeyCredential{{ID: "stolen", Hash: model.HashAPIKey(key.APIKey)}}}}, nil)
	wantAdminErr(t, err, admin.CodeConflict, "credentials.api_keys[0].hash", `the same key belongs to consumer "alice"`)
	if _, err := h.c.SetConsumerPassword(cx, "alice", "shared", passwordHash(t, "pw"), nil); err != nil {
		t.Fatal(err)
	}
	if _, err := h.c.PutConsumer(cx, model.Consumer{ID: "eve"}, nil); err != nil {
		t.Fatal(err)
	}
	_, err = h.c.SetConsumerPassword(cx, "eve", "shared", passwordHash(t, "pw2"), nil)
	wantAdminErr(t, err, admin.CodeConflict, "credentials.basic[0].username", `username "shared" belongs to consumer "alice"`)
	_, err = h.c.PutJWTIssuer(cx, issuer("idp2", "https://idp.example"), nil)
	wantAdminErr(t, err, admin.CodeConflict, "issuer", `"https://idp.example" is already the issuer of jwt_issuer "idp"`)
	// Every edge refuses a subject linked to two consumers, so ctrl must.
	if _, err := h.c.PutConsumer(cx, model.Consumer{ID: "carol", Credentials: model.Credentials{
		JWT: []model.JWTIdentity{{Issuer: "idp", Subject: "carol@example.com"}}}}, nil); err != nil {
		t.Fatal(err)
	}
	_, err = h.c.PutConsumer(cx, model.Consumer{ID: "mallory", Credentials: model.Credentials{
		JWT: []model.JWTIdentity{{Issuer: "idp", Subject: "carol@example.com"}}}}, nil)
	wantAdminErr(t, err, admin.CodeConflict, "credentials.jwt[0]", `subject "carol@example.com" of issuer "idp" is linked to consumer "carol"`)
	if _, err := h.c.DeleteConsumer(cx, "carol", nil); err != nil {
		t.Fatal(err)
	}

	// Deletes of what others refer to are refused, naming the referrers.
	_, err = h.c.DeleteJWTIssuer(cx, "idp", nil)
	wantAdminErr(t, err, admin.CodeInvalid, "id", `jwt_issuer "idp" is used by consumer "alice" and policy "api-users"; delete or move them first`)
	_, err = h.c.DeleteRoute(cx, "v1", nil)
	wantAdminErr(t, err, admin.CodeInvalid, "id", `route "v1" is used by policy "v1-basic"`)
	_, err = h.c.DeleteCluster(cx, "api", nil)
	wantAdminErr(t, err, admin.CodeInvalid, "id", `cluster "api" is used by routes "v1", "v2" and policy "api-users"`)

	// Once the referrers are gone, the deletes go through.
	vb, err := h.c.GetPolicy(cx, "v1-basic")
	if err != nil {
		t.Fatal(err)
	}
	for _, del := range []func() (admin.Result, error){
		func() (admin.Result, error) { return h.c.DeletePolicy(cx, "api-users", nil) },
		func() (admin.Result, error) { return h.c.DeletePolicy(cx, "v1-basic", u64(vb.Version)) },
		func() (admin.Result, error) { return h.c.DeleteRoute(cx, "v1", nil) },
		func() (admin.Result, error) { return h.c.DeleteRoute(cx, "v2", nil) },
		func() (admin.Result, error) { return h.c.DeleteCluster(cx, "api", nil) },
		func() (admin.Result, error) { return h.c.DeleteConsumer(cx, "alice", nil) },
		func() (admin.Result, error) { return h.c.DeleteJWTIssuer(cx, "idp", nil) },
	} {
		if _, err := del(); err != nil {
			t.Fatal(err)
		}
	}
	// With alice gone, her key and username are free again.
	last, err := h.c.PutConsumer(cx, model.Consumer{ID: "eve", Credentials: model.Credentials{
		APIKeys: []model.APIKeyCredential{{ID: "k", Hash: model.HashAPIKey(key.APIKey)}},
		Basic:   []model.BasicCredential{{Username: "shared", PasswordHash: passwordHash(t, "pw")}}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	snap := h.waitSnapshot(last.Revision)
	if a := snap.Auth(); len(a.Consumers) != 1 || len(a.Issuers) != 0 || len(a.Policies) != 1 {
		t.Fatalf("snapshot auth after deletes: %+v", a)
	}
}

func TestRestartKeepsAuth(t *testing.T) {
	dir := t.TempDir()
	h := startCtrl(t, dir, nil)
	last := authFixture(t, h)
	key, err := h.c.AddConsumerKey(ctx(t), "alice", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	want := bytes.Clone(h.waitSnapshot(key.Revision).Bytes())
	h.stop()

	h2 := startCtrl(t, dir, nil)
	if got := h2.waitSnapshot(key.Revision); !bytes.Equal(got.Bytes(), want) {
		t.Fatal("restart republished different bytes for the same version")
	}
	cx := ctx(t)
	for _, get := range []func() (admin.Result, error){
		func() (admin.Result, error) { return h2.c.GetPolicy(cx, "api-users") },
		func() (admin.Result, error) { return h2.c.GetJWTIssuer(cx, "idp") },
		func() (admin.Result, error) { return h2.c.GetConsumer(cx, "alice") },
	} {
		if r, err := get(); err != nil || r.Version == 0 {
			t.Fatalf("after restart: %+v, %v", r, err)
		}
	}
	// The indexes were rebuilt too: the scope and the key are still taken.
	_, err = h2.c.PutPolicy(cx, model.Policy{ID: "other", Scope: model.PolicyScope{Cluster: "api"}}, nil)
	wantAdminErr(t, err, admin.CodeConflict, "scope", `policy "api-users"`)
	_, err = h2.c.PutConsumer(cx, model.Consumer{ID: "eve", Credentials: model.Credentials{
		APIKeys: []model.APIKeyCredential{{ID: "k", Hash: model.HashAPIKey(key.APIKey)}}}}, nil)
	wantAdminErr(t, err, admin.CodeConflict, "credentials.api_keys[0].hash", "alice")
	_, err = h2.c.DeleteRoute(cx, "v1", nil)
	wantAdminErr(t, err, admin.CodeInvalid, "id", "v1-basic")
	if last.Revision >= key.Revision {
		t.Fatalf("revisions did not advance: %d then %d", last.Revision, key.Revision)
	}
}

// A store holding a document that validated when it was written but does
// not build (here a policy whose API-key field is the consumer-id field,
// which ctrl took before its validation caught it) must not keep ctrl from
// starting: it serves the stored snapshot, and once the operator deletes
// the document through the admin socket the next snapshot builds.
func TestStartsWhenStoredDocumentsDoNotBuild(t *testing.T) {
	dir := t.TempDir()
	h := startCtrl(t, dir, nil)
	res, err := h.c.PutCluster(ctx(t), cluster("api", "10.0.0.1:80"), nil)
	if err != nil {
		t.Fatal(err)
	}
	served := h.waitSnapshot(res.Revision).Version()
	h.stop()

	st, err := store.OpenPebble(filepath.Join(dir, "store"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	bad := `{"id":"p","scope":{"global":true},"auth":{"methods":["api_key"],"api_key_header":"x-consumer-id"}}`
	if _, _, err := st.Apply(store.Mutation{Kind: kindPolicy, ID: "p", Body: []byte(bad)}); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}

	h2 := startCtrl(t, dir, nil)
	if v := h2.s.lastSnap().version; v != served {
		t.Fatalf("in service after start: version %d, want the stored %d", v, served)
	}
	del, err := h2.c.DeletePolicy(ctx(t), "p", nil)
	if err != nil {
		t.Fatal(err)
	}
	if snap := h2.waitSnapshot(del.Revision); snap.NumClusters() != 1 {
		t.Fatalf("snapshot %d after the fix: %d clusters", snap.Version(), snap.NumClusters())
	}
}

// TestFleetSizeFollowsEdges connects real stream clients and watches the
// fleet size in the snapshots: unused (0) without cluster-scope limits,
// recorded with the policy that introduces one, and re-recorded once a
// changed count has held for FleetDebounce.
func TestFleetSizeFollowsEdges(t *testing.T) {
	h := startCtrl(t, t.TempDir(), func(c *Config) { c.FleetDebounce = 50 * time.Millisecond })
	cx := ctx(t)
	res, err := h.c.PutCluster(cx, cluster("api", "10.0.0.1:80"), nil)
	if err != nil {
		t.Fatal(err)
	}
	h.waitSnapshot(res.Revision)
	base := h.settled()
	stopA := streamEdge(t, h.s.PublishAddr(), "edge-a")
	defer stopA()
	stopB := streamEdge(t, h.s.PublishAddr(), "edge-b")
	h.waitEdges(2)
	// Edges come and go without cluster-scope limits: nothing is written.
	time.Sleep(4 * h.s.cfg.FleetDebounce)
	if rev := h.s.store.Revision(); rev != base {
		t.Fatalf("edge churn without cluster-scope limits wrote revision %d", rev)
	}

	pol := model.Policy{ID: "fleet", Scope: model.PolicyScope{Cluster: "api"},
		RateLimits: []model.RateLimit{{Key: "ip", Rate: 300, Burst: 30, Scope: "cluster"}}}
	res, err = h.c.PutPolicy(cx, pol, nil)
	if err != nil {
		t.Fatal(err)
	}
	snap := h.waitSnapshot(res.Revision)
	if snap.FleetSize() != 2 || !snap.Auth().Policies[0].RateLimits[0].ClusterScope {
		t.Fatalf("snapshot with the policy: fleet size %d, policy %+v", snap.FleetSize(), snap.Auth().Policies[0])
	}

	stopB()
	h.waitFleet(1)
	stopC := streamEdge(t, h.s.PublishAddr(), "edge-c")
	defer stopC()
	stopD := streamEdge(t, h.s.PublishAddr(), "edge-d")
	defer stopD()
	h.waitFleet(3)
	st, err := h.c.Status(cx)
	if err != nil || st.FleetSize != 3 {
		t.Fatalf("Status = %+v, %v; want fleet size 3", st, err)
	}

	// Without cluster-scope limits the snapshot says 0 again, and churn
	// writes nothing.
	pol.RateLimits[0].Scope = "edge"
	res, err = h.c.PutPolicy(cx, pol, nil)
	if err != nil {
		t.Fatal(err)
	}
	if snap := h.waitSnapshot(res.Revision); snap.FleetSize() != 1 {
		t.Fatalf("fleet size %d without cluster-scope limits", snap.FleetSize())
	}
	stopD()
	time.Sleep(4 * h.s.cfg.FleetDebounce)
	if rev := h.s.store.Revision(); rev != res.Revision {
		t.Fatalf("edge churn after the cluster-scope limit went wrote revision %d", rev)
	}
	if st, err := h.c.Status(cx); err != nil || st.FleetSize != 0 {
		t.Fatalf("Status = %+v, %v; want fleet size 0", st, err)
	}
}

func (h *harness) waitEdges(n uint32) {
	h.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for h.s.connectedEdges() != n {
		if time.Now().After(deadline) {
			h.t.Fatalf("%d edges connected after 10s, want %d", h.s.connectedEdges(), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitFleet waits for a snapshot carrying fleet size n.
func (h *harness) waitFleet(n int) {
	h.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if v := h.s.lastSnap().version; v > 0 {
			if data, err := h.s.store.Snapshot(v); err == nil {
				if snap, err := fbs.Open(data); err == nil && snap.FleetSize() == n {
					return
				}
			}
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("no snapshot with fleet size %d within 10s", n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func compactJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}
