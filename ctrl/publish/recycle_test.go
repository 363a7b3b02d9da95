package publish

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/snapgate/snapgate/fbs"
	"github.com/snapgate/snapgate/wire"
)

// recycler records the files a Server hands to Config.Recycle and writes
// garbage over each, as a Builder writing the next version would: a file
// recycled while something still reads it then shows up as wrong bytes
// (and under -race as a data race).
type recycler struct {
	mu    sync.Mutex
	files map[*byte]uint64 // first byte → version
	order []uint64
	byPtr map[*byte]uint64 // every published file, first byte → version
}

func newRecycler() *recycler {
	return &recycler{files: map[*byte]uint64{}, byPtr: map[*byte]uint64{}}
}

// snap returns a verified snapshot of version v in memory of its own, as
// PublishSnapshot gets from a Builder.
func (rc *recycler) snap(t testing.TB, v uint64, n int) *fbs.Snapshot {
	data := snapOf(t, v, n, "x"+strconv.FormatUint(v, 10))
	rc.mu.Lock()
	rc.byPtr[&data[0]] = v
	rc.mu.Unlock()
	return mustOpen(t, data)
}

func (rc *recycler) recycle(file []byte) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	v := rc.byPtr[&file[0]]
	if _, dup := rc.files[&file[0]]; dup {
		panic(fmt.Sprintf("v%d recycled twice", v))
	}
	rc.files[&file[0]] = v
	rc.order = append(rc.order, v)
	for i := range file {
		file[i] = 0xee
	}
}

func (rc *recycler) recycled() []uint64 {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]uint64(nil), rc.order...)
}

// TestRecycleWhenNothingReads pins when a file goes back: once it has left
// the delta bases and no session holds it, not earlier; a held file stays
// intact however many versions follow; a refused one goes back at once.
func TestRecycleWhenNothingReads(t *testing.T) {
	rc := newRecycler()
	// No listener: the test plays the sessions' part itself.
	s := New(Config{Logger: slog.New(slog.DiscardHandler), KeepBases: 2, Recycle: rc.recycle})
	t.Cleanup(func() { s.Close() })
	for v := uint64(1); v <= 3; v++ {
		s.PublishSnapshot(rc.snap(t, v, 50), time.Now())
	}
	if got := rc.recycled(); len(got) != 1 || got[0] != 1 {
		t.Fatalf("after v1..v3 with 2 bases: recycled %v, want [1]", got)
	}

	held := s.acquireLatest() // v3, as a session encoding from it
	base := s.acquireRecent(2)
	if held == nil || held.version != 3 || base == nil {
		t.Fatalf("acquire: latest %v, base v2 %v", held, base)
	}
	heldCopy, baseCopy := bytes.Clone(held.snap.Bytes()), bytes.Clone(base.snap.Bytes())
	for v := uint64(4); v <= 7; v++ {
		s.PublishSnapshot(rc.snap(t, v, 50), time.Now())
	}
	if got := rc.recycled(); !equalVersions(got, 1, 4, 5) {
		t.Fatalf("with v2 and v3 held: recycled %v, want [1 4 5]", got)
	}
	if !bytes.Equal(held.snap.Bytes(), heldCopy) || !bytes.Equal(base.snap.Bytes(), baseCopy) {
		t.Fatal("a held file was written over")
	}
	if s.acquireRecent(3) != nil {
		t.Fatal("v3 is no delta base any more, yet acquireRecent found it")
	}
	s.release(held)
	s.release(base)
	if got := rc.recycled(); !equalVersions(got, 1, 4, 5, 3, 2) {
		t.Fatalf("after the holders released: recycled %v, want [1 4 5 3 2]", got)
	}

	s.PublishSnapshot(rc.snap(t, 6, 50), time.Now()) // not newer than v7
	if got := rc.recycled(); !equalVersions(got, 1, 4, 5, 3, 2, 6) {
		t.Fatalf("a refused snapshot: recycled %v, want it last", got)
	}
	if p := s.acquireLatest(); p == nil || p.version != 7 {
		t.Fatalf("latest after all that: %v, want v7", p)
	} else {
		s.release(p)
	}
}

