// Package ratelimit enforces token-bucket limits on the edge without locks
// and without allocations.
//
// Each bucket is one 64-bit word updated by compare-and-swap, holding the
// GCRA form of a token bucket (ITU-T I.371 "virtual scheduling"): the
// theoretical arrival time (TAT) of the next conforming request. With
// emission interval T = 1/rate and tolerance burst·T, a request at time now
// conforms when max(TAT, now) + T − now <= burst·T. Over any window t it
// admits at most burst + rate·t requests, exactly as a bucket of size burst
// refilled at rate tokens per second would.
//
// Buckets live in a fixed-size Table shared by all limits and keys and kept
// across snapshot swaps, so memory is bounded by the table size whatever
// the number of clients. A key (limit id + key bytes) hashes to a set of
// 4 slots; within a set a slot is identified by a 16-bit fingerprint packed
// with a 48-bit TAT in microseconds (8.9 years of range from the table's
// epoch). Collision policy: two keys with the same set and fingerprint
// share a bucket, which only makes them stricter, never looser. Eviction
// policy: a key with no slot takes, in order, an empty slot, a slot whose
// bucket is already full again (TAT <= now: evicting it loses nothing), or
// else the slot whose bucket is closest to full (smallest TAT), which
// grants that key's previous owner at most a fresh burst.
package ratelimit

import (
	"hash/maphash"
	"math"
	"strconv"
	"sync/atomic"
	"time"
)

const (
	ways      = 4
	fpBits    = 16
	tatBits   = 64 - fpBits
	tatMask   = 1<<tatBits - 1
	maxRate   = 1_000_000 // one request per microsecond, the TAT resolution
	minSets   = 16
	usPerSec  = 1_000_000
	maxBurst  = 1 << 20
	defaultSz = 1 << 16
)

// Limit is one compiled rate limit: Rate requests per second with a burst
// of Burst. Build it once per snapshot with NewLimit.
type Limit struct {
	id       uint64
	interval int64 // emission interval T in microseconds
	tol      int64 // burst·T
	burst    int
	// Policy is the RateLimit-Policy field value for this limit
	// (draft-ietf-httpapi-ratelimit-headers-09 §3): "<name>";q=<burst>;w=<window>,
	// where the window is the time the bucket takes to refill from empty.
	Policy string
	name   string
}

// NewLimit compiles a limit. name is its name in the headers; identity
// says which buckets are its: a limit compiled again with the same
// identity (the next snapshot's) keeps them, and two limits with the same
// identity share them. Callers build it from what the operator configured,
// not from derived numbers: a cluster-wide limit's per-edge share changes
// with the fleet, and its buckets should keep their state when it does.
// rate is clamped to (0, 1e6] per second, burst to [1, 2^20].
func NewLimit(name, identity string, rate float64, burst int) *Limit {
	if !(rate > 0) {
		rate = 1.0 / 86400 // one a day: a non-positive rate is a config error, fail nearly closed
	}
	rate = math.Min(rate, maxRate)
	burst = max(1, min(burst, maxBurst))
	// Rounded up: the interval is whole microseconds, and a shorter one
	// than 1/rate would admit more than the rate (Round turned 700k/s into
	// a 1 µs interval, 1M/s).
	iv := int64(math.Ceil(usPerSec / rate))
	if iv < 1 {
		iv = 1
	}
	l := &Limit{interval: iv, tol: iv * int64(burst), burst: burst, name: name}
	l.id = maphash.String(idSeed, identity)
	window := (l.tol + usPerSec - 1) / usPerSec
	l.Policy = strconv.Quote(name) + ";q=" + strconv.Itoa(burst) + ";w=" + strconv.FormatInt(max(window, 1), 10)
	return l
}

var idSeed = maphash.MakeSeed()

// Share is the per-edge part of a cluster-wide limit, computed by ctrl and
// shipped in the snapshot: each of edges nodes gets rate/edges, and a burst
// of ceil(burst/edges) but at least 1, so the fleet as a whole admits the
// global rate and at most the global burst plus one request per edge
// (rounding). edges < 1 is treated as 1 (the limit is then entirely local).
// ctrl recomputes it whenever the number of connected edges changes.
func Share(globalRate, burst float64, edges int) (rate, edgeBurst float64) {
	if edges < 1 {
		edges = 1
	}
	return globalRate / float64(edges), math.Max(1, math.Ceil(burst/float64(edges)))
}

