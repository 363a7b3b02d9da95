package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/snapgate/snapgate/ctrl/admin"
)

// TestConfigFileThenFlags: the --config file is applied over the defaults
// and flags on the command line win over the file, wherever --config
// stands; a flag value that happens to be "config" is a value.
func TestConfigFileThenFlags(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ctrl.yaml")
	if err := os.WriteFile(path, []byte("data_dir: /srv/ctrl\ndebounce: 50ms\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		args     []string
		dataDir  string
		debounce time.Duration
	}{
		{[]string{"--config", path}, "/srv/ctrl", 50 * time.Millisecond},
		{[]string{"--debounce", "70ms", "--config=" + path}, "/srv/ctrl", 70 * time.Millisecond},
		{[]string{"--config", path, "--debounce", "70ms"}, "/srv/ctrl", 70 * time.Millisecond},
		{[]string{"--data-dir", "config", "--config", path}, "config", 50 * time.Millisecond},
		{[]string{"--data-dir", "config"}, "config", 20 * time.Millisecond},
	} {
		cfg := defaultCtrlConfig()
		var stderr bytes.Buffer
		_, code, ok := parseDaemon("ctrl", c.args, &stderr, &cfg, &cfg.LogLevel, &cfg.StreamSecretFile, func(fs *flag.FlagSet) {
			fs.StringVar(&cfg.DataDir, "data-dir", cfg.DataDir, "")
			fs.DurationVar(&cfg.Debounce, "debounce", cfg.Debounce, "")
		})
		if !ok || cfg.DataDir != c.dataDir || cfg.Debounce != c.debounce || cfg.KeepSnapshots != 10 {
			t.Errorf("%v: ok %v, exit %d, %s; data_dir %q debounce %v keep_snapshots %d, want %q %v 10",
				c.args, ok, code, stderr.String(), cfg.DataDir, cfg.Debounce, cfg.KeepSnapshots, c.dataDir, c.debounce)
		}
	}
}

func TestConfigFileUnknownKey(t *testing.T) {
	path := filepath.Join(t.TempDir(), "edge.yaml")
	if err := os.WriteFile(path, []byte("listen: :80\nlisten_addr: :81\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := defaultEdgeConfig()
	err := loadConfig(path, &cfg)
	if err == nil || !strings.Contains(err.Error(), "listen_addr") || !strings.Contains(err.Error(), path) {
		t.Fatalf("unknown key: err = %v, want one naming the key and the file", err)
	}
}

// TestUsageExitCodes pins the CLI contract: 0 for help, 2 for bad usage, 1
// when ctrl cannot be reached.
func TestUsageExitCodes(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "none.sock")
	// A negative value is blamed on the config file only if it came from it.
	emptyConfig, negativeConfig := filepath.Join(t.TempDir(), "empty.yaml"), filepath.Join(t.TempDir(), "negative.yaml")
	if err := os.WriteFile(emptyConfig, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(negativeConfig, []byte("debounce: -2s\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		args []string
		code int
		says string
	}{
		{[]string{"--help"}, 0, "usage: snapgate"},
		{[]string{"ctrl", "--help"}, 0, "stream-listen"},
		{[]string{"edge", "--help"}, 0, "header-timeout"},
		{[]string{"ctl", "--help"}, 0, "expected-version"},
		{[]string{"demo", "--help"}, 0, "backend-a"},
		{[]string{"nope"}, 2, "unknown command"},
		{nil, 2, "usage"},
		{[]string{"ctl", "--socket", missing}, 2, "missing command"},
		{[]string{"ctl", "--socket", missing, "route"}, 2, "missing verb"},
		{[]string{"ctl", "--socket", missing, "route", "frob"}, 2, "unknown verb"},
		{[]string{"ctl", "--socket", missing, "route", "get"}, 2, "usage: route get ID"},
		{[]string{"ctl", "--socket", missing, "route", "put", "--expected-version", "x"}, 2, "want a version number"},
		{[]string{"ctl", "--socket", missing, "-o", "yaml", "status"}, 2, "want text or json"},
		{[]string{"ctl", "--socket", missing, "route", "put", "-f", "r.json", "--id", "x"}, 2, "cannot be combined"},
		{[]string{"ctl", "--socket", missing, "status"}, 1, "cannot reach ctrl"},
		{[]string{"ctl", "status", "--socket", missing}, 1, missing},
		{[]string{"ctl", "route", "list", "--help"}, 0, "usage: snapgate ctl route list"},
		{[]string{"ctl", "cluster", "delete", "-h"}, 0, "expected-version"},
		{[]string{"ctl", "route", "list", "--socket", missing, "-o", "json"}, 1, missing},
		{[]string{"ctl", "--socket", missing, "route", "list", "-o", "yaml"}, 2, "want text or json"},
		{[]string{"ctl", "--socket", missing, "status", "-o"}, 2, "flag needs an argument: -o"},
		{[]string{"ctl", "--socket", missing, "status", "extra"}, 2, "status takes no arguments"},
		{[]string{"ctl", "--socket", missing, "route", "list", "extra"}, 2, "route list takes no arguments"},
		{[]string{"ctl", "--socket", missing, "route", "get", "a", "-o", "json", "b"}, 2, "usage: route get ID"},
		{[]string{"ctl", "--socket", missing, "route", "put", "-f", "r.json", "-o", "json"}, 1, "r.json"},
		{[]string{"ctrl", "--config", filepath.Join(missing, "x.yaml")}, 2, "config"},
		{[]string{"ctl", "--socket", missing, "policy", "put"}, 2, "-f FILE is required"},
		{[]string{"ctl", "--socket", missing, "issuer", "put", "--id", "x"}, 2, "flag provided but not defined: -id"},
		{[]string{"ctl", "--socket", missing, "consumer", "add-key"}, 2, "usage: consumer add-key CONSUMER"},
		{[]string{"ctl", "--socket", missing, "consumer", "remove-key", "a"}, 2, "usage: consumer remove-key CONSUMER KEYID"},
		{[]string{"ctl", "--socket", missing, "consumer", "set-password", "a"}, 2, "usage: consumer set-password CONSUMER USERNAME"},
		{[]string{"ctl", "--socket", missing, "consumer", "frob"}, 2, "add-key, remove-key, set-password"},
		{[]string{"ctl", "--socket", missing, "policy", "add-key", "a"}, 2, `unknown verb "add-key"`},
		{[]string{"ctl", "--socket", missing, "issuer", "get"}, 2, "usage: issuer get ID"},
		{[]string{"ctl", "--socket", missing, "consumer", "add-key", "a", "--expected-version", "-1"}, 2, "want a version number"},
		{[]string{"ctl", "--socket", missing, "consumer", "list"}, 1, "cannot reach ctrl"},
		{[]string{"ctl", "consumer", "add-key", "--help"}, 0, "first free"},
		{[]string{"ctl", "--socket", missing, "report-health", "--cluster", "c", "--endpoint", "a:1", "--state", "up", "--revision", "1"}, 2, `--state "up": want healthy or unhealthy`},
		{[]string{"ctl", "--socket", missing, "report-health", "--cluster", "c", "--endpoint", "a:1", "--state", "healthy"}, 2, "--revision is required"},
		{[]string{"ctl", "--socket", missing, "report-health", "--cluster", "c", "--state", "healthy", "--revision", "1"}, 2, "--endpoint is required"},
		{[]string{"ctl", "--socket", missing, "report-health", "--revision", "0"}, 2, "at least 1"},
		{[]string{"ctl", "--socket", missing, "health", "a", "b"}, 2, "usage: health [CLUSTER]"},
		{[]string{"ctl", "--socket", missing, "explain-health"}, 2, "usage: explain-health [CLUSTER/]HOST:PORT"},
		{[]string{"ctl", "--socket", missing, "explain-health", "/a:1"}, 2, "want [CLUSTER/]HOST:PORT"},
		{[]string{"ctl", "--socket", missing, "health"}, 1, "cannot reach ctrl"},
		{[]string{"ctl", "report-health", "--help"}, 0, "--source"},
		// A malformed id is the command line's fault: exit 2, without ctrl.
		{[]string{"ctl", "--socket", missing, "route", "get", "Shop"}, 2, `"Shop" is not a valid id`},
		{[]string{"ctl", "--socket", missing, "route", "put", "--id", "Shop", "--prefix", "/", "--cluster", "c"}, 2, `--id: "Shop" is not a valid id`},
		{[]string{"ctl", "--socket", missing, "cluster", "put", "--id", "-c", "--endpoint", "a:1"}, 2, `--id: "-c" is not a valid id`},
		{[]string{"ctl", "--socket", missing, "consumer", "remove-key", "alice", "Laptop"}, 2, "key_id"},
		{[]string{"ctl", "--socket", missing, "--timeout", "0", "status"}, 2, "--timeout 0s: want a positive duration"},
		{[]string{"ctl", "--socket", missing, "route", "list"}, 1, "must name ctrl's --admin-socket"},
		// Negative durations and counts name the flag instead of falling
		// back to the default (--listen "" makes a missed check fail fast).
		{[]string{"ctrl", "--debounce", "-5ms"}, 2, "--debounce is -5ms: must not be negative"},
		{[]string{"ctrl", "--config", emptyConfig, "--debounce", "-5ms"}, 2, "snapgate ctrl: --debounce is -5ms: must not be negative"},
		{[]string{"ctrl", "--config", negativeConfig}, 2, "--debounce (config key debounce) is -2s: must not be negative"},
		{[]string{"edge", "--listen", "", "--insecure-stream", "--header-timeout", "-1s"}, 2, "--header-timeout is -1s: must not be negative"},
		{[]string{"edge", "--listen", "", "--insecure-stream", "--keep-snapshots", "-1"}, 2, "--keep-snapshots is -1"},
		{[]string{"ctl", "--socket", missing, "edge"}, 2, "edge: missing verb (forget)"},
		{[]string{"ctl", "--socket", missing, "edge", "list"}, 2, `edge: unknown verb "list": want forget`},
		{[]string{"ctl", "--socket", missing, "edge", "forget"}, 2, "usage: edge forget NODE_ID"},
		{[]string{"ctl", "--socket", missing, "edge", "forget", "a", "b"}, 2, "usage: edge forget NODE_ID"},
		{[]string{"ctl", "--socket", missing, "edge", "forget", "edge one"}, 2, `"edge one" is not a valid node id`},
		{[]string{"ctl", "--socket", missing, "edge", "forget", "Edge-1"}, 1, "cannot reach ctrl"},
		{[]string{"ctl", "edge", "forget", "--help"}, 0, "stop it first"},
		// A malformed ctrl address would only show as reconnect warnings.
		{[]string{"edge", "--listen", "", "--insecure-stream", "--ctrl", "ctrl.internal"}, 2, `--ctrl "ctrl.internal": want host:port`},
		{[]string{"edge", "--listen", "", "--insecure-stream", "--ctrl", "10.0.0.1:99999"}, 2, `port "99999": want a number`},
		// Listen addresses are checked by their flag before anything starts.
		{[]string{"edge", "--insecure-stream", "--listen", "foo"}, 2, `snapgate edge: --listen "foo": want host:port`},
		{[]string{"edge", "--insecure-stream", "--listen", ":0", "--admin-listen", "127.0.0.1:99999"}, 2, `--admin-listen "127.0.0.1:99999": want host:port`},
		{[]string{"ctrl", "--insecure-stream", "--stream-listen", "7400"}, 2, `snapgate ctrl: --stream-listen "7400": want host:port`},
	}
	for _, c := range cases {
		var out, errb bytes.Buffer
		code := dispatch(context.Background(), c.args, &out, &errb)
		all := out.String() + errb.String()
		if code != c.code || !strings.Contains(all, c.says) {
			t.Errorf("snapgate %v: exit %d, output %q; want exit %d and %q", c.args, code, all, c.code, c.says)
		}
	}
}

// TestFlagErrorPrintedOnce: a bad flag is reported once, followed by where
// the usage is, not by the usage itself (and, for ctl, the error again).
func TestFlagErrorPrintedOnce(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "none.sock")
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"ctl", "--bogus", "status"}, "snapgate ctl: flag provided but not defined: -bogus\nRun 'snapgate ctl --help' for usage.\n"},
		{[]string{"ctl", "--socket", missing, "route", "list", "--bogus"}, "snapgate ctl: flag provided but not defined: -bogus\nRun 'snapgate ctl route list --help' for usage.\n"},
		{[]string{"ctl", "--socket", missing, "consumer", "add-key", "a", "--expected-version", "x"}, "snapgate ctl: invalid value \"x\" for flag -expected-version: want a version number, got \"x\"\nRun 'snapgate ctl consumer add-key --help' for usage.\n"},
		{[]string{"ctl", "--socket", missing, "edge", "forget", "e1", "-o"}, "snapgate ctl: flag needs an argument: -o\nRun 'snapgate ctl edge forget --help' for usage.\n"},
		{[]string{"ctrl", "--bogus"}, "snapgate ctrl: flag provided but not defined: -bogus\nRun 'snapgate ctrl --help' for usage.\n"},
		{[]string{"load", "--conns", "many"}, "snapgate load: invalid value \"many\" for flag -conns: parse error\nRun 'snapgate load --help' for usage.\n"},
	} {
		var out, errb bytes.Buffer
		code := dispatch(context.Background(), c.args, &out, &errb)
		if code != 2 || out.Len() != 0 || errb.String() != c.want {
			t.Errorf("snapgate %q: exit %d, stdout %q, stderr %q; want exit 2 and stderr %q", c.args, code, out.String(), errb.String(), c.want)
		}
	}
}

