package feed_test

import (
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/snapgate/snapgate/ctrl/publish"
	"github.com/snapgate/snapgate/edge/feed"
	"github.com/snapgate/snapgate/wire"
)

// Observations made while ctrl is away wait in the bounded queue (oldest
// dropped), then reach ctrl's OnReport once per cluster listing the
// endpoint, with rising revisions.
func TestReportsQueuedUntilCtrlAndDropOldest(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	e := startEdgeWith(t, addr, t.TempDir(), func(c *feed.Config) {
		c.ClustersOf = func(a string, dst []string) []string {
			if a == "10.0.0.1:80" {
				dst = append(dst, "api", "web")
			}
			return dst
		}
		c.ReportInterval = 20 * time.Millisecond
		c.MaxQueuedReports = 3
	})
	e.client.ObserveEndpoint("10.0.0.1:80", false, wire.CauseConnect)
	e.client.ObserveEndpoint("10.9.9.9:80", false, wire.CauseConnect) // in no cluster
	e.client.ObserveEndpoint("10.0.0.1:80", true, wire.CauseRecovered)

	var mu sync.Mutex
	var got []wire.Observation
	if ln, err = net.Listen("tcp", addr); err != nil {
		t.Skipf("cannot rebind %s for ctrl: %v", addr, err)
	}
	srv := publish.New(publish.Config{Logger: (&syncBuf{}).logger(), Secret: testSecret, HeartbeatInterval: 50 * time.Millisecond,
		OnReport: func(node string, obs []wire.Observation) {
			if node != "edge-1" {
				t.Errorf("report from %q, want edge-1", node)
			}
			mu.Lock()
			got = append(got, obs...)
			mu.Unlock()
		}})
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	defer func() { srv.Close(); <-served }()

	waitFor(t, "3 observations at ctrl", func() bool { mu.Lock(); defer mu.Unlock(); return len(got) >= 3 })
	mu.Lock()
	defer mu.Unlock()
	type key struct {
		cluster string
		ok      bool
		cause   wire.Cause
	}
	var keys []key
	for i, o := range got {
		keys = append(keys, key{o.Cluster, o.OK, o.Cause})
		if o.Endpoint != "10.0.0.1:80" || (i > 0 && o.Revision <= got[i-1].Revision) {
			t.Fatalf("observation %d: %+v (previous revision %d)", i, o, got[max(i-1, 0)].Revision)
		}
	}
	want := []key{{"web", false, wire.CauseConnect}, {"api", true, wire.CauseRecovered}, {"web", true, wire.CauseRecovered}}
	if !slices.Equal(keys, want) {
		t.Fatalf("ctrl got %+v, want %+v (oldest dropped)", keys, want)
	}
	if !strings.Contains(e.logs.String(), "dropped=1") {
		t.Fatalf("drop not logged:\n%s", e.logs.String())
	}
}

// acceptHello accepts the edge's next connection and reads its HELLO.
func acceptHello(t *testing.T, ln net.Listener) (net.Conn, *wire.Reader, wire.Hello) {
	t.Helper()
	conn, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	r := wire.NewReader(conn, 1<<20)
	typ, p, err := r.Next()
	if err != nil || typ != wire.TypeHello {
		t.Fatalf("got %s %v, want HELLO", typ, err)
	}
	h, err := wire.DecodeHello(p)
	if err != nil {
		t.Fatal(err)
	}
	return conn, r, h
}

// completeHandshake plays ctrl's side of the handshake in the version of
// the edge's HELLO and checks the edge's PROOF.
func completeHandshake(t *testing.T, conn net.Conn, r *wire.Reader, h wire.Hello) {
	t.Helper()
	w := wire.NewWriter(conn)
	w.SetVersion(r.Version())
	nonce := [wire.NonceSize]byte{3}
	w.WriteFrame(wire.TypeChallenge, wire.AppendChallenge(nil, wire.Challenge{Nonce: nonce, Proof: wire.CtrlProof(testSecret, h, nonce)}))
	typ, p, err := r.Next()
	if err != nil || typ != wire.TypeProof {
		t.Fatalf("got %s %v, want PROOF", typ, err)
	}
	if pr, _ := wire.DecodeProof(p); !wire.ProofEqual(pr.MAC, wire.EdgeProof(testSecret, h, nonce)) {
		t.Fatal("edge proof does not verify")
	}
}

// A ctrl older than the edge's protocol closes the stream on its HELLO;
// the edge steps down one version per refusal (4, then 3, then 2) and the
// handshake completes in the version ctrl speaks.
func TestEdgeStepsDownProtocolVersions(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	e := startEdge(t, ln.Addr().String(), t.TempDir())
	for _, v := range []uint8{wire.ProtocolVersion, 3} {
		conn, r, _ := acceptHello(t, ln)
		if r.Version() != v {
			t.Fatalf("HELLO in version %d, want %d", r.Version(), v)
		}
		conn.Close() // what a ctrl older than v does with it
	}
	conn, r, h := acceptHello(t, ln)
	defer conn.Close()
	if r.Version() != 2 {
		t.Fatalf("HELLO after two refusals in version %d, want 2", r.Version())
	}
	completeHandshake(t, conn, r, h)
	waitFor(t, "downgrades logged", func() bool {
		l := e.logs.String()
		return strings.Contains(l, "speaking 3 (no 5xx reports)") && strings.Contains(l, "speaking 2 (no health reports)")
	})
}

