// Package durable writes files that survive a crash whole or not at all:
// data goes to a temporary file in the same directory, which is fsynced,
// renamed over the final name, and the directory fsynced. ctrl's snapshot
// history (store) and the edge's data dir (edge/snapstore) both use it.
package durable

import (
	"fmt"
	"os"
	"path/filepath"
)

// WriteFile makes dir/name hold data durably, with mode 0600. The
// temporary file is named prefix+"<random>"+tmpSuffix, so the caller can
// recognise (and remove) one a crash left behind. On error nothing is left
// under name that was not there before, and the temporary file is removed.
func WriteFile(dir, name, prefix, tmpSuffix string, data []byte) (err error) {
	f, err := os.CreateTemp(dir, prefix+"*"+tmpSuffix)
	if err != nil {
		return fmt.Errorf("create temp file in %s: %w", dir, err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if _, err = f.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", tmp, err)
	}
	if err = f.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", tmp, err)
	}
	if err = f.Close(); err != nil {
		return fmt.Errorf("close %s: %w", tmp, err)
	}
	if err = os.Rename(tmp, filepath.Join(dir, name)); err != nil {
		return fmt.Errorf("rename %s to %s: %w", tmp, name, err)
	}
	return SyncDir(dir)
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
