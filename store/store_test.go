package store

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
)

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func openTest(t testing.TB, dir string) *Pebble {
	t.Helper()
	p, err := OpenPebble(dir, Options{Logger: quietLogger()})
	if err != nil {
		t.Fatalf("OpenPebble(%s): %v", dir, err)
	}
	return p
}

func openTemp(t *testing.T) *Pebble {
	t.Helper()
	p := openTest(t, t.TempDir())
	t.Cleanup(func() {
		if err := p.Close(); err != nil && !errors.Is(err, ErrClosed) {
			t.Errorf("Close: %v", err)
		}
	})
	return p
}

func ver(n uint64) *uint64 { return &n }

func put(kind, id, body string, expected *uint64) Mutation {
	return Mutation{Kind: kind, ID: id, Body: []byte(body), Expected: expected}
}

func del(kind, id string, expected *uint64) Mutation {
	return Mutation{Kind: kind, ID: id, Expected: expected}
}

func mustApply(t *testing.T, s Store, muts ...Mutation) (uint64, []Doc) {
	t.Helper()
	rev, docs, err := s.Apply(muts...)
	if err != nil {
		t.Fatalf("Apply(%+v): %v", muts, err)
	}
	return rev, docs
}

func wantConflict(t *testing.T, err error, wantMsg string) {
	t.Helper()
	var ce *ConflictError
	if !errors.As(err, &ce) || !errors.Is(err, ErrConflict) {
		t.Fatalf("err = %v, want *ConflictError matching ErrConflict", err)
	}
	if err.Error() != wantMsg {
		t.Fatalf("conflict message = %q, want %q", err.Error(), wantMsg)
	}
}

func TestCASSemantics(t *testing.T) {
	s := openTemp(t)
	if got := s.Revision(); got != 0 {
		t.Fatalf("empty store revision = %d, want 0", got)
	}

	rev, docs := mustApply(t, s, put("route", "api", "v1", ver(0)))
	if rev != 1 || len(docs) != 1 || docs[0].Version != 1 || docs[0].Revision != 1 || string(docs[0].Body) != "v1" {
		t.Fatalf("create: rev %d docs %+v", rev, docs)
	}

	_, _, err := s.Apply(put("route", "api", "again", ver(0)))
	wantConflict(t, err, `route "api" already exists (version 1)`)

	rev, docs = mustApply(t, s, put("route", "api", "v2", ver(1)))
	if rev != 2 || docs[0].Version != 2 || docs[0].Revision != 2 {
		t.Fatalf("update: rev %d docs %+v", rev, docs)
	}

	_, _, err = s.Apply(put("route", "api", "stale", ver(1)))
	wantConflict(t, err, `route "api": expected_version 1 is stale (current version is 2)`)

	rev, docs = mustApply(t, s, put("route", "api", "v3", nil))
	if rev != 3 || docs[0].Version != 3 {
		t.Fatalf("unconditional put: rev %d docs %+v", rev, docs)
	}

	_, _, err = s.Apply(del("route", "api", ver(2)))
	wantConflict(t, err, `route "api": expected_version 2 is stale (current version is 3)`)

	got, err := s.Get("route", "api")
	if err != nil || got.Version != 3 || got.Revision != 3 || string(got.Body) != "v3" || got.Kind != "route" || got.ID != "api" {
		t.Fatalf("Get after failed delete = %+v, %v", got, err)
	}

	rev, docs = mustApply(t, s, del("route", "api", ver(3)))
	if d := docs[0]; rev != 4 || d.Kind != "route" || d.ID != "api" || d.Version != 0 || d.Revision != 4 || d.Body != nil {
		t.Fatalf("delete: rev %d docs %+v", rev, docs)
	}
	if _, err := s.Get("route", "api"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get after delete: err = %v, want ErrNotFound", err)
	}

	_, _, err = s.Apply(del("route", "api", nil))
	if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), `route "api"`) {
		t.Fatalf("delete missing: err = %v, want ErrNotFound naming route \"api\"", err)
	}

	_, _, err = s.Apply(put("route", "api", "x", ver(3)))
	wantConflict(t, err, `route "api": expected_version 3 is stale (it does not exist)`)

	// Recreating after a delete starts the object at the revision of the
	// create, above every version it had before: an expected version read
	// before the delete cannot match the new object.
	rev, docs = mustApply(t, s, put("route", "api", "again", ver(0)))
	if rev != 5 || docs[0].Version != 5 || docs[0].Revision != 5 {
		t.Fatalf("recreate: rev %d docs %+v", rev, docs)
	}
	for _, stale := range []uint64{1, 2, 3} {
		_, _, err = s.Apply(put("route", "api", "stale", ver(stale)))
		wantConflict(t, err, fmt.Sprintf(`route "api": expected_version %d is stale (current version is 5)`, stale))
	}
	if got := s.Revision(); got != 5 {
		t.Fatalf("Revision() = %d, want 5 (failed applies must not bump it)", got)
	}
}

