package auth

import (
	"slices"
	"sync/atomic"
	"time"
)

// Password checks cost a PBKDF2 run (about 0.1 s of CPU at 600,000
// iterations) before any rate limit can see the request, since limits run
// after authentication. Unbounded, ten wrong passwords a second would pin
// a core. So each Table bounds the CPU its checks take to PasswordCheckCPU
// per second (a quarter of one core by default), answering the rest 429
// until one is due; a credential that failed is remembered for
// failedBasicTTL and fails again without a run; and an unknown username
// runs a check against a dummy hash, so timing does not tell which
// usernames exist. The budget counts time, not runs: at 20 runs a second
// (what it counted before) checks took two cores, and a check's cost
// grows with its iterations and hash length. Each run is charged the wall
// time it took: its CPU time on an idle edge, more when checks or other
// work share the CPU, which only makes the budget stricter.

// DefaultPasswordCheckCPU is Config.PasswordCheckCPU's default: a quarter
// of one core, about two checks a second at 600,000 iterations once a
// burst of about ten is spent.
const DefaultPasswordCheckCPU = 250 * time.Millisecond

// kdfBurst is how many seconds of the budget a rested one admits at once:
// with the default, about a second of checks.
const kdfBurst = 4 * time.Second

// failedBasicTTL is how long a failed Basic credential is remembered.
const failedBasicTTL = time.Minute

// kdfBudget is a GCRA bucket of CPU time: a check that takes d advances
// tat (the theoretical arrival time, unix nanos) by d × scale, where
// 1/scale is the share of a core checks may use; a check is admitted while
// tat - now stays within the burst. A check is charged an estimate when
// admitted, so concurrent ones cannot all slip in on a rested budget, and
// settled with what it took.
type kdfBudget struct {
	scale int64 // wall nanos per CPU nanosecond of checks
	burst int64 // tolerance in wall nanos
	tat   atomic.Int64
	// perWork is the last check's CPU nanos per 1000 units of work
	// (iterations × hash blocks), for the next estimate.
	perWork atomic.Int64
}

func newKDFBudget(perSecond time.Duration) *kdfBudget {
	if perSecond <= 0 {
		perSecond = DefaultPasswordCheckCPU
	}
	scale := max(int64(time.Second/perSecond), 1)
	b := &kdfBudget{scale: scale, burst: int64(kdfBurst)}
	b.perWork.Store(200_000) // 200 ns per iteration-block until measured
	return b
}

// estimate is what a check of work units is expected to take, in CPU nanos.
func (b *kdfBudget) estimate(work int) int64 { return b.perWork.Load() * int64(work) / 1000 }

// take admits a check estimated at est CPU nanos at now, or reports how
// long until one is due.
func (b *kdfBudget) take(now, est int64) (bool, time.Duration) {
	for {
		tat := b.tat.Load()
		if wait := tat - b.burst - now; wait > 0 {
			return false, time.Duration(wait)
		}
		if b.tat.CompareAndSwap(tat, max(tat, now)+est*b.scale) {
			return true, 0
		}
	}
}

// settle charges the difference between what an admitted check took and
// its estimate, and keeps its cost per unit of work for later estimates.
func (b *kdfBudget) settle(took, est int64, work int) {
	b.tat.Add((took - est) * b.scale)
	if work > 0 {
		b.perWork.Store(took * 1000 / int64(work))
	}
}

// dummyUser is what an unknown username is checked against. Its hash
// matches no password (random salt and hash are not needed: nothing can
// equal a zero hash except by a SHA-256 preimage). It costs what most
// stored hashes cost: the median stored hash by iterations × hash blocks
// gives its iteration count and hash length (600 000 and 32 bytes without
// any), since a 64-byte hash is two PBKDF2 blocks and takes twice as long,
// so the time of a refusal tells little about whether the user exists.
func dummyUser(users map[string]basicUser) basicUser {
	stored := make([]basicUser, 0, len(users))
	for _, u := range users {
		stored = append(stored, u)
	}
	iterations, size := 600_000, 32
	if len(stored) > 0 {
		slices.SortFunc(stored, func(a, b basicUser) int { return a.work() - b.work() })
		m := stored[len(stored)/2]
		iterations, size = m.iterations, len(m.hash)
	}
	return basicUser{salt: make([]byte, 16), hash: make([]byte, size), iterations: iterations, consumer: -1}
}

// work is a check's PBKDF2 work: iterations × 32-byte output blocks.
func (u *basicUser) work() int { return u.iterations * ((len(u.hash) + 31) / 32) }
