package store

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// crashChildEnv and snapCrashChildEnv make the test binary act as a crash
// test's writer process.
const (
	crashChildEnv     = "SNAPGATE_STORE_CRASH_DIR"
	snapCrashChildEnv = "SNAPGATE_STORE_SNAPCRASH_DIR"
)

const (
	crashWriters   = 4
	crashChildCap  = 1_000_000        // writes per writer; the parent kills long before
	crashChildLife = 60 * time.Second // the child gives up on its own if never killed
	crashKillAfter = 300              // acknowledgements the parent waits for before kill -9
)

func TestMain(m *testing.M) {
	if dir := os.Getenv(crashChildEnv); dir != "" {
		os.Exit(runCrashChild(dir))
	}
	if dir := os.Getenv(snapCrashChildEnv); dir != "" {
		os.Exit(runSnapCrashChild(dir))
	}
	if dir := os.Getenv(stageCrashChildEnv); dir != "" {
		os.Exit(runStageCrashChild(dir))
	}
	if dir := os.Getenv(metaCrashChildEnv); dir != "" {
		os.Exit(runMetaCrashChild(dir))
	}
	os.Exit(m.Run())
}

// runCrashChild writes as fast as it can from several goroutines and prints a
// line for every acknowledged write. Each Apply creates one document that is
// never touched again, so after a crash its presence and revision are exact
// checks. Writer 0 also bumps a shared counter by CAS in the same Apply;
// writer 1 puts a metadata entry (not fsynced) before each of its Applies,
// which the Apply's fsync makes durable; writer 2 uses ApplyNoSync and
// acknowledges after a Sync, as ctrl does.
func runCrashChild(dir string) int {
	s, err := OpenPebble(dir, Options{Logger: quietLogger()})
	if err != nil {
		fmt.Fprintln(os.Stderr, "child open:", err)
		return 2
	}
	deadline := time.Now().Add(crashChildLife)
	var out sync.Mutex
	var wg sync.WaitGroup
	for w := 0; w < crashWriters; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var counter uint64
			for n := 1; n <= crashChildCap && time.Now().Before(deadline); n++ {
				id := fmt.Sprintf("w%d-%d", w, n)
				if w == 1 {
					if err := s.PutMeta("crash/"+id, []byte(id)); err != nil {
						fmt.Fprintln(os.Stderr, "child put meta:", err)
						return
					}
				}
				muts := []Mutation{put("crash", id, id, ver(0))}
				if w == 0 {
					muts = append(muts, put("counter", "c", strconv.Itoa(n), ver(counter)))
				}
				apply := s.Apply
				if w == 2 {
					// ctrl's pattern: commit, then a Sync outside any lock
					// before the acknowledgement.
					apply = s.ApplyNoSync
				}
				rev, _, err := apply(muts...)
				if err == nil && w == 2 {
					err = s.Sync()
				}
				if err != nil {
					fmt.Fprintln(os.Stderr, "child apply:", err)
					return
				}
				if w == 0 {
					counter++
				}
				var snap string
				if n%5 == 0 {
					if err := s.PutSnapshot(rev, []byte(id), 1_000_000); err != nil {
						fmt.Fprintln(os.Stderr, "child put snapshot:", err)
						return
					}
					snap = " snap"
				}
				out.Lock()
				fmt.Fprintf(os.Stdout, "ack %d %s%s\n", rev, id, snap)
				out.Unlock()
			}
		}()
	}
	wg.Wait()
	_ = s.Close()
	return 0
}

type ack struct {
	rev  uint64
	id   string
	snap bool
}

func parseAck(line string) (ack, error) {
	f := strings.Fields(line)
	if len(f) < 3 || f[0] != "ack" {
		return ack{}, fmt.Errorf("malformed child line %q", line)
	}
	rev, err := strconv.ParseUint(f[1], 10, 64)
	if err != nil {
		return ack{}, fmt.Errorf("child line %q: %w", line, err)
	}
	return ack{rev: rev, id: f[2], snap: len(f) == 4 && f[3] == "snap"}, nil
}

// killChildAfter runs the test binary as a writer child (env=dir), reads
// its acknowledgement lines, kills it with SIGKILL after `after` of them and
// returns every line it wrote before dying.
func killChildAfter(t *testing.T, env, dir string, after int) []string {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), env+"="+dir)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 1024)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()

	var acks []string
	timeout := time.After(30 * time.Second)
	for len(acks) < after {
		select {
		case line, ok := <-lines:
			if !ok {
				_ = cmd.Wait()
				t.Fatalf("child exited before kill after %d acks; stderr: %s", len(acks), stderr.String())
			}
			acks = append(acks, line)
		case <-timeout:
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			t.Fatalf("only %d acks in 30s; stderr: %s", len(acks), stderr.String())
		}
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatalf("kill -9 child: %v", err)
	}
	// Lines already written to the pipe were acknowledged before the kill;
	// none is cut, since each is one write(2) under PIPE_BUF.
	for line := range lines {
		acks = append(acks, line)
	}
	err = cmd.Wait()
	var exitErr *exec.ExitError
	if !errors.As(err, &exitErr) || exitErr.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("child was not killed by SIGKILL: %v; stderr: %s", err, stderr.String())
	}
	return acks
}