func TestRevisionBumpsOncePerApply(t *testing.T) {
	s := openTemp(t)
	for i := 1; i <= 5; i++ {
		muts := make([]Mutation, i)
		for j := range muts {
			muts[j] = put("cluster", fmt.Sprintf("c%d", j), fmt.Sprint(i), nil)
		}
		rev, docs := mustApply(t, s, muts...)
		if rev != uint64(i) || s.Revision() != uint64(i) {
			t.Fatalf("apply %d with %d mutations: rev %d, Revision() %d; want %d", i, i, rev, s.Revision(), i)
		}
		for _, d := range docs {
			if d.Revision != rev {
				t.Fatalf("doc %s revision %d, want %d", d.ID, d.Revision, rev)
			}
		}
	}
	if _, _, err := s.Apply(put("cluster", "c0", "x", ver(99))); err == nil {
		t.Fatal("stale apply succeeded")
	}
	if _, _, err := s.Apply(); err == nil {
		t.Fatal("empty apply succeeded")
	}
	if got := s.Revision(); got != 5 {
		t.Fatalf("Revision() after failed applies = %d, want 5", got)
	}
}

func TestApplyAllOrNothing(t *testing.T) {
	s := openTemp(t)
	mustApply(t, s, put("route", "a", "a1", nil), put("route", "b", "b1", nil))

	cases := []struct {
		name string
		muts []Mutation
		is   error
	}{
		{"stale in the middle", []Mutation{
			put("route", "a", "a2", ver(1)),
			put("route", "b", "b2", ver(7)),
			put("route", "c", "c1", ver(0)),
		}, ErrConflict},
		{"delete of a missing doc last", []Mutation{
			put("route", "a", "a2", nil),
			put("route", "c", "c1", nil),
			del("route", "nope", nil),
		}, ErrNotFound},
		{"create of an existing doc first", []Mutation{
			put("route", "b", "b2", ver(0)),
			del("route", "a", nil),
		}, ErrConflict},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := s.Apply(tc.muts...)
			if !errors.Is(err, tc.is) {
				t.Fatalf("err = %v, want %v", err, tc.is)
			}
			rev, docs, err := s.Load()
			if err != nil {
				t.Fatal(err)
			}
			if rev != 1 || len(docs) != 2 || string(docs[0].Body) != "a1" || string(docs[1].Body) != "b1" ||
				docs[0].Version != 1 || docs[1].Version != 1 {
				t.Fatalf("store changed by a failed apply: rev %d docs %+v", rev, docs)
			}
		})
	}

	rev, docs := mustApply(t, s, put("route", "a", "a2", ver(1)), del("route", "b", ver(1)), put("route", "c", "c1", ver(0)))
	if rev != 2 || len(docs) != 3 || docs[0].Version != 2 || docs[1].Version != 0 || docs[2].Version != 2 {
		t.Fatalf("multi apply: rev %d docs %+v", rev, docs)
	}
}