// TestCtlTimeoutSaysWhatMayHaveHappened: against a socket that accepts but
// never answers, ctl gives up after --timeout, says so, and for a write
// warns that it may have been applied, so that nobody retries it blindly.
func TestCtlTimeoutSaysWhatMayHaveHappened(t *testing.T) {
	socket := filepath.Join(t.TempDir(), "silent.sock")
	ln, err := net.Listen("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		var held []net.Conn // open and never answered until the listener closes
		for {
			c, err := ln.Accept()
			if err != nil {
				for _, c := range held {
					c.Close()
				}
				return
			}
			held = append(held, c)
		}
	}()
	defer func() { ln.Close(); <-done }()
	for _, c := range []struct {
		args  []string
		write bool
	}{
		{[]string{"route", "delete", "api", "--expected-version", "3"}, true},
		{[]string{"route", "get", "api"}, false},
	} {
		var out, errb bytes.Buffer
		code := dispatch(context.Background(), append([]string{"ctl", "--socket", socket, "--timeout", "200ms"}, c.args...), &out, &errb)
		msg := errb.String()
		if code != 1 || !strings.Contains(msg, "did not answer within 200ms (--timeout)") ||
			strings.Contains(msg, "may or may not have been applied") != c.write {
			t.Errorf("ctl %v against a silent ctrl: exit %d, stderr %q; want exit 1, the timeout named, and a warning only for a write", c.args, code, msg)
		}
	}
}

