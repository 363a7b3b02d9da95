package netpollx

import (
	"bytes"
	"context"
	"io"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"
	"weak"

	"github.com/cloudwego/netpoll"
)

// echoServer serves an echo on netpoll at 127.0.0.1, adopting the poller of
// every accepted connection, and stops with the test.
func echoServer(t *testing.T) string {
	t.Helper()
	ln, err := netpoll.CreateListener("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	loop, err := netpoll.NewEventLoop(func(_ context.Context, c netpoll.Connection) error {
		r := c.Reader()
		b, err := r.Next(r.Len())
		if err != nil {
			return err
		}
		if _, err := c.Writer().WriteBinary(b); err != nil {
			return err
		}
		return c.Writer().Flush()
	}, netpoll.WithOnPrepare(func(c netpoll.Connection) context.Context {
		AdoptPoller(c)
		return context.Background()
	}))
	if err != nil {
		ln.Close()
		t.Fatal(err)
	}
	served := make(chan struct{})
	go func() {
		defer close(served)
		loop.Serve(ln)
	}()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		loop.Shutdown(ctx)
		<-served
	})
	return ln.Addr().String()
}

func echo(t *testing.T, c net.Conn, msg []byte) {
	t.Helper()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write(msg); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, msg) {
		t.Fatalf("echo %q, want %q", got, msg)
	}
}

// pollerStates returns the scheduler state ("IO wait", "syscall", ...) of
// each netpoll poller goroutine, and whether it runs through our wrapper.
func pollerStates() (states []string, wrapped []bool) {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	for _, g := range strings.Split(string(buf), "\n\n") {
		if !strings.Contains(g, "netpoll.(*defaultPoll).Wait") {
			continue
		}
		head, _, _ := strings.Cut(g, "\n")
		_, st, _ := strings.Cut(head, "[")
		st, _, _ = strings.Cut(st, "]")
		st, _, _ = strings.Cut(st, ",")
		states = append(states, st)
		wrapped = append(wrapped, strings.Contains(g, "netpollx.(*pollWait).handle"))
	}
	return states, wrapped
}

// TestIdlePollerWaitsOnRuntimePoller: once adopted, an idle netpoll poller
// is a goroutine parked on the runtime poller inside our wrapper ("IO
// wait"), not a thread blocked in epoll_wait ("syscall"), and the
// connections it serves keep working, after idle gaps too.
func TestIdlePollerWaitsOnRuntimePoller(t *testing.T) {
	addr := echoServer(t)
	var conns []net.Conn
	for range 4 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		conns = append(conns, c)
	}
	// A connection the process dials on netpoll is adopted too.
	up, err := netpoll.DialConnection("tcp", addr, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer up.Close()
	AdoptPoller(up)

	for round := range 3 {
		for i, c := range conns {
			echo(t, c, []byte(strings.Repeat("x", 1+i*1000+round)))
		}
		if _, err := up.Writer().WriteBinary([]byte("ping")); err != nil {
			t.Fatal(err)
		}
		if err := up.Writer().Flush(); err != nil {
			t.Fatal(err)
		}
		up.SetReadTimeout(5 * time.Second)
		if b, err := up.Reader().Next(4); err != nil || string(b) != "ping" {
			t.Fatalf("netpoll client echo: %q, %v", b, err)
		}
		up.Reader().Release()
		time.Sleep(30 * time.Millisecond) // an idle gap: sysmon's ticks pass
	}

	var states []string
	var wrapped []bool
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		states, wrapped = pollerStates()
		ok := len(states) > 0
		for i := range states {
			ok = ok && wrapped[i] && states[i] == "IO wait"
		}
		if ok {
			return
		}
	}
	t.Fatalf("netpoll pollers: states %q, through the wrapper %v; want all parked in IO wait inside it", states, wrapped)
}

// fakePoll is a netpoll.Poll of another shape than netpoll's own.
type fakePoll struct{ netpoll.Poll }

// TestUnknownLayoutKeepsNetpollWait: what is not netpoll's expected layout
// is refused, not written to.
func TestUnknownLayoutKeepsNetpollWait(t *testing.T) {
	if err := installPollWait(fakePoll{}); err == nil {
		t.Error("installPollWait accepted a poller that is not netpoll's")
	}
	if err := installPollWait(&fakePoll{}); err == nil || !strings.Contains(err.Error(), "Handler") {
		t.Errorf("installPollWait on a struct without Handler: %v", err)
	}
	if p := connPoll(nil); p != nil {
		t.Errorf("connPoll(nil) = %v", p)
	}
	AdoptPoller(nil) // must not panic
}

// TestPendingCallStaysReachable: an operator onPollerGoroutine registered
// survives garbage collection until its callback ran. netpoll's default
// build keeps the operator's address only in the kernel's epoll data, so
// a collected operator would leave the poller calling freed memory.
func TestPendingCallStaysReachable(t *testing.T) {
	up, err := netpoll.DialConnection("tcp", echoServer(t), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer up.Close()
	p := connPoll(up)
	if p == nil {
		t.Fatal("no poller found for a netpoll connection")
	}
	// Hold the poller inside its handler, so the next call stays pending.
	blocked, release := make(chan struct{}), make(chan struct{})
	if _, err := onPollerGoroutine(p, func(netpoll.Poll) error {
		close(blocked)
		<-release
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-blocked:
	case <-time.After(5 * time.Second):
		t.Fatal("the poller never ran the first call")
	}
	ran := make(chan struct{})
	op, err := onPollerGoroutine(p, func(netpoll.Poll) error {
		close(ran)
		return nil
	})
	if err != nil {
		close(release)
		t.Fatal(err)
	}
	w := weak.Make(op)
	op = nil
	for range 3 {
		runtime.GC()
	}
	collected := w.Value() == nil
	close(release)
	if collected {
		t.Error("a registered operator was collected before its callback ran")
	}
	select {
	case <-ran:
	case <-time.After(5 * time.Second):
		t.Fatal("the pending call never ran")
	}
}
