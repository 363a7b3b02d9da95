package publish

import (
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/snapgate/snapgate/wire"
)

// hookLog records OnEdgeChange calls as they come, and how many had come
// at the last OnEdgesSaved.
type hookLog struct {
	mu     sync.Mutex
	calls  []*EdgeRecord // nil: forgotten
	ids    []string
	fail   error // returned by every call (after recording it)
	synced int
}

func (h *hookLog) saved() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.synced = len(h.calls)
	return nil
}

// allSynced reports whether OnEdgesSaved followed every call.
func (h *hookLog) allSynced() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.synced == len(h.calls)
}

// failWith makes later calls return err.
func (h *hookLog) failWith(err error) {
	h.mu.Lock()
	h.fail = err
	h.mu.Unlock()
}

func (h *hookLog) hook(id string, rec *EdgeRecord) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if rec != nil {
		c := *rec
		rec = &c
	}
	h.ids = append(h.ids, id)
	h.calls = append(h.calls, rec)
	return h.fail
}

// last returns the most recent call for id and how many calls id got.
func (h *hookLog) last(id string) (rec *EdgeRecord, n int, ok bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for i, got := range h.ids {
		if got == id {
			rec, n, ok = h.calls[i], n+1, true
		}
	}
	return rec, n, ok
}

// summary renders id's calls in order, e.g. "connected v3, gone".
func (h *hookLog) summary(id string) string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []string
	for i, got := range h.ids {
		switch r := h.calls[i]; {
		case got != id:
		case r == nil:
			out = append(out, "gone")
		case r.Connected:
			out = append(out, fmt.Sprintf("connected v%d", r.AppliedVersion))
		default:
			out = append(out, fmt.Sprintf("disconnected v%d", r.AppliedVersion))
		}
	}
	return strings.Join(out, ", ")
}

func statusOf(s *Server, id string) (EdgeStatus, bool) {
	for _, e := range s.Status() {
		if e.NodeID == id {
			return e, true
		}
	}
	return EdgeStatus{}, false
}

func TestSeededEdgesListedUntilTheyReconnect(t *testing.T) {
	ackAt := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	var h hookLog
	s, addr, logs := startWith(t, func(c *Config) {
		c.Edges = []EdgeRecord{
			{NodeID: "e1", RemoteAddr: "10.0.0.1:4100", AppliedVersion: 7, LastAck: ackAt, LastNack: "v8: verify: bad hash", Connected: true, ConnectedSince: ackAt.Add(-time.Hour)},
			{NodeID: "e2", RemoteAddr: "10.0.0.2:4100", AppliedVersion: 5},
			{NodeID: "bad id", AppliedVersion: 1},
		}
		c.OnEdgeChange = h.hook
		c.OnEdgesSaved = h.saved
		c.SaveInterval = 20 * time.Millisecond
	})
	st := s.Status()
	want := []EdgeStatus{
		{NodeID: "e1", RemoteAddr: "10.0.0.1:4100", AppliedVersion: 7, LastAck: ackAt, LastNack: "v8: verify: bad hash", ConnectedSince: ackAt.Add(-time.Hour)},
		{NodeID: "e2", RemoteAddr: "10.0.0.2:4100", AppliedVersion: 5},
	}
	if fmt.Sprintf("%+v", st) != fmt.Sprintf("%+v", want) {
		t.Fatalf("seeded status\n got %+v\nwant %+v", st, want)
	}
	if !strings.Contains(logs.String(), `ignoring remembered edge" node="bad id"`) {
		t.Fatalf("invalid seed not logged:\n%s", logs)
	}
	// e1 was remembered as connected; it is saved again as disconnected.
	// e2 is stored as it is and needs no write.
	waitFor(t, "e1 saved as disconnected", func() bool { r, _, ok := h.last("e1"); return ok && !r.Connected })

	s.Publish(9, snapOf(t, 9, 3, ""), time.Now())
	c, r, w := dial(t, addr, "e1", 7)
	if typ, _, err := nextNonHeartbeat(t, r); err != nil || typ != wire.TypeDelta && typ != wire.TypeFull {
		t.Fatalf("%s %v", typ, err)
	}
	e, _ := statusOf(s, "e1")
	if !e.Connected || e.RemoteAddr != c.LocalAddr().String() || e.LastAck != ackAt || e.LastNack != "v8: verify: bad hash" {
		t.Fatalf("reconnected seeded edge: %+v", e)
	}
	waitFor(t, "connect reported", func() bool { r, _, ok := h.last("e1"); return ok && r.Connected })
	w.WriteFrame(wire.TypeAck, wire.AppendAck(nil, wire.Ack{Version: 9}))
	waitFor(t, "ACK reported", func() bool { r, _, ok := h.last("e1"); return ok && r.AppliedVersion == 9 })
	if r, _, _ := h.last("e1"); !r.Connected || r.LastAck.Before(ackAt) || r.RemoteAddr != c.LocalAddr().String() {
		t.Fatalf("record after ACK: %+v", r)
	}
	// Each batch is followed by OnEdgesSaved, which ctrl makes an fsync.
	waitFor(t, "the ACK's batch synced", h.allSynced)
	if _, _, ok := h.last("e2"); ok {
		t.Fatalf("e2 never changed but was saved: %s", h.summary("e2"))
	}
}

