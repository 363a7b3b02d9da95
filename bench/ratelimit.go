package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/snapgate/snapgate/loadtest"
)

// The fleet rate-limit scenario (issue 6): three edges enforce one
// cluster-scope limit of fleetLimit requests/s that ctrl divides among them,
// while each edge is offered twice its share. The fleet must admit between
// 95 % and 105 % of the limit over the window.
const (
	fleetEdges     = 3
	fleetLimit     = 300 // requests per second, fleet-wide
	fleetBurst     = 30
	fleetOverload  = 2.0 // offered load per edge, as a multiple of its share
	fleetPolicyID  = "fleet-limit"
	fleetRoutePath = "/limited"
)

// fleetPolicy is the policy document: a cluster-scope limit keyed by route,
// so every request of every client counts against the one fleet budget.
var fleetPolicy = fmt.Sprintf(`{"id": %q, "scope": {"route": "limited"},
 "rate_limits": [{"key": "route", "rate": %d, "burst": %d, "scope": "cluster"}]}`, fleetPolicyID, fleetLimit, fleetBurst)

// extraEdge starts one more edge process with the gateway's flags, its own
// node id, listener, data dir and side listeners.
func (g *gateway) extraEdge(ctx context.Context, nodeID string) (*proc, string, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, "", err
	}
	args := slices.Clone(g.edgeArgs)
	set := func(flag, value string) {
		if i := slices.Index(args, "--"+flag); i >= 0 && i+1 < len(args) {
			args[i+1] = value
		}
	}
	set("node-id", nodeID)
	set("listen", addr)
	set("data-dir", filepath.Join(g.dir, nodeID+"-data"))
	for _, side := range []string{"admin-listen", "metrics-listen"} {
		a, err := freeAddr()
		if err != nil {
			return nil, "", err
		}
		set(side, a)
	}
	p, err := startProc(nodeID, g.dir, g.pin, g.pin.ProxyCPU, g.bin, args...)
	if err != nil {
		return nil, "", err
	}
	if err := waitTCP(ctx, p, addr); err != nil {
		p.stop()
		return nil, "", err
	}
	return p, addr, nil
}

