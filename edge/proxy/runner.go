package proxy

import (
	"context"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync/atomic"
)

// taskRunner runs netpoll's connection tasks (the OnRequest handler) on
// long-lived goroutines. netpoll's default, gopool, lets a worker exit as
// soon as its task list is empty, so nearly every readiness event started
// a new goroutine whose stack then grew (copied) to the handler's depth:
// 4–6 % of the edge's CPU in perf at 5k req/s. A parked worker here keeps
// its grown stack, and handing it a task is one channel send.
type taskRunner struct {
	tasks chan func()
	// idle counts workers waiting for a task; above maxIdle a worker that
	// finishes exits instead, so a burst's workers do not linger.
	idle    atomic.Int64
	maxIdle atomic.Int64
	// started counts workers ever started: how well tasks reuse them.
	started atomic.Int64
}

func newTaskRunner(maxIdle int) *taskRunner {
	r := &taskRunner{tasks: make(chan func())}
	r.maxIdle.Store(int64(maxIdle))
	return r
}

// run is netpoll's Config.Runner: an idle worker takes f, else a new one
// starts with it.
func (r *taskRunner) run(_ context.Context, f func()) {
	select {
	case r.tasks <- f:
	default:
		r.started.Add(1)
		go r.work(f)
	}
}

// work runs tasks until it is surplus. A panicking task is logged and
// ends its worker, as gopool did (netpoll closes that connection first);
// the process keeps serving.
func (r *taskRunner) work(f func()) {
	defer func() {
		if p := recover(); p != nil {
			slog.Error("panic in connection handler", "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
		}
	}()
	for {
		f()
		if r.idle.Add(1) > r.maxIdle.Load() {
			r.idle.Add(-1)
			return
		}
		f = <-r.tasks
		r.idle.Add(-1)
	}
}
