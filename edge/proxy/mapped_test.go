package proxy

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/snapgate/snapgate/edge/routing"
	"github.com/snapgate/snapgate/edge/upstream"
	"github.com/snapgate/snapgate/fbs"
)

// mappedTable builds st into an anonymous mapping, as the edge's snapstore
// maps its files, and returns a table whose release makes the pages
// inaccessible (PROT_NONE) instead of unmapping them: the range is never
// reused, so any read of the snapshot after its release faults at once
// ("unexpected fault address"), where a real munmap could let a later
// mapping take the address and hide the read.
func mappedTable(t testing.TB, reg *upstream.Registry, st fbs.State, released *atomic.Int64) *routing.Table {
	b, err := fbs.Build(st)
	if err != nil {
		t.Fatal(err)
	}
	mem, err := syscall.Mmap(-1, 0, len(b), syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_ANON|syscall.MAP_PRIVATE)
	if err != nil {
		t.Fatal(err)
	}
	copy(mem, b)
	if err := syscall.Mprotect(mem, syscall.PROT_READ); err != nil {
		t.Fatal(err)
	}
	snap, err := fbs.Open(mem)
	if err != nil {
		t.Fatal(err)
	}
	return routing.NewTable(snap, func() {
		if err := syscall.Mprotect(mem, syscall.PROT_NONE); err != nil {
			panic(err)
		}
		released.Add(1)
	}, reg)
}

// mappedState is a snapshot that exercises every piece of route data the
// request path reads: rewrite prefixes, hash-on-header, header conditions,
// policies with rate limits (route, header) and consumer headers, the
// staleness header, retries; gen varies ids and strings per swap.
func mappedState(gen int, plain, ws, flaky string) fbs.State {
	long := "/v2/" + strings.Repeat("r", 5000) + strconv.Itoa(gen)
	return fbs.State{
		Version: uint64(gen),
		Clusters: []fbs.Cluster{
			{Name: "c" + strconv.Itoa(gen%3), Endpoints: []fbs.Endpoint{{Address: plain}}},
			{Name: "h", LB: fbs.LBHash, HashOn: fbs.HashOnHeader, HashOnName: "x-key-" + strconv.Itoa(gen%2), Endpoints: []fbs.Endpoint{{Address: plain}}},
			{Name: "w", Endpoints: []fbs.Endpoint{{Address: ws}}},
			{Name: "f", Endpoints: []fbs.Endpoint{{Address: flaky}, {Address: plain}}},
		},
		Routes: []fbs.Route{
			{ID: "api-" + strconv.Itoa(gen), Host: "*", Prefix: "/api", Cluster: "c" + strconv.Itoa(gen%3), RewritePrefix: long,
				StaleHeader: true, MaxStalenessMs: 1 << 30, Policy: "p"},
			{ID: "hash", Host: "*", Prefix: "/hash", Cluster: "h", Headers: []fbs.HeaderMatch{{Name: "x-key-" + strconv.Itoa(gen%2), Present: true}}},
			{ID: "hash-any", Host: "*", Prefix: "/hash", Cluster: "h"},
			{ID: "ws", Host: "*", Prefix: "/ws", Cluster: "w"},
			{ID: "up-" + strconv.Itoa(gen), Host: "*", Prefix: "/upload", Cluster: "c" + strconv.Itoa(gen%3), RewritePrefix: "/u" + strconv.Itoa(gen), Policy: "p"},
			{ID: "retry", Host: "*", Prefix: "/retry", Cluster: "f", RetryAttempts: 2, RetryStatuses: []uint16{503}},
			{ID: "tight-" + strconv.Itoa(gen), Host: "*", Prefix: "/tight", Cluster: "c" + strconv.Itoa(gen%3), Policy: "tight"},
		},
		Auth: fbs.Auth{Policies: []fbs.Policy{
			{ID: "p", ConsumerHeader: "X-Tenant-" + strconv.Itoa(gen%4), RateLimits: []fbs.RateLimit{
				{Key: fbs.LimitByRoute, Rate: 1e6, Burst: 1e6},
				{Key: fbs.LimitByHeader, Header: "x-tenant-key-" + strconv.Itoa(gen), Rate: 1e6, Burst: 1e6},
			}},
			{ID: "tight", RateLimits: []fbs.RateLimit{{Key: fbs.LimitByRoute, Rate: 1, Burst: 1}}},
		}},
	}
}

