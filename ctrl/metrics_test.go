package ctrl

import (
	"bufio"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/snapgate/snapgate/ctrl/model"
	"github.com/snapgate/snapgate/wire"
)

// scrape fetches /metrics over HTTP and returns each series' value by its
// full name with labels.
func scrape(t *testing.T, addr string) map[string]float64 {
	t.Helper()
	cl := &http.Client{Timeout: 5 * time.Second}
	resp, err := cl.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatalf("scrape: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape: status %d", resp.StatusCode)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("scrape: bad line %q", line)
		}
		out[line[:i]] = v
	}
	return out
}

// streamEdge is a minimal edge on the wire: it authenticates with the empty
// secret (InsecureStream) as nodeID and ACKs every snapshot frame it gets.
func streamEdge(t *testing.T, addr, nodeID string) (stop func()) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	h := wire.Hello{NodeID: nodeID}
	w, r := wire.NewWriter(c), wire.NewReader(c, 0)
	p, _ := wire.AppendHello(nil, h)
	if err := w.WriteFrame(wire.TypeHello, p); err != nil {
		t.Fatal(err)
	}
	typ, p, err := r.Next()
	if err != nil || typ != wire.TypeChallenge {
		t.Fatalf("after HELLO: %s %v", typ, err)
	}
	ch, err := wire.DecodeChallenge(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.WriteFrame(wire.TypeProof, wire.AppendProof(nil, wire.Proof{MAC: wire.EdgeProof(nil, h, ch.Nonce)})); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			typ, p, err := r.Next()
			if err != nil {
				return
			}
			var v uint64
			switch typ {
			case wire.TypeFull:
				fh, _, err := wire.DecodeFullHeader(p)
				if err != nil {
					return
				}
				v = fh.Version
			case wire.TypeDelta:
				dh, _, err := wire.DecodeDeltaHeader(p)
				if err != nil {
					return
				}
				v = dh.Version
			default:
				continue
			}
			if w.WriteFrame(wire.TypeAck, wire.AppendAck(nil, wire.Ack{Version: v})) != nil {
				return
			}
		}
	}()
	return func() { c.Close(); <-done }
}

func TestMetricsListener(t *testing.T) {
	h := startCtrl(t, t.TempDir(), func(c *Config) { c.MetricsAddr = "127.0.0.1:0" })
	addr := h.s.MetricsAddr()
	if addr == "" {
		t.Fatal("metrics listener not bound")
	}
	m := scrape(t, addr)
	for _, name := range []string{
		"snapgate_ctrl_snapshot_build_seconds_count", "snapgate_ctrl_snapshot_bytes",
		"snapgate_ctrl_snapshot_version", "snapgate_ctrl_edges_connected",
		`snapgate_ctrl_sent_bytes_total{kind="full"}`, `snapgate_ctrl_sent_bytes_total{kind="delta"}`,
	} {
		if _, ok := m[name]; !ok {
			t.Errorf("series %s missing from /metrics", name)
		}
	}
	if m["snapgate_ctrl_snapshot_bytes"] <= 0 || m["snapgate_ctrl_edges_connected"] != 0 {
		t.Fatalf("at start: snapshot bytes %v, edges %v", m["snapgate_ctrl_snapshot_bytes"], m["snapgate_ctrl_edges_connected"])
	}
	builds0 := m["snapgate_ctrl_snapshot_build_seconds_count"]

	stop := streamEdge(t, h.s.PublishAddr(), "metrics-edge")
	defer stop()
	waitMetric(t, addr, "edge connected and got a FULL", func(m map[string]float64) bool {
		return m["snapgate_ctrl_edges_connected"] == 1 && m[`snapgate_ctrl_sent_bytes_total{kind="full"}`] > 0
	})

	cx := ctx(t)
	if _, err := h.c.PutCluster(cx, cluster("backend", "10.0.0.1:8080"), u64(0)); err != nil {
		t.Fatal(err)
	}
	if _, err := h.c.PutRoute(cx, model.Route{ID: "api", Host: "example.com", Prefix: "/api", Cluster: "backend"}, u64(0)); err != nil {
		t.Fatal(err)
	}
	// A write's commit-to-ACK lag lands in the propagation histogram; the
	// new snapshot goes out as a DELTA from the version the edge ACKed.
	waitMetric(t, addr, "build, DELTA and propagation recorded", func(m map[string]float64) bool {
		return m["snapgate_ctrl_snapshot_build_seconds_count"] > builds0 &&
			m[`snapgate_ctrl_sent_bytes_total{kind="delta"}`] > 0 &&
			m["snapgate_ctrl_propagation_seconds_count"] > 0
	})
	// The gauge moves when a version is published, before its store
	// commit (fsync) ends and lastSnap moves: they agree once both did.
	waitMetric(t, addr, "the version gauge at the latest snapshot", func(m map[string]float64) bool {
		return m["snapgate_ctrl_snapshot_version"] == float64(h.s.lastSnap().version)
	})
	stop()
	waitMetric(t, addr, "edge gone", func(m map[string]float64) bool { return m["snapgate_ctrl_edges_connected"] == 0 })

	// Only /metrics is served.
	resp, err := http.Get("http://" + addr + "/other")
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("/other: status %d, want 404", resp.StatusCode)
	}
}

func TestMetricsDisabled(t *testing.T) {
	h := startCtrl(t, t.TempDir(), nil)
	if a := h.s.MetricsAddr(); a != "" {
		t.Fatalf("metrics bound on %s with MetricsAddr empty", a)
	}
}

func TestMetricsBusyPortFailsNew(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	dir := t.TempDir()
	_, err = New(Config{Logger: slog.New(slog.DiscardHandler), DataDir: dir, AdminSocket: dir + "/a.sock", PublishAddr: "127.0.0.1:0", InsecureStream: true, MetricsAddr: ln.Addr().String()})
	if err == nil || !strings.Contains(err.Error(), "metrics listener") {
		t.Fatalf("New on a busy metrics port: %v", err)
	}
}

func waitMetric(t *testing.T, addr, what string, cond func(map[string]float64) bool) map[string]float64 {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		m := scrape(t, addr)
		if cond(m) {
			return m
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s; last scrape: %s", what, fmt.Sprint(m))
		}
		time.Sleep(10 * time.Millisecond)
	}
}
