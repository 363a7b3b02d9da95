// Package ctrl is the snapgate control plane: the single writer of routes,
// clusters, consumers, JWT issuers and policies. It validates admin writes
// against an in-memory model, commits them to the store, and a recompute
// loop turns each burst of writes, and each change of the published
// endpoint health (health.go), into one FlatBuffers snapshot that is
// published to every edge and stored.
package ctrl

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/snapgate/snapgate/ctrl/admin"
	"github.com/snapgate/snapgate/ctrl/health"
	"github.com/snapgate/snapgate/ctrl/model"
	"github.com/snapgate/snapgate/ctrl/publish"
	"github.com/snapgate/snapgate/fbs"
	"github.com/snapgate/snapgate/store"
)

// Config configures a Server. Zero fields take the documented defaults.
type Config struct {
	// DataDir holds the store (DataDir/store). Required.
	DataDir string
	// AdminSocket is the path of the admin unix socket. Required.
	AdminSocket string
	// PublishAddr is the TCP address edges connect to, e.g. ":7400" or
	// "127.0.0.1:0" (tests). Required.
	PublishAddr string
	// Debounce is how long the recompute loop waits after a write for more
	// writes, so a burst becomes one snapshot. Default 20ms.
	Debounce time.Duration
	// MaxDelay bounds how long a continuous burst can postpone a snapshot,
	// measured from the first write of the burst. Default 200ms.
	MaxDelay time.Duration
	// FleetDebounce is how long the number of connected edges must hold
	// before ctrl records it for cluster-scope rate limits (a store write
	// and a new snapshot; see fleet.go). Default 1s.
	FleetDebounce time.Duration
	// KeepSnapshots is how many built snapshots the store keeps. Default 10.
	KeepSnapshots int
	// Shards is the snapshot's route shard count; 0 lets fbs choose.
	Shards int
	// Publish configures the edge stream server; its Logger defaults to
	// Logger and its Lookup to the store's snapshot history. Publish.Secret
	// is the stream secret; New refuses an empty one unless InsecureStream.
	Publish publish.Config
	// Health configures endpoint health tracking (docs/health.md), notably
	// MaxVersionsPerSecond, the cap on health-caused snapshot versions.
	// Store is always ctrl's own; Metrics defaults to the metrics set and
	// Logger to Logger.
	Health health.Config
	// InsecureStream allows an empty stream secret (demos and tests only):
	// anyone who reaches the stream port then receives every snapshot.
	InsecureStream bool
	// MetricsAddr is the TCP address of the HTTP listener serving
	// /metrics (Prometheus text format); "" disables it. The publisher's
	// metrics go to the same set unless Publish.Metrics is given.
	MetricsAddr string
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

func (c *Config) setDefaults() error {
	switch {
	case c.DataDir == "":
		return errors.New("config: DataDir (--data-dir) is empty")
	case c.AdminSocket == "":
		return errors.New("config: AdminSocket (--admin-socket) is empty")
	case c.PublishAddr == "":
		return errors.New("config: PublishAddr (--stream-listen) is empty")
	case c.Debounce < 0 || c.MaxDelay < 0 || c.FleetDebounce < 0 || c.KeepSnapshots < 0:
		return fmt.Errorf("config: Debounce (%v), MaxDelay (%v), FleetDebounce (%v) and KeepSnapshots (%d) must not be negative", c.Debounce, c.MaxDelay, c.FleetDebounce, c.KeepSnapshots)
	case len(c.Publish.Secret) == 0 && !c.InsecureStream:
		return errors.New("config: no stream secret; set one (--stream-secret-file) or allow an unauthenticated stream explicitly (--insecure-stream)")
	case c.Shards < 0 || c.Shards > fbs.MaxShards:
		return fmt.Errorf("config: Shards %d is outside 0..%d", c.Shards, fbs.MaxShards)
	}
	if c.Debounce == 0 {
		c.Debounce = 20 * time.Millisecond
	}
	if c.MaxDelay == 0 {
		c.MaxDelay = 200 * time.Millisecond
	}
	if c.FleetDebounce == 0 {
		c.FleetDebounce = time.Second
	}
	if c.MaxDelay < c.Debounce {
		c.MaxDelay = c.Debounce
	}
	if c.KeepSnapshots == 0 {
		c.KeepSnapshots = 10
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Publish.Logger == nil {
		c.Publish.Logger = c.Logger
	}
	return nil
}

// Store kinds ctrl owns besides the auth documents (auth.go). kindMeta
// holds the store's initialisation marker, the recorded fleet size and the
// model and health markers.
const (
	kindRoute   = model.KindRoute
	kindCluster = model.KindCluster
	kindMeta    = "meta"
)

// modelMarker is written by every model change (commit), so that its
// revision is the model's after a restart: the store's revision also
// counts health-only revisions (advanceRevision), and a delete leaves no
// document to read its revision from. The body is constant, like init's.
var modelMarker = store.Mutation{Kind: kindMeta, ID: "model", Body: []byte(`{}`)}

// Server is a running control plane.
type Server struct {
	cfg   Config
	log   *slog.Logger
	store *store.Pebble
	pub   *publish.Server
	adm   *admin.Server
	pubLn net.Listener
	// health tracks endpoint health; closed before the store.
	health *health.Tracker

	metrics    *ctrlMetrics
	metricsLn  net.Listener
	metricsSrv *http.Server

	// wmu makes ctrl the single writer: validate, check cross-document rules,
	// commit and update the model happen as one step per write.
	wmu sync.Mutex
	// mu guards the model for readers, so gets and builds do not wait for a
	// writer's fsync.
	mu    sync.RWMutex
	model state

	poke chan struct{} // 1-buffered: "the model changed since the last build"
	// builder keeps the encoded shards of the latest build, so a small
	// change re-encodes only the shards it touches (recompute.go).
	builder fbs.Builder
	// builtModel is the model revision and clusters the clusters (with
	// their health) of the latest snapshot built or taken into service;
	// only build and startSnapshot use them, one at a time.
	builtModel uint64
	clusters   clusterCache

	snapMu sync.Mutex
	snap   snapInfo
	// built lists recent snapshots oldest first (at most keepBuilt), so an
	// edge's lag runs from when the first version it lacks was built.
	built []snapInfo

	// pendingSince is when the oldest write not yet in a snapshot was
	// acknowledged (unix nanos, 0 if none): the commit time propagation lag
	// is measured from.
	pendingSince atomic.Int64

	closeOnce sync.Once
	closeErr  error
}

// snapInfo describes the latest built (or, after a restart, loaded) snapshot.
type snapInfo struct {
	version, parent uint64
	builtAt         time.Time
	bytes           int
}

// New binds the admin socket, the publish listener and the metrics
// listener, then opens the store, loads every document into the in-memory
// model and prepares the snapshot to publish first, so that a bad address
// or socket path, a busy port or a second ctrl fails here rather than in
// Run, and before the data dir is created or its store locked. Call Run to
// serve, or Close to release everything. A failed New releases all it took.
//
// Errors say what failed and where ("admin socket PATH: ..."), not that
// it was ctrl: the caller names the program.
func New(cfg Config) (*Server, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	s := &Server{
		cfg:  cfg,
		log:  cfg.Logger.With("component", "ctrl"),
		poke: make(chan struct{}, 1),
	}
	if err := s.bind(); err != nil {
		s.abort()
		return nil, err
	}
	// Snapshots in the store may carry HMAC secrets (docs/auth.md): a new
	// data directory is the snapgate user's only.
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		s.abort()
		return nil, fmt.Errorf("data dir %s: %w", cfg.DataDir, err)
	}
	st, err := store.OpenPebble(filepath.Join(cfg.DataDir, "store"), store.Options{Logger: cfg.Logger})
	if err != nil {
		s.abort()
		return nil, err
	}
	s.store = st
	if err := s.init(); err != nil {
		s.abort()
		return nil, err
	}
	return s, nil
}

// bind takes every address and path the configuration names. Binding is
// the cheapest complete check of them, and nothing is served before Run:
// an early edge or ctl waits in the listen backlog. The admin socket goes
// first: when ctrl is already running, it is what says so.
func (s *Server) bind() error {
	adm, err := admin.Listen(admin.Config{Path: s.cfg.AdminSocket, Handler: handler{s}, Logger: s.cfg.Logger})
	if err != nil {
		return err
	}
	s.adm = adm
	ln, err := listenTCP("stream listener", s.cfg.PublishAddr)
	if err != nil {
		return err
	}
	s.pubLn = ln
	return s.listenMetrics(s.cfg.MetricsAddr)
}

// abort releases what a failed New took, the admin socket first and the
// store (and its lock) last, so a corrected start can follow at once.
func (s *Server) abort() {
	if s.adm != nil {
		s.adm.Close()
	}
	s.closeListeners()
	if s.pub != nil {
		s.pub.Close()
	}
	if s.health != nil {
		s.health.Close()
	}
	if s.store != nil {
		s.store.Close()
	}
}

// closeListeners closes the stream and metrics listeners: Run's servers
// close them only once they serve them.
func (s *Server) closeListeners() error {
	var errs []error
	for _, ln := range []net.Listener{s.pubLn, s.metricsLn} {
		if ln == nil {
			continue
		}
		if err := ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, fmt.Errorf("listener %s: %w", ln.Addr(), err))
		}
	}
	return errors.Join(errs...)
}

