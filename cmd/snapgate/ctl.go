package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/snapgate/snapgate/ctrl/admin"
	"github.com/snapgate/snapgate/ctrl/model"
)

const ctlSynopsis = `ctl [--socket PATH] [-o text|json] [--timeout D] <command>

commands:
  route put --id ID (--prefix /p | --path /p) --cluster C [--host H] [--timeout-ms N] [--expected-version N]
  route put -f route.json [--expected-version N]       (- reads stdin)
  route get ID | route list | route delete ID [--expected-version N]
  cluster put --id ID --endpoint HOST:PORT... [--connect-timeout-ms N] [--expected-version N]
  cluster put -f cluster.json [--expected-version N]
  cluster get ID | cluster list | cluster delete ID [--expected-version N]
  status

--expected-version N makes a put or delete conditional: it succeeds only if the
document's current version is N (0: it must not exist yet).
--socket, -o and --timeout may also follow the command (ctl route list -o json).

exit codes: 0 success, 1 the command failed (ctrl said no, or is unreachable), 2 bad usage

flags:`

// errUsage marks errors in the command line itself (exit code 2).
type errUsage struct{ msg string }

func (e errUsage) Error() string { return e.msg }

func usagef(format string, args ...any) error { return errUsage{fmt.Sprintf(format, args...)} }

// ctlGlobals are the flags every ctl command accepts, before or after the
// subcommand ("ctl -o json route list" and "ctl route list -o json").
type ctlGlobals struct {
	socket  string
	output  string
	timeout time.Duration
}

// register adds the global flags to fs, bound to g so that a later parse (the
// subcommand's) overrides an earlier one (before the subcommand).
func (g *ctlGlobals) register(fs *flag.FlagSet) {
	fs.StringVar(&g.socket, "socket", g.socket, "ctrl's admin socket (default from $SNAPGATE_SOCKET)")
	fs.StringVar(&g.output, "o", g.output, "output: text or json")
	fs.DurationVar(&g.timeout, "timeout", g.timeout, "give up on ctrl after this long")
}

// isGlobal reports whether a flag name is one of ctlGlobals'.
func isGlobal(name string) bool { return name == "socket" || name == "o" || name == "timeout" }

func runCtl(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	g := &ctlGlobals{socket: os.Getenv("SNAPGATE_SOCKET"), output: "text", timeout: 10 * time.Second}
	if g.socket == "" {
		g.socket = defaultSocket
	}
	fs := newFlagSet("ctl", ctlSynopsis, stderr)
	g.register(fs)
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	req, err := ctlRequest(fs.Args(), g, stderr)
	if err == flag.ErrHelp {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "snapgate ctl:", err)
		if _, ok := err.(errUsage); ok {
			return 2
		}
		return 1
	}
	if g.output != "text" && g.output != "json" {
		fmt.Fprintf(stderr, "snapgate ctl: -o %q: want text or json\n", g.output)
		return 2
	}
	ctx, cancel := context.WithTimeout(ctx, g.timeout)
	defer cancel()
	cl, err := admin.DialContext(ctx, g.socket)
	if err != nil {
		fmt.Fprintf(stderr, "snapgate ctl: cannot reach ctrl: %v\n", err)
		return 1
	}
	defer cl.Close()
	reply, err := cl.Call(ctx, req)
	if err != nil {
		fmt.Fprintln(stderr, "snapgate ctl:", err)
		return 1
	}
	if !reply.OK {
		if g.output == "json" {
			writeJSON(stdout, map[string]any{"error": reply.Error})
		}
		fmt.Fprintln(stderr, "snapgate ctl:", reply.Error)
		return 1
	}
	if g.output == "json" {
		var out bytes.Buffer
		if err := json.Indent(&out, reply.Result, "", "  "); err != nil {
			fmt.Fprintln(stderr, "snapgate ctl: ctrl sent a malformed result:", err)
			return 1
		}
		out.WriteByte('\n')
		stdout.Write(out.Bytes())
		return 0
	}
	if err := printText(stdout, req, reply.Result); err != nil {
		fmt.Fprintln(stderr, "snapgate ctl:", err)
		return 1
	}
	return 0
}

