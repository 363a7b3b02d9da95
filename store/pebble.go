package store

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/cockroachdb/pebble/v2"
)

// Pebble is the embedded Store on a local Pebble database.
//
// Pebble has no transactions, so one mutex (mu) serializes every
// read-check-write. The commit is not fsynced under mu: the WAL fsync comes
// after (syncTo), so that concurrent writers share it. Pebble makes a commit
// visible to readers before its WAL is synced (deps.md §3), so every read
// takes its read point under mu (a point read, or a pebble snapshot then
// iterated without the lock) with the revision at that point, and waits until
// that revision is durable before it returns: a reader never observes a
// write that a crash could still take away.
type Pebble struct {
	// life is read-held for the duration of every operation and write-held by
	// Close, so the database is never closed under a running iterator.
	life   sync.RWMutex
	closed bool // guarded by life

	mu     sync.Mutex // serializes writers; readers take it to get a durable read point
	db     *pebble.DB
	rev    atomic.Uint64 // last committed revision (maybe not yet durable); stored under mu
	synced atomic.Uint64 // every revision up to it is durable
	log    *slog.Logger

	// snapDir holds the snapshot files (snapshots.go).
	snapDir string
	// snapWrite serializes snapshot commits, from choosing what to prune to
	// removing the pruned files, so no commit removes a file another writes.
	// Staging takes no lock: each staged version has a temp file of its own.
	snapWrite sync.Mutex
	// snapIdx guards snaps, the stored versions ascending. Readers open a
	// file under the read lock; a commit drops versions from snaps under
	// the write lock before removing their files, so a file is never
	// removed between a reader's lookup and its open (an open file stays
	// readable after removal).
	snapIdx sync.RWMutex
	snaps   []snapEntry
}

var _ Store = (*Pebble)(nil)

// formatVersion is the Pebble format the store is written in, pinned
// rather than pebble.FormatNewest: opening ratchets a store up to it, and
// a store in a newer format cannot be opened by an older ctrl, so a
// library upgrade must not move it (and with it the way back from a ctrl
// upgrade) unannounced. Raise it on purpose, in release notes.
const formatVersion = pebble.FormatValueSeparation

// OpenPebble opens (creating if needed) the store in dir.
func OpenPebble(dir string, opts Options) (*Pebble, error) {
	if dir == "" {
		return nil, fmt.Errorf("store: open: directory is empty: %w", ErrInvalid)
	}
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	db, err := pebble.Open(dir, &pebble.Options{
		Logger:             pebbleLogger{opts.Logger},
		CacheSize:          opts.CacheSize,
		MemTableSize:       opts.MemTableSize,
		FormatMajorVersion: formatVersion,
		FS:                 opts.fs,
	})
	if errors.Is(err, syscall.EAGAIN) {
		// pebble's LOCK file: flock(2) found it held.
		return nil, fmt.Errorf("store %s: locked by another process (is another ctrl running on this data dir?): %w", dir, err)
	}
	if err != nil {
		return nil, fmt.Errorf("store %s: opening pebble: %w", dir, err)
	}
	p := &Pebble{db: db, log: opts.Logger, snapDir: opts.SnapshotDir}
	if p.snapDir == "" {
		p.snapDir = filepath.Clean(dir) + "-snapshots"
	}
	rev, err := readRevision(db)
	if err == nil {
		err = p.openSnapshots()
	}
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("store %s: %w", dir, err)
	}
	p.rev.Store(rev)
	p.synced.Store(rev) // what open found counts as durable: nothing of it is waiting for our fsync
	p.log.Debug("store opened", "dir", dir, "snapshot_dir", p.snapDir, "revision", rev, "snapshots", len(p.snaps))
	return p, nil
}

type reader interface {
	Get(key []byte) ([]byte, io.Closer, error)
}

func readRevision(r reader) (uint64, error) {
	v, closer, err := r.Get(revKey)
	if errors.Is(err, pebble.ErrNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", revKey, err)
	}
	defer closer.Close()
	rev, err := decodeUint64(v)
	if err != nil {
		return 0, fmt.Errorf("corrupt %s: %w", revKey, err)
	}
	return rev, nil
}

// enter starts an operation; the caller must call p.life.RUnlock when it
// returns nil.
func (p *Pebble) enter(op string) error {
	p.life.RLock()
	if p.closed {
		p.life.RUnlock()
		return fmt.Errorf("store: %s: %w", op, ErrClosed)
	}
	return nil
}

// currentVersion returns the stored version of a document, 0 if absent.
func (p *Pebble) currentVersion(key []byte) (uint64, error) {
	v, closer, err := p.db.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read %q: %w", key, err)
	}
	defer closer.Close()
	ver, _, _, err := decodeRecord(v)
	if err != nil {
		return 0, fmt.Errorf("corrupt document at %q: %w", key, err)
	}
	return ver, nil
}

