package snapstore

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/snapgate/snapgate/fbs"
)

func build(t testing.TB, version uint64, routes int) []byte {
	t.Helper()
	st := fbs.State{Version: version, ParentVersion: version - 1,
		Clusters: []fbs.Cluster{{Name: "web", Endpoints: []fbs.Endpoint{{Address: "127.0.0.1:9000"}}}}}
	for i := range routes {
		st.Routes = append(st.Routes, fbs.Route{ID: fmt.Sprintf("r%d", i), Host: "example.com", Prefix: fmt.Sprintf("/p%d", i), Cluster: "web"})
	}
	b, err := fbs.Build(st)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

type logBuf struct{ bytes.Buffer }

func (l *logBuf) logger() *slog.Logger { return slog.New(slog.NewTextHandler(&l.Buffer, nil)) }

func TestSaveMapPrune(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	s, err := Open(dir, 2, quiet())
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("data dir: %v %v", fi, err)
	}
	for v := uint64(1); v <= 3; v++ {
		if err := s.Save(v, build(t, v, 5)); err != nil {
			t.Fatal(err)
		}
	}
	if got := s.Versions(); !slices.Equal(got, []uint64{2, 3}) {
		t.Fatalf("versions after prune: %v", got)
	}
	m, err := s.Map(3)
	if err != nil {
		t.Fatal(err)
	}
	if m.Snapshot().Version() != 3 || m.Snapshot().NumRoutes() != 5 || m.Version() != 3 {
		t.Fatalf("mapped v%d with %d routes", m.Snapshot().Version(), m.Snapshot().NumRoutes())
	}
	// Pruning a mapped file is safe: the mapping stays readable after unlink.
	for v := uint64(4); v <= 5; v++ {
		if err := s.Save(v, build(t, v, 5)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := os.Stat(m.Path()); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("v3 not pruned: %v", err)
	}
	var match fbs.Match
	if !m.Snapshot().Match([]byte("example.com"), []byte("/p4/x"), &match) || string(match.ID()) != "r4" {
		t.Fatal("unlinked mapping no longer matches")
	}
	if err := m.Unmap(); err != nil {
		t.Fatal(err)
	}
	if err := m.Unmap(); err != nil {
		t.Fatalf("second Unmap: %v", err)
	}
	if _, err := s.Map(3); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Map of pruned version: %v", err)
	}
}

// Pruning keeps the file of the version in service: Save prunes before the
// edge has accepted the new snapshot, and with keep 1 a snapshot it then
// refuses (or a crash before the refusal) left only a file it cannot boot.
func TestPruneKeepsInService(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "data"), 1, quiet())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	save := func(v uint64) {
		t.Helper()
		if err := s.Save(v, build(t, v, 2)); err != nil {
			t.Fatal(err)
		}
	}
	save(1)
	s.SetInService(1)
	save(2)
	if got := s.Versions(); !slices.Equal(got, []uint64{1, 2}) {
		t.Fatalf("keep 1, v1 in service, v2 saved: %v, want [1 2]", got)
	}
	s.SetInService(2)
	save(3)
	if got := s.Versions(); !slices.Equal(got, []uint64{2, 3}) {
		t.Fatalf("keep 1, v2 in service, v3 saved: %v, want [2 3]", got)
	}
}

func TestSaveReplacesSameVersion(t *testing.T) {
	s, err := Open(t.TempDir(), 3, quiet())
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Save(7, build(t, 7, 1)); err != nil {
		t.Fatal(err)
	}
	m, err := s.Map(7)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Unmap()
	if err := s.Save(7, build(t, 7, 3)); err != nil {
		t.Fatal(err)
	}
	// The old mapping still sees the old inode; a new Map sees the new file.
	if m.Snapshot().NumRoutes() != 1 {
		t.Fatalf("old mapping changed under its reader: %d routes", m.Snapshot().NumRoutes())
	}
	m2, err := s.Map(7)
	if err != nil {
		t.Fatal(err)
	}
	defer m2.Unmap()
	if m2.Snapshot().NumRoutes() != 3 {
		t.Fatalf("new mapping has %d routes", m2.Snapshot().NumRoutes())
	}
}

