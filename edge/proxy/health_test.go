package proxy

import (
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/snapgate/snapgate/edge/upstream"
)

type healthEvent struct {
	addr string
	ok   bool
	kind upstream.FailureKind
}

// A backend answering 503 is reported to OnHealth after the default five
// answers in a row, keeps getting requests (a report, not an ejection),
// and its first 200 afterwards is reported as its recovery.
func TestProxyReports5xxStreak(t *testing.T) {
	var status atomic.Int32
	status.Store(503)
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(int(status.Load()))
	}))
	defer be.Close()
	addr := be.Listener.Addr().String()
	var mu sync.Mutex
	var got []healthEvent
	events := func() []healthEvent { mu.Lock(); defer mu.Unlock(); return slices.Clone(got) }
	proxy, _ := startProxyPools(t, oneRoute(addr), upstream.Options{OnHealth: func(a string, ok bool, kind upstream.FailureKind) {
		mu.Lock()
		got = append(got, healthEvent{a, ok, kind})
		mu.Unlock()
	}}, nil)
	c := dialProxy(t, proxy)
	do := func(want int) {
		t.Helper()
		c.send(request("/x"))
		if r := c.read("GET"); r.status != want {
			t.Fatalf("status %d, want %d (%q)", r.status, want, r.body)
		}
	}
	// The pool hears a status after the client has the answer, but before
	// the proxy reads the next request on the connection: every answer
	// but the last is accounted for when the last arrives.
	for range upstream.DefaultReport5xxAfter {
		do(503)
	}
	status.Store(200)
	do(200)
	do(200)
	do(200)
	want := []healthEvent{{addr, false, upstream.Fail5xx}, {addr, true, 0}}
	if g := events(); !slices.Equal(g, want) {
		t.Fatalf("OnHealth heard %v, want %v", g, want)
	}
}
