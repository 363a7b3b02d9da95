// Command snapgate is the single binary of the snapgate API gateway: the control
// plane (ctrl), the data plane (edge), the operator CLI (ctl) and a self-contained
// demo.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// command is one subcommand: run gets the arguments after its name and returns
// the process exit code.
type command struct {
	name, summary string
	run           func(ctx context.Context, args []string, stdout, stderr io.Writer) int
}

func commands() []command {
	return []command{
		{"ctrl", "run the control plane: store, admin socket, snapshot stream", runCtrl},
		{"edge", "run an edge: the HTTP proxy fed by ctrl's snapshots", runEdge},
		{"ctl", "operate ctrl through its admin socket (routes, clusters, consumers, issuers, policies, health, status, edges)", runCtl},
		{"load", "drive HTTP load at a fixed rate and report latency percentiles", runLoad},
		{"bench", "run the SLO benchmarks against real processes and write a report", runBench},
		{"demo", "start ctrl, an edge and two sample backends on 127.0.0.1", runDemo},
	}
}

func usage(w io.Writer) {
	fmt.Fprintf(w, "snapgate: an API gateway with a control plane and memory-mapped edge snapshots\n\n")
	fmt.Fprintf(w, "usage: snapgate <command> [flags]\n\ncommands:\n")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-6s %s\n", c.name, c.summary)
	}
	fmt.Fprintf(w, "\nRun 'snapgate <command> --help' for a command's flags.\n")
}

// stopSignals end a command gracefully: SIGHUP too, since closing the
// terminal of a daemon run in the foreground sends it, unless the process
// was started with SIGHUP ignored (nohup): asking for it would undo that.
func stopSignals() []os.Signal {
	sigs := []os.Signal{os.Interrupt, syscall.SIGTERM}
	if !signal.Ignored(syscall.SIGHUP) {
		sigs = append(sigs, syscall.SIGHUP)
	}
	return sigs
}

func main() {
	stops := stopSignals()
	ctx, cancel := context.WithCancel(context.Background())
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, stops...)
	go func() {
		sig := <-sigs
		// A second signal takes the default action: stop at once.
		signal.Reset(stops...)
		fmt.Fprintf(os.Stderr, "snapgate: %v: stopping (send it again to stop at once)\n", sig)
		cancel()
	}()
	code := dispatch(ctx, os.Args[1:], os.Stdout, os.Stderr)
	signal.Stop(sigs)
	os.Exit(code)
}

func dispatch(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return 2
	}
	switch args[0] {
	case "-h", "-help", "--help", "help":
		usage(stdout)
		return 0
	}
	for _, c := range commands() {
		if c.name == args[0] {
			return c.run(ctx, args[1:], stdout, stderr)
		}
	}
	fmt.Fprintf(stderr, "snapgate: unknown command %q\n\n", args[0])
	usage(stderr)
	return 2
}

// parseFlags parses args into fs and maps -h/--help to exit code 0 and a flag
// error to 2, the conventions of the flag package. The error is printed once,
// with a pointer to the usage.
func parseFlags(fs *flag.FlagSet, args []string) (code int, ok bool) {
	err := parseQuiet(fs, args)
	switch {
	case err == nil:
		return 0, true
	case errors.Is(err, flag.ErrHelp):
		return 0, false
	}
	fmt.Fprintf(fs.Output(), "%s: %v\n%s\n", fs.Name(), err, helpHint(fs))
	return 2, false
}

// parseQuiet is fs.Parse without the flag package's own report of a bad
// flag: the error followed by the whole usage, a page of flags that scrolls
// the error out of sight. The caller reports the error; -h and --help still
// print the usage.
func parseQuiet(fs *flag.FlagSet, args []string) error {
	usage, out := fs.Usage, fs.Output()
	fs.Usage = func() {}
	fs.SetOutput(io.Discard)
	err := fs.Parse(args)
	fs.Usage = usage
	fs.SetOutput(out)
	if errors.Is(err, flag.ErrHelp) {
		usage()
	}
	return err
}

// helpHint follows a flag error: where the usage is.
func helpHint(fs *flag.FlagSet) string {
	return "Run '" + fs.Name() + " --help' for usage."
}