func TestCrashKeepsAcknowledgedWrites(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a child process")
	}
	dir := t.TempDir()
	var acks []ack
	for _, line := range killChildAfter(t, crashChildEnv, dir, crashKillAfter) {
		a, err := parseAck(line)
		if err != nil {
			t.Fatal(err)
		}
		acks = append(acks, a)
	}

	s := openTest(t, dir)
	defer s.Close()
	var maxRev, counterAcks uint64
	for _, a := range acks {
		maxRev = max(maxRev, a.rev)
		if strings.HasPrefix(a.id, "w0-") {
			counterAcks++
		}
		d, err := s.Get("crash", a.id)
		if err != nil {
			t.Fatalf("acknowledged write %s (rev %d) lost: %v", a.id, a.rev, err)
		}
		if d.Version != a.rev || d.Revision != a.rev || string(d.Body) != a.id {
			t.Fatalf("acknowledged write %s (rev %d) came back as %+v", a.id, a.rev, d)
		}
		if a.snap {
			if b, err := s.Snapshot(a.rev); err != nil || string(b) != a.id {
				t.Fatalf("acknowledged snapshot %d lost: %q, %v", a.rev, b, err)
			}
		}
		if strings.HasPrefix(a.id, "w1-") {
			if m, err := s.GetMeta("crash/" + a.id); err != nil || string(m) != a.id {
				t.Fatalf("metadata put before acknowledged write %s lost: %q, %v", a.id, m, err)
			}
		}
	}
	rev := s.Revision()
	if rev < maxRev {
		t.Fatalf("revision after crash %d < highest acknowledged %d", rev, maxRev)
	}
	if c, err := s.Get("counter", "c"); err != nil || c.Version < counterAcks {
		t.Fatalf("counter after crash = %+v, %v; want version >= %d", c, err, counterAcks)
	}
	// The WAL replays a prefix: every revision 1..rev is present exactly once
	// (each Apply created one crash document).
	loadRev, docs, err := s.Load()
	if err != nil {
		t.Fatal(err)
	}
	seen := make(map[uint64]bool, len(docs))
	for _, d := range docs {
		if d.Kind != "crash" {
			continue
		}
		if d.Revision > loadRev || seen[d.Revision] {
			t.Fatalf("doc %s has revision %d (store revision %d, duplicate %v)", d.ID, d.Revision, loadRev, seen[d.Revision])
		}
		seen[d.Revision] = true
	}
	if uint64(len(seen)) != loadRev {
		t.Fatalf("%d crash documents for revisions 1..%d: a hole in the recovered history", len(seen), loadRev)
	}
	// The recovered store keeps working from where it stopped.
	if r, _ := mustApply(t, s, put("crash", "after", "x", ver(0))); r != rev+1 {
		t.Fatalf("first apply after recovery: rev %d, want %d", r, rev+1)
	}
	t.Logf("%d acknowledged writes (max rev %d), recovered revision %d", len(acks), maxRev, rev)
}

const (
	snapCrashKeep = 3
	snapCrashSize = 256 << 10
)

// runSnapCrashChild stores snapshots of snapCrashSize bytes with a history of
// snapCrashKeep, continuing after the newest stored version, and prints
// "snap <version>" once each PutSnapshot has returned.
func runSnapCrashChild(dir string) int {
	s, err := OpenPebble(dir, Options{Logger: quietLogger()})
	if err != nil {
		fmt.Fprintln(os.Stderr, "child open:", err)
		return 2
	}
	v, _, err := s.LatestSnapshot()
	if err != nil && !errors.Is(err, ErrNotFound) {
		fmt.Fprintln(os.Stderr, "child latest snapshot:", err)
		return 2
	}
	for deadline := time.Now().Add(crashChildLife); time.Now().Before(deadline); {
		v++
		if err := s.PutSnapshot(v, snapContent(v, snapCrashSize), snapCrashKeep); err != nil {
			fmt.Fprintln(os.Stderr, "child put snapshot:", err)
			return 2
		}
		fmt.Fprintf(os.Stdout, "snap %d\n", v)
	}
	_ = s.Close()
	return 0
}

