//go:build linux

package fbs

import (
	"fmt"
	"math/rand/v2"
	"syscall"
	"testing"
	"unsafe"
)

// BenchmarkPageTouch is the machine's baseline for BenchmarkMatch at large
// sizes: one dependent 8-byte read per op, cycling over n cache lines that
// each sit on a page of their own, in memory that stays in the CPU caches
// (n lines of 64 bytes). What grows with n is the cost of translating
// addresses, which is what a lookup pays at a million routes, where the
// requests of a hot set touch tens of thousands of distinct pages
// (docs/routing.md, "Lookup cost").
func BenchmarkPageTouch(b *testing.B) {
	for _, pages := range []int{1024, 4096, 16384, 32768} {
		b.Run(fmt.Sprintf("pages=%d", pages), func(b *testing.B) {
			const page = 4096
			mem, err := syscall.Mmap(-1, 0, pages*page, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_ANON|syscall.MAP_PRIVATE)
			if err != nil {
				b.Fatal(err)
			}
			defer syscall.Munmap(mem)
			// A random cycle through one line per page, so the CPU cannot
			// predict the next address.
			order := rand.New(rand.NewPCG(1, 2)).Perm(pages)
			for i, p := range order {
				*(*uint64)(unsafe.Pointer(&mem[p*page])) = uint64(order[(i+1)%pages] * page)
			}
			at := uint64(order[0] * page)
			for b.Loop() {
				at = *(*uint64)(unsafe.Pointer(&mem[at]))
			}
			if at >= uint64(len(mem)) {
				b.Fatal("chain left the region")
			}
		})
	}
}
