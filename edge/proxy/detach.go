package proxy

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"reflect"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/cloudwego/netpoll"

	"github.com/snapgate/snapgate/edge/netpollx"
	"github.com/snapgate/snapgate/edge/routing"
	"github.com/snapgate/snapgate/edge/upstream"
)

// Large uploads leave netpoll. netpoll reads a connection's input eagerly
// with no backpressure, so a client faster than its backend would fill the
// connection's LinkBuffer with the whole body. When a request body
// streams, the connection is detached from netpoll once the head is
// parsed and the rest of the exchange runs on its own goroutine with
// blocking reads on the runtime poller, where TCP flow control holds the
// client back. The connection is closed after that response: it is a rare
// path, and it cannot return to netpoll.
//
// Ordering (netpoll v0.7.2, connection_onevent.go): Detach inside
// OnRequest only marks the connection; after OnRequest returns, netpoll's
// task goroutine removes the fd from epoll (EPOLL_CTL_DEL) and runs the
// close callbacks, ours first and netpoll's finalizer (which frees the
// input buffer) last. A poller may still be inside its event batch for the
// fd, about to read into the input buffer. Our callback therefore first
// takes the fd operator away from the poller (the same CAS 1→0 of its
// state that netpoll's own operator.Free does, which makes the poller's
// do() fail), then copies what is still buffered, and only then starts
// reading the fd itself. The operator and its state are not exported, so
// they are found by reflection (netpollx); if the layout is not the
// expected one, detaching is disabled: uploads stay buffered as before,
// and no Upgrade offer goes upstream.

// clientReader is what the streaming body path needs from the client
// side: netpoll.Reader satisfies it, and so does blockingReader.
type clientReader interface {
	Len() int
	Peek(n int) ([]byte, error)
	Next(n int) ([]byte, error)
	Skip(n int) error
	Release() error
}

// opState is the offset of netpoll's FDOperator.state, and whether it is
// there with the expected type.
var opStateOffset, opStateOK = func() (uintptr, bool) {
	f, ok := reflect.TypeOf(netpoll.FDOperator{}).FieldByName("state")
	return f.Offset, ok && f.Type.Kind() == reflect.Int32
}()

// detacher is netpoll's connection type's Detach, which its Connection
// interface does not list.
type detacher interface{ Detach() error }

// detachSupported reports whether connections like c can leave netpoll.
func detachSupported(c netpoll.Connection) bool {
	if _, ok := c.(detacher); !ok {
		return false
	}
	if _, ok := c.(interface{ Fd() int }); !ok {
		return false
	}
	return opStateOK && netpollx.Operator(c) != nil
}

// quiesce stops netpoll's poller from touching c's input buffer again. It
// must run after the fd left epoll (in a close callback after Detach), so
// that the only poller work left is an event already fetched.
func quiesce(c netpoll.Connection) error {
	op := netpollx.Operator(c)
	if op == nil || !opStateOK {
		return errors.New("netpoll connection layout not recognised")
	}
	state := (*int32)(unsafe.Add(unsafe.Pointer(op), opStateOffset))
	// 1 = idle, 2 = a poller or Release is using it, 0 = unused. A poller
	// holds it for one non-blocking readv, so this spins briefly.
	for i := 0; ; i++ {
		if atomic.CompareAndSwapInt32(state, 1, 0) || atomic.LoadInt32(state) == 0 {
			return nil
		}
		if i > 1<<20 {
			return errors.New("netpoll poller did not release the connection")
		}
		runtime.Gosched()
	}
}

// detachedExchange is what a detached connection carries into its own
// goroutine: a streamed-body exchange to forward, or a tunnel.
type detachedExchange struct {
	tab    *routing.Table
	key    routing.PickKey
	tunnel *upstream.Conn // the upstream side of a relayed 101
	pool   *upstream.Pool // tunnel's, where it counts as in flight
	// linger: the answer (a 413) is out; only the lingering close is left.
	linger bool

	// What Shutdown closes to cut the exchange off (Close): the client
	// connection, and the upstream connection an upload's exchange is
	// using, whose waits (for a response head, for a backend to take the
	// body) closing the client alone would not end.
	mu  sync.Mutex
	nc  net.Conn
	up  *upstream.Conn
	cut bool
}

