package store

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/cespare/xxhash/v2"
	"github.com/cockroachdb/pebble/v2"
)

// snapContent is the deterministic content of version v in these tests;
// sizes vary so a truncated or swapped file cannot pass by accident.
func snapContent(v uint64, size int) []byte {
	return bytes.Repeat(fmt.Appendf(nil, "v%d;", v), size/len(fmt.Sprintf("v%d;", v))+int(v%7))
}

// syncBuffer is a log sink tests read after the store wrote to it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func openLogged(t *testing.T, dir string) (*Pebble, *syncBuffer) {
	t.Helper()
	var logs syncBuffer
	p, err := OpenPebble(dir, Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatalf("OpenPebble(%s): %v", dir, err)
	}
	t.Cleanup(func() { p.Close() })
	return p, &logs
}

func wantContent(t *testing.T, s *Pebble, v uint64, size int) {
	t.Helper()
	got, err := s.Snapshot(v)
	if err != nil || !bytes.Equal(got, snapContent(v, size)) {
		t.Fatalf("Snapshot(%d) = %d bytes, %v; want its original %d bytes", v, len(got), err, len(snapContent(v, size)))
	}
}

func TestSnapshotFilesLayout(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir)
	defer s.Close()
	if want := dir + "-snapshots"; s.snapDir != want {
		t.Fatalf("snapshot dir %s, want the sibling %s", s.snapDir, want)
	}
	for v := uint64(1); v <= 4; v++ {
		if err := s.PutSnapshot(v, snapContent(v, 1000), 2); err != nil {
			t.Fatal(err)
		}
	}
	wantSnapshots(t, s, 3, 4)
	want := []string{
		snapFileName(3, xxhash.Sum64(snapContent(3, 1000))),
		snapFileName(4, xxhash.Sum64(snapContent(4, 1000))),
	}
	if got := snapDirNames(t, s); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("snapshot files %v, want %v", got, want)
	}
	// Pebble holds records, not the bytes.
	if _, closer, err := s.db.Get(snapRecordKey(4)); err != nil {
		t.Fatal(err)
	} else {
		closer.Close()
	}
	// Storing the same bytes again writes nothing; other bytes make a new
	// file that replaces the old one.
	if err := s.PutSnapshot(4, snapContent(4, 1000), 2); err != nil {
		t.Fatal(err)
	}
	if got := snapDirNames(t, s); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("re-put of identical bytes changed files: %v", got)
	}
	if err := s.PutSnapshot(4, []byte("other"), 2); err != nil {
		t.Fatal(err)
	}
	wantSnapshots(t, s, 3, 4)
	if got, _ := s.Snapshot(4); string(got) != "other" {
		t.Fatalf("Snapshot(4) after replacement = %q", got)
	}

	// An explicit SnapshotDir is honoured.
	other := filepath.Join(t.TempDir(), "history")
	s2, err := OpenPebble(filepath.Join(t.TempDir(), "db"), Options{Logger: quietLogger(), SnapshotDir: other})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if err := s2.PutSnapshot(1, []byte("x"), 1); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(other, snapFileName(1, xxhash.Sum64String("x")))); err != nil {
		t.Fatalf("snapshot file not in SnapshotDir: %v", err)
	}
}