func TestListAndLoad(t *testing.T) {
	s := openTemp(t)
	mustApply(t, s,
		put("route", "z", "1", nil),
		put("route", "a/b", "2", nil),
		put("route", "a", "3", nil),
		put("route-a", "x", "4", nil),
		put("cluster", "web", "", nil), // empty, non-nil body is a put
	)
	mustApply(t, s, put("route", "z", "5", nil))

	list, err := s.List("route")
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, d := range list {
		ids = append(ids, d.ID)
	}
	if got := strings.Join(ids, ","); got != "a,a/b,z" {
		t.Fatalf("List(route) ids = %s, want a,a/b,z", got)
	}
	if list[2].Version != 2 || list[2].Revision != 2 || string(list[2].Body) != "5" {
		t.Fatalf("List(route)[z] = %+v", list[2])
	}
	if empty, err := s.List("health"); err != nil || len(empty) != 0 {
		t.Fatalf("List(health) = %v, %v; want empty", empty, err)
	}

	rev, docs, err := s.Load()
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, d := range docs {
		keys = append(keys, d.Kind+":"+d.ID)
	}
	if got, want := strings.Join(keys, " "), "cluster:web route:a route:a/b route:z route-a:x"; rev != 2 || got != want {
		t.Fatalf("Load = rev %d %s; want rev 2 %s", rev, got, want)
	}
	if docs[0].Body == nil || len(docs[0].Body) != 0 {
		t.Fatalf("empty body came back as %#v, want non-nil empty", docs[0].Body)
	}

	// Returned bodies are copies: scribbling on them changes nothing stored.
	docs[1].Body[0] = 'X'
	got, err := s.Get("route", "a")
	if err != nil || string(got.Body) != "3" {
		t.Fatalf("Get after mutating a returned body = %q, %v", got.Body, err)
	}
	body := []byte("mine")
	_, out := mustApply(t, s, Mutation{Kind: "route", ID: "m", Body: body})
	body[0], out[0].Body[0] = 'X', 'Y'
	if got, _ := s.Get("route", "m"); string(got.Body) != "mine" {
		t.Fatalf("stored body aliases the caller's slice: %q", got.Body)
	}
}

// TestLoadIsConsistent races Load against writers that always change two
// documents together; a torn view would show them at different values.
func TestLoadIsConsistent(t *testing.T) {
	s := openTemp(t)
	mustApply(t, s, put("pair", "a", "0", nil), put("pair", "b", "0", nil))
	const writes = 60
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 1; i <= writes; i++ {
			v := fmt.Sprint(i)
			if _, _, err := s.Apply(put("pair", "a", v, nil), put("pair", "b", v, nil)); err != nil {
				t.Errorf("Apply %d: %v", i, err)
				return
			}
		}
	}()
	var last uint64
	for i := 0; i < 200; i++ {
		before := s.Revision()
		rev, docs, err := s.Load()
		after := s.Revision()
		if err != nil {
			t.Fatal(err)
		}
		if len(docs) != 2 || !bytes.Equal(docs[0].Body, docs[1].Body) || docs[0].Revision != rev || docs[1].Revision != rev {
			t.Fatalf("torn Load at rev %d: %+v", rev, docs)
		}
		// Load sees the durable revision at some instant inside the call.
		if rev < before || rev > after || rev < last {
			t.Fatalf("Load rev %d outside [%d, %d] or behind the previous Load (%d)", rev, before, after, last)
		}
		last = rev
	}
	wg.Wait()
}

