package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
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
  consumer put --id ID [--group G]... [--expected-version N]      (sets the groups, keeps the credentials)
  consumer put -f consumer.json [--expected-version N]            (the whole document)
  consumer get ID | consumer list | consumer delete ID [--expected-version N]
  consumer add-key CONSUMER [--id KEYID] [--expected-version N]   (prints the new key once)
  consumer remove-key CONSUMER KEYID [--expected-version N]
  consumer set-password CONSUMER USERNAME [--expected-version N]  (reads the password from stdin)
  issuer put -f issuer.json [--expected-version N]
  issuer get ID | issuer list | issuer delete ID [--expected-version N]
  policy put -f policy.json [--expected-version N]
  policy get ID | policy list | policy delete ID [--expected-version N]
  report-health --cluster C --endpoint HOST:PORT --state healthy|unhealthy --revision N [--source NAME] [--detail TEXT]
                                   (an external checker's verdict; returns once ctrl stored it)
  health [CLUSTER]                 (every endpoint's state, since when, routable, panic, last observations)
  explain-health [CLUSTER/]HOST:PORT
  status                           (the snapshot, document counts and every edge ctrl knows)
  edge forget NODE_ID              (drops a stopped edge from status and ctrl's store)

A put replaces the whole document: fields its flags do not set go back to
their defaults (use -f with the document from get -o json to change one).
--expected-version N makes a write conditional: it succeeds only if the
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
	fs.StringVar(&g.socket, "socket", g.socket, "ctrl's admin socket, its --admin-socket ($SNAPGATE_SOCKET sets the default)")
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
	if g.timeout <= 0 {
		fmt.Fprintf(stderr, "snapgate ctl: --timeout %v: want a positive duration such as 10s\n", g.timeout)
		return 2
	}
	// ctrl would refuse a malformed request (an invalid id, say) too; it is
	// the command line's fault, so it exits 2 without needing ctrl.
	if err := admin.CheckRequest(req); err != nil {
		fmt.Fprintln(stderr, "snapgate ctl:", err)
		return 2
	}
	ctx, cancel := context.WithTimeout(ctx, g.timeout)
	defer cancel()
	cl, err := admin.DialContext(ctx, g.socket)
	if err != nil {
		fmt.Fprintf(stderr, "snapgate ctl: cannot reach ctrl: %v%s\n", err, dialHint(err))
		return 1
	}
	defer cl.Close()
	reply, err := cl.Call(ctx, req)
	if ae, refused := errors.AsType[*admin.Error](err); refused {
		// Refused by the client before sending (too large, malformed):
		// reported as ctrl's refusals are.
		reply, err = admin.Reply{Error: ae}, nil
	}
	if err != nil {
		fmt.Fprintf(stderr, "snapgate ctl: %v%s\n", err, callHint(err, req, g.timeout))
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

// dialHint says what usually causes a failed connect to the admin socket.
func dialHint(err error) string {
	switch {
	case errors.Is(err, syscall.ENOENT), errors.Is(err, syscall.ECONNREFUSED):
		return "\n  is ctrl running? ctl's --socket (or $SNAPGATE_SOCKET) must name ctrl's --admin-socket"
	case errors.Is(err, syscall.EACCES):
		return "\n  the socket is mode 0600: run ctl as the user ctrl runs as"
	}
	return ""
}

// callHint explains a call that failed after the request was sent: a write
// may have been committed before ctrl's reply was lost, so retrying it
// blindly is not safe. A request the client refused itself gets none.
func callHint(err error, req admin.Request, timeout time.Duration) string {
	if _, refused := errors.AsType[*admin.Error](err); refused {
		return "" // refused before it was sent: nothing happened
	}
	var hint string
	if errors.Is(err, context.DeadlineExceeded) {
		hint = fmt.Sprintf("\n  ctrl did not answer within %v (--timeout)", timeout)
	}
	if !readOnly(req.Cmd) {
		hint += "\n  the change may or may not have been applied: check with get, health or status before retrying"
	}
	return hint
}

// readOnly reports whether an admin command changes nothing.
func readOnly(cmd string) bool {
	switch cmd {
	case admin.CmdStatus, admin.CmdHealthStatus, admin.CmdHealthExplain:
		return true
	}
	_, verb, _ := strings.Cut(cmd, ".")
	return verb == "get" || verb == "list"
}

// noun is a document kind as ctl names it.
type noun struct {
	kind string // the admin command prefix and reply kind
	// docFlags registers put's document flags and returns what builds the
	// request from them once parsed; nil: put takes only -f.
	docFlags func(fs *flag.FlagSet) func(req *admin.Request, id string)
	// decode strictly decodes put -f's document into the request.
	decode func(data []byte, req *admin.Request) error
	// verbs are the noun's commands beyond put, get, list and delete.
	verbs map[string]func(req *admin.Request, args []string, g *ctlGlobals, stderr io.Writer) (admin.Request, error)
}

var nouns = map[string]noun{
	"route": {kind: model.KindRoute, docFlags: routeFlags,
		decode: into(model.DecodeRoute, func(r *admin.Request, d *model.Route) { r.Route = d })},
	"cluster": {kind: model.KindCluster, docFlags: clusterFlags,
		decode: into(model.DecodeCluster, func(r *admin.Request, d *model.Cluster) { r.Cluster = d })},
	"consumer": {kind: model.KindConsumer, docFlags: consumerFlags,
		decode: into(model.DecodeConsumer, func(r *admin.Request, d *model.Consumer) { r.Consumer = d }),
		verbs:  map[string]func(*admin.Request, []string, *ctlGlobals, io.Writer) (admin.Request, error){"add-key": addKeyRequest, "remove-key": removeKeyRequest, "set-password": setPasswordRequest}},
	"issuer": {kind: model.KindJWTIssuer,
		decode: into(model.DecodeJWTIssuer, func(r *admin.Request, d *model.JWTIssuer) { r.JWTIssuer = d })},
	"policy": {kind: model.KindPolicy,
		decode: into(model.DecodePolicy, func(r *admin.Request, d *model.Policy) { r.Policy = d })},
}

// nounOf is the ctl noun of an admin kind, for messages.
func nounOf(kind string) string {
	for name, n := range nouns {
		if n.kind == kind {
			return name
		}
	}
	return kind
}

func into[T any](decode func([]byte) (T, error), set func(*admin.Request, *T)) func([]byte, *admin.Request) error {
	return func(data []byte, req *admin.Request) error {
		d, err := decode(data)
		if err != nil {
			return err
		}
		set(req, &d)
		return nil
	}
}

// ctlRequest turns the words after the leading global flags into one admin
// request; global flags may also follow the subcommand and update g.
func ctlRequest(args []string, g *ctlGlobals, stderr io.Writer) (admin.Request, error) {
	if len(args) == 0 {
		return admin.Request{}, usagef("missing command (route, cluster, consumer, issuer, policy, health, report-health, explain-health, status or edge); see --help")
	}
	if build, ok := healthCommands[args[0]]; ok {
		return build(args[1:], g, stderr)
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
	if args[0] == "edge" {
		return edgeRequest(args[1:], g, stderr)
	}
	name := args[0]
	n, ok := nouns[name]
	if !ok {
		return admin.Request{}, usagef("unknown command %q: want route, cluster, consumer, issuer, policy, health, report-health, explain-health, status or edge", name)
	}
	verbs := "put, get, list or delete"
	if len(n.verbs) > 0 {
		verbs = "put, get, list, delete, " + strings.Join(slices.Sorted(maps.Keys(n.verbs)), ", ")
	}
	if len(args) < 2 {
		return admin.Request{}, usagef("%s: missing verb (%s)", name, verbs)
	}
	verb, rest := args[1], args[2:]
	req := admin.Request{Cmd: n.kind + "." + verb}
	switch verb {
	case "list":
		fs := newFlagSet("ctl "+name+" list", "ctl "+name+" list [-o text|json]", stderr)
		g.register(fs)
		if err := parseInterleaved(fs, rest); err != nil {
			return req, err
		}
		if fs.NArg() > 0 {
			return req, usagef("%s list takes no arguments, got %q", name, fs.Arg(0))
		}
		return req, nil
	case "get":
		fs := newFlagSet("ctl "+name+" get", "ctl "+name+" get ID [-o text|json]", stderr)
		g.register(fs)
		if err := parseInterleaved(fs, rest); err != nil {
			return req, err
		}
		if fs.NArg() != 1 {
			return req, usagef("usage: %s get ID", name)
		}
		req.ID = fs.Arg(0)
		return req, nil
	case "delete":
		args, err := writeArgs(&req, "ctl "+name+" delete ID [--expected-version N]", 1, rest, g, stderr, nil)
		if err == nil {
			req.ID = args[0]
		}
		return req, err
	case "put":
		return putRequest(req, name, n, rest, g, stderr)
	}
	if v, ok := n.verbs[verb]; ok {
		return v(&req, rest, g, stderr)
	}
	return req, usagef("%s: unknown verb %q: want %s", name, verb, verbs)
}

const edgeForgetSynopsis = `ctl edge forget NODE_ID [-o text|json]

Removes a stopped edge, by its --node-id, from ctl status and from ctrl's
store: a decommissioned edge stays listed as down until it is forgotten.
A connected edge is refused (conflict): stop it first. An edge that
connects after it was forgotten is listed again, as new.

flags:`

// edgeRequest builds "edge forget NODE_ID", the one edge command.
func edgeRequest(args []string, g *ctlGlobals, stderr io.Writer) (admin.Request, error) {
	switch {
	case len(args) == 0:
		return admin.Request{}, usagef("edge: missing verb (forget)")
	case args[0] != "forget":
		return admin.Request{}, usagef("edge: unknown verb %q: want forget", args[0])
	}
	fs := newFlagSet("ctl edge forget", edgeForgetSynopsis, stderr)
	g.register(fs)
	if err := parseInterleaved(fs, args[1:]); err != nil {
		return admin.Request{}, err
	}
	if fs.NArg() != 1 {
		return admin.Request{}, usagef("usage: edge forget NODE_ID")
	}
	return admin.Request{Cmd: admin.CmdEdgeForget, NodeID: fs.Arg(0)}, nil
}

// writeArgs parses a write command that takes want positional arguments
// and --expected-version (plus the flags define adds), and returns them.
// synopsis starts with "ctl <noun> <verb>".
func writeArgs(req *admin.Request, synopsis string, want int, args []string, g *ctlGlobals, stderr io.Writer, define func(*flag.FlagSet)) ([]string, error) {
	fs := newFlagSet(strings.Join(strings.Fields(synopsis)[:3], " "), synopsis, stderr)
	g.register(fs)
	expected := expectedFlag(fs)
	if define != nil {
		define(fs)
	}
	if err := parseInterleaved(fs, args); err != nil {
		return nil, err
	}
	if fs.NArg() != want {
		return nil, usagef("usage: %s", strings.TrimPrefix(synopsis, "ctl "))
	}
	req.ExpectedVersion = expected.ptr()
	return fs.Args(), nil
}

func addKeyRequest(req *admin.Request, args []string, g *ctlGlobals, stderr io.Writer) (admin.Request, error) {
	var keyID string
	pos, err := writeArgs(req, "ctl consumer add-key CONSUMER [--id KEYID] [--expected-version N]", 1, args, g, stderr, func(fs *flag.FlagSet) {
		fs.StringVar(&keyID, "id", "", `name of the new key (default "key-<n>", the first free)`)
	})
	if err != nil {
		return *req, err
	}
	req.Cmd, req.ID, req.KeyID = admin.CmdConsumerAddKey, pos[0], keyID
	return *req, nil
}

func removeKeyRequest(req *admin.Request, args []string, g *ctlGlobals, stderr io.Writer) (admin.Request, error) {
	pos, err := writeArgs(req, "ctl consumer remove-key CONSUMER KEYID [--expected-version N]", 2, args, g, stderr, nil)
	if err != nil {
		return *req, err
	}
	req.Cmd, req.ID, req.KeyID = admin.CmdConsumerRemoveKey, pos[0], pos[1]
	return *req, nil
}

// setPasswordRequest reads the password from stdin and hashes it here, so
// the plaintext never reaches ctrl, its socket or its logs.
func setPasswordRequest(req *admin.Request, args []string, g *ctlGlobals, stderr io.Writer) (admin.Request, error) {
	pos, err := writeArgs(req, "ctl consumer set-password CONSUMER USERNAME [--expected-version N]", 2, args, g, stderr, nil)
	if err != nil {
		return *req, err
	}
	pw, err := readPassword(os.Stdin)
	if err != nil {
		return *req, err
	}
	hash, err := model.HashPassword(pw)
	if err != nil {
		return *req, err
	}
	req.Cmd, req.ID, req.Username, req.PasswordHash = admin.CmdConsumerSetPassword, pos[0], pos[1], hash
	return *req, nil
}

// maxPassword bounds what readPassword accepts; PBKDF2 takes any length,
// but a megabyte on stdin is a mistake, not a password.
const maxPassword = 1024

// readPassword reads the first line of r (without its line ending).
func readPassword(r io.Reader) (string, error) {
	line, err := bufio.NewReaderSize(r, maxPassword+2).ReadSlice('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		if errors.Is(err, bufio.ErrBufferFull) {
			return "", fmt.Errorf("password on stdin: longer than %d bytes", maxPassword)
		}
		return "", fmt.Errorf("reading the password from stdin: %w", err)
	}
	pw := strings.TrimSuffix(strings.TrimSuffix(string(line), "\n"), "\r")
	switch {
	case pw == "":
		return "", errors.New("password on stdin: empty (pipe it in: printf '%s' \"$PW\" | snapgate ctl consumer set-password ...)")
	case len(pw) > maxPassword:
		return "", fmt.Errorf("password on stdin: longer than %d bytes", maxPassword)
	}
	return pw, nil
}

func putRequest(req admin.Request, name string, n noun, args []string, g *ctlGlobals, stderr io.Writer) (admin.Request, error) {
	synopsis := "ctl " + name + " put -f FILE"
	if n.docFlags != nil {
		synopsis = "ctl " + name + " put (flags | -f FILE)"
	}
	fs := newFlagSet("ctl "+name+" put", synopsis, stderr)
	g.register(fs)
	file := fs.String("f", "", "read the document as JSON from FILE (- for stdin)")
	expected := expectedFlag(fs)
	var id *string
	var build func(req *admin.Request, id string)
	if n.docFlags != nil {
		id = fs.String("id", "", "document id")
		build = n.docFlags(fs)
	}
	if err := parseInterleaved(fs, args); err != nil {
		return req, err
	}
	if fs.NArg() > 0 {
		return req, usagef("%s put: unexpected argument %q", name, fs.Arg(0))
	}
	req.ExpectedVersion = expected.ptr()
	if *file == "" {
		if build == nil {
			return req, usagef("%s put: -f FILE is required: the document is JSON (docs/auth.md)", name)
		}
		if *id != "" {
			if err := admin.CheckID("--id", *id); err != nil {
				return req, usagef("%s put: %v", name, err)
			}
		}
		build(&req, *id)
		return req, nil
	}
	set := 0
	fs.Visit(func(f *flag.Flag) {
		if f.Name != "f" && f.Name != "expected-version" && !isGlobal(f.Name) {
			set++
		}
	})
	if set > 0 {
		return req, usagef("%s put: -f cannot be combined with document flags", name)
	}
	data, err := readInput(*file)
	if err != nil {
		return req, err
	}
	if err := n.decode(data, &req); err != nil {
		src := *file
		if src == "-" {
			src = "stdin"
		}
		return req, fmt.Errorf("%s: %w", src, err)
	}
	return req, nil
}

func routeFlags(fs *flag.FlagSet) func(*admin.Request, string) {
	var r model.Route
	fs.StringVar(&r.Host, "host", "*", "exact host, *.example.com for any subdomain, or * for any host")
	fs.StringVar(&r.Prefix, "prefix", "", "path prefix, segment-aware (/api matches /api and /api/x)")
	fs.StringVar(&r.Path, "path", "", "exact path, instead of --prefix")
	fs.StringVar(&r.Cluster, "cluster", "", "cluster that serves the route")
	fs.Func("timeout-ms", "upstream timeout in ms (0: the edge default)", uintFlag(&r.TimeoutMs))
	return func(req *admin.Request, id string) {
		r.ID = id
		req.Route = &r
	}
}

func clusterFlags(fs *flag.FlagSet) func(*admin.Request, string) {
	var c model.Cluster
	var endpoints multiFlag
	fs.Var(&endpoints, "endpoint", "backend address host:port (repeat for several)")
	fs.Func("connect-timeout-ms", "connect timeout in ms (0: the edge default)", uintFlag(&c.ConnectTimeoutMs))
	return func(req *admin.Request, id string) {
		c.ID = id
		for _, e := range endpoints {
			c.Endpoints = append(c.Endpoints, model.Endpoint{Address: e})
		}
		req.Cluster = &c
	}
}

// consumerFlags make a consumer's groups; its credentials are managed by
// add-key, remove-key and set-password, and a put from flags keeps them:
// ctrl copies the stored ones as it writes, so no change made since ctl
// could have read them is undone.
func consumerFlags(fs *flag.FlagSet) func(*admin.Request, string) {
	var groups multiFlag
	fs.Var(&groups, "group", "group the consumer belongs to, for policy ACLs (repeat for several)")
	return func(req *admin.Request, id string) {
		req.Consumer = &model.Consumer{ID: id, Groups: groups}
		req.KeepCredentials = true
	}
}

// parseInterleaved parses flags that may come before or after positional
// arguments ("route delete api --expected-version 3").
func parseInterleaved(fs *flag.FlagSet, args []string) error {
	var positional []string
	for {
		if err := parseQuiet(fs, args); err != nil {
			if err == flag.ErrHelp {
				return err // usage already printed; the caller exits 0
			}
			return usagef("%v\n%s", err, helpHint(fs))
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
