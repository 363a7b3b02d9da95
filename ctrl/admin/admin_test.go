package admin

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/snapgate/snapgate/ctrl/model"
)

// memHandler is a minimal in-memory Handler: enough to drive the protocol.
// ctrl's tests run the real one end to end. The methods it does not define
// come from the nil embedded Handler and panic, which the server turns into
// an "internal" reply.
type memHandler struct {
	Handler
	mu     sync.Mutex
	rev    uint64
	routes map[string]Result
	block  chan struct{} // if non-nil, Status waits on it
}

func newMem() *memHandler { return &memHandler{routes: map[string]Result{}} }

func (h *memHandler) PutRoute(_ context.Context, r model.Route, expected *uint64) (Result, error) {
	if err := r.Validate(); err != nil {
		fe, _ := model.First(err)
		return Result{}, &Error{Code: CodeInvalid, Field: fe.Field, Message: err.Error()}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	cur := h.routes[r.ID]
	if expected != nil && *expected != cur.Version {
		return Result{}, Errorf(CodeConflict, "expected_version", "route %q is at version %d", r.ID, cur.Version)
	}
	h.rev++
	res := Result{Kind: "route", ID: r.ID, Version: cur.Version + 1, Revision: h.rev, Route: &r}
	h.routes[r.ID] = res
	return res, nil
}

func (h *memHandler) GetRoute(_ context.Context, id string) (Result, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	res, ok := h.routes[id]
	if !ok {
		return Result{}, Errorf(CodeNotFound, "id", "route %q does not exist", id)
	}
	return res, nil
}

func (h *memHandler) ListRoutes(context.Context) (List, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	l := List{Kind: "route", Revision: h.rev, Items: []Result{}}
	for _, r := range h.routes {
		l.Items = append(l.Items, r)
	}
	return l, nil
}

func (h *memHandler) DeleteRoute(_ context.Context, id string, _ *uint64) (Result, error) {
	return Result{}, errors.New("disk on fire")
}

func (h *memHandler) PutCluster(context.Context, model.Cluster, *uint64) (Result, error) {
	panic("boom")
}

func (h *memHandler) GetCluster(_ context.Context, id string) (Result, error) {
	return Result{}, Errorf(CodeNotFound, "id", "cluster %q does not exist", id)
}

func (h *memHandler) ListClusters(context.Context) (List, error) {
	return List{Kind: "cluster", Items: []Result{}}, nil
}

func (h *memHandler) DeleteCluster(_ context.Context, id string, _ *uint64) (Result, error) {
	return Result{}, Errorf(CodeNotFound, "id", "cluster %q does not exist", id)
}

func (h *memHandler) Status(ctx context.Context) (Status, error) {
	if h.block != nil {
		select {
		case <-h.block:
		case <-ctx.Done():
			return Status{}, ctx.Err()
		}
	}
	return Status{SnapshotVersion: 7, StoreRevision: 7, Edges: []EdgeStatus{{NodeID: "e1", Connected: true, AppliedVersion: 6, Lag: 1}}}, nil
}

func (h *memHandler) ForgetEdge(_ context.Context, nodeID string) (EdgeStatus, error) {
	if nodeID != "e1" {
		return EdgeStatus{}, Errorf(CodeNotFound, "node_id", "no edge %q is listed", nodeID)
	}
	return EdgeStatus{NodeID: nodeID, RemoteAddr: "10.0.0.1:5000", AppliedVersion: 6}, nil
}

// start runs a server on a socket in a fresh temp dir and stops it at cleanup.
func start(t *testing.T, h Handler, maxLine int) *Server {
	t.Helper()
	path := filepath.Join(t.TempDir(), "admin.sock")
	s, err := Listen(Config{Path: path, Handler: h, MaxLine: maxLine})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve() }()
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("Serve did not return after Close")
		}
	})
	return s
}

// rawConn sends lines and reads reply lines on a plain connection.
type rawConn struct {
	t *testing.T
	c net.Conn
	r *bufio.Reader
}

func dialRaw(t *testing.T, path string) *rawConn {
	t.Helper()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return &rawConn{t: t, c: c, r: bufio.NewReader(c)}
}

