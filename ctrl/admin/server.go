package admin

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime/debug"
	"sync"
	"syscall"
	"time"

	"github.com/snapgate/snapgate/ctrl/accept"
	"github.com/snapgate/snapgate/ctrl/model"
)

// Handler executes admin commands. ctrl implements it; admin does not
// import ctrl. Return an *Error (possibly wrapped) to choose the reply's
// code, field and message; any other error is replied as "internal".
type Handler interface {
	PutRoute(ctx context.Context, r model.Route, expected *uint64) (Result, error)
	GetRoute(ctx context.Context, id string) (Result, error)
	ListRoutes(ctx context.Context) (List, error)
	DeleteRoute(ctx context.Context, id string, expected *uint64) (Result, error)
	PutCluster(ctx context.Context, c model.Cluster, expected *uint64) (Result, error)
	GetCluster(ctx context.Context, id string) (Result, error)
	ListClusters(ctx context.Context) (List, error)
	DeleteCluster(ctx context.Context, id string, expected *uint64) (Result, error)

	// PutConsumer with keepCredentials takes the stored consumer's
	// credentials (Request.KeepCredentials).
	PutConsumer(ctx context.Context, c model.Consumer, expected *uint64, keepCredentials bool) (Result, error)
	GetConsumer(ctx context.Context, id string) (Result, error)
	ListConsumers(ctx context.Context) (List, error)
	DeleteConsumer(ctx context.Context, id string, expected *uint64) (Result, error)
	// AddConsumerKey generates an API key named keyID ("" = ctrl picks one)
	// and returns it in Result.APIKey; only its hash is stored.
	AddConsumerKey(ctx context.Context, id, keyID string, expected *uint64) (Result, error)
	RemoveConsumerKey(ctx context.Context, id, keyID string, expected *uint64) (Result, error)
	// SetConsumerPassword adds username or replaces its password hash.
	SetConsumerPassword(ctx context.Context, id, username, passwordHash string, expected *uint64) (Result, error)

	PutJWTIssuer(ctx context.Context, j model.JWTIssuer, expected *uint64) (Result, error)
	GetJWTIssuer(ctx context.Context, id string) (Result, error)
	ListJWTIssuers(ctx context.Context) (List, error)
	DeleteJWTIssuer(ctx context.Context, id string, expected *uint64) (Result, error)

	PutPolicy(ctx context.Context, p model.Policy, expected *uint64) (Result, error)
	GetPolicy(ctx context.Context, id string) (Result, error)
	ListPolicies(ctx context.Context) (List, error)
	DeletePolicy(ctx context.Context, id string, expected *uint64) (Result, error)

	// ReportHealth records an external checker's report and returns once
	// the endpoint's state, including it, is durable.
	ReportHealth(ctx context.Context, r HealthReport) (HealthReportResult, error)
	// HealthStatus returns every tracked cluster ("" ) or one.
	HealthStatus(ctx context.Context, cluster string) (HealthStatus, error)
	// ExplainHealth explains endpoint in cluster, or in every cluster ("").
	ExplainHealth(ctx context.Context, cluster, endpoint string) (HealthExplanation, error)

	Status(ctx context.Context) (Status, error)
	// ForgetEdge removes a disconnected edge from Status and from ctrl's
	// store, and returns it as it was last listed: not_found for an edge
	// ctrl does not list, conflict for a connected one.
	ForgetEdge(ctx context.Context, nodeID string) (EdgeStatus, error)
}

// Config configures a Server.
type Config struct {
	// Path of the unix socket. Required. The socket is created with mode
	// 0600: whoever can connect can rewrite the gateway's routing. A missing
	// directory is created with mode 0700, as ctrl does for its data dir.
	Path    string
	Handler Handler // required
	Logger  *slog.Logger
	// MaxLine bounds a request line in bytes (default DefaultMaxLine). A longer
	// line gets a bad_request reply and the connection is closed, since the
	// rest of it cannot be resynchronised cheaply.
	MaxLine int
	// WriteTimeout bounds writing one reply (default 10s), so a client that
	// stops reading cannot pin a connection forever.
	WriteTimeout time.Duration
	// IdleTimeout closes a connection whose next request line has not
	// arrived whole this long after the previous reply (or the connect;
	// default 10m), so that a client that leaks connections, or stops in
	// the middle of a line, does not hold a descriptor and a goroutine of
	// ctrl until it stops.
	IdleTimeout time.Duration
}