// A data dir removed while the edge runs is created again by the next
// save: every later version failed to save (and was NACKed) until someone
// recreated it or restarted the edge.
func TestSaveRecreatesRemovedDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "edge")
	s, err := Open(dir, 3, quiet())
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Save(1, build(t, 1, 1)); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if err := s.Save(2, build(t, 2, 1)); err != nil {
		t.Fatalf("save after the data dir was removed: %v", err)
	}
	if _, err := s.SaveReplacing(3, build(t, 3, 1)); err != nil {
		t.Fatalf("replace after: %v", err)
	}
	m, err := s.LoadNewest()
	if err != nil || m.Version() != 3 {
		t.Fatalf("LoadNewest: %v, %v", m, err)
	}
	m.Unmap()
}

func TestMapRejectsCorruptAndMisnamed(t *testing.T) {
	s, err := Open(t.TempDir(), 5, quiet())
	if err != nil {
		t.Fatal(err)
	}
	good := build(t, 2, 3)
	bad := bytes.Clone(good)
	bad[len(bad)/2] ^= 0x40
	if err := os.WriteFile(s.Path(1), bad, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Map(1); !errors.Is(err, fbs.ErrCorrupt) {
		t.Fatalf("corrupt file: %v", err)
	}
	// A valid v2 snapshot stored under v9's name is refused too.
	if err := os.WriteFile(s.Path(9), good, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Map(9); err == nil || !strings.Contains(err.Error(), "holds version 2") {
		t.Fatalf("misnamed file: %v", err)
	}
	if err := os.WriteFile(s.Path(10), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Map(10); err == nil {
		t.Fatal("empty file mapped")
	}
	if err := s.Save(0, good); err == nil {
		t.Fatal("Save accepted version 0")
	}
}

func TestLoadNewestSkipsCorrupt(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, 5, quiet())
	if err != nil {
		t.Fatal(err)
	}
	for v := uint64(1); v <= 2; v++ {
		if err := s.Save(v, build(t, v, 2)); err != nil {
			t.Fatal(err)
		}
	}
	newest := build(t, 3, 2)
	newest = newest[:len(newest)-1] // torn write
	if err := os.WriteFile(s.Path(3), newest, 0o600); err != nil {
		t.Fatal(err)
	}
	// Files that are not snapshots are ignored.
	os.WriteFile(filepath.Join(dir, "snap-12.sgs"), []byte("x"), 0o600)
	os.WriteFile(filepath.Join(dir, "README"), []byte("x"), 0o600)

	s.Close() // a restart: the lock goes with the process
	var lb logBuf
	s2, err := Open(dir, 5, lb.logger())
	if err != nil {
		t.Fatal(err)
	}
	m, err := s2.LoadNewest()
	if err != nil {
		t.Fatal(err)
	}
	defer m.Unmap()
	if m.Version() != 2 {
		t.Fatalf("booted v%d, want 2", m.Version())
	}
	if !strings.Contains(lb.String(), "fails verification") || !strings.Contains(lb.String(), "version=3") {
		t.Fatalf("skip not logged with a reason:\n%s", lb.String())
	}
	if _, err := os.Stat(s.Path(3) + ".bad"); err != nil {
		t.Fatalf("corrupt file not set aside: %v", err)
	}
	if got := s2.Versions(); !slices.Equal(got, []uint64{1, 2}) {
		t.Fatalf("versions: %v", got)
	}
}

func TestLoadNewestEmpty(t *testing.T) {
	s, err := Open(t.TempDir(), 1, quiet())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.LoadNewest(); !errors.Is(err, ErrNoSnapshot) {
		t.Fatalf("got %v, want ErrNoSnapshot", err)
	}
	if err := os.WriteFile(s.Path(4), []byte("garbage garbage garbage garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := s.LoadNewest(); !errors.Is(err, ErrNoSnapshot) {
		t.Fatalf("only a bad file: got %v, want ErrNoSnapshot", err)
	}
}

func TestOpenRemovesStaleTmp(t *testing.T) {
	dir := t.TempDir()
	tmp := filepath.Join(dir, FileName(5)+".tmp")
	if err := os.WriteFile(tmp, []byte("half"), 0o600); err != nil {
		t.Fatal(err)
	}
	other := filepath.Join(dir, "keep.tmp")
	os.WriteFile(other, nil, 0o600)
	if _, err := Open(dir, 1, quiet()); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(tmp); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("stale tmp survived Open: %v", err)
	}
	if _, err := os.Stat(other); err != nil {
		t.Fatalf("unrelated file removed: %v", err)
	}
}

func TestFileName(t *testing.T) {
	if got := FileName(42); got != "snap-00000000000000000042.sgs" {
		t.Fatal(got)
	}
	for _, n := range []string{FileName(1), FileName(^uint64(0))} {
		if _, ok := parseName(n); !ok {
			t.Fatalf("parseName(%q) failed", n)
		}
	}
	for _, n := range []string{"snap-0000000000000000004x.sgs", "snap-00000000000000000000.sgs", "snap-99999999999999999999.sgs", "snap-1.sgs"} {
		if _, ok := parseName(n); ok {
			t.Fatalf("parseName(%q) accepted", n)
		}
	}
}

func BenchmarkSaveMap(b *testing.B) {
	s, err := Open(b.TempDir(), 2, quiet())
	if err != nil {
		b.Fatal(err)
	}
	data := build(b, 1, 1000)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		// Same version each time: Save replaces the file by rename.
		if err := s.Save(1, data); err != nil {
			b.Fatal(err)
		}
		m, err := s.Map(1)
		if err != nil {
			b.Fatal(err)
		}
		m.Unmap()
	}
}

func TestMappingModTime(t *testing.T) {
	s, err := Open(t.TempDir(), 5, quiet())
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Save(4, build(t, 4, 1)); err != nil {
		t.Fatal(err)
	}
	// Pretend the edge applied v4 an hour ago and has been down since.
	written := time.Now().Add(-time.Hour).Truncate(time.Second)
	if err := os.Chtimes(s.Path(4), written, written); err != nil {
		t.Fatal(err)
	}
	m, err := s.LoadNewest()
	if err != nil {
		t.Fatal(err)
	}
	defer m.Unmap()
	if !m.ModTime().Equal(written) {
		t.Fatalf("ModTime = %v, want %v", m.ModTime(), written)
	}
	if age := time.Since(m.ModTime()); age < time.Hour || age > time.Hour+time.Minute {
		t.Fatalf("age = %v, want about an hour", age)
	}
}

// TestLoadNewestTransientErrorKeepsFile: a file that cannot be opened (here
// EMFILE, injected because no file mode stops root) is not evidence of
// damage; LoadNewest returns the error, leaves the file, and the next boot
// uses it.
func TestLoadNewestTransientErrorKeepsFile(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, 5, quiet())
	if err != nil {
		t.Fatal(err)
	}
	for v := uint64(1); v <= 2; v++ {
		if err := s.Save(v, build(t, v, 2)); err != nil {
			t.Fatal(err)
		}
	}
	for _, fail := range []error{syscall.EMFILE, syscall.ENOMEM, syscall.EACCES} {
		s.open = func(path string) (*os.File, error) {
			if path == s.Path(2) {
				return nil, &os.PathError{Op: "open", Path: path, Err: fail}
			}
			return os.Open(path)
		}
		m, err := s.LoadNewest()
		if err == nil {
			m.Unmap()
			t.Fatalf("%v: booted v%d from behind an unreadable newer file", fail, m.Version())
		}
		if !errors.Is(err, fail) || errors.Is(err, ErrNoSnapshot) || !strings.Contains(err.Error(), "version 2") {
			t.Fatalf("%v: err = %v, want it wrapped and naming version 2", fail, err)
		}
		if bad, _ := s.badVersions(); len(bad) != 0 {
			t.Fatalf("%v: quarantined %v", fail, bad)
		}
		if got := s.Versions(); !slices.Equal(got, []uint64{1, 2}) {
			t.Fatalf("%v: versions %v, want [1 2]", fail, got)
		}
	}
	s.open = os.Open
	m, err := s.LoadNewest()
	if err != nil {
		t.Fatal(err)
	}
	defer m.Unmap()
	if m.Version() != 2 {
		t.Fatalf("after the failure cleared: booted v%d, want 2", m.Version())
	}
}