func (rc *rawConn) send(s string) {
	rc.t.Helper()
	if _, err := rc.c.Write([]byte(s)); err != nil {
		rc.t.Fatal(err)
	}
}

func (rc *rawConn) reply() Reply {
	rc.t.Helper()
	line, err := rc.r.ReadBytes('\n')
	if err != nil {
		rc.t.Fatalf("reading reply: %v", err)
	}
	var rep Reply
	if err := json.Unmarshal(line, &rep); err != nil {
		rc.t.Fatalf("reply %q: %v", line, err)
	}
	return rep
}

func wantErr(t *testing.T, rep Reply, code, field, msg string) {
	t.Helper()
	if rep.OK || rep.Error == nil {
		t.Fatalf("reply %+v is not an error", rep)
	}
	if rep.Error.Code != code || rep.Error.Field != field || !strings.Contains(rep.Error.Message, msg) {
		t.Fatalf("error = %+v, want code %q field %q message containing %q", rep.Error, code, field, msg)
	}
}

func TestSocketMode(t *testing.T) {
	s := start(t, newMem(), 0)
	fi, err := os.Lstat(s.Path())
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode = %v, want a socket with 0600", fi.Mode())
	}
	// Only the socket and its lock file are left in the directory: the
	// private temp dir is gone.
	ents, err := os.ReadDir(filepath.Dir(s.Path()))
	if err != nil || len(ents) != 2 || ents[1].Name() != filepath.Base(s.Path())+".lock" {
		t.Fatalf("dir entries = %v, %v; want the socket and its lock file", ents, err)
	}
	if li, err := os.Stat(s.Path() + ".lock"); err != nil || li.Mode().Perm() != 0o600 {
		t.Fatalf("lock file: %v, %v; want mode 0600", li, err)
	}
}

// TestListenCreatesSocketDir: the README starts ctrl with
// --admin-socket /run/snapgate/ctrl.sock, a directory that usually does not
// exist yet; ctrl creates it, private, as it does its data dir.
func TestListenCreatesSocketDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "run", "snapgate")
	s, err := Listen(Config{Path: filepath.Join(dir, "ctrl.sock"), Handler: newMem()})
	if err != nil {
		t.Fatalf("Listen in a missing directory: %v", err)
	}
	defer s.Close()
	fi, err := os.Stat(dir)
	if err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("socket directory: %v, %v; want it created with mode 0700", fi, err)
	}
}

func TestSeveralRequestsPerConnection(t *testing.T) {
	s := start(t, newMem(), 0)
	rc := dialRaw(t, s.Path())
	rc.send(`{"cmd":"route.put","route":{"id":"a","host":"*","prefix":"/","cluster":"c"},"expected_version":0}` + "\n" +
		`{"cmd":"route.get","id":"a"}` + "\r\n\n" + // CRLF and a blank line are tolerated
		`{"cmd":"status"}` + "\n")
	rep := rc.reply()
	var res Result
	if !rep.OK || json.Unmarshal(rep.Result, &res) != nil || res.Version != 1 || res.Route == nil || res.Route.Prefix != "/" {
		t.Fatalf("put reply = %+v (%s)", rep, rep.Result)
	}
	rep = rc.reply()
	if !rep.OK || json.Unmarshal(rep.Result, &res) != nil || res.ID != "a" || res.Kind != "route" {
		t.Fatalf("get reply = %+v (%s)", rep, rep.Result)
	}
	rep = rc.reply()
	var st Status
	if !rep.OK || json.Unmarshal(rep.Result, &st) != nil || st.SnapshotVersion != 7 || len(st.Edges) != 1 {
		t.Fatalf("status reply = %+v (%s)", rep, rep.Result)
	}
}

