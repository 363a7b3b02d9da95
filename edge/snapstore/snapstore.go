// Package snapstore is the edge's data dir: every applied snapshot is written
// atomically as snap-<20-digit version>.sgs, read back through a read-only
// mmap, and the newest file that verifies is what the edge boots from.
package snapstore

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/snapgate/snapgate/fbs"
	"github.com/snapgate/snapgate/store/durable"
)

// ErrNoSnapshot is returned by LoadNewest when no file in the dir verifies.
var ErrNoSnapshot = errors.New("snapstore: no valid snapshot")

const (
	prefix    = "snap-"
	suffix    = ".sgs"
	tmpSuffix = ".tmp"
	badSuffix = ".bad"
	// keepBad is how many quarantined files stay for a post-mortem; older
	// ones are removed so a flapping disk cannot fill the data dir.
	keepBad = 3
)

// errCorrupt marks a file whose bytes fail verification, as opposed to one
// that could not be read at all (EMFILE, ENOMEM, EACCES, EIO): only the
// former is quarantined, since retrying the latter may well succeed.
var errCorrupt = errors.New("snapshot file fails verification")

// FileName returns the file name a version is stored under.
func FileName(version uint64) string { return fmt.Sprintf("%s%020d%s", prefix, version, suffix) }

// parseName returns the version of a snapshot file name, false for anything else.
func parseName(name string) (uint64, bool) {
	if len(name) != len(prefix)+20+len(suffix) || !strings.HasPrefix(name, prefix) || !strings.HasSuffix(name, suffix) {
		return 0, false
	}
	digits := name[len(prefix) : len(prefix)+20]
	for i := 0; i < len(digits); i++ {
		if digits[i] < '0' || digits[i] > '9' {
			return 0, false
		}
	}
	v, err := strconv.ParseUint(digits, 10, 64)
	if err != nil || v == 0 {
		return 0, false
	}
	return v, true
}

// Store is an edge data dir. Its methods are safe for concurrent use.
type Store struct {
	dir  string
	keep int
	log  *slog.Logger
	mu   sync.Mutex // serializes Save/prune/quarantine so directory edits do not interleave
	// inService is the version the edge serves (SetInService); pruning
	// leaves its file alone. Save prunes before the edge has accepted the
	// new snapshot: with keep 1, a refused one (or a crash before the
	// refusal) would otherwise leave only a file the edge cannot boot.
	inService uint64
	// open opens a snapshot file for Map; tests swap it to inject read
	// failures that no file mode can cause when running as root.
	open func(path string) (*os.File, error)
	// lock holds an exclusive flock on the dir's lockName until Close:
	// two edges on one data dir would delete each other's temp files and
	// prune each other's snapshots.
	lock *os.File
}

// SetInService records the version the edge serves, whose file pruning
// keeps besides the newest keep.
func (s *Store) SetInService(version uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.inService = version
}

// lockName is the file Open locks in the data dir.
const lockName = ".lock"

// Open opens (creating with mode 0700) the data dir and removes temp files a
// crash left behind. keep < 1 is treated as 1: the newest file is never pruned.
func Open(dir string, keep int, log *slog.Logger) (*Store, error) {
	if log == nil {
		log = slog.Default()
	}
	if keep < 1 {
		keep = 1
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("snapstore: create data dir %s: %w", dir, err)
	}
	lock, err := lockDir(dir)
	if err != nil {
		return nil, err
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		lock.Close()
		return nil, fmt.Errorf("snapstore: read data dir %s: %w", dir, err)
	}
	for _, e := range entries {
		if e.Type().IsRegular() && strings.HasPrefix(e.Name(), prefix) && strings.HasSuffix(e.Name(), tmpSuffix) {
			p := filepath.Join(dir, e.Name())
			if err := os.Remove(p); err != nil {
				lock.Close()
				return nil, fmt.Errorf("snapstore: remove stale temp file %s: %w", p, err)
			}
			log.Info("snapstore: removed stale temp file", "path", p)
		}
	}
	s := &Store{dir: dir, keep: keep, log: log, open: os.Open, lock: lock}
	// Bad files from earlier versions of the edge were never pruned.
	if err := s.pruneBadLocked(); err != nil {
		log.Warn("snapstore: pruning old bad snapshot files failed", "err", err)
	}
	return s, nil
}

