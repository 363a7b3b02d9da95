package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/snapgate/snapgate/ctrl"
	"github.com/snapgate/snapgate/ctrl/health"
	"github.com/snapgate/snapgate/ctrl/publish"
)

// ctrlConfig is the ctrl config file (YAML); every key is also a flag.
type ctrlConfig struct {
	DataDir       string        `yaml:"data_dir"`
	AdminSocket   string        `yaml:"admin_socket"`
	StreamListen  string        `yaml:"stream_listen"`
	MetricsListen string        `yaml:"metrics_listen"`
	Debounce      time.Duration `yaml:"debounce"`
	MaxDelay      time.Duration `yaml:"max_delay"`
	KeepSnapshots int           `yaml:"keep_snapshots"`
	LogLevel      string        `yaml:"log_level"`
	// HealthMaxVersionsPerSecond caps snapshot versions caused by health
	// changes (docs/health.md).
	HealthMaxVersionsPerSecond int `yaml:"health_max_versions_per_second"`
	// StreamSecretFile holds the secret edges must prove; InsecureStream
	// allows running without one.
	StreamSecretFile string `yaml:"stream_secret_file"`
	InsecureStream   bool   `yaml:"insecure_stream"`
}

const defaultSocket = "snapgate-data/ctrl.sock"

func defaultCtrlConfig() ctrlConfig {
	return ctrlConfig{
		DataDir:       "snapgate-data/ctrl",
		AdminSocket:   defaultSocket,
		StreamListen:  "127.0.0.1:7400",
		MetricsListen: "127.0.0.1:9900",
		Debounce:      20 * time.Millisecond,
		MaxDelay:      200 * time.Millisecond,
		KeepSnapshots: 10,
		LogLevel:      "info",

		HealthMaxVersionsPerSecond: 10,
	}
}

func runCtrl(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cfg := defaultCtrlConfig()
	d, code, ok := parseDaemon("ctrl", args, stderr, &cfg, &cfg.LogLevel, &cfg.StreamSecretFile, func(fs *flag.FlagSet) {
		fs.StringVar(&cfg.DataDir, "data-dir", cfg.DataDir, "directory of ctrl's state: the Pebble store (documents, health, edge status) and the snapshot history files")
		fs.StringVar(&cfg.AdminSocket, "admin-socket", cfg.AdminSocket, "unix socket for 'snapgate ctl' (created mode 0600)")
		fs.StringVar(&cfg.StreamListen, "stream-listen", cfg.StreamListen, "TCP address edges connect to for snapshots")
		fs.StringVar(&cfg.MetricsListen, "metrics-listen", cfg.MetricsListen, "TCP address of the HTTP /metrics listener (Prometheus text format); empty disables it")
		fs.DurationVar(&cfg.Debounce, "debounce", cfg.Debounce, "quiet time that coalesces a burst of writes into one snapshot")
		fs.DurationVar(&cfg.MaxDelay, "max-delay", cfg.MaxDelay, "longest a write waits for its snapshot during a continuous burst")
		fs.IntVar(&cfg.KeepSnapshots, "keep-snapshots", cfg.KeepSnapshots, "snapshot versions kept in the store")
		fs.IntVar(&cfg.HealthMaxVersionsPerSecond, "health-max-versions-per-second", cfg.HealthMaxVersionsPerSecond, "most snapshot versions per second that backend health changes may cause; changes in between are coalesced")
		fs.StringVar(&cfg.LogLevel, "log-level", cfg.LogLevel, "debug, info, warn or error")
		fs.StringVar(&cfg.StreamSecretFile, "stream-secret-file", cfg.StreamSecretFile, "file (mode 0600) with the secret edges must prove on the stream; authenticated, not encrypted")
		fs.BoolVar(&cfg.InsecureStream, "insecure-stream", cfg.InsecureStream, "run without a stream secret: anyone who reaches --stream-listen gets every snapshot")
	})
	if !ok {
		return code
	}
	if !checkListenAddrs(stderr, "ctrl", "--stream-listen", cfg.StreamListen, "--metrics-listen", cfg.MetricsListen) {
		return 2
	}
	log, secret := d.log, d.secret
	srv, err := ctrl.New(ctrl.Config{
		InsecureStream: cfg.InsecureStream,
		Publish:        publish.Config{Secret: secret},
		DataDir:        cfg.DataDir,
		AdminSocket:    cfg.AdminSocket,
		PublishAddr:    cfg.StreamListen,
		MetricsAddr:    cfg.MetricsListen,
		Debounce:       cfg.Debounce,
		MaxDelay:       cfg.MaxDelay,
		KeepSnapshots:  cfg.KeepSnapshots,
		Health:         health.Config{MaxVersionsPerSecond: cfg.HealthMaxVersionsPerSecond},
		Logger:         log,
	})
	if err != nil {
		fmt.Fprintln(stderr, "snapgate ctrl:", err)
		return 1
	}
	if err := srv.Run(ctx); err != nil {
		fmt.Fprintln(stderr, "snapgate ctrl:", err)
		return 1
	}
	return 0
}