func TestBadRequestsKeepConnection(t *testing.T) {
	s := start(t, newMem(), 0)
	rc := dialRaw(t, s.Path())
	cases := []struct{ line, code, field, msg string }{
		{`{"cmd":"route.get","id":`, CodeBadRequest, "id", "truncated"},
		{`not json`, CodeBadRequest, "", "malformed JSON"},
		{`{"cmd":"route.frobnicate"}`, CodeBadRequest, "cmd", `unknown command "route.frobnicate"`},
		{`{"id":"a"}`, CodeBadRequest, "cmd", "required"},
		{`{"cmd":"route.get"}`, CodeBadRequest, "id", "required by route.get"},
		{`{"cmd":"route.get","id":"A B"}`, CodeBadRequest, "id", "not a valid id"},
		{`{"cmd":"route.put","id":"a","route":{}}`, CodeBadRequest, "id", "the id is route.id"},
		{`{"cmd":"route.put"}`, CodeBadRequest, "route", "required"},
		{`{"cmd":"route.list","expected_version":1}`, CodeBadRequest, "expected_version", "not used"},
		{`{"cmd":"route.put","route":{"id":"a","hots":"x"}}`, CodeBadRequest, "route.hots", "unknown field"},
		{`{"cmd":"route.put","route":{"id":"a","host":"*","prefix":"/a/../b","cluster":"c"}}`, CodeInvalid, "prefix", `".."`},
		{`{"cmd":"route.get","id":"zz"}`, CodeNotFound, "id", "does not exist"},
		{`{"cmd":"route.delete","id":"zz"}`, CodeInternal, "", "disk on fire"},
		{`{"cmd":"consumer.add_key","id":"a","key_id":"Bad Id"}`, CodeBadRequest, "key_id", "not a valid id"},
		{`{"cmd":"consumer.remove_key","id":"a"}`, CodeBadRequest, "key_id", "required by consumer.remove_key"},
		{`{"cmd":"consumer.set_password","id":"a","username":"u"}`, CodeBadRequest, "password_hash", "required by consumer.set_password"},
		{`{"cmd":"consumer.set_password","id":"a","password_hash":"x"}`, CodeBadRequest, "username", "required"},
		{`{"cmd":"policy.put","id":"p","policy":{}}`, CodeBadRequest, "id", "the id is policy.id"},
		{`{"cmd":"jwt_issuer.get","id":"x","key_id":"k"}`, CodeBadRequest, "key_id", "not used by jwt_issuer.get"},
		{`{"cmd":"consumer.put","consumer":{"id":"a","credentials":{"api_keys":[{"id":"k","key":"sg_x"}]}}}`, CodeBadRequest, "consumer.credentials.api_keys[0].key", "unknown field"},
		{`{"cmd":"jwt_issuer.put","jwt_issuer":{"id":"i","issuer":"x","keys":{"keys":[{"kty":"RSA","alg":"RS256","d":"x"}]}}}`, CodeBadRequest, "jwt_issuer.keys.keys[0].d", "unknown field"},
		{`{"cmd":"policy.list","policy":{"id":"p"}}`, CodeBadRequest, "policy", "not used by policy.list"},
		{`{"cmd":"health.report"}`, CodeBadRequest, "report", "required by health.report"},
		{`{"cmd":"health.report","report":{"endpoint":"a:1","state":"healthy","revision":1}}`, CodeBadRequest, "report.cluster", "required"},
		{`{"cmd":"health.report","report":{"cluster":"Bad","endpoint":"a:1","state":"healthy","revision":1}}`, CodeBadRequest, "report.cluster", "not a valid id"},
		{`{"cmd":"health.report","report":{"cluster":"c","state":"healthy","revision":1}}`, CodeBadRequest, "report.endpoint", "required"},
		{`{"cmd":"health.report","report":{"cluster":"c","endpoint":"a:1","state":"up","revision":1}}`, CodeBadRequest, "report.state", `want "healthy" or "unhealthy"`},
		{`{"cmd":"health.report","report":{"cluster":"c","endpoint":"a:1","state":"healthy"}}`, CodeBadRequest, "report.revision", "at least 1"},
		{`{"cmd":"health.report","report":{"cluster":"c","endpoint":"a:1","state":"healthy","revision":-1}}`, CodeBadRequest, "report.revision", ""},
		{`{"cmd":"health.report","report":{"cluster":"c","endpoint":"a:1","state":"healthy","revision":1,"when":2}}`, CodeBadRequest, "report.when", "unknown field"},
		{`{"cmd":"health.report","id":"c","report":{"cluster":"c","endpoint":"a:1","state":"healthy","revision":1}}`, CodeBadRequest, "id", "not used by health.report"},
		{`{"cmd":"health.explain","id":"c"}`, CodeBadRequest, "endpoint", "required by health.explain"},
		{`{"cmd":"health.status","endpoint":"a:1"}`, CodeBadRequest, "endpoint", "not used by health.status"},
		{`{"cmd":"health.status","id":"A"}`, CodeBadRequest, "id", "not a valid id"},
		{`{"cmd":"edge.forget"}`, CodeBadRequest, "node_id", "required by edge.forget"},
		{`{"cmd":"edge.forget","id":"e1"}`, CodeBadRequest, "id", "not used by edge.forget (an edge is named by node_id)"},
		{`{"cmd":"edge.forget","node_id":"e 1"}`, CodeBadRequest, "node_id", `"e 1" is not a valid node id`},
		{`{"cmd":"edge.forget","node_id":"` + strings.Repeat("e", 129) + `"}`, CodeBadRequest, "node_id", "1 to 128 bytes of visible ASCII"},
		{`{"cmd":"edge.forget","node_id":"e\u00e9"}`, CodeBadRequest, "node_id", "not a valid node id"},
		{`{"cmd":"status","node_id":"e1"}`, CodeBadRequest, "node_id", "not used by status"},
		{`{"cmd":"edge.forget","node_id":"Edge-9"}`, CodeNotFound, "node_id", `no edge "Edge-9"`},
		{`{"cmd":"consumer.delete","id":"a","keep_credentials":true}`, CodeBadRequest, "keep_credentials", "not used by consumer.delete"},
		{`{"cmd":"consumer.put","consumer":{"id":"a","credentials":{"jwt":[{"issuer":"i"}]}},"keep_credentials":true}`, CodeBadRequest, "consumer.credentials", "must be empty with keep_credentials"},
		{`{"cmd":"consumer.get","id":"a"}`, CodeInternal, "", "see the ctrl log"},
		{`{"cmd":"cluster.put","cluster":{"id":"c","endpoints":[]}}`, CodeInternal, "", "see the ctrl log"},
	}
	for _, tc := range cases {
		rc.send(tc.line + "\n")
		wantErr(t, rc.reply(), tc.code, tc.field, tc.msg)
	}
	rc.send(`{"cmd":"route.list"}` + "\n")
	if rep := rc.reply(); !rep.OK {
		t.Fatalf("connection unusable after bad requests: %+v", rep.Error)
	}
}

