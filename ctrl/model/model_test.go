package model

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

func validRoute() Route {
	return Route{ID: "api", Host: "example.com", Prefix: "/api", Cluster: "backend", TimeoutMs: 1000}
}

func validCluster() Cluster {
	return Cluster{ID: "backend", Endpoints: []Endpoint{{Address: "10.0.0.1:8080"}, {Address: "[::1]:80"}, {Address: "svc.internal:443"}}}
}

// fieldsOfErr returns the failing field names in order.
func fieldsOfErr(t *testing.T, err error) []string {
	t.Helper()
	if err == nil {
		return nil
	}
	var fes FieldErrors
	if !errors.As(err, &fes) {
		t.Fatalf("error %v (%T) is not FieldErrors", err, err)
	}
	out := make([]string, len(fes))
	for i, fe := range fes {
		out[i] = fe.Field
	}
	return out
}

func TestRouteValidate(t *testing.T) {
	long := strings.Repeat("a", 64)
	tests := []struct {
		name   string
		mod    func(*Route)
		field  string // "" = valid
		reason string // substring of the reason
	}{
		{"valid", func(r *Route) {}, "", ""},
		{"wildcard host", func(r *Route) { r.Host = "*" }, "", ""},
		{"ipv4 host", func(r *Route) { r.Host = "10.1.2.3" }, "", ""},
		{"root prefix", func(r *Route) { r.Prefix = "/" }, "", ""},
		{"pchar prefix", func(r *Route) { r.Prefix = "/a-b_c.d~e/!$&'()*+,;=:@/" }, "", ""},
		{"id max length", func(r *Route) { r.ID = long }, "", ""},
		{"no timeout", func(r *Route) { r.TimeoutMs = 0 }, "", ""},
		{"max timeout", func(r *Route) { r.TimeoutMs = MaxTimeoutMs }, "", ""},

		{"empty id", func(r *Route) { r.ID = "" }, "id", "required"},
		{"long id", func(r *Route) { r.ID = long + "a" }, "id", "at most 64"},
		{"upper id", func(r *Route) { r.ID = "Api" }, "id", "not a valid id"},
		{"id leading dash", func(r *Route) { r.ID = "-api" }, "id", "not a valid id"},
		{"id slash", func(r *Route) { r.ID = "a/b" }, "id", "not a valid id"},
		{"empty host", func(r *Route) { r.Host = "" }, "host", "required"},
		{"upper host", func(r *Route) { r.Host = "Example.com" }, "host", "lowercase"},
		{"host with port", func(r *Route) { r.Host = "example.com:80" }, "host", "port"},
		{"wildcard subdomain", func(r *Route) { r.Host = "*.example.com" }, "", ""},
		{"bad wildcard domain", func(r *Route) { r.Host = "*.exa_mple.com" }, "host", "wildcard domain"},
		{"inner star", func(r *Route) { r.Host = "a.*.example.com" }, "host", `"*" may only`},
		{"exact path", func(r *Route) { r.Prefix = ""; r.Path = "/api/v1" }, "", ""},
		{"path and prefix", func(r *Route) { r.Path = "/api/v1" }, "path", "not both"},
		{"no path nor prefix", func(r *Route) { r.Prefix = "" }, "prefix", "required"},
		{"bad exact path", func(r *Route) { r.Prefix = ""; r.Path = "/a/../b" }, "path", ".."},
		{"methods", func(r *Route) { r.Methods = []string{"GET", "POST"} }, "", ""},
		{"lower method", func(r *Route) { r.Methods = []string{"get"} }, "methods[0]", "uppercase"},
		{"bad method", func(r *Route) { r.Methods = []string{"GET", "G T"} }, "methods[1]", "token"},
		{"dup method", func(r *Route) { r.Methods = []string{"GET", "GET"} }, "methods[1]", "twice"},
		{"empty method", func(r *Route) { r.Methods = []string{""} }, "methods[0]", "empty"},
		{"header value", func(r *Route) { r.Headers = []HeaderMatch{{Name: "x-env", Value: "canary"}} }, "", ""},
		{"header present", func(r *Route) { r.Headers = []HeaderMatch{{Name: "x-env", Present: true}} }, "", ""},
		{"header both", func(r *Route) { r.Headers = []HeaderMatch{{Name: "x-env", Value: "a", Present: true}} }, "headers[0]", "not both"},
		{"header neither", func(r *Route) { r.Headers = []HeaderMatch{{Name: "x-env"}} }, "headers[0]", "present"},
		{"header upper", func(r *Route) { r.Headers = []HeaderMatch{{Name: "X-Env", Present: true}} }, "headers[0].name", "lowercase"},
		{"header no name", func(r *Route) { r.Headers = []HeaderMatch{{Value: "a"}} }, "headers[0].name", "required"},
		{"header dup", func(r *Route) { r.Headers = []HeaderMatch{{Name: "a", Value: "1"}, {Name: "a", Value: "2"}} }, "headers[1].name", "already"},
		{"header ctl value", func(r *Route) { r.Headers = []HeaderMatch{{Name: "a", Value: "x\ny"}} }, "headers[0].value", "control"},
		{"header padded value", func(r *Route) { r.Headers = []HeaderMatch{{Name: "a", Value: " x"}} }, "headers[0].value", "whitespace"},
		{"priority", func(r *Route) { r.Priority = MaxPriority }, "", ""},
		{"priority too high", func(r *Route) { r.Priority = MaxPriority + 1 }, "priority", "at most"},
		{"rewrite", func(r *Route) { r.RewritePrefix = "/v2/" }, "", ""},
		{"bad rewrite", func(r *Route) { r.RewritePrefix = "v2" }, "rewrite_prefix", "start with"},
		{"retry", func(r *Route) { r.Retry = &Retry{Attempts: 5, On: []string{"connect-failure", "reset", "503"}} }, "", ""},
		{"retry too many", func(r *Route) { r.Retry = &Retry{Attempts: 6, On: []string{"503"}} }, "retry.attempts", "at most 5"},
		{"retry no on", func(r *Route) { r.Retry = &Retry{Attempts: 2} }, "retry.on", "required"},
		{"retry bad on", func(r *Route) { r.Retry = &Retry{Attempts: 2, On: []string{"404"}} }, "retry.on[0]", "500 to 599"},
		{"retry dup on", func(r *Route) { r.Retry = &Retry{Attempts: 2, On: []string{"502", "502"}} }, "retry.on[1]", "twice"},
		{"trailing dot", func(r *Route) { r.Host = "example.com." }, "host", `end with "."`},
		{"empty label", func(r *Route) { r.Host = "a..b" }, "host", "empty label"},
		{"bad char host", func(r *Route) { r.Host = "exa_mple.com" }, "host", "invalid character"},
		{"label dash", func(r *Route) { r.Host = "-a.com" }, "host", "start or end"},
		{"bad ipv4", func(r *Route) { r.Host = "1.2.3.256" }, "host", "IPv4"},
		{"long label", func(r *Route) { r.Host = strings.Repeat("a", 64) + ".com" }, "host", "63"},
		{"empty prefix", func(r *Route) { r.Prefix = "" }, "prefix", "required"},
		{"relative prefix", func(r *Route) { r.Prefix = "api" }, "prefix", `start with "/"`},
		{"dotdot", func(r *Route) { r.Prefix = "/a/../b" }, "prefix", `".."`},
		{"dotdot inside", func(r *Route) { r.Prefix = "/a..b" }, "prefix", `".."`},
		{"dot segment", func(r *Route) { r.Prefix = "/a/./b" }, "prefix", `"." segment`},
		{"dot segment with parameters", func(r *Route) { r.Prefix = "/a/.;v=1" }, "prefix", `";" parameters`},
		{"trailing dot segment", func(r *Route) { r.Prefix = "/a/." }, "prefix", `"." segment`},
		{"double slash", func(r *Route) { r.Prefix = "/a//b" }, "prefix", `"//"`},
		{"query", func(r *Route) { r.Prefix = "/a?b" }, "prefix", "query"},
		{"fragment", func(r *Route) { r.Prefix = "/a#b" }, "prefix", "fragment"},
		{"space", func(r *Route) { r.Prefix = "/a b" }, "prefix", "whitespace"},
		{"tab", func(r *Route) { r.Prefix = "/a\tb" }, "prefix", "control character"},
		{"nul", func(r *Route) { r.Prefix = "/a\x00" }, "prefix", "control character"},
		{"del", func(r *Route) { r.Prefix = "/a\x7f" }, "prefix", "control character"},
		{"percent", func(r *Route) { r.Prefix = "/a%2e" }, "prefix", "escapes"},
		{"non ascii", func(r *Route) { r.Prefix = "/caf\u00e9" }, "prefix", "non-ASCII"},
		{"backslash", func(r *Route) { r.Prefix = `/a\b` }, "prefix", "not allowed"},
		{"long prefix", func(r *Route) { r.Prefix = "/" + strings.Repeat("a", MaxPrefixLen) }, "prefix", "at most"},
		{"no cluster", func(r *Route) { r.Cluster = "" }, "cluster", "required"},
		{"bad cluster id", func(r *Route) { r.Cluster = "Back End" }, "cluster", "not a valid id"},
		{"timeout too big", func(r *Route) { r.TimeoutMs = MaxTimeoutMs + 1 }, "timeout_ms", "at most 600000"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := validRoute()
			tc.mod(&r)
			err := r.Validate()
			if tc.field == "" {
				if err != nil {
					t.Fatalf("Validate(%+v) = %v, want nil", r, err)
				}
				return
			}
			fe, ok := First(err)
			if !ok {
				t.Fatalf("Validate(%+v) = %v, want a FieldError on %q", r, err, tc.field)
			}
			if fe.Field != tc.field || !strings.Contains(fe.Reason, tc.reason) {
				t.Fatalf("Validate(%+v) = %q on %q, want field %q with reason containing %q", r, fe.Reason, fe.Field, tc.field, tc.reason)
			}
			if !strings.HasPrefix(err.Error(), tc.field+": ") {
				t.Fatalf("message %q does not start with the field name", err.Error())
			}
		})
	}
}

