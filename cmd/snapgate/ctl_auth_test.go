package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/snapgate/snapgate/ctrl/admin"
	"github.com/snapgate/snapgate/ctrl/model"
)

// ctlWithStdin runs 'snapgate ctl' with stdin and returns its exit code
// and output.
func (g *gateway) ctlWithStdin(stdin string, args ...string) (int, string) {
	g.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, binPath, append([]string{"ctl", "--socket", g.socket}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode(), string(out)
	} else if err != nil {
		g.t.Fatalf("ctl %v: %v", args, err)
	}
	return 0, string(out)
}

func (g *gateway) wantCtl(code int, says string, args ...string) string {
	g.t.Helper()
	got, out := g.ctl(args...)
	if got != code || !strings.Contains(out, says) {
		g.t.Fatalf("ctl %v: exit %d, output %q; want exit %d and %q", args, got, out, code, says)
	}
	return out
}

// TestCtlAuthCommands drives consumers, issuers and policies through the
// real binary against a real ctrl: output, exit codes, and that secrets
// show up once (a generated key) or never (passwords, HMAC keys).
func TestCtlAuthCommands(t *testing.T) {
	g := newGateway(t)
	g.startCtrl()
	dir := t.TempDir()
	file := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	const hmac = "-ebuDNsVZ2iJtoZ-akfXTSCt4UO2cruLCsbWlBinggE"
	issuer := file("issuer.json", `{"id":"idp","issuer":"https://idp.example","algorithms":["HS256"],
		"keys":{"keys":[{"kty":"oct","alg":"HS256","kid":"h1","k":"`+hmac+`"}]}}`)
	policy := file("policy.json", `{"id":"api-auth","scope":{"route":"api"},
		"auth":{"methods":["api_key","jwt","basic"],"required":true},"acl":{"allow_groups":["staff"]},
		"claims":{"iss":["idp"]},"rate_limits":[{"key":"consumer","rate":100,"burst":20,"scope":"cluster"}]}`)
	orphan := file("orphan.json", `{"id":"orphan","scope":{"route":"nope"}}`)

	g.mustCtl("cluster", "put", "--id", "c", "--endpoint", "127.0.0.1:9")
	g.mustCtl("route", "put", "--id", "api", "--prefix", "/api", "--cluster", "c")
	g.wantCtl(0, `jwt_issuer "idp" stored: version `, "issuer", "put", "-f", issuer, "--expected-version", "0")
	created, _ := storedVersion(t, g.wantCtl(0, `consumer "alice" stored: version `, "consumer", "put", "--id", "alice", "--group", "staff"))
	aliceV, err := strconv.ParseUint(created, 10, 64)
	if err != nil {
		t.Fatal(err)
	}

	out := g.wantCtl(0, `new API key "laptop"`, "consumer", "add-key", "alice", "--id", "laptop")
	var key string
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, "sg_") {
			key = line
		}
	}
	if key == "" {
		t.Fatalf("add-key printed no key:\n%s", out)
	}
	var added admin.Result
	if err := json.Unmarshal([]byte(g.mustCtl("consumer", "add-key", "alice", "-o", "json")), &added); err != nil || !strings.HasPrefix(added.APIKey, "sg_") {
		t.Fatalf("add-key -o json: %+v, %v", added, err)
	}
	g.wantCtl(1, `already has an API key "laptop"`, "consumer", "add-key", "alice", "--id", "laptop")

	// Two keys were added since alice was created.
	if code, out := g.ctlWithStdin("s3cret-pass\n", "consumer", "set-password", "alice", "alice", "--expected-version", strconv.FormatUint(aliceV+2, 10)); code != 0 || !strings.Contains(out, fmt.Sprintf("version %d ", aliceV+3)) {
		t.Fatalf("set-password: exit %d: %s", code, out)
	}
	if code, out := g.ctlWithStdin("", "consumer", "set-password", "alice", "alice"); code != 1 || !strings.Contains(out, "empty") {
		t.Fatalf("set-password with nothing on stdin: exit %d: %s", code, out)
	}
	// A document on stdin with an unknown field is named as stdin's.
	if code, out := g.ctlWithStdin(`{"id":"r9","host":"*","prefix":"/r9","cluster":"c","retry_attempts":1}`, "route", "put", "-f", "-"); code != 1 || !strings.Contains(out, "stdin: retry_attempts: unknown field") {
		t.Fatalf("route put -f - with an unknown field: exit %d: %s", code, out)
	}

	for _, args := range [][]string{
		{"consumer", "get", "alice"}, {"consumer", "list"},
		{"consumer", "get", "alice", "-o", "json"}, {"consumer", "list", "-o", "json"},
	} {
		out := g.mustCtl(args...)
		for _, secret := range []string{key, added.APIKey, "s3cret", "pbkdf2"} {
			if strings.Contains(out, secret) {
				t.Fatalf("ctl %v shows a secret (%q):\n%s", args, secret, out)
			}
		}
	}
	out = g.wantCtl(0, "api_key laptop", "consumer", "get", "alice")
	if !strings.Contains(out, "sha256:") || !strings.Contains(out, "basic") || !strings.Contains(out, "staff") {
		t.Fatalf("consumer get:\n%s", out)
	}
	g.wantCtl(0, "1 consumer at revision", "consumer", "list")
	g.wantCtl(0, "laptop=sha256:", "consumer", "list")
	g.wantCtl(0, fmt.Sprintf(`consumer "alice" stored: version %d `, aliceV+4), "consumer", "remove-key", "alice", "key-1")
	g.wantCtl(1, `has no API key "key-1"`, "consumer", "remove-key", "alice", "key-1")

	// A put from flags sets the groups and keeps the credentials (a lost
	// API key cannot be put back).
	g.wantCtl(0, fmt.Sprintf(`consumer "alice" stored: version %d `, aliceV+5), "consumer", "put", "--id", "alice", "--group", "admin")
	out = g.wantCtl(0, "api_key laptop", "consumer", "get", "alice")
	if !strings.Contains(out, "basic") || !strings.Contains(out, "admin") || strings.Contains(out, "staff") {
		t.Fatalf("consumer get after a put of its groups: want the new group, the key and the password kept:\n%s", out)
	}
	g.wantCtl(1, fmt.Sprintf("is at version %d, expected %d", aliceV+5, aliceV+4), "consumer", "put", "--id", "alice", "--group", "x", "--expected-version", strconv.FormatUint(aliceV+4, 10))

	out = g.wantCtl(0, "kid h1, oct HS256", "issuer", "get", "idp")
	if strings.Contains(out, hmac) || strings.Contains(g.mustCtl("issuer", "list", "-o", "json"), hmac) {
		t.Fatalf("issuer get/list shows the HMAC key:\n%s", out)
	}
	g.wantCtl(0, "1 issuer at revision", "issuer", "list")

	policyV, _ := storedVersion(t, g.wantCtl(0, `policy "api-auth" stored: version `, "policy", "put", "-f", policy, "--expected-version", "0"))
	g.wantCtl(1, "conflict: expected_version", "policy", "put", "-f", policy, "--expected-version", "0")
	g.wantCtl(1, `invalid: scope.route: route "nope" does not exist`, "policy", "put", "-f", orphan)
	g.wantCtl(0, "route:api", "policy", "list")
	g.wantCtl(0, "consumer 100/s burst 20 cluster", "policy", "get", "api-auth")
	g.wantCtl(1, `jwt_issuer "idp" is used by policy "api-auth"`, "issuer", "delete", "idp")
	g.wantCtl(1, `route "api" is used by policy "api-auth"`, "route", "delete", "api")

	out = g.wantCtl(0, "1 consumer, 1 jwt issuer, 1 policy", "status")
	if !strings.Contains(out, "1 edges share cluster-scope rate limits") {
		t.Fatalf("status without edges should show the fleet size floor of 1:\n%s", out)
	}
	var st admin.Status
	if err := json.Unmarshal([]byte(g.mustCtl("status", "-o", "json")), &st); err != nil || st.Policies != 1 || st.FleetSize != 1 {
		t.Fatalf("status -o json: %+v, %v", st, err)
	}
	g.wantCtl(0, `policy "api-auth" deleted`, "policy", "delete", "api-auth", "--expected-version", policyV)
	g.wantCtl(0, `jwt_issuer "idp" deleted`, "issuer", "delete", "idp")
	g.wantCtl(0, "fleet     unused", "status")
}