func TestOversizedLineClosesConnection(t *testing.T) {
	const max = 4096
	s := start(t, newMem(), max)
	rc := dialRaw(t, s.Path())
	// Exactly max bytes is still fine.
	ok := `{"cmd":"route.list"` + strings.Repeat(" ", max-len(`{"cmd":"route.list"}`)) + "}"
	rc.send(ok + "\n")
	if rep := rc.reply(); !rep.OK {
		t.Fatalf("line of exactly %d bytes rejected: %+v", max, rep.Error)
	}
	wrote := make(chan struct{})
	go func() {
		defer close(wrote)
		// May fail with EPIPE once the server has closed; that is the point.
		rc.c.Write([]byte(`{"cmd":"status","x":"` + strings.Repeat("a", 4*max) + "\"}\n"))
	}()
	wantErr(t, rc.reply(), CodeBadRequest, "", "exceeds 4096 bytes")
	if _, err := rc.r.ReadByte(); err == nil {
		t.Fatal("connection still open after an oversized line")
	}
	<-wrote
}

// startClient serves a memory handler and returns a client of it, both
// closed with the test, and a context bounding its calls.
func startClient(t *testing.T) (*Client, context.Context) {
	t.Helper()
	s := start(t, newMem(), 0)
	c, err := Dial(s.Path())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return c, ctx
}