// ctlRequest turns the words after the leading global flags into one admin
// request; global flags may also follow the subcommand and update g.
func ctlRequest(args []string, g *ctlGlobals, stderr io.Writer) (admin.Request, error) {
	if len(args) == 0 {
		return admin.Request{}, usagef("missing command (route, cluster or status); see --help")
	}
	if args[0] == "status" {
		fs := newFlagSet("ctl status", "ctl status [-o text|json] [--socket PATH]", stderr)
		g.register(fs)
		if err := parseInterleaved(fs, args[1:]); err != nil {
			return admin.Request{}, err
		}
		if fs.NArg() > 0 {
			return admin.Request{}, usagef("status takes no arguments, got %q", fs.Arg(0))
		}
		return admin.Request{Cmd: admin.CmdStatus}, nil
	}
	kind := args[0]
	if kind != model.KindRoute && kind != model.KindCluster {
		return admin.Request{}, usagef("unknown command %q: want route, cluster or status", kind)
	}
	if len(args) < 2 {
		return admin.Request{}, usagef("%s: missing verb (put, get, list or delete)", kind)
	}
	verb, rest := args[1], args[2:]
	req := admin.Request{Cmd: kind + "." + verb}
	switch verb {
	case "list":
		fs := newFlagSet("ctl "+kind+" list", "ctl "+kind+" list [-o text|json]", stderr)
		g.register(fs)
		if err := parseInterleaved(fs, rest); err != nil {
			return req, err
		}
		if fs.NArg() > 0 {
			return req, usagef("%s list takes no arguments, got %q", kind, fs.Arg(0))
		}
		return req, nil
	case "get":
		fs := newFlagSet("ctl "+kind+" get", "ctl "+kind+" get ID [-o text|json]", stderr)
		g.register(fs)
		if err := parseInterleaved(fs, rest); err != nil {
			return req, err
		}
		if fs.NArg() != 1 {
			return req, usagef("usage: %s get ID", kind)
		}
		req.ID = fs.Arg(0)
		return req, nil
	case "delete":
		fs := newFlagSet("ctl "+kind+" delete", "ctl "+kind+" delete ID [--expected-version N]", stderr)
		g.register(fs)
		expected := expectedFlag(fs)
		if err := parseInterleaved(fs, rest); err != nil {
			return req, err
		}
		if fs.NArg() != 1 {
			return req, usagef("usage: %s delete ID [--expected-version N]", kind)
		}
		req.ID, req.ExpectedVersion = fs.Arg(0), expected.ptr()
		return req, nil
	case "put":
		return putRequest(req, kind, rest, g, stderr)
	}
	return req, usagef("%s: unknown verb %q: want put, get, list or delete", kind, verb)
}

func putRequest(req admin.Request, kind string, args []string, g *ctlGlobals, stderr io.Writer) (admin.Request, error) {
	fs := newFlagSet("ctl "+kind+" put", "ctl "+kind+" put (flags | -f FILE)", stderr)
	g.register(fs)
	file := fs.String("f", "", "read the document as JSON from FILE (- for stdin)")
	expected := expectedFlag(fs)
	id := fs.String("id", "", "document id")
	var r model.Route
	var c model.Cluster
	var endpoints multiFlag
	if kind == model.KindRoute {
		fs.StringVar(&r.Host, "host", "*", "exact host, or * for any host")
		fs.StringVar(&r.Prefix, "prefix", "", "path prefix, segment-aware (/api matches /api and /api/x)")
		fs.StringVar(&r.Path, "path", "", "exact path, instead of --prefix")
		fs.StringVar(&r.Cluster, "cluster", "", "cluster that serves the route")
		fs.Func("timeout-ms", "upstream timeout in ms (0: the edge default)", uintFlag(&r.TimeoutMs))
	} else {
		fs.Var(&endpoints, "endpoint", "backend address host:port (repeat for several)")
		fs.Func("connect-timeout-ms", "connect timeout in ms (0: the edge default)", uintFlag(&c.ConnectTimeoutMs))
	}
	if err := parseInterleaved(fs, args); err != nil {
		return req, err
	}
	if fs.NArg() > 0 {
		return req, usagef("%s put: unexpected argument %q", kind, fs.Arg(0))
	}
	req.ExpectedVersion = expected.ptr()
	if *file != "" {
		set := 0
		fs.Visit(func(f *flag.Flag) {
			if f.Name != "f" && f.Name != "expected-version" && !isGlobal(f.Name) {
				set++
			}
		})
		if set > 0 {
			return req, usagef("%s put: -f cannot be combined with document flags", kind)
		}
		data, err := readInput(*file)
		if err != nil {
			return req, err
		}
		if kind == model.KindRoute {
			r, err = model.DecodeRoute(data)
			req.Route = &r
		} else {
			c, err = model.DecodeCluster(data)
			req.Cluster = &c
		}
		if err != nil {
			return req, fmt.Errorf("%s: %w", *file, err)
		}
		return req, nil
	}
	if kind == model.KindRoute {
		r.ID = *id
		req.Route = &r
	} else {
		c.ID = *id
		for _, e := range endpoints {
			c.Endpoints = append(c.Endpoints, model.Endpoint{Address: e})
		}
		req.Cluster = &c
	}
	return req, nil
}