func TestRouteValidateReportsAllProblems(t *testing.T) {
	r := Route{ID: "Bad", Host: "A", Prefix: "x", TimeoutMs: MaxTimeoutMs + 1}
	got := fmt.Sprint(fieldsOfErr(t, r.Validate()))
	if want := "[id host prefix cluster timeout_ms]"; got != want {
		t.Fatalf("fields = %s, want %s", got, want)
	}
}

func TestClusterValidate(t *testing.T) {
	tests := []struct {
		name   string
		mod    func(*Cluster)
		field  string
		reason string
	}{
		{"valid", func(c *Cluster) {}, "", ""},
		{"one endpoint", func(c *Cluster) { c.Endpoints = c.Endpoints[:1] }, "", ""},
		{"max connect timeout", func(c *Cluster) { c.ConnectTimeoutMs = MaxTimeoutMs }, "", ""},
		{"upper dns name", func(c *Cluster) { c.Endpoints[2].Address = "SVC.internal:443" }, "", ""},
		{"port 65535", func(c *Cluster) { c.Endpoints[0].Address = "10.0.0.1:65535" }, "", ""},

		{"bad id", func(c *Cluster) { c.ID = "_x" }, "id", "not a valid id"},
		{"no endpoints", func(c *Cluster) { c.Endpoints = nil }, "endpoints", "at least one"},
		{"too many endpoints", func(c *Cluster) {
			c.Endpoints = make([]Endpoint, MaxEndpoints+1)
		}, "endpoints", "at most"},
		{"empty address", func(c *Cluster) { c.Endpoints[1].Address = "" }, "endpoints[1].address", "required"},
		{"no port", func(c *Cluster) { c.Endpoints[2].Address = "svc.internal" }, "endpoints[2].address", "host:port"},
		{"empty port", func(c *Cluster) { c.Endpoints[2].Address = "svc.internal:" }, "endpoints[2].address", "port is missing"},
		{"port zero", func(c *Cluster) { c.Endpoints[0].Address = "10.0.0.1:0" }, "endpoints[0].address", "1 to 65535"},
		{"port too big", func(c *Cluster) { c.Endpoints[0].Address = "10.0.0.1:65536" }, "endpoints[0].address", "1 to 65535"},
		{"port name", func(c *Cluster) { c.Endpoints[0].Address = "10.0.0.1:http" }, "endpoints[0].address", "1 to 65535"},
		{"port sign", func(c *Cluster) { c.Endpoints[0].Address = "10.0.0.1:+80" }, "endpoints[0].address", "1 to 65535"},
		{"no host", func(c *Cluster) { c.Endpoints[0].Address = ":80" }, "endpoints[0].address", "host is missing"},
		{"bare ipv6", func(c *Cluster) { c.Endpoints[1].Address = "::1:80" }, "endpoints[1].address", "host:port"},
		{"ipv6 zone", func(c *Cluster) { c.Endpoints[1].Address = "[fe80::1%eth0]:80" }, "endpoints[1].address", "zone"},
		{"bracketed ipv4", func(c *Cluster) { c.Endpoints[1].Address = "[10.0.0.1]:80" }, "endpoints[1].address", "IPv6"},
		{"bad host", func(c *Cluster) { c.Endpoints[2].Address = "bad_host:80" }, "endpoints[2].address", "invalid character"},
		{"bad ipv4", func(c *Cluster) { c.Endpoints[2].Address = "10.0.0.300:80" }, "endpoints[2].address", "IPv4"},
		{"duplicate", func(c *Cluster) { c.Endpoints[2].Address = "10.0.0.1:8080" }, "endpoints[2].address", "duplicates endpoints[0]"},
		{"duplicate ipv6 spelling", func(c *Cluster) { c.Endpoints[2].Address = "[0:0::1]:80" }, "endpoints[2].address", "duplicates endpoints[1]"},
		{"duplicate name case", func(c *Cluster) {
			c.Endpoints = append(c.Endpoints, Endpoint{Address: "SVC.INTERNAL:443"})
		}, "endpoints[3].address", "duplicates endpoints[2]"},
		{"connect timeout", func(c *Cluster) { c.ConnectTimeoutMs = MaxTimeoutMs + 1 }, "connect_timeout_ms", "at most"},
		{"round robin", func(c *Cluster) { c.LB = LBRoundRobin }, "", ""},
		{"least request", func(c *Cluster) { c.LB = LBLeastRequest }, "", ""},
		{"weighted", func(c *Cluster) { c.LB = LBWeightedRoundRobin; c.Endpoints[0].Weight = 1000 }, "", ""},
		{"weight too high", func(c *Cluster) { c.LB = LBWeightedRoundRobin; c.Endpoints[1].Weight = 1001 }, "endpoints[1].weight", "1 to 1000"},
		{"weight without wrr", func(c *Cluster) { c.Endpoints[0].Weight = 5 }, "endpoints[0].weight", "weighted_round_robin"},
		{"unknown lb", func(c *Cluster) { c.LB = "random" }, "lb", "not a policy"},
		{"hash header", func(c *Cluster) { c.LB = LBHash; c.HashOn = &HashOn{Header: "x-user"} }, "", ""},
		{"hash cookie", func(c *Cluster) { c.LB = LBHash; c.HashOn = &HashOn{Cookie: "sid"} }, "", ""},
		{"hash ip", func(c *Cluster) { c.LB = LBHash; c.HashOn = &HashOn{SourceIP: true} }, "", ""},
		{"hash missing", func(c *Cluster) { c.LB = LBHash }, "hash_on", "required"},
		{"hash two", func(c *Cluster) { c.LB = LBHash; c.HashOn = &HashOn{Cookie: "sid", SourceIP: true} }, "hash_on", "exactly one"},
		{"hash none", func(c *Cluster) { c.LB = LBHash; c.HashOn = &HashOn{} }, "hash_on", "exactly one"},
		{"hash upper header", func(c *Cluster) { c.LB = LBHash; c.HashOn = &HashOn{Header: "X-User"} }, "hash_on.header", "lowercase"},
		{"hash_on without hash", func(c *Cluster) { c.HashOn = &HashOn{SourceIP: true} }, "hash_on", "only allowed"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := validCluster()
			c.Endpoints = append([]Endpoint(nil), c.Endpoints...)
			tc.mod(&c)
			err := c.Validate()
			if tc.field == "" {
				if err != nil {
					t.Fatalf("Validate = %v, want nil", err)
				}
				return
			}
			fe, ok := First(err)
			if !ok {
				t.Fatalf("Validate = %v, want a FieldError on %q", err, tc.field)
			}
			if fe.Field != tc.field || !strings.Contains(fe.Reason, tc.reason) {
				t.Fatalf("Validate = %q on %q, want field %q with reason containing %q", fe.Reason, fe.Field, tc.field, tc.reason)
			}
		})
	}
}

