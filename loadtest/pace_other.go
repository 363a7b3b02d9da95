//go:build !linux

package loadtest

import "time"

// fineTimer waits with the runtime timer: elsewhere than Linux it is all
// we use.
type fineTimer struct{}

func newFineTimer() (*fineTimer, error) { return &fineTimer{}, nil }

func (*fineTimer) sleep(d time.Duration) error {
	time.Sleep(d)
	return nil
}

func (*fineTimer) close() {}
