package bench

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"
)

// TestPeersDoTheEdgesWork runs each installed peer with its generated
// config in front of a recording backend: each request reaches it with
// X-Forwarded-For/-Proto/-Host and a request id of its own, and the client
// gets the same id back, as from the edge. A ratio against a peer that
// skipped part of that work would flatter it.
func TestPeersDoTheEdgesWork(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	var mu sync.Mutex
	var seen []http.Header
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Header.Clone())
		mu.Unlock()
		io.WriteString(w, "ok")
	}))
	defer be.Close()
	dir := t.TempDir()
	listen := map[string]string{}
	for _, n := range []string{TargetNginx, TargetHAProxy} {
		a, err := freeAddr()
		if err != nil {
			t.Fatal(err)
		}
		listen[n] = a
	}
	peers, err := preparePeers(dir, listen, be.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	for _, pr := range peers {
		t.Run(pr.name, func(t *testing.T) {
			if pr.skip != "" {
				t.Skip(pr.skip)
			}
			p, err := startProc(pr.name, dir, Pinning{}, -1, pr.bin, pr.args...)
			if err != nil {
				t.Fatal(err)
			}
			defer p.stop()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := waitTCP(ctx, p, listen[pr.name]); err != nil {
				t.Fatal(err)
			}
			mu.Lock()
			seen = nil
			mu.Unlock()
			client := &http.Client{Timeout: 5 * time.Second}
			ids := map[string]bool{}
			for i := range 3 {
				resp, err := client.Get("http://" + listen[pr.name] + "/x")
				if err != nil {
					t.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				mu.Lock()
				h := seen[len(seen)-1]
				mu.Unlock()
				id := h.Get("X-Request-Id")
				if id == "" || ids[id] || resp.Header.Get("X-Request-Id") != id {
					t.Fatalf("request %d: upstream id %q (seen before: %v), client got %q", i, id, ids[id], resp.Header.Get("X-Request-Id"))
				}
				ids[id] = true
				if h.Get("X-Forwarded-For") != "127.0.0.1" || h.Get("X-Forwarded-Proto") != "http" || h.Get("X-Forwarded-Host") != listen[pr.name] {
					t.Fatalf("request %d: forwarded fields %q %q %q", i, h.Get("X-Forwarded-For"), h.Get("X-Forwarded-Proto"), h.Get("X-Forwarded-Host"))
				}
			}
		})
	}
}
