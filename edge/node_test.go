package edge

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/snapgate/snapgate/ctrl/publish"
	"github.com/snapgate/snapgate/edge/snapstore"
	"github.com/snapgate/snapgate/fbs"
)

// syncBuf is a log sink safe for the node's goroutines.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func (s *syncBuf) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(s, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// closedAddr is a 127.0.0.1 address nothing listens on: connects are refused.
func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// seedSnapshot writes a version-1 snapshot routing everything to endpoint
// into a fresh data dir, so a Node boots serving without ctrl.
func seedSnapshot(t *testing.T, endpoint string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "edge")
	data, err := fbs.Build(fbs.State{Version: 1,
		Clusters: []fbs.Cluster{{Name: "web", Endpoints: []fbs.Endpoint{{Address: endpoint}}}},
		Routes:   []fbs.Route{{ID: "all", Host: "*", Prefix: "/", Cluster: "web"}}})
	if err != nil {
		t.Fatal(err)
	}
	s, err := snapstore.Open(dir, 5, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Save(1, data); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	return dir
}

// testConfig is a Node on 127.0.0.1 whose ctrl refuses connections, so the
// stream client keeps retrying in the background.
func testConfig(t *testing.T, dataDir string, log *slog.Logger) Config {
	return Config{NodeID: "test-edge", Listen: "127.0.0.1:0", CtrlAddr: closedAddr(t), DataDir: dataDir,
		InsecureStream: true, Logger: log}
}

// startNode starts an edge with cfg; stop ends it and checks Run's result.
func startNode(t *testing.T, cfg Config) (n *Node, stop func()) {
	t.Helper()
	n, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()
	return n, func() {
		t.Helper()
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
}

// runNode runs n until the test ends and returns Run's result channel.
func runNode(t *testing.T, n *Node) <-chan error {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run after cancel: %v", err)
			}
		case <-time.After(15 * time.Second):
			t.Error("Run did not return within 15s of cancel")
		}
	})
	return done
}

func httpClient() *http.Client {
	// No keep-alive: every request sees the edge's state at that moment.
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
}

func TestNewRejectsInvalidNodeID(t *testing.T) {
	for _, id := range []string{"edge one", "edge\x00", strings.Repeat("e", 300), "édge"} {
		cfg := testConfig(t, t.TempDir(), slog.New(slog.NewTextHandler(io.Discard, nil)))
		cfg.NodeID = id
		n, err := New(cfg)
		if err == nil {
			n.proxy.Shutdown(context.Background())
			n.tables.Close()
			n.pools.Close()
			t.Fatalf("New accepted node id %q", id)
		}
		if !strings.Contains(err.Error(), "node id") || !strings.Contains(err.Error(), fmt.Sprintf("%q", id)) {
			t.Fatalf("node id %q: error %q does not name the id", id, err)
		}
	}
}

