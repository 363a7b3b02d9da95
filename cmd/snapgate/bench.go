package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/snapgate/snapgate/bench"
	"github.com/snapgate/snapgate/ctrl/admin"
	"github.com/snapgate/snapgate/ctrl/model"
)

const benchSynopsis = `bench [--full] [--out DIR] [flags]

Starts ctrl, an edge, two sample backends and (when installed) nginx and
HAProxy on 127.0.0.1, drives load through each, and writes a report to
--out: report.md (table with ratios to direct and to nginx), one SVG
percentile plot per scenario, report.json and the raw loadtest JSON.
Every process it starts is stopped at the end, on failure and on Ctrl-C.

  snapgate bench backend --listen ADDR --name NAME   the sample backend it runs

flags:`

// bulkConns is how many admin connections the large scenario writes routes
// over: ctrl group-commits concurrent writes, so more connections mean fewer
// fsyncs per route.
const bulkConns = 16

func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "backend" {
		return runBenchBackend(ctx, args[1:], stderr)
	}
	var opts bench.Options
	fs := newFlagSet("bench", benchSynopsis, stderr)
	fs.BoolVar(&opts.Full, "full", false, "full mode: a rate ladder and longer runs (default: quick, under 5 minutes)")
	out := fs.String("out", "", "results folder (default results/<UTC timestamp>)")
	fs.StringVar(&opts.Bin, "bin", "", "snapgate binary to run ctrl, edge, ctl and backends with (default: this one)")
	scenarios := fs.String("scenarios", "steady,churn,large,ratelimit,flap", "comma-separated: steady, churn, large, ratelimit, flap")
	rates := fs.String("rates", "", "steady open-loop rates, comma-separated req/s (default quick 1000,5000; full 1000,...,20000)")
	fs.DurationVar(&opts.Duration, "duration", 0, "measured length of each run (default quick 5s, full 15s)")
	fs.DurationVar(&opts.Warmup, "warmup", 0, "unmeasured run before each (default quick 1s, full 3s)")
	fs.IntVar(&opts.Conns, "conns", 16, "load generator keep-alive connections")
	fs.BoolVar(&opts.NoMax, "no-max", false, "skip the closed-loop max-throughput runs")
	fs.IntVar(&opts.Rounds, "rounds", 1, "repeat the steady and max runs, every target once per round; the report adds each ratio's median and range over the rounds")
	fs.BoolVar(&opts.NoPeers, "no-peers", false, "skip nginx and HAProxy")
	fs.BoolVar(&opts.NoPin, "no-pin", false, "do not pin processes to CPUs")
	fs.Float64Var(&opts.ChurnRate, "churn-rate", 10, "route updates per second in the churn scenario")
	fs.DurationVar(&opts.ChurnDuration, "churn-duration", 0, "churn scenario length (default quick 10s, full 30s)")
	fs.DurationVar(&opts.LimitDuration, "limit-duration", 0, "ratelimit scenario window (default quick 20s, full 1m)")
	fs.IntVar(&opts.LargeRoutes, "large-routes", 0, "routes in the large-table scenario (default quick 10000, full 100000)")
	fs.DurationVar(&opts.FlapDuration, "flap-duration", 0, "flap scenario window (default quick 15s, full 1m)")
	fs.Float64Var(&opts.FlapRate, "flap-rate", 1000, "requests per second offered during the flap storm")
	fs.IntVar(&opts.HealthMaxVersionsPerSecond, "health-max-versions-per-second", 10, "ctrl's cap on health-caused snapshot versions, which the flap scenario checks")
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	usageErr := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "snapgate bench: "+format+"\n", a...)
		return 2
	}
	if fs.NArg() > 0 {
		return usageErr("unexpected argument %q", fs.Arg(0))
	}
	opts.Scenarios = strings.Split(*scenarios, ",")
	if *rates != "" {
		for r := range strings.SplitSeq(*rates, ",") {
			v, err := strconv.ParseFloat(strings.TrimSpace(r), 64)
			if err != nil {
				return usageErr("--rates: %q is not a number", r)
			}
			opts.Rates = append(opts.Rates, v)
		}
	}
	if opts.Bin == "" {
		exe, err := os.Executable()
		if err != nil {
			return usageErr("finding this binary for --bin: %v", err)
		}
		opts.Bin = exe
	}
	if *out == "" {
		*out = filepath.Join("results", time.Now().UTC().Format("20060102T150405Z"))
	}
	opts.PutRoutes = bulkPutRoutes
	opts.Log = stderr

	report, err := bench.Run(ctx, opts)
	if report == nil {
		// Run fails without a report only on bad options.
		return usageErr("%v", err)
	}
	if werr := report.Write(*out); werr != nil {
		fmt.Fprintln(stderr, "snapgate bench:", werr)
		return 1
	}
	fmt.Fprint(stdout, report.Markdown())
	fmt.Fprintf(stdout, "\nreport written to %s\n", *out)
	if err != nil {
		fmt.Fprintln(stderr, "snapgate bench:", err)
		fmt.Fprintf(stderr, "snapgate bench: process logs were in %s\n", report.WorkDir)
		return 1
	}
	if rmErr := os.RemoveAll(report.WorkDir); rmErr != nil {
		fmt.Fprintln(stderr, "snapgate bench: removing the work dir:", rmErr)
	}
	return 0
}

func runBenchBackend(ctx context.Context, args []string, stderr io.Writer) int {
	fs := newFlagSet("bench backend", "bench backend --listen ADDR [--name NAME]", stderr)
	listen := fs.String("listen", "127.0.0.1:9001", "address to listen on")
	name := fs.String("name", "backend", "name at the start of every 64-byte body")
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	if fs.NArg() > 0 || len(*name) >= bench.BodySize {
		fmt.Fprintf(stderr, "snapgate bench backend: unexpected argument or --name longer than %d bytes\n", bench.BodySize-1)
		return 2
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintln(stderr, "snapgate bench backend:", err)
		return 1
	}
	if err := bench.ServeBackend(ctx, ln, *name); err != nil {
		fmt.Fprintln(stderr, "snapgate bench backend:", err)
		return 1
	}
	return 0
}

// bulkPutRoutes writes routes over bulkConns concurrent admin connections,
// the fastest path ctrl offers (it has no batch command). It stops at the
// first failure.
func bulkPutRoutes(parent context.Context, socket string, routes []bench.Route) error {
	ctx, cancel := context.WithCancel(parent)
	defer cancel()
	work := make(chan bench.Route)
	errc := make(chan error, bulkConns)
	var wg sync.WaitGroup
	for range bulkConns {
		cl, err := admin.DialContext(ctx, socket)
		if err != nil {
			cancel()
			wg.Wait()
			return fmt.Errorf("admin socket %s: %w", socket, err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer cl.Close()
			for r := range work {
				m := model.Route{ID: r.ID, Host: r.Host, Prefix: r.Prefix, Cluster: r.Cluster}
				if _, err := cl.PutRoute(ctx, m, nil); err != nil {
					errc <- fmt.Errorf("route %s: %w", r.ID, err)
					cancel()
					return
				}
			}
		}()
	}
feed:
	for _, r := range routes {
		select {
		case work <- r:
		case <-ctx.Done():
			break feed
		}
	}
	close(work)
	wg.Wait()
	select {
	case err := <-errc:
		return err
	default:
		return parent.Err()
	}
}
