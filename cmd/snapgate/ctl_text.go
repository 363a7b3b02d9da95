package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/snapgate/snapgate/ctrl/admin"
	"github.com/snapgate/snapgate/ctrl/model"
)

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
	case req.Cmd == admin.CmdHealthReport:
		var res admin.HealthReportResult
		if err := json.Unmarshal(raw, &res); err != nil {
			return fmt.Errorf("ctrl sent a malformed report result: %w", err)
		}
		printHealthReport(w, req.Report, res)
	case req.Cmd == admin.CmdHealthStatus:
		var st admin.HealthStatus
		if err := json.Unmarshal(raw, &st); err != nil {
			return fmt.Errorf("ctrl sent a malformed health status: %w", err)
		}
		printHealth(w, st)
	case req.Cmd == admin.CmdEdgeForget:
		var e admin.EdgeStatus
		if err := json.Unmarshal(raw, &e); err != nil {
			return fmt.Errorf("ctrl sent a malformed edge: %w", err)
		}
		fmt.Fprintf(w, "edge %q forgotten (last connected from %s, applied version %d); it is listed again if it reconnects\n", e.NodeID, orNone(e.RemoteAddr), e.AppliedVersion)
	case req.Cmd == admin.CmdHealthExplain:
		var ex admin.HealthExplanation
		if err := json.Unmarshal(raw, &ex); err != nil {
			return fmt.Errorf("ctrl sent a malformed explanation: %w", err)
		}
		fmt.Fprint(w, ex.Text)
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
		case "put", "remove_key", "set_password":
			fmt.Fprintf(w, "%s %q stored: version %d (revision %d)\n", r.Kind, r.ID, r.Version, r.Revision)
		case "add_key":
			fmt.Fprintf(w, "%s %q stored: version %d (revision %d)\n", r.Kind, r.ID, r.Version, r.Revision)
			fmt.Fprintf(w, "new API key %q (shown this once; ctrl keeps only its hash):\n%s\n", newKeyID(r), r.APIKey)
		case "delete":
			fmt.Fprintf(w, "%s %q deleted (revision %d)\n", r.Kind, r.ID, r.Revision)
		default:
			printDoc(w, r)
		}
	}
	return nil
}

// newKeyID finds the id of the key add_key generated: the consumer's key
// with its hash.
func newKeyID(r admin.Result) string {
	if r.Consumer != nil {
		h := model.HashAPIKey(r.APIKey)
		for _, k := range r.Consumer.Credentials.APIKeys {
			if k.Hash == h {
				return k.ID
			}
		}
	}
	return "?"
}