func TestNewRejectsNegativeMaxBody(t *testing.T) {
	cfg := testConfig(t, t.TempDir(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	cfg.MaxBodyBytes = -1
	if _, err := New(cfg); err == nil || !strings.Contains(err.Error(), "max body bytes") {
		t.Fatalf("MaxBodyBytes -1: err = %v", err)
	}
}

// TestRunStopsWhenStreamClientFails: an error from the stream client other
// than cancellation is logged and ends Run with it, closing the listener.
func TestRunStopsWhenStreamClientFails(t *testing.T) {
	var logs syncBuf
	n, err := New(testConfig(t, t.TempDir(), logs.logger()))
	if err != nil {
		t.Fatal(err)
	}
	addr := n.Addr().String()
	n.runFeed = func(ctx context.Context) error {
		return errors.New("feed: decoder setup failed")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err = n.Run(ctx)
	if ctx.Err() != nil {
		t.Fatal("Run kept serving after the stream client failed")
	}
	if err == nil || !strings.Contains(err.Error(), "stream client") || !strings.Contains(err.Error(), "decoder setup failed") {
		t.Fatalf("Run = %v, want the stream client's error", err)
	}
	if l := logs.String(); !strings.Contains(l, "level=ERROR") || !strings.Contains(l, "decoder setup failed") {
		t.Fatalf("stream client failure not logged as an error:\n%s", l)
	}
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Fatalf("%s still accepts connections after Run returned", addr)
	}
}

// TestRunCancelIsClean: cancellation is not a stream client failure.
func TestRunCancelIsClean(t *testing.T) {
	var logs syncBuf
	n, err := New(testConfig(t, t.TempDir(), logs.logger()))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()
	// Wait until the listener answers so Run is past its setup.
	c, err := net.DialTimeout("tcp", n.Addr().String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run after cancel = %v, want nil", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Run did not return within 15s of cancel")
	}
	if strings.Contains(logs.String(), "stream client stopped") {
		t.Fatalf("cancellation logged as a stream client failure:\n%s", logs.String())
	}
}

// TestMaxBodyBytes: Config.MaxBodyBytes reaches the proxy; a Content-Length
// above it gets 413 and never reaches the backend, one at it is forwarded.
func TestMaxBodyBytes(t *testing.T) {
	var mu sync.Mutex
	var got []int
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		got = append(got, len(b))
		mu.Unlock()
		fmt.Fprintf(w, "got %d", len(b))
	})}
	go srv.Serve(ln)
	defer srv.Close()

	cfg := testConfig(t, seedSnapshot(t, ln.Addr().String()), slog.New(slog.NewTextHandler(io.Discard, nil)))
	cfg.MaxBodyBytes = 1024
	n, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	runNode(t, n)
	url := "http://" + n.Addr().String() + "/upload"
	post := func(size int) (int, string) {
		resp, err := httpClient().Post(url, "application/octet-stream", bytes.NewReader(make([]byte, size)))
		if err != nil {
			t.Fatalf("POST %d bytes: %v", size, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := post(1024); code != 200 || body != "got 1024" {
		t.Fatalf("POST 1024 bytes (at the limit): %d %q", code, body)
	}
	if code, body := post(1025); code != 413 || !strings.Contains(body, "request body too large") {
		t.Fatalf("POST 1025 bytes (over the limit): %d %q, want 413", code, body)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 1 || got[0] != 1024 {
		t.Fatalf("backend received bodies %v, want only [1024]", got)
	}
}

// TestEjectionVisible: an endpoint that refuses connections is ejected, the
// ejection is logged through Config.Logger, and it shows on the admin
// listener's /metrics.
func TestEjectionVisible(t *testing.T) {
	dead := closedAddr(t)
	var logs syncBuf
	cfg := testConfig(t, seedSnapshot(t, dead), logs.logger())
	cfg.AdminListen = "127.0.0.1:0"
	n, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	runNode(t, n)
	web, admin := "http://"+n.Addr().String()+"/x", "http://"+n.AdminAddr().String()+"/metrics"
	series := `snapgate_edge_endpoint_ejected{addr="` + dead + `",cause="connect-failure"} 1`
	var metrics string
	// Bounded: each round re-ejects if a slow scheduler let the last
	// ejection (1 s) run out before the scrape.
	for i := 0; i < 20 && !strings.Contains(metrics, series); i++ {
		resp, err := httpClient().Get(web)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 502 && resp.StatusCode != 503 {
			t.Fatalf("GET via a refusing endpoint: %d, want 502 or 503", resp.StatusCode)
		}
		resp, err = httpClient().Get(admin)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		metrics = string(b)
	}
	if !strings.Contains(metrics, series) || !strings.Contains(metrics, "snapgate_edge_endpoints_ejected 1") {
		t.Fatalf("ejection of %s not on /metrics:\n%s", dead, metrics)
	}
	if l := logs.String(); !strings.Contains(l, "upstream endpoint ejected") || !strings.Contains(l, dead) {
		t.Fatalf("ejection not logged through Config.Logger:\n%s", l)
	}
}

// policySnapshot is version v routing everything to endpoint behind a
// required API key ("key-1"), with keySet as its one JWT issuer's keys.
func policySnapshot(t *testing.T, v uint64, endpoint, keySet string) []byte {
	t.Helper()
	data, err := fbs.Build(fbs.State{Version: v, ParentVersion: v - 1,
		Auth: fbs.Auth{
			Consumers: []fbs.Consumer{{ID: "c1", APIKeyHashes: [][32]byte{sha256.Sum256([]byte("key-1"))}}},
			Issuers:   []fbs.Issuer{{ID: "idp", Iss: "https://idp.example", KeySet: []byte(keySet)}},
			Policies:  []fbs.Policy{{ID: "p", Methods: fbs.AuthAPIKey | fbs.AuthJWT, Required: true}},
		},
		GlobalPolicy: "p",
		Clusters:     []fbs.Cluster{{Name: "web", Endpoints: []fbs.Endpoint{{Address: endpoint}}}},
		Routes:       []fbs.Route{{ID: "all", Host: "*", Prefix: "/", Cluster: "web"}}})
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// TestUnenforceablePolicyNacked: a snapshot whose policies the edge cannot
// compile (an unusable JWK set) is NACKed with the reason and set aside on
// disk, the last good snapshot keeps serving and enforcing its policy, a
// run of refused versions never prunes it, and a restart boots from it even
// when a refused file is newer on disk (the edge stopped before setting it
// aside).
func TestUnenforceablePolicyNacked(t *testing.T) {
	// With one file kept, saving the refused v2 prunes v1's file before the
	// refusal: the edge writes it back from the mapping in service.
	for _, kept := range []int{2, 1} {
		t.Run(fmt.Sprintf("keep=%d", kept), func(t *testing.T) { testUnenforceablePolicyNacked(t, kept) })
	}
}

func testUnenforceablePolicyNacked(t *testing.T, snapshotsKept int) {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok") }))
	defer backend.Close()
	secret := []byte("node-test-secret-0123456789")
	ctrl := publish.New(publish.Config{Secret: secret, HeartbeatInterval: 50 * time.Millisecond, DeadAfter: 2 * time.Second,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- ctrl.Serve(ln) }()
	defer func() { ctrl.Close(); <-served }()

	goodKeys := `{"keys":[{"kty":"oct","alg":"HS256","kid":"k","k":"MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY"}]}`
	badKeys := `{"keys":[{"kty":"oct","alg":"HS256","kid":"k","k":"c2hvcnQ"}]}` // 40 bits: too short for HS256
	ctrl.Publish(1, policySnapshot(t, 1, backend.Listener.Addr().String(), goodKeys), time.Now())

	dir := filepath.Join(t.TempDir(), "edge")
	logs := &syncBuf{}
	cfg := Config{NodeID: "edge-1", Listen: "127.0.0.1:0", CtrlAddr: ln.Addr().String(), DataDir: dir,
		StreamSecret: secret, Logger: logs.logger(), KeepSnapshots: snapshotsKept}
	n, stop := startNode(t, cfg)
	waitUntil(t, "v1 in service", func() bool { return n.Version() == 1 })

	ctrl.Publish(2, policySnapshot(t, 2, backend.Listener.Addr().String(), badKeys), time.Now())
	var nack string
	waitUntil(t, "a NACK for v2", func() bool {
		for _, s := range ctrl.Status() {
			nack = s.LastNack
		}
		return nack != ""
	})
	if !strings.Contains(nack, "v2") || !strings.Contains(nack, `issuer "idp": keys`) {
		t.Fatalf("NACK reason %q does not say why", nack)
	}
	check := func(n *Node) {
		t.Helper()
		if n.Version() != 1 {
			t.Fatalf("version %d in service, want 1", n.Version())
		}
		url := "http://" + n.Addr().String() + "/"
		resp, err := httpClient().Get(url)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		req, _ := http.NewRequest("GET", url, nil)
		req.Header.Set("X-Api-Key", "key-1")
		ok, err := httpClient().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		ok.Body.Close()
		if resp.StatusCode != 401 || ok.StatusCode != 200 {
			t.Fatalf("without key %d, with key %d; want 401 and 200", resp.StatusCode, ok.StatusCode)
		}
	}
	check(n)
	// More refused versions than the data dir keeps files.
	for v := uint64(3); v <= 3+uint64(snapshotsKept); v++ {
		ctrl.Publish(v, policySnapshot(t, v, backend.Listener.Addr().String(), badKeys), time.Now())
		waitUntil(t, fmt.Sprintf("a NACK for v%d", v), func() bool {
			for _, s := range ctrl.Status() {
				nack = s.LastNack
			}
			return strings.Contains(nack, fmt.Sprintf("v%d", v))
		})
	}
	check(n)
	stop()
	if _, err := os.Stat(filepath.Join(dir, snapstore.FileName(1))); err != nil {
		t.Fatalf("refused versions pruned the good v1: %v", err)
	}
	for v := uint64(2); v <= 3+uint64(snapshotsKept); v++ {
		if _, err := os.Stat(filepath.Join(dir, snapstore.FileName(v))); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("refused v%d is still a snapshot file: %v", v, err)
		}
	}

	// An edge stopped between saving the newest and refusing it: the file
	// is back under its snapshot name, and the boot must set it aside.
	bad := filepath.Join(dir, snapstore.FileName(3+uint64(snapshotsKept)))
	if err := os.Rename(bad+".bad", bad); err != nil {
		t.Fatalf("the newest refused version was not set aside as .bad: %v", err)
	}
	cfg.CtrlAddr = closedAddr(t)
	n2, err := New(cfg)
	if err != nil {
		t.Fatalf("restart with a refused snapshot on disk: %v", err)
	}
	runNode(t, n2)
	check(n2)
	if !strings.Contains(logs.String(), "skipping snapshot on disk: its policies cannot be enforced") {
		t.Fatal("the boot did not say why it skipped the refused version")
	}
	if _, err := os.Stat(bad); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the boot did not set the refused file aside: %v", err)
	}
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

// A ctrl restored from another history replaces the edge's v1 with its own,
// which this edge refuses: the replacement had taken v1's file name before
// the refusal set it aside, and nothing of the v1 in service was left on
// disk, so a restart with ctrl down served nothing. The edge writes the
// file of the snapshot in service back.
func TestRefusedReplaceKeepsInServiceFile(t *testing.T) {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok") }))
	defer backend.Close()
	secret := []byte("node-test-secret-0123456789")
	goodKeys := `{"keys":[{"kty":"oct","alg":"HS256","kid":"k","k":"MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY"}]}`
	badKeys := `{"keys":[{"kty":"oct","alg":"HS256","kid":"k","k":"c2hvcnQ"}]}` // 40 bits: too short for HS256
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	c1 := publish.New(publish.Config{Secret: secret, HeartbeatInterval: 50 * time.Millisecond, DeadAfter: 2 * time.Second, Logger: quiet})
	s1 := make(chan error, 1)
	go func() { s1 <- c1.Serve(ln) }()
	c1.Publish(1, policySnapshot(t, 1, backend.Listener.Addr().String(), goodKeys), time.Now())
	dir := filepath.Join(t.TempDir(), "edge")
	logs := &syncBuf{}
	cfg := Config{NodeID: "edge-1", Listen: "127.0.0.1:0", CtrlAddr: addr, DataDir: dir, StreamSecret: secret, Logger: logs.logger()}
	n, stop := startNode(t, cfg)
	waitUntil(t, "v1 in service", func() bool { return n.Version() == 1 })
	c1.Close()
	<-s1

	ln2, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c2 := publish.New(publish.Config{Secret: secret, HeartbeatInterval: 50 * time.Millisecond, DeadAfter: 2 * time.Second, Logger: quiet})
	s2 := make(chan error, 1)
	go func() { s2 <- c2.Serve(ln2) }()
	c2.Publish(1, policySnapshot(t, 1, backend.Listener.Addr().String(), badKeys), time.Now())
	waitUntil(t, "the replacement NACKed", func() bool {
		for _, s := range c2.Status() {
			if s.LastNack != "" {
				return true
			}
		}
		return false
	})
	c2.Close()
	<-s2
	if n.Version() != 1 {
		t.Fatalf("version %d in service after the refused replacement, want 1", n.Version())
	}
	stop()

	cfg.CtrlAddr = closedAddr(t)
	n2, err := New(cfg)
	if err != nil {
		t.Fatalf("restart: %v", err)
	}
	runNode(t, n2)
	if n2.Version() != 1 {
		t.Fatalf("the edge served v1; restarted with ctrl down it serves v%d", n2.Version())
	}
}

// A New that fails part-way (here its listen address is taken) releases
// what it set up, the data dir's lock included: a second try on the same
// dir starts.
func TestFailedNewReleasesDataDir(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	cfg := testConfig(t, t.TempDir(), slog.New(slog.DiscardHandler))
	cfg.Listen = taken.Addr().String()
	if _, err := New(cfg); err == nil {
		t.Fatal("New on a taken address succeeded")
	}
	cfg.Listen = "127.0.0.1:0"
	_, stop := startNode(t, cfg)
	stop()
}

// With --keep-snapshots 1, an edge that stops after saving a snapshot it
// is about to refuse (its policies cannot be enforced here) still boots the
// one it served: saving used to prune that file first, and the restart,
// with ctrl down, found only the refused one and served nothing.
func TestRefusedSaveKeepsInServiceFile(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "edge")
	logs := &syncBuf{}
	st, err := snapstore.Open(dir, 1, logs.logger())
	if err != nil {
		t.Fatal(err)
	}
	goodKeys := `{"keys":[{"kty":"oct","alg":"HS256","kid":"k","k":"MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY"}]}`
	badKeys := `{"keys":[{"kty":"oct","alg":"HS256","kid":"k","k":"c2hvcnQ"}]}` // too short for HS256
	if err := st.Save(1, policySnapshot(t, 1, "127.0.0.1:9", goodKeys)); err != nil {
		t.Fatal(err)
	}
	st.Close()
	cfg := testConfig(t, dir, logs.logger())
	cfg.KeepSnapshots = 1
	n, stop := startNode(t, cfg)
	if n.Version() != 1 {
		t.Fatalf("boot: v%d, want v1", n.Version())
	}
	// What the feed does with v2 before Apply refuses it; the edge stops
	// in between.
	if err := n.store.Save(2, policySnapshot(t, 2, "127.0.0.1:9", badKeys)); err != nil {
		t.Fatal(err)
	}
	stop()
	n, stop = startNode(t, cfg)
	defer stop()
	if n.Version() != 1 {
		t.Fatalf("restart with ctrl down serves v%d, want v1\nlogs:\n%s", n.Version(), logs.String())
	}
}
