//go:build linux

package loadtest

import (
	"syscall"
	"time"
)

// fineSleep waits out the last stretch before a request is due with
// nanosleep(2). The Go runtime's own timers fire from epoll_wait, whose
// timeout has millisecond resolution when the process is idle, which made
// the pacer up to 1 ms late at low rates; nanosleep is accurate to the
// thread's timer slack, which it first sets to 1 ns: the default 50 µs made
// every request about 55 µs late, inside every latency measured. It blocks
// the OS thread, not just the goroutine, which is why it is used only for
// the final fineWindow.
// prctl options for the calling thread's timer slack (linux/prctl.h).
const (
	prSetTimerSlack = 29
	prGetTimerSlack = 30
)

func fineSleep(d time.Duration) {
	// Per thread and sticky; cheap next to the sleep it sharpens.
	syscall.RawSyscall(syscall.SYS_PRCTL, prSetTimerSlack, 1, 0)
	ts := syscall.NsecToTimespec(int64(d))
	for {
		var left syscall.Timespec
		if err := syscall.Nanosleep(&ts, &left); err != syscall.EINTR {
			return
		}
		ts = left // interrupted by a signal (Go's preemption uses them): sleep the rest
	}
}
