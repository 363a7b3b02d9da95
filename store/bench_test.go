package store

import (
	"strconv"
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