func (s *Server) init() error {
	if err := s.ensureInitialized(); err != nil {
		return err
	}
	if err := s.load(); err != nil {
		return err
	}
	if s.cfg.Publish.Lookup == nil {
		s.cfg.Publish.Lookup = s.store.Snapshot
	}
	if s.cfg.Publish.Metrics == nil {
		s.cfg.Publish.Metrics = metrics.NewSet()
	}
	s.metrics = newCtrlMetrics(s.cfg.Publish.Metrics)
	hcfg := s.cfg.Health
	hcfg.Store = s.store
	if hcfg.Metrics == nil {
		hcfg.Metrics = s.cfg.Publish.Metrics
	}
	if hcfg.Logger == nil {
		hcfg.Logger = s.cfg.Logger
	}
	tr, err := health.Open(hcfg)
	if err != nil {
		return err
	}
	s.health = tr
	// Before the first snapshot and the first observation: the tracker
	// publishes the stored health of these clusters at once.
	s.syncHealth()
	if err := s.rememberEdges(); err != nil {
		return err
	}
	s.cfg.Publish.OnReport = s.observeEdge
	// Files the publisher no longer reads go back to the builder, which
	// writes later versions into them instead of 12 MB of fresh pages.
	s.cfg.Publish.Recycle = s.builder.Recycle
	s.pub = publish.New(s.cfg.Publish)
	if err := s.startSnapshot(); err != nil {
		return err
	}
	// The publisher hands files back only once it holds more than its
	// delta bases: until then each build needs memory of its own.
	s.builder.Reserve(s.pub.KeepBases())
	return nil
}