// A request over the server's line limit is refused by the client before
// anything is sent: a clear error instead of a broken pipe, and the
// connection stays usable.
func TestClientRefusesOversizedRequest(t *testing.T) {
	c, ctx := startClient(t)
	big := model.Route{ID: "big", Host: "example.com", Prefix: "/" + strings.Repeat("a", DefaultMaxLine), Cluster: "c"}
	_, err := c.PutRoute(ctx, big, nil)
	var ae *Error
	if !errors.As(err, &ae) || ae.Code != CodeBadRequest || !strings.Contains(ae.Message, "nothing was sent") {
		t.Fatalf("oversized PutRoute error = %v, want bad_request saying nothing was sent", err)
	}
	if _, err := c.ListRoutes(ctx); err != nil {
		t.Fatalf("connection unusable after a refused oversized request: %v", err)
	}
	// A request of exactly the limit (the server does not count the
	// newline) is sent.
	exact := model.Route{ID: "big", Host: "example.com", Cluster: "c"}
	base, err := json.Marshal(Request{Cmd: CmdRoutePut, Route: &exact})
	if err != nil {
		t.Fatal(err)
	}
	exact.Prefix = "/" + strings.Repeat("a", DefaultMaxLine-len(base)-len(`,"prefix":"/"`))
	if b, _ := json.Marshal(Request{Cmd: CmdRoutePut, Route: &exact}); len(b) != DefaultMaxLine {
		t.Fatalf("test request is %d bytes, want %d", len(b), DefaultMaxLine)
	}
	if _, err := c.PutRoute(ctx, exact, nil); err != nil && strings.Contains(err.Error(), "nothing was sent") {
		t.Fatalf("a request of exactly %d bytes was refused: %v", DefaultMaxLine, err)
	}
}

