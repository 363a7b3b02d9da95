package upstream

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/cloudwego/netpoll"

	"github.com/snapgate/snapgate/edge/netpollx"
)

// ReadBufferSize is each upstream connection's read buffer: it holds a
// whole response head (h1.MaxResponseHead) and bounds how much of a body
// the proxy holds per connection, whatever the body's size.
const ReadBufferSize = 64 << 10

// Conn is one upstream connection. The proxy reads it through Buf;
// Buf[Start:End] holds bytes read but not yet consumed. A Conn belongs to
// one request at a time (between Pool.Get and Put/Discard).
//
// A connection starts on netpoll, the event loop that also serves the
// client connections, so that a request and its response wake the same
// poller thread: with the upstream on the runtime's poller, every request
// crossed from netpoll's thread to the runtime's and back (docs/http.md,
// "Performance"). netpoll reads whatever a peer sends as it arrives, with
// no backpressure (deps.md §1), which is fine for a response that fits the
// read buffer but would buffer a large download whole. An exchange that
// expects more than that calls Stream first: the connection then leaves
// netpoll for the runtime poller, where it is read only when the proxy
// asks, so a slow client slows the backend through TCP. Such a connection
// is closed after its exchange instead of being pooled.
type Conn struct {
	np netpoll.Connection // nil once the connection streams
	fd int

	// After Stream: the runtime-poller connection, and what netpoll had
	// already read, which is handed out before nc is read.
	nc   *net.TCPConn
	rest netpoll.Reader

	pool *Pool

	Buf        []byte
	Start, End int

	closed atomic.Bool
	peek   [1]byte // Quiet's buffer, so that it allocates nothing

	// mu orders Stream and Close, the one pair that may run at once:
	// Shutdown closes a detached exchange's connection while the
	// exchange's goroutine may be moving it off netpoll.
	mu sync.Mutex
}

// netpollConn is what Conn needs from netpoll's connection type beyond
// its Connection interface (netpoll v0.7.2 has both methods).
type netpollConn interface {
	netpoll.Connection
	Fd() int
	Detach() error
}

func newConn(c netpoll.Connection, p *Pool) (*Conn, error) {
	nc, ok := c.(netpollConn)
	if !ok {
		return nil, fmt.Errorf("upstream: netpoll connection %T has no Fd/Detach", c)
	}
	return &Conn{np: c, fd: nc.Fd(), pool: p, Buf: make([]byte, ReadBufferSize)}, nil
}

// dial connects to addr on netpoll within timeout.
func dial(addr string, timeout time.Duration, p *Pool) (*Conn, error) {
	deadline := time.Now().Add(timeout)
	c, err := netpoll.DialConnection("tcp", addr, timeout)
	if err != nil {
		// netpoll reports its dial timeout as a plain "i/o timeout" error
		// that no net.Error Timeout() recognises; the clock does.
		if !time.Now().Before(deadline) {
			err = fmt.Errorf("%w: %w", os.ErrDeadlineExceeded, err)
		}
		return nil, err
	}
	conn, err := newConn(c, p)
	if err != nil {
		c.Close()
		return nil, err
	}
	netpollx.AdoptPoller(c)
	return conn, nil
}

// Buffered is the number of bytes read and not yet consumed.
func (c *Conn) Buffered() int { return c.End - c.Start }

// Streaming reports whether the connection left netpoll (Stream).
func (c *Conn) Streaming() bool { return c.np == nil }

// Fill reads more bytes into Buf after End, moving the unconsumed bytes to
// the front first when the tail is full. It waits at most timeout (0 = no
// limit) and returns the number of bytes read. A full buffer (nothing
// consumed, no room) is an error: the caller asked for more than a head
// may hold.
func (c *Conn) Fill(timeout time.Duration) (int, error) {
	if c.End == len(c.Buf) {
		if c.Start == 0 {
			return 0, ErrBufferFull
		}
		c.End = copy(c.Buf, c.Buf[c.Start:c.End])
		c.Start = 0
	} else if c.Start == c.End {
		c.Start, c.End = 0, 0
	}
	n, err := c.Read(c.Buf[c.End:], timeout)
	c.End += n
	return n, err
}

// ErrBufferFull is Fill's error when the buffer holds ReadBufferSize
// unconsumed bytes: a response head that does not fit is not a response
// the proxy can parse.
var ErrBufferFull = errors.New("upstream: read buffer full")

// Consume marks n buffered bytes as used.
func (c *Conn) Consume(n int) {
	c.Start += n
	if c.Start >= c.End {
		c.Start, c.End = 0, 0
	}
}

