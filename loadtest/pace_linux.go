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
// kernel's timer slack (about 50 µs). It blocks the OS thread, not just the
// goroutine, which is why it is used only for the final fineWindow.
func fineSleep(d time.Duration) {
	ts := syscall.NsecToTimespec(int64(d))
	for {
		var left syscall.Timespec
		if err := syscall.Nanosleep(&ts, &left); err != syscall.EINTR {
			return
		}
		ts = left // interrupted by a signal (Go's preemption uses them): sleep the rest
	}
}