func TestReadPassword(t *testing.T) {
	for _, c := range []struct {
		in, want, err string
	}{
		{"pw\n", "pw", ""},
		{"pw\r\nrest", "pw", ""},
		{"no newline", "no newline", ""},
		{"", "", "empty"},
		{"\n", "", "empty"},
		{strings.Repeat("x", maxPassword+1), "", "longer than"},
		{strings.Repeat("x", 4*maxPassword) + "\n", "", "longer than"},
	} {
		got, err := readPassword(strings.NewReader(c.in))
		if got != c.want || (c.err == "") != (err == nil) || err != nil && !strings.Contains(err.Error(), c.err) {
			t.Errorf("readPassword(%.20q) = %q, %v; want %q, %q", c.in, got, err, c.want, c.err)
		}
	}
}

// TestCtlConsumerPutKeepsCurrentCredentials: the credentials a put from
// flags keeps are the ones stored when ctrl writes it. Here the consumer is
// revoked (deleted) and created again, with a new key, after ctl built its
// put; the version restarts, so a put conditional on a version read before
// would have brought back the revoked key and dropped the new one.
func TestCtlConsumerPutKeepsCurrentCredentials(t *testing.T) {
	g := newGateway(t)
	g.startCtrl()
	g.mustCtl("consumer", "put", "--id", "alice")
	g.mustCtl("consumer", "add-key", "alice", "--id", "revoked")

	var globals ctlGlobals
	req, err := ctlRequest([]string{"consumer", "put", "--id", "alice", "--group", "staff"}, &globals, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	g.mustCtl("consumer", "delete", "alice")
	g.mustCtl("consumer", "put", "--id", "alice")
	g.mustCtl("consumer", "add-key", "alice", "--id", "fresh")

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cl, err := admin.DialContext(ctx, g.socket)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if rep, err := cl.Call(ctx, req); err != nil || !rep.OK {
		t.Fatalf("the put built before the re-create: %+v, %v", rep, err)
	}
	got, err := cl.GetConsumer(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	keys := got.Consumer.Credentials.APIKeys
	if len(keys) != 1 || keys[0].ID != "fresh" || !slices.Equal(got.Consumer.Groups, []string{"staff"}) {
		t.Fatalf("alice after the put: groups %v, keys %+v; want [staff] and the key \"fresh\" alone", got.Consumer.Groups, keys)
	}

	// A new consumer gets no credentials; credentials sent along with
	// keep_credentials are refused, not merged.
	g.wantCtl(0, `consumer "bob" stored: version `, "consumer", "put", "--id", "bob", "--group", "staff")
	_, err = cl.Call(ctx, admin.Request{Cmd: admin.CmdConsumerPut, KeepCredentials: true, Consumer: &model.Consumer{ID: "bob",
		Credentials: model.Credentials{APIKeys: []model.APIKeyCredential{{ID: "k", Hash: model.HashAPIKey("sg_x")}}}}})
	if ae, ok := err.(*admin.Error); !ok || ae.Code != admin.CodeBadRequest || ae.Field != "consumer.credentials" {
		t.Fatalf("keep_credentials with credentials: %v; want bad_request on consumer.credentials", err)
	}
}