// ACKs and NACKs are coalesced per SaveInterval; connects and disconnects
// are not, and the disconnect carries everything that happened before it.
func TestEdgeChangesCoalesced(t *testing.T) {
	var h hookLog
	s, addr, _ := startWith(t, func(c *Config) {
		c.OnEdgeChange = h.hook
		c.SaveInterval = time.Hour // only connects, disconnects and Close report
	})
	c, _, w := dial(t, addr, "e1", 0)
	waitFor(t, "connect reported", func() bool { _, n, _ := h.last("e1"); return n == 1 })
	for v := uint64(1); v <= 20; v++ {
		w.WriteFrame(wire.TypeAck, wire.AppendAck(nil, wire.Ack{Version: v}))
	}
	w.WriteFrame(wire.TypeNack, wire.AppendNack(nil, wire.Nack{Version: 21, Reason: "apply: test"}))
	waitFor(t, "NACK recorded", func() bool { e, _ := statusOf(s, "e1"); return e.LastNack != "" })
	c.Close()
	waitFor(t, "disconnect reported", func() bool { _, n, _ := h.last("e1"); return n == 2 })
	r, _, _ := h.last("e1")
	if r.Connected || r.AppliedVersion != 20 || r.LastNack != "v21: apply: test" || r.LastAck.IsZero() {
		t.Fatalf("record at disconnect: %+v", r)
	}
	if got := h.summary("e1"); got != "connected v0, disconnected v20" {
		t.Fatalf("hook calls: %s", got)
	}

	// Close reports what is still pending: the disconnect of e2 and its ACK.
	_, _, w2 := dial(t, addr, "e2", 0)
	waitFor(t, "e2 connect reported", func() bool { _, n, _ := h.last("e2"); return n == 1 })
	w2.WriteFrame(wire.TypeAck, wire.AppendAck(nil, wire.Ack{Version: 3}))
	waitFor(t, "e2 ACK recorded", func() bool { e, _ := statusOf(s, "e2"); return e.AppliedVersion == 3 })
	s.Close()
	if got := h.summary("e2"); got != "connected v0, disconnected v3" {
		t.Fatalf("e2 hook calls by Close: %s", got)
	}
}