// parseInterleaved parses flags that may come before or after positional
// arguments ("route delete api --expected-version 3").
func parseInterleaved(fs *flag.FlagSet, args []string) error {
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			if err == flag.ErrHelp {
				return err // usage already printed; the caller exits 0
			}
			return usagef("%v", err)
		}
		if fs.NArg() == 0 {
			break
		}
		positional = append(positional, fs.Arg(0))
		args = fs.Args()[1:]
	}
	return fs.Parse(append([]string{"--"}, positional...))
}

func readInput(name string) ([]byte, error) {
	if name == "-" {
		return io.ReadAll(os.Stdin)
	}
	return os.ReadFile(name)
}

// optionalVersion is --expected-version: unset means an unconditional write.
type optionalVersion struct {
	set bool
	v   uint64
}

func expectedFlag(fs *flag.FlagSet) *optionalVersion {
	o := &optionalVersion{}
	fs.Func("expected-version", "write only if the current version is N (0: must not exist)", func(s string) error {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return fmt.Errorf("want a version number, got %q", s)
		}
		o.set, o.v = true, v
		return nil
	})
	return o
}

func (o *optionalVersion) ptr() *uint64 {
	if !o.set {
		return nil
	}
	return &o.v
}

func uintFlag(dst *uint32) func(string) error {
	return func(s string) error {
		v, err := strconv.ParseUint(s, 10, 32)
		if err != nil {
			return fmt.Errorf("want a number of milliseconds, got %q", s)
		}
		*dst = uint32(v)
		return nil
	}
}

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(s string) error { *m = append(*m, s); return nil }

func writeJSON(w io.Writer, v any) {
	b, _ := json.MarshalIndent(v, "", "  ")
	w.Write(append(b, '\n'))
}

// printText renders a successful reply for people.
func printText(w io.Writer, req admin.Request, raw json.RawMessage) error {
	kind, verb, _ := strings.Cut(req.Cmd, ".")
	switch {
	case req.Cmd == admin.CmdStatus:
		var s admin.Status
		if err := json.Unmarshal(raw, &s); err != nil {
			return fmt.Errorf("ctrl sent a malformed status: %w", err)
		}
		printStatus(w, s)
	case verb == "list":
		var l admin.List
		if err := json.Unmarshal(raw, &l); err != nil {
			return fmt.Errorf("ctrl sent a malformed list: %w", err)
		}
		printList(w, kind, l)
	default:
		var r admin.Result
		if err := json.Unmarshal(raw, &r); err != nil {
			return fmt.Errorf("ctrl sent a malformed result: %w", err)
		}
		switch verb {
		case "put":
			fmt.Fprintf(w, "%s %q stored: version %d (revision %d)\n", r.Kind, r.ID, r.Version, r.Revision)
		case "delete":
			fmt.Fprintf(w, "%s %q deleted (revision %d)\n", r.Kind, r.ID, r.Revision)
		default:
			printDoc(w, r)
		}
	}
	return nil
}

