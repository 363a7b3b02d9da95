package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"time"

	"github.com/snapgate/snapgate/edge"
	"github.com/snapgate/snapgate/edge/upstream"
)

// edgeConfig is the edge config file (YAML); every key is also a flag.
type edgeConfig struct {
	NodeID  string `yaml:"node_id"`
	Listen  string `yaml:"listen"`
	Ctrl    string `yaml:"ctrl"`
	DataDir string `yaml:"data_dir"`
	// StreamSecretFile holds the secret shared with ctrl; InsecureStream
	// allows running without one.
	StreamSecretFile    string        `yaml:"stream_secret_file"`
	InsecureStream      bool          `yaml:"insecure_stream"`
	KeepSnapshots       int           `yaml:"keep_snapshots"`
	HeaderTimeout       time.Duration `yaml:"header_timeout"`
	IdleTimeout         time.Duration `yaml:"idle_timeout"`
	ConnectTimeout      time.Duration `yaml:"connect_timeout"`
	UpstreamTimeout     time.Duration `yaml:"upstream_timeout"`
	UpstreamMaxIdle     int           `yaml:"upstream_max_idle"`
	UpstreamIdleTimeout time.Duration `yaml:"upstream_idle_timeout"`
	ShutdownTimeout     time.Duration `yaml:"shutdown_timeout"`
	MaxBodyBytes        int64         `yaml:"max_body_bytes"`
	AdminListen         string        `yaml:"admin_listen"`
	Pprof               bool          `yaml:"pprof"`
	LogLevel            string        `yaml:"log_level"`
}

func defaultEdgeConfig() edgeConfig {
	host, _ := os.Hostname()
	return edgeConfig{
		NodeID:              host,
		Listen:              ":8080",
		Ctrl:                "127.0.0.1:7400",
		DataDir:             "snapgate-data/edge",
		KeepSnapshots:       5,
		HeaderTimeout:       10 * time.Second,
		IdleTimeout:         60 * time.Second,
		ConnectTimeout:      time.Second,
		UpstreamTimeout:     30 * time.Second,
		UpstreamMaxIdle:     upstream.DefaultMaxIdle,
		UpstreamIdleTimeout: upstream.DefaultIdleTimeout,
		ShutdownTimeout:     30 * time.Second,
		AdminListen:         "127.0.0.1:9901",
		LogLevel:            "info",
	}
}

