package upstream

import (
	"errors"
	"io"
	"net"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"
)

// ReadBufferSize is each upstream connection's read buffer: it holds a
// whole response head (h1.MaxResponseHead) and bounds how much of a body
// the proxy holds per connection, whatever the body's size.
const ReadBufferSize = 64 << 10

// Conn is one upstream connection. The proxy reads it through Buf;
// Buf[Start:End] holds bytes read but not yet consumed. A Conn belongs to
// one request at a time (between Pool.Get and Put/Discard); a tunnel
// reads and writes it from two goroutines, and Close may come from a
// third (Shutdown).
//
// A connection lives on the Go runtime's poller, not on netpoll: it is
// read only when the proxy asks, so a client slower than the backend
// slows the backend through TCP and a large body never piles up in
// memory, and a response readies the handler waiting for it directly,
// with no netpoll poller goroutine in between (docs/http.md,
// "Transport and memory"). Reads and writes are raw system calls made
// through the connection's RawConn, which parks on the runtime poller
// when the socket would block: the runtime's entersyscall, which
// net.Conn's Read and Write go through, wakes a sleeping sysmon on every
// call at a steady rate.
type Conn struct {
	nc  *net.TCPConn
	raw syscall.RawConn

	pool *Pool

	Buf        []byte
	Start, End int

	closed atomic.Bool
	// idleSince is when Put parked the connection (monotonic ns, the
	// pool's clock), for Options.IdleTimeout.
	idleSince int64

	// The raw calls, bound once, and their arguments and results, so that
	// an exchange allocates nothing. A tunnel reads and writes at once:
	// reads and writes have separate fields.
	readFn, writeFn, sendFn func(fd uintptr) bool
	quietFn                 func(fd uintptr)
	sending                 bool // rawSend has the write to do
	rp                      []byte
	rn                      int
	rerr                    syscall.Errno
	wp                      []byte
	werr                    syscall.Errno
	quiet                   bool // Quiet's last answer, which Send takes
	peek                    [1]byte
}

// dial connects to addr within timeout.
func dial(addr string, timeout time.Duration, p *Pool) (*Conn, error) {
	nc, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return nil, err
	}
	tc := nc.(*net.TCPConn)
	raw, err := tc.SyscallConn()
	if err != nil {
		nc.Close()
		return nil, err
	}
	c := &Conn{nc: tc, raw: raw, pool: p, Buf: make([]byte, ReadBufferSize)}
	c.readFn, c.writeFn, c.sendFn, c.quietFn = c.rawRead, c.rawWrite, c.rawSend, c.rawQuiet
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
	if err := c.makeRoom(); err != nil {
		return 0, err
	}
	n, err := c.Read(c.Buf[c.End:], timeout)
	c.End += n
	return n, err
}

// makeRoom moves the unconsumed bytes to the front of Buf when its tail is
// full; ErrBufferFull when nothing is consumed.
func (c *Conn) makeRoom() error {
	if c.End == len(c.Buf) {
		if c.Start == 0 {
			return ErrBufferFull
		}
		c.End = copy(c.Buf, c.Buf[c.Start:c.End])
		c.Start = 0
	} else if c.Start == c.End {
		c.Start, c.End = 0, 0
	}
	return nil
}

// Send writes p, then waits at most timeout for the answer and reads its
// first bytes into Buf, as Fill does. On a connection Quiet has just
// found empty (Pool.Get's check of a reused one), it is Write then Fill
// less the read Fill would try first, which right after a request finds
// nothing (the backend has not run yet): the runtime poller's readiness
// is reset before the write, so the answer's arrival is seen without it.
// Bytes that were in the socket before that reset would not be, which is
// why it takes Quiet's word first; on any other connection (a new one, on
// which a backend may have spoken first) it is Write then Fill. What the
// socket does not take at once is written with Write (within wt) before
// the wait. wrote reports whether p went out whole; n and err are then
// the read's.
func (c *Conn) Send(p []byte, wt, timeout time.Duration) (wrote bool, n int, err error) {
	if !c.quiet {
		if err := c.Write(p, wt); err != nil {
			return false, 0, err
		}
		n, err := c.Fill(timeout)
		return true, n, err
	}
	c.quiet = false
	if err := c.makeRoom(); err != nil {
		return false, 0, err
	}
	if err := c.nc.SetReadDeadline(deadline(timeout)); err != nil {
		return false, 0, err
	}
	c.wp, c.werr = p, 0
	c.rp = c.Buf[c.End:]
	c.sending = true
	err = c.raw.Read(c.sendFn)
	c.rp = nil
	rest := c.wp
	c.wp = nil
	switch {
	case c.werr != 0:
		return false, 0, c.werr
	case c.sending:
		// The deadline or a Close came before the write.
		c.sending = false
		return false, 0, err
	case len(rest) > 0:
		if err := c.Write(rest, wt); err != nil {
			return false, 0, err
		}
		n, err := c.Fill(timeout)
		return true, n, err
	}
	n, err = c.readResult(err)
	c.End += n
	return true, n, err
}