// ensureInitialized gives a fresh store its first revision. Snapshot
// versions are store revisions and edges start from version 0 meaning "have
// nothing", so an empty configuration needs a revision above 0 for its
// (empty) snapshot to be newer than what a fresh edge has. The marker's body
// is constant, keeping two stores fed the same documents at the same revisions.
func (s *Server) ensureInitialized() error {
	if s.store.Revision() != 0 {
		return nil
	}
	zero := uint64(0)
	_, _, err := s.store.Apply(store.Mutation{Kind: kindMeta, ID: "init", Body: []byte(`{"format":1}`), Expected: &zero})
	if err != nil {
		return fmt.Errorf("initialising store: %w", err)
	}
	return nil
}

// load reads every document into the model.
func (s *Server) load() error {
	rev, docs, err := s.store.Load()
	if err != nil {
		return fmt.Errorf("loading documents: %w", err)
	}
	m := newState(rev)
	if err := s.loadDocs(&m, docs); err != nil {
		return err
	}
	s.model = m
	s.log.Info("loaded configuration", "revision", rev, "routes", len(m.routes), "clusters", len(m.clusters),
		"consumers", len(m.consumers), "jwt_issuers", len(m.issuers), "policies", len(m.policies), "fleet_size", m.fleetSize())
	return nil
}