func runEdge(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cfg := defaultEdgeConfig()
	d, code, ok := parseDaemon("edge", args, stderr, &cfg, &cfg.LogLevel, &cfg.StreamSecretFile, func(fs *flag.FlagSet) {
		fs.StringVar(&cfg.NodeID, "node-id", cfg.NodeID, "name this edge reports to ctrl (default: the hostname)")
		fs.StringVar(&cfg.Listen, "listen", cfg.Listen, "HTTP address clients connect to")
		fs.StringVar(&cfg.Ctrl, "ctrl", cfg.Ctrl, "host:port of ctrl's snapshot stream (its --stream-listen)")
		fs.StringVar(&cfg.DataDir, "data-dir", cfg.DataDir, "directory of applied snapshots (the edge boots from the newest good one)")
		fs.StringVar(&cfg.StreamSecretFile, "stream-secret-file", cfg.StreamSecretFile, "file (mode 0600) with the secret shared with ctrl's stream")
		fs.BoolVar(&cfg.InsecureStream, "insecure-stream", cfg.InsecureStream, "connect to ctrl without a stream secret (only with a ctrl started the same way)")
		fs.IntVar(&cfg.KeepSnapshots, "keep-snapshots", cfg.KeepSnapshots, "applied snapshots kept on disk")
		fs.DurationVar(&cfg.HeaderTimeout, "header-timeout", cfg.HeaderTimeout, "time a client has to send a request head (408 after)")
		fs.DurationVar(&cfg.IdleTimeout, "idle-timeout", cfg.IdleTimeout, "idle keep-alive client connections are closed after this")
		fs.DurationVar(&cfg.ConnectTimeout, "connect-timeout", cfg.ConnectTimeout, "upstream connect timeout unless the cluster sets one (504 after)")
		fs.DurationVar(&cfg.UpstreamTimeout, "upstream-timeout", cfg.UpstreamTimeout, "upstream response timeout unless the route sets one (504 after)")
		fs.IntVar(&cfg.UpstreamMaxIdle, "upstream-max-idle", cfg.UpstreamMaxIdle, "idle keep-alive connections kept per upstream endpoint")
		fs.DurationVar(&cfg.UpstreamIdleTimeout, "upstream-idle-timeout", cfg.UpstreamIdleTimeout, "idle keep-alive upstream connections are closed after this")
		fs.DurationVar(&cfg.ShutdownTimeout, "shutdown-timeout", cfg.ShutdownTimeout, "on SIGTERM/SIGINT/SIGHUP, time requests in flight get to finish before they are cut (/healthz fails meanwhile)")
		fs.Int64Var(&cfg.MaxBodyBytes, "max-body-bytes", cfg.MaxBodyBytes, "largest request body Content-Length forwarded (413 above); 0 = no limit")
		fs.StringVar(&cfg.AdminListen, "admin-listen", cfg.AdminListen, "address of the admin HTTP listener (/metrics, /healthz); empty disables it")
		fs.BoolVar(&cfg.Pprof, "pprof", cfg.Pprof, "also serve Go profiles under /debug/pprof/ on the admin listener")
		fs.StringVar(&cfg.LogLevel, "log-level", cfg.LogLevel, "debug, info, warn or error")
	})
	if !ok {
		return code
	}
	if err := checkDialAddr(cfg.Ctrl); err != nil {
		fmt.Fprintf(stderr, "snapgate edge: --ctrl %q: %v\n", cfg.Ctrl, err)
		return 2
	}
	if !checkListenAddrs(stderr, "edge", "--listen", cfg.Listen, "--admin-listen", cfg.AdminListen) {
		return 2
	}
	log, secret := d.log, d.secret
	node, err := edge.New(edge.Config{
		StreamSecret:        secret,
		InsecureStream:      cfg.InsecureStream,
		NodeID:              cfg.NodeID,
		Listen:              cfg.Listen,
		CtrlAddr:            cfg.Ctrl,
		DataDir:             cfg.DataDir,
		KeepSnapshots:       cfg.KeepSnapshots,
		HeaderTimeout:       cfg.HeaderTimeout,
		IdleTimeout:         cfg.IdleTimeout,
		ConnectTimeout:      cfg.ConnectTimeout,
		UpstreamTimeout:     cfg.UpstreamTimeout,
		UpstreamMaxIdle:     cfg.UpstreamMaxIdle,
		UpstreamIdleTimeout: cfg.UpstreamIdleTimeout,
		ShutdownTimeout:     cfg.ShutdownTimeout,
		MaxBodyBytes:        cfg.MaxBodyBytes,
		AdminListen:         cfg.AdminListen,
		Pprof:               cfg.Pprof,
		Logger:              log,
	})
	if err != nil {
		fmt.Fprintln(stderr, "snapgate edge:", err)
		return 1
	}
	if err := node.Run(ctx); err != nil {
		fmt.Fprintln(stderr, "snapgate edge:", err)
		return 1
	}
	return 0
}

// checkDialAddr checks the shape of ctrl's address without resolving it:
// the edge must boot from its snapshot files even when DNS is down, but a
// malformed address would only show as reconnect warnings forever.
func checkDialAddr(addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("want host:port, ctrl's --stream-listen: %w", err)
	}
	// A number or a service name: /etc/services, never DNS.
	if n, err := net.LookupPort("tcp", port); err != nil || n == 0 {
		return fmt.Errorf("port %q: want a number from 1 to 65535", port)
	}
	return nil
}
