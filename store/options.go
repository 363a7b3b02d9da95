package store

import (
	"context"
	"fmt"
	"log/slog"
	"os"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// Options configures OpenPebble. The zero value is ready to use.
type Options struct {
	// Logger receives the store's messages and pebble's. Pebble's informational
	// chatter (WAL replay, flushes, compactions) goes out at Debug, so a logger
	// at the default Info level stays quiet (deps.md §3); pebble errors go out
	// at Error. Default: slog.Default().
	Logger *slog.Logger

	// CacheSize is pebble's block cache in bytes. The control-plane working set
	// (routes, clusters, a few snapshots) is small; raise it only if Load shows
	// up in profiles. Default: 8 MiB. Negative is an error.
	CacheSize int64

	// MemTableSize is the size of one pebble memtable in bytes. Writes stall
	// when two full memtables wait for a flush, so a larger value absorbs
	// bigger bursts of document writes at the cost of memory and a longer
	// WAL replay on open (snapshot bytes are files, not memtable entries).
	// Default: 4 MiB.
	MemTableSize uint64

	// SnapshotDir is the directory for the snapshot history files. The
	// store owns it: files in it that no stored version refers to are
	// removed on open. Default: the Pebble directory's path with
	// "-snapshots" appended (a sibling, so Pebble never sees the files).
	SnapshotDir string

	// fs replaces the filesystem Pebble writes to (default: the OS's); the
	// power-loss tests give it one that drops what was never fsynced.
	fs vfs.FS
}

const (
	defaultCacheSize    = 8 << 20
	defaultMemTableSize = 4 << 20
)

func (o Options) withDefaults() (Options, error) {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.CacheSize < 0 {
		return o, fmt.Errorf("store: options: CacheSize %d is negative: %w", o.CacheSize, ErrInvalid)
	}
	if o.CacheSize == 0 {
		o.CacheSize = defaultCacheSize
	}
	if o.MemTableSize == 0 {
		o.MemTableSize = defaultMemTableSize
	}
	return o, nil
}

// pebbleLogger forwards pebble's log lines to slog.
type pebbleLogger struct{ l *slog.Logger }

func (p pebbleLogger) Infof(format string, args ...any) {
	if p.l.Enabled(context.Background(), slog.LevelDebug) {
		p.l.Debug(fmt.Sprintf(format, args...), "component", "pebble")
	}
}

func (p pebbleLogger) Errorf(format string, args ...any) {
	p.l.Error(fmt.Sprintf(format, args...), "component", "pebble")
}

// Fatalf must not return: pebble calls it when its commit pipeline is broken
// (for example a failed WAL fsync) and continues as if the process were gone.
// Acknowledging any further write would break the durability promise, so we
// exit like pebble's default logger does.
func (p pebbleLogger) Fatalf(format string, args ...any) {
	p.l.Error(fmt.Sprintf(format, args...), "component", "pebble", "fatal", true)
	os.Exit(1)
}