// TestNoSnapshotReadAfterRelease swaps mapped snapshots every ~200 µs
// while requests that read every kind of route data flow, uploads detach
// and tunnels outlive swaps: a read of a released snapshot (DESIGN.md,
// the table's references) faults. The tables of startGateway are heap
// copies with no release, which no read after release could show.
func TestNoSnapshotReadAfterRelease(t *testing.T) {
	// plain: 200 with a large header (over netpoll's 4 KiB no-copy
	// threshold) and a body; echoes the path it got.
	big := strings.Repeat("v", 6000)
	plain := startBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		w.Header().Set("X-Big", big)
		w.Header().Set("X-Path-Len", strconv.Itoa(len(r.URL.Path)))
		fmt.Fprintf(w, "ok %d", n)
	}))
	flaky := startBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(503)
	}))
	ws := echoUpgradeBackend(t)

	var released atomic.Int64
	g := startGateway(t, mappedState(1, plain, ws, flaky), upstream.Options{}, nil)
	gen := 1
	swap := func() {
		gen++
		if _, err := g.tables.Swap(mappedTable(t, g.reg, mappedState(gen, plain, ws, flaky), &released)); err != nil {
			t.Fatal(err)
		}
	}
	swap()

	stop := make(chan struct{})
	var wg sync.WaitGroup
	var fails atomic.Int64
	errf := func(format string, args ...any) {
		if fails.Add(1) < 10 {
			t.Errorf(format, args...)
		}
	}
	worker := func(fn func()) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				fn()
			}
		}()
	}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}, Timeout: 10 * time.Second}
	get := func(path string, hdr map[string]string, want int) {
		req, _ := http.NewRequest("GET", "http://"+g.addr+path, nil)
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := client.Do(req)
		if err != nil {
			errf("%s: %v", path, err)
			return
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want && !(want == 429 && resp.StatusCode == 200) {
			errf("%s: status %d, want %d", path, resp.StatusCode, want)
		}
	}
	for range 4 {
		worker(func() { get("/api/x", map[string]string{"X-Tenant-Key-3": "a", "X-Tenant-1": "spoof"}, 200) })
		worker(func() { get("/hash/y", map[string]string{"X-Key-0": "k", "X-Key-1": "k"}, 200) })
		worker(func() { get("/retry", nil, 200) })
		worker(func() { get("/tight", nil, 429) })
	}
	// dial connects a raw client with a 10 s deadline; nil (reported) on failure.
	dial := func() net.Conn {
		c, err := net.Dial("tcp", g.addr)
		if err != nil {
			errf("dial: %v", err)
			return nil
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		return c
	}
	// Streamed (detached) chunked uploads, slow enough to span swaps.
	for range 3 {
		worker(func() {
			c := dial()
			if c == nil {
				return
			}
			defer c.Close()
			io.WriteString(c, "POST /upload/z HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
			chunk := strings.Repeat("b", 32<<10)
			for range 4 {
				fmt.Fprintf(c, "%x\r\n%s\r\n", len(chunk), chunk)
				time.Sleep(3 * time.Millisecond)
			}
			io.WriteString(c, "0\r\n\r\n")
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				errf("upload: %v", err)
				return
			}
			io.Copy(io.Discard, resp.Body)
			if resp.StatusCode != 200 {
				errf("upload: status %d", resp.StatusCode)
			}
		})
	}
	// WebSocket tunnels that outlive several swaps.
	for range 3 {
		worker(func() {
			c := dial()
			if c == nil {
				return
			}
			defer c.Close()
			io.WriteString(c, "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
			br := bufio.NewReader(c)
			resp, err := http.ReadResponse(br, nil)
			if err != nil || resp.StatusCode != 101 {
				errf("ws: %v %v", resp, err)
				return
			}
			buf := make([]byte, 5)
			for range 5 {
				io.WriteString(c, "hello")
				if _, err := io.ReadFull(br, buf); err != nil || string(buf) != "hello" {
					errf("ws echo: %q %v", buf, err)
					return
				}
				time.Sleep(5 * time.Millisecond)
			}
		})
	}

	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		swap()
		time.Sleep(200 * time.Microsecond)
	}
	close(stop)
	wg.Wait()
	// A handler may still be between its flush and its Release.
	waitUntil(t, "every retired table to be released", func() bool { return released.Load() >= int64(gen-2) })
	t.Logf("%d swaps, %d mapped tables released (made inaccessible)", gen-1, released.Load())
}

// startBackend serves h on 127.0.0.1 until the test ends.
func startBackend(t *testing.T, h http.Handler) string {
	t.Helper()
	be := httptest.NewServer(h)
	t.Cleanup(be.Close)
	return be.Listener.Addr().String()
}

// echoUpgradeBackend answers every request with a 101 and echoes the
// tunnel's bytes.
func echoUpgradeBackend(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				if _, err := http.ReadRequest(br); err != nil {
					return
				}
				io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
				io.Copy(c, br)
			}()
		}
	}()
	return ln.Addr().String()
}