// Server serves the admin socket.
type Server struct {
	cfg    Config
	log    *slog.Logger
	ln     *net.UnixListener
	inode  os.FileInfo // the socket file we created; removed on Close only if still ours
	lock   *os.File    // flock'd path+".lock", held until Close (createSocket)
	ctx    context.Context
	cancel context.CancelFunc

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup

	closeOnce sync.Once
	closeErr  error
}

// unixPathMax is sizeof(sockaddr_un.sun_path) minus the terminating NUL on Linux.
const unixPathMax = 107

// bindOverhead is what createSocket's temporary name adds to the socket's
// directory: "/.admin", up to 10 digits from os.MkdirTemp, "/s".
const bindOverhead = len("/.admin") + 10 + len("/s")

// Listen creates the socket at cfg.Path. A socket file left by a crashed
// ctrl is removed; if something is listening on it, or the path exists and
// is not a socket, Listen refuses rather than hijacking or deleting it.
// Errors begin with "admin socket PATH:".
func Listen(cfg Config) (*Server, error) {
	if cfg.Path == "" {
		return nil, errors.New("admin socket: path is empty")
	}
	if cfg.Handler == nil {
		return nil, errors.New("admin: Handler is nil")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.MaxLine <= 0 {
		cfg.MaxLine = DefaultMaxLine
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = 10 * time.Second
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = 10 * time.Minute
	}
	ln, fi, lock, err := createSocket(cfg.Path)
	if err != nil {
		return nil, fmt.Errorf("admin socket %s: %w", cfg.Path, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Server{
		cfg:    cfg,
		log:    cfg.Logger.With("component", "admin", "socket", cfg.Path),
		ln:     ln,
		inode:  fi,
		lock:   lock,
		ctx:    ctx,
		cancel: cancel,
		conns:  make(map[net.Conn]struct{}),
	}, nil
}

// createSocket binds the socket inside a fresh 0700 directory, sets mode
// 0600 and only then hard-links it to path. Binding at path directly and
// chmod-ing afterwards would leave a window in which the socket carries the
// umask's (often world-connectable) mode; changing the umask instead would
// affect every goroutine in the process. link(2) also fails if path exists,
// so two racing ctrls cannot both take it; the lock (lockSocket), held
// from before the stale check until Close, keeps one from removing the
// other's. Its errors do not repeat path.
func createSocket(path string) (_ *net.UnixListener, _ os.FileInfo, lock *os.File, err error) {
	// Checked before anything is created: the bound name must fit, and
	// so must path, which clients connect to.
	if n := max(len(path), len(filepath.Dir(path))+bindOverhead); n > unixPathMax {
		return nil, nil, nil, fmt.Errorf("path too long: a unix socket path holds at most %d bytes, and this one needs %d (the path, or its directory plus %d for a temporary name)", unixPathMax, n, bindOverhead)
	}
	// Before looking at path: a parent that is a file is then reported
	// by name ("mkdir /x/f: not a directory"), not as path's lstat error.
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, nil, nil, err
	}
	if lock, err = lockSocket(path); err != nil {
		return nil, nil, nil, err
	}
	defer func() {
		if err != nil {
			lock.Close()
		}
	}()
	if err := clearStale(path); err != nil {
		return nil, nil, nil, err
	}
	dir, err := os.MkdirTemp(filepath.Dir(path), ".admin")
	if err != nil {
		return nil, nil, nil, fmt.Errorf("creating private directory: %w", err)
	}
	defer os.RemoveAll(dir)
	tmp := filepath.Join(dir, "s")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: tmp, Net: "unix"})
	if err != nil {
		return nil, nil, nil, err
	}
	ln.SetUnlinkOnClose(false) // the temp name goes away with dir; path is removed by Close
	fail := func(e error) (*net.UnixListener, os.FileInfo, *os.File, error) {
		ln.Close()
		return nil, nil, nil, e
	}
	if err := os.Chmod(tmp, 0o600); err != nil {
		return fail(fmt.Errorf("chmod 0600: %w", err))
	}
	if err := os.Link(tmp, path); err != nil {
		if errors.Is(err, os.ErrExist) {
			return fail(errors.New("created by another process while starting (is another ctrl starting?)"))
		}
		return fail(fmt.Errorf("link: %w", unwrapPath(err)))
	}
	fi, err := os.Lstat(path)
	if err != nil {
		os.Remove(path)
		return fail(unwrapPath(err))
	}
	return ln, fi, lock, nil
}