// TestCrashSnapshotFiles kills a process storing snapshot files at
// arbitrary points, several times over the same directory: after each
// crash the newest acknowledged version is there with its exact bytes, every
// stored version is intact, and nothing but the recorded files is left.
func TestCrashSnapshotFiles(t *testing.T) {
	if testing.Short() {
		t.Skip("starts child processes")
	}
	dir := t.TempDir()
	for round := 0; round < 3; round++ {
		lines := killChildAfter(t, snapCrashChildEnv, dir, 10+7*round)
		var acked uint64
		for _, line := range lines {
			if _, err := fmt.Sscanf(line, "snap %d", &acked); err != nil {
				t.Fatalf("child line %q: %v", line, err)
			}
		}
		s := openTest(t, dir)
		recs, err := s.snapshotRecords()
		if err != nil {
			t.Fatal(err)
		}
		var stored []uint64
		for _, e := range recs {
			stored = append(stored, e.version)
		}
		// The put in flight at the kill may have committed: acked+1 may be
		// the newest, and then acked-2 has been pruned.
		newest := stored[len(stored)-1]
		if (newest != acked && newest != acked+1) || len(stored) != snapCrashKeep || stored[0] != newest-snapCrashKeep+1 {
			t.Fatalf("round %d: acknowledged up to v%d, stored %v", round, acked, stored)
		}
		wantSnapshots(t, s, stored...)
		for _, v := range stored {
			if got, err := s.Snapshot(v); err != nil || !bytes.Equal(got, snapContent(v, snapCrashSize)) {
				t.Fatalf("round %d: v%d came back as %d bytes, %v", round, v, len(got), err)
			}
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		t.Logf("round %d: killed after v%d acknowledged; recovered %v", round, acked, stored)
	}
}

// stageCrashChildEnv makes the test binary stage a snapshot and wait to be
// killed before committing it.
const stageCrashChildEnv = "SNAPGATE_STORE_STAGECRASH_DIR"

// runStageCrashChild stores versions 1-3, stages version 4 and prints
// "staged 4", then waits without committing it.
func runStageCrashChild(dir string) int {
	s, err := OpenPebble(dir, Options{Logger: quietLogger()})
	if err != nil {
		fmt.Fprintln(os.Stderr, "child open:", err)
		return 2
	}
	for v := uint64(1); v <= 3; v++ {
		if err := s.PutSnapshot(v, snapContent(v, snapCrashSize), snapCrashKeep); err != nil {
			fmt.Fprintln(os.Stderr, "child put snapshot:", err)
			return 2
		}
	}
	if _, err := s.StageSnapshot(4, snapContent(4, snapCrashSize), snapCrashKeep); err != nil {
		fmt.Fprintln(os.Stderr, "child stage snapshot:", err)
		return 2
	}
	fmt.Fprintln(os.Stdout, "staged 4")
	time.Sleep(crashChildLife)
	return 0
}

// TestCrashStagedSnapshot kills a process holding a staged, uncommitted
// version: the next open removes its temp file and the stored history is
// what was committed.
func TestCrashStagedSnapshot(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a child process")
	}
	dir := t.TempDir()
	if lines := killChildAfter(t, stageCrashChildEnv, dir, 1); len(lines) != 1 || lines[0] != "staged 4" {
		t.Fatalf("child wrote %q", lines)
	}
	s, logs := openLogged(t, dir)
	wantSnapshots(t, s, 1, 2, 3)
	for v := uint64(1); v <= 3; v++ {
		wantContent(t, s, v, snapCrashSize)
	}
	if got := snapDirNames(t, s); len(got) != 3 {
		t.Fatalf("files after the crash: %v; want only the three stored versions", got)
	}
	if out := logs.String(); !strings.Contains(out, "removed snapshot file without a record") || !strings.Contains(out, snapTempSuffix) {
		t.Fatalf("open did not report removing the staged temp file:\n%s", out)
	}
}

// metaCrashChildEnv makes the test binary write metadata alone, as ctrl's
// edge status is written between configuration writes.
const metaCrashChildEnv = "SNAPGATE_STORE_METACRASH_DIR"

// runMetaCrashChild puts metadata entries in batches of three, and after
// each batch's SyncMeta prints "ack" and the batch's entries.
func runMetaCrashChild(dir string) int {
	s, err := OpenPebble(dir, Options{Logger: quietLogger()})
	if err != nil {
		fmt.Fprintln(os.Stderr, "child open:", err)
		return 2
	}
	for n := 0; n < crashChildCap; n += 3 {
		line := "ack"
		for i := n; i < n+3; i++ {
			key := "edge/e" + strconv.Itoa(i)
			if err := s.PutMeta(key, []byte(key)); err != nil {
				fmt.Fprintln(os.Stderr, "child put meta:", err)
				return 2
			}
			line += " " + key
		}
		if err := s.SyncMeta(); err != nil {
			fmt.Fprintln(os.Stderr, "child sync meta:", err)
			return 2
		}
		fmt.Fprintln(os.Stdout, line)
		time.Sleep(time.Millisecond)
	}
	return 0
}

// TestCrashKeepsSyncedMeta kills a process that only writes metadata: each
// entry acknowledged after a SyncMeta is there after the restart. Without
// the SyncMeta none were: Pebble holds unsynced log records in the process.
func TestCrashKeepsSyncedMeta(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a child process")
	}
	dir := t.TempDir()
	lines := killChildAfter(t, metaCrashChildEnv, dir, 20)
	s := openTest(t, dir)
	defer s.Close()
	for _, line := range lines {
		for _, key := range strings.Fields(line)[1:] {
			if v, err := s.GetMeta(key); err != nil || string(v) != key {
				t.Fatalf("acknowledged metadata %s lost after kill -9: %q, %v (%d batches acknowledged)", key, v, err, len(lines))
			}
		}
	}
}
