// Package durable writes files that survive a crash whole or not at all:
// data goes to a temporary file in the same directory, which is fsynced,
// renamed over the final name, and the directory fsynced. ctrl's snapshot
// history (store) and the edge's data dir (edge/snapstore) both use it.
package durable

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// WriteFile makes dir/name hold data durably, with mode 0600. The
// temporary file is named prefix+"<random>"+tmpSuffix, so the caller can
// recognise (and remove) one a crash left behind. On error nothing is left
// under name that was not there before, and the temporary file is removed.
func WriteFile(dir, name, prefix, tmpSuffix string, data []byte) error {
	t, err := Stage(dir, prefix, tmpSuffix, data)
	if err != nil {
		return err
	}
	return t.Commit(name)
}

// Temp is data written to a temporary file in dir but not yet durable: it
// sits in the page cache, so writing it costs a copy, not a disk flush.
// Commit or Abort it exactly once.
type Temp struct {
	f   *os.File
	dir string
}

// Stage writes data to a new temporary file in dir, named as WriteFile
// names it, without fsyncing it; data is not referenced after Stage
// returns. On error the temporary file is removed.
func Stage(dir, prefix, tmpSuffix string, data []byte) (*Temp, error) {
	f, err := os.CreateTemp(dir, prefix+"*"+tmpSuffix)
	if err != nil {
		return nil, fmt.Errorf("create temp file in %s: %w", dir, err)
	}
	t := &Temp{f: f, dir: dir}
	if _, err := f.Write(data); err != nil {
		return nil, errors.Join(fmt.Errorf("write %s: %w", f.Name(), err), t.Abort())
	}
	return t, nil
}

// Commit makes dir/name hold the staged data durably: fsync, rename over
// name, fsync of the directory. On error nothing is left under name that
// was not there before, unless only the directory fsync failed (then the
// rename may or may not survive a crash), and the temporary file is removed.
func (t *Temp) Commit(name string) error {
	tmp := t.f.Name()
	if err := t.f.Sync(); err != nil {
		return errors.Join(fmt.Errorf("fsync %s: %w", tmp, err), t.Abort())
	}
	err := t.f.Close()
	t.f = nil
	if err != nil {
		return errors.Join(fmt.Errorf("close %s: %w", tmp, err), removeTemp(tmp))
	}
	if err := os.Rename(tmp, filepath.Join(t.dir, name)); err != nil {
		return errors.Join(fmt.Errorf("rename %s to %s: %w", tmp, name, err), removeTemp(tmp))
	}
	return SyncDir(t.dir)
}

// Abort closes and removes the temporary file.
func (t *Temp) Abort() error {
	tmp := t.f.Name()
	t.f.Close()
	t.f = nil
	return removeTemp(tmp)
}

func removeTemp(path string) error {
	if err := os.Remove(path); err != nil {
		return fmt.Errorf("remove temp file: %w", err)
	}
	return nil
}

// SyncDir fsyncs a directory, making renames and removals in it durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("open directory %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("fsync directory %s: %w", dir, err)
	}
	return nil
}