func TestMatchKey(t *testing.T) {
	a := Route{Host: "h", Prefix: "/a", Methods: []string{"POST", "GET"}, Headers: []HeaderMatch{{Name: "b", Value: "1"}, {Name: "a", Present: true}}}
	b := Route{Host: "h", Prefix: "/a", Methods: []string{"GET", "POST"}, Headers: []HeaderMatch{{Name: "a", Present: true}, {Name: "b", Value: "1"}}}
	if a.MatchKey() != b.MatchKey() {
		t.Fatal("order of methods or headers changes the match key")
	}
	for _, other := range []Route{
		{Host: "h", Path: "/a", Methods: a.Methods, Headers: a.Headers},
		{Host: "h", Prefix: "/a", Headers: a.Headers},
		{Host: "h", Prefix: "/a", Methods: a.Methods},
		{Host: "h", Prefix: "/a", Methods: a.Methods, Headers: []HeaderMatch{{Name: "b", Value: "2"}, {Name: "a", Present: true}}},
	} {
		if other.MatchKey() == a.MatchKey() {
			t.Errorf("%+v has the same match key as %+v", other, a)
		}
	}
}

func TestDecodeNewFields(t *testing.T) {
	r, err := DecodeRoute([]byte(`{"id":"r","host":"*.example.com","path":"/x","cluster":"c","methods":["GET"],
		"headers":[{"name":"x-env","value":"canary"},{"name":"x-debug","present":true}],"priority":7,
		"rewrite_prefix":"/y","retry":{"attempts":2,"on":["connect-failure","503"]}}`))
	if err != nil || r.Validate() != nil {
		t.Fatalf("decode: %v, validate: %v", err, r.Validate())
	}
	if r.Retry.Attempts != 2 || len(r.Retry.RetryStatuses()) != 1 || r.Retry.RetryStatuses()[0] != 503 || r.Priority != 7 || !r.Headers[1].Present {
		t.Fatalf("decoded %+v", r)
	}
	if _, err := DecodeRoute([]byte(`{"id":"r","retry":{"attempts":9000}}`)); err == nil || !strings.Contains(err.Error(), "retry.attempts") {
		t.Fatalf("out-of-range attempts: %v", err)
	}
	c, err := DecodeCluster([]byte(`{"id":"c","lb":"hash","hash_on":{"cookie":"sid"},"endpoints":[{"address":"a:1","weight":3}]}`))
	if err != nil || c.HashOn.Cookie != "sid" || c.Endpoints[0].Weight != 3 {
		t.Fatalf("cluster %+v: %v", c, err)
	}
}

