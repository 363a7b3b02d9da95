package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/snapgate/snapgate/loadtest"
)

const loadSynopsis = `load --target HOST:PORT [--rate R] [--duration D] [flags]

Sends HTTP/1.1 load over keep-alive connections and reports latency from each
request's scheduled send time, so a server stall shows in the percentiles.

--rate:
  1000                   open loop, 1000 requests/s (for --duration, default 10s)
  1000:5s,2000:5s        steps
  100-1000:10s,1000      a linear ramp over 10s, then 1000/s until --duration
  max                    closed loop: each connection sends back to back

--slo p99=2ms,p999=10ms,max=50ms,errors=0.1%  (errors counts failures, unsent
requests and 5xx responses)

exit codes: 0 done (and the SLO held), 1 the SLO failed or the run was
interrupted, 2 bad usage

flags:`

// defaultLoadDuration applies when neither --duration nor the schedule says
// how long to run.
const defaultLoadDuration = 10 * time.Second

func runLoad(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("load", loadSynopsis, stderr)
	target := fs.String("target", "", "host:port to send requests to (required)")
	host := fs.String("host", "", "Host header (default: the target)")
	method := fs.String("method", "GET", "request method")
	var paths, headers multiFlag
	fs.Var(&paths, "path", "request path; repeat for several, used round robin (default /)")
	fs.Var(&headers, "header", `extra header "Name: value"; repeatable (e.g. an API key)`)
	body := fs.String("body", "", "request body")
	bodyFile := fs.String("body-file", "", "read the request body from this file")
	conns := fs.Int("conns", 16, "keep-alive connections, one worker each")
	rate := fs.String("rate", "1000", "requests/s, steps, a ramp, or max (see above)")
	duration := fs.Duration("duration", 0, "measured run length (default: the schedule's own length, else 10s)")
	warmup := fs.Duration("warmup", 0, "unmeasured warmup before the run, at the schedule's starting rate")
	timeout := fs.Duration("timeout", 5*time.Second, "per-request timeout, connect included")
	sloText := fs.String("slo", "", "objectives that set the exit code, e.g. p99=2ms,errors=0.1%")
	output := fs.String("o", "text", "output: text or json")
	progress := fs.Bool("progress", false, "print a progress line every second even when stderr is not a terminal")
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	usageErr := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "snapgate load: "+format+"\n", a...)
		return 2
	}
	if fs.NArg() > 0 {
		return usageErr("unexpected argument %q", fs.Arg(0))
	}
	if *target == "" {
		return usageErr("--target is required (host:port)")
	}
	// loadtest.Config takes a zero for its default; on the command line a
	// zero or negative value is a mistake to point out, not to replace.
	switch {
	case *conns < 1 || *conns > loadtest.MaxConns:
		return usageErr("--conns %d: want 1 to %d connections", *conns, loadtest.MaxConns)
	case *timeout <= 0:
		return usageErr("--timeout %v: want a positive duration, each request's limit", *timeout)
	case *duration < 0:
		return usageErr("--duration %v: must not be negative (0: the schedule's own length, else %v)", *duration, defaultLoadDuration)
	case *warmup < 0:
		return usageErr("--warmup %v: must not be negative", *warmup)
	case *method == "":
		return usageErr("--method is empty: want a request method such as GET")
	}
	if *output != "text" && *output != "json" {
		return usageErr("-o %q: want text or json", *output)
	}
	sched, err := loadtest.ParseSchedule(*rate)
	if err != nil {
		return usageErr("--rate: %v", err)
	}
	var slo loadtest.SLO
	if *sloText != "" {
		if slo, err = loadtest.ParseSLO(*sloText); err != nil {
			return usageErr("--slo: %v", err)
		}
	}
	hdrs := make([][2]string, 0, len(headers))
	for _, h := range headers {
		name, value, ok := strings.Cut(h, ":")
		if !ok || strings.TrimSpace(name) != name || name == "" {
			return usageErr(`--header %q: want "Name: value"`, h)
		}
		hdrs = append(hdrs, [2]string{name, strings.TrimSpace(value)})
	}
	if *body != "" && *bodyFile != "" {
		return usageErr("--body and --body-file are exclusive")
	}
	reqBody := []byte(*body)
	if *bodyFile != "" {
		if reqBody, err = os.ReadFile(*bodyFile); err != nil {
			return usageErr("--body-file: %v", err)
		}
	}
	if *duration == 0 && sched.Length() == 0 {
		*duration = defaultLoadDuration
	}

	cfg := loadtest.Config{
		Target:   *target,
		Host:     *host,
		Method:   *method,
		Paths:    paths,
		Headers:  hdrs,
		Body:     reqBody,
		Conns:    *conns,
		Schedule: sched,
		Duration: *duration,
		Warmup:   *warmup,
		Timeout:  *timeout,
		SLO:      slo,
	}
	var line *progressLine
	if *progress || isTerminal(stderr) {
		line = &progressLine{w: stderr, overwrite: isTerminal(stderr)}
		cfg.Progress = line.print
	}
	res, err := loadtest.Run(ctx, cfg)
	if line != nil {
		line.finish()
	}
	if res == nil {
		// Run only fails without a result when the configuration is invalid.
		return usageErr("%v", err)
	}
	if *output == "json" {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(res); err != nil {
			fmt.Fprintln(stderr, "snapgate load: writing the result:", err)
			return 1
		}
	} else if err := res.WriteText(stdout); err != nil {
		fmt.Fprintln(stderr, "snapgate load: writing the result:", err)
		return 1
	}
	switch {
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		fmt.Fprintln(stderr, "snapgate load: interrupted; the result covers the part that ran")
		return 1
	case err != nil:
		// The pacer failed (its timer): the run stopped early.
		fmt.Fprintf(stderr, "snapgate load: stopped early: %v; the result covers the part that ran\n", err)
		return 1
	case !res.Passed():
		return 1
	}
	return 0
}

// progressLine prints Progress updates: rewritten in place on a terminal,
// one line each otherwise.
type progressLine struct {
	mu        sync.Mutex
	w         io.Writer
	overwrite bool
	printed   bool
}

func (p *progressLine) print(s loadtest.Progress) {
	var b strings.Builder
	fmt.Fprintf(&b, "%5.0fs ", s.Elapsed.Seconds())
	if s.Warmup {
		b.WriteString("warmup ")
	}
	fmt.Fprintf(&b, "sent %d  done %d  errors %d  %.0f/s", s.Sent, s.Completed, s.Errors, s.Rate)
	if s.TargetRate > 0 {
		fmt.Fprintf(&b, " of %.0f/s  backlog %d", s.TargetRate, s.Backlog)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.overwrite {
		fmt.Fprintf(p.w, "\r%s\x1b[K", b.String())
	} else {
		fmt.Fprintln(p.w, b.String())
	}
	p.printed = true
}

// finish clears an in-place line so the report starts on a clean line.
func (p *progressLine) finish() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.overwrite && p.printed {
		fmt.Fprint(p.w, "\r\x1b[K")
	}
}

// isTerminal reports whether w is a character device (a terminal, in
// practice), without a dependency on x/term.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
