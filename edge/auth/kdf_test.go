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
// one PBKDF2 run from a bounded budget; past it the answer is 429 with a
// wait instead of another run; a failed credential repeats from the cache
// without a run; a good credential seen before needs no budget at all.
func TestPasswordCheckBudget(t *testing.T) {
	cfg := testConfig(t, `{"keys":[`+jwkHS("h1")+`]}`)
	cfg.PasswordChecksPerSecond = 3
	tb, err := NewTable(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var d Decision
	now := t0
	tb.Authenticate(0, basicHeader("alice", "s3cret"), now, &d) // run 1, cached as good
	if d.Status != 0 || d.ConsumerID != "alice" {
		t.Fatalf("good password: %+v", d)
	}
	for i, h := range []headers{basicHeader("alice", "wrong-1"), basicHeader("nobody", "x")} { // runs 2, 3
		if tb.Authenticate(0, h, now, &d); d.Status != 401 || d.Reason != ReasonBadBasic {
			t.Fatalf("check %d: %+v", i, d)
		}
	}
	// The budget of 3 is spent: a new wrong password waits, it is not run.
	tb.Authenticate(0, basicHeader("alice", "wrong-2"), now, &d)
	if d.Status != 429 || d.Reason != ReasonPasswordChecks || d.RetryAfter <= 0 || d.RetryAfter > time.Second {
		t.Fatalf("past the budget: %+v", d)
	}
	// Repeats are answered from the cache, budget or not.
	if tb.Authenticate(0, basicHeader("alice", "wrong-1"), now, &d); d.Status != 401 {
		t.Fatalf("a failed credential repeated: %+v", d)
	}
	if tb.Authenticate(0, basicHeader("alice", "s3cret"), now, &d); d.Status != 0 {
		t.Fatalf("a good credential repeated while the budget is spent: %+v", d)
	}
	// One run is due a third of a second later.
	now = now.Add(time.Second / 3)
	if tb.Authenticate(0, basicHeader("alice", "wrong-2"), now, &d); d.Status != 401 {
		t.Fatalf("after the wait: %+v", d)
	}
	// A failed credential is forgotten after failedBasicTTL (and then run
	// again, from a refilled budget).
	now = now.Add(failedBasicTTL + time.Second)
	if tb.Authenticate(0, basicHeader("alice", "wrong-1"), now, &d); d.Status != 401 {
		t.Fatalf("after the TTL: %+v", d)
	}
}

func TestKDFBudgetGCRA(t *testing.T) {
	b := newKDFBudget(10) // 100 ms per run, burst 10
	now := t0.UnixNano()
	for i := range 10 {
		if ok, _ := b.take(now); !ok {
			t.Fatalf("run %d of the burst refused", i)
		}
	}
	ok, wait := b.take(now)
	if ok || wait != 100*time.Millisecond {
		t.Fatalf("11th run at once: ok %v wait %v, want refused with 100ms", ok, wait)
	}
	// Over 10 s after the burst, exactly 100 more runs are admitted.
	admitted := 0
	for ms := int64(1); ms <= 10_000; ms++ {
		if ok, _ := b.take(now + ms*int64(time.Millisecond)); ok {
			admitted++
		}
	}
	if admitted != 100 {
		t.Fatalf("%d runs admitted over 10s at 10/s", admitted)
	}
}

// Wrong passwords (each a budgeted check) cannot evict a verified Basic
// credential from the cache: they did, in the same direct-mapped slots, and
// the verified user then needed a check from a budget the flood kept spent
// (429). Failures are cached apart.
func TestWrongPasswordsKeepVerifiedCached(t *testing.T) {
	cfg := testConfig(t, `{"keys":[`+jwkHS("h1")+`]}`)
	cfg.PasswordChecksPerSecond = 20
	cfg.CacheSize = 16 // small, so that a short flood covers every slot
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
