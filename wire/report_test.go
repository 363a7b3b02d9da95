package wire

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestReportRoundTrip(t *testing.T) {
	in := Report{Observations: []Observation{
		{Cluster: "api", Endpoint: "10.0.0.1:8080", Cause: CauseConnect, Revision: 7, UnixNano: 1_700_000_000_000_000_000},
		{Cluster: "api", Endpoint: "10.0.0.2:8080", Cause: CauseTimeout, Revision: 8, UnixNano: -1},
		{Cluster: "web", Endpoint: "[::1]:80", OK: true, Cause: CauseRecovered, Revision: 9},
		{Cluster: "web", Endpoint: "10.0.0.3:80", Cause: Cause5xx, Revision: 10},
	}}
	p, err := AppendReport(nil, in)
	if err != nil {
		t.Fatal(err)
	}
	out, err := DecodeReportIn(Report{}, p, ProtocolVersion)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(in, out) {
		t.Fatalf("got %+v, want %+v", out, in)
	}
}

// FitReport takes the longest run of observations whose REPORT is within
// the limit: the encoded payload fits, one more would not, and the count
// stops at MaxReportObservations.
func TestFitReport(t *testing.T) {
	var obs []Observation
	for i := range 3000 {
		obs = append(obs, Observation{Cluster: strings.Repeat("c", 1+i%MaxReportName), Endpoint: strings.Repeat("e", 1+(i*7)%MaxReportName),
			Cause: CauseReset, Revision: uint64(i + 1)})
	}
	size := func(o []Observation) int {
		p, err := AppendReport(nil, Report{Observations: o})
		if err != nil {
			t.Fatal(err)
		}
		return len(p)
	}
	for _, limit := range []int{2 + obsFixed + 2*MaxReportName, 4096, 10000, MaxEdgePayload} {
		sent := 0
		for rest := obs; len(rest) > 0; {
			n := FitReport(rest, limit)
			if n == 0 {
				t.Fatalf("limit %d: no observation fits", limit)
			}
			if got := size(rest[:n]); got > limit {
				t.Fatalf("limit %d: %d observations encode to %d bytes", limit, n, got)
			}
			if n < len(rest) && n < MaxReportObservations && size(rest[:n+1]) <= limit {
				t.Fatalf("limit %d: took %d observations, %d fit", limit, n, n+1)
			}
			sent += n
			rest = rest[n:]
		}
		if sent != len(obs) {
			t.Fatalf("limit %d: %d of %d observations sent", limit, sent, len(obs))
		}
	}
	short := make([]Observation, 2*MaxReportObservations)
	for i := range short {
		short[i] = Observation{Cluster: "a", Endpoint: "b", Cause: CauseReset, Revision: 1}
	}
	if n := FitReport(short, DefaultMaxPayload); n != MaxReportObservations {
		t.Fatalf("took %d short observations, want the cap %d", n, MaxReportObservations)
	}
}

func TestReportRefusals(t *testing.T) {
	ok := Observation{Cluster: "c", Endpoint: "e:1", Cause: CauseConnect, Revision: 1}
	with := func(f func(o *Observation)) Report {
		o := ok
		f(&o)
		return Report{Observations: []Observation{o}}
	}
	cases := []struct {
		name string
		in   Report
		want string
	}{
		{"empty", Report{}, "0 observations"},
		{"too many", Report{Observations: make([]Observation, MaxReportObservations+1)}, "1025 observations"},
		{"no cluster", with(func(o *Observation) { o.Cluster = "" }), "cluster is 0 bytes"},
		{"long endpoint", with(func(o *Observation) { o.Endpoint = strings.Repeat("a", MaxReportName+1) }), "endpoint is 256 bytes"},
		{"space in endpoint", with(func(o *Observation) { o.Endpoint = "a b" }), "endpoint byte 1"},
		{"revision 0", with(func(o *Observation) { o.Revision = 0 }), "revision 0"},
		{"unknown cause", with(func(o *Observation) { o.Cause = 5 }), "cause(5), unknown in protocol version 4"},
		{"ok with 5xx", with(func(o *Observation) { o.OK, o.Cause = true, Cause5xx }), "ok=true with cause 5xx"},
		{"ok with failure cause", with(func(o *Observation) { o.OK = true }), "ok=true with cause connect-failure"},
		{"failure without cause", with(func(o *Observation) { o.Cause = CauseRecovered }), "ok=false with cause recovered"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := AppendReport(nil, c.in)
			if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want ErrMalformed mentioning %q", err, c.want)
			}
		})
	}

	good, _ := AppendReport(nil, Report{Observations: []Observation{ok}})
	bad := []struct {
		name string
		p    []byte
		want string
	}{
		{"short", good[:1], "want at least 2"},
		{"zero count", []byte{0, 0}, "declares 0"},
		{"huge count", []byte{0xff, 0xff}, "declares 65535"},
		{"truncated fixed", good[:10], "truncated"},
		{"truncated endpoint", good[:len(good)-1], "endpoint of 3 bytes is truncated"},
		{"trailing", append(append([]byte{}, good...), 0), "1 bytes after"},
		{"ok byte 2", func() []byte { b := append([]byte{}, good...); b[2+16] = 2; return b }(), "ok byte 2"},
		{"cluster length past end", func() []byte { b := append([]byte{}, good...); b[2+18] = 200; return b }(), "cluster of 200 bytes is truncated"},
	}
	for _, c := range bad {
		t.Run("decode "+c.name, func(t *testing.T) {
			_, err := DecodeReportIn(Report{}, c.p, ProtocolVersion)
			if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want ErrMalformed mentioning %q", err, c.want)
			}
		})
	}
}

// Cause5xx exists from protocol 4: a version-3 REPORT carrying it is
// malformed, as a version-3 ctrl sees it, and the other causes are the
// same in both.
func TestReportCauseVersions(t *testing.T) {
	for c := CauseRecovered; c <= CauseTimeout; c++ {
		if !c.KnownIn(3) || !c.KnownIn(4) {
			t.Errorf("%s unknown in 3 or 4", c)
		}
	}
	if Cause5xx.KnownIn(3) || !Cause5xx.KnownIn(4) || Cause(5).KnownIn(4) {
		t.Fatal("KnownIn: 5xx must be known from 4 only, cause(5) never")
	}
	o := Observation{Cluster: "api", Endpoint: "10.0.0.1:80", Cause: Cause5xx, Revision: 3}
	p, err := AppendReport(nil, Report{Observations: []Observation{o}})
	if err != nil {
		t.Fatal(err)
	}
	if err := o.ValidateIn(3); !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), "5xx, unknown in protocol version 3") {
		t.Fatalf("ValidateIn(3): got %v", err)
	}
	if _, err := DecodeReportIn(Report{}, p, 3); !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), "observation 0: ") {
		t.Fatalf("DecodeReportIn(3): got %v, want ErrMalformed for observation 0", err)
	}
	m, err := DecodeReportIn(Report{}, p, 4)
	if err != nil || len(m.Observations) != 1 || m.Observations[0] != o {
		t.Fatalf("DecodeReportIn(4): got %+v, %v", m, err)
	}
	o.Cause = CauseReset
	p, _ = AppendReport(nil, Report{Observations: []Observation{o}})
	if _, err := DecodeReportIn(Report{}, p, 3); err != nil {
		t.Fatalf("version 3 refused a reset: %v", err)
	}
}