// TestSnapshotRecovery builds the directory states a crash or a damaged
// disk leaves and checks what open makes of each.
func TestSnapshotRecovery(t *testing.T) {
	const size = 4096
	dir := t.TempDir()
	s := openTest(t, dir)
	for v := uint64(1); v <= 5; v++ {
		if err := s.PutSnapshot(v, snapContent(v, size), 5); err != nil {
			t.Fatal(err)
		}
	}
	snapDir, recs := s.snapDir, s.snaps
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	path := func(v uint64) string { return filepath.Join(snapDir, recs[v-1].fileName()) }
	write := func(name string, data []byte) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(snapDir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// Crash during a put: a temp file; after the rename but before the
	// record: a named file without a record, also for a version re-put
	// with other bytes; after a prune's commit: the pruned file.
	write("snap-123456.tmp", []byte("half"))
	write(snapFileName(6, 1), snapContent(6, size))
	write(snapFileName(5, xxhash.Sum64String("new bytes")), []byte("new bytes"))
	write(snapFileName(0, 7), []byte("pruned"))
	write("README", []byte("an operator's note"))
	// Damage: v2 truncated, v3 gone, v4 with one byte flipped.
	if err := os.Truncate(path(2), size/2); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(path(3)); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path(4))
	if err != nil {
		t.Fatal(err)
	}
	b[100] ^= 1
	write(filepath.Base(path(4)), b)

	s, logs := openLogged(t, dir)
	if got := snapDirNames(t, s); fmt.Sprint(got) != fmt.Sprint([]string{"README", recs[0].fileName(), recs[4].fileName()}) {
		t.Fatalf("files after recovery: %v", got)
	}
	recorded, err := s.snapshotRecords()
	if err != nil || len(recorded) != 2 || recorded[0].version != 1 || recorded[1].version != 5 {
		t.Fatalf("records after recovery: %+v, %v", recorded, err)
	}
	wantContent(t, s, 1, size)
	wantContent(t, s, 5, size)
	for _, v := range []uint64{2, 3, 4, 6} {
		if _, err := s.Snapshot(v); !errors.Is(err, ErrNotFound) {
			t.Fatalf("Snapshot(%d) after recovery: %v, want ErrNotFound", v, err)
		}
	}
	out := logs.String()
	for _, want := range []string{
		`"store: dropping stored snapshot version: its file is missing or damaged" version=2`,
		`version=3 err="open `, `version=4 err=`, "its record says",
		`unexpected file in the snapshot directory, leaving it alone"`, "file=README",
		"removed snapshot file without a record", "file=snap-123456.tmp",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("open log lacks %q:\n%s", want, out)
		}
	}

	// A file damaged after open is an error on read, never data.
	if err := os.WriteFile(path(5), bytes.Repeat([]byte("x"), len(snapContent(5, size))), 0o600); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Snapshot(5); err == nil || errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "xxhash64") {
		t.Fatalf("Snapshot of an altered file = %d bytes, %v; want a checksum error", len(got), err)
	}
	if err := os.Truncate(path(5), 10); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.LatestSnapshot(); err == nil || !strings.Contains(err.Error(), "is 10 bytes, its record says") {
		t.Fatalf("LatestSnapshot of a truncated file: %v", err)
	}
	// The next put replaces the damaged version with good bytes.
	if err := s.PutSnapshot(5, []byte("rebuilt"), 5); err != nil {
		t.Fatal(err)
	}
	if v, got, err := s.LatestSnapshot(); err != nil || v != 5 || string(got) != "rebuilt" {
		t.Fatalf("LatestSnapshot after re-put = %d %q %v", v, got, err)
	}
}

// TestLegacySnapshotsMove opens a store whose snapshots are Pebble values
// (the layout before snapshot files): they become files, unchanged.
func TestLegacySnapshotsMove(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir)
	for v := uint64(7); v <= 9; v++ {
		if err := s.db.Set(versionKey(legacySnapPrefix, v), snapContent(v, 2000), pebble.Sync); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, logs := openLogged(t, dir)
	wantSnapshots(t, s, 7, 8, 9)
	for v := uint64(7); v <= 9; v++ {
		wantContent(t, s, v, 2000)
	}
	if vs, err := s.legacySnapshotVersions(); err != nil || len(vs) != 0 {
		t.Fatalf("legacy snapshot keys left: %v, %v", vs, err)
	}
	if !strings.Contains(logs.String(), "moved snapshots out of pebble into files") {
		t.Fatalf("no log of the move:\n%s", logs)
	}
	if err := s.PutSnapshot(10, []byte("next"), 2); err != nil {
		t.Fatal(err)
	}
	wantSnapshots(t, s, 9, 10)
}

// TestSnapshotReadersDuringPrune reads while puts prune: a reader gets the
// exact bytes of a version or ErrNotFound, never a removed or partial file.
func TestSnapshotReadersDuringPrune(t *testing.T) {
	s := openTemp(t)
	const size, puts = 20_000, 150
	if err := s.PutSnapshot(1, snapContent(1, size), 2); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	for r := 0; r < 4; r++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-done:
					return
				default:
				}
				v, data, err := s.LatestSnapshot()
				if err != nil || !bytes.Equal(data, snapContent(v, size)) {
					t.Errorf("LatestSnapshot = v%d (%d bytes), %v", v, len(data), err)
					return
				}
				old := v - uint64(i%3)
				if data, err := s.Snapshot(old); err != nil && !errors.Is(err, ErrNotFound) || err == nil && !bytes.Equal(data, snapContent(old, size)) {
					t.Errorf("Snapshot(%d) = %d bytes, %v", old, len(data), err)
					return
				}
			}
		}()
	}
	for v := uint64(2); v <= puts; v++ {
		if err := s.PutSnapshot(v, snapContent(v, size), 2); err != nil {
			t.Error(err)
			break
		}
	}
	close(done)
	wg.Wait()
	wantSnapshots(t, s, puts-1, puts)
}

