package feed

import (
	"fmt"
	"log/slog"
	"testing"

	"github.com/snapgate/snapgate/edge/routing"
	"github.com/snapgate/snapgate/edge/snapstore"
	"github.com/snapgate/snapgate/edge/upstream"
	"github.com/snapgate/snapgate/fbs"
)

// BenchmarkColdStart100k is an edge restarting with ctrl down and 100,000
// routes on disk: open the data dir, map and verify the newest snapshot
// (snapstore.LoadNewest runs fbs.Open's full walk), build the routing table,
// swap it in and route the first request. ns/op is the time to the first
// request routed (issue 5 target: under 100 ms). The page cache is warm, as
// after a process restart on the same host.
func BenchmarkColdStart100k(b *testing.B) {
	const n = 100_000
	st := fbs.State{Version: 42, ParentVersion: 41}
	for c := range n/16 + 1 {
		st.Clusters = append(st.Clusters, fbs.Cluster{Name: fmt.Sprintf("c%d", c),
			Endpoints: []fbs.Endpoint{{Address: fmt.Sprintf("10.%d.%d.1:8080", c>>8&255, c&255)}}})
	}
	for i := range n {
		st.Routes = append(st.Routes, fbs.Route{ID: fmt.Sprintf("r%06d", i), Host: fmt.Sprintf("h%d.example", i%97),
			Prefix: fmt.Sprintf("/svc/%d/v1", i), Cluster: fmt.Sprintf("c%d", i/16)})
	}
	data, err := fbs.Build(st)
	if err != nil {
		b.Fatal(err)
	}
	dir := b.TempDir()
	log := slog.New(slog.DiscardHandler)
	s, err := snapstore.Open(dir, 3, log)
	if err != nil {
		b.Fatal(err)
	}
	if err := s.Save(st.Version, data); err != nil {
		b.Fatal(err)
	}
	host, path := []byte("h5.example"), []byte("/svc/5/v1/users")
	b.ReportAllocs()
	b.ReportMetric(float64(len(data)), "snapshot-bytes")
	for b.Loop() {
		s, err := snapstore.Open(dir, 3, log)
		if err != nil {
			b.Fatal(err)
		}
		m, err := s.LoadNewest()
		if err != nil {
			b.Fatal(err)
		}
		var h routing.Holder
		if _, err := h.Swap(routing.NewTable(m.Snapshot(), func() { m.Unmap() }, upstream.NewRegistry(upstream.Options{}))); err != nil {
			b.Fatal(err)
		}
		t := h.Acquire()
		var match fbs.Match
		if !t.Route(host, path, &match) || string(match.ID()) != "r000005" {
			b.Fatalf("first request: matched %v route %q, want r000005", t != nil, match.ID())
		}
		t.Release()
		h.Close()
	}
}
