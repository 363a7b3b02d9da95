package fbs

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// authState is a small gateway with every kind of auth item: two policies
// referenced by a route, a cluster and the root.
func authState() State {
	keySet := []byte(`{"keys":[{"kty":"oct","alg":"HS256","k":"c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0MTI"}]}`)
	return State{
		Version: 7, Shards: 2, FleetSize: 3,
		Clusters: []Cluster{{Name: "api", Endpoints: []Endpoint{{Address: "127.0.0.1:1"}}, Policy: "keys"},
			{Name: "web", Endpoints: []Endpoint{{Address: "127.0.0.1:2"}}}},
		Routes: []Route{
			{ID: "admin", Host: "*", Prefix: "/admin", Cluster: "api", Policy: "strict"},
			{ID: "api", Host: "*", Prefix: "/api", Cluster: "api"},
			{ID: "web", Host: "*", Prefix: "/", Cluster: "web"},
		},
		GlobalPolicy: "open",
		Auth: Auth{
			Consumers: []Consumer{
				{ID: "bob", Groups: []string{"ops"}, JWT: []JWTLink{{Issuer: "idp", Subject: "bob@x"}}},
				{ID: "alice", Groups: []string{"staff", "ops"},
					APIKeyHashes: [][32]byte{sha256.Sum256([]byte("k2")), sha256.Sum256([]byte("k1"))},
					Basic:        []BasicCredential{{Username: "alice", PasswordHash: "$pbkdf2-sha256$i=100000$c2FsdA$aGFzaA"}}},
			},
			Issuers: []Issuer{{ID: "idp", Iss: "https://idp", Audiences: []string{"api"}, Algorithms: []string{"HS256"},
				KeySet: keySet, ClockSkewMs: 30000, RequiredClaims: []string{"scope"}}},
			Policies: []Policy{
				{ID: "strict", Methods: AuthJWT, Required: true, AllowGroups: []string{"ops"}, DenyGroups: []string{"banned"},
					Issuers: []string{"idp"}, Audiences: []string{"admin"}, RequiredClaims: []string{"tenant"},
					RateLimits:     []RateLimit{{Key: LimitByConsumer, Rate: 10, Burst: 5}, {Key: LimitByHeader, Header: "x-tenant", Rate: 300, Burst: 30, ClusterScope: true}},
					ConsumerHeader: "X-Who", KeepCredentials: true},
				{ID: "keys", Methods: AuthAPIKey | AuthBasic, Required: true, APIKeyHeader: "x-key"},
				{ID: "open", RateLimits: []RateLimit{{Key: LimitByIP, Rate: 100, Burst: 100}}},
			},
		},
	}
}

func TestAuthRoundTrip(t *testing.T) {
	st := authState()
	s := mustOpen(t, mustBuild(t, st))
	want := sortedAuth(&st.Auth)
	if got := s.Auth(); !reflect.DeepEqual(*got, want) {
		t.Fatalf("Auth() = %+v\nwant %+v", *got, want)
	}
	ids := []string{"keys", "open", "strict"} // stored sorted by id
	for i, p := range s.Auth().Policies {
		if p.ID != ids[i] {
			t.Fatalf("policy %d is %q, want %q", i, p.ID, ids[i])
		}
	}
	if s.PolicyCount() != 3 || s.GlobalPolicy() != 1 || s.FleetSize() != 3 {
		t.Fatalf("PolicyCount %d GlobalPolicy %d FleetSize %d, want 3 1 3", s.PolicyCount(), s.GlobalPolicy(), s.FleetSize())
	}
	if c := s.ClusterAt(s.ClusterIndex([]byte("api"))); c.Policy() != 0 {
		t.Errorf("cluster api policy %d, want 0 (keys)", c.Policy())
	}
	if c := s.ClusterAt(s.ClusterIndex([]byte("web"))); c.Policy() != -1 {
		t.Errorf("cluster web policy %d, want -1", c.Policy())
	}
	var m Match
	for path, want := range map[string]int{"/admin/x": 2, "/api": -1, "/": -1} {
		if !s.Match([]byte("h"), []byte(path), &m) || m.Policy() != want {
			t.Errorf("%s: route %q policy %d, want %d", path, m.ID(), m.Policy(), want)
		}
	}
	s.ForEachRoute(func(r Route) bool {
		if wantP := map[string]string{"admin": "strict"}[r.ID]; r.Policy != wantP {
			t.Errorf("ForEachRoute: route %q policy %q, want %q", r.ID, r.Policy, wantP)
		}
		return true
	})
}

