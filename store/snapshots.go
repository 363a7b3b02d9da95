package store

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"github.com/cespare/xxhash/v2"
	"github.com/cockroachdb/pebble/v2"

	"github.com/snapgate/snapgate/store/durable"
)

// snapEntry is one stored snapshot version and its record.
type snapEntry struct {
	version uint64
	rec     snapRecord
}

func (e snapEntry) fileName() string { return snapFileName(e.version, e.rec.hash) }

func (p *Pebble) snapPath(e snapEntry) string { return filepath.Join(p.snapDir, e.fileName()) }

// PutSnapshot implements Store: StageSnapshot, then Commit.
func (p *Pebble) PutSnapshot(version uint64, data []byte, keep int) error {
	st, err := p.StageSnapshot(version, data, keep)
	if err != nil {
		return err
	}
	return st.Commit()
}

// StageSnapshot implements Store. The bytes go to a temp file in the
// snapshot directory, unsynced, and are hashed; nothing else changes until
// Commit. A crash before Commit leaves only that temp file, which the next
// open removes.
func (p *Pebble) StageSnapshot(version uint64, data []byte, keep int) (StagedSnapshot, error) {
	if keep < 1 {
		return nil, fmt.Errorf("store: stage snapshot %d: keep is %d, must be at least 1: %w", version, keep, ErrInvalid)
	}
	if len(data) == 0 {
		return nil, fmt.Errorf("store: stage snapshot %d: data is empty: %w", version, ErrInvalid)
	}
	if err := p.enter("stage snapshot"); err != nil {
		return nil, err
	}
	defer p.life.RUnlock()
	tmp, err := stageSnapFile(p.snapDir, data)
	if err != nil {
		return nil, fmt.Errorf("store: stage snapshot %d: %w", version, err)
	}
	return &stagedSnapshot{p: p, tmp: tmp, keep: keep,
		put: snapEntry{version, snapRecord{size: uint64(len(data)), hash: xxhash.Sum64(data)}}}, nil
}

// stagedSnapshot is a Pebble snapshot version between StageSnapshot and
// Commit or Abort.
type stagedSnapshot struct {
	p    *Pebble
	tmp  *durable.Temp // nil once committed or aborted
	put  snapEntry
	keep int
}

// Commit implements StagedSnapshot. The file is durable before the record
// that names it commits, and the same fsynced batch drops the records of
// pruned versions; their files are removed after it. A crash anywhere
// leaves either the old set of versions or the new one, plus at most some
// files without a record, which the next open removes. A version older
// than the `keep` newest ones is pruned at once: its temp file is removed
// and nothing is recorded.
func (s *stagedSnapshot) Commit() error {
	put := s.put
	if s.tmp == nil {
		return fmt.Errorf("store: commit snapshot %d: already committed or aborted: %w", put.version, ErrInvalid)
	}
	tmp := s.tmp
	s.tmp = nil
	p := s.p
	if err := p.enter("commit snapshot"); err != nil {
		return errors.Join(err, tmp.Abort())
	}
	defer p.life.RUnlock()
	p.snapWrite.Lock()
	defer p.snapWrite.Unlock()

	// Only Commit changes p.snaps, and snapWrite is held: no lock needed
	// to read it.
	old := p.snaps
	next := slices.Clone(old)
	i, found := slices.BinarySearchFunc(next, put.version, cmpEntryVersion)
	if found {
		next[i] = put
	} else {
		next = slices.Insert(next, i, put)
	}
	kept := next[max(0, len(next)-s.keep):]

	b := p.db.NewBatch()
	defer b.Close()
	if slices.Contains(kept, put) && !slices.Contains(old, put) {
		if err := tmp.Commit(put.fileName()); err != nil {
			return fmt.Errorf("store: commit snapshot %d: %w", put.version, err)
		}
		if err := b.Set(snapRecordKey(put.version), encodeSnapRecord(put.rec), nil); err != nil {
			return fmt.Errorf("store: commit snapshot %d: batch put: %w", put.version, err)
		}
	} else if err := tmp.Abort(); err != nil {
		// Pruned at once, or these bytes are already stored.
		p.log.Warn("store: removing an unneeded staged snapshot file failed; the next open retries", "version", put.version, "err", err)
	}
	for _, e := range old {
		if _, stays := slices.BinarySearchFunc(kept, e.version, cmpEntryVersion); !stays {
			if err := b.Delete(snapRecordKey(e.version), nil); err != nil {
				return fmt.Errorf("store: commit snapshot %d: batch prune %d: %w", put.version, e.version, err)
			}
		}
	}
	if !b.Empty() {
		if err := b.Commit(pebble.Sync); err != nil {
			return fmt.Errorf("store: commit snapshot %d: pebble commit: %w", put.version, err)
		}
	}
	p.snapIdx.Lock()
	p.snaps = slices.Clip(kept)
	p.snapIdx.Unlock()
	// Files of pruned versions, and the old file of a version stored again
	// with other bytes. A failure costs disk space until the next open.
	for _, e := range old {
		if !slices.Contains(kept, e) {
			if err := removeFile(p.snapPath(e)); err != nil {
				p.log.Warn("store: removing a pruned snapshot file failed; the next open retries", "version", e.version, "err", err)
			}
		}
	}
	return nil
}