// waitFleet waits until ctrl records fleetEdges edges and every connected
// edge runs the snapshot of ctrl's latest revision.
func (g *gateway) waitFleet(ctx context.Context, timeout time.Duration, edges int) error {
	deadline := time.Now().Add(timeout)
	for {
		st, err := g.status(ctx)
		if err == nil && st.FleetSize == uint32(edges) && st.SnapshotVersion >= st.ConfigRevision {
			applied := 0
			for _, e := range st.Edges {
				if e.Connected && e.AppliedVersion == st.SnapshotVersion {
					applied++
				}
			}
			if applied == edges {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the fleet of %d edges did not converge on the limit within %v (status %+v, err %v)", edges, timeout, st, err)
		}
		if err := sleepCtx(ctx, 50*time.Millisecond); err != nil {
			return err
		}
	}
}

// fleetLimitRun is the outcome of the scenario.
type fleetLimitRun struct {
	admitted, limited, other int64
	window                   time.Duration
}

// AdmittedRate is the fleet's admitted requests per second.
func (r fleetLimitRun) AdmittedRate() float64 { return float64(r.admitted) / r.window.Seconds() }

// fleetWithinBand reports whether rate is within ±5 % of the limit.
func fleetWithinBand(rate float64) bool {
	return rate >= 0.95*fleetLimit && rate <= 1.05*fleetLimit
}

func (e *env) fleetRateLimit(ctx context.Context) error {
	sc := &Scenario{Name: "ratelimit", Title: fmt.Sprintf("Fleet rate limit: %d edges, cluster limit %d/s", fleetEdges, fleetLimit),
		About: fmt.Sprintf("One policy with a cluster-scope limit of %d req/s (burst %d) keyed by route; ctrl divides it among the connected edges. Each edge is offered %.0f× its share, open loop; the fleet must admit %d–%d req/s over the window.",
			fleetLimit, fleetBurst, fleetOverload, fleetLimit*95/100, fleetLimit*105/100)}
	e.report.Scenarios = append(e.report.Scenarios, sc)

	if _, err := e.gw.ctl(ctx, "route", "put", "--id", "limited", "--host", "*", "--prefix", fleetRoutePath, "--cluster", backendA); err != nil {
		return err
	}
	policyFile := filepath.Join(e.dir, "fleet-policy.json")
	if err := os.WriteFile(policyFile, []byte(fleetPolicy), 0o600); err != nil {
		return fmt.Errorf("writing %s: %w", policyFile, err)
	}
	if _, err := e.gw.ctl(ctx, "policy", "put", "-f", policyFile); err != nil {
		return err
	}
	addrs := []string{e.gw.addr}
	var extras []*proc
	defer func() {
		// They run on the proxy's CPU: the scenarios after this one must
		// not share it with them. ctrl records the smaller fleet (a new
		// snapshot version) once it held for its fleet debounce: that must
		// not land in the next scenario's measurement either.
		for _, p := range extras {
			if err := p.stop(); err != nil {
				e.logf("%v", err)
			}
		}
		if len(extras) > 0 {
			if err := e.gw.waitFleet(ctx, startupWait, 1); err != nil {
				e.logf("after the ratelimit scenario: %v", err)
			}
		}
	}()
	for i := 2; i <= fleetEdges; i++ {
		p, addr, err := e.gw.extraEdge(ctx, fmt.Sprintf("bench-edge-%d", i))
		if err != nil {
			return err
		}
		e.procs = append(e.procs, p)
		extras = append(extras, p)
		addrs = append(addrs, addr)
	}
	if err := e.gw.waitFleet(ctx, startupWait, fleetEdges); err != nil {
		return err
	}
	e.logf("%d edges share the %d/s limit", fleetEdges, fleetLimit)

	window := e.opts.LimitDuration
	perEdge := fleetOverload * fleetLimit / fleetEdges
	sched, err := loadtest.ParseSchedule(fmt.Sprint(perEdge))
	if err != nil {
		return err
	}
	results := make([]*loadtest.Result, len(addrs))
	errs := make([]error, len(addrs))
	var wg sync.WaitGroup
	for i, addr := range addrs {
		wg.Go(func() {
			results[i], errs[i] = loadtest.Run(ctx, loadtest.Config{Target: addr, Paths: []string{fleetRoutePath}, Conns: 4,
				Schedule: sched, Duration: window, Timeout: 2 * time.Second})
		})
	}
	wg.Wait()
	var run fleetLimitRun
	run.window = window
	for i, r := range results {
		if errs[i] != nil {
			return fmt.Errorf("load on edge %d: %w", i+1, errs[i])
		}
		sc.Runs = append(sc.Runs, &RunResult{Target: TargetSnapgate, Label: fmt.Sprintf("edge %d", i+1), Result: r, CPUPerReqUS: -1, CoreCPUPerReqUS: -1, HeapAllocsPerReq: -1})
		for status, n := range r.Status {
			switch status {
			case "200":
				run.admitted += n
			case "429":
				run.limited += n
			default:
				run.other += n
			}
		}
		// Edges may end a little after the window; the rate is over the
		// longest one, which can only understate what was admitted.
		run.window = max(run.window, r.Elapsed)
	}
	rate := run.AdmittedRate()
	verdict := "within"
	if !fleetWithinBand(rate) {
		verdict = "OUTSIDE"
	}
	sc.Facts = append(sc.Facts,
		Fact{Name: "admitted", Value: fmt.Sprintf("%.1f req/s (%s the %d–%d band)", rate, verdict, fleetLimit*95/100, fleetLimit*105/100)},
		Fact{Name: "offered", Value: fmt.Sprintf("%.0f req/s over %d edges", perEdge*float64(len(addrs)), len(addrs))},
		Fact{Name: "answers", Value: fmt.Sprintf("%d × 200, %d × 429, %d other, over %v", run.admitted, run.limited, run.other, run.window.Round(time.Millisecond))})
	e.logf("fleet admitted %.1f req/s (%s the band), %d limited, %d other", rate, verdict, run.limited, run.other)
	if run.other > 0 {
		return fmt.Errorf("%d answers were neither 200 nor 429", run.other)
	}
	if !fleetWithinBand(rate) {
		return fmt.Errorf("fleet admitted %.1f req/s, outside %d–%d", rate, fleetLimit*95/100, fleetLimit*105/100)
	}
	return nil
}