func TestConcurrentCAS(t *testing.T) {
	s := openTemp(t)
	const (
		workers  = 8
		versions = 40
		maxTries = 10000 // per worker; a correct store needs far fewer
	)
	var (
		wg        sync.WaitGroup
		mu        sync.Mutex
		wins      = map[uint64]int{} // version → how many Applies claimed it
		conflicts int
	)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for try := 0; try < maxTries; try++ {
				var cur uint64
				d, err := s.Get("route", "hot")
				switch {
				case errors.Is(err, ErrNotFound):
				case err != nil:
					t.Errorf("Get: %v", err)
					return
				default:
					cur = d.Version
				}
				if cur >= versions {
					return
				}
				_, docs, err := s.Apply(put("route", "hot", fmt.Sprintf("w%d", w), ver(cur)))
				mu.Lock()
				switch {
				case err == nil:
					wins[docs[0].Version]++
				case errors.Is(err, ErrConflict):
					conflicts++
				default:
					t.Errorf("Apply: %v", err)
				}
				mu.Unlock()
				if err != nil && !errors.Is(err, ErrConflict) {
					return
				}
			}
			t.Errorf("worker %d did not finish in %d tries", w, maxTries)
		}()
	}
	wg.Wait()
	if len(wins) != versions {
		t.Fatalf("%d distinct winning versions, want %d", len(wins), versions)
	}
	for v := uint64(1); v <= versions; v++ {
		if wins[v] != 1 {
			t.Fatalf("version %d won %d times, want exactly once", v, wins[v])
		}
	}
	if s.Revision() != versions {
		t.Fatalf("Revision() = %d, want %d (one per winner)", s.Revision(), versions)
	}
	t.Logf("%d winners, %d conflicts", versions, conflicts)
}

func TestSnapshots(t *testing.T) {
	s := openTemp(t)
	if _, _, err := s.LatestSnapshot(); !errors.Is(err, ErrNotFound) {
		t.Fatalf("LatestSnapshot on empty store: %v, want ErrNotFound", err)
	}
	if _, err := s.Snapshot(1); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Snapshot(1) on empty store: %v, want ErrNotFound", err)
	}
	for v := uint64(1); v <= 10; v++ {
		if err := s.PutSnapshot(v, []byte(fmt.Sprintf("snap-%d", v)), 3); err != nil {
			t.Fatal(err)
		}
	}
	wantSnapshots(t, s, 8, 9, 10)

	// An older version than the kept window is pruned at once.
	if err := s.PutSnapshot(5, []byte("late"), 3); err != nil {
		t.Fatal(err)
	}
	wantSnapshots(t, s, 8, 9, 10)

	// Re-putting a kept version replaces its bytes and prunes nothing else.
	if err := s.PutSnapshot(9, []byte("snap-9b"), 3); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Snapshot(9); err != nil || string(got) != "snap-9b" {
		t.Fatalf("Snapshot(9) = %q, %v", got, err)
	}
	wantSnapshots(t, s, 8, 9, 10)

	// A smaller keep shrinks the history.
	data := []byte("snap-11")
	if err := s.PutSnapshot(11, data, 1); err != nil {
		t.Fatal(err)
	}
	wantSnapshots(t, s, 11)
	data[0] = 'X' // the store copied the input
	v, got, err := s.LatestSnapshot()
	if err != nil || v != 11 || string(got) != "snap-11" {
		t.Fatalf("LatestSnapshot = %d %q %v", v, got, err)
	}
	got[0] = 'Y' // and the output
	if again, _ := s.Snapshot(11); string(again) != "snap-11" {
		t.Fatalf("stored snapshot changed through a returned slice: %q", again)
	}

	for _, keep := range []int{0, -1} {
		if err := s.PutSnapshot(12, []byte("x"), keep); !errors.Is(err, ErrInvalid) {
			t.Fatalf("PutSnapshot keep=%d: %v, want ErrInvalid", keep, err)
		}
	}
	if err := s.PutSnapshot(12, nil, 3); !errors.Is(err, ErrInvalid) {
		t.Fatalf("PutSnapshot with no data: %v, want ErrInvalid", err)
	}
	wantSnapshots(t, s, 11)
	if s.Revision() != 0 {
		t.Fatalf("snapshots moved the document revision to %d", s.Revision())
	}
}

