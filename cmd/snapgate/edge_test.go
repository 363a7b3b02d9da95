package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/snapgate/snapgate/edge/snapstore"
	"github.com/snapgate/snapgate/fbs"
)

// TestEdgeInvalidNodeID: a node id the stream cannot carry stops the edge at
// start with exit 1 and a message naming it, instead of serving forever
// without ever reaching ctrl.
func TestEdgeInvalidNodeID(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var out, errb bytes.Buffer
	code := dispatch(ctx, []string{"edge", "--node-id", "edge one", "--insecure-stream", "--listen", "127.0.0.1:0",
		"--admin-listen", "", "--ctrl", freeAddr(t), "--data-dir", filepath.Join(t.TempDir(), "edge")}, &out, &errb)
	if ctx.Err() != nil {
		t.Fatal("edge with an invalid node id kept running")
	}
	if code != 1 || !strings.Contains(errb.String(), `node id "edge one"`) {
		t.Fatalf("exit %d, stderr %q; want exit 1 naming the node id", code, errb.String())
	}
}

// TestEdgeMaxBodyBytesFlag runs the edge binary with --max-body-bytes from a
// snapshot on disk (ctrl unreachable): a body over the limit gets 413, one
// at the limit reaches the backend.
func TestEdgeMaxBodyBytesFlag(t *testing.T) {
	dataDir := filepath.Join(t.TempDir(), "edge")
	data, err := fbs.Build(fbs.State{Version: 1,
		Clusters: []fbs.Cluster{{Name: "a", Endpoints: []fbs.Endpoint{{Address: backend(t, "A")}}}},
		Routes:   []fbs.Route{{ID: "all", Host: "*", Prefix: "/", Cluster: "a"}}})
	if err != nil {
		t.Fatal(err)
	}
	store, err := snapstore.Open(dataDir, 5, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if err := store.Save(1, data); err != nil {
		t.Fatal(err)
	}
	store.Close() // the edge takes the data dir's lock
	web := freeAddr(t)
	startProc(t, "edge", "edge", "--node-id", "limit-edge", "--insecure-stream", "--listen", web, "--ctrl", freeAddr(t),
		"--data-dir", dataDir, "--admin-listen", "", "--max-body-bytes", "4096")
	waitDial(t, "tcp", web)
	client := &http.Client{Timeout: 5 * time.Second}
	for _, c := range []struct {
		size, code int
		body       string
	}{{4096, 200, "A /up"}, {4097, 413, "request body too large"}} {
		resp, err := client.Post("http://"+web+"/up", "application/octet-stream", bytes.NewReader(make([]byte, c.size)))
		if err != nil {
			t.Fatalf("POST %d bytes: %v", c.size, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != c.code || !strings.Contains(string(b), c.body) {
			t.Fatalf("POST %d bytes with --max-body-bytes 4096: %d %q, want %d %q", c.size, resp.StatusCode, b, c.code, c.body)
		}
	}
}