// Apply implements Store: the commit holds mu, the fsync does not, so
// concurrent Applies share fsyncs. One operation from commit to fsync, so
// Close cannot fall between them.
func (p *Pebble) Apply(muts ...Mutation) (uint64, []Doc, error) {
	if err := validateMutations(muts); err != nil {
		return 0, nil, err
	}
	if err := p.enter("apply"); err != nil {
		return 0, nil, err
	}
	defer p.life.RUnlock()
	rev, docs, err := p.commit(muts)
	if err != nil {
		return 0, nil, err
	}
	if err := p.syncTo(rev); err != nil {
		return 0, nil, fmt.Errorf("store: apply: revision %d committed but not made durable: %w", rev, err)
	}
	return rev, docs, nil
}

// Durable is the newest revision known to be on disk. Revision is ahead of
// it while writes committed with ApplyNoSync wait for a Sync.
func (p *Pebble) Durable() uint64 { return p.synced.Load() }

// ApplyNoSync implements Store.
func (p *Pebble) ApplyNoSync(muts ...Mutation) (uint64, []Doc, error) {
	if err := validateMutations(muts); err != nil {
		return 0, nil, err
	}
	if err := p.enter("apply"); err != nil {
		return 0, nil, err
	}
	defer p.life.RUnlock()
	return p.commit(muts)
}

// Sync implements Store. It costs nothing when every committed revision is
// durable already.
func (p *Pebble) Sync() error {
	if err := p.enter("sync"); err != nil {
		return err
	}
	defer p.life.RUnlock()
	return p.syncTo(p.rev.Load())
}

// syncTo makes every revision up to rev, a committed one, durable. A synced
// WAL record makes every record before it durable, including across WAL
// rotations (a rotated WAL is fsynced when it closes), and Pebble's commit
// pipeline gives concurrent synced commits one fsync. The caller is inside
// an operation (enter).
func (p *Pebble) syncTo(rev uint64) error {
	if p.synced.Load() >= rev {
		return nil
	}
	if err := p.db.LogData(nil, pebble.Sync); err != nil {
		return fmt.Errorf("store: sync: %w", err)
	}
	for {
		cur := p.synced.Load()
		if cur >= rev || p.synced.CompareAndSwap(cur, rev) {
			return nil
		}
	}
}

// commit is ApplyNoSync inside an operation: the checks and one commit
// without an fsync, under mu.
func (p *Pebble) commit(muts []Mutation) (uint64, []Doc, error) {
	p.mu.Lock()
	defer p.mu.Unlock()

	cur := p.rev.Load()
	if cur == math.MaxUint64 {
		return 0, nil, fmt.Errorf("store: apply: revision %d cannot be incremented", cur)
	}
	next := cur + 1
	b := p.db.NewBatch()
	defer b.Close()
	docs := make([]Doc, len(muts))
	for i, m := range muts {
		key := docKey(m.Kind, m.ID)
		ver, err := p.currentVersion(key)
		if err != nil {
			return 0, nil, fmt.Errorf("store: apply: %s %q: %w", m.Kind, m.ID, err)
		}
		if m.Expected != nil && *m.Expected != ver {
			return 0, nil, &ConflictError{Kind: m.Kind, ID: m.ID, Expected: *m.Expected, Actual: ver}
		}
		if m.Body == nil {
			if ver == 0 {
				return 0, nil, fmt.Errorf("store: apply: delete %s %q: %w", m.Kind, m.ID, ErrNotFound)
			}
			if err := b.Delete(key, nil); err != nil {
				return 0, nil, fmt.Errorf("store: apply: batch delete %s %q: %w", m.Kind, m.ID, err)
			}
			docs[i] = Doc{Kind: m.Kind, ID: m.ID, Revision: next}
			continue
		}
		if ver == math.MaxUint64 {
			return 0, nil, fmt.Errorf("store: apply: %s %q: version %d cannot be incremented", m.Kind, m.ID, ver)
		}
		nv := ver + 1
		if ver == 0 {
			nv = next // a create: see the package comment
		}
		if err := b.Set(key, encodeRecord(nv, next, m.Body), nil); err != nil {
			return 0, nil, fmt.Errorf("store: apply: batch put %s %q: %w", m.Kind, m.ID, err)
		}
		docs[i] = Doc{Kind: m.Kind, ID: m.ID, Version: nv, Revision: next, Body: bytes.Clone(m.Body)}
	}
	if err := b.Set(revKey, encodeUint64(next), nil); err != nil {
		return 0, nil, fmt.Errorf("store: apply: batch revision: %w", err)
	}
	if err := b.Commit(pebble.NoSync); err != nil {
		return 0, nil, fmt.Errorf("store: apply: commit revision %d: %w", next, err)
	}
	p.rev.Store(next)
	return next, docs, nil
}