// TestAuthDeterministicAndSeparate: input order does not change the bytes,
// Builder agrees with Build, and an auth edit leaves every route shard's
// bytes alone (so the delta for a key rotation stays small).
func TestAuthDeterministicAndSeparate(t *testing.T) {
	st := authState()
	want := mustBuild(t, st)
	shuffled := authState()
	slices.Reverse(shuffled.Auth.Consumers)
	slices.Reverse(shuffled.Auth.Policies)
	slices.Reverse(shuffled.Routes)
	if got := mustBuild(t, shuffled); !bytes.Equal(got, want) {
		t.Fatal("reordered input changed the bytes")
	}
	var b Builder
	for step, edit := range []func(*State){
		func(*State) {},
		func(s *State) {
			s.Auth.Consumers[1].APIKeyHashes = append(s.Auth.Consumers[1].APIKeyHashes, sha256.Sum256([]byte("k3")))
		},
		func(s *State) { s.Auth.Policies[2].RateLimits[0].Rate = 50 },
		func(s *State) { s.Routes[1].Policy = "strict" },
		func(s *State) { s.Clusters[1].Policy = "open"; s.GlobalPolicy = ""; s.FleetSize = 4 },
		func(s *State) {
			s.Auth = Auth{}
			s.Routes[0].Policy, s.Routes[1].Policy, s.Clusters[0].Policy, s.Clusters[1].Policy = "", "", "", ""
		},
	} {
		prev := mustOpen(t, mustBuild(t, st))
		edit(&st)
		full := mustBuild(t, st)
		inc, err := b.Build(st)
		if err != nil || !bytes.Equal(inc, full) {
			t.Fatalf("step %d: Builder (err %v) differs from Build", step, err)
		}
		next := mustOpen(t, full)
		if step == 1 || step == 2 {
			for i := range next.NumShards() {
				if !bytes.Equal(prev.ShardData(i), next.ShardData(i)) {
					t.Fatalf("step %d: an auth-only edit changed shard %d", step, i)
				}
			}
		}
		if step > 0 && prev.ContentHash() == next.ContentHash() {
			t.Fatalf("step %d: the edit left the content hash unchanged", step)
		}
	}
	if s := mustOpen(t, mustBuild(t, st)); s.Auth() != nil || s.GlobalPolicy() != -1 || s.FleetSize() != 4 {
		t.Fatalf("after removing all auth: Auth %v GlobalPolicy %d FleetSize %d", s.Auth(), s.GlobalPolicy(), s.FleetSize())
	}
}

