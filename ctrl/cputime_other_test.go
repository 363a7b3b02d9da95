//go:build !linux

package ctrl

// processCPU is unknown off Linux; the benchmarks then report 0 CPU.
func processCPU() int64 { return 0 }