// Close cuts the exchange off: Shutdown's context ended.
func (dx *detachedExchange) Close() error {
	dx.mu.Lock()
	dx.cut = true
	up := dx.up
	dx.mu.Unlock()
	if up != nil {
		up.Close()
	}
	return dx.nc.Close()
}

// using records the upstream connection the exchange uses now (nil:
// none); one that arrives after a cut-off is closed at once.
func (dx *detachedExchange) using(u *upstream.Conn) {
	dx.mu.Lock()
	dx.up = u
	cut := dx.cut
	dx.mu.Unlock()
	if cut && u != nil {
		u.Close()
	}
}

// endTunnel closes the upstream side of a tunnel and ends its count.
func (dx *detachedExchange) endTunnel() {
	dx.tunnel.Close()
	dx.pool.End()
}

// resumeDetached runs in the close callback of a connection Detach'ed in
// serveOne: it takes the fd and the buffered input from netpoll and
// finishes the exchange on a new goroutine.
func (s *Server) resumeDetached(st *connState, c netpoll.Connection) {
	dx := st.detached
	abandon := func(err error) {
		s.cfg.Logger.Warn("detaching client connection failed", "client", string(st.clientIP), "err", err)
		if dx.tunnel != nil {
			dx.endTunnel()
		}
		dx.tab.Release()
		s.metrics.ConnClosed()
		s.detachWG.Done()
	}
	fail := func(err error) {
		if fc, ok := c.(interface{ Fd() int }); ok {
			syscall.Close(fc.Fd())
		}
		abandon(err)
	}
	if err := quiesce(c); err != nil {
		fail(err)
		return
	}
	var left []byte
	r := c.Reader()
	if n := r.Len(); n > 0 {
		p, err := r.Next(n)
		if err != nil {
			fail(fmt.Errorf("read buffered input: %w", err))
			return
		}
		left = make([]byte, max(n, detachedBufSize))
		left = left[:copy(left, p)]
	}
	fc, ok := c.(interface{ Fd() int })
	if !ok {
		fail(errors.New("connection has no fd"))
		return
	}
	// netpoll leaves a detached fd open; FileConn dups it onto the runtime
	// poller and the original is closed here.
	f := os.NewFile(uintptr(fc.Fd()), "client")
	nc, err := net.FileConn(f)
	f.Close()
	if err != nil {
		abandon(err) // f.Close closed the fd
		return
	}
	dx.nc = nc
	s.mu.Lock()
	s.detachedConns[dx] = struct{}{}
	if s.cutOff {
		dx.Close()
	}
	s.mu.Unlock()
	go s.finishDetached(st, nc, left)
}

// detachedBufSize is the read buffer of a detached connection: the most
// of a streamed body the proxy holds at once on that path.
const detachedBufSize = 64 << 10

func (s *Server) finishDetached(st *connState, nc net.Conn, left []byte) {
	dx := st.detached
	defer func() {
		if dx.tunnel != nil {
			nc.Close() // both directions are finished or failed
		} else {
			lingerClose(nc)
		}
		s.mu.Lock()
		delete(s.detachedConns, dx)
		s.mu.Unlock()
		dx.tab.Release()
		s.metrics.ConnClosed()
		s.detachWG.Done()
	}()
	if dx.tunnel != nil {
		s.tunnel(nc, left, dx.tunnel)
		dx.endTunnel()
		return
	}
	if dx.linger {
		return
	}
	st.cr = newBlockingReader(nc, left, s.cfg.HeaderTimeout)
	st.cw = &connWriter{LinkBuffer: netpoll.NewLinkBuffer(), nc: nc, timeout: s.cfg.WriteTimeout}
	// No tunnel on this path: a request whose body may stream never goes
	// upstream with an Upgrade offer (upgradeRequested), so a 101 is a 502.
	s.forward(st, dx.tab, 0, -1, false, dx.key)
}

