//go:build linux

package loadtest

import (
	"runtime"
	"syscall"
	"testing"
	"time"
)

// fineSleep sets its thread's timer slack to 1 ns: with the kernel's
// default 50 µs, every paced request went out about 55 µs late, and that
// lateness sat inside every latency the bench reports.
func TestFineSleepTightensTimerSlack(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	fineSleep(time.Microsecond)
	slack, _, errno := syscall.RawSyscall(syscall.SYS_PRCTL, prGetTimerSlack, 0, 0)
	if errno != 0 || slack != 1 {
		t.Fatalf("timer slack after fineSleep: %d ns (%v), want 1", slack, errno)
	}
}