// lockDir takes the data dir's exclusive lock, or says who holds it.
func lockDir(dir string) (*os.File, error) {
	p := filepath.Join(dir, lockName)
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("snapstore: open lock file %s: %w", p, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("snapstore: data dir %s is in use by another edge (%s is locked); give each edge its own --data-dir", dir, p)
		}
		return nil, fmt.Errorf("snapstore: lock %s: %w", p, err)
	}
	return f, nil
}

// Close releases the data dir's lock. The Store must not be used after.
func (s *Store) Close() error { return s.lock.Close() }

// Dir returns the data dir path.
func (s *Store) Dir() string { return s.dir }

// Path returns the file path of a version.
func (s *Store) Path(version uint64) string { return filepath.Join(s.dir, FileName(version)) }

// Versions returns the versions of the snapshot files present, ascending.
func (s *Store) Versions() []uint64 {
	vs, err := s.versions()
	if err != nil {
		s.log.Warn("snapstore: listing data dir failed", "dir", s.dir, "err", err)
	}
	return vs
}

func (s *Store) versions() ([]uint64, error) { return s.listVersions("") }

// listVersions returns, ascending, the versions of the snapshot files whose
// names carry extra after the snapshot file name ("" for live files, the
// quarantine suffix for .bad ones).
func (s *Store) listVersions(extra string) ([]uint64, error) {
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, fmt.Errorf("snapstore: read data dir %s: %w", s.dir, err)
	}
	var vs []uint64
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		if name, ok := strings.CutSuffix(e.Name(), extra); ok {
			if v, ok := parseName(name); ok {
				vs = append(vs, v)
			}
		}
	}
	slices.Sort(vs)
	return vs, nil
}

// Save writes data as version's file: temp file, fsync, rename, fsync of the
// dir, so a crash leaves either the old set of files or the new one, and a
// failed Save removes its temp file. It then prunes to the newest keep
// files; a prune failure is logged, not returned: the new file is durable,
// and refusing it would hold the edge on an older snapshot for a file it no
// longer needs. An existing file of the same version is replaced by the
// rename, never written in place: it may be mapped, and the old inode lives
// on for its readers, whereas an in-place write would SIGBUS them.
func (s *Store) Save(version uint64, data []byte) error {
	if version == 0 {
		return fmt.Errorf("snapstore: save: version 0 is not a snapshot version")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.writeLocked(version, data); err != nil {
		return err
	}
	if err := s.pruneLocked(); err != nil {
		s.log.Error("snapstore: pruning old snapshot files failed; the data dir keeps more than its limit", "keep", s.keep, "err", err)
	}
	return nil
}

// SaveReplacing saves a snapshot that replaces a diverged history
// (docs/stream.md) and removes the files of the versions above it, returning
// those versions, so that neither pruning (newest first) nor a restart
// brings that history back. The new file is durable before anything is
// removed, so a save that fails (disk full, I/O error) leaves the data dir
// as it was, the file of the snapshot in service included; pruning runs
// last, when no file above version is left to outrank it. If only a
// removal fails, version is saved and the error says which file is left: a
// restart would boot that one, and ctrl would replace it again.
func (s *Store) SaveReplacing(version uint64, data []byte) ([]uint64, error) {
	if version == 0 {
		return nil, fmt.Errorf("snapstore: save: version 0 is not a snapshot version")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.writeLocked(version, data); err != nil {
		return nil, err
	}
	vs, err := s.versions()
	if err != nil {
		return nil, err
	}
	var removed []uint64
	for _, old := range vs {
		if old <= version {
			continue
		}
		p := s.Path(old)
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			return removed, fmt.Errorf("snapstore: remove %s: %w", p, err)
		}
		removed = append(removed, old)
	}
	if err := durable.SyncDir(s.dir); err != nil {
		return removed, fmt.Errorf("snapstore: %w", err)
	}
	if err := s.pruneLocked(); err != nil {
		s.log.Error("snapstore: pruning old snapshot files failed; the data dir keeps more than its limit", "keep", s.keep, "err", err)
	}
	return removed, nil
}

// writeLocked writes the file of version durably. A data dir removed
// while the edge runs (an operator forcing a fresh FULL without stopping
// it) is created again, or every later version would fail to save.
func (s *Store) writeLocked(version uint64, data []byte) error {
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return fmt.Errorf("snapstore: save v%d: create data dir: %w", version, err)
	}
	if err := durable.WriteFile(s.dir, FileName(version), prefix, tmpSuffix, data); err != nil {
		return fmt.Errorf("snapstore: save v%d: %w", version, err)
	}
	return nil
}