func TestAuthBuildRejects(t *testing.T) {
	cases := map[string]struct {
		edit func(*State)
		want string
	}{
		"missing route policy":   {func(s *State) { s.Routes[0].Policy = "nope" }, `route "admin": field policy: policy "nope" does not exist`},
		"missing cluster policy": {func(s *State) { s.Clusters[1].Policy = "nope" }, `cluster "web": field policy: policy "nope" does not exist`},
		"missing global policy":  {func(s *State) { s.GlobalPolicy = "nope" }, `field global_policy: policy "nope" does not exist`},
		"duplicate policy":       {func(s *State) { s.Auth.Policies[1].ID = "strict" }, `policy "strict": field id: duplicate policy id`},
		"policy issuer":          {func(s *State) { s.Auth.Policies[0].Issuers = []string{"other"} }, `field issuers[0]: issuer "other" does not exist`},
		"consumer issuer":        {func(s *State) { s.Auth.Consumers[0].JWT[0].Issuer = "other" }, `consumer "bob": field jwt[0].issuer: issuer "other" does not exist`},
		"shared key":             {func(s *State) { s.Auth.Consumers[0].APIKeyHashes = [][32]byte{sha256.Sum256([]byte("k1"))} }, `a key hash is also listed for consumer`},
		"shared username":        {func(s *State) { s.Auth.Consumers[0].Basic = []BasicCredential{{Username: "alice", PasswordHash: "x"}} }, `"alice" is also a username of consumer`},
		"shared subject":         {func(s *State) { s.Auth.Consumers[1].JWT = []JWTLink{{Issuer: "idp", Subject: "bob@x"}} }, `subject "bob@x" of issuer "idp" is also linked to consumer`},
		"acl without auth":       {func(s *State) { s.Auth.Policies[2].AllowGroups = []string{"ops"} }, `policy "open": field methods: authentication settings`},
		"required without auth":  {func(s *State) { s.Auth.Policies[2].Required = true }, `policy "open": field methods: authentication settings`},
		"colon username":         {func(s *State) { s.Auth.Consumers[1].Basic[0].Username = "a:b" }, `field basic[0].username`},
		"method bits":            {func(s *State) { s.Auth.Policies[0].Methods = 8 }, `unknown method bits`},
		"header key":             {func(s *State) { s.Auth.Policies[0].RateLimits[1].Header = "" }, `field rate_limits[1].header`},
		"zero rate":              {func(s *State) { s.Auth.Policies[0].RateLimits[0].Rate = 0 }, `rate and burst must be at least 1`},
		"same iss": {func(s *State) {
			s.Auth.Issuers = append(s.Auth.Issuers, Issuer{ID: "idp2", Iss: "https://idp", KeySet: []byte("{}")})
		}, `is also the iss of issuer`},
		"no key set":   {func(s *State) { s.Auth.Issuers[0].KeySet = nil }, `field key_set: must not be empty`},
		"upper header": {func(s *State) { s.Auth.Policies[1].APIKeyHeader = "X-Key" }, `must be lowercase`},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			st := authState()
			c.edit(&st)
			for _, build := range []func(State) ([]byte, error){Build, new(Builder).Build} {
				_, err := build(st)
				if !errors.Is(err, ErrInvalidState) || !strings.Contains(err.Error(), c.want) {
					t.Fatalf("err = %v, want ErrInvalidState containing %q", err, c.want)
				}
			}
		})
	}
}

// TestOpenRejectsAuthDamage corrupts every byte of the auth section (with
// the trailer fixed) and checks Open either rejects the file or returns an
// Auth that still satisfies Build's rules and whose references are in range.
func TestOpenRejectsAuthDamage(t *testing.T) {
	good := mustBuild(t, authState())
	s := mustOpen(t, good)
	ab := s.root.AuthBytes()
	start := bytes.Index(good, ab)
	if start < 0 || len(ab) == 0 {
		t.Fatal("auth bytes not found in the file")
	}
	rejected := 0
	for pos := start; pos < start+len(ab); pos++ {
		for _, v := range []byte{0x00, 0xff, good[pos] ^ 0x01} {
			if v == good[pos] {
				continue
			}
			b := bytes.Clone(good)
			b[pos] = v
			got, err := Open(fixTrailer(b))
			if err != nil {
				if !errors.Is(err, ErrCorrupt) {
					t.Fatalf("byte %d: error %v does not wrap ErrCorrupt", pos, err)
				}
				rejected++
				continue
			}
			if a := got.Auth(); a != nil {
				if err := checkAuth(a); err != nil {
					t.Fatalf("byte %d: Open accepted an Auth that Build rejects: %v", pos, err)
				}
			}
			exercise(got)
		}
	}
	// The content hash covers the auth bytes, so nearly every change is caught.
	if rejected < len(ab) {
		t.Fatalf("only %d of %d corruptions rejected", rejected, 3*len(ab))
	}
}

// A consumer header may not be a reserved field in any spelling the edge
// strips as that field: with '_' for '-' ("Content_Length"), the edge
// removed every client's Content-Length upstream, on every route, and the
// body became the backend's next request.
func TestReservedHeaderSpellings(t *testing.T) {
	for _, tc := range []struct {
		name, apiKey string
		want         bool
	}{
		{"Content-Length", "", true},
		{"Content_Length", "", true},
		{"x_forwarded_for", "", true},
		{"X_Request_Id", "", true},
		{"X_Api_Key", "", true},
		{"x_key", "X-Key", true},
		{"X-HTTP-Method-Override", "", true}, // dropped by the edge as a request-line override
		{"x_original_url", "", true},
		{"Forwarded", "", true}, // a client's is dropped by the edge (RFC 7239)
		{"X-Tenant", "", false},
		{"X_Consumer", "", false},
	} {
		if got := ReservedHeader(tc.name, tc.apiKey); got != tc.want {
			t.Errorf("ReservedHeader(%q, %q) = %v, want %v", tc.name, tc.apiKey, got, tc.want)
		}
	}
}
