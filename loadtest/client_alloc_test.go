//go:build !race

package loadtest

import (
	"context"
	"testing"
	"time"
)

// One request round trip on a kept-alive connection (write the request, parse
// the response, skip the body) must not allocate: the client's cost has to
// stay small and flat so it does not distort what it measures.
func TestRoundTripAllocs(t *testing.T) {
	w, req := benchWorker(t)
	ctx := context.Background()
	allocs := testing.AllocsPerRun(500, func() {
		if status, cause := w.do(ctx, req); status != 200 || cause >= 0 {
			t.Fatalf("status %d cause %d", status, cause)
		}
	})
	if allocs != 0 {
		t.Errorf("round trip: %v allocs, want 0", allocs)
	}
}

// The pacer's wait runs once per request too.
func TestSleepUntilAllocs(t *testing.T) {
	fine, err := newFineTimer()
	if err != nil {
		t.Fatal(err)
	}
	defer fine.close()
	w := &worker{timer: stoppedTimer(), fine: fine}
	ctx := context.Background()
	allocs := testing.AllocsPerRun(50, func() {
		if !w.sleepUntil(ctx, time.Now().Add(3*time.Millisecond)) {
			t.Fatal("sleepUntil returned false")
		}
	})
	if allocs != 0 {
		t.Errorf("sleepUntil: %v allocs, want 0", allocs)
	}
}
