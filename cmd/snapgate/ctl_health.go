package main

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/snapgate/snapgate/ctrl/admin"
)

// The health commands (docs/health.md): report-health for external
// checkers, health and explain-health for operators.

// healthCommands build the request of each top-level health command.
var healthCommands = map[string]func(args []string, g *ctlGlobals, stderr io.Writer) (admin.Request, error){
	"report-health":  reportHealthRequest,
	"health":         healthStatusRequest,
	"explain-health": explainHealthRequest,
}

const reportHealthSynopsis = "ctl report-health --cluster C --endpoint HOST:PORT --state healthy|unhealthy --revision N [--source NAME] [--detail TEXT]"

func reportHealthRequest(args []string, g *ctlGlobals, stderr io.Writer) (admin.Request, error) {
	fs := newFlagSet("ctl report-health", reportHealthSynopsis, stderr)
	g.register(fs)
	var r admin.HealthReport
	fs.StringVar(&r.Cluster, "cluster", "", "cluster id")
	fs.StringVar(&r.Endpoint, "endpoint", "", "endpoint address host:port, as in the cluster")
	fs.StringVar(&r.State, "state", "", "healthy or unhealthy")
	fs.Func("revision", "the checker's revision of this observation, at least 1 (a counter it persists, or a timestamp)", func(s string) error {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil || v == 0 {
			return fmt.Errorf("want a number of at least 1, got %q", s)
		}
		r.Revision = v
		return nil
	})
	fs.StringVar(&r.Source, "source", "", `checker name; recorded as "external:NAME" (default "`+admin.DefaultReportSource+`")`)
	fs.StringVar(&r.Detail, "detail", "", "what the checker saw, e.g. \"status 503\"")
	if err := parseInterleaved(fs, args); err != nil {
		return admin.Request{}, err
	}
	if fs.NArg() > 0 {
		return admin.Request{}, usagef("report-health takes no arguments, got %q", fs.Arg(0))
	}
	for _, f := range []struct{ name, v string }{{"cluster", r.Cluster}, {"endpoint", r.Endpoint}, {"state", r.State}} {
		if f.v == "" {
			return admin.Request{}, usagef("report-health: --%s is required; usage: %s", f.name, strings.TrimPrefix(reportHealthSynopsis, "ctl "))
		}
	}
	if r.Revision == 0 {
		return admin.Request{}, usagef("report-health: --revision is required; usage: %s", strings.TrimPrefix(reportHealthSynopsis, "ctl "))
	}
	if r.State != admin.StateHealthy && r.State != admin.StateUnhealthy {
		return admin.Request{}, usagef("report-health: --state %q: want healthy or unhealthy", r.State)
	}
	return admin.Request{Cmd: admin.CmdHealthReport, Report: &r}, nil
}

func healthStatusRequest(args []string, g *ctlGlobals, stderr io.Writer) (admin.Request, error) {
	fs := newFlagSet("ctl health", "ctl health [CLUSTER] [-o text|json]", stderr)
	g.register(fs)
	if err := parseInterleaved(fs, args); err != nil {
		return admin.Request{}, err
	}
	if fs.NArg() > 1 {
		return admin.Request{}, usagef("usage: health [CLUSTER]")
	}
	return admin.Request{Cmd: admin.CmdHealthStatus, ID: fs.Arg(0)}, nil
}

func explainHealthRequest(args []string, g *ctlGlobals, stderr io.Writer) (admin.Request, error) {
	fs := newFlagSet("ctl explain-health", "ctl explain-health [CLUSTER/]HOST:PORT [-o text|json]", stderr)
	g.register(fs)
	if err := parseInterleaved(fs, args); err != nil {
		return admin.Request{}, err
	}
	if fs.NArg() != 1 {
		return admin.Request{}, usagef("usage: explain-health [CLUSTER/]HOST:PORT")
	}
	// Cluster ids and addresses never contain '/', IPv6 literals included.
	cluster, endpoint, ok := strings.Cut(fs.Arg(0), "/")
	if !ok {
		cluster, endpoint = "", cluster
	}
	if endpoint == "" || ok && cluster == "" {
		return admin.Request{}, usagef("explain-health: %q: want [CLUSTER/]HOST:PORT", fs.Arg(0))
	}
	return admin.Request{Cmd: admin.CmdHealthExplain, ID: cluster, Endpoint: endpoint}, nil
}

func printHealthReport(w io.Writer, r *admin.HealthReport, res admin.HealthReportResult) {
	state := "unhealthy"
	if res.Healthy {
		state = "healthy"
	}
	switch res.Result {
	case "accepted":
		change := "no change"
		if res.Changed {
			change = "changed to " + state
		}
		fmt.Fprintf(w, "accepted: %s revision %d for %s in %s; endpoint %s (%s)\n", res.Source, r.Revision, r.Endpoint, r.Cluster, state, change)
	default:
		fmt.Fprintf(w, "%s: %s revision %d for %s in %s ignored; last accepted revision %d; endpoint %s\n", res.Result, res.Source, r.Revision, r.Endpoint, r.Cluster, res.LastRevision, state)
	}
}

// lastObservations is how many recent observations the health table shows.
const lastObservations = 3

func printHealth(w io.Writer, st admin.HealthStatus) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CLUSTER\tENDPOINT\tSTATE\tSINCE\tROUTABLE\tPANIC\tLAST OBSERVATIONS (newest first)")
	for _, c := range st.Clusters {
		inPanic := "no"
		if c.PublishedPanic {
			inPanic = "YES"
		}
		for _, e := range c.Endpoints {
			state := "healthy"
			if !e.Healthy {
				state = "UNHEALTHY"
			}
			if e.Published != e.Healthy {
				state += " (unpublished)"
			}
			routable := "no"
			if e.Routable {
				routable = "yes"
			}
			var obs []string
			for i := len(e.Observations) - 1; i >= 0 && len(obs) < lastObservations; i-- {
				o := e.Observations[i]
				verdict := "ok"
				if !o.OK {
					verdict = "FAIL"
				}
				obs = append(obs, fmt.Sprintf("%s %s@%d", verdict, o.Source, o.Revision))
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", c.Cluster, e.Address, state, e.Since.Local().Format(time.RFC3339), routable, inPanic, list(obs))
		}
	}
	tw.Flush()
	for _, c := range st.Clusters {
		fmt.Fprintf(w, "%s: %d of %d healthy, probe %s", c.Cluster, c.Healthy, c.Total, c.Probe)
		if c.PanicThresholdPercent > 0 {
			fmt.Fprintf(w, ", panic below %d%%", c.PanicThresholdPercent)
		}
		if c.SlowStartMs > 0 {
			fmt.Fprintf(w, ", slow start %dms", c.SlowStartMs)
		}
		fmt.Fprintln(w)
	}
}