// lockSocket takes an exclusive flock on path+".lock" (created 0600 beside
// the socket, never removed: removing a lock file races its next taker).
// Whoever holds it owns path: clearStale's check-then-remove and the link
// are otherwise a race between two ctrls starting at once over a stale
// socket, in which one could remove the other's live socket and both
// start, one listening on a name nobody can reach.
func lockSocket(path string) (*os.File, error) {
	f, err := os.OpenFile(path+".lock", os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock file: %w", unwrapPath(err))
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			// The holder is listening, or about to: it is past this point.
			return nil, errors.New("another process is listening on it (is ctrl already running?)")
		}
		return nil, fmt.Errorf("lock file: flock: %w", err)
	}
	return f, nil
}

// clearStale removes path if it is a socket nobody listens on.
func clearStale(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return unwrapPath(err)
	}
	if fi.Mode()&os.ModeSocket == 0 {
		return fmt.Errorf("path exists and is %s, not a socket; refusing to replace it", fileKind(fi.Mode()))
	}
	c, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		c.Close()
		return errors.New("another process is listening on it (is ctrl already running?)")
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("cannot tell whether it is in use: %w", unwrapPath(err))
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("removing stale socket: %w", unwrapPath(err))
	}
	return nil
}

// unwrapPath drops the path from an *os.PathError, *os.LinkError or
// *net.OpError (whose inner error names the system call, "connect: ..."):
// the caller's context names the socket already.
func unwrapPath(err error) error {
	var pe *os.PathError
	var le *os.LinkError
	var oe *net.OpError
	switch {
	case errors.As(err, &pe):
		return fmt.Errorf("%s: %w", pe.Op, pe.Err)
	case errors.As(err, &le):
		return le.Err
	case errors.As(err, &oe):
		return oe.Err
	}
	return err
}

// fileKind names a file type for an operator.
func fileKind(m os.FileMode) string {
	switch {
	case m.IsDir():
		return "a directory"
	case m.IsRegular():
		return "a regular file"
	case m&os.ModeSymlink != 0:
		return "a symbolic link"
	case m&os.ModeNamedPipe != 0:
		return "a named pipe"
	case m&os.ModeDevice != 0:
		return "a device"
	}
	return "a file of type " + m.Type().String()
}

// Path returns the socket path.
func (s *Server) Path() string { return s.cfg.Path }

// Serve accepts connections until Close. It returns nil after Close.
func (s *Server) Serve() error {
	var backoff time.Duration
	for {
		c, err := s.ln.Accept()
		if err != nil {
			if s.isClosed() {
				return nil
			}
			if accept.Transient(err) {
				backoff = accept.Backoff(backoff)
				s.log.Warn("accept failed; retrying", "err", err, "backoff", backoff)
				time.Sleep(backoff)
				continue
			}
			return fmt.Errorf("admin socket %s: accept: %w", s.cfg.Path, err)
		}
		backoff = 0
		if !s.track(c) {
			c.Close()
			return nil
		}
		go func() {
			defer s.wg.Done()
			defer s.untrack(c)
			s.serveConn(c)
		}()
	}
}

func (s *Server) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

