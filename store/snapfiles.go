package store

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/cespare/xxhash/v2"

	"github.com/snapgate/snapgate/store/durable"
)

// Snapshot bytes live as files in their own directory, not in Pebble: a
// 12 MB value went through Pebble's WAL, a memtable, a flush and
// compactions, which cost ctrl several times the CPU of building the
// snapshot. Pebble keeps one small record per version (snapRecord), written
// only once the file is durable; the record is the truth and a file without
// one is garbage.
//
// A file is named after its version and content hash, so re-storing a
// version with other bytes writes a new file and switches the record to it
// in one commit: no crash leaves a record naming a file whose content it
// does not describe.

const (
	snapFilePrefix = "snap-"
	snapFileSuffix = ".sgs"
	snapTempSuffix = ".tmp"
)

// snapFileName is snap-<20-digit version>-<16 hex digits of xxhash64>.sgs;
// the fixed widths make ls order version order.
func snapFileName(version, hash uint64) string {
	return fmt.Sprintf("%s%020d-%016x%s", snapFilePrefix, version, hash, snapFileSuffix)
}

// parseSnapFileName accepts exactly the names snapFileName produces.
func parseSnapFileName(name string) (version, hash uint64, ok bool) {
	rest, ok := strings.CutPrefix(name, snapFilePrefix)
	if !ok {
		return 0, 0, false
	}
	rest, ok = strings.CutSuffix(rest, snapFileSuffix)
	if !ok || len(rest) != 20+1+16 {
		return 0, 0, false
	}
	version, verr := strconv.ParseUint(rest[:20], 10, 64)
	hash, herr := strconv.ParseUint(rest[21:], 16, 64)
	if verr != nil || herr != nil || snapFileName(version, hash) != name {
		return 0, 0, false
	}
	return version, hash, true
}

// isSnapTempName matches the temporary files writeSnapFile creates.
func isSnapTempName(name string) bool {
	return strings.HasPrefix(name, snapFilePrefix) && strings.HasSuffix(name, snapTempSuffix)
}

// writeSnapFile makes dir/name hold data durably; a temp file a crash
// leaves behind matches isSnapTempName and is removed at the next open.
func writeSnapFile(dir, name string, data []byte) error {
	return durable.WriteFile(dir, name, snapFilePrefix, snapTempSuffix, data)
}

// stageSnapFile writes data to a temp file in dir, not yet durable; its
// name matches isSnapTempName, so one a crash leaves behind is removed at
// the next open.
func stageSnapFile(dir string, data []byte) (*durable.Temp, error) {
	return durable.Stage(dir, snapFilePrefix, snapTempSuffix, data)
}

// readSnapFile reads an open snapshot file and checks it against its
// record, so a short or altered file is an error, never data.
func readSnapFile(f *os.File, rec snapRecord) ([]byte, error) {
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("stat %s: %w", f.Name(), err)
	}
	if uint64(fi.Size()) != rec.size {
		return nil, fmt.Errorf("%s is %d bytes, its record says %d", f.Name(), fi.Size(), rec.size)
	}
	data := make([]byte, rec.size)
	if _, err := io.ReadFull(f, data); err != nil {
		return nil, fmt.Errorf("read %s: %w", f.Name(), err)
	}
	if h := xxhash.Sum64(data); h != rec.hash {
		return nil, fmt.Errorf("%s has xxhash64 %016x, its record says %016x", f.Name(), h, rec.hash)
	}
	return data, nil
}

// removeFile removes path; a file already gone is not an error.
func removeFile(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}
