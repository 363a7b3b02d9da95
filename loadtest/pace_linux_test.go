package loadtest

import (
	"bytes"
	"runtime"
	"testing"
	"time"
)

// The fine wait must park its goroutine on the runtime poller ("IO wait"),
// not block a thread in a system call: a sleeping pacer held the P, and with
// the one or two Ps of a pinned load generator responses then went unread
// for up to sysmon's 10 ms network poll.
func TestFineTimerWaitsOnThePoller(t *testing.T) {
	fine, err := newFineTimer()
	if err != nil {
		t.Fatal(err)
	}
	defer fine.close()
	done := make(chan error, 1)
	start := time.Now()
	go func() {
		done <- fine.sleep(300 * time.Millisecond)
	}()
	buf := make([]byte, 1<<20)
	state := ""
	for deadline := time.Now().Add(250 * time.Millisecond); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		stacks := buf[:runtime.Stack(buf, true)]
		for g := range bytes.SplitSeq(stacks, []byte("\n\n")) {
			if bytes.Contains(g, []byte("(*fineTimer).sleep")) {
				header, _, _ := bytes.Cut(g, []byte("\n"))
				state = string(header)
			}
		}
		if bytes.Contains([]byte(state), []byte("[IO wait")) {
			break
		}
	}
	if !bytes.Contains([]byte(state), []byte("[IO wait")) {
		t.Errorf("waiting pacer goroutine: %q, want it parked in IO wait", state)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if waited := time.Since(start); waited < 300*time.Millisecond {
		t.Errorf("sleep(300ms) returned after %v", waited)
	}
}
