// Package edge is snapgate's data plane: a Node serves HTTP from the snapshot
// in service, boots from the newest good snapshot in its data dir, and follows
// ctrl's stream for newer ones. It never asks ctrl anything per request.
package edge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"

	"github.com/snapgate/snapgate/edge/feed"
	"github.com/snapgate/snapgate/edge/proxy"
	"github.com/snapgate/snapgate/edge/routing"
	"github.com/snapgate/snapgate/edge/snapstore"
	"github.com/snapgate/snapgate/edge/telemetry"
	"github.com/snapgate/snapgate/edge/upstream"
	"github.com/snapgate/snapgate/wire"
)

// Config configures a Node. Zero values take the defaults named next to them.
type Config struct {
	NodeID        string // name reported to ctrl; required
	Listen        string // HTTP listen address; required
	CtrlAddr      string // ctrl's stream address; required
	DataDir       string // applied snapshots; required
	KeepSnapshots int    // applied snapshots kept on disk (default 5)

	// StreamSecret is the shared secret the edge and ctrl prove to each other
	// before any snapshot flows; InsecureStream allows an empty one (demos).
	StreamSecret   []byte
	InsecureStream bool

	HeaderTimeout   time.Duration // request head deadline, 408 after (default 10s)
	IdleTimeout     time.Duration // idle keep-alive client connections (default 60s)
	ConnectTimeout  time.Duration // upstream dial unless the cluster sets one (default 1s)
	UpstreamTimeout time.Duration // upstream response unless the route sets one (default 30s)
	// UpstreamMaxIdle and UpstreamIdleTimeout bound each endpoint's pool
	// of idle keep-alive connections: how many are kept (default 64) and
	// how long one is kept unused (default 60s).
	UpstreamMaxIdle     int
	UpstreamIdleTimeout time.Duration
	// ShutdownTimeout is how long requests in flight and tunnels get to
	// finish when the edge stops (default 30s, the default upstream
	// timeout); whatever is still open then is cut.
	ShutdownTimeout time.Duration
	// MaxBodyBytes bounds a request body's Content-Length; larger gets 413.
	// 0 = no limit (default): bodies stream, so size costs no memory.
	MaxBodyBytes int64
	// AdminListen serves /metrics and /healthz over plain net/http; empty
	// disables it.
	AdminListen string
	// Pprof also serves net/http/pprof under /debug/pprof/ on the admin
	// listener.
	Pprof bool

	Logger *slog.Logger
}

// Node is one running edge.
type Node struct {
	cfg     Config
	log     *slog.Logger
	store   *snapstore.Store
	pools   *upstream.Registry
	tables  routing.Holder
	proxy   *proxy.Server
	feed    *feed.Client
	metrics *telemetry.Metrics
	admin   *telemetry.Admin
	// runFeed is n.feed.Run; tests replace it to make the stream client
	// fail in ways a validated Config cannot.
	runFeed func(context.Context) error
}