// A connection that stops in the middle of a request line is closed after
// IdleTimeout; one that keeps sending whole requests is not.
func TestIdleConnectionsAreClosed(t *testing.T) {
	path := filepath.Join(t.TempDir(), "admin.sock")
	s, err := Listen(Config{Path: path, Handler: newMem(), IdleTimeout: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve() }()
	defer func() {
		s.Close()
		<-done
	}()
	busy := dialRaw(t, path)
	for range 4 {
		time.Sleep(100 * time.Millisecond)
		busy.send(`{"cmd":"route.list"}` + "\n")
		if rep := busy.reply(); !rep.OK {
			t.Fatalf("busy connection: %+v", rep.Error)
		}
	}
	stuck := dialRaw(t, path)
	stuck.send(`{"cmd":"route.li`)
	stuck.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := stuck.r.ReadByte(); !errors.Is(err, io.EOF) {
		t.Fatalf("a connection stuck mid-line: read %v, want EOF once ctrl closed it", err)
	}
}

func TestListenRefusesLiveSocketAndRemovesStaleOne(t *testing.T) {
	s := start(t, newMem(), 0)
	if _, err := Listen(Config{Path: s.Path(), Handler: newMem()}); err == nil || !strings.Contains(err.Error(), "another process is listening") {
		t.Fatalf("second Listen on a live socket: %v", err)
	}

	dir := t.TempDir()
	stale := filepath.Join(dir, "stale.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: stale, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close() // leaves the file behind, as a crashed ctrl would
	s2, err := Listen(Config{Path: stale, Handler: newMem()})
	if err != nil {
		t.Fatalf("Listen over a stale socket: %v", err)
	}
	if err := s2.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(stale); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("socket file not removed by Close: %v", err)
	}

	regular := filepath.Join(dir, "file")
	if err := os.WriteFile(regular, []byte("keep me"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Listen(Config{Path: regular, Handler: newMem()}); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Fatalf("Listen over a regular file: %v", err)
	}
	if b, _ := os.ReadFile(regular); string(b) != "keep me" {
		t.Fatal("regular file was modified")
	}
}

func TestClientTypedHelpers(t *testing.T) {
	c, ctx := startClient(t)

	zero := uint64(0)
	r := model.Route{ID: "a", Host: "example.com", Prefix: "/api", Cluster: "c", TimeoutMs: 50}
	res, err := c.PutRoute(ctx, r, &zero)
	if err != nil || res.Version != 1 || !reflect.DeepEqual(*res.Route, r) {
		t.Fatalf("PutRoute = %+v, %v", res, err)
	}
	_, err = c.PutRoute(ctx, r, &zero)
	var ae *Error
	if !errors.As(err, &ae) || ae.Code != CodeConflict || ae.Field != "expected_version" || !IsCode(err, CodeConflict) {
		t.Fatalf("stale PutRoute error = %v", err)
	}
	got, err := c.GetRoute(ctx, "a")
	if err != nil || got.Version != 1 || !reflect.DeepEqual(*got.Route, r) {
		t.Fatalf("GetRoute = %+v, %v", got, err)
	}
	l, err := c.ListRoutes(ctx)
	if err != nil || len(l.Items) != 1 || l.Revision != 1 {
		t.Fatalf("ListRoutes = %+v, %v", l, err)
	}
	if _, err := c.GetCluster(ctx, "nope"); !IsCode(err, CodeNotFound) {
		t.Fatalf("GetCluster error = %v", err)
	}
	st, err := c.Status(ctx)
	if err != nil || st.Edges[0].NodeID != "e1" || st.Edges[0].Lag != 1 {
		t.Fatalf("Status = %+v, %v", st, err)
	}
	// Node ids are not document ids: upper case and ':' are fine.
	if _, err := c.ForgetEdge(ctx, "Edge:9"); !IsCode(err, CodeNotFound) {
		t.Fatalf("ForgetEdge of an unknown edge: %v, want not_found", err)
	}
	if e, err := c.ForgetEdge(ctx, "e1"); err != nil || e.NodeID != "e1" || e.RemoteAddr != "10.0.0.1:5000" || e.AppliedVersion != 6 {
		t.Fatalf("ForgetEdge = %+v, %v", e, err)
	}
	if _, err := c.ForgetEdge(ctx, ""); !IsCode(err, CodeBadRequest) {
		t.Fatalf("ForgetEdge without a node id: %v, want bad_request", err)
	}
	// Client-side shape check: refused without a round trip.
	if _, err := c.Call(ctx, Request{Cmd: "nope"}); !IsCode(err, CodeBadRequest) {
		t.Fatalf("Call with unknown cmd: %v", err)
	}
}

func TestClientContextCancelBreaksConnection(t *testing.T) {
	h := newMem()
	h.block = make(chan struct{})
	s := start(t, h, 0)
	defer close(h.block) // let the blocked handler finish before Close waits for it
	c, err := Dial(s.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := c.Status(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Status with an expiring context: %v, want DeadlineExceeded", err)
	}
	if _, err := c.ListRoutes(context.Background()); err == nil || !strings.Contains(err.Error(), "unusable") {
		t.Fatalf("call after a broken exchange: %v", err)
	}
}

func TestDecodeRequestRoundTrip(t *testing.T) {
	seven := uint64(7)
	req := Request{Cmd: CmdClusterPut, Cluster: &model.Cluster{ID: "c", Endpoints: []model.Endpoint{{Address: "a:1"}}}, ExpectedVersion: &seven}
	b, _ := json.Marshal(req)
	got, err := DecodeRequest(b)
	if err != nil || !reflect.DeepEqual(got, req) {
		t.Fatalf("DecodeRequest(%s) = %+v, %v", b, got, err)
	}
}

func FuzzRequest(f *testing.F) {
	for _, s := range []string{
		`{"cmd":"route.put","route":{"id":"a","host":"*","prefix":"/","cluster":"c","timeout_ms":1},"expected_version":3}`,
		`{"cmd":"cluster.put","cluster":{"id":"c","endpoints":[{"address":"[::1]:80"}]}}`,
		`{"cmd":"route.delete","id":"a","expected_version":0}`,
		`{"cmd":"status"}`, `{"cmd":"route.get","id":null}`, `{"cmd":1}`, `{`, `[]`, `{"cmd":"status"}x`,
		`{"cmd":"route.put","route":{"id":"a","id":"b"}}`,
		`{"cmd":"consumer.put","consumer":{"id":"alice","groups":["staff"],"credentials":{"api_keys":[{"id":"k","hash":"sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"}],"jwt":[{"issuer":"idp","subject":"a@x"}],"basic":[{"username":"alice","password_hash":""}]}},"expected_version":2}`,
		`{"cmd":"consumer.add_key","id":"alice","key_id":"laptop","expected_version":0}`,
		`{"cmd":"consumer.remove_key","id":"alice","key_id":"laptop"}`,
		`{"cmd":"consumer.set_password","id":"alice","username":"alice","password_hash":"$pbkdf2-sha256$i=600000$c2FsdHNhbHRzYWx0c2FsdA$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g"}`,
		`{"cmd":"jwt_issuer.put","jwt_issuer":{"id":"idp","issuer":"https://idp","audiences":["api"],"algorithms":["HS256"],"clock_skew_ms":100,"keys":{"keys":[{"kty":"oct","alg":"HS256","kid":"h1","k":"abc"}]}}}`,
		`{"cmd":"policy.put","policy":{"id":"p","scope":{"route":"api"},"auth":{"methods":["api_key"],"required":true},"acl":{"allow_groups":["staff"]},"claims":{"iss":["idp"]},"rate_limits":[{"key":"header:x-t","rate":300,"burst":30,"scope":"cluster"}],"forward":{"consumer_header":"X-C","keep_credentials":true}}}`,
		`{"cmd":"policy.delete","id":"p","expected_version":1}`, `{"cmd":"jwt_issuer.list"}`, `{"cmd":"consumer.get","id":"alice"}`,
		`{"cmd":"health.report","report":{"cluster":"api","endpoint":"10.0.0.1:80","state":"unhealthy","revision":17,"source":"checker-1","detail":"status 503"}}`,
		`{"cmd":"health.report","report":{"cluster":"api","endpoint":"[::1]:80","state":"healthy","revision":18446744073709551615}}`,
		`{"cmd":"health.status"}`, `{"cmd":"health.status","id":"api"}`,
		`{"cmd":"health.explain","endpoint":"10.0.0.1:80"}`, `{"cmd":"health.explain","id":"api","endpoint":"10.0.0.1:80"}`,
		`{"cmd":"consumer.put","consumer":{"id":"a","groups":["g"]},"keep_credentials":true}`,
		`{"cmd":"edge.forget","node_id":"Edge-1:eu/west"}`, `{"cmd":"edge.forget","node_id":"e 1"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		req, aerr := DecodeRequest(b)
		if aerr != nil {
			if aerr.Code != CodeBadRequest || aerr.Message == "" {
				t.Fatalf("decode error %+v: want a bad_request with a message", aerr)
			}
			return
		}
		// Whatever is accepted re-encodes to an accepted request that
		// encodes the same again. (Compared encoded, not as structs: an
		// empty list and an absent one are the same request, and both
		// encode as absent.)
		enc, err := json.Marshal(req)
		if err != nil {
			t.Fatal(err)
		}
		again, aerr := DecodeRequest(enc)
		if aerr != nil {
			t.Fatalf("round trip of %q via %s: %v", b, enc, aerr)
		}
		if enc2, err := json.Marshal(again); err != nil || !bytes.Equal(enc2, enc) {
			t.Fatalf("round trip of %q: %s, then %s (%v)", b, enc, enc2, err)
		}
	})
}

func BenchmarkDecodeRequest(b *testing.B) {
	line := []byte(`{"cmd":"route.put","route":{"id":"api","host":"example.com","prefix":"/api/v1","cluster":"backend","timeout_ms":1500},"expected_version":3}`)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := DecodeRequest(line); err != nil {
			b.Fatal(err)
		}
	}
}

// Two ctrls starting at once over a stale socket: exactly one gets it, and
// the path is that one's live socket. Without the lock both could succeed,
// one of them after removing the other's socket (a running ctrl no client
// can reach).
func TestStaleSocketRaceHasOneWinner(t *testing.T) {
	path := filepath.Join(t.TempDir(), "a.sock")
	for i := 0; i < 300; i++ {
		stale, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
		if err != nil {
			t.Fatal(err)
		}
		stale.SetUnlinkOnClose(false)
		stale.Close()
		var wg sync.WaitGroup
		var srv [2]*Server
		var errs [2]error
		for j := range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				srv[j], errs[j] = Listen(Config{Path: path, Handler: newMem()})
			}()
		}
		wg.Wait()
		won := 0
		for j, s := range srv {
			if s != nil {
				won++
				c, err := net.Dial("unix", path)
				if err != nil {
					t.Fatalf("race %d: the winner's socket is not reachable: %v", i, err)
				}
				c.Close()
				continue
			}
			if !strings.Contains(errs[j].Error(), "another process is listening on it") {
				t.Fatalf("race %d: loser's error %q does not say another ctrl has it", i, errs[j])
			}
		}
		if won != 1 {
			t.Fatalf("race %d: %d starts got the socket (errors %v)", i, won, errs)
		}
		for _, s := range srv {
			if s != nil {
				s.Close()
			}
		}
	}
}