func TestForget(t *testing.T) {
	var h hookLog
	s, addr, _ := startWith(t, func(c *Config) {
		c.Edges = []EdgeRecord{{NodeID: "old", AppliedVersion: 2}}
		c.OnEdgeChange = h.hook
		c.SaveInterval = time.Hour
	})
	if _, err := s.Forget("nobody"); !errors.Is(err, ErrUnknownEdge) {
		t.Fatalf("Forget of an unknown edge: %v", err)
	}
	c, _, w := dial(t, addr, "e1", 0)
	waitFor(t, "e1 listed", func() bool { e, _ := statusOf(s, "e1"); return e.Connected })
	if e, err := s.Forget("e1"); !errors.Is(err, ErrEdgeConnected) || !strings.Contains(err.Error(), c.LocalAddr().String()) || e.RemoteAddr != c.LocalAddr().String() {
		t.Fatalf("Forget of a connected edge: %v (status %+v)", err, e)
	}
	w.WriteFrame(wire.TypeNack, wire.AppendNack(nil, wire.Nack{Version: 1, Reason: "apply: test"}))
	c.Close()
	waitFor(t, "e1 disconnected", func() bool { e, _ := statusOf(s, "e1"); return !e.Connected })
	for _, id := range []string{"e1", "old"} {
		e, err := s.Forget(id)
		if err != nil || e.NodeID != id || e.Connected {
			t.Fatalf("Forget(%s) = %+v, %v; want its last status, disconnected", id, e, err)
		}
	}
	if st := s.Status(); len(st) != 0 {
		t.Fatalf("status after Forget: %+v", st)
	}
	// Reported before Forget returned, not later.
	if r, _, ok := h.last("old"); !ok || r != nil {
		t.Fatalf("Forget(old) returned before the hook saw it: %s", h.summary("old"))
	}
	waitFor(t, "e1 disconnect and forget reported", func() bool { r, n, _ := h.last("e1"); return n == 3 && r == nil })

	// Coming back, e1 is a new edge: nothing of its old status returns.
	dial(t, addr, "e1", 0)
	waitFor(t, "e1 saved again", func() bool { r, _, _ := h.last("e1"); return r != nil && r.Connected })
	if e, _ := statusOf(s, "e1"); e.LastNack != "" {
		t.Fatalf("forgotten edge came back with its old status: %+v", e)
	}
	if got := h.summary("e1"); got != "connected v0, disconnected v0, gone, connected v0" {
		t.Fatalf("e1 hook calls: %s", got)
	}
}

// A Forget whose record could not be removed fails, and the edge stays
// listed so that the Forget can be retried.
func TestForgetHookFails(t *testing.T) {
	var h hookLog
	s := New(Config{Logger: slog.New(slog.DiscardHandler), OnEdgeChange: h.hook, SaveInterval: time.Hour,
		Edges: []EdgeRecord{{NodeID: "old", RemoteAddr: "10.0.0.1:4100", AppliedVersion: 2}}})
	defer s.Close()
	disk := errors.New("disk on fire")
	h.failWith(disk)
	e, err := s.Forget("old")
	if !errors.Is(err, disk) || err.Error() != `publish: forget "old": removing its record: disk on fire` || e.RemoteAddr != "10.0.0.1:4100" {
		t.Fatalf("Forget with a failing hook = %+v, %v", e, err)
	}
	if e, ok := statusOf(s, "old"); !ok || e.AppliedVersion != 2 {
		t.Fatalf("after a failed Forget the edge is not listed as before: %+v (listed %v)", e, ok)
	}
	h.failWith(nil)
	if _, err := s.Forget("old"); err != nil {
		t.Fatalf("retried Forget: %v", err)
	}
	if _, ok := statusOf(s, "old"); ok {
		t.Fatal("retried Forget left the edge listed")
	}
	if got := h.summary("old"); got != "gone, gone" {
		t.Fatalf("hook calls: %s", got)
	}
}