// TestCtlFlagsAfterCommand runs ctl against a real ctrl with --socket and -o
// placed after the subcommand, and checks the later flag wins over the earlier.
func TestCtlFlagsAfterCommand(t *testing.T) {
	g := newGateway(t)
	g.startCtrl()
	ctl := func(args ...string) string {
		t.Helper()
		var out, errb bytes.Buffer
		if code := dispatch(context.Background(), append([]string{"ctl"}, args...), &out, &errb); code != 0 {
			t.Fatalf("ctl %v: exit %d: %s%s", args, code, out.String(), errb.String())
		}
		return out.String()
	}
	ctl("cluster", "put", "--id", "a", "--endpoint", "127.0.0.1:9", "--socket", g.socket)
	out := ctl("route", "put", "--id", "api", "--prefix", "/api", "--cluster", "a", "-o", "json", "--socket", g.socket)
	var put admin.Result
	if err := json.Unmarshal([]byte(out), &put); err != nil || put.ID != "api" || put.Version == 0 || put.Version != put.Revision {
		t.Fatalf("route put -o json: %q (%v), want a JSON result for api created at its revision", out, err)
	}

	out = ctl("route", "list", "-o", "json", "--socket", g.socket)
	var l admin.List
	if err := json.Unmarshal([]byte(out), &l); err != nil || len(l.Items) != 1 || l.Items[0].ID != "api" {
		t.Fatalf("route list -o json: %q (%v), want a JSON list holding api", out, err)
	}
	out = ctl("--socket", g.socket, "route", "get", "api", "-o", "json")
	var r admin.Result
	if err := json.Unmarshal([]byte(out), &r); err != nil || r.Route == nil || r.Route.Prefix != "/api" {
		t.Fatalf("route get api -o json: %q (%v), want the route as JSON", out, err)
	}
	out = ctl("--socket", g.socket, "route", "get", "-o", "json", "api")
	if err := json.Unmarshal([]byte(out), &r); err != nil || r.ID != "api" {
		t.Fatalf("route get -o json api: %q (%v), want the route as JSON", out, err)
	}
	out = ctl("--socket", g.socket, "status", "-o", "json")
	var st admin.Status
	if err := json.Unmarshal([]byte(out), &st); err != nil || st.Routes != 1 || st.Clusters != 1 {
		t.Fatalf("status -o json: %q (%v), want JSON status with 1 route and 1 cluster", out, err)
	}
	// The flag after the command overrides the one before it.
	if out = ctl("-o", "json", "--socket", g.socket, "route", "list", "-o", "text"); !strings.Contains(out, "1 route at revision") {
		t.Fatalf("-o json route list -o text: %q, want the text table", out)
	}
	// The later --socket wins: the first names no socket at all, and a refused
	// conditional delete proves ctl reached ctrl through the second.
	var stdout, stderr bytes.Buffer
	code := dispatch(context.Background(), []string{"ctl", "--socket", filepath.Join(t.TempDir(), "none.sock"),
		"route", "delete", "api", "--expected-version", "9", "--socket", g.socket, "-o", "json"}, &stdout, &stderr)
	var e struct {
		Error struct{ Code string }
	}
	if code != 1 || json.Unmarshal(stdout.Bytes(), &e) != nil || e.Error.Code != "conflict" {
		t.Fatalf("stale delete: exit %d stdout %q stderr %q; want exit 1 and a JSON conflict error", code, stdout.String(), stderr.String())
	}
	// A request over the socket's limit is refused before it is sent, and
	// reported as a refusal: JSON on stdout, no "may have been applied".
	big := filepath.Join(t.TempDir(), "big.json")
	if err := os.WriteFile(big, []byte(`{"id":"big","host":"*","prefix":"/`+strings.Repeat("a", 1<<20)+`","cluster":"a"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	stdout.Reset()
	stderr.Reset()
	code = dispatch(context.Background(), []string{"ctl", "--socket", g.socket, "-o", "json", "route", "put", "-f", big}, &stdout, &stderr)
	if code != 1 || json.Unmarshal(stdout.Bytes(), &e) != nil || e.Error.Code != "bad_request" || strings.Contains(stderr.String(), "may or may not") {
		t.Fatalf("oversized put: exit %d stdout %q stderr %q; want exit 1, a JSON bad_request and no hint", code, stdout.String(), stderr.String())
	}
}

// TestDemo runs 'snapgate demo' on free ports the way the README does, checks
// the sample routes answer, and that SIGINT stops it cleanly.
func TestDemo(t *testing.T) {
	dir := t.TempDir()
	edgeAddr, adminAddr := freeAddr(t), freeAddr(t)
	p := startProc(t, "demo", "demo", "--dir", filepath.Join(dir, "demo"), "--edge", edgeAddr, "--admin", adminAddr,
		"--stream", freeAddr(t), "--backend-a", freeAddr(t), "--backend-b", freeAddr(t))
	waitFor(t, 15*time.Second, "the demo's instructions", func() bool {
		return strings.Contains(p.output(), "Press Ctrl-C to stop.")
	})
	g := &gateway{t: t, web: edgeAddr, socket: filepath.Join(dir, "demo", "ctrl.sock")}
	for _, c := range []struct{ host, path, want string }{
		{"", "/api/hello", "backend-a: GET /api/hello"},
		{"", "/anything", "backend-b: GET /anything"},
	} {
		code, body, err := g.get(c.host, c.path)
		if err != nil || code != 200 || !strings.HasPrefix(body, c.want) {
			t.Fatalf("GET %s: %d %q %v, want %q", c.path, code, body, err, c.want)
		}
	}
	seen := map[string]bool{}
	for range 4 {
		_, body, _ := g.get("shop.example", "/cart")
		seen[strings.SplitN(body, ":", 2)[0]] = true
	}
	if !seen["backend-a"] || !seen["backend-b"] {
		t.Fatalf("shop route did not alternate between the backends: %v", seen)
	}
	// The printed metrics command: the requests above are counted by route.
	if !strings.Contains(p.output(), "curl -s http://"+adminAddr+"/metrics") {
		t.Fatalf("the instructions do not show the edge's /metrics:\n%s", p.output())
	}
	resp, err := http.Get("http://" + adminAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !regexp.MustCompile(`snapgate_edge_requests_total\{route="api",class="2xx"\} [1-9]`).Match(metrics) {
		t.Fatalf("edge /metrics lacks the api route's request:\n%s", metrics)
	}
	if out := g.mustCtl("route", "list"); !strings.Contains(out, "3 routes") || !strings.Contains(out, "prefix /api") {
		t.Fatalf("route list: %s", out)
	}
	// The instructions' live change works as printed, and so does their
	// stale repeat's conflict.
	m := regexp.MustCompile(`--cluster backend-b --expected-version (\d+)\n`).FindStringSubmatch(p.output())
	if m == nil {
		t.Fatalf("the instructions name no expected version:\n%s", p.output())
	}
	g.mustCtl("route", "put", "--id", "api", "--host", "*", "--prefix", "/api", "--cluster", "backend-b", "--expected-version", m[1])
	g.waitBody(5*time.Second, "/api/hello", "backend-b: GET /api/hello")
	g.wantCtl(1, "conflict", "route", "put", "--id", "api", "--host", "*", "--prefix", "/api", "--cluster", "backend-a", "--expected-version", m[1])
	p.kill(syscall.SIGINT)
	if code := p.cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("demo exited %d after SIGINT:\n%s", code, p.output())
	}
	if !strings.Contains(p.output(), "stopping") {
		t.Fatalf("demo did not say it stopped:\n%s", p.output())
	}
}

func TestPrintStatusStates(t *testing.T) {
	var out bytes.Buffer
	printStatus(&out, admin.Status{SnapshotVersion: 9, Edges: []admin.EdgeStatus{
		{NodeID: "e1", Connected: true, AppliedVersion: 9},
		{NodeID: "e2", Connected: true, AppliedVersion: 12, Diverged: true, Lag: 1},
		{NodeID: "e3", AppliedVersion: 4, Lag: 5, LastNack: "bad delta"},
	}})
	for _, want := range []string{"e1 ", " up ", "up,diverged", " down ", "bad delta"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("status output lacks %q:\n%s", want, out.String())
		}
	}
}

// A write that failed in transport may have been applied, and ctl says so;
// one the client refused before sending (too large, malformed) was not.
func TestCallHint(t *testing.T) {
	put := admin.Request{Cmd: admin.CmdRoutePut}
	if h := callHint(errors.New("write: broken pipe"), put, time.Second); !strings.Contains(h, "may or may not have been applied") {
		t.Errorf("transport error on a write: hint %q", h)
	}
	if h := callHint(errors.New("write: broken pipe"), admin.Request{Cmd: admin.CmdStatus}, time.Second); h != "" {
		t.Errorf("transport error on a read: hint %q", h)
	}
	refused := admin.Errorf(admin.CodeBadRequest, "", "the route.put request is 2000000 bytes, above the limit; nothing was sent")
	if h := callHint(fmt.Errorf("wrapped: %w", refused), put, time.Second); h != "" {
		t.Errorf("refused before sending: hint %q", h)
	}
}