// New opens the data dir, puts the newest snapshot that verifies in service
// (so the edge serves even when ctrl is unreachable), and binds the listener.
func New(cfg Config) (*Node, error) {
	switch {
	case cfg.NodeID == "":
		return nil, errors.New("edge: node id is required")
	case cfg.Listen == "":
		return nil, errors.New("edge: listen address is required")
	case cfg.CtrlAddr == "":
		return nil, errors.New("edge: ctrl address is required")
	case cfg.DataDir == "":
		return nil, errors.New("edge: data dir is required")
	case len(cfg.StreamSecret) == 0 && !cfg.InsecureStream:
		return nil, errors.New("edge: a stream secret is required (or set InsecureStream)")
	case cfg.MaxBodyBytes < 0:
		return nil, fmt.Errorf("edge: max body bytes is %d, want 0 (no limit) or more", cfg.MaxBodyBytes)
	}
	// Checked here, not only by the stream client, so a bad id stops the
	// edge at start instead of leaving it serving without ever reaching ctrl.
	if err := wire.ValidNodeID(cfg.NodeID); err != nil {
		return nil, fmt.Errorf("edge: node id %q: %w", cfg.NodeID, err)
	}
	if cfg.KeepSnapshots <= 0 {
		cfg.KeepSnapshots = 5
	}
	if cfg.ShutdownTimeout <= 0 {
		cfg.ShutdownTimeout = 30 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	n := &Node{cfg: cfg, log: cfg.Logger, metrics: telemetry.New()}
	var err error
	if n.store, err = snapstore.Open(cfg.DataDir, cfg.KeepSnapshots, cfg.Logger); err != nil {
		return nil, fmt.Errorf("edge: %w", err)
	}
	n.pools = upstream.NewRegistry(upstream.Options{ConnectTimeout: cfg.ConnectTimeout, MaxIdle: cfg.UpstreamMaxIdle,
		IdleTimeout: cfg.UpstreamIdleTimeout, Logger: cfg.Logger, OnHealth: n.reportHealth})
	n.metrics.SetEjections(n.pools.Ejections)
	m, bootErr := n.boot()
	if bootErr != nil && !errors.Is(bootErr, snapstore.ErrNoSnapshot) {
		n.abandon()
		return nil, fmt.Errorf("edge: %w", bootErr)
	}
	// The feed exists before the proxy and the metrics read its
	// freshness; it starts streaming only in Run.
	n.feed = feed.New(feed.Config{
		CtrlAddr: cfg.CtrlAddr,
		NodeID:   cfg.NodeID,
		Store:    n.store,
		Current:  n.tables.Version,
		Apply:    n.apply,
		Replace:  n.replace,
		Logger:   cfg.Logger,
		Secret:   cfg.StreamSecret,
		Insecure: cfg.InsecureStream,

		ClustersOf: n.clustersOf,
		InService:  n.tables.WithSnapshot,
	})
	n.runFeed = n.feed.Run
	n.metrics.SetFreshness(n.feed.Freshness)
	n.proxy, err = proxy.New(proxy.Config{
		Addr:            cfg.Listen,
		Tables:          &n.tables,
		Logger:          cfg.Logger,
		HeaderTimeout:   cfg.HeaderTimeout,
		IdleTimeout:     cfg.IdleTimeout,
		ConnectTimeout:  cfg.ConnectTimeout,
		UpstreamTimeout: cfg.UpstreamTimeout,
		MaxBodyBytes:    cfg.MaxBodyBytes,
		Metrics:         n.metrics,
		Freshness:       n.feed.Freshness,
	})
	if err != nil {
		n.abandon()
		return nil, fmt.Errorf("edge: %w", err)
	}
	if cfg.Pprof {
		n.metrics.EnablePprof()
	}
	if cfg.AdminListen != "" {
		if n.admin, err = n.metrics.Listen(cfg.AdminListen); err != nil {
			n.abandon()
			return nil, fmt.Errorf("edge: %w", err)
		}
	}
	// Said once the listeners are bound, so that it is not the last line
	// before a start-up error.
	if bootErr != nil {
		n.log.Warn("no snapshot on disk: answering 503 until ctrl sends one", "data_dir", cfg.DataDir)
	} else {
		// The file was written when ctrl delivered it, so its age bounds
		// how stale the snapshot can be (later heartbeats may have
		// confirmed it again). Routes with a staleness bound still count
		// it as stale until ctrl confirms it in this process.
		n.log.Info("serving snapshot from disk until ctrl confirms or replaces it", "version", m.Version(), "file", m.Path(),
			"written", m.ModTime().UTC().Format(time.RFC3339), "age", time.Since(m.ModTime()).Round(time.Millisecond).String())
	}
	return n, nil
}

// abandon releases what a New that fails part-way had set up: the proxy's
// listener, the snapshot in service, the upstream pools and the data dir's
// lock.
func (n *Node) abandon() {
	if n.proxy != nil {
		n.proxy.Shutdown(context.Background())
	}
	n.tables.Close()
	n.pools.Close()
	n.store.Close()
}

// reportHealth passes an ejection, a 5xx streak or a recovery to the
// feed, which reports it to ctrl (docs/health.md, "Edge reports"). Pools
// only fire it while requests flow, after New set n.feed.
func (n *Node) reportHealth(addr string, ok bool, kind upstream.FailureKind) {
	cause := wire.CauseRecovered
	switch kind {
	case upstream.FailConnect:
		cause = wire.CauseConnect
	case upstream.FailReset:
		cause = wire.CauseReset
	case upstream.FailTimeout:
		cause = wire.CauseTimeout
	case upstream.Fail5xx:
		cause = wire.Cause5xx
	}
	n.feed.ObserveEndpoint(addr, ok, cause)
}

// clustersOf appends the ids of the clusters in service that list addr.
func (n *Node) clustersOf(addr string, dst []string) []string {
	t := n.tables.Acquire()
	if t == nil {
		return dst
	}
	defer t.Release()
	snap := t.Snapshot()
	for i := range snap.NumClusters() {
		cv := snap.ClusterAt(i)
		for j := range cv.NumEndpoints() {
			if string(cv.Endpoint(j)) == addr {
				dst = append(dst, string(cv.Name()))
				break
			}
		}
	}
	return dst
}

// boot puts the newest snapshot on disk that verifies and compiles in
// service. A snapshot refused for policies this edge cannot enforce is set
// aside when refused; one may still be the newest file if the edge stopped
// between saving and refusing it, and is set aside here.
func (n *Node) boot() (*snapstore.Mapping, error) {
	var refused uint64
	for {
		m, err := n.store.LoadNewest()
		if err != nil {
			return nil, err
		}
		aerr := n.apply(m)
		switch {
		case aerr == nil:
			return m, nil
		case !errors.Is(aerr, routing.ErrPolicy):
			return nil, fmt.Errorf("booting from %s: %w", m.Path(), aerr)
		case m.Version() == refused:
			// Setting it aside failed (logged by the store): stop rather
			// than try the same file forever.
			return nil, fmt.Errorf("booting from %s: %w", m.Path(), aerr)
		}
		refused = m.Version()
		n.log.Error("skipping snapshot on disk: its policies cannot be enforced", "version", m.Version(), "file", m.Path(), "err", aerr)
	}
}

// apply puts a verified, mapped snapshot in service. On success the mapping
// belongs to the routing table, which unmaps it once no request can read it.
func (n *Node) apply(m *snapstore.Mapping) error {
	return n.install(m, n.tables.Swap, "snapshot in service")
}

// replace puts ctrl's snapshot in service even if its version is not newer:
// ctrl found that this edge's history diverged from its own (docs/stream.md,
// "Diverged edges"), so the old numbers mean nothing any more.
func (n *Node) replace(m *snapstore.Mapping) error {
	return n.install(m, n.tables.Replace, "snapshot replaced: this edge diverged from ctrl")
}

func (n *Node) install(m *snapstore.Mapping, swap func(*routing.Table) (*routing.Table, error), msg string) error {
	t := routing.NewTable(m.Snapshot(), func() {
		if err := m.Unmap(); err != nil {
			n.log.Error("unmapping retired snapshot", "version", m.Version(), "err", err)
		}
	}, n.pools)
	// Read for the log before the swap: from then on the table may retire
	// (and unmap) as soon as the next swap replaces it.
	snap := m.Snapshot()
	routes, clusters, policies := snap.NumRoutes(), snap.NumClusters(), snap.PolicyCount()
	old, err := swap(t)
	if err != nil {
		t.Release() // unmaps: the caller's mapping is gone either way
		if errors.Is(err, routing.ErrPolicy) {
			// This edge can never serve it: keep it out of boots and out
			// of the count that pruning keeps, or a run of refused
			// versions would prune the last good file.
			n.store.Quarantine(m.Version())
			n.keepInServiceFile()
		}
		return err
	}
	n.store.SetInService(m.Version())
	n.metrics.SetVersion(m.Version())
	var from uint64
	if old != nil {
		from = old.Version()
	}
	n.log.Info(msg, "version", m.Version(), "previous", from,
		"routes", routes, "clusters", clusters, "policies", policies)
	return nil
}

// keepInServiceFile writes the snapshot in service back to the data dir
// when a refused one displaced its file: a replacement of the same version
// took its name before Quarantine set it aside (pruning keeps the file in
// service, Store.SetInService). A restart with ctrl down must boot what
// the edge serves, and its bytes are still mapped.
func (n *Node) keepInServiceFile() {
	t := n.tables.Acquire()
	if t == nil {
		return
	}
	defer t.Release()
	v := t.Version()
	if _, err := os.Stat(n.store.Path(v)); !errors.Is(err, os.ErrNotExist) {
		return
	}
	if err := n.store.Save(v, t.Snapshot().Bytes()); err != nil {
		n.log.Error("restoring the file of the snapshot in service failed: a restart without ctrl would boot an older one", "version", v, "err", err)
		return
	}
	n.log.Warn("restored the file of the snapshot in service, displaced by a refused one", "version", v)
}

// Addr is the bound HTTP address.
func (n *Node) Addr() net.Addr { return n.proxy.Addr() }

// AdminAddr is the bound admin address, nil when disabled.
func (n *Node) AdminAddr() net.Addr {
	if n.admin == nil {
		return nil
	}
	return n.admin.Addr()
}

// Version is the snapshot version in service, 0 before the first one.
func (n *Node) Version() uint64 { return n.tables.Version() }

// Run serves until ctx ends, then stops accepting, lets in-flight requests
// finish (bounded), and releases the snapshot. It also stops, returning the
// error, if the listener fails or the stream client gives up: an edge that
// can no longer hear from ctrl must not keep serving as if it could.
func (n *Node) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	serveErr := make(chan error, 1)
	wg.Add(2)
	go func() {
		defer wg.Done()
		serveErr <- n.proxy.Serve()
	}()
	if n.admin != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := n.admin.Serve(); err != nil {
				n.log.Error("admin listener stopped", "err", err)
			}
		}()
	}
	feedErr := make(chan error, 1)
	go func() {
		defer wg.Done()
		// The client retries every connection failure itself; it returns
		// only when ctx ends or on an error retrying cannot fix.
		err := n.runFeed(ctx)
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			err = errors.New("returned without an error")
		}
		feedErr <- err
	}()
	n.log.Info("edge serving", "listen", n.Addr().String(), "ctrl", n.cfg.CtrlAddr, "node", n.cfg.NodeID)
	var err error
	select {
	case <-ctx.Done():
	case err = <-serveErr:
		err = fmt.Errorf("edge: serving %s: %w", n.cfg.Listen, err)
	case ferr := <-feedErr:
		err = fmt.Errorf("edge: stream client for ctrl %s stopped: %w", n.cfg.CtrlAddr, ferr)
		n.log.Error("stream client stopped; shutting the edge down", "ctrl", n.cfg.CtrlAddr, "err", ferr)
	}
	cancel()
	// /healthz fails from here; the admin listener stays up until the drain
	// ends, so a load balancer sees why the proxy port refuses.
	n.metrics.SetDraining()
	n.log.Info("edge stopping: no new connections; requests in flight may finish", "within", n.cfg.ShutdownTimeout)
	shutdownCtx, stop := context.WithTimeout(context.Background(), n.cfg.ShutdownTimeout)
	defer stop()
	switch serr := n.proxy.Shutdown(shutdownCtx); {
	case errors.Is(serr, context.DeadlineExceeded):
		// A stop, even a cut-short one, is not a failure of the edge.
		n.log.Warn("shutdown timeout passed with requests or tunnels still open; cutting them", "timeout", n.cfg.ShutdownTimeout)
	case serr != nil && err == nil:
		err = fmt.Errorf("edge: shutdown: %w", serr)
	}
	if n.admin != nil {
		n.admin.Close()
	}
	wg.Wait()
	n.tables.Close()
	n.pools.Close()
	n.store.Close()
	return err
}