func equalVersions(got []uint64, want ...uint64) bool {
	if len(got) != len(want) {
		return false
	}
	for i := range got {
		if got[i] != want[i] {
			return false
		}
	}
	return true
}

// TestRecycleUnderLoad publishes versions quickly to edges that rebuild
// every frame and compare the result with the version's bytes, while the
// recycler writes garbage over every file handed back. One edge reads
// slowly, so its base leaves the delta bases and comes from Lookup. Run it
// with -race: a file recycled while a session still encodes from it is a
// data race as well as wrong bytes at an edge.
func TestRecycleUnderLoad(t *testing.T) {
	const versions, edges, routes = 40, 6, 300
	rc := newRecycler()
	want := map[uint64][]byte{} // every version's bytes, kept apart from the published files
	var wmu sync.Mutex
	lookup := func(v uint64) ([]byte, error) {
		wmu.Lock()
		defer wmu.Unlock()
		if b, ok := want[v]; ok {
			return bytes.Clone(b), nil
		}
		return nil, fmt.Errorf("v%d not stored", v)
	}
	s, addr, _ := startWith(t, func(c *Config) {
		c.KeepBases = 2
		c.Recycle = rc.recycle
		c.Lookup = lookup
		c.DeadAfter = 5 * time.Second
		c.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	})
	publish := func(v uint64) {
		sn := rc.snap(t, v, routes)
		wmu.Lock()
		want[v] = bytes.Clone(sn.Bytes())
		wmu.Unlock()
		s.PublishSnapshot(sn, time.Now())
	}
	publish(1)

	errs := make(chan error, edges)
	var wg sync.WaitGroup
	for i := range edges {
		_, r, w := dial(t, addr, "e"+strconv.Itoa(i), 0)
		slow := i == 0
		wg.Go(func() { errs <- rebuildingEdge(r, w, slow, versions, lookup) })
	}
	for v := uint64(2); v <= versions; v++ {
		publish(v)
		time.Sleep(time.Millisecond)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if got := rc.recycled(); len(got) < versions-4 {
		t.Errorf("only %d of %d files came back to be recycled", len(got), versions)
	}
}

// rebuildingEdge applies every FULL and DELTA up to version last, checking
// each rebuilt file against the version's bytes from want, and ACKs it.
func rebuildingEdge(r *wire.Reader, w *wire.Writer, slow bool, last uint64, want func(uint64) ([]byte, error)) error {
	ddec, err := wire.NewDeltaDecoder(0)
	if err != nil {
		return err
	}
	defer ddec.Close()
	fdec, err := wire.NewDecompressor(0)
	if err != nil {
		return err
	}
	defer fdec.Close()
	var base *fbs.Snapshot
	for base == nil || base.Version() < last {
		typ, p, err := r.Next()
		if err != nil {
			return err
		}
		if slow {
			time.Sleep(10 * time.Millisecond)
		}
		var v uint64
		var file []byte
		switch typ {
		case wire.TypeFull:
			f, err := fdec.DecodeFull(p)
			if err != nil {
				return err
			}
			v, file = f.Version, bytes.Clone(f.Snapshot)
		case wire.TypeDelta:
			h, out, err := ddec.Apply(nil, base, p)
			if err != nil {
				return fmt.Errorf("DELTA v%d from v%d: %w", h.Version, h.BaseVersion, err)
			}
			v, file = h.Version, out
		default:
			continue
		}
		exp, err := want(v)
		if err != nil {
			return err
		}
		if !bytes.Equal(file, exp) {
			return fmt.Errorf("%s v%d does not rebuild the version's bytes", typ, v)
		}
		if base, err = fbs.Open(file); err != nil {
			return err
		}
		if err := w.WriteFrame(wire.TypeAck, wire.AppendAck(nil, wire.Ack{Version: v})); err != nil {
			return err
		}
	}
	return nil
}