// hashPrefix shortens an API key hash for tables: enough to tell keys
// apart and match them with a log line or a document.
func hashPrefix(h string) string {
	const n = len("sha256:") + 12
	if len(h) <= n {
		return h
	}
	return h[:n] + "…"
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
			fmt.Fprintf(tw, "headers[%d]\t%s\n", i, compact(h))
		}
		if rt.Priority != 0 {
			fmt.Fprintf(tw, "priority\t%d\n", rt.Priority)
		}
		if rt.RewritePrefix != "" {
			fmt.Fprintf(tw, "rewrite_prefix\t%s\n", rt.RewritePrefix)
		}
		if rt.Retry != nil {
			fmt.Fprintf(tw, "retry\t%s\n", compact(rt.Retry))
		}
		if rt.MaxStalenessMs != 0 {
			fmt.Fprintf(tw, "max_staleness_ms\t%d\non_stale\t%s\n", rt.MaxStalenessMs, orDefault(rt.OnStale, model.OnStaleServe))
		}
		if rt.StaleHeader {
			fmt.Fprintf(tw, "stale_header\ttrue\n")
		}
	}
	if c := r.Cluster; c != nil {
		for i, e := range c.Endpoints {
			fmt.Fprintf(tw, "endpoint[%d]\t%s\n", i, endpoint(e))
		}
		fmt.Fprintf(tw, "connect_timeout_ms\t%s\nlb\t%s\n", msOrDefault(c.ConnectTimeoutMs), orDefault(c.LB, model.LBRoundRobin))
		if c.HashOn != nil {
			fmt.Fprintf(tw, "hash_on\t%s\n", compact(c.HashOn))
		}
		if c.Health != nil {
			fmt.Fprintf(tw, "health\t%s\n", compact(c.Health))
		}
	}
	if c := r.Consumer; c != nil {
		fmt.Fprintf(tw, "groups\t%s\n", orNone(strings.Join(c.Groups, ",")))
		for _, k := range c.Credentials.APIKeys {
			fmt.Fprintf(tw, "api_key %s\t%s\n", k.ID, hashPrefix(k.Hash))
		}
		for _, j := range c.Credentials.JWT {
			fmt.Fprintf(tw, "jwt %s\tsubject %s\n", j.Issuer, orNone(j.Subject))
		}
		for _, b := range c.Credentials.Basic {
			fmt.Fprintf(tw, "basic\t%s\n", b.Username)
		}
	}
	if j := r.JWTIssuer; j != nil {
		fmt.Fprintf(tw, "issuer\t%s\naudiences\t%s\nalgorithms\t%s\nclock_skew_ms\t%d\nrequired_claims\t%s\n",
			j.Issuer, orNone(strings.Join(j.Audiences, ",")), orNone(strings.Join(j.Algorithms, ",")), j.ClockSkewMs, orNone(strings.Join(j.RequiredClaims, ",")))
		for i, k := range j.Keys.Keys {
			fmt.Fprintf(tw, "key[%d]\tkid %s, %s %s\n", i, orNone(k.Kid), k.Kty, k.Alg)
		}
	}
	if p := r.Policy; p != nil {
		fmt.Fprintf(tw, "scope\t%s\n", p.ScopeKey())
		for _, part := range []struct {
			name string
			v    any
			set  bool
		}{{"auth", p.Auth, p.Auth != nil}, {"acl", p.ACL, p.ACL != nil}, {"claims", p.Claims, p.Claims != nil}, {"forward", p.Forward, p.Forward != nil}} {
			if part.set {
				fmt.Fprintf(tw, "%s\t%s\n", part.name, compact(part.v))
			}
		}
		for i, l := range p.RateLimits {
			fmt.Fprintf(tw, "rate_limits[%d]\t%s\n", i, rateLimit(l))
		}
	}
	tw.Flush()
}

