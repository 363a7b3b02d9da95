//go:build linux

package fbs

import "syscall"

// rusageThread is RUSAGE_THREAD, which package syscall does not name.
const rusageThread = 1

// threadCPU returns the CPU time of the calling OS thread in nanoseconds, or
// 0 if unknown. Benchmarks lock their goroutine to its thread and report it
// next to wall time, because on a shared, oversubscribed machine wall time
// per op also counts the time other processes held the CPU.
func threadCPU() int64 {
	var ru syscall.Rusage
	if syscall.Getrusage(rusageThread, &ru) != nil {
		return 0
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}
