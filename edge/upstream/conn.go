package upstream

import (
	"errors"
	"io"
	"net"
	"sync/atomic"
	"syscall"
	"time"
)

// ReadBufferSize is each upstream connection's read buffer: it holds a
// whole response head (h1.MaxResponseHead) and bounds how much of a body
// the proxy holds per connection, whatever the body's size.
const ReadBufferSize = 64 << 10

// Conn is one upstream connection on the standard library's net.Conn.
//
// Why not netpoll: netpoll reads everything a peer sends into memory as
// it arrives (deps.md §1), so a fast backend streaming to a slow client
// would be buffered whole in the edge. The runtime poller reads only when
// asked: the proxy reads into Buf, hands it to the client and reads again,
// so a slow client slows the backend through TCP and memory stays at one
// buffer per connection.
//
// Buf[Start:End] holds bytes read but not yet consumed. A Conn belongs to
// one request at a time (between Pool.Get and Put/Discard).
type Conn struct {
	nc   *net.TCPConn
	raw  syscall.RawConn
	pool *Pool

	Buf        []byte
	Start, End int

	closed   atomic.Bool
	idleFrom int64 // unix nanos when parked; read only by the pool
	peekFn   func(fd uintptr) bool
	peekRes  peekResult
	peekBuf  [1]byte
}

type peekResult uint8

const (
	peekAlive peekResult = iota // nothing to read, not closed
	peekData                    // unsolicited bytes waiting
	peekGone                    // EOF or an error
)

func newConn(nc *net.TCPConn, p *Pool) (*Conn, error) {
	raw, err := nc.SyscallConn()
	if err != nil {
		return nil, err
	}
	// Latency over throughput for request/response traffic; Go sets
	// TCP_NODELAY by default, but say it, as the pool relies on it.
	nc.SetNoDelay(true)
	c := &Conn{nc: nc, raw: raw, pool: p, Buf: make([]byte, ReadBufferSize)}
	// Bound once per connection so the liveness check does not allocate.
	c.peekFn = c.peek
	return c, nil
}

// Buffered is the number of bytes read and not yet consumed.
func (c *Conn) Buffered() int { return c.End - c.Start }

// Fill reads more bytes into Buf after End, moving the unconsumed bytes to
// the front first when the tail is full. It waits at most timeout (0 = no
// limit) and returns the number of bytes read. A full buffer (nothing
// consumed, no room) is an error: the caller asked for more than a head
// may hold.
func (c *Conn) Fill(timeout time.Duration) (int, error) {
	if c.End == len(c.Buf) {
		if c.Start == 0 {
			return 0, errBufferFull
		}
		c.End = copy(c.Buf, c.Buf[c.Start:c.End])
		c.Start = 0
	} else if c.Start == c.End {
		c.Start, c.End = 0, 0
	}
	if timeout > 0 {
		c.nc.SetReadDeadline(time.Now().Add(timeout))
	} else {
		c.nc.SetReadDeadline(time.Time{})
	}
	n, err := c.nc.Read(c.Buf[c.End:])
	c.End += n
	if n > 0 {
		return n, nil
	}
	if err == nil {
		err = io.ErrNoProgress
	}
	return 0, err
}

var errBufferFull = errors.New("upstream: read buffer full")

// Consume marks n buffered bytes as used.
func (c *Conn) Consume(n int) {
	c.Start += n
	if c.Start >= c.End {
		c.Start, c.End = 0, 0
	}
}

// Write writes p whole within timeout (0 = no limit).
func (c *Conn) Write(p []byte, timeout time.Duration) error {
	if timeout > 0 {
		c.nc.SetWriteDeadline(time.Now().Add(timeout))
	} else {
		c.nc.SetWriteDeadline(time.Time{})
	}
	_, err := c.nc.Write(p)
	return err
}

// Read reads into p, bypassing Buf, waiting at most timeout (0 = no
// limit). Used by the upgrade tunnel once Buf is drained.
func (c *Conn) Read(p []byte, timeout time.Duration) (int, error) {
	if timeout > 0 {
		c.nc.SetReadDeadline(time.Now().Add(timeout))
	} else {
		c.nc.SetReadDeadline(time.Time{})
	}
	return c.nc.Read(p)
}

// CloseWrite half-closes the connection (tunnels pass a client's FIN on).
func (c *Conn) CloseWrite() error { return c.nc.CloseWrite() }

// Close closes the connection; only the first call counts.
func (c *Conn) Close() error {
	if !c.closed.CompareAndSwap(false, true) {
		return nil
	}
	if c.pool != nil {
		c.pool.open.Add(-1)
	}
	return c.nc.Close()
}

// IsActive reports whether the connection was not closed by us and the
// peer has neither closed it nor sent anything unsolicited. It costs one
// non-blocking recv(MSG_PEEK).
func (c *Conn) IsActive() bool {
	if c.closed.Load() || c.Buffered() > 0 {
		return false
	}
	c.peekRes = peekGone
	if err := c.raw.Read(c.peekFn); err != nil {
		return false
	}
	return c.peekRes == peekAlive
}

// peek runs inside RawConn.Read; returning true means "done, do not wait
// for readability".
func (c *Conn) peek(fd uintptr) bool {
	n, _, err := syscall.Recvfrom(int(fd), c.peekBuf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
	for err == syscall.EINTR {
		n, _, err = syscall.Recvfrom(int(fd), c.peekBuf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
	}
	switch {
	case err == syscall.EAGAIN:
		c.peekRes = peekAlive
	case err == nil && n > 0:
		c.peekRes = peekData
	default:
		c.peekRes = peekGone
	}
	return true
}

// RemoteAddr is the endpoint's address.
func (c *Conn) RemoteAddr() net.Addr { return c.nc.RemoteAddr() }
