package bench

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// ctlTimeout bounds one `snapgate ctl` invocation.
const ctlTimeout = 30 * time.Second

// gateway is a ctrl and one edge started from the snapgate binary.
type gateway struct {
	bin, dir         string
	pin              Pinning
	edgeArgs         []string
	socket           string
	streamAddr, addr string
	// ctrlMetrics is ctrl's /metrics listener, edgeAdmin the edge's admin
	// listener (its /metrics); "" when the binary has none.
	ctrlMetrics, edgeAdmin string
	ctrl, edge             *proc
}

// startGateway starts ctrl (on the load CPU: it is idle during measurements)
// and the edge (on the proxy CPU) and waits for both to listen. healthCap is
// ctrl's --health-max-versions-per-second.
func startGateway(ctx context.Context, bin, dir string, pin Pinning, healthCap int) (*gateway, error) {
	g := &gateway{bin: bin, dir: dir, socket: filepath.Join(dir, "ctrl.sock")}
	var err error
	if g.streamAddr, err = freeAddr(); err != nil {
		return nil, err
	}
	if g.addr, err = freeAddr(); err != nil {
		return nil, err
	}
	ctrlArgs := []string{"ctrl", "--data-dir", filepath.Join(dir, "ctrl-data"), "--admin-socket", g.socket,
		"--stream-listen", g.streamAddr, "--log-level", "info", "--health-max-versions-per-second", strconv.Itoa(healthCap)}
	edgeArgs := []string{"edge", "--node-id", "bench-edge", "--listen", g.addr, "--ctrl", g.streamAddr,
		"--data-dir", filepath.Join(dir, "edge-data"), "--log-level", "warn"}
	// Binaries with stream authentication run with a secret, as in
	// production, so its cost is part of what is measured.
	if hasFlag(ctx, bin, "ctrl", "stream-secret-file") && hasFlag(ctx, bin, "edge", "stream-secret-file") {
		secret := filepath.Join(dir, "stream.secret")
		key := make([]byte, 32)
		if _, err := rand.Read(key); err != nil {
			return nil, fmt.Errorf("stream secret: %w", err)
		}
		if err := os.WriteFile(secret, []byte(hex.EncodeToString(key)+"\n"), 0o600); err != nil {
			return nil, fmt.Errorf("stream secret: %w", err)
		}
		ctrlArgs = append(ctrlArgs, "--stream-secret-file", secret)
		edgeArgs = append(edgeArgs, "--stream-secret-file", secret)
	}
	// Side listeners (metrics, admin) default to fixed ports where the
	// binary has them; give each a free one so the bench never collides
	// with a gateway already running on this machine.
	for _, side := range []struct {
		args *[]string
		sub  string
		flag string
	}{{&ctrlArgs, "ctrl", "metrics-listen"}, {&ctrlArgs, "ctrl", "admin-listen"}, {&edgeArgs, "edge", "admin-listen"}, {&edgeArgs, "edge", "metrics-listen"}} {
		if hasFlag(ctx, bin, side.sub, side.flag) {
			a, err := freeAddr()
			if err != nil {
				return nil, err
			}
			*side.args = append(*side.args, "--"+side.flag, a)
			switch {
			case side.sub == "ctrl" && side.flag == "metrics-listen":
				g.ctrlMetrics = a
			case side.sub == "edge" && side.flag == "admin-listen":
				g.edgeAdmin = a
			}
		}
	}
	g.ctrl, err = startProc("ctrl", dir, pin, pin.LoadCPU, bin, ctrlArgs...)
	if err != nil {
		return nil, err
	}
	if err := waitTCP(ctx, g.ctrl, g.streamAddr); err != nil {
		g.stop()
		return nil, err
	}
	g.pin, g.edgeArgs = pin, edgeArgs
	if g.edge, err = startProc("edge", dir, pin, pin.ProxyCPU, bin, edgeArgs...); err != nil {
		g.stop()
		return nil, err
	}
	return g, nil
}

// restartEdge stops the edge and starts a new process on the same data dir
// and address, which boots from its last applied snapshot.
func (g *gateway) restartEdge(ctx context.Context) error {
	if err := g.edge.stop(); err != nil {
		return err
	}
	p, err := startProc("edge-restarted", g.dir, g.pin, g.pin.ProxyCPU, g.bin, g.edgeArgs...)
	if err != nil {
		return err
	}
	g.edge = p
	if err := waitTCP(ctx, p, g.addr); err != nil {
		return err
	}
	_, err = g.waitApplied(ctx, startupWait)
	return err
}

// hasFlag reports whether `bin sub --help` lists --name.
func hasFlag(ctx context.Context, bin, sub, name string) bool {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, _ := exec.CommandContext(ctx, bin, sub, "--help").CombinedOutput()
	return bytes.Contains(out, []byte("-"+name+" "))
}