// A Forget waits for a save in progress, so a record that save collected
// before the Forget is written before the Forget's delete, never after it
// (a stale write after the delete would bring the edge back).
func TestForgetWaitsForSaveInProgress(t *testing.T) {
	var h hookLog
	saving, release := make(chan struct{}), make(chan struct{})
	var block, unblock sync.Once
	s, addr, _ := startWith(t, func(c *Config) {
		c.OnEdgeChange = func(id string, rec *EdgeRecord) error {
			if rec != nil && !rec.Connected {
				block.Do(func() { close(saving); <-release })
			}
			return h.hook(id, rec)
		}
		c.SaveInterval = time.Hour
	})
	// Registered after startWith's, so it runs before Close waits for the hook.
	t.Cleanup(func() { unblock.Do(func() { close(release) }) })
	c, _, _ := dial(t, addr, "e1", 0)
	waitFor(t, "e1 connect reported", func() bool { _, n, _ := h.last("e1"); return n == 1 })
	c.Close()
	select {
	case <-saving:
	case <-time.After(5 * time.Second):
		t.Fatal("the disconnect was never saved")
	}
	done := make(chan error, 1)
	go func() { _, err := s.Forget("e1"); done <- err }()
	select {
	case err := <-done:
		t.Fatalf("Forget returned (%v) while a save of the same edge was still writing", err)
	case <-time.After(50 * time.Millisecond):
	}
	unblock.Do(func() { close(release) })
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Forget did not return after the save finished")
	}
	if got := h.summary("e1"); got != "connected v0, disconnected v0, gone" {
		t.Fatalf("hook calls: %s", got)
	}
}

func TestForgetWithoutHook(t *testing.T) {
	s := New(Config{Logger: slog.New(slog.DiscardHandler), Edges: []EdgeRecord{{NodeID: "a"}, {NodeID: "b"}}})
	defer s.Close()
	if _, err := s.Forget("a"); err != nil {
		t.Fatal(err)
	}
	if st := s.Status(); len(st) != 1 || st[0].NodeID != "b" {
		t.Fatalf("status after Forget: %+v", st)
	}
}

func TestEdgeRecordCodec(t *testing.T) {
	r := EdgeRecord{NodeID: "edge-1", RemoteAddr: "10.0.0.1:4100", AppliedVersion: 42,
		LastAck: time.Date(2025, 3, 1, 12, 0, 0, 5, time.UTC), LastNack: "v43: verify: bad hash", Connected: true,
		ConnectedSince: time.Date(2025, 3, 1, 11, 0, 0, 0, time.FixedZone("x", 3600))}
	got, err := DecodeEdgeRecord(r.Encode())
	if err != nil || !got.LastAck.Equal(r.LastAck) || !got.ConnectedSince.Equal(r.ConnectedSince) {
		t.Fatalf("round trip: %+v, %v", got, err)
	}
	got.LastAck, got.ConnectedSince, r.LastAck, r.ConnectedSince = time.Time{}, time.Time{}, time.Time{}, time.Time{}
	if got != r {
		t.Fatalf("round trip: %+v, want %+v", got, r)
	}
	for _, tc := range []struct{ in, inErr string }{
		{``, "EOF"},
		{`{"node_id":"e1","extra":1}`, `unknown field "extra"`},
		{`{"node_id":"e1"} {}`, "trailing data"},
		{`{"node_id":""}`, "node id is 0 bytes"},
		{`{"node_id":"has space"}`, "node id"},
		{`{"node_id":"e1","applied_version":-1}`, "applied_version"},
		{`[]`, "cannot unmarshal array"},
	} {
		if _, err := DecodeEdgeRecord([]byte(tc.in)); err == nil || !strings.Contains(err.Error(), tc.inErr) {
			t.Errorf("DecodeEdgeRecord(%s): %v, want an error containing %q", tc.in, err, tc.inErr)
		}
	}
}

// FuzzDecodeEdgeRecord: records come back from disk; decoding must never
// panic, and what it accepts must survive a re-encode unchanged.
func FuzzDecodeEdgeRecord(f *testing.F) {
	f.Add(EdgeRecord{NodeID: "edge-1", AppliedVersion: 3, LastNack: "v4: x", Connected: true, LastAck: time.Unix(1700000000, 0).UTC()}.Encode())
	f.Add([]byte(`{"node_id":"e1"}`))
	f.Add([]byte(`{"node_id":"e1","last_ack":"not a time"}`))
	f.Add([]byte(`{"node_id":"e\u0000"}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := DecodeEdgeRecord(b)
		if err != nil {
			return
		}
		again, err := DecodeEdgeRecord(r.Encode())
		if err != nil || !slices.Equal(again.Encode(), r.Encode()) {
			t.Fatalf("accepted %q, but its encoding %q decodes to %+v, %v", b, r.Encode(), again, err)
		}
	})
}