func TestClusterValidateReportsEveryEndpoint(t *testing.T) {
	c := Cluster{ID: "c", Endpoints: []Endpoint{{Address: "a:1"}, {Address: "b"}, {Address: "a:1"}, {Address: "c:0"}}}
	got := fmt.Sprint(fieldsOfErr(t, c.Validate()))
	if want := "[endpoints[1].address endpoints[2].address endpoints[3].address]"; got != want {
		t.Fatalf("fields = %s, want %s", got, want)
	}
}

func TestDecodeStrict(t *testing.T) {
	tests := []struct {
		name   string
		in     string
		field  string // "" = success
		reason string
	}{
		{"ok", `{"id":"a","host":"*","prefix":"/","cluster":"c","timeout_ms":5}`, "", ""},
		{"ok whitespace", " \n{\"id\":\"a\"}\n ", "", ""},
		{"unknown field", `{"id":"a","hots":"x"}`, "hots", "unknown field"},
		{"case mismatch", `{"ID":"a"}`, "ID", `did you mean "id"`},
		{"duplicate", `{"id":"a","id":"b"}`, "id", "duplicate"},
		{"wrong type", `{"id":1}`, "id", "must be a string, got the number 1"},
		{"null string", `{"id":null}`, "id", "got null"},
		{"negative", `{"timeout_ms":-1}`, "timeout_ms", "integer from 0 to 4294967295"},
		{"fraction", `{"timeout_ms":1.5}`, "timeout_ms", "integer"},
		{"overflow", `{"timeout_ms":4294967296}`, "timeout_ms", "integer"},
		{"not object", `[1]`, "", "must be an object, got an array"},
		{"trailing", `{"id":"a"} {}`, "", "after the JSON object"},
		{"truncated", `{"id":"a"`, "", "truncated"},
		{"syntax", `{"id" "a"}`, "id", "malformed JSON at byte 6"},
		{"empty", ``, "", "truncated"},
		{"bad utf8", "{\"id\":\"\xff\"}", "", "UTF-8"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := DecodeRoute([]byte(tc.in))
			if tc.field == "" && tc.reason == "" {
				if err != nil {
					t.Fatalf("DecodeRoute(%q) = %v", tc.in, err)
				}
				return
			}
			var fe *FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("DecodeRoute(%q) = %v, want a FieldError", tc.in, err)
			}
			if fe.Field != tc.field || !strings.Contains(fe.Reason, tc.reason) {
				t.Fatalf("DecodeRoute(%q) = field %q reason %q, want field %q reason containing %q", tc.in, fe.Field, fe.Reason, tc.field, tc.reason)
			}
		})
	}
}