// TestStagedSnapshot: staging copies the bytes and changes nothing readers
// see; Commit stores them as PutSnapshot would, Abort leaves nothing.
func TestStagedSnapshot(t *testing.T) {
	const size = 4096
	s := openTemp(t)
	for v := uint64(1); v <= 2; v++ {
		if err := s.PutSnapshot(v, snapContent(v, size), 2); err != nil {
			t.Fatal(err)
		}
	}
	buf := snapContent(3, size)
	st, err := s.StageSnapshot(3, buf, 2)
	if err != nil {
		t.Fatal(err)
	}
	// The caller may reuse its buffer once StageSnapshot returns.
	clear(buf)
	if _, err := s.Snapshot(3); !errors.Is(err, ErrNotFound) {
		t.Fatalf("staged version readable before commit: %v", err)
	}
	if v, _, err := s.LatestSnapshot(); err != nil || v != 2 {
		t.Fatalf("LatestSnapshot while v3 is staged = %d, %v; want 2", v, err)
	}
	if got := snapDirNames(t, s); len(got) != 3 || !isSnapTempName(got[2]) {
		t.Fatalf("files while v3 is staged: %v; want v1, v2 and a temp file", got)
	}
	if err := st.Commit(); err != nil {
		t.Fatal(err)
	}
	wantSnapshots(t, s, 2, 3)
	wantContent(t, s, 3, size)
	if err := st.Commit(); !errors.Is(err, ErrInvalid) {
		t.Fatalf("second Commit = %v, want ErrInvalid", err)
	}
	if err := st.Abort(); err != nil {
		t.Fatalf("Abort after Commit = %v, want nil", err)
	}

	// Abort: nothing stored, no file left.
	st, err = s.StageSnapshot(4, snapContent(4, size), 2)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Abort(); err != nil {
		t.Fatal(err)
	}
	if err := st.Commit(); !errors.Is(err, ErrInvalid) {
		t.Fatalf("Commit after Abort = %v, want ErrInvalid", err)
	}
	wantSnapshots(t, s, 2, 3)
	if got := snapDirNames(t, s); len(got) != 2 {
		t.Fatalf("files after Abort: %v", got)
	}

	// A version older than the kept ones is pruned at once, and bytes
	// already stored are not written again: neither leaves a file.
	for _, c := range []struct {
		v    uint64
		data []byte
	}{{1, snapContent(1, size)}, {3, snapContent(3, size)}} {
		st, err := s.StageSnapshot(c.v, c.data, 2)
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Commit(); err != nil {
			t.Fatal(err)
		}
		wantSnapshots(t, s, 2, 3)
		if got := snapDirNames(t, s); len(got) != 2 {
			t.Fatalf("files after committing v%d again: %v", c.v, got)
		}
	}

	// Bad arguments fail at staging, before a caller publishes anything.
	for _, c := range []struct {
		data []byte
		keep int
	}{{[]byte("x"), 0}, {nil, 2}, {[]byte{}, 2}} {
		if _, err := s.StageSnapshot(5, c.data, c.keep); !errors.Is(err, ErrInvalid) {
			t.Errorf("StageSnapshot(5, %d bytes, keep %d) = %v, want ErrInvalid", len(c.data), c.keep, err)
		}
	}
}

// A version staged when the store closes is not stored: Commit fails with
// ErrClosed and removes its temp file; the store reopens without it.
func TestStagedSnapshotAfterClose(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir)
	if err := s.PutSnapshot(1, []byte("one"), 3); err != nil {
		t.Fatal(err)
	}
	st, err := s.StageSnapshot(2, []byte("two"), 3)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.StageSnapshot(3, []byte("three"), 3); !errors.Is(err, ErrClosed) {
		t.Fatalf("StageSnapshot after Close = %v, want ErrClosed", err)
	}
	if err := st.Commit(); !errors.Is(err, ErrClosed) {
		t.Fatalf("Commit after Close = %v, want ErrClosed", err)
	}
	s = openTest(t, dir)
	defer s.Close()
	wantSnapshots(t, s, 1)
	if got := snapDirNames(t, s); len(got) != 1 {
		t.Fatalf("files after reopening: %v", got)
	}
}