// Abort implements StagedSnapshot.
func (s *stagedSnapshot) Abort() error {
	if s.tmp == nil {
		return nil
	}
	tmp := s.tmp
	s.tmp = nil
	if err := tmp.Abort(); err != nil {
		return fmt.Errorf("store: abort snapshot %d: %w", s.put.version, err)
	}
	return nil
}

func cmpEntryVersion(e snapEntry, v uint64) int {
	switch {
	case e.version < v:
		return -1
	case e.version > v:
		return 1
	}
	return 0
}

// Snapshot implements Store.
func (p *Pebble) Snapshot(version uint64) ([]byte, error) {
	if err := p.enter("snapshot"); err != nil {
		return nil, err
	}
	defer p.life.RUnlock()
	data, err := p.readSnapshot(func(snaps []snapEntry) (snapEntry, bool) {
		i, found := slices.BinarySearchFunc(snaps, version, cmpEntryVersion)
		if !found {
			return snapEntry{}, false
		}
		return snaps[i], true
	})
	if err != nil {
		return nil, fmt.Errorf("store: snapshot %d: %w", version, err)
	}
	return data, nil
}

// LatestSnapshot implements Store.
func (p *Pebble) LatestSnapshot() (uint64, []byte, error) {
	if err := p.enter("latest snapshot"); err != nil {
		return 0, nil, err
	}
	defer p.life.RUnlock()
	var version uint64
	data, err := p.readSnapshot(func(snaps []snapEntry) (snapEntry, bool) {
		if len(snaps) == 0 {
			return snapEntry{}, false
		}
		version = snaps[len(snaps)-1].version
		return snaps[len(snaps)-1], true
	})
	if err != nil {
		if version != 0 {
			return 0, nil, fmt.Errorf("store: latest snapshot %d: %w", version, err)
		}
		return 0, nil, fmt.Errorf("store: latest snapshot: %w", err)
	}
	return version, data, nil
}

// readSnapshot opens the file of the version pick chooses under the index
// lock and reads it outside the lock, checking it against its record.
func (p *Pebble) readSnapshot(pick func([]snapEntry) (snapEntry, bool)) ([]byte, error) {
	p.snapIdx.RLock()
	e, ok := pick(p.snaps)
	var f *os.File
	var err error
	if ok {
		f, err = os.Open(p.snapPath(e))
	}
	p.snapIdx.RUnlock()
	if !ok {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("stored snapshot file: %w", err)
	}
	defer f.Close()
	return readSnapFile(f, e.rec)
}

// openSnapshots loads the snapshot index at open and makes the directory
// agree with it: legacy values in Pebble move to files, unfinished temp
// files and files without a record go, and records whose file is missing or
// does not match are dropped (logged at Error: that history is lost).
func (p *Pebble) openSnapshots() error {
	if err := os.MkdirAll(p.snapDir, 0o700); err != nil {
		return fmt.Errorf("snapshot directory: %w", err)
	}
	if err := p.moveLegacySnapshots(); err != nil {
		return err
	}
	recorded, err := p.snapshotRecords()
	if err != nil {
		return err
	}
	names := make(map[string]bool, len(recorded))
	for _, e := range recorded {
		names[e.fileName()] = true
	}
	dirents, err := os.ReadDir(p.snapDir)
	if err != nil {
		return fmt.Errorf("snapshot directory: %w", err)
	}
	for _, d := range dirents {
		name := d.Name()
		_, _, isSnap := parseSnapFileName(name)
		switch {
		case names[name]:
			continue
		case isSnap, isSnapTempName(name):
			// A put or a prune that a crash interrupted.
			if err := removeFile(filepath.Join(p.snapDir, name)); err != nil {
				return fmt.Errorf("removing snapshot file without a record: %w", err)
			}
			p.log.Info("store: removed snapshot file without a record (left by an interrupted write or prune)", "file", name)
		default:
			p.log.Warn("store: unexpected file in the snapshot directory, leaving it alone", "dir", p.snapDir, "file", name)
		}
	}
	b := p.db.NewBatch()
	defer b.Close()
	var bad []snapEntry
	valid := recorded[:0:0]
	for _, e := range recorded {
		if err := p.checkSnapshot(e); err != nil {
			p.log.Error("store: dropping stored snapshot version: its file is missing or damaged", "version", e.version, "err", err)
			if err := b.Delete(snapRecordKey(e.version), nil); err != nil {
				return fmt.Errorf("batch drop snapshot %d: %w", e.version, err)
			}
			bad = append(bad, e)
			continue
		}
		valid = append(valid, e)
	}
	if !b.Empty() {
		if err := b.Commit(pebble.Sync); err != nil {
			return fmt.Errorf("commit dropping damaged snapshots: %w", err)
		}
	}
	for _, e := range bad {
		if err := removeFile(p.snapPath(e)); err != nil {
			return fmt.Errorf("removing damaged snapshot file: %w", err)
		}
	}
	p.snaps = valid
	return nil
}