// wantSnapshots checks that exactly the versions want are stored: in
// Pebble's records, in the in-memory index and as files, and readable.
func wantSnapshots(t *testing.T, s *Pebble, want ...uint64) {
	t.Helper()
	recs, err := s.snapshotRecords()
	if err != nil {
		t.Fatal(err)
	}
	var got, files []uint64
	for _, e := range recs {
		got = append(got, e.version)
	}
	s.snapIdx.RLock()
	var cached []uint64
	for _, e := range s.snaps {
		cached = append(cached, e.version)
	}
	s.snapIdx.RUnlock()
	for _, name := range snapDirNames(t, s) {
		v, _, ok := parseSnapFileName(name)
		if !ok {
			t.Fatalf("unexpected file %q in the snapshot directory", name)
		}
		files = append(files, v)
	}
	if fmt.Sprint(got) != fmt.Sprint(want) || fmt.Sprint(cached) != fmt.Sprint(want) || fmt.Sprint(files) != fmt.Sprint(want) {
		t.Fatalf("stored snapshot versions: records %v, in memory %v, files %v; want %v", got, cached, files, want)
	}
	for _, v := range want {
		if _, err := s.Snapshot(v); err != nil {
			t.Fatalf("Snapshot(%d): %v", v, err)
		}
	}
	if lv, _, err := s.LatestSnapshot(); err != nil || lv != want[len(want)-1] {
		t.Fatalf("LatestSnapshot = %d, %v; want %d", lv, err, want[len(want)-1])
	}
}

func snapDirNames(t *testing.T, s *Pebble) []string {
	t.Helper()
	ents, err := os.ReadDir(s.snapDir)
	if err != nil {
		t.Fatal(err)
	}
	names := make([]string, len(ents))
	for i, e := range ents {
		names[i] = e.Name()
	}
	return names
}

func TestPersistence(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir)
	mustApply(t, s, put("route", "api", "v1", ver(0)), put("cluster", "web", "c1", ver(0)))
	mustApply(t, s, put("route", "api", "v2", ver(1)))
	mustApply(t, s, put("route", "gone", "x", nil))
	mustApply(t, s, del("route", "gone", ver(3)))
	for v := uint64(1); v <= 4; v++ {
		if err := s.PutSnapshot(v, []byte(fmt.Sprint("s", v)), 2); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = openTest(t, dir)
	defer s.Close()
	if s.Revision() != 4 {
		t.Fatalf("reopened Revision() = %d, want 4", s.Revision())
	}
	rev, docs, err := s.Load()
	if err != nil {
		t.Fatal(err)
	}
	want := []Doc{
		{Kind: "cluster", ID: "web", Version: 1, Revision: 1, Body: []byte("c1")},
		{Kind: "route", ID: "api", Version: 2, Revision: 2, Body: []byte("v2")},
	}
	if rev != 4 || fmt.Sprintf("%+v", docs) != fmt.Sprintf("%+v", want) {
		t.Fatalf("reopened Load = %d %+v, want 4 %+v", rev, docs, want)
	}
	wantSnapshots(t, s, 3, 4)
	// CAS state survived too.
	_, _, err = s.Apply(put("route", "api", "v3", ver(1)))
	wantConflict(t, err, `route "api": expected_version 1 is stale (current version is 2)`)
	if rev, _ := mustApply(t, s, put("route", "api", "v3", ver(2))); rev != 5 {
		t.Fatalf("first apply after reopen: rev %d, want 5", rev)
	}
}

