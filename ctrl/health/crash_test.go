package health

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/snapgate/snapgate/ctrl/model"
	"github.com/snapgate/snapgate/store"
)

// crashChildEnv makes the test binary act as the crash test's ctrl.
const crashChildEnv = "SNAPGATE_HEALTH_CRASH_DIR"

const (
	crashKillAfter = 400              // acknowledged reports before kill -9
	crashChildLife = 60 * time.Second // the child gives up on its own if never killed
)

func TestMain(m *testing.M) {
	if dir := os.Getenv(crashChildEnv); dir != "" {
		os.Exit(runCrashChild(dir))
	}
	os.Exit(m.Run())
}

// crashEndpoints reporters run in parallel, one per endpoint.
const crashEndpoints = 4

var crashClusters = []model.Cluster{testCluster("api", crashEndpoints, &model.HealthCheck{UnhealthyThreshold: 1, HealthyThreshold: 1})}

// crashVerdict is the verdict the child reports at revision rev; with
// thresholds of 1 the endpoint's state is the verdict of its newest
// accepted revision.
func crashVerdict(rev uint64) bool { return rev%3 != 0 }

// runCrashChild reports as fast as Report acknowledges, from one goroutine
// per endpoint, and prints a line per acknowledged report.
func runCrashChild(dir string) int {
	st, err := store.OpenPebble(dir, store.Options{Logger: quietLogger()})
	if err != nil {
		fmt.Fprintln(os.Stderr, "child open store:", err)
		return 2
	}
	tr, err := Open(Config{Store: st, Logger: quietLogger(), FlushInterval: time.Millisecond})
	if err != nil {
		fmt.Fprintln(os.Stderr, "child open:", err)
		return 2
	}
	if err := tr.SetClusters(crashClusters); err != nil {
		fmt.Fprintln(os.Stderr, "child set clusters:", err)
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), crashChildLife)
	defer cancel()
	var out sync.Mutex
	var wg sync.WaitGroup
	for i, e := range crashClusters[0].Endpoints {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for rev := uint64(1); ctx.Err() == nil; rev++ {
				o := Observation{Cluster: "api", Endpoint: e.Address, OK: crashVerdict(rev), Source: "external:checker", Revision: rev}
				if _, err := tr.Report(ctx, o); err != nil {
					fmt.Fprintln(os.Stderr, "child report:", err)
					return
				}
				out.Lock()
				fmt.Fprintf(os.Stdout, "ack %d %d\n", i, rev)
				out.Unlock()
			}
		}()
	}
	wg.Wait()
	return 0
}

// TestCrashKeepsAcknowledgedReports kills a ctrl (the test binary as a
// child) with SIGKILL while an external checker's reports stream in: every
// acknowledged report's revision survives, and so does the state it led to.
func TestCrashKeepsAcknowledgedReports(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a child process")
	}
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), crashChildEnv+"="+dir)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 1024)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	var acked [crashEndpoints]uint64
	parse := func(line string) {
		var i int
		var rev uint64
		if n, err := fmt.Sscanf(line, "ack %d %d", &i, &rev); n != 2 || err != nil || i < 0 || i >= crashEndpoints {
			t.Fatalf("malformed child line %q", line)
		}
		acked[i] = max(acked[i], rev)
	}
	timeout := time.After(30 * time.Second)
	for n := 0; n < crashKillAfter; {
		select {
		case line, ok := <-lines:
			if !ok {
				_ = cmd.Wait()
				t.Fatalf("child exited after %d acks; stderr: %s", n, stderr.String())
			}
			parse(line)
			n++
		case <-timeout:
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			t.Fatalf("only %d acks in 30s; stderr: %s", acked, stderr.String())
		}
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatalf("kill -9 child: %v", err)
	}
	for line := range lines { // written before the kill: acknowledged
		parse(line)
	}
	err = cmd.Wait()
	var exitErr *exec.ExitError
	if !errors.As(err, &exitErr) || exitErr.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("child was not killed by SIGKILL: %v; stderr: %s", err, stderr.String())
	}

	st := openStore(t, dir)
	defer st.Close()
	tr, err := Open(Config{Store: st, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	if err := tr.SetClusters(crashClusters); err != nil {
		t.Fatal(err)
	}
	for i, e := range crashClusters[0].Endpoints {
		es := endpointStatus(t, tr, "api", e.Address)
		if len(es.Sources) != 1 || es.Sources[0].Revision < acked[i] {
			t.Fatalf("%s: after the crash the checker's revision is %+v, acknowledged up to %d", e.Address, es.Sources, acked[i])
		}
		durable := es.Sources[0].Revision
		if es.Healthy != crashVerdict(durable) || publishedOf(t, tr, "api", e.Address).Healthy != crashVerdict(durable) {
			t.Fatalf("%s: healthy=%v after the crash, want the verdict of revision %d (%v)", e.Address, es.Healthy, durable, crashVerdict(durable))
		}
		// A retry of the last acknowledged report is recognised, not applied.
		out := mustObserve(t, tr, Observation{Cluster: "api", Endpoint: e.Address, OK: !crashVerdict(acked[i]), Source: "external:checker", Revision: acked[i]})
		if out.Result == Accepted || out.Healthy != crashVerdict(durable) {
			t.Fatalf("%s: replayed revision %d: %+v", e.Address, acked[i], out)
		}
		t.Logf("%s: %d reports acknowledged before kill -9, revision %d durable", e.Address, acked[i], durable)
	}
}