func (g *gateway) stop() []error {
	var errs []error
	for _, p := range []*proc{g.edge, g.ctrl} {
		if p != nil {
			if err := p.stop(); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errs
}

// ctl runs `snapgate ctl -o json args...` and returns its output; an error
// carries ctl's stderr.
func (g *gateway) ctl(ctx context.Context, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, ctlTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, g.bin, append([]string{"ctl", "--socket", g.socket, "-o", "json"}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("snapgate ctl %s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(stderr.Bytes()))
	}
	return stdout.Bytes(), nil
}

// ctlStatus is the part of `ctl status -o json` the harness reads.
type ctlStatus struct {
	SnapshotVersion uint64 `json:"snapshot_version"`
	SnapshotBytes   int    `json:"snapshot_bytes"`
	Routes          int    `json:"routes"`
	ConfigRevision  uint64 `json:"config_revision"`
	FleetSize       uint32 `json:"fleet_size"`
	Edges           []struct {
		NodeID         string `json:"node_id"`
		Connected      bool   `json:"connected"`
		AppliedVersion uint64 `json:"applied_version"`
	} `json:"edges"`
}

func (g *gateway) status(ctx context.Context) (ctlStatus, error) {
	var st ctlStatus
	out, err := g.ctl(ctx, "status")
	if err != nil {
		return st, err
	}
	if err := json.Unmarshal(out, &st); err != nil {
		return st, fmt.Errorf("ctl status: %w", err)
	}
	return st, nil
}

// waitApplied waits until ctrl has built a snapshot of its latest revision
// and the edge has applied it.
func (g *gateway) waitApplied(ctx context.Context, timeout time.Duration) (ctlStatus, error) {
	deadline := time.Now().Add(timeout)
	for {
		st, err := g.status(ctx)
		if err == nil && st.SnapshotVersion > 0 && st.SnapshotVersion >= st.ConfigRevision {
			for _, e := range st.Edges {
				if e.NodeID == "bench-edge" && e.Connected && e.AppliedVersion == st.SnapshotVersion {
					return st, nil
				}
			}
		}
		if time.Now().After(deadline) {
			return st, fmt.Errorf("edge did not apply ctrl's latest revision within %v (status %+v, err %v)", timeout, st, err)
		}
		if err := sleepCtx(ctx, 50*time.Millisecond); err != nil {
			return st, err
		}
	}
}

// waitBody polls path through addr until the body names backend want.
func waitBody(ctx context.Context, addr, path, want string, timeout time.Duration) error {
	p := newProber(addr, path)
	defer p.close()
	deadline := time.Now().Add(timeout)
	for {
		status, body, err := p.get()
		if err == nil && status == 200 && bytes.HasPrefix(body, []byte(want)) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s%s did not answer from %s within %v (last: status %d, body %q, err %v)", addr, path, want, timeout, status, body, err)
		}
		if err := sleepCtx(ctx, 20*time.Millisecond); err != nil {
			return err
		}
	}
}

// SnapshotBuild is one "snapshot built" line of ctrl's log.
type SnapshotBuild struct {
	Time      time.Time // ctrl's log time stamp (ms resolution)
	Version   uint64
	Routes    int
	Bytes     int
	BuildTime time.Duration
}

// snapshotBuilds returns every "snapshot built" entry of ctrl's log (slog
// text format), in log order.
func snapshotBuilds(logPath string) ([]SnapshotBuild, error) {
	f, err := os.Open(logPath)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var builds []SnapshotBuild
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if b, ok := ParseSnapshotBuilt(sc.Text()); ok {
			builds = append(builds, b)
		}
	}
	if err := sc.Err(); err != nil {
		return builds, fmt.Errorf("reading %s: %w", logPath, err)
	}
	return builds, nil
}

// lastSnapshotBuild returns the newest "snapshot built" entry of ctrl's log
// with at least minRoutes routes.
func lastSnapshotBuild(logPath string, minRoutes int) (SnapshotBuild, error) {
	builds, err := snapshotBuilds(logPath)
	if err != nil {
		return SnapshotBuild{}, err
	}
	var last SnapshotBuild
	found := false
	for _, b := range builds {
		if b.Routes >= minRoutes && b.Version >= last.Version {
			last, found = b, true
		}
	}
	if !found {
		return last, fmt.Errorf("%s: no \"snapshot built\" line with %d or more routes", logPath, minRoutes)
	}
	return last, nil
}

// ParseSnapshotBuilt parses ctrl's `msg="snapshot built"` log line.
func ParseSnapshotBuilt(line string) (SnapshotBuild, bool) {
	if !strings.Contains(line, `msg="snapshot built"`) {
		return SnapshotBuild{}, false
	}
	var b SnapshotBuild
	got := 0
	for field := range strings.FieldsSeq(line) {
		k, v, ok := strings.Cut(field, "=")
		if !ok {
			continue
		}
		var err error
		switch k {
		case "time":
			b.Time, err = time.Parse(time.RFC3339Nano, v)
		case "version":
			_, err = fmt.Sscan(v, &b.Version)
		case "routes":
			_, err = fmt.Sscan(v, &b.Routes)
		case "bytes":
			_, err = fmt.Sscan(v, &b.Bytes)
		case "build_time":
			b.BuildTime, err = time.ParseDuration(v)
		default:
			continue
		}
		if err != nil {
			return SnapshotBuild{}, false
		}
		got++
	}
	return b, got == 5
}