func printDoc(w io.Writer, r admin.Result) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "%s\t%s\nversion\t%d\nrevision\t%d\n", r.Kind, r.ID, r.Version, r.Revision)
	if rt := r.Route; rt != nil {
		fmt.Fprintf(tw, "host\t%s\npath\t%s\ncluster\t%s\ntimeout_ms\t%s\n", rt.Host, routePath(rt), rt.Cluster, msOrDefault(rt.TimeoutMs))
		if len(rt.Methods) > 0 {
			fmt.Fprintf(tw, "methods\t%s\n", strings.Join(rt.Methods, ","))
		}
		for i, h := range rt.Headers {
			b, _ := json.Marshal(h)
			fmt.Fprintf(tw, "headers[%d]\t%s\n", i, b)
		}
		if rt.Priority != 0 {
			fmt.Fprintf(tw, "priority\t%d\n", rt.Priority)
		}
		if rt.RewritePrefix != "" {
			fmt.Fprintf(tw, "rewrite_prefix\t%s\n", rt.RewritePrefix)
		}
		if rt.Retry != nil {
			b, _ := json.Marshal(rt.Retry)
			fmt.Fprintf(tw, "retry\t%s\n", b)
		}
	}
	if c := r.Cluster; c != nil {
		for i, e := range c.Endpoints {
			fmt.Fprintf(tw, "endpoint[%d]\t%s\n", i, e.Address)
		}
		fmt.Fprintf(tw, "connect_timeout_ms\t%s\n", msOrDefault(c.ConnectTimeoutMs))
	}
	tw.Flush()
}

func printList(w io.Writer, kind string, l admin.List) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	if kind == model.KindRoute {
		fmt.Fprintln(tw, "ID\tHOST\tPATH\tCLUSTER\tTIMEOUT_MS\tVERSION")
		for _, it := range l.Items {
			if r := it.Route; r != nil {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\n", it.ID, r.Host, routePath(r), r.Cluster, msOrDefault(r.TimeoutMs), it.Version)
			}
		}
	} else {
		fmt.Fprintln(tw, "ID\tENDPOINTS\tCONNECT_TIMEOUT_MS\tVERSION")
		for _, it := range l.Items {
			if c := it.Cluster; c != nil {
				addrs := make([]string, len(c.Endpoints))
				for i, e := range c.Endpoints {
					addrs[i] = e.Address
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%d\n", it.ID, strings.Join(addrs, ","), msOrDefault(c.ConnectTimeoutMs), it.Version)
			}
		}
	}
	tw.Flush()
	fmt.Fprintf(w, "%d %ss at revision %d\n", len(l.Items), kind, l.Revision)
}

func printStatus(w io.Writer, s admin.Status) {
	built := "never"
	if !s.SnapshotBuiltAt.IsZero() {
		built = s.SnapshotBuiltAt.Local().Format(time.RFC3339Nano)
	}
	fmt.Fprintf(w, "snapshot  version %d (parent %d), %d bytes, built %s\n", s.SnapshotVersion, s.SnapshotParent, s.SnapshotBytes, built)
	fmt.Fprintf(w, "store     revision %d, %d routes, %d clusters\n\n", s.StoreRevision, s.Routes, s.Clusters)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "EDGE\tADDRESS\tSTATE\tAPPLIED\tLAG\tLAG_MS\tLAST_ACK\tLAST_NACK")
	for _, e := range s.Edges {
		state := "down"
		if e.Connected {
			state = "up"
		}
		if e.Diverged {
			// Its snapshot history differs from ctrl's (docs/stream.md).
			state += ",diverged"
		}
		lastAck := "-"
		if !e.LastAck.IsZero() {
			lastAck = e.LastAck.Local().Format(time.TimeOnly)
		}
		nack := e.LastNack
		if nack == "" {
			nack = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%d\t%s\t%s\n", e.NodeID, e.RemoteAddr, state, e.AppliedVersion, e.Lag, e.LagMs, lastAck, nack)
	}
	tw.Flush()
	if len(s.Edges) == 0 {
		fmt.Fprintln(w, "(no edge has connected yet)")
	}
}

// routePath shows a route's path match: "prefix /api" (segment-aware) or
// "exact /api".
func routePath(r *model.Route) string {
	if r.Path != "" {
		return "exact " + r.Path
	}
	return "prefix " + r.Prefix
}

func msOrDefault(ms uint32) string {
	if ms == 0 {
		return "default"
	}
	return strconv.FormatUint(uint64(ms), 10)
}
