package proxy

import (
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/snapgate/snapgate/edge/upstream"
)

type healthEvent struct {
	addr string
	ok   bool
	kind upstream.FailureKind
}

// recordHealth returns pool options whose OnHealth records every call, and
// a function returning the calls so far.
func recordHealth() (upstream.Options, func() []healthEvent) {
	var mu sync.Mutex
	var got []healthEvent
	opts := upstream.Options{OnHealth: func(a string, ok bool, kind upstream.FailureKind) {
		mu.Lock()
		got = append(got, healthEvent{a, ok, kind})
		mu.Unlock()
	}}
	return opts, func() []healthEvent { mu.Lock(); defer mu.Unlock(); return slices.Clone(got) }
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
	opts, events := recordHealth()
	proxy, _ := startProxyPools(t, oneRoute(addr), opts, nil)
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

// A 503 whose relay fails because the client hung up (exchangeAborted)
// still counts as a 503: it must not end the streak and report a recovery
// of a backend that answered nothing but 503.
func TestProxyAborted5xxIsNoRecovery(t *testing.T) {
	chunk := make([]byte, 128<<10)
	bigDone := make(chan struct{})
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(503)
		if r.URL.Path != "/big" {
			return
		}
		defer close(bigDone)
		for range 64 {
			if _, err := w.Write(chunk); err != nil {
				return
			}
			w.(http.Flusher).Flush()
			time.Sleep(5 * time.Millisecond)
		}
	}))
	defer be.Close()
	addr := be.Listener.Addr().String()
	opts, events := recordHealth()
	proxy, _ := startProxyPools(t, oneRoute(addr), opts, nil)
	c := dialProxy(t, proxy)
	for range upstream.DefaultReport5xxAfter {
		c.send(request("/x"))
		if r := c.read("GET"); r.status != 503 {
			t.Fatalf("status %d, want 503", r.status)
		}
	}
	// One more 503 with a large body; the client reads the head and resets.
	c2, err := net.Dial("tcp", proxy)
	if err != nil {
		t.Fatal(err)
	}
	c2.(*net.TCPConn).SetReadBuffer(4096)
	if _, err := c2.Write([]byte(request("/big"))); err != nil {
		t.Fatal(err)
	}
	c2.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c2.Read(make([]byte, 512)); err != nil {
		t.Fatal(err)
	}
	c2.(*net.TCPConn).SetLinger(0)
	c2.Close()
	// The proxy reports the answer before it drops the upstream
	// connection, which is what ends the backend's writes.
	select {
	case <-bigDone:
	case <-time.After(10 * time.Second):
		t.Fatal("the backend kept writing 10 s after the client reset")
	}
	want := []healthEvent{{addr, false, upstream.Fail5xx}}
	if g := events(); !slices.Equal(g, want) {
		t.Fatalf("OnHealth heard %v, want %v", g, want)
	}
}
