package store

import (
	"strconv"
	"sync/atomic"
	"testing"
)

// BenchmarkApplyPut measures one fsynced single-document put, the unit of
// every admin write.
func BenchmarkApplyPut(b *testing.B) {
	s := openTest(b, b.TempDir())
	defer s.Close()
	body := []byte(`{"host":"api.example.com","prefix":"/v1/","cluster":"web","timeout_ms":3000}`)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if _, _, err := s.Apply(Mutation{Kind: "route", ID: strconv.Itoa(i % 1000), Body: body}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkApplyPut16 is BenchmarkApplyPut from 16 writers at once, as
// ctrl's admin socket sees during a bulk import: concurrent Applies share
// fsyncs, so each costs a fraction of one.
func BenchmarkApplyPut16(b *testing.B) {
	s := openTest(b, b.TempDir())
	defer s.Close()
	body := []byte(`{"host":"api.example.com","prefix":"/v1/","cluster":"web","timeout_ms":3000}`)
	var next atomic.Int64
	b.ReportAllocs()
	b.SetParallelism(8) // 16 goroutines on 2 CPUs
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := next.Add(1)
			if _, _, err := s.Apply(Mutation{Kind: "route", ID: strconv.FormatInt(i%1000, 10), Body: body}); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkGet measures a point read of a stored document.
func BenchmarkGet(b *testing.B) {
	s := openTest(b, b.TempDir())
	defer s.Close()
	if _, _, err := s.Apply(Mutation{Kind: "route", ID: "api", Body: make([]byte, 200)}); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Get("route", "api"); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkLoad1k measures a consistent read of 1000 documents, what ctrl
// does on every recompute.
func BenchmarkLoad1k(b *testing.B) {
	s := openTest(b, b.TempDir())
	defer s.Close()
	muts := make([]Mutation, 1000)
	for i := range muts {
		muts[i] = Mutation{Kind: "route", ID: strconv.Itoa(i), Body: make([]byte, 200)}
	}
	if _, _, err := s.Apply(muts...); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := s.Load(); err != nil {
			b.Fatal(err)
		}
	}
}