// pruneLocked unlinks all but the newest keep snapshot files and the one in
// service. Unlinking a mapped file is safe: the mapping keeps the inode
// alive until Unmap.
func (s *Store) pruneLocked() error {
	vs, err := s.versions()
	if err != nil {
		return err
	}
	if len(vs) <= s.keep {
		return nil
	}
	var errs []error
	for _, v := range vs[:len(vs)-s.keep] {
		if v == s.inService {
			continue
		}
		p := s.Path(v)
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("snapstore: prune %s: %w", p, err))
			continue
		}
		s.log.Debug("snapstore: pruned", "path", p)
	}
	return errors.Join(errs...)
}

// Mapping is a verified snapshot file mapped read-only. Everything read from
// Snapshot aliases the mapping, so the owner calls Unmap only once no reader
// can still touch it.
type Mapping struct {
	version uint64
	path    string
	modTime time.Time
	mem     []byte
	snap    *fbs.Snapshot
	once    sync.Once
	err     error
}

// Snapshot returns the verified snapshot reading the mapped bytes.
func (m *Mapping) Snapshot() *fbs.Snapshot { return m.snap }

// Version returns the snapshot's version.
func (m *Mapping) Version() uint64 { return m.version }

// Path returns the mapped file's path.
func (m *Mapping) Path() string { return m.path }

// ModTime is when the file was written: when ctrl delivered the snapshot
// (Save writes it once and renames it into place). At boot, the time since
// then bounds how stale the snapshot is; ctrl may have confirmed it again
// later, which the file does not record.
func (m *Mapping) ModTime() time.Time { return m.modTime }

// Unmap releases the mapping. Only the first call does anything; later calls
// return the first call's result.
func (m *Mapping) Unmap() error {
	m.once.Do(func() {
		m.snap = nil
		if err := syscall.Munmap(m.mem); err != nil {
			m.err = fmt.Errorf("snapstore: munmap %s: %w", m.path, err)
		}
		m.mem = nil
	})
	return m.err
}

// Map maps version's file read-only and verifies it with fbs.Open, which also
// must report the version the file name claims. On any failure nothing stays
// mapped.
func (s *Store) Map(version uint64) (*Mapping, error) {
	return s.MapAfter(version, nil)
}

// MapAfter is Map verifying with fbs.OpenAfter(prev, ...): the same verdict
// as Open, at the cost of a compare for what the file shares with prev. The
// edge maps the file it has just saved from a verified snapshot's bytes, so
// the compare is all the verification costs. prev must stay unchanged
// during the call; the Mapping keeps no reference to it.
func (s *Store) MapAfter(version uint64, prev *fbs.Snapshot) (*Mapping, error) {
	return mapFile(s.open, s.Path(version), version, prev)
}

