package store

import (
	"encoding/binary"
	"fmt"
	"syscall"
	"testing"
	"time"
)

// BenchmarkPutSnapshot12MB stores 12 MB snapshots (the size of a
// 100,000-route snapshot) with ctrl's default history of 10 and reports the
// process CPU per put in cpu-ms/op, including the background work the puts
// cause: after the loop it flushes Pebble and waits for its compactions, so
// work deferred past the loop is counted too. ns/op is only the inline part,
// split into stage-ms/op (what ctrl does before publishing a version) and
// commit-ms/op (the fsyncs and the record, after it).
func BenchmarkPutSnapshot12MB(b *testing.B) {
	s := openTest(b, b.TempDir())
	defer s.Close()
	data := snapshotLike(12 << 20)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	start := processCPU(b)
	var v uint64
	var stage, commit time.Duration
	for b.Loop() {
		v++
		// Every version differs, as built snapshots do (version field).
		binary.BigEndian.PutUint64(data[len(data)-8:], v)
		t0 := time.Now()
		st, err := s.StageSnapshot(v, data, 10)
		if err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		if err := st.Commit(); err != nil {
			b.Fatal(err)
		}
		stage, commit = stage+t1.Sub(t0), commit+time.Since(t1)
	}
	settle(b, s)
	b.ReportMetric(float64(processCPU(b)-start)/1e6/float64(b.N), "cpu-ms/op")
	b.ReportMetric(float64(stage.Milliseconds())/float64(b.N), "stage-ms/op")
	b.ReportMetric(float64(commit.Milliseconds())/float64(b.N), "commit-ms/op")
}

// snapshotLike returns n bytes that compress about as well as a snapshot:
// repetitive route records with distinct numbers in them.
func snapshotLike(n int) []byte {
	out := make([]byte, 0, n+128)
	for i := 0; len(out) < n; i++ {
		out = fmt.Appendf(out, "\x00\x00\x01\x0croute-%07d\x00api-%d.example.com\x00/v1/items/%d/\x00cluster-%d\x00\x10\x27\x00\x00",
			i, i%977, i, i%331)
	}
	return out[:n]
}

// settle flushes Pebble's memtables and waits (bounded) until no compaction
// runs, so the CPU they take lands inside the measurement.
func settle(b *testing.B, s *Pebble) {
	b.Helper()
	if err := s.db.Flush(); err != nil {
		b.Fatal(err)
	}
	idle := 0
	for deadline := time.Now().Add(30 * time.Second); idle < 5; {
		if time.Now().After(deadline) {
			b.Fatal("pebble compactions did not settle in 30s")
		}
		if m := s.db.Metrics(); m.Compact.NumInProgress == 0 && m.Flush.NumInProgress == 0 {
			idle++
		} else {
			idle = 0
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// processCPU is the CPU time (user + system) this process has used, in ns.
func processCPU(b *testing.B) int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}
