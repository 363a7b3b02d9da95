package auth

import (
	"slices"
	"sync/atomic"
	"time"
)

// Password checks cost a PBKDF2 run (about 0.1 s of CPU at 600,000
// iterations) before any rate limit can see the request, since limits run
// after authentication. Unbounded, ten wrong passwords a second would pin
// an edge's CPU. So each Table admits at most PasswordChecksPerSecond runs
// (burst the same), answering the rest 429 until one is due; a credential
// that failed is remembered for failedBasicTTL and fails again without a
// run; and an unknown username runs a check against a dummy hash, so
// timing does not tell which usernames exist.

// DefaultPasswordChecksPerSecond is Config.PasswordChecksPerSecond's default.
const DefaultPasswordChecksPerSecond = 20

// failedBasicTTL is how long a failed Basic credential is remembered.
const failedBasicTTL = time.Minute

// kdfBudget is a GCRA bucket of PBKDF2 runs: tat is the theoretical
// arrival time in unix nanos; a run is admitted while tat - now stays
// within the burst.
type kdfBudget struct {
	interval, burst int64 // nanos per run; nanos of burst tolerance
	tat             atomic.Int64
}

func newKDFBudget(perSecond int) *kdfBudget {
	if perSecond <= 0 {
		perSecond = DefaultPasswordChecksPerSecond
	}
	interval := int64(time.Second) / int64(perSecond)
	return &kdfBudget{interval: interval, burst: interval * int64(perSecond-1)}
}

// take admits one run at now, or reports how long until one is due.
func (b *kdfBudget) take(now int64) (bool, time.Duration) {
	for {
		tat := b.tat.Load()
		next := max(tat, now) + b.interval
		if wait := next - b.interval - b.burst - now; wait > 0 {
			return false, time.Duration(wait)
		}
		if b.tat.CompareAndSwap(tat, next) {
			return true, 0
		}
	}
}

// dummyUser is what an unknown username is checked against. Its hash
// matches no password (random salt and hash are not needed: nothing can
// equal a 32-byte zero hash except by a SHA-256 preimage). It costs what
// most stored hashes cost (the median iteration count; 600 000 without
// any), so the time of a refusal tells little about whether the user
// exists.
func dummyUser(users map[string]basicUser) basicUser {
	iters := make([]int, 0, len(users))
	for _, u := range users {
		iters = append(iters, u.iterations)
	}
	n := 600_000
	if len(iters) > 0 {
		slices.Sort(iters)
		n = iters[len(iters)/2]
	}
	return basicUser{salt: make([]byte, 16), hash: make([]byte, 32), iterations: n, consumer: -1}
}