func TestDecodeClusterPaths(t *testing.T) {
	_, err := DecodeCluster([]byte(`{"id":"c","endpoints":[{"address":"a:1"},{"address":"b:1","wieght":3}]}`))
	fe, ok := First(err)
	if !ok || fe.Field != "endpoints[1].wieght" || fe.Reason != "unknown field" {
		t.Fatalf("got %v, want endpoints[1].wieght: unknown field", err)
	}
	c, err := DecodeCluster([]byte(`{"id":"c","endpoints":[{"address":"a:1"}],"connect_timeout_ms":250}`))
	if err != nil || c.ID != "c" || len(c.Endpoints) != 1 || c.Endpoints[0].Address != "a:1" || c.ConnectTimeoutMs != 250 {
		t.Fatalf("DecodeCluster = %+v, %v", c, err)
	}
}

func FuzzDecodeRoute(f *testing.F) {
	for _, s := range []string{
		`{"id":"a","host":"*","prefix":"/","cluster":"c","timeout_ms":5}`,
		`{"id":"a","id":"b"}`, `{"ID":1}`, `[`, `{"timeout_ms":1e3}`, `null`, "{\"id\":\"\xff\"}",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := DecodeRoute(b)
		if err != nil {
			var fe *FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("error %v is not a FieldError", err)
			}
			return
		}
		_ = r.Validate() // must not panic on anything the decoder accepts
	})
}

func FuzzDecodeCluster(f *testing.F) {
	f.Add([]byte(`{"id":"c","endpoints":[{"address":"a:1"},{"address":"[::1]:2"}],"connect_timeout_ms":250}`))
	f.Add([]byte(`{"endpoints":[{"address":"[fe80::1%eth0]:1"}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := DecodeCluster(b)
		if err != nil {
			return
		}
		_ = c.Validate()
	})
}

func BenchmarkValidateCluster(b *testing.B) {
	c := validCluster()
	b.ReportAllocs()
	for b.Loop() {
		if err := c.Validate(); err != nil {
			b.Fatal(err)
		}
	}
}