// rawSend is Send's callback: first the write, then the read once the
// poller reports the answer. A write the socket does not take whole ends
// the call, so that Send finishes it with Write.
func (c *Conn) rawSend(fd uintptr) bool {
	if !c.sending {
		return c.rawRead(fd)
	}
	c.sending = false
	return !c.rawWrite(fd) || c.werr != 0 || len(c.wp) > 0
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
// limit). It returns n > 0 or an error; the peer's FIN is io.EOF. The
// upgrade tunnel uses it once Buf is drained.
func (c *Conn) Read(p []byte, timeout time.Duration) (int, error) {
	if len(p) == 0 {
		return 0, io.ErrShortBuffer
	}
	if err := c.nc.SetReadDeadline(deadline(timeout)); err != nil {
		return 0, err
	}
	c.rp = p
	return c.readResult(c.raw.Read(c.readFn))
}

// readResult is what a raw read that ended with err returned.
func (c *Conn) readResult(err error) (int, error) {
	c.rp = nil
	switch {
	case err != nil:
		return 0, err
	case c.rerr != 0:
		return 0, c.rerr
	case c.rn == 0:
		return 0, io.EOF
	}
	return c.rn, nil
}

// rawRead is one recv into c.rp; false (wait for the poller) when the
// socket has nothing yet.
func (c *Conn) rawRead(fd uintptr) bool {
	for {
		n, _, errno := syscall.RawSyscall6(syscall.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&c.rp[0])), uintptr(len(c.rp)), 0, 0, 0)
		switch errno {
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false
		case 0:
			c.rn, c.rerr = int(n), 0
		default:
			c.rn, c.rerr = 0, errno
		}
		return true
	}
}

// Write writes p whole within timeout (0 = no limit).
func (c *Conn) Write(p []byte, timeout time.Duration) error {
	if len(p) == 0 {
		return nil
	}
	if err := c.nc.SetWriteDeadline(deadline(timeout)); err != nil {
		return err
	}
	c.wp, c.werr = p, 0
	err := c.raw.Write(c.writeFn)
	c.wp = nil
	switch {
	case err != nil:
		return err
	case c.werr != 0:
		return c.werr
	}
	return nil
}

// rawWrite sends what is left of c.wp; false (wait for the poller) when
// the socket buffer is full. MSG_NOSIGNAL: a peer's reset is an EPIPE
// error, not a signal.
func (c *Conn) rawWrite(fd uintptr) bool {
	for len(c.wp) > 0 {
		n, _, errno := syscall.RawSyscall6(syscall.SYS_SENDTO, fd, uintptr(unsafe.Pointer(&c.wp[0])), uintptr(len(c.wp)),
			syscall.MSG_NOSIGNAL, 0, 0)
		switch errno {
		case 0:
			c.wp = c.wp[n:]
		case syscall.EINTR:
		case syscall.EAGAIN:
			return false
		default:
			c.werr = errno
			return true
		}
	}
	return true
}

// deadline is the absolute deadline for a wait of timeout (0 = none).
func deadline(timeout time.Duration) time.Time {
	if timeout <= 0 {
		return time.Time{}
	}
	return time.Now().Add(timeout)
}

// CloseWrite shuts down the sending side (a tunnel passes a client's FIN
// on).
func (c *Conn) CloseWrite() error { return c.nc.CloseWrite() }

// Close closes the connection; only the first call counts. A Read or
// Write waiting on another goroutine returns with an error.
func (c *Conn) Close() error {
	if !c.closed.CompareAndSwap(false, true) {
		return nil
	}
	if c.pool != nil {
		c.pool.open.Add(-1)
	}
	return c.nc.Close()
}

// usable reports whether the connection can carry another exchange as far
// as this process knows: not closed, no bytes left unconsumed (an
// unsolicited answer would desync the next exchange). A hang-up by the
// peer needs Quiet.
func (c *Conn) usable() bool { return !c.closed.Load() && c.Buffered() == 0 }

// Quiet reports whether the socket has neither a FIN nor bytes waiting in
// the kernel: a one-byte recv with MSG_PEEK|MSG_DONTWAIT would block. A
// yes is what lets the next Send skip its first read; Pool.Get asks
// before it hands out a reused connection, so the answer is fresh.
func (c *Conn) Quiet() bool {
	if c.closed.Load() {
		return false
	}
	c.quiet = false
	if err := c.raw.Control(c.quietFn); err != nil {
		return false
	}
	return c.quiet
}

func (c *Conn) rawQuiet(fd uintptr) {
	_, _, errno := syscall.RawSyscall6(syscall.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&c.peek[0])), 1,
		syscall.MSG_PEEK|syscall.MSG_DONTWAIT, 0, 0)
	c.quiet = errno == syscall.EAGAIN
}

// RemoteAddr is the endpoint's address.
func (c *Conn) RemoteAddr() net.Addr { return c.nc.RemoteAddr() }
