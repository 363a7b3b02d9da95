//go:build !linux

package loadtest

import "time"

// fineSleep waits d; elsewhere than Linux the runtime timer is all we use.
func fineSleep(d time.Duration) { time.Sleep(d) }