func (s *Server) track(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.conns[c] = struct{}{}
	// Counted under mu, before Close can set closed and Wait: an Add that
	// raced a Wait already in progress could be missed by it.
	s.wg.Add(1)
	return true
}

func (s *Server) untrack(c net.Conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	c.Close()
}

// Close stops accepting, closes every connection, waits for in-flight
// requests to finish and removes the socket file.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		for c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
		s.cancel()
		err := s.ln.Close()
		s.wg.Wait()
		// Remove the path only if it is still the socket we created; an
		// operator may have started another ctrl on it after moving ours.
		if fi, lerr := os.Lstat(s.cfg.Path); lerr == nil && os.SameFile(fi, s.inode) {
			if rerr := os.Remove(s.cfg.Path); rerr != nil && err == nil {
				err = rerr
			}
		}
		s.lock.Close() // after the path is gone: the next taker finds it free
		if err != nil {
			s.closeErr = fmt.Errorf("admin socket %s: close: %w", s.cfg.Path, err)
		}
	})
	return s.closeErr
}

var errLineTooLong = errors.New("line too long")

func (s *Server) serveConn(c net.Conn) {
	r := bufio.NewReaderSize(c, 64<<10)
	var line []byte
	for {
		if err := c.SetReadDeadline(time.Now().Add(s.cfg.IdleTimeout)); err != nil {
			return
		}
		var err error
		line, err = readLine(r, s.cfg.MaxLine, line[:0])
		if errors.Is(err, errLineTooLong) {
			s.writeReply(c, Reply{Error: Errorf(CodeBadRequest, "", "request line exceeds %d bytes; closing the connection", s.cfg.MaxLine)})
			return
		}
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
				s.log.Debug("reading request", "err", err)
			}
			return
		}
		if len(bytes.TrimSpace(line)) == 0 {
			continue // tolerate blank lines from hand-typed sessions
		}
		if !s.writeReply(c, s.handle(line)) {
			return
		}
		if cap(line) > 64<<10 {
			line = nil // do not pin a 1 MiB buffer for the rest of a long session
		}
	}
}

// readLine reads one '\n'-terminated line into buf, without the terminator
// (and without a preceding '\r'). A final line without '\n' is returned
// as is. Lines over max bytes yield errLineTooLong.
func readLine(r *bufio.Reader, max int, buf []byte) ([]byte, error) {
	for {
		frag, err := r.ReadSlice('\n')
		n := len(frag)
		if err == nil {
			n-- // the newline does not count against the limit
		}
		if len(buf)+n > max {
			return nil, errLineTooLong
		}
		buf = append(buf, frag...)
		switch {
		case err == nil:
			buf = buf[:len(buf)-1]
			if len(buf) > 0 && buf[len(buf)-1] == '\r' {
				buf = buf[:len(buf)-1]
			}
			return buf, nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF) && len(buf) > 0:
			return buf, nil
		default:
			return nil, err
		}
	}
}

func (s *Server) writeReply(c net.Conn, rep Reply) bool {
	b, err := json.Marshal(rep)
	if err != nil {
		s.log.Error("encoding reply", "err", err)
		b, _ = json.Marshal(Reply{Error: Errorf(CodeInternal, "", "encoding reply: %v", err)})
	}
	b = append(b, '\n')
	if err := c.SetWriteDeadline(time.Now().Add(s.cfg.WriteTimeout)); err != nil {
		return false
	}
	if _, err := c.Write(b); err != nil {
		s.log.Debug("writing reply", "err", err)
		return false
	}
	return true
}

// handle turns one request line into its reply.
func (s *Server) handle(line []byte) Reply {
	req, rerr := DecodeRequest(line)
	if rerr != nil {
		return Reply{Error: rerr}
	}
	start := time.Now()
	res, err := s.dispatch(req)
	if err != nil {
		var ae *Error
		if !errors.As(err, &ae) {
			ae = Errorf(CodeInternal, "", "%v", err)
			s.log.Error("admin command failed", "cmd", req.Cmd, "err", err)
		}
		s.log.Debug("admin command rejected", "cmd", req.Cmd, "code", ae.Code, "field", ae.Field, "msg", ae.Message)
		return Reply{Error: ae}
	}
	b, err := json.Marshal(res)
	if err != nil {
		return Reply{Error: Errorf(CodeInternal, "", "encoding result of %s: %v", req.Cmd, err)}
	}
	s.log.Debug("admin command", "cmd", req.Cmd, "took", time.Since(start))
	return Reply{OK: true, Result: b}
}

