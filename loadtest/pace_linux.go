//go:build linux

package loadtest

import (
	"encoding/binary"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// fineTimer waits out the last stretch before a request is due on a timerfd
// read through the runtime's network poller.
//
// The runtime's own timers fire from epoll_pwait's timeout, which has
// millisecond resolution, so when the process is idle they are up to 1 ms
// late. nanosleep(2) was precise to the timer slack (~50 µs) but blocked the
// goroutine's thread and P in a system call. With the one or two Ps of a
// pinned load generator those sleeps kept every P busy, nothing ran the
// network poller but sysmon's 10 ms fallback, and responses sat unread:
// measured 2026-11-29, 1000 req/s through an idle edge read p50 15 ms in
// about one run of three (160 µs otherwise). A timerfd fires with the
// hrtimer's precision, no slack, and wakes the goroutine the way a socket
// does, holding no thread or P while it waits.
type fineTimer struct {
	f   *os.File // owns fd; reads go through the runtime poller
	fd  int      // for timerfd_settime (File.Fd would make f blocking)
	buf [8]byte
}

func newFineTimer() (*fineTimer, error) {
	fd, err := unix.TimerfdCreate(unix.CLOCK_MONOTONIC, unix.TFD_NONBLOCK|unix.TFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("loadtest: pacer timerfd: %w", err)
	}
	// A non-blocking descriptor: os registers it with the runtime poller.
	return &fineTimer{f: os.NewFile(uintptr(fd), "pacer-timerfd"), fd: fd}, nil
}

// sleep waits d (> 0).
func (t *fineTimer) sleep(d time.Duration) error {
	spec := unix.ItimerSpec{Value: unix.NsecToTimespec(int64(d))}
	if err := unix.TimerfdSettime(t.fd, 0, &spec, nil); err != nil {
		return fmt.Errorf("loadtest: pacer timerfd: %w", err)
	}
	n, err := t.f.Read(t.buf[:])
	if err != nil {
		return fmt.Errorf("loadtest: pacer timerfd: %w", err)
	}
	if n != len(t.buf) || binary.NativeEndian.Uint64(t.buf[:]) == 0 {
		return fmt.Errorf("loadtest: pacer timerfd: read %d bytes %x, want an expiry count", n, t.buf[:n])
	}
	return nil
}

func (t *fineTimer) close() { t.f.Close() }