// Table holds the buckets of every limit and key. Safe for concurrent use.
type Table struct {
	slots []atomic.Uint64
	sets  uint64
	seed  maphash.Seed
	epoch time.Time
}

// NewTable makes a table of about size buckets (rounded up to a power of
// two, at least 64; 0 = 65536). Each bucket is 8 bytes.
func NewTable(size int) *Table {
	if size <= 0 {
		size = defaultSz
	}
	sets := minSets
	for sets*ways < size {
		sets <<= 1
	}
	return &Table{slots: make([]atomic.Uint64, sets*ways), sets: uint64(sets), seed: maphash.MakeSeed(), epoch: time.Now()}
}

// Size is the number of buckets.
func (t *Table) Size() int { return len(t.slots) }

// Allow takes one token for key under l at now. It returns whether the
// request conforms, how long until one would (for Retry-After; 0 when ok),
// and how many requests could still pass right now (for the RateLimit
// field's r parameter).
func (t *Table) Allow(l *Limit, key []byte, now time.Time) (ok bool, retryAfter time.Duration, remaining int) {
	h := maphash.Bytes(t.seed, key) ^ l.id*0x9e3779b97f4a7c15
	h ^= h >> 29
	fp := h>>48 | 1 // never 0: 0 marks an empty slot
	set := t.slots[(h%t.sets)*ways : (h%t.sets)*ways+ways]
	nowUs := now.Sub(t.epoch).Microseconds()
	if nowUs < 0 {
		nowUs = 0
	}
	for {
		slot, old := t.find(set, fp, nowUs)
		tat := int64(0)
		if old>>tatBits == fp {
			tat = int64(old & tatMask)
		}
		base := max(tat, nowUs)
		next := base + l.interval
		if next-nowUs > l.tol {
			wait := next - l.tol - nowUs
			return false, time.Duration(wait) * time.Microsecond, 0
		}
		if next > tatMask {
			next = tatMask // 8.9 years past the epoch; saturate rather than wrap
		}
		if slot.CompareAndSwap(old, fp<<tatBits|uint64(next)) {
			return true, 0, int((l.tol - (next - nowUs)) / l.interval)
		}
	}
}

// find returns the slot for fp in set and its current word: the slot that
// holds fp, else the eviction choice documented on the package.
func (t *Table) find(set []atomic.Uint64, fp uint64, nowUs int64) (*atomic.Uint64, uint64) {
	victim, victimTat := -1, int64(math.MaxInt64)
	var words [ways]uint64
	for i := range set {
		w := set[i].Load()
		words[i] = w
		if w>>tatBits == fp {
			return &set[i], w
		}
	}
	for i, w := range words {
		if w == 0 {
			return &set[i], 0
		}
		tat := int64(w & tatMask)
		if tat <= nowUs {
			return &set[i], w
		}
		if tat < victimTat {
			victim, victimTat = i, tat
		}
	}
	return &set[victim], words[victim]
}

// RateLimit formats the RateLimit field value
// (draft-ietf-httpapi-ratelimit-headers-09 §4): "<name>";r=<remaining>;t=<reset seconds>,
// appended to dst so the caller can reuse a buffer.
func (l *Limit) RateLimit(dst []byte, remaining int, retryAfter time.Duration) []byte {
	dst = strconv.AppendQuote(dst, l.name)
	dst = append(dst, ";r="...)
	dst = strconv.AppendInt(dst, int64(remaining), 10)
	dst = append(dst, ";t="...)
	return strconv.AppendInt(dst, RetryAfterSeconds(retryAfter), 10)
}

// RetryAfterSeconds rounds a wait up to whole seconds for Retry-After
// (RFC 9110 §10.2.3 has no fractions); never 0 for a positive wait.
func RetryAfterSeconds(d time.Duration) int64 {
	return int64((d + time.Second - 1) / time.Second)
}