// TestBadFilesPruned: quarantine keeps only the newest keepBad .bad files,
// and Open prunes any surplus an older edge left behind.
func TestBadFilesPruned(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, 10, quiet())
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Save(1, build(t, 1, 1)); err != nil {
		t.Fatal(err)
	}
	for v := uint64(2); v <= 7; v++ {
		if err := os.WriteFile(s.Path(v), []byte("not a snapshot at all"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	m, err := s.LoadNewest()
	if err != nil {
		t.Fatal(err)
	}
	m.Unmap()
	if m.Version() != 1 {
		t.Fatalf("booted v%d, want 1", m.Version())
	}
	if bad, err := s.badVersions(); err != nil || !slices.Equal(bad, []uint64{5, 6, 7}) {
		t.Fatalf("bad files %v (%v), want the newest %d: [5 6 7]", bad, err, keepBad)
	}
	// Surplus from before pruning existed goes at Open.
	for v := uint64(20); v <= 24; v++ {
		if err := os.WriteFile(s.Path(v)+badSuffix, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	s2, err := Open(dir, 10, quiet())
	if err != nil {
		t.Fatal(err)
	}
	if bad, _ := s2.badVersions(); !slices.Equal(bad, []uint64{22, 23, 24}) {
		t.Fatalf("after Open: bad files %v, want [22 23 24]", bad)
	}
	if got := s2.Versions(); !slices.Equal(got, []uint64{1}) {
		t.Fatalf("pruning bad files touched snapshots: %v", got)
	}
}

// TestMapAfter checks that MapAfter gives Map's verdict: the file saved from
// a verified snapshot maps to Open's Snapshot of it and keeps no reference
// to that snapshot's bytes; a file on disk that differs from them (altered
// after the save) is refused as corrupt, as Map refuses it.
func TestMapAfter(t *testing.T) {
	s, err := Open(t.TempDir(), 5, quiet())
	if err != nil {
		t.Fatal(err)
	}
	data := build(t, 4, 50)
	verified, err := fbs.Open(data)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Save(4, data); err != nil {
		t.Fatal(err)
	}
	m, err := s.MapAfter(4, verified)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Unmap()
	for i := range data {
		data[i] = 0
	}
	want, err := fbs.Open(m.mem)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(m.Snapshot(), want) {
		t.Fatal("MapAfter's snapshot differs from Open's of the mapping")
	}
	var match fbs.Match
	if !m.Snapshot().Match([]byte("example.com"), []byte("/p7"), &match) || string(match.ID()) != "r7" {
		t.Fatalf("mapped snapshot matched %q, want r7", match.ID())
	}

	orig := build(t, 5, 50)
	verified, err = fbs.Open(orig)
	if err != nil {
		t.Fatal(err)
	}
	altered := bytes.Clone(orig)
	altered[len(altered)/2] ^= 0x40
	if err := os.WriteFile(s.Path(5), altered, 0o600); err != nil {
		t.Fatal(err)
	}
	_, errAfter := s.MapAfter(5, verified)
	_, errMap := s.Map(5)
	if !errors.Is(errAfter, errCorrupt) || errMap == nil || errAfter.Error() != errMap.Error() {
		t.Fatalf("altered file: MapAfter %v, Map %v", errAfter, errMap)
	}
}

// immutable sets or clears the immutable attribute of path with chattr, the
// one way to make a file undeletable for root; the test is skipped where
// chattr or the filesystem does not allow it.
func immutable(t *testing.T, path string, on bool) {
	t.Helper()
	flag := "-i"
	if on {
		flag = "+i"
	}
	if out, err := exec.Command("chattr", flag, path).CombinedOutput(); err != nil {
		if on {
			t.Skipf("cannot make %s immutable here: %v %s", path, err, out)
		}
		t.Fatalf("chattr -i %s: %v %s", path, err, out)
	}
}

// A file that pruning cannot remove must not fail the Save of a newer
// one: the new file is durable, and the edge NACKing it would hold every
// later version back for a file it no longer needs. The failure is logged.
func TestSavePruneFailureLogged(t *testing.T) {
	dir := t.TempDir()
	var lb logBuf
	s, err := Open(dir, 1, lb.logger())
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Save(1, build(t, 1, 2)); err != nil {
		t.Fatal(err)
	}
	immutable(t, s.Path(1), true)
	defer immutable(t, s.Path(1), false)
	if err := s.Save(2, build(t, 2, 2)); err != nil {
		t.Fatalf("Save v2 failed for the prune of v1: %v", err)
	}
	m, err := s.Map(2)
	if err != nil {
		t.Fatal(err)
	}
	m.Unmap()
	if !strings.Contains(lb.String(), "prune") || !strings.Contains(lb.String(), FileName(1)) {
		t.Fatalf("prune failure not logged:\n%s", lb.String())
	}
}

// A Save into a data dir that cannot take files (here an immutable dir;
// ENOSPC or EROFS refuse it the same way) fails with the reason and
// leaves the files already saved as they were, and no temp file.
func TestSaveFailureKeepsLastGood(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, 3, quiet())
	if err != nil {
		t.Fatal(err)
	}
	good := build(t, 1, 2)
	if err := s.Save(1, good); err != nil {
		t.Fatal(err)
	}
	immutable(t, dir, true)
	err = s.Save(2, build(t, 2, 2))
	immutable(t, dir, false)
	if err == nil || !strings.Contains(err.Error(), "save v2") {
		t.Fatalf("Save into a read-only dir: %v", err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 2 || entries[0].Name() != lockName || entries[1].Name() != FileName(1) {
		t.Fatalf("data dir after the failed save: %v, want the lock and v1", entries)
	}
	if got, err := os.ReadFile(s.Path(1)); err != nil || !bytes.Equal(got, good) {
		t.Fatalf("last good file changed: %v", err)
	}
}

// SaveReplacing saves the replacing version, then removes the diverged
// files above it, then prunes; a save that fails removes nothing, so the
// file of the snapshot in service stays.
func TestSaveReplacing(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, 3, quiet())
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []uint64{1, 4, 5, 6} {
		if err := s.Save(v, build(t, v, 1)); err != nil {
			t.Fatal(err)
		}
	}
	// The save fails (a directory where the file goes): nothing removed.
	block := s.Path(2)
	if err := os.MkdirAll(filepath.Join(block, "x"), 0o755); err != nil {
		t.Fatal(err)
	}
	if removed, err := s.SaveReplacing(2, build(t, 2, 1)); err == nil || len(removed) != 0 {
		t.Fatalf("SaveReplacing onto a blocked name = %v, %v; want an error and nothing removed", removed, err)
	}
	if got := s.Versions(); !slices.Equal(got, []uint64{4, 5, 6}) {
		t.Fatalf("versions after the failed save: %v, want [4 5 6] (keep 3)", got)
	}
	if err := os.RemoveAll(block); err != nil {
		t.Fatal(err)
	}
	// Three diverged files above it and keep 3: saved first, then the
	// history removed, so pruning cannot drop the new version.
	removed, err := s.SaveReplacing(2, build(t, 2, 1))
	if err != nil || !slices.Equal(removed, []uint64{4, 5, 6}) {
		t.Fatalf("SaveReplacing(2) = %v, %v; want [4 5 6]", removed, err)
	}
	if got := s.Versions(); !slices.Equal(got, []uint64{2}) {
		t.Fatalf("versions left: %v, want [2]", got)
	}
	if _, err := s.SaveReplacing(0, nil); err == nil {
		t.Fatal("SaveReplacing of version 0 succeeded")
	}
}

// A data dir serves one edge at a time: a second Open fails, naming the
// dir and the lock, until the first Store is closed.
func TestDataDirIsExclusive(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, 3, quiet())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Open(dir, 3, quiet()); err == nil || !strings.Contains(err.Error(), "in use by another edge") || !strings.Contains(err.Error(), filepath.Join(dir, lockName)) {
		t.Fatalf("second Open: %v, want the dir in use", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2, err := Open(dir, 3, quiet())
	if err != nil {
		t.Fatalf("Open after Close: %v", err)
	}
	s2.Close()
}