func (s *Server) dispatch(req Request) (res any, err error) {
	defer func() {
		// A bug in one command must not take down the control plane; the
		// writer either committed or not, and the reply says "internal".
		if p := recover(); p != nil {
			s.log.Error("admin handler panicked", "cmd", req.Cmd, "panic", p, "stack", string(debug.Stack()))
			res, err = nil, Errorf(CodeInternal, "", "%s failed unexpectedly; see the ctrl log", req.Cmd)
		}
	}()
	ctx := s.ctx
	h := s.cfg.Handler
	switch req.Cmd {
	case CmdRoutePut:
		return h.PutRoute(ctx, *req.Route, req.ExpectedVersion)
	case CmdRouteGet:
		return h.GetRoute(ctx, req.ID)
	case CmdRouteList:
		return h.ListRoutes(ctx)
	case CmdRouteDelete:
		return h.DeleteRoute(ctx, req.ID, req.ExpectedVersion)
	case CmdClusterPut:
		return h.PutCluster(ctx, *req.Cluster, req.ExpectedVersion)
	case CmdClusterGet:
		return h.GetCluster(ctx, req.ID)
	case CmdClusterList:
		return h.ListClusters(ctx)
	case CmdClusterDelete:
		return h.DeleteCluster(ctx, req.ID, req.ExpectedVersion)
	case CmdConsumerPut:
		return h.PutConsumer(ctx, *req.Consumer, req.ExpectedVersion, req.KeepCredentials)
	case CmdConsumerGet:
		return h.GetConsumer(ctx, req.ID)
	case CmdConsumerList:
		return h.ListConsumers(ctx)
	case CmdConsumerDelete:
		return h.DeleteConsumer(ctx, req.ID, req.ExpectedVersion)
	case CmdConsumerAddKey:
		return h.AddConsumerKey(ctx, req.ID, req.KeyID, req.ExpectedVersion)
	case CmdConsumerRemoveKey:
		return h.RemoveConsumerKey(ctx, req.ID, req.KeyID, req.ExpectedVersion)
	case CmdConsumerSetPassword:
		return h.SetConsumerPassword(ctx, req.ID, req.Username, req.PasswordHash, req.ExpectedVersion)
	case CmdJWTIssuerPut:
		return h.PutJWTIssuer(ctx, *req.JWTIssuer, req.ExpectedVersion)
	case CmdJWTIssuerGet:
		return h.GetJWTIssuer(ctx, req.ID)
	case CmdJWTIssuerList:
		return h.ListJWTIssuers(ctx)
	case CmdJWTIssuerDelete:
		return h.DeleteJWTIssuer(ctx, req.ID, req.ExpectedVersion)
	case CmdPolicyPut:
		return h.PutPolicy(ctx, *req.Policy, req.ExpectedVersion)
	case CmdPolicyGet:
		return h.GetPolicy(ctx, req.ID)
	case CmdPolicyList:
		return h.ListPolicies(ctx)
	case CmdPolicyDelete:
		return h.DeletePolicy(ctx, req.ID, req.ExpectedVersion)
	case CmdHealthReport:
		return h.ReportHealth(ctx, *req.Report)
	case CmdHealthStatus:
		return h.HealthStatus(ctx, req.ID)
	case CmdHealthExplain:
		return h.ExplainHealth(ctx, req.ID, req.Endpoint)
	case CmdStatus:
		return h.Status(ctx)
	case CmdEdgeForget:
		return h.ForgetEdge(ctx, req.NodeID)
	}
	return nil, Errorf(CodeBadRequest, "cmd", "unknown command %q", req.Cmd)
}
