package netpollx

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"reflect"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"github.com/cloudwego/netpoll"
)

// netpoll's poller goroutine waits for events in a blocking epoll_wait
// (netpoll v0.7.2, poll_default_linux.go: Wait), holding its thread and its
// P in a system call. Between requests the Go runtime's sysmon takes that P
// back after one tick (20 µs) and wakes another thread to run it, and the
// poller thread takes a P again when the next event arrives: at a few
// thousand requests per second on one CPU that thread hand-off costs more
// than the proxying (docs/http.md, "Transport and memory").
//
// So the edge makes each poller wait where Go's own network code waits:
// after every event batch, its handler parks the poller goroutine on the
// runtime poller until netpoll's epoll fd has events again (an epoll fd is
// itself pollable), and only then returns to netpoll's loop, whose next
// non-blocking epoll_wait finds them. An idle poller then holds no thread
// and no P; the scheduler's own wait in the runtime poller is the only
// one. netpoll's loop is unchanged: should a wait end without events (an
// fd that became ready stopped being ready before netpoll's epoll_wait),
// the loop falls back to its own blocking
// epoll_wait for that round.
//
// netpoll exposes neither its pollers nor their handler, so the handler
// field is found by reflection on the poller (reached through a
// connection's fd operator) and replaced on the poller's own goroutine,
// the only one that reads it: an eventfd registered on that poller with an
// OnRead callback runs there. If netpoll's layout is not the one expected,
// pollers keep netpoll's wait.

// operatorPollOffset is the offset of FDOperator.poll, the poller the operator is
// registered with; ok is false if the field is not there with that type.
var operatorPollOffset, operatorPollOK = func() (uintptr, bool) {
	f, ok := reflect.TypeOf(netpoll.FDOperator{}).FieldByName("poll")
	return f.Offset, ok && f.Type == reflect.TypeOf((*netpoll.Poll)(nil)).Elem()
}()

// adoptedPolls holds the pollers whose wait was moved, or is being moved,
// to the runtime poller: pollers are process-wide, so once each.
var adoptedPolls sync.Map // netpoll.Poll → struct{}

// AdoptPoller moves the wait of the poller serving c to the runtime poller,
// unless that was done or tried before. It never blocks on the poller.
// Call it for every connection the process makes or accepts on netpoll:
// pollers are picked round robin, and one that only ever serves
// connections not passed here keeps netpoll's wait.
func AdoptPoller(c netpoll.Connection) {
	p := connPoll(c)
	if p == nil {
		return
	}
	if _, done := adoptedPolls.LoadOrStore(p, struct{}{}); done {
		return
	}
	if _, err := onPollerGoroutine(p, installPollWait); err != nil {
		slog.Warn("netpoll poller keeps its blocking wait", "err", err)
	}
}

// connPoll returns the poller c's fd is registered with, nil if netpoll's
// layout is not the expected one.
func connPoll(c netpoll.Connection) netpoll.Poll {
	op := Operator(c)
	if op == nil || !operatorPollOK {
		return nil
	}
	return *(*netpoll.Poll)(unsafe.Add(unsafe.Pointer(op), operatorPollOffset))
}

// pendingCalls holds each operator onPollerGoroutine registered until its
// callback has run. In netpoll's default build the epoll event carries the
// operator's address in a byte array the garbage collector does not scan
// (netpoll keeps its own operators in a cache), so without this an
// operator could be collected while the kernel still names it.
var pendingCalls sync.Map // *netpoll.FDOperator → struct{}

// onPollerGoroutine runs fn on p's poller goroutine, in its event handler:
// a one-shot eventfd is registered with p and signalled; its OnRead
// callback removes it again and calls fn. It returns the eventfd's
// operator once that is set up, not once fn ran.
func onPollerGoroutine(p netpoll.Poll, fn func(netpoll.Poll) error) (*netpoll.FDOperator, error) {
	efd, _, errno := syscall.Syscall(syscall.SYS_EVENTFD2, 0, syscall.O_CLOEXEC|syscall.O_NONBLOCK, 0)
	if errno != 0 {
		return nil, fmt.Errorf("eventfd: %w", errno)
	}
	op := &netpoll.FDOperator{FD: int(efd)}
	// netpoll detaches an operator through its poll field when the fd
	// errors; an eventfd does not, but the field must not be nil then.
	*(*netpoll.Poll)(unsafe.Add(unsafe.Pointer(op), operatorPollOffset)) = p
	op.OnRead = func(p netpoll.Poll) error {
		var b [8]byte
		syscall.Read(op.FD, b[:])
		// netpoll reads no field of the operator but its state after
		// OnRead (the handler's own reference keeps it alive), so the fd
		// can go now.
		p.Control(op, netpoll.PollDetach)
		syscall.Close(op.FD)
		pendingCalls.Delete(op)
		if err := fn(p); err != nil {
			slog.Warn("netpoll poller keeps its blocking wait", "err", err)
		}
		return nil
	}
	pendingCalls.Store(op, struct{}{})
	if err := p.Control(op, netpoll.PollReadable); err != nil {
		pendingCalls.Delete(op)
		syscall.Close(int(efd))
		return nil, fmt.Errorf("register eventfd with poller: %w", err)
	}
	one := [8]byte{7: 1}
	if n, err := syscall.Write(int(efd), one[:]); n != 8 {
		// The callback cannot run: take the eventfd back.
		p.Control(op, netpoll.PollDetach)
		pendingCalls.Delete(op)
		syscall.Close(int(efd))
		return nil, fmt.Errorf("signal eventfd: %d bytes, %v", n, err)
	}
	return op, nil
}