func TestValidation(t *testing.T) {
	s := openTemp(t)
	long := strings.Repeat("x", MaxIDLen+1)
	bad := []struct {
		kind, id, inErr string
	}{
		{"", "a", "kind is empty"},
		{"Route", "a", `kind "Route": byte 0`},
		{"ro/ute", "a", `kind "ro/ute": byte 2`},
		{"route ", "a", "not one of [a-z0-9_-]"},
		{strings.Repeat("k", MaxKindLen+1), "a", "at most 64"},
		{"route", "", "route id is empty"},
		{"route", "a\x00b", "NUL or line break"},
		{"route", "a\nb", "NUL or line break"},
		{"route", long, "257 bytes, at most 256"},
	}
	for _, tc := range bad {
		_, _, err := s.Apply(put(tc.kind, tc.id, "x", nil))
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.inErr) || !strings.Contains(err.Error(), "mutation 0") {
			t.Errorf("Apply(%q, %q): err = %v, want ErrInvalid containing %q", tc.kind, tc.id, err, tc.inErr)
		}
		if _, err := s.Get(tc.kind, tc.id); !errors.Is(err, ErrInvalid) {
			t.Errorf("Get(%q, %q): err = %v, want ErrInvalid", tc.kind, tc.id, err)
		}
	}
	if _, err := s.List("BAD"); !errors.Is(err, ErrInvalid) {
		t.Errorf("List(BAD): %v, want ErrInvalid", err)
	}
	ok := []struct{ kind, id string }{
		{"route", strings.Repeat("x", MaxIDLen)},
		{"a_b-9", "with/slash and space ü"},
	}
	for _, tc := range ok {
		mustApply(t, s, put(tc.kind, tc.id, "x", nil))
		if d, err := s.Get(tc.kind, tc.id); err != nil || d.ID != tc.id {
			t.Errorf("Get(%q, %q) = %+v, %v", tc.kind, tc.id, d, err)
		}
	}

	// A bad mutation anywhere rejects the whole apply.
	_, _, err := s.Apply(put("route", "fine", "x", nil), put("route", "", "x", nil))
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "mutation 1") {
		t.Fatalf("mixed apply: %v, want ErrInvalid naming mutation 1", err)
	}
	_, _, err = s.Apply(put("route", "dup", "x", nil), del("route", "dup", nil))
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), `mutations 0 and 1 both change route "dup"`) {
		t.Fatalf("duplicate apply: %v", err)
	}
	if _, _, err := s.Apply(); !errors.Is(err, ErrInvalid) {
		t.Fatalf("empty apply: %v, want ErrInvalid", err)
	}
	if _, err := s.Get("route", "fine"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("rejected apply wrote something: %v", err)
	}
	if s.Revision() != 2 {
		t.Fatalf("Revision() = %d, want 2", s.Revision())
	}

	if _, err := OpenPebble("", Options{}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("OpenPebble(\"\"): %v, want ErrInvalid", err)
	}
	if _, err := OpenPebble(t.TempDir(), Options{CacheSize: -1}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("OpenPebble with negative cache: %v, want ErrInvalid", err)
	}
}

func TestCorruptRecordsAreErrors(t *testing.T) {
	s := openTemp(t)
	mustApply(t, s, put("route", "ok", "x", nil))
	// Write garbage past the store's own encoder, as a damaged disk or a
	// foreign writer would.
	if err := s.db.Set(docKey("route", "short"), []byte{1, 2, 3}, nil); err != nil {
		t.Fatal(err)
	}
	if err := s.db.Set([]byte("d/no-slash"), encodeRecord(1, 1, nil), nil); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get("route", "short"); err == nil || !strings.Contains(err.Error(), "corrupt") {
		t.Fatalf("Get of a short record: %v, want a corrupt-record error", err)
	}
	if _, _, err := s.Apply(put("route", "short", "y", nil)); err == nil || !strings.Contains(err.Error(), "corrupt") {
		t.Fatalf("Apply over a short record: %v, want a corrupt-record error", err)
	}
	if _, err := s.List("route"); err == nil || !strings.Contains(err.Error(), "corrupt") {
		t.Fatalf("List over a short record: %v", err)
	}
	if _, _, err := s.Load(); err == nil || !strings.Contains(err.Error(), "corrupt") {
		t.Fatalf("Load over corrupt keys: %v", err)
	}
}

