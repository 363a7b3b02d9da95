//go:build !linux

package fbs

// threadCPU is unknown off Linux; benchmarks then report wall time only.
func threadCPU() int64 { return 0 }