// loadDocs adds stored documents to m, each through its kind's load.
func (s *Server) loadDocs(m *state, docs []store.Doc) error {
	for _, d := range docs {
		var err error
		switch d.Kind {
		case kindRoute:
			err = routes.load(s, m, d)
		case kindCluster:
			err = clusters.load(s, m, d)
		case kindConsumer:
			err = consumers.load(s, m, d)
		case kindJWTIssuer:
			err = issuers.load(s, m, d)
		case kindPolicy:
			err = policies.load(s, m, d)
		case kindMeta:
			err = m.loadMeta(d)
		case health.Kind:
			// The tracker reads its own at start (health.go).
		default:
			// A kind this ctrl does not know was written by a newer one.
			// Building without it would drop what it configures (a
			// policy kind would leave routes unprotected) unannounced.
			err = fmt.Errorf("stored document %s %q (revision %d) is of a kind this ctrl does not know; was the store written by a newer ctrl?", d.Kind, d.ID, d.Revision)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// startSnapshot publishes the stored latest snapshot if it is current, and
// builds a new one otherwise, so versions survive restarts and the parent
// chain continues. Current means: built from the store's latest revision
// and carrying the health the tracker publishes now.
func (s *Server) startSnapshot() error {
	rev := s.store.Revision()
	ver, data, err := s.store.LatestSnapshot()
	switch {
	case errors.Is(err, store.ErrNotFound):
		return s.build()
	case err != nil:
		return fmt.Errorf("reading latest snapshot: %w", err)
	case ver > rev:
		return fmt.Errorf("latest stored snapshot has version %d but the store is at revision %d; refusing to publish versions that go backwards", ver, rev)
	}
	snap, oerr := fbs.Open(data)
	if oerr == nil && snap.Version() != ver {
		oerr = fmt.Errorf("the file says version %d", snap.Version())
	}
	if oerr != nil {
		s.log.Error("latest stored snapshot is unreadable; rebuilding", "version", ver, "err", oerr)
		return s.build()
	}
	// builtAt is when this process took the snapshot into service; the file
	// does not record when it was built.
	s.setSnap(snapInfo{version: ver, parent: snap.ParentVersion(), bytes: len(data), builtAt: time.Now()})
	// Writes committed after it (a crash before their build), or health
	// published after it (held back by the publication cap when ctrl
	// stopped), make it stale; health writes that changed nothing edges see
	// only move the revision. Compare its content with a build of the
	// current state.
	cs, next := s.clusters.convert(&s.model, s.health.Routing())
	cur, err := s.builder.BuildSnapshot(s.model.fbsState(ver, snap.ParentVersion(), s.cfg.Shards, cs))
	if err != nil {
		// The stored documents do not build (one stored before a rule that
		// now refuses it, say). Refusing to start would leave the operator
		// no admin socket to fix them with: serve the stored snapshot, and
		// let the recompute loop retry, and log, until a write fixes them.
		s.log.Error("the stored documents do not build; serving the stored snapshot until a write fixes them", "version", ver, "err", err)
		s.publishStored(ver, snap, len(data), next)
		s.notify()
		return nil
	}
	same := cur.ContentHash() == snap.ContentHash()
	s.builder.Recycle(cur.Bytes())
	if !same {
		if ver < rev {
			// A version above ver may have been published and lost to a
			// crash before its commit (recompute.go), built with health
			// the tracker had not published yet then but restores now: a
			// rebuild at rev could give that number other bytes and mark
			// every edge holding it diverged. A revision of its own puts
			// the rebuild above anything published.
			s.wmu.Lock()
			_, err := s.advanceRevision(s.health.Routing().Generation)
			s.wmu.Unlock()
			if err != nil {
				return err
			}
		}
		return s.build()
	}
	s.publishStored(ver, snap, len(data), next)
	s.builtModel = s.model.revision
	return nil
}

// publishStored puts the stored latest snapshot into service at start.
func (s *Server) publishStored(ver uint64, snap *fbs.Snapshot, size int, clusters clusterCache) {
	s.clusters = clusters
	s.metrics.snapshotBytes.Set(float64(size))
	s.metrics.version.Set(float64(ver))
	s.pub.PublishSnapshot(snap, time.Time{})
	s.log.Info("publishing stored snapshot", "version", ver, "routes", snap.NumRoutes(), "clusters", snap.NumClusters(), "bytes", size)
}

// AdminSocket returns the admin socket path.
func (s *Server) AdminSocket() string { return s.adm.Path() }

// PublishAddr returns the address the publish listener is bound to.
func (s *Server) PublishAddr() string { return s.pubLn.Addr().String() }

// Run serves the admin socket, the edge stream and the recompute loop until
// ctx is cancelled, then closes everything (the socket file is removed) and
// returns. A listener failing also ends Run, with that error.
func (s *Server) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 3)
	var wg sync.WaitGroup
	wg.Add(3)
	go func() {
		defer wg.Done()
		if err := s.serveMetrics(); err != nil {
			errc <- err
			cancel()
		}
	}()
	go func() {
		defer wg.Done()
		if err := s.adm.Serve(); err != nil {
			errc <- err
			cancel()
		}
	}()
	go func() {
		defer wg.Done()
		if err := s.pub.Serve(s.pubLn); err != nil && !errors.Is(err, publish.ErrClosed) {
			errc <- fmt.Errorf("stream listener %s: %w", s.PublishAddr(), err)
			cancel()
		}
	}()
	var loops sync.WaitGroup
	loops.Go(func() { s.recomputeLoop(ctx) })
	loops.Go(func() { s.fleetLoop(ctx) })
	s.log.Info("ctrl running", "admin", s.AdminSocket(), "publish", s.PublishAddr(), "metrics", s.MetricsAddr())
	<-ctx.Done()
	// The loops finish a build or write they are in the middle of before
	// the store closes.
	loops.Wait()
	cerr := s.Close()
	wg.Wait()
	select {
	case err := <-errc:
		return err
	default:
		return cerr
	}
}

// Close stops serving and closes the store. Run calls it on the way out;
// call it directly only when Run was never started. It is idempotent.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		// Admin first: it returns once no command runs, so no write is
		// between its commit and its fsync while the store closes.
		errs := []error{s.adm.Close(), s.pub.Close(), s.closeMetrics(), s.closeListeners()}
		// wmu: a fleet record or build still under it finishes first; the
		// tracker writes its last state before the store closes.
		s.wmu.Lock()
		errs = append(errs, s.health.Close(), s.store.Close())
		s.wmu.Unlock()
		s.closeErr = errors.Join(errs...)
		if s.closeErr != nil {
			s.closeErr = fmt.Errorf("close: %w", s.closeErr)
		}
	})
	return s.closeErr
}