func TestClosed(t *testing.T) {
	s := openTest(t, t.TempDir())
	mustApply(t, s, put("route", "a", "x", nil))
	if err := s.PutSnapshot(1, []byte("s"), 1); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	checks := map[string]error{}
	_, _, checks["Apply"] = s.Apply(put("route", "a", "y", nil))
	_, checks["Get"] = s.Get("route", "a")
	_, checks["List"] = s.List("route")
	_, _, checks["Load"] = s.Load()
	checks["PutSnapshot"] = s.PutSnapshot(2, []byte("s"), 1)
	_, checks["Snapshot"] = s.Snapshot(1)
	_, _, checks["LatestSnapshot"] = s.LatestSnapshot()
	checks["PutMeta"] = s.PutMeta("k", nil)
	_, checks["GetMeta"] = s.GetMeta("k")
	_, checks["ListMeta"] = s.ListMeta("")
	checks["DeleteMeta"] = s.DeleteMeta("k")
	checks["Close"] = s.Close()
	for op, err := range checks {
		if !errors.Is(err, ErrClosed) {
			t.Errorf("%s after Close: %v, want ErrClosed", op, err)
		}
	}
	if s.Revision() != 1 {
		t.Errorf("Revision() after Close = %d, want the last value 1", s.Revision())
	}
}

func TestCloseWaitsForReaders(t *testing.T) {
	s := openTest(t, t.TempDir())
	for i := 0; i < 50; i++ {
		mustApply(t, s, put("route", fmt.Sprint(i), strings.Repeat("b", 100), nil))
	}
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 1000; i++ {
				if _, _, err := s.Load(); err != nil {
					if !errors.Is(err, ErrClosed) {
						t.Errorf("Load: %v", err)
					}
					return
				}
			}
		}()
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close with readers in flight: %v", err)
	}
	wg.Wait()
}

// TestApplyNoSyncIsVisibleInOrder checks ApplyNoSync's contract short of a
// power cut (which no test here can cause): the revision is committed at
// once, readers and later conditional writes see it, and a Sync then
// succeeds; a closed store refuses Sync.
func TestApplyNoSyncIsVisibleInOrder(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir)
	rev, docs, err := s.ApplyNoSync(put("route", "a", "one", ver(0)))
	if err != nil {
		t.Fatal(err)
	}
	if rev != 1 || docs[0].Version != 1 || s.Revision() != 1 {
		t.Fatalf("rev %d version %d Revision() %d, want 1 1 1", rev, docs[0].Version, s.Revision())
	}
	if d, err := s.Get("route", "a"); err != nil || string(d.Body) != "one" {
		t.Fatalf("Get before Sync = %q, %v", d.Body, err)
	}
	if _, _, err := s.ApplyNoSync(put("route", "a", "two", ver(0))); err == nil {
		t.Fatal("a create of an existing document succeeded before Sync")
	}
	rev, _, err = s.ApplyNoSync(put("route", "a", "two", ver(1)))
	if err != nil || rev != 2 {
		t.Fatalf("conditional put on the unsynced version: rev %d, %v", rev, err)
	}
	if err := s.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Sync(); !errors.Is(err, ErrClosed) {
		t.Fatalf("Sync after Close = %v, want ErrClosed", err)
	}
	s = openTest(t, dir)
	defer s.Close()
	if d, err := s.Get("route", "a"); err != nil || string(d.Body) != "two" || d.Version != 2 || s.Revision() != 2 {
		t.Fatalf("after reopening: %q version %d, revision %d, %v; want \"two\" 2 2", d.Body, d.Version, s.Revision(), err)
	}
}
