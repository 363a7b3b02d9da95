package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/snapgate/snapgate/loadtest"
)

func TestLoadUsage(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{}, "--target is required"},
		{[]string{"--target", "127.0.0.1:1", "--rate", "fast"}, `--rate: schedule "fast"`},
		{[]string{"--target", "127.0.0.1:1", "--slo", "p99=2"}, "--slo:"},
		{[]string{"--target", "127.0.0.1:1", "--header", "X-Key"}, `--header "X-Key"`},
		{[]string{"--target", "127.0.0.1:1", "-o", "xml"}, `-o "xml"`},
		{[]string{"--target", "127.0.0.1:1", "--path", "nope"}, "must start with /"},
		{[]string{"--target", "127.0.0.1:1", "extra"}, `unexpected argument "extra"`},
		{[]string{"--target", "127.0.0.1:1", "--body", "a", "--body-file", "b"}, "exclusive"},
		{[]string{"--nope"}, "flag provided but not defined"},
		// Zero would silently take loadtest's default; say so instead.
		{[]string{"--target", "127.0.0.1:1", "--conns", "0"}, "--conns 0: want 1 to 10000 connections"},
		{[]string{"--target", "127.0.0.1:1", "--conns", "-3"}, "--conns -3: want 1 to 10000"},
		{[]string{"--target", "127.0.0.1:1", "--conns", "10001"}, "--conns 10001: want 1 to 10000"},
		{[]string{"--target", "127.0.0.1:1", "--timeout", "0s"}, "--timeout 0s: want a positive duration"},
		{[]string{"--target", "127.0.0.1:1", "--timeout", "-1s"}, "--timeout -1s: want a positive duration"},
		{[]string{"--target", "127.0.0.1:1", "--duration", "-1s"}, "--duration -1s: must not be negative"},
		{[]string{"--target", "127.0.0.1:1", "--warmup", "-1s"}, "--warmup -1s: must not be negative"},
		{[]string{"--target", "127.0.0.1:1", "--method", ""}, "--method is empty"},
	} {
		var stdout, stderr bytes.Buffer
		if code := runLoad(context.Background(), tc.args, &stdout, &stderr); code != 2 || !strings.Contains(stderr.String(), tc.want) {
			t.Errorf("load %q: code %d stderr %q, want 2 and %q", tc.args, code, stderr.String(), tc.want)
		}
	}
}

func TestLoadRun(t *testing.T) {
	var keys atomic.Int64 // two client connections: handlers run concurrently
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Api-Key") == "k" {
			keys.Add(1)
		}
		w.Write([]byte("ok"))
	}))
	defer srv.Close()
	target := strings.TrimPrefix(srv.URL, "http://")

	var stdout, stderr bytes.Buffer
	code := runLoad(context.Background(), []string{"--target", target, "--rate", "200", "--duration", "1100ms", "--conns", "2",
		"--header", "X-Api-Key: k", "--slo", "p99=5s,errors=0%", "-o", "json", "--progress"}, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("exit %d, stderr %s", code, stderr.String())
	}
	var res loadtest.Result
	if err := json.Unmarshal(stdout.Bytes(), &res); err != nil {
		t.Fatalf("json output: %v\n%s", err, stdout.String())
	}
	if res.Completed != 220 || res.Status["200"] != 220 || res.SLO != "p99=5s,errors=0%" || res.Violations == nil || len(res.Violations) != 0 || keys.Load() != 220 {
		t.Errorf("result %+v keys %d", res, keys.Load())
	}
	if !strings.Contains(stderr.String(), "sent ") {
		t.Errorf("no progress line on stderr: %q", stderr.String())
	}

	stdout.Reset()
	stderr.Reset()
	code = runLoad(context.Background(), []string{"--target", target, "--rate", "100:200ms", "--slo", "p50=1ns"}, &stdout, &stderr)
	if code != 1 || !strings.Contains(stdout.String(), "slo        FAIL: p50") || stderr.Len() != 0 {
		t.Errorf("failing SLO: exit %d stdout %s stderr %s", code, stdout.String(), stderr.String())
	}
	t.Log(stdout.String())
}
