package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/snapgate/snapgate/wire"
)

// loadConfig fills into from a YAML file. Unknown keys are errors: a typo in a
// config file must not silently fall back to a default.
func loadConfig(path string, into any) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("config %s: %w", path, err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(into); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("config %s: %w", path, err)
	}
	return nil
}

// newLogger returns a text logger at the named level.
func newLogger(w io.Writer, level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("log level %q: want debug, info, warn or error", level)
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l})), nil
}

// newFlagSet returns a FlagSet whose usage names the command and its purpose.
func newFlagSet(name, synopsis string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("snapgate "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: snapgate %s\n\n", synopsis)
		fs.PrintDefaults()
	}
	return fs
}

// nonNegative refuses a negative duration or count in any flag, from the
// command line or the config file. The daemons would otherwise take their
// default for it, as they do for 0, and a typo would go unnoticed.
func nonNegative(fs *flag.FlagSet, fromFile bool) error {
	onCommandLine := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { onCommandLine[f.Name] = true })
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		g, ok := f.Value.(flag.Getter)
		if err != nil || !ok {
			return
		}
		var neg bool
		switch v := g.Get().(type) {
		case time.Duration:
			neg = v < 0
		case int:
			neg = v < 0
		case int64:
			neg = v < 0
		}
		if neg {
			name := "--" + f.Name
			if fromFile && !onCommandLine[f.Name] {
				name += " (config key " + strings.ReplaceAll(f.Name, "-", "_") + ")"
			}
			err = fmt.Errorf("%s is %s: must not be negative (0 takes the default)", name, f.Value)
		}
	})
	return err
}

// daemon is what ctrl and edge share after their command line is parsed.
type daemon struct {
	log    *slog.Logger
	secret []byte // the stream secret, nil when no file was given
}

// parseDaemon reads a daemon's command line over cfg: the flags that define
// registers, then the --config file they name, then the flags once more so
// that the command line wins over the file; then the logger and the stream
// secret. It returns the exit code to use when ok is false.
func parseDaemon(name string, args []string, stderr io.Writer, cfg any, logLevel, secretFile *string, define func(*flag.FlagSet)) (d daemon, code int, ok bool) {
	fail := func(err error) (daemon, int, bool) {
		fmt.Fprintf(stderr, "snapgate %s: %v\n", name, err)
		return daemon{}, 2, false
	}
	fs := newFlagSet(name, name+" [--config "+name+".yaml] [flags]", stderr)
	path := fs.String("config", "", "YAML config file; flags override its values")
	define(fs)
	if code, ok := parseFlags(fs, args); !ok {
		return daemon{}, code, false
	}
	if fs.NArg() > 0 {
		return fail(fmt.Errorf("unexpected argument %q", fs.Arg(0)))
	}
	if *path != "" {
		if err := loadConfig(*path, cfg); err != nil {
			return fail(err)
		}
		if code, ok := parseFlags(fs, args); !ok {
			return daemon{}, code, false
		}
	}
	if err := nonNegative(fs, *path != ""); err != nil {
		return fail(err)
	}
	log, err := newLogger(stderr, *logLevel)
	if err != nil {
		return fail(err)
	}
	d.log = log
	if *secretFile != "" {
		if d.secret, err = wire.ReadSecretFile(*secretFile); err != nil {
			return fail(err)
		}
	}
	return d, 0, true
}

// checkListenAddrs checks the shape of listen addresses given as flag, value
// pairs (an empty value is left to the daemon: off, or required), so that a
// malformed one is reported by its flag before anything starts; it reports
// whether all passed.
func checkListenAddrs(stderr io.Writer, cmd string, flagValues ...string) bool {
	for i := 0; i+1 < len(flagValues); i += 2 {
		flag, addr := flagValues[i], flagValues[i+1]
		if addr == "" {
			continue
		}
		_, port, err := net.SplitHostPort(addr)
		if err == nil {
			// A number (0: any free port) or a service name from
			// /etc/services, as net.Listen takes.
			if _, perr := net.LookupPort("tcp", port); perr != nil {
				err = fmt.Errorf("port %q: want a number from 0 to 65535", port)
			}
		}
		if err != nil {
			fmt.Fprintf(stderr, "snapgate %s: %s %q: want host:port (\":8080\" for every address): %v\n", cmd, flag, addr, err)
			return false
		}
	}
	return true
}
