package main

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/snapgate/snapgate/ctrl"
	"github.com/snapgate/snapgate/ctrl/admin"
	"github.com/snapgate/snapgate/ctrl/model"
	"github.com/snapgate/snapgate/ctrl/publish"
	"github.com/snapgate/snapgate/edge"
)

// demoConfig is what 'snapgate demo' starts; the defaults match the commands
// the README prints.
type demoConfig struct {
	dir, edgeAddr, adminAddr, streamAddr, backendA, backendB, logLevel string
}

func runDemo(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var cfg demoConfig
	fs := newFlagSet("demo", "demo [flags]", stderr)
	fs.StringVar(&cfg.dir, "dir", ".demo", "working directory for the demo's state (wiped at start)")
	fs.StringVar(&cfg.edgeAddr, "edge", "127.0.0.1:8080", "edge HTTP address")
	fs.StringVar(&cfg.adminAddr, "admin", "127.0.0.1:9901", "edge admin address (/metrics, /healthz)")
	fs.StringVar(&cfg.streamAddr, "stream", "127.0.0.1:7400", "ctrl's snapshot stream address")
	fs.StringVar(&cfg.backendA, "backend-a", "127.0.0.1:9001", "sample backend A address")
	fs.StringVar(&cfg.backendB, "backend-b", "127.0.0.1:9002", "sample backend B address")
	fs.StringVar(&cfg.logLevel, "log-level", "warn", "debug, info, warn or error")
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	if err := demo(ctx, cfg, stdout, stderr); err != nil {
		fmt.Fprintln(stderr, "snapgate demo:", err)
		return 1
	}
	return 0
}

func demo(ctx context.Context, cfg demoConfig, stdout, stderr io.Writer) error {
	log, err := newLogger(stderr, cfg.logLevel)
	if err != nil {
		return err
	}
	// The demo's state is throwaway: start from nothing so every run looks the same.
	if err := os.RemoveAll(cfg.dir); err != nil {
		return err
	}
	if err := os.MkdirAll(cfg.dir, 0o700); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errc := make(chan error, 4)
	start := func(name string, run func(context.Context) error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := run(ctx); err != nil && ctx.Err() == nil {
				errc <- fmt.Errorf("%s: %w", name, err)
			}
		}()
	}
	for _, b := range []struct{ name, addr string }{{"backend-a", cfg.backendA}, {"backend-b", cfg.backendB}} {
		srv, err := sampleBackend(b.name, b.addr)
		if err != nil {
			return err
		}
		start(b.name, srv)
	}

	// A fresh stream secret per run: the demo's edge proves it to ctrl as a
	// production edge would.
	secret := make([]byte, 32)
	rand.Read(secret)
	socket := filepath.Join(cfg.dir, "ctrl.sock")
	c, err := ctrl.New(ctrl.Config{
		DataDir:     filepath.Join(cfg.dir, "ctrl"),
		AdminSocket: socket,
		PublishAddr: cfg.streamAddr,
		Publish:     publish.Config{Secret: secret},
		Logger:      log.With("component", "ctrl"),
	})
	if err != nil {
		return err
	}
	start("ctrl", c.Run)
	node, err := edge.New(edge.Config{
		NodeID:       "demo-edge",
		StreamSecret: secret,
		Listen:       cfg.edgeAddr,
		AdminListen:  cfg.adminAddr,
		CtrlAddr:     cfg.streamAddr,
		DataDir:      filepath.Join(cfg.dir, "edge"),
		Logger:       log.With("component", "edge"),
	})
	if err != nil {
		cancel()
		wg.Wait()
		return err
	}
	start("edge", node.Run)

	var apiVersion uint64
	setup := func() (err error) {
		if apiVersion, err = applySampleConfig(ctx, socket, cfg); err != nil {
			return err
		}
		return waitServing(ctx, cfg.edgeAddr)
	}
	if err := setup(); err != nil {
		cancel()
		wg.Wait()
		return err
	}
	printDemoHelp(stdout, cfg, socket, apiVersion)
	select {
	case <-ctx.Done():
		fmt.Fprintln(stdout, "\nstopping: edge, ctrl and backends")
	case err = <-errc:
		cancel()
	}
	wg.Wait()
	return err
}

// sampleBackend returns a runner for a tiny HTTP server that says who it is,
// so a reader of curl's output sees where the edge sent the request.
func sampleBackend(name, addr string) (func(context.Context) error, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/plain")
			fmt.Fprintf(w, "%s: %s %s (host %s)\n", name, r.Method, r.URL.RequestURI(), r.Host)
		}),
		ReadHeaderTimeout: 5 * time.Second,
	}
	return func(ctx context.Context) error {
		go func() {
			<-ctx.Done()
			srv.Close()
		}()
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	}, nil
}

