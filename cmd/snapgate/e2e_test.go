package main

// End-to-end tests: the real snapgate binary as separate ctrl and edge
// processes, real sample backends, everything on 127.0.0.1.

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var binPath string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "snapgate-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binPath = filepath.Join(dir, "snapgate")
	build := exec.Command("go", "build", "-o", binPath, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building snapgate:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// proc is a snapgate process started by a test; its combined output is kept
// for assertions and for the failure log.
type proc struct {
	t    *testing.T
	name string
	cmd  *exec.Cmd
	mu   sync.Mutex
	out  bytes.Buffer
	done chan struct{}
}

type lockedWriter struct{ p *proc }

func (w lockedWriter) Write(b []byte) (int, error) {
	w.p.mu.Lock()
	defer w.p.mu.Unlock()
	return w.p.out.Write(b)
}

func startProc(t *testing.T, name string, args ...string) *proc {
	t.Helper()
	p := &proc{t: t, name: name, cmd: exec.Command(binPath, args...), done: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = lockedWriter{p}, lockedWriter{p}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() { p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.kill(syscall.SIGKILL)
		if t.Failed() {
			t.Logf("--- %s output:\n%s", name, p.output())
		}
	})
	return p
}

func (p *proc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// kill sends sig and waits (bounded) for the process to exit.
func (p *proc) kill(sig syscall.Signal) {
	select {
	case <-p.done:
		return
	default:
	}
	p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
		p.t.Errorf("%s did not exit within 10s of %v", p.name, sig)
	}
}

// freeAddr returns a 127.0.0.1 address that was free a moment ago.
//
// The port comes from below the kernel's ephemeral range (32768 and up
// by default): the processes bind it only later, and a port from that
// range could meanwhile go to any socket on the machine, e.g. an outgoing
// connection of a test running in parallel (CI saw "address already in
// use"). Below it, only explicit binds compete.
func freeAddr(t *testing.T) string {
	t.Helper()
	for range 100 {
		addr := fmt.Sprintf("127.0.0.1:%d", 20000+rand.IntN(12768))
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			continue
		}
		ln.Close()
		return addr
	}
	t.Fatal("no free port in 20000-32767 after 100 tries")
	return ""
}

