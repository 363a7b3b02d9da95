package proxy

import (
	"context"
	"sync"
	"testing"
	"time"
)

// drainRunner ends r's parked workers: with no idle slot left, each one
// exits after the no-op task it is handed.
func drainRunner(t *testing.T, r *taskRunner) {
	t.Helper()
	r.maxIdle.Store(0)
	waitUntil(t, "workers to exit", func() bool {
		select {
		case r.tasks <- func() {}:
		default:
		}
		return r.idle.Load() == 0
	})
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// Sequential tasks reuse one parked worker; a burst leaves at most
// maxIdle parked; a panicking task ends only its worker.
func TestTaskRunner(t *testing.T) {
	r := newTaskRunner(2)
	defer drainRunner(t, r)
	ctx := context.Background()

	// A worker counts itself idle just before it waits for a task, so a
	// task handed over in between starts a second one, which parks too;
	// after that every task finds one parked. One goroutine per task
	// would start 50.
	for range 50 {
		done := make(chan struct{})
		r.run(ctx, func() { close(done) })
		<-done
		waitUntil(t, "a worker to park", func() bool { return r.idle.Load() >= 1 })
	}
	if n := r.started.Load(); n > 2 {
		t.Fatalf("50 sequential tasks started %d workers, want at most maxIdle 2", n)
	}

	release := make(chan struct{})
	var wg sync.WaitGroup
	for range 5 {
		wg.Add(1)
		r.run(ctx, func() {
			defer wg.Done()
			<-release
		})
	}
	close(release)
	wg.Wait()
	waitUntil(t, "surplus workers to exit", func() bool { return r.idle.Load() == 2 })
	time.Sleep(10 * time.Millisecond)
	if n := r.idle.Load(); n != 2 {
		t.Fatalf("%d idle workers after a burst of 5, want maxIdle 2", n)
	}

	r.run(ctx, func() { panic("handler bug") })
	ran := make(chan struct{})
	r.run(ctx, func() { close(ran) })
	<-ran
}