func printList(w io.Writer, kind string, l admin.List) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	switch kind {
	case model.KindRoute:
		fmt.Fprintln(tw, "ID\tHOST\tPATH\tCLUSTER\tTIMEOUT_MS\tVERSION")
		for _, it := range l.Items {
			if r := it.Route; r != nil {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\n", it.ID, r.Host, routePath(r), r.Cluster, msOrDefault(r.TimeoutMs), it.Version)
			}
		}
	case model.KindCluster:
		fmt.Fprintln(tw, "ID\tENDPOINTS\tLB\tCONNECT_TIMEOUT_MS\tVERSION")
		for _, it := range l.Items {
			if c := it.Cluster; c != nil {
				addrs := make([]string, len(c.Endpoints))
				for i, e := range c.Endpoints {
					addrs[i] = endpoint(e)
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\n", it.ID, strings.Join(addrs, ","), orDefault(c.LB, model.LBRoundRobin), msOrDefault(c.ConnectTimeoutMs), it.Version)
			}
		}
	case model.KindConsumer:
		fmt.Fprintln(tw, "ID\tGROUPS\tAPI_KEYS\tJWT\tBASIC\tVERSION")
		for _, it := range l.Items {
			if c := it.Consumer; c != nil {
				var keys, jwt, basic []string
				for _, k := range c.Credentials.APIKeys {
					keys = append(keys, k.ID+"="+hashPrefix(k.Hash))
				}
				for _, j := range c.Credentials.JWT {
					jwt = append(jwt, j.Issuer)
				}
				for _, b := range c.Credentials.Basic {
					basic = append(basic, b.Username)
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\n", it.ID, list(c.Groups), list(keys), list(jwt), list(basic), it.Version)
			}
		}
	case model.KindJWTIssuer:
		fmt.Fprintln(tw, "ID\tISSUER\tALGORITHMS\tKEYS\tVERSION")
		for _, it := range l.Items {
			if j := it.JWTIssuer; j != nil {
				var keys []string
				for _, k := range j.Keys.Keys {
					keys = append(keys, orNone(k.Kid)+"/"+k.Alg)
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\n", it.ID, j.Issuer, list(j.Algorithms), list(keys), it.Version)
			}
		}
	case model.KindPolicy:
		fmt.Fprintln(tw, "ID\tSCOPE\tMETHODS\tRATE_LIMITS\tVERSION")
		for _, it := range l.Items {
			if p := it.Policy; p != nil {
				var methods, limits []string
				if p.Auth != nil {
					methods = p.Auth.Methods
				}
				for _, rl := range p.RateLimits {
					limits = append(limits, rateLimit(rl))
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\n", it.ID, p.ScopeKey(), list(methods), list(limits), it.Version)
			}
		}
	}
	tw.Flush()
	fmt.Fprintf(w, "%s at revision %d\n", count(len(l.Items), nounOf(kind)), l.Revision)
}

func printStatus(w io.Writer, s admin.Status) {
	built := "never"
	if !s.SnapshotBuiltAt.IsZero() {
		built = s.SnapshotBuiltAt.Local().Format(time.RFC3339Nano)
	}
	fleet := "unused (no cluster-scope rate limit)"
	if s.FleetSize > 0 {
		fleet = strconv.FormatUint(uint64(s.FleetSize), 10) + " edges share cluster-scope rate limits"
	}
	fmt.Fprintf(w, "snapshot  version %d (parent %d), %d bytes, built %s\n", s.SnapshotVersion, s.SnapshotParent, s.SnapshotBytes, built)
	fmt.Fprintf(w, "store     revision %d (configuration %d), %s, %s\n", s.StoreRevision, s.ConfigRevision, count(s.Routes, "route"), count(s.Clusters, "cluster"))
	fmt.Fprintf(w, "auth      %s, %s, %s\n", count(s.Consumers, "consumer"), count(s.JWTIssuers, "jwt issuer"), count(s.Policies, "policy"))
	fmt.Fprintf(w, "fleet     %s\n\n", fleet)
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
		fmt.Fprintln(w, "(no edges: none has connected, or all were forgotten)")
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

// rateLimit shows a limit as "consumer 100/s burst 20" (", cluster" when
// fleet-wide).
func rateLimit(l model.RateLimit) string {
	s := fmt.Sprintf("%s %d/s burst %d", l.Key, l.Rate, l.Burst)
	if l.Scope == model.LimitScopeCluster {
		s += " cluster"
	}
	return s
}

func compact(v any) string {
	b, _ := json.Marshal(v) // documents of plain fields: cannot fail
	return string(b)
}

// endpoint shows an endpoint's address, with its weight when it has one
// ("10.0.0.1:80 weight 3").
func endpoint(e model.Endpoint) string {
	if e.Weight == 0 {
		return e.Address
	}
	return e.Address + " weight " + strconv.Itoa(int(e.Weight))
}

func list(ss []string) string { return orNone(strings.Join(ss, ",")) }

// orDefault shows an optional setting: s, or the default it stands for.
func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func orNone(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// count says "1 route", "2 routes", "0 policies".
func count(n int, noun string) string {
	if n != 1 {
		if s, ok := strings.CutSuffix(noun, "y"); ok {
			noun = s + "ies"
		} else {
			noun += "s"
		}
	}
	return strconv.Itoa(n) + " " + noun
}

func msOrDefault(ms uint32) string {
	if ms == 0 {
		return "default"
	}
	return strconv.FormatUint(uint64(ms), 10)
}