func mapFile(open func(string) (*os.File, error), path string, version uint64, prev *fbs.Snapshot) (*Mapping, error) {
	f, err := open(path)
	if err != nil {
		return nil, fmt.Errorf("snapstore: open %s: %w", path, err)
	}
	// The mapping outlives the descriptor, so close it either way.
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("snapstore: stat %s: %w", path, err)
	}
	size := fi.Size()
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("snapstore: %s is not a regular file (mode %v)", path, fi.Mode())
	}
	// Save renames only complete, fsynced files into place, so an empty or
	// absurdly large one is damage, not a write in progress.
	if size <= 0 || size > int64(^uint(0)>>1) {
		return nil, fmt.Errorf("snapstore: verify %s: %w: %d bytes", path, errCorrupt, size)
	}
	mem, err := syscall.Mmap(int(f.Fd()), 0, int(size), syscall.PROT_READ, syscall.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("snapstore: mmap %s: %w", path, err)
	}
	snap, err := fbs.OpenAfter(prev, mem)
	if err == nil && snap.Version() != version {
		err = fmt.Errorf("snapstore: %s holds version %d, its name says %d", path, snap.Version(), version)
	}
	if err != nil {
		syscall.Munmap(mem)
		return nil, fmt.Errorf("snapstore: verify %s: %w: %w", path, errCorrupt, err)
	}
	return &Mapping{version: version, path: path, modTime: fi.ModTime(), mem: mem, snap: snap}, nil
}

// LoadNewest maps the newest snapshot file that verifies. A file whose bytes
// fail verification is logged with the reason and renamed to <name>.bad so
// later boots do not retry it (only the newest few .bad files are kept); it
// returns ErrNoSnapshot if none verifies. A file that cannot be read at all
// (too many open files, out of memory, permission, I/O error) is left alone
// and its error returned: the file may be good, and booting from an older one
// instead would take the edge back in time.
func (s *Store) LoadNewest() (*Mapping, error) {
	vs, err := s.versions()
	if err != nil {
		return nil, err
	}
	for i := len(vs) - 1; i >= 0; i-- {
		m, err := s.Map(vs[i])
		if err == nil {
			return m, nil
		}
		if !errors.Is(err, errCorrupt) {
			return nil, fmt.Errorf("snapstore: cannot read snapshot version %d, left in place: %w", vs[i], err)
		}
		s.log.Error("snapstore: skipping snapshot file that fails verification", "version", vs[i], "err", err)
		s.Quarantine(vs[i])
	}
	return nil, fmt.Errorf("%w in %s (%d files tried)", ErrNoSnapshot, s.dir, len(vs))
}

// Quarantine sets the file of version aside as <name>.bad, so that boots
// and pruning no longer count it; the newest few stay for a post-mortem.
func (s *Store) Quarantine(version uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.Path(version)
	if err := os.Rename(p, p+badSuffix); err != nil {
		s.log.Error("snapstore: could not set bad snapshot file aside", "path", p, "err", err)
		return
	}
	s.log.Warn("snapstore: bad snapshot file set aside", "path", p+badSuffix)
	if err := s.pruneBadLocked(); err != nil {
		s.log.Warn("snapstore: pruning old bad snapshot files failed", "err", err)
	}
	if err := durable.SyncDir(s.dir); err != nil {
		s.log.Warn("snapstore: fsync after setting bad file aside failed", "err", err)
	}
}

// badVersions returns the versions of the quarantined (.bad) files present,
// ascending.
func (s *Store) badVersions() ([]uint64, error) { return s.listVersions(badSuffix) }

// pruneBadLocked removes all but the newest keepBad quarantined files.
func (s *Store) pruneBadLocked() error {
	vs, err := s.badVersions()
	if err != nil || len(vs) <= keepBad {
		return err
	}
	var errs []error
	for _, v := range vs[:len(vs)-keepBad] {
		p := s.Path(v) + badSuffix
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("snapstore: remove old bad file %s: %w", p, err))
			continue
		}
		s.log.Info("snapstore: removed old bad snapshot file", "path", p)
	}
	return errors.Join(errs...)
}