// lingerTime bounds lingerClose: how long a client that keeps sending
// after its response may hold the connection.
const lingerTime = 2 * time.Second

// lingerClose closes a client connection whose response is out, as
// nginx's lingering close does: a FIN first, then what the client still
// sends is read and dropped until it closes too or lingerTime passes.
// Closing with unread bytes makes the kernel answer with a reset, which
// can destroy the end of the response before the client read it: a
// client still sending a body the backend answered early (413), or a
// request pipelined behind an upload. Shutdown's cut-off closes nc and
// ends the wait.
func lingerClose(nc net.Conn) {
	tc, ok := nc.(*net.TCPConn)
	if !ok || tc.CloseWrite() != nil {
		nc.Close()
		return
	}
	tc.SetReadDeadline(time.Now().Add(lingerTime))
	io.Copy(io.Discard, tc)
	tc.Close()
}

// blockingReader reads a detached client connection through one buffer
// with blocking, deadline-bound reads. Slices from Peek/Next stay valid
// until Release or the next Peek that needs more bytes.
type blockingReader struct {
	nc         net.Conn
	buf        []byte
	start, end int
	timeout    time.Duration
}

func newBlockingReader(nc net.Conn, left []byte, timeout time.Duration) *blockingReader {
	buf := left[:cap(left)]
	if len(buf) < detachedBufSize {
		buf = make([]byte, detachedBufSize)
	}
	return &blockingReader{nc: nc, buf: buf, end: copy(buf, left), timeout: timeout}
}

func (b *blockingReader) Len() int { return b.end - b.start }

var errPeekTooLarge = errors.New("proxy: detached client read larger than its buffer")

// Peek blocks until n bytes are buffered; each read waits at most timeout.
func (b *blockingReader) Peek(n int) ([]byte, error) {
	if n > len(b.buf) {
		return nil, errPeekTooLarge
	}
	if b.end-b.start >= n {
		return b.buf[b.start : b.start+n], nil
	}
	if len(b.buf)-b.start < n {
		b.end = copy(b.buf, b.buf[b.start:b.end])
		b.start = 0
	}
	for b.end-b.start < n {
		if err := b.nc.SetReadDeadline(time.Now().Add(b.timeout)); err != nil {
			return nil, err
		}
		k, err := b.nc.Read(b.buf[b.end:])
		b.end += k
		if err != nil && b.end-b.start < n {
			return nil, err
		}
	}
	return b.buf[b.start : b.start+n], nil
}

func (b *blockingReader) Next(n int) ([]byte, error) {
	p, err := b.Peek(n)
	if err != nil {
		return nil, err
	}
	b.start += n
	return p, nil
}

func (b *blockingReader) Skip(n int) error {
	_, err := b.Next(n)
	return err
}

// Release forgets consumed bytes; with nothing buffered the next read
// starts at the front of the buffer.
func (b *blockingReader) Release() error {
	if b.start == b.end {
		b.start, b.end = 0, 0
	}
	return nil
}

// connWriter is a netpoll.Writer for a detached client connection: the
// LinkBuffer collects the response and Flush writes it with a blocking,
// deadline-bound write, so the same response code serves both paths.
type connWriter struct {
	*netpoll.LinkBuffer
	nc      net.Conn
	timeout time.Duration
}

func (w *connWriter) Flush() error {
	if err := w.LinkBuffer.Flush(); err != nil {
		return err
	}
	n := w.LinkBuffer.Len()
	if n == 0 {
		return nil
	}
	p, err := w.LinkBuffer.Next(n)
	if err != nil {
		return err
	}
	if err := w.nc.SetWriteDeadline(time.Now().Add(w.timeout)); err != nil {
		return err
	}
	_, err = w.nc.Write(p)
	w.LinkBuffer.Release()
	return err
}
