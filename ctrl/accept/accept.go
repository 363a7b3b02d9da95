// Package accept tells the Accept errors a listener rides out from the ones
// that end it, for ctrl's accept loops (the admin socket, the edge stream).
package accept

import (
	"errors"
	"net"
	"syscall"
	"time"
)

// Transient reports whether err from Accept passes by itself: a timeout, or
// the process or the system out of file descriptors (EMFILE, ENFILE) or of
// socket buffers (ENOBUFS, ENOMEM), which ends as connections close.
// Ending the accept loop on those would let a burst of connections, or a
// peer opening them on purpose, stop the whole process.
func Transient(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout() ||
		errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) ||
		errors.Is(err, syscall.ENOBUFS) || errors.Is(err, syscall.ENOMEM)
}

// Backoff is the pause after a transient error that followed a pause of
// prev (0 after a successful Accept): 5 ms, doubling up to 1 s, as net/http
// does, so that the loop neither spins nor sleeps long once it passed.
func Backoff(prev time.Duration) time.Duration {
	return min(max(2*prev, 5*time.Millisecond), time.Second)
}
