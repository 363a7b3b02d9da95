package store

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// Power-loss tests: Pebble runs on an in-memory filesystem whose crash
// clones keep only what was fsynced (plus a random share of the rest), which
// a kill -9 cannot show (the page cache survives it).

// openCrashable opens the store in "db" on fs, with a small memtable so that
// a few hundred writes rotate the WAL several times.
func openCrashable(t *testing.T, fs vfs.FS) *Pebble {
	t.Helper()
	p, err := OpenPebble("db", Options{fs: fs, SnapshotDir: t.TempDir(), MemTableSize: 256 << 10, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// durablePrefix reopens a crash clone and returns its revision, failing
// unless exactly the documents of revisions 1..rev are there: a crash keeps
// a prefix of the revisions, never one without those before it.
func durablePrefix(t *testing.T, fs vfs.FS, n int) int {
	t.Helper()
	p := openCrashable(t, fs)
	defer p.Close()
	rev := int(p.Revision())
	for i := 1; i <= n; i++ {
		_, err := p.Get("doc", fmt.Sprint(i))
		if (err == nil) != (i <= rev) {
			t.Fatalf("revision %d after the crash, but document %d present: %v", rev, i, err == nil)
		}
	}
	return rev
}

// ApplyNoSync then Sync: every revision committed before a Sync survives a
// power cut after it, across WAL rotations; revisions after the last Sync
// may be lost, but only from the newest down.
func TestPowerLossKeepsSyncedRevisions(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	const n = 400
	for trial := range 8 {
		fs := vfs.NewCrashableMem()
		p := openCrashable(t, fs)
		synced := 0
		for i := 1; i <= n; i++ {
			body := make([]byte, 2<<10)
			if i%97 == 0 {
				body = make([]byte, 200<<10) // larger than half a memtable: its own flushable batch
			}
			if _, _, err := p.ApplyNoSync(Mutation{Kind: "doc", ID: fmt.Sprint(i), Body: body}); err != nil {
				t.Fatal(err)
			}
			if rng.IntN(40) == 0 {
				if err := p.Sync(); err != nil {
					t.Fatal(err)
				}
				synced = i
			}
		}
		mid := fs.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: rng.IntN(100), RNG: rng})
		if err := p.Sync(); err != nil {
			t.Fatal(err)
		}
		end := fs.CrashClone(vfs.CrashCloneCfg{})
		if err := p.Close(); err != nil {
			t.Fatal(err)
		}
		if r := durablePrefix(t, mid, n); r < synced {
			t.Fatalf("trial %d: a power cut kept revision %d, below the last Sync's %d", trial, r, synced)
		}
		if r := durablePrefix(t, end, n); r != n {
			t.Fatalf("trial %d: after the final Sync a power cut kept revision %d of %d", trial, r, n)
		}
	}
}

// The same writes without any Sync lose revisions to a power cut, so the
// test above can tell a Sync that syncs from one that does not; Apply
// (which syncs) loses none.
func TestPowerLossWithoutSyncLoses(t *testing.T) {
	for _, synced := range []bool{false, true} {
		fs := vfs.NewCrashableMem()
		p := openCrashable(t, fs)
		apply := p.ApplyNoSync
		if synced {
			apply = p.Apply
		}
		for i := 1; i <= 200; i++ {
			if _, _, err := apply(Mutation{Kind: "doc", ID: fmt.Sprint(i), Body: make([]byte, 2<<10)}); err != nil {
				t.Fatal(err)
			}
		}
		cut := fs.CrashClone(vfs.CrashCloneCfg{})
		p.Close()
		r := durablePrefix(t, cut, 200)
		if synced && r != 200 {
			t.Fatalf("Apply: a power cut kept revision %d of 200", r)
		}
		if !synced && r == 200 {
			t.Fatal("ApplyNoSync without Sync: nothing lost to a power cut; the filesystem does not drop unsynced data")
		}
	}
}