// pollHandler is the shape of netpoll's poller handler,
// func(events []epollevent) (closed bool). The element type is netpoll's
// own; a slice of another element type passes the same three words, and
// the wrapper only passes the slice on.
type pollHandler = func(events []byte) (closed bool)

// pollWait is one poller's handler wrapper.
type pollWait struct {
	netpoll pollHandler
	file    *os.File        // a duplicate of the poller's epoll fd, on the runtime poller
	raw     syscall.RawConn // file's
	ready   func(fd uintptr) bool
	// checked is set once ready has checked the fd in the current wait: a
	// second call comes only after the runtime poller saw the fd become
	// readable, and needs no check.
	checked bool
	// ready's ppoll arguments, here so that they are not allocated per call
	pfd  pollFd
	zero syscall.Timespec
}

// pollFd is struct pollfd.
type pollFd struct {
	fd      int32
	events  int16
	revents int16
}

// installPollWait wraps p's handler with a wait on the runtime poller. It
// must run on p's poller goroutine (onPollerGoroutine).
func installPollWait(p netpoll.Poll) error {
	v := reflect.ValueOf(p)
	if v.Kind() != reflect.Pointer || v.Elem().Kind() != reflect.Struct {
		return fmt.Errorf("netpoll poller type %T not recognised", p)
	}
	t := v.Type().Elem()
	hf, ok := t.FieldByName("Handler")
	if !ok || !isPollHandler(hf.Type) {
		return fmt.Errorf("netpoll poller %v has no Handler func([]event) bool", t)
	}
	ff, ok := t.FieldByName("fd")
	if !ok || ff.Type.Kind() != reflect.Int {
		return fmt.Errorf("netpoll poller %v has no int field fd", t)
	}
	base := v.UnsafePointer()
	handler := (*pollHandler)(unsafe.Add(base, hf.Offset))
	epfd := *(*int)(unsafe.Add(base, ff.Offset))
	if *handler == nil {
		return errors.New("netpoll poller has no handler yet")
	}

	// F_DUPFD_CLOEXEC: a fork between a dup and a CloseOnExec would
	// inherit the fd.
	d, _, errno := syscall.Syscall(syscall.SYS_FCNTL, uintptr(epfd), syscall.F_DUPFD_CLOEXEC, 0)
	if errno != 0 {
		return fmt.Errorf("dup epoll fd %d: %w", epfd, errno)
	}
	dup := int(d)
	// O_NONBLOCK (shared with netpoll's fd) is what makes os.NewFile put
	// the fd on the runtime poller; epoll_wait does not look at it.
	if err := syscall.SetNonblock(dup, true); err != nil {
		syscall.Close(dup)
		return fmt.Errorf("epoll fd non-blocking: %w", err)
	}
	f := os.NewFile(uintptr(dup), "netpoll-epoll")
	if err := f.SetReadDeadline(time.Time{}); err != nil {
		f.Close()
		return fmt.Errorf("epoll fd is not pollable by the runtime: %w", err)
	}
	raw, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return err
	}
	w := &pollWait{netpoll: *handler, file: f, raw: raw}
	w.pfd.events = pollIn
	w.ready = w.epollReady
	*handler = w.handle
	return nil
}

// isPollHandler reports whether t is func([]T) bool for some T.
func isPollHandler(t reflect.Type) bool {
	return t.Kind() == reflect.Func && t.NumIn() == 1 && t.NumOut() == 1 && !t.IsVariadic() &&
		t.In(0).Kind() == reflect.Slice && t.Out(0).Kind() == reflect.Bool
}

// handle runs netpoll's handler on a batch, then parks the poller
// goroutine until the epoll fd has events. A wait that fails (the
// duplicate was closed) returns at once and leaves netpoll's loop to its
// own blocking wait.
func (w *pollWait) handle(events []byte) bool {
	if w.netpoll(events) {
		// netpoll closed the poller and its epoll fd.
		w.file.Close()
		return true
	}
	w.checked = false
	_ = w.raw.Read(w.ready)
	return false
}

// pollIn is POLLIN.
const pollIn = 0x1

// epollReady reports whether the epoll fd has events, without waiting or
// taking them. RawRead calls it first right after the runtime's reset of
// the fd's readiness, when only a check (ppoll with a zero timeout) can
// tell whether events arrived before the reset; it calls it again only
// after the runtime poller reported the fd readable, so that call answers
// yes without a system call (one per request saved at a steady rate). A
// raw system call: the runtime's entersyscall would wake a sleeping
// sysmon. An error counts as ready, so that netpoll's epoll_wait sees it.
func (w *pollWait) epollReady(fd uintptr) bool {
	if w.checked {
		return true
	}
	w.checked = true
	w.pfd.fd, w.pfd.revents = int32(fd), 0
	n, _, errno := syscall.RawSyscall6(syscall.SYS_PPOLL, uintptr(unsafe.Pointer(&w.pfd)), 1,
		uintptr(unsafe.Pointer(&w.zero)), 0, 0, 0)
	return errno != 0 || n > 0
}
