package proxy

import (
	"errors"
	"net"
	"os"
	"reflect"
	"syscall"
	"time"

	"github.com/cloudwego/netpoll"

	"github.com/snapgate/snapgate/edge/netpollx"
)

// Half-closed clients. netpoll takes a client's FIN for a hang-up: once its
// poller has seen it, the connection reports closed and its writer refuses
// to flush, although the socket can still send (the client only shut down
// its sending side, as `nc -N` or a script piping a request does). The
// requests that came before the FIN are still served: OnRequest runs while
// input is buffered, and netpoll closes the fd only after it returns. Their
// answers go out on a duplicate of the fd, off netpoll, taking what
// netpoll's writer holds; the connection closes once they are written, as
// nginx and HAProxy do.

// flush writes what w holds to the client.
func (s *Server) flush(st *connState, w netpoll.Writer) error {
	err := w.Flush()
	if err != nil && st.detached == nil {
		err = st.flushAfterFIN(err, s.cfg.WriteTimeout)
	}
	return err
}

// flushAfterFIN writes what netpoll's writer holds on the client's fd if
// the flush failed because the client shut down its sending side, and
// returns err unchanged otherwise.
func (st *connState) flushAfterFIN(err error, timeout time.Duration) error {
	if !errors.Is(err, netpoll.ErrConnClosed) {
		return err
	}
	out := outputBuffer(st.conn)
	if out == nil {
		return err
	}
	if st.fin == nil {
		nc, ok := afterFIN(st.conn)
		if !ok {
			return err
		}
		st.fin = nc
	}
	out.Flush()
	n := out.Len()
	if n == 0 {
		return nil
	}
	p, err := out.Next(n)
	if err != nil {
		return err
	}
	if err := st.fin.SetWriteDeadline(time.Now().Add(timeout)); err != nil {
		return err
	}
	_, err = st.fin.Write(p)
	out.Release()
	return err
}

// closeFIN closes the duplicate fd of a half-closed client, if any; the
// socket closes with netpoll's own fd after OnRequest returns.
func (st *connState) closeFIN() {
	if st.fin != nil {
		st.fin.Close()
		st.fin = nil
	}
}

// resetClient makes the client connection's close a reset (SO_LINGER 0).
// A body framed by the connection's close (no Content-Length, not
// chunked) that the upstream broke off would otherwise end with the same
// FIN as a whole one, and only the transport's error can tell the client
// it is incomplete (RFC 9112 §6.3, §8); nginx, which re-frames such bodies
// as chunked, can only close an HTTP/1.0 client's connection.
func resetClient(st *connState) {
	if fc, ok := st.conn.(interface{ Fd() int }); ok {
		syscall.SetsockoptLinger(fc.Fd(), syscall.SOL_SOCKET, syscall.SO_LINGER, &syscall.Linger{Onoff: 1, Linger: 0})
	}
}

// afterFIN returns a blocking connection on a duplicate of c's fd if the
// peer's side has ended: a peek reads 0 bytes after its FIN, and after a
// reset netpoll's own read already took (the write then fails, EPIPE).
// Not if this edge closed the connection: the peek would have to wait.
func afterFIN(c netpoll.Connection) (net.Conn, bool) {
	fc, ok := c.(interface{ Fd() int })
	if !ok {
		return nil, false
	}
	fd := fc.Fd()
	var b [1]byte
	if n, _, err := syscall.Recvfrom(fd, b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT); n != 0 || err != nil {
		return nil, false
	}
	// F_DUPFD_CLOEXEC: a fork before a CloseOnExec would inherit it.
	dup, _, errno := syscall.Syscall(syscall.SYS_FCNTL, uintptr(fd), syscall.F_DUPFD_CLOEXEC, 0)
	if errno != 0 {
		return nil, false
	}
	f := os.NewFile(dup, "client")
	nc, err := net.FileConn(f) // takes a duplicate of its own
	f.Close()
	if err != nil {
		return nil, false
	}
	return nc, true
}

// outputBuffer is netpoll's write buffer of c, which its Connection
// interface does not expose; nil if the layout is not the expected one.
func outputBuffer(c netpoll.Connection) *netpoll.LinkBuffer {
	p := netpollx.Field(c, "outputBuffer", reflect.TypeOf((*netpoll.LinkBuffer)(nil)))
	if p == nil {
		return nil
	}
	return *(**netpoll.LinkBuffer)(p)
}
