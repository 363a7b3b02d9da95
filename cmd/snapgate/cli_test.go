package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestConfigFileThenFlags(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ctrl.yaml")
	if err := os.WriteFile(path, []byte("data_dir: /srv/ctrl\ndebounce: 50ms\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := defaultCtrlConfig()
	if err := loadConfig(path, &cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.DataDir != "/srv/ctrl" || cfg.Debounce != 50*time.Millisecond || cfg.KeepSnapshots != 10 {
		t.Fatalf("config file not applied over defaults: %+v", cfg)
	}
	if got := configFlag([]string{"--log-level", "debug", "--config", path}); got != path {
		t.Fatalf("configFlag = %q", got)
	}
	if got := configFlag([]string{"-config=" + path}); got != path {
		t.Fatalf("configFlag = %q", got)
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
		{[]string{"ctrl", "--config", filepath.Join(missing, "x.yaml")}, 2, "config"},
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

// TestDemo runs 'snapgate demo' on free ports the way the README does, checks
// the sample routes answer, and that SIGINT stops it cleanly.
func TestDemo(t *testing.T) {
	dir := t.TempDir()
	edgeAddr := freeAddr(t)
	p := startProc(t, "demo", "demo", "--dir", filepath.Join(dir, "demo"), "--edge", edgeAddr,
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
	if out := g.mustCtl("route", "list"); !strings.Contains(out, "3 routes") || !strings.Contains(out, "prefix /api") {
		t.Fatalf("route list: %s", out)
	}
	p.kill(syscall.SIGINT)
	if code := p.cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("demo exited %d after SIGINT:\n%s", code, p.output())
	}
	if !strings.Contains(p.output(), "stopping") {
		t.Fatalf("demo did not say it stopped:\n%s", p.output())
	}
}
