package ratelimit

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestBurstThenRate(t *testing.T) {
	tb := NewTable(1024)
	l := NewLimit("per-consumer", "per-consumer 10/s 5", 10, 5) // T = 100ms
	t0 := time.Now()
	key := []byte("alice")
	for i := range 5 {
		ok, _, rem := tb.Allow(l, key, t0)
		if !ok || rem != 4-i {
			t.Fatalf("burst request %d: ok=%v remaining=%d, want true %d", i, ok, rem, 4-i)
		}
	}
	ok, retry, rem := tb.Allow(l, key, t0)
	if ok || retry != 100*time.Millisecond || rem != 0 {
		t.Fatalf("6th request: ok=%v retry=%v remaining=%d, want false 100ms 0", ok, retry, rem)
	}
	if ok, _, _ := tb.Allow(l, []byte("bob"), t0); !ok {
		t.Fatal("another key shares alice's bucket")
	}
	if ok, _, _ := tb.Allow(l, key, t0.Add(100*time.Millisecond)); !ok {
		t.Fatal("a token did not come back after one interval")
	}
	if ok, _, _ := tb.Allow(l, key, t0.Add(100*time.Millisecond)); ok {
		t.Fatal("two tokens came back after one interval")
	}
	// A limit of another identity (here: other numbers) is another bucket.
	if ok, _, _ := tb.Allow(NewLimit("per-consumer", "per-consumer 10/s 6", 10, 6), key, t0); !ok {
		t.Fatal("changed limit still uses the old bucket")
	}
}

// A limit never admits more than burst + rate·t, whatever the rate: the
// interval is whole microseconds and must round up (700k/s was rounded to
// 1 µs and admitted 1M/s).
func TestRateNeverExceeded(t *testing.T) {
	for _, rate := range []float64{3, 1.0 / 3, 7, 999, 300_000, 700_000, 1_000_000} {
		tb := NewTable(64)
		l := NewLimit("r", "r", rate, 1)
		t0 := time.Now()
		// Requests every microsecond, the clock's resolution: as fast as
		// any rate can admit.
		const span = 5 * time.Millisecond
		steps := int64(span / time.Microsecond)
		admitted := 0
		for i := int64(0); i <= steps; i++ {
			now := t0.Add(time.Duration(i) * span / time.Duration(steps))
			for {
				ok, _, _ := tb.Allow(l, []byte("k"), now)
				if !ok {
					break
				}
				admitted++
			}
		}
		if bound := 1 + rate*span.Seconds(); float64(admitted) > bound+1e-9 {
			t.Errorf("rate %v: admitted %d in %v, bound %.1f", rate, admitted, span, bound)
		}
	}
}

// TestConcurrentExact: N goroutines hammer one key while a simulated clock
// advances in steps; the admitted total must be exactly rate·t + burst.
func TestConcurrentExact(t *testing.T) {
	const (
		rate, burst = 250.0, 20 // T = 4ms
		steps       = 200
		step        = 10 * time.Millisecond
		workers     = 8
	)
	tb := NewTable(0)
	l := NewLimit("global", "global", rate, burst)
	t0 := time.Now()
	var admitted atomic.Int64
	for s := 0; s <= steps; s++ {
		now := t0.Add(time.Duration(s) * step)
		var wg sync.WaitGroup
		for range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range 100 { // bounded: far more than one step can admit
					if ok, _, _ := tb.Allow(l, []byte("k"), now); ok {
						admitted.Add(1)
					}
				}
			}()
		}
		wg.Wait()
	}
	elapsed := float64(steps) * step.Seconds()
	want := int64(rate*elapsed) + burst
	if got := admitted.Load(); got != want {
		t.Fatalf("admitted %d over %.1fs, want exactly %d", got, elapsed, want)
	}
}

func TestEvictionKeepsMemoryBounded(t *testing.T) {
	tb := NewTable(64)
	l := NewLimit("ip", "ip", 1, 1)
	now := time.Now()
	// Far more keys than buckets: a key's first request passes (its bucket
	// is fresh or takes an evicted slot) unless it collides with a resident
	// key of the same set and 16-bit fingerprint (p ~ 4/65536 each), which
	// shares that bucket; memory stays at 64 words.
	refused := 0
	for i := range 10_000 {
		if ok, _, _ := tb.Allow(l, fmt.Appendf(nil, "10.0.%d.%d", i/256, i%256), now); !ok {
			refused++
		}
	}
	if refused > 10 {
		t.Fatalf("%d of 10000 new keys refused on their first request; collisions should be rare", refused)
	}
	if tb.Size() != 64 {
		t.Fatalf("size %d, want 64", tb.Size())
	}
	// An idle (refilled) bucket is evicted before a busy one.
	tb = NewTable(64)
	busy := []byte("busy")
	later := now.Add(2 * time.Hour)
	tb.Allow(l, busy, later)
	for i := range 1000 { // an hour earlier: these buckets refill long before busy's
		tb.Allow(l, fmt.Appendf(nil, "idle-%d", i), later.Add(-time.Hour))
	}
	if ok, _, _ := tb.Allow(l, busy, later); ok {
		t.Fatal("busy bucket was evicted in favour of idle ones")
	}
}

func TestShare(t *testing.T) {
	for _, tc := range []struct {
		rate, burst float64
		edges       int
		r, b        float64
	}{
		{300, 30, 3, 100, 10},
		{300, 10, 3, 100, 4},
		{300, 1, 3, 100, 1},
		{300, 30, 0, 300, 30},
		{100, 50, 1, 100, 50},
	} {
		r, b := Share(tc.rate, tc.burst, tc.edges)
		if r != tc.r || b != tc.b {
			t.Errorf("Share(%v, %v, %d) = %v, %v, want %v, %v", tc.rate, tc.burst, tc.edges, r, b, tc.r, tc.b)
		}
	}
}

func TestHeaders(t *testing.T) {
	l := NewLimit("api", "api", 10, 100)
	if l.Policy != `"api";q=100;w=10` {
		t.Fatalf("RateLimit-Policy = %s", l.Policy)
	}
	if got := string(l.RateLimit(nil, 0, 1500*time.Millisecond)); got != `"api";r=0;t=2` {
		t.Fatalf("RateLimit = %s", got)
	}
	if RetryAfterSeconds(time.Microsecond) != 1 || RetryAfterSeconds(0) != 0 {
		t.Fatal("RetryAfterSeconds rounding")
	}
}

func TestAllowAllocs(t *testing.T) {
	tb := NewTable(0)
	l := NewLimit("x", "x", 1e6, 1000)
	key := []byte("consumer-1")
	now := time.Now()
	var buf [64]byte
	if n := testing.AllocsPerRun(1000, func() {
		_, ra, rem := tb.Allow(l, key, now)
		_ = l.RateLimit(buf[:0], rem, ra)
	}); n != 0 {
		t.Fatalf("Allow allocates %v times per call", n)
	}
}

func BenchmarkAllow(b *testing.B) {
	tb := NewTable(0)
	l := NewLimit("x", "x", 1e6, 1<<20)
	key := []byte("consumer-1")
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			tb.Allow(l, key, time.Now())
		}
	})
}