// keepBuilt bounds the build-time history; an edge further behind reports
// its lag from the oldest build remembered, a lower bound.
const keepBuilt = 1024

func (s *Server) setSnap(si snapInfo) {
	s.snapMu.Lock()
	s.snap = si
	s.built = append(s.built, si)
	if len(s.built) > keepBuilt {
		s.built = slices.Delete(s.built, 0, len(s.built)-keepBuilt)
	}
	s.snapMu.Unlock()
}

// firstBuiltAfter returns when the oldest remembered snapshot newer than
// version was built, zero if there is none.
func (s *Server) firstBuiltAfter(version uint64) time.Time {
	s.snapMu.Lock()
	defer s.snapMu.Unlock()
	i, _ := slices.BinarySearchFunc(s.built, version+1, func(si snapInfo, v uint64) int { return cmp.Compare(si.version, v) })
	if i == len(s.built) {
		return time.Time{}
	}
	return s.built[i].builtAt
}

func (s *Server) lastSnap() snapInfo {
	s.snapMu.Lock()
	defer s.snapMu.Unlock()
	return s.snap
}

// edgeMetaPrefix keys each edge's last known status in the store's
// metadata (outside the revisions: saving it never makes a snapshot).
const edgeMetaPrefix = "edge/"

// rememberEdges seeds the publisher with the edges stored before this
// start and has it save their changes back.
func (s *Server) rememberEdges() error {
	metas, err := s.store.ListMeta(edgeMetaPrefix)
	if err != nil {
		return fmt.Errorf("loading remembered edges: %w", err)
	}
	for _, m := range metas {
		rec, err := publish.DecodeEdgeRecord(m.Value)
		if err == nil && edgeMetaPrefix+rec.NodeID != m.Key {
			err = fmt.Errorf("record is for node %q", rec.NodeID)
		}
		if err != nil {
			s.log.Warn("ignoring unreadable remembered edge", "key", m.Key, "err", err)
			continue
		}
		s.cfg.Publish.Edges = append(s.cfg.Publish.Edges, rec)
	}
	// A forget's delete is fsynced before ctl gets its reply (DeleteMeta);
	// status updates are not (PutMeta), but each batch of them is synced
	// once it is written: without it they stayed in Pebble's log buffer,
	// in the process, until the next configuration write, and a kill -9
	// lost every update since.
	s.cfg.Publish.OnEdgeChange = func(nodeID string, rec *publish.EdgeRecord) error {
		if rec == nil {
			return s.store.DeleteMeta(edgeMetaPrefix + nodeID)
		}
		return s.store.PutMeta(edgeMetaPrefix+nodeID, rec.Encode())
	}
	s.cfg.Publish.OnEdgesSaved = s.store.SyncMeta
	return nil
}