// applySampleConfig puts the demo's clusters and routes through the admin
// socket, as an operator would with 'snapgate ctl', and returns the version
// of route api.
func applySampleConfig(ctx context.Context, socket string, cfg demoConfig) (uint64, error) {
	cl, err := dialAdmin(ctx, socket)
	if err != nil {
		return 0, err
	}
	defer cl.Close()
	clusters := []model.Cluster{
		{ID: "backend-a", Endpoints: []model.Endpoint{{Address: cfg.backendA}}},
		{ID: "backend-b", Endpoints: []model.Endpoint{{Address: cfg.backendB}}},
		{ID: "both", Endpoints: []model.Endpoint{{Address: cfg.backendA}, {Address: cfg.backendB}}},
	}
	for _, c := range clusters {
		if _, err := cl.PutCluster(ctx, c, nil); err != nil {
			return 0, fmt.Errorf("cluster %s: %w", c.ID, err)
		}
	}
	routes := []model.Route{
		{ID: "api", Host: "*", Prefix: "/api", Cluster: "backend-a"},
		{ID: "shop", Host: "shop.example", Prefix: "/", Cluster: "both"},
		{ID: "default", Host: "*", Prefix: "/", Cluster: "backend-b"},
	}
	var apiVersion uint64
	for _, r := range routes {
		res, err := cl.PutRoute(ctx, r, nil)
		if err != nil {
			return 0, fmt.Errorf("route %s: %w", r.ID, err)
		}
		if r.ID == "api" {
			apiVersion = res.Version
		}
	}
	return apiVersion, nil
}

// dialAdmin waits for ctrl's admin socket to appear (ctrl starts concurrently).
func dialAdmin(ctx context.Context, socket string) (*admin.Client, error) {
	deadline := time.Now().Add(10 * time.Second)
	for {
		cl, err := admin.Dial(socket)
		if err == nil {
			return cl, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return nil, fmt.Errorf("admin socket %s: %w", socket, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitServing polls the edge until every sample route answers, i.e. the
// snapshot carrying the last of them reached the edge (routes are put one
// by one, so an earlier version may serve some and not others).
func waitServing(ctx context.Context, addr string) error {
	client := &http.Client{Timeout: time.Second}
	probes := []struct{ host, path string }{{"", "/api/ready"}, {"shop.example", "/cart"}, {"", "/anything"}}
	deadline := time.Now().Add(10 * time.Second)
	for {
		var err error
		for _, p := range probes {
			if err = probeOK(client, addr, p.host, p.path); err != nil {
				break
			}
		}
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("edge %s did not serve the sample routes within 10s (last: %v)", addr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// probeOK GETs path from the edge at addr, with Host host if not empty,
// and wants a 200.
func probeOK(client *http.Client, addr, host, path string) error {
	req, err := http.NewRequest(http.MethodGet, "http://"+addr+path, nil)
	if err != nil {
		return err
	}
	if host != "" {
		req.Host = host
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s (host %q): %s", path, req.Host, resp.Status)
	}
	return nil
}

func printDemoHelp(w io.Writer, cfg demoConfig, socket string, apiVersion uint64) {
	ctl := "./bin/snapgate ctl --socket " + socket
	fmt.Fprintf(w, `snapgate demo is running: ctrl (stream %s), edge http://%s, backends %s and %s.

Try the sample routes:
  curl http://%[2]s/api/hello                       # route api     -> backend-a
  curl http://%[2]s/anything                        # route default -> backend-b
  curl -H 'Host: shop.example' http://%[2]s/cart    # route shop    -> both, round robin

Change a route live (the edge follows within milliseconds):
  %[5]s route list
  %[5]s route put --id api --host '*' --prefix /api --cluster backend-b --expected-version %[6]d
  curl http://%[2]s/api/hello                       # now backend-b
  %[5]s route put --id api --host '*' --prefix /api --cluster backend-a --expected-version %[6]d   # stale: conflict, nothing changes
  %[5]s status

The edge's metrics and health (docs/operations.md):
  curl -s http://%[7]s/metrics | grep snapgate_edge_requests_total
  curl http://%[7]s/healthz

Press Ctrl-C to stop.
`, cfg.streamAddr, cfg.edgeAddr, cfg.backendA, cfg.backendB, ctl, apiVersion, cfg.adminAddr)
}
