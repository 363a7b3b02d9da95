//go:build linux

package ctrl

import "syscall"

// processCPU returns the CPU time this process has used in nanoseconds, or
// 0 if unknown. The propagation benchmarks report it next to their
// latencies: on a shared, oversubscribed machine those also count the time
// other processes held the CPU, and CPU per change does not.
func processCPU() int64 {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}
