package auth

import (
	"encoding/base64"
	"fmt"
	"testing"
	"time"
)

func basicHeader(user, pass string) headers {
	return headers{"authorization": "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass))}
}

// TestPasswordCheckBudget: wrong passwords and unknown usernames each cost
// a PBKDF2 run from a bounded CPU budget; past it the answer is 429 with a
// wait instead of another run; a failed credential repeats from the cache
// without a run; a good credential seen before needs no budget at all.
func TestPasswordCheckBudget(t *testing.T) {
	cfg := testConfig(t, `{"keys":[`+jwkHS("h1")+`]}`)
	cfg.PasswordCheckCPU = time.Millisecond // a run (~20 ms) spends seconds of it
	tb, err := NewTable(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var d Decision
	now := t0
	tb.Authenticate(0, basicHeader("alice", "s3cret"), now, &d) // a run, cached as good
	if d.Status != 0 || d.ConsumerID != "alice" {
		t.Fatalf("good password: %+v", d)
	}
	// The budget is spent: a new wrong password waits, it is not run.
	tb.Authenticate(0, basicHeader("alice", "wrong-1"), now, &d)
	if d.Status != 429 || d.Reason != ReasonPasswordChecks || d.RetryAfter <= 0 {
		t.Fatalf("past the budget: %+v", d)
	}
	if tb.Authenticate(0, basicHeader("alice", "s3cret"), now, &d); d.Status != 0 {
		t.Fatalf("a good credential repeated while the budget is spent: %+v", d)
	}
	// Once the wait is over, it runs (and fails); its repeat is answered
	// from the cache although the budget is spent again.
	now = now.Add(d.RetryAfter)
	tb.Authenticate(0, basicHeader("alice", "wrong-1"), now, &d)
	if d.Status == 429 {
		now = now.Add(d.RetryAfter)
		tb.Authenticate(0, basicHeader("alice", "wrong-1"), now, &d)
	}
	if d.Status != 401 || d.Reason != ReasonBadBasic {
		t.Fatalf("after the wait: %+v", d)
	}
	if tb.Authenticate(0, basicHeader("alice", "wrong-1"), now, &d); d.Status != 401 {
		t.Fatalf("a failed credential repeated: %+v", d)
	}
	if tb.Authenticate(0, basicHeader("nobody", "x"), now, &d); d.Status != 429 {
		t.Fatalf("an unknown username runs a check from the same budget: %+v", d)
	}
}

// The budget counts CPU time, not runs: checks that take twice as long are
// admitted half as often, and over time the checks take the configured
// share of one core.
func TestKDFBudgetCountsCPU(t *testing.T) {
	for _, took := range []time.Duration{100 * time.Millisecond, 200 * time.Millisecond} {
		b := newKDFBudget(250 * time.Millisecond) // a quarter of a core
		now := t0.UnixNano()
		burst := 0
		for {
			est := b.estimate(1000)
			ok, _ := b.take(now, est)
			if !ok {
				break
			}
			b.settle(int64(took), est, 1000)
			burst++
		}
		// Then for 100 s, one attempt a millisecond.
		var cpu time.Duration
		for ms := int64(1); ms <= 100_000; ms++ {
			at := now + ms*int64(time.Millisecond)
			est := b.estimate(1000)
			if ok, _ := b.take(at, est); ok {
				b.settle(int64(took), est, 1000)
				cpu += took
			}
		}
		if share := cpu.Seconds() / 100; share < 0.24 || share > 0.26 {
			t.Errorf("checks of %v: %.3f of a core over 100 s, want 0.25", took, share)
		}
		if want := int(kdfBurst/4/took) + 1; burst < want-1 || burst > want+1 {
			t.Errorf("checks of %v: a burst of %d, want about %d (a second of CPU)", took, burst, want)
		}
	}
}

// Wrong passwords (each a budgeted check) cannot evict a verified Basic
// credential from the cache: they did, in the same direct-mapped slots, and
// the verified user then needed a check from a budget the flood kept spent
// (429). Failures are cached apart.
func TestWrongPasswordsKeepVerifiedCached(t *testing.T) {
	cfg := testConfig(t, `{"keys":[`+jwkHS("h1")+`]}`)
	cfg.PasswordCheckCPU = 2 * time.Second // not the limit under test: every run fits
	cfg.CacheSize = 16                     // small, so that a short flood covers every slot
	tb, err := NewTable(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var d Decision
	now := t0
	if tb.Authenticate(0, basicHeader("alice", "s3cret"), now, &d); d.Status != 0 {
		t.Fatalf("alice: %+v", d)
	}
	for s := range 5 { // 20 wrong passwords a second for 5 seconds
		now = t0.Add(time.Duration(s+1) * time.Second)
		for i := range 20 {
			tb.Authenticate(0, basicHeader("mallory", fmt.Sprint(s, "-", i)), now, &d)
		}
	}
	if tb.Authenticate(0, basicHeader("alice", "s3cret"), now, &d); d.Status != 0 {
		t.Fatalf("a verified credential stopped working after a flood of wrong ones: %d %s", d.Status, d.Reason)
	}
}

// An unknown username is checked at the iteration count of the stored
// hashes (their median), not a fixed 600 000: with stored hashes at 100 000,
// a refusal took six times longer for a username that does not exist.
func TestUnknownUserCostsLikeKnown(t *testing.T) {
	tb := newTable(t, `{"keys":[`+jwkHS("h1")+`]}`)
	if got := tb.dummy.iterations; got != MinPBKDF2Iterations {
		t.Fatalf("unknown usernames cost %d iterations, stored hashes %d", got, MinPBKDF2Iterations)
	}
	if got := dummyUser(nil).iterations; got != 600_000 {
		t.Fatalf("without stored hashes: %d iterations", got)
	}
}