// Get implements Store.
func (p *Pebble) Get(kind, id string) (Doc, error) {
	if err := validateKey(kind, id); err != nil {
		return Doc{}, fmt.Errorf("store: get: %w", err)
	}
	if err := p.enter("get"); err != nil {
		return Doc{}, err
	}
	defer p.life.RUnlock()
	key := docKey(kind, id)
	p.mu.Lock()
	v, closer, err := p.db.Get(key)
	at := p.rev.Load()
	p.mu.Unlock()
	if serr := p.syncTo(at); serr != nil {
		if err == nil {
			closer.Close()
		}
		return Doc{}, fmt.Errorf("store: get %s %q: %w", kind, id, serr)
	}
	if errors.Is(err, pebble.ErrNotFound) {
		return Doc{}, fmt.Errorf("store: get %s %q: %w", kind, id, ErrNotFound)
	}
	if err != nil {
		return Doc{}, fmt.Errorf("store: get %s %q: %w", kind, id, err)
	}
	defer closer.Close()
	ver, rev, body, err := decodeRecord(v)
	if err != nil {
		return Doc{}, fmt.Errorf("store: get %s %q: corrupt document at %q: %w", kind, id, key, err)
	}
	return Doc{Kind: kind, ID: id, Version: ver, Revision: rev, Body: bytes.Clone(body)}, nil
}

// durableSnapshot returns a pebble snapshot taken under mu once every
// revision it holds is durable. The caller closes it.
func (p *Pebble) durableSnapshot() (*pebble.Snapshot, error) {
	p.mu.Lock()
	snap, at := p.db.NewSnapshot(), p.rev.Load()
	p.mu.Unlock()
	if err := p.syncTo(at); err != nil {
		snap.Close()
		return nil, err
	}
	return snap, nil
}

// List implements Store.
func (p *Pebble) List(kind string) ([]Doc, error) {
	if err := ValidateKind(kind); err != nil {
		return nil, fmt.Errorf("store: list: %w", err)
	}
	if err := p.enter("list"); err != nil {
		return nil, err
	}
	defer p.life.RUnlock()
	snap, err := p.durableSnapshot()
	if err != nil {
		return nil, fmt.Errorf("store: list %s: %w", kind, err)
	}
	defer snap.Close()
	docs, err := scanDocs(snap, kindPrefix(kind))
	if err != nil {
		return nil, fmt.Errorf("store: list %s: %w", kind, err)
	}
	return docs, nil
}

// Load implements Store. Documents come sorted by kind, then ID.
func (p *Pebble) Load() (uint64, []Doc, error) {
	if err := p.enter("load"); err != nil {
		return 0, nil, err
	}
	defer p.life.RUnlock()
	snap, err := p.durableSnapshot()
	if err != nil {
		return 0, nil, fmt.Errorf("store: load: %w", err)
	}
	defer snap.Close()
	rev, err := readRevision(snap)
	if err != nil {
		return 0, nil, fmt.Errorf("store: load: %w", err)
	}
	docs, err := scanDocs(snap, []byte(docPrefix))
	if err != nil {
		return 0, nil, fmt.Errorf("store: load: %w", err)
	}
	// Key order puts kind "route-a" before "route" ('-' < '/'); callers get
	// plain string order instead.
	slices.SortFunc(docs, func(a, b Doc) int {
		return cmp.Or(cmp.Compare(a.Kind, b.Kind), cmp.Compare(a.ID, b.ID))
	})
	return rev, docs, nil
}

func scanDocs(snap *pebble.Snapshot, prefix []byte) (docs []Doc, err error) {
	it, err := snap.NewIter(&pebble.IterOptions{LowerBound: prefix, UpperBound: prefixEnd(prefix)})
	if err != nil {
		return nil, fmt.Errorf("iterate %q: %w", prefix, err)
	}
	defer func() {
		if cerr := it.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("iterate %q: %w", prefix, cerr)
		}
	}()
	for it.First(); it.Valid(); it.Next() {
		kind, id, err := parseDocKey(it.Key())
		if err != nil {
			return nil, fmt.Errorf("corrupt document key: %w", err)
		}
		v, err := it.ValueAndErr()
		if err != nil {
			return nil, fmt.Errorf("read %q: %w", it.Key(), err)
		}
		ver, rev, body, err := decodeRecord(v)
		if err != nil {
			return nil, fmt.Errorf("corrupt document at %q: %w", it.Key(), err)
		}
		docs = append(docs, Doc{Kind: kind, ID: id, Version: ver, Revision: rev, Body: bytes.Clone(body)})
	}
	return docs, nil
}

// Revision implements Store.
func (p *Pebble) Revision() uint64 { return p.rev.Load() }

// Close implements Store. It waits for running operations to finish.
func (p *Pebble) Close() error {
	p.life.Lock()
	defer p.life.Unlock()
	if p.closed {
		return fmt.Errorf("store: close: %w", ErrClosed)
	}
	p.closed = true
	if err := p.db.Close(); err != nil {
		return fmt.Errorf("store: close pebble: %w", err)
	}
	return nil
}