// In a session negotiated in protocol 3 the edge drops 5xx observations,
// which a version-3 ctrl would refuse as malformed, and sends the rest.
func TestEdgeDrops5xxReportsBelowVersionFour(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	e := startEdgeWith(t, ln.Addr().String(), t.TempDir(), func(c *feed.Config) {
		c.ClustersOf = func(_ string, dst []string) []string { return append(dst, "api") }
		c.ReportInterval = 10 * time.Millisecond
	})
	conn, _, _ := acceptHello(t, ln)
	conn.Close() // a version-3 ctrl refusing the version-4 HELLO
	conn, r, h := acceptHello(t, ln)
	defer conn.Close()
	if r.Version() != 3 {
		t.Fatalf("HELLO in version %d, want 3", r.Version())
	}
	completeHandshake(t, conn, r, h)
	e.client.ObserveEndpoint("10.0.0.1:80", false, wire.Cause5xx)
	e.client.ObserveEndpoint("10.0.0.1:80", false, wire.CauseReset)
	e.client.ObserveEndpoint("10.0.0.1:80", false, wire.Cause5xx)
	for {
		typ, p, err := r.Next()
		if err != nil {
			t.Fatalf("waiting for REPORT: %v", err)
		}
		if typ != wire.TypeReport {
			continue // heartbeats
		}
		if r.Version() != 3 {
			t.Fatalf("REPORT in version %d, want 3", r.Version())
		}
		rep, err := wire.DecodeReportIn(wire.Report{}, p, 3)
		if err != nil {
			t.Fatalf("version-3 ctrl refuses the REPORT: %v", err)
		}
		if len(rep.Observations) != 1 || rep.Observations[0].Cause != wire.CauseReset {
			t.Fatalf("REPORT carries %+v, want the reset only", rep.Observations)
		}
		break
	}
	if l := e.logs.String(); strings.Count(l, "cannot carry some health reports") != 1 {
		t.Fatalf("drop not logged exactly once:\n%s", l)
	}
}

// A burst of observations with long names is more than ctrl takes in one
// frame (wire.MaxEdgePayload): the edge splits it into REPORTs that fit,
// and every observation reaches ctrl, in order, on one stream. One REPORT
// used to carry the whole batch; ctrl refused the frame and dropped the
// stream, and the batch was lost with it.
func TestLargeReportBurstSplitIntoFittingFrames(t *testing.T) {
	var mu sync.Mutex
	var got []wire.Observation
	frames := 0
	c := startCtrlWith(t, "127.0.0.1:0", func(cfg *publish.Config) {
		cfg.OnReport = func(_ string, obs []wire.Observation) {
			mu.Lock()
			got = append(got, obs...)
			frames++
			mu.Unlock()
		}
	})
	long := strings.Repeat("c", wire.MaxReportName-1)
	clusters := []string{long + "1", long + "2", long + "3", long + "4"}
	const endpoints = wire.MaxReportObservations / 4
	e := startEdgeWith(t, c.addr, t.TempDir(), func(cfg *feed.Config) {
		cfg.ClustersOf = func(_ string, dst []string) []string { return append(dst, clusters...) }
		cfg.ReportInterval = 20 * time.Millisecond
		cfg.MaxQueuedReports = wire.MaxReportObservations
	})
	waitFor(t, "the edge's session at ctrl", func() bool { return len(c.srv.Status()) == 1 })
	for i := range endpoints {
		e.client.ObserveEndpoint(fmt.Sprintf("endpoint-%04d.%s:8080", i, strings.Repeat("e", 40)), false, wire.CauseTimeout)
	}
	const want = endpoints * 4
	waitFor(t, "every observation at ctrl", func() bool { mu.Lock(); defer mu.Unlock(); return len(got) >= want })
	mu.Lock()
	defer mu.Unlock()
	if len(got) != want {
		t.Fatalf("ctrl got %d observations, want %d", len(got), want)
	}
	for i := 1; i < len(got); i++ {
		if got[i].Revision <= got[i-1].Revision {
			t.Fatalf("observation %d has revision %d after %d", i, got[i].Revision, got[i-1].Revision)
		}
	}
	// About 320 bytes each: at least 5 frames of at most 64 KiB.
	if frames < 5 {
		t.Fatalf("%d REPORT frames carried %d observations", frames, len(got))
	}
	if n := strings.Count(e.logs.String(), "connected to ctrl"); n != 1 {
		t.Fatalf("the edge connected %d times, want 1:\n%s", n, e.logs.String())
	}
}