func (p *Pebble) checkSnapshot(e snapEntry) error {
	f, err := os.Open(p.snapPath(e))
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = readSnapFile(f, e.rec)
	return err
}

// snapshotRecords lists the snapshot records in Pebble, ascending.
func (p *Pebble) snapshotRecords() (entries []snapEntry, err error) {
	prefix := []byte(snapRecordPrefix)
	it, err := p.db.NewIter(&pebble.IterOptions{LowerBound: prefix, UpperBound: prefixEnd(prefix)})
	if err != nil {
		return nil, fmt.Errorf("iterate snapshot records: %w", err)
	}
	defer func() {
		if cerr := it.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("iterate snapshot records: %w", cerr)
		}
	}()
	for it.First(); it.Valid(); it.Next() {
		v, err := parseVersionKey(snapRecordPrefix, it.Key())
		if err != nil {
			return nil, fmt.Errorf("corrupt snapshot index: %w", err)
		}
		raw, err := it.ValueAndErr()
		if err != nil {
			return nil, fmt.Errorf("read snapshot record %d: %w", v, err)
		}
		rec, err := decodeSnapRecord(raw)
		if err != nil {
			return nil, fmt.Errorf("corrupt snapshot record %d: %w", v, err)
		}
		entries = append(entries, snapEntry{v, rec})
	}
	return entries, nil
}

// moveLegacySnapshots moves snapshots stored as Pebble values (the layout
// before snapshot files) into files, one version per commit, and then
// compacts the emptied range so its space comes back at once.
func (p *Pebble) moveLegacySnapshots() error {
	prefix := []byte(legacySnapPrefix)
	versions, err := p.legacySnapshotVersions()
	if err != nil || len(versions) == 0 {
		return err
	}
	for _, v := range versions {
		key := versionKey(legacySnapPrefix, v)
		val, closer, err := p.db.Get(key)
		if err != nil {
			return fmt.Errorf("read legacy snapshot %d: %w", v, err)
		}
		data := slices.Clone(val)
		closer.Close()
		b := p.db.NewBatch()
		if len(data) > 0 {
			e := snapEntry{v, snapRecord{size: uint64(len(data)), hash: xxhash.Sum64(data)}}
			if err := writeSnapFile(p.snapDir, e.fileName(), data); err != nil {
				b.Close()
				return fmt.Errorf("move legacy snapshot %d to a file: %w", v, err)
			}
			err = b.Set(snapRecordKey(v), encodeSnapRecord(e.rec), nil)
		}
		if err == nil {
			err = b.Delete(key, nil)
		}
		if err == nil {
			err = b.Commit(pebble.Sync)
		}
		b.Close()
		if err != nil {
			return fmt.Errorf("move legacy snapshot %d: %w", v, err)
		}
	}
	p.log.Info("store: moved snapshots out of pebble into files", "versions", len(versions), "dir", p.snapDir)
	if err := p.db.Compact(context.Background(), prefix, prefixEnd(prefix), false); err != nil {
		return fmt.Errorf("compact the emptied legacy snapshot range: %w", err)
	}
	return nil
}

func (p *Pebble) legacySnapshotVersions() (versions []uint64, err error) {
	prefix := []byte(legacySnapPrefix)
	it, err := p.db.NewIter(&pebble.IterOptions{LowerBound: prefix, UpperBound: prefixEnd(prefix)})
	if err != nil {
		return nil, fmt.Errorf("iterate legacy snapshots: %w", err)
	}
	defer func() {
		if cerr := it.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("iterate legacy snapshots: %w", cerr)
		}
	}()
	for it.First(); it.Valid(); it.Next() {
		v, err := parseVersionKey(legacySnapPrefix, it.Key())
		if err != nil {
			return nil, fmt.Errorf("corrupt legacy snapshot index: %w", err)
		}
		versions = append(versions, v)
	}
	return versions, nil
}