// backend is a sample HTTP server that answers with its name.
func backend(t *testing.T, name string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		fmt.Fprintf(w, "%s %s", name, r.URL.Path)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// gateway holds the addresses and dirs of one ctrl + edge deployment.
type gateway struct {
	t                   *testing.T
	dir                 string
	socket, stream, web string
	secret              string // stream secret file shared by ctrl and edge
	admin               string // the edge's admin listener (/metrics, /healthz)
	ctrlMetrics         string // ctrl's /metrics listener
}

func newGateway(t *testing.T) *gateway {
	dir := t.TempDir()
	secret := filepath.Join(dir, "stream.secret")
	if err := os.WriteFile(secret, []byte("e2e-stream-secret-0123456789abcdef\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return &gateway{t: t, dir: dir, socket: filepath.Join(dir, "ctrl.sock"), stream: freeAddr(t), web: freeAddr(t), secret: secret,
		admin: freeAddr(t), ctrlMetrics: freeAddr(t)}
}

func (g *gateway) startCtrl() *proc {
	p := startProc(g.t, "ctrl", "ctrl", "--data-dir", filepath.Join(g.dir, "ctrl"), "--admin-socket", g.socket,
		"--stream-listen", g.stream, "--stream-secret-file", g.secret, "--metrics-listen", g.ctrlMetrics,
		"--log-level", "debug")
	waitDial(g.t, "unix", g.socket)
	return p
}

func (g *gateway) startEdge(extra ...string) *proc {
	p := startProc(g.t, "edge", append([]string{"edge", "--node-id", "e2e-edge", "--listen", g.web, "--ctrl", g.stream,
		"--data-dir", filepath.Join(g.dir, "edge"), "--stream-secret-file", g.secret,
		"--admin-listen", g.admin, "--log-level", "debug"}, extra...)...)
	waitDial(g.t, "tcp", g.web)
	return p
}

// ctl runs 'snapgate ctl' and returns its exit code and output.
func (g *gateway) ctl(args ...string) (int, string) {
	g.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, binPath, append([]string{"ctl", "--socket", g.socket}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode(), string(out)
		}
		g.t.Fatalf("ctl %v: %v", args, err)
	}
	return 0, string(out)
}

func (g *gateway) mustCtl(args ...string) string {
	g.t.Helper()
	code, out := g.ctl(args...)
	if code != 0 {
		g.t.Fatalf("ctl %v: exit %d: %s", args, code, out)
	}
	return out
}

// get sends one request through the edge and returns status and body.
func (g *gateway) get(host, path string) (int, string, error) {
	req, _ := http.NewRequest("GET", "http://"+g.web+path, nil)
	if host != "" {
		req.Host = host
	}
	client := &http.Client{Timeout: 3 * time.Second}
	resp, err := client.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// waitBody polls the edge until path answers 200 with a body starting with
// want and returns how long that took.
func (g *gateway) waitBody(within time.Duration, path, want string) time.Duration {
	g.t.Helper()
	start := time.Now()
	var last string
	for time.Since(start) < within {
		code, body, err := g.get("", path)
		if err == nil && code == 200 && strings.HasPrefix(body, want) {
			return time.Since(start)
		}
		last = fmt.Sprintf("status %d body %q err %v", code, body, err)
		time.Sleep(10 * time.Millisecond)
	}
	g.t.Fatalf("GET %s: no %q within %v (last: %s)", path, want, within, last)
	return 0
}

// waitDial waits until something accepts connections at addr.
func waitDial(t *testing.T, network, addr string) {
	t.Helper()
	waitFor(t, 10*time.Second, network+" "+addr, func() bool {
		c, err := net.Dial(network, addr)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
}

func waitFor(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", within, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func snapshotFiles(t *testing.T, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "snap-*.sgs"))
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(m)
	return m
}

// TestEndToEnd walks the story: route to A, CAS change to B within a
// second, stale put rejected, ctrl down keeps serving, edge restart with ctrl
// down serves from disk, ctrl back and the edge catches up.
func TestEndToEnd(t *testing.T) {
	a, b := backend(t, "A"), backend(t, "B")
	g := newGateway(t)
	ctrl := g.startCtrl()
	edgeProc := g.startEdge()

	g.mustCtl("cluster", "put", "--id", "a", "--endpoint", a)
	g.mustCtl("cluster", "put", "--id", "b", "--endpoint", b)
	out := g.mustCtl("route", "put", "--id", "api", "--host", "*", "--prefix", "/api", "--cluster", "a")
	first, rev := storedVersion(t, out)
	if first != rev {
		t.Fatalf("route put output %q: a new route's version is the revision that created it", out)
	}
	g.waitBody(5*time.Second, "/api/x", "A /api/x")
	if code, _, _ := g.get("", "/other"); code != 404 {
		t.Fatalf("GET /other: status %d, want 404 (no route)", code)
	}

	g.mustCtl("route", "put", "--id", "api", "--host", "*", "--prefix", "/api", "--cluster", "b", "--expected-version", first)
	took := g.waitBody(time.Second, "/api/x", "B /api/x")
	t.Logf("route change served by the edge %v after ctl returned", took)

	code, out := g.ctl("route", "put", "--id", "api", "--host", "*", "--prefix", "/api", "--cluster", "a", "--expected-version", first)
	if code != 1 || !strings.Contains(out, "conflict") {
		t.Fatalf("stale put: exit %d output %q, want exit 1 and a conflict", code, out)
	}
	out = g.mustCtl("-o", "json", "route", "get", "api")
	if !strings.Contains(out, `"version": `+next(first)+",") || !strings.Contains(out, `"cluster": "b"`) {
		t.Fatalf("after a stale put the route changed: %s", out)
	}
	// The stale put must not have produced a snapshot pointing back to A.
	time.Sleep(100 * time.Millisecond)
	if _, body, _ := g.get("", "/api/x"); !strings.HasPrefix(body, "B") {
		t.Fatalf("after a stale put the edge serves %q", body)
	}

	ctrl.kill(syscall.SIGKILL)
	for range 20 {
		if code, body, err := g.get("", "/api/y"); err != nil || code != 200 || !strings.HasPrefix(body, "B") {
			t.Fatalf("ctrl down: GET /api/y = %d %q %v", code, body, err)
		}
	}

	edgeProc.kill(syscall.SIGTERM)
	g.startEdge()
	g.waitBody(5*time.Second, "/api/z", "B /api/z")

	g.startCtrl()
	g.mustCtl("route", "put", "--id", "api", "--host", "*", "--prefix", "/api", "--cluster", "a", "--expected-version", next(first))
	g.waitBody(5*time.Second, "/api/back", "A /api/back")
	waitFor(t, 5*time.Second, "ctl status to show the edge on the latest version", func() bool {
		_, out := g.ctl("-o", "json", "status")
		return strings.Contains(out, `"node_id": "e2e-edge"`) && strings.Contains(out, `"connected": true`) &&
			strings.Contains(out, `"lag": 0`)
	})
}

// TestCorruptSnapshotOnDisk: the newest snapshot file is damaged while the edge
// is down and ctrl is unreachable; the edge logs why it skipped it and serves
// the previous good one.
func TestCorruptSnapshotOnDisk(t *testing.T) {
	a, b := backend(t, "A"), backend(t, "B")
	g := newGateway(t)
	ctrl := g.startCtrl()
	edgeProc := g.startEdge()
	g.mustCtl("cluster", "put", "--id", "a", "--endpoint", a)
	g.mustCtl("cluster", "put", "--id", "b", "--endpoint", b)
	v, _ := storedVersion(t, g.mustCtl("route", "put", "--id", "api", "--host", "*", "--prefix", "/", "--cluster", "a"))
	g.waitBody(5*time.Second, "/x", "A /x")
	g.mustCtl("route", "put", "--id", "api", "--host", "*", "--prefix", "/", "--cluster", "b", "--expected-version", v)
	g.waitBody(5*time.Second, "/x", "B /x")
	ctrl.kill(syscall.SIGKILL)
	edgeProc.kill(syscall.SIGTERM)

	files := snapshotFiles(t, filepath.Join(g.dir, "edge"))
	if len(files) < 2 {
		t.Fatalf("edge kept %d snapshot files, want at least 2: %v", len(files), files)
	}
	newest := files[len(files)-1]
	data, err := os.ReadFile(newest)
	if err != nil {
		t.Fatal(err)
	}
	data[len(data)/2] ^= 0xff
	if err := os.WriteFile(newest, data, 0o600); err != nil {
		t.Fatal(err)
	}

	edgeProc = g.startEdge()
	g.waitBody(5*time.Second, "/y", "A /y")
	log := edgeProc.output()
	if !strings.Contains(log, filepath.Base(newest)) {
		t.Fatalf("edge log does not name the corrupt file %s:\n%s", filepath.Base(newest), log)
	}
}

// storedVersion reads "... stored: version V (revision R)" from ctl's output.
func storedVersion(t *testing.T, out string) (version, revision string) {
	t.Helper()
	m := regexp.MustCompile(`stored: version (\d+) \(revision (\d+)\)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("ctl output %q has no stored version", out)
	}
	return m[1], m[2]
}

// next is version v plus one.
func next(v string) string {
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		panic(err)
	}
	return strconv.FormatUint(n+1, 10)
}

// On a stop signal (SIGHUP here: closing the terminal of a foreground
// edge) the edge fails /healthz at once, lets the request in flight
// finish, and exits 0; with --shutdown-timeout passed and a request still
// open, it cuts it and still exits 0.
func TestEdgeStopDrains(t *testing.T) {
	held, release := make(chan struct{}, 4), make(chan struct{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/slow" {
			io.WriteString(w, "ok")
			return
		}
		held <- struct{}{}
		select {
		case <-release:
		case <-r.Context().Done():
		}
		io.WriteString(w, "slow done")
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	g := newGateway(t)
	g.startCtrl()
	g.mustCtl("cluster", "put", "--id", "slow", "--endpoint", ln.Addr().String())
	g.mustCtl("route", "put", "--id", "all", "--host", "*", "--prefix", "/", "--cluster", "slow")

	for _, tc := range []struct {
		name     string
		extra    []string
		released bool
		log      string
	}{
		{"drained", nil, true, "edge stopping"},
		{"cut", []string{"--shutdown-timeout", "300ms"}, false, "shutdown timeout passed"},
	} {
		edgeProc := g.startEdge(tc.extra...)
		waitFor(t, 5*time.Second, "the edge to route", func() bool {
			code, _, _ := g.get("", "/ready")
			return code == 200
		})
		type answer struct {
			code int
			body string
		}
		got := make(chan answer, 1)
		go func() {
			code, body, _ := g.get("", "/slow")
			got <- answer{code, body}
		}()
		select {
		case <-held:
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: the request never reached the backend", tc.name)
		}
		edgeProc.cmd.Process.Signal(syscall.SIGHUP)
		waitFor(t, 5*time.Second, "/healthz to fail while draining", func() bool {
			resp, err := http.Get("http://" + g.admin + "/healthz")
			if err != nil {
				return false
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			return resp.StatusCode == 503 && strings.Contains(string(b), "draining")
		})
		if tc.released {
			release <- struct{}{}
			if a := <-got; a.code != 200 || a.body != "slow done" {
				t.Fatalf("%s: the request in flight got %d %q, want 200 \"slow done\"", tc.name, a.code, a.body)
			}
		}
		select {
		case <-edgeProc.done:
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: the edge did not exit", tc.name)
		}
		if code := edgeProc.cmd.ProcessState.ExitCode(); code != 0 || !strings.Contains(edgeProc.output(), tc.log) {
			t.Fatalf("%s: edge exited %d, want 0 with %q logged:\n%s", tc.name, code, tc.log, edgeProc.output())
		}
	}
}

// An edge started with SIGHUP ignored (nohup) keeps running when its
// terminal goes: asking for SIGHUP would have undone the ignore.
func TestNohupEdgeIgnoresHangup(t *testing.T) {
	nohup, err := exec.LookPath("nohup")
	if err != nil {
		t.Skip("no nohup on this machine")
	}
	web := freeAddr(t)
	p := &proc{t: t, name: "edge", done: make(chan struct{}),
		cmd: exec.Command(nohup, binPath, "edge", "--node-id", "nohup-edge", "--insecure-stream", "--listen", web,
			"--ctrl", freeAddr(t), "--data-dir", filepath.Join(t.TempDir(), "edge"), "--admin-listen", "")}
	p.cmd.Stdout, p.cmd.Stderr = lockedWriter{p}, lockedWriter{p}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() { p.kill(syscall.SIGKILL) })
	waitDial(t, "tcp", web)
	p.cmd.Process.Signal(syscall.SIGHUP)
	select {
	case <-p.done:
		t.Fatalf("the edge stopped on SIGHUP under nohup:\n%s", p.output())
	case <-time.After(500 * time.Millisecond):
	}
	p.kill(syscall.SIGTERM)
	if code := p.cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("edge exited %d after SIGTERM:\n%s", code, p.output())
	}
}