// Read reads into p, bypassing Buf, waiting at most timeout (0 = no
// limit). It returns n > 0 or an error. The upgrade tunnel uses it (after
// Stream) once Buf is drained.
func (c *Conn) Read(p []byte, timeout time.Duration) (int, error) {
	if len(p) == 0 {
		return 0, io.ErrShortBuffer
	}
	if c.np != nil {
		r := c.np.Reader()
		if r.Len() == 0 {
			// netpoll's Peek is its wait for input; the read timeout bounds
			// this wait only (timer reused per connection).
			c.np.SetReadTimeout(timeout)
			if _, err := r.Peek(1); err != nil {
				return 0, err
			}
		}
		return take(r, p)
	}
	if c.rest != nil {
		n, err := take(c.rest, p)
		if c.rest.Len() == 0 {
			c.rest = nil
		}
		return n, err
	}
	if timeout > 0 {
		c.nc.SetReadDeadline(time.Now().Add(timeout))
	} else {
		c.nc.SetReadDeadline(time.Time{})
	}
	n, err := c.nc.Read(p)
	switch {
	case n > 0:
		return n, nil // an error with data comes again on the next read
	case err == nil:
		err = io.ErrNoProgress
	}
	return 0, err
}

// take copies what r holds, up to len(p), and frees it in r.
func take(r netpoll.Reader, p []byte) (int, error) {
	n := min(r.Len(), len(p))
	b, err := r.Next(n)
	if err != nil {
		return 0, err
	}
	copy(p, b)
	return n, r.Release()
}

// Write writes p whole within timeout (0 = no limit).
func (c *Conn) Write(p []byte, timeout time.Duration) error {
	if c.np != nil {
		c.np.SetWriteTimeout(timeout)
		w := c.np.Writer()
		// Above 4 KiB netpoll keeps a reference to p instead of copying;
		// Flush returns only once p is written (or the conn is dead).
		if _, err := w.WriteBinary(p); err != nil {
			return err
		}
		return w.Flush()
	}
	if timeout > 0 {
		c.nc.SetWriteDeadline(time.Now().Add(timeout))
	} else {
		c.nc.SetWriteDeadline(time.Time{})
	}
	_, err := c.nc.Write(p)
	return err
}

// Stream moves the connection off netpoll before an exchange reads more
// than ReadBufferSize from it (a large or unbounded body, a tunnel), so
// that reads happen only when the proxy asks and TCP holds the backend
// back. What netpoll had already read stays readable first. It is a no-op
// on a connection that already streams. On error the connection is
// closed.
func (c *Conn) Stream() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed.Load() {
		return fmt.Errorf("upstream: leave netpoll: %w", net.ErrClosed)
	}
	if c.np == nil {
		return nil
	}
	np := c.np.(netpollConn)
	c.np = nil
	// Detach takes the fd out of epoll and waits for a poller still
	// reading it (its operator's Free), but leaves the fd open and, when
	// it holds bytes, the input buffer intact.
	if err := np.Detach(); err != nil {
		syscall.Close(c.fd)
		c.markClosed()
		return fmt.Errorf("upstream: leave netpoll: %w", err)
	}
	if r := np.Reader(); r.Len() > 0 {
		c.rest = r
	}
	// FileConn dups the fd onto the runtime poller; the original closes.
	f := os.NewFile(uintptr(c.fd), "upstream")
	nc, err := net.FileConn(f)
	f.Close()
	if err != nil {
		c.rest = nil
		c.markClosed()
		return fmt.Errorf("upstream: leave netpoll: %w", err)
	}
	c.nc = nc.(*net.TCPConn)
	return nil
}

// CloseWrite shuts down the sending side of a streaming connection (a
// tunnel passes a client's FIN on).
func (c *Conn) CloseWrite() error {
	if c.nc == nil {
		return errors.New("upstream: CloseWrite on a connection that is not streaming")
	}
	return c.nc.CloseWrite()
}

// Close closes the connection; only the first call counts. It waits for a
// Stream in progress on another goroutine.
func (c *Conn) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.markClosed() {
		return nil
	}
	if c.np != nil {
		return c.np.Close()
	}
	return c.nc.Close()
}

// markClosed flags the connection closed and uncounts it from its pool;
// false if it already was.
func (c *Conn) markClosed() bool {
	if !c.closed.CompareAndSwap(false, true) {
		return false
	}
	if c.pool != nil {
		c.pool.open.Add(-1)
	}
	return true
}

// IsActive reports whether the connection can carry another exchange: not
// closed by us, not hung up by the peer (netpoll's poller sees that), no
// unsolicited bytes buffered, and still on netpoll (a streamed connection
// is never reused).
func (c *Conn) IsActive() bool {
	return !c.closed.Load() && c.Buffered() == 0 && c.np != nil &&
		c.np.IsActive() && c.np.Reader().Len() == 0
}

// Quiet reports whether the socket has neither a FIN nor bytes waiting in
// the kernel: a one-byte recv with MSG_PEEK|MSG_DONTWAIT would block. It
// sees what netpoll's poller may not have read yet. A raw system call:
// the runtime's entersyscall would wake a sleeping sysmon.
func (c *Conn) Quiet() bool {
	if c.closed.Load() {
		return false
	}
	_, _, errno := syscall.RawSyscall6(syscall.SYS_RECVFROM, uintptr(c.fd), uintptr(unsafe.Pointer(&c.peek[0])), 1,
		syscall.MSG_PEEK|syscall.MSG_DONTWAIT, 0, 0)
	return errno == syscall.EAGAIN
}

// RemoteAddr is the endpoint's address.
func (c *Conn) RemoteAddr() net.Addr {
	if c.np != nil {
		return c.np.RemoteAddr()
	}
	return c.nc.RemoteAddr()
}
