package feed_test

import (
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

// A ctrl that predates protocol 3 closes the stream on a version-3 HELLO;
// the edge then speaks 2 and the handshake completes.
func TestEdgeFallsBackToVersionTwo(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	e := startEdge(t, ln.Addr().String(), t.TempDir())
	hello := func() (net.Conn, *wire.Reader, wire.Hello) {
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
	conn, r, _ := hello()
	if r.Version() != wire.ProtocolVersion {
		t.Fatalf("first HELLO in version %d, want %d", r.Version(), wire.ProtocolVersion)
	}
	conn.Close() // what a version-2 ctrl does with it

	conn, r, h := hello()
	defer conn.Close()
	if r.Version() != 2 {
		t.Fatalf("HELLO after the refusal in version %d, want 2", r.Version())
	}
	w := wire.NewWriter(conn)
	w.SetVersion(2)
	nonce := [wire.NonceSize]byte{3}
	w.WriteFrame(wire.TypeChallenge, wire.AppendChallenge(nil, wire.Challenge{Nonce: nonce, Proof: wire.CtrlProof(testSecret, h, nonce)}))
	typ, p, err := r.Next()
	if err != nil || typ != wire.TypeProof {
		t.Fatalf("got %s %v, want PROOF", typ, err)
	}
	if pr, _ := wire.DecodeProof(p); !wire.ProofEqual(pr.MAC, wire.EdgeProof(testSecret, h, nonce)) {
		t.Fatal("edge proof does not verify")
	}
	waitFor(t, "downgrade logged", func() bool { return strings.Contains(e.logs.String(), "speaking 2") })
}
