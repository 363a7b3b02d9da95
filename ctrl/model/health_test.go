package model

import (
	"fmt"
	"reflect"
	"strings"
	"testing"
)

func TestHealthCheckValidate(t *testing.T) {
	tests := []struct {
		name   string
		h      HealthCheck
		field  string // "" = valid
		reason string
	}{
		{"empty", HealthCheck{}, "", ""},
		{"passive only", HealthCheck{UnhealthyThreshold: 5, HealthyThreshold: 1, PassiveExpiryMs: 1000, PanicThresholdPercent: 50}, "", ""},
		{"http full", HealthCheck{Type: "http", Path: "/healthz?deep=1", IntervalMs: 100, JitterMs: 50, TimeoutMs: 100,
			ExpectedStatuses: []string{"200", "204-299", "599"}, UnhealthyThreshold: 100, HealthyThreshold: 1,
			MinHoldMs: MaxHoldMs, PanicThresholdPercent: 100, SlowStartMs: MaxSlowStartMs}, "", ""},
		{"tcp", HealthCheck{Type: "tcp", IntervalMs: MaxProbeIntervalMs}, "", ""},
		{"timeout default capped", HealthCheck{Type: "tcp", IntervalMs: 500}, "", ""},

		{"bad type", HealthCheck{Type: "grpc"}, "health.type", "not a probe type"},
		{"path without probe", HealthCheck{Path: "/x"}, "health.path", "active probe"},
		{"interval without probe", HealthCheck{IntervalMs: 1000}, "health.interval_ms", "active probe"},
		{"jitter without probe", HealthCheck{JitterMs: 10}, "health.jitter_ms", "active probe"},
		{"timeout without probe", HealthCheck{TimeoutMs: 10}, "health.timeout_ms", "active probe"},
		{"statuses without probe", HealthCheck{ExpectedStatuses: []string{"200"}}, "health.expected_statuses", "active probe"},
		{"tcp path", HealthCheck{Type: "tcp", Path: "/"}, "health.path", `"http"`},
		{"tcp statuses", HealthCheck{Type: "tcp", ExpectedStatuses: []string{"200"}}, "health.expected_statuses", `"http"`},
		{"interval too small", HealthCheck{Type: "tcp", IntervalMs: 99}, "health.interval_ms", "from 100"},
		{"interval too big", HealthCheck{Type: "tcp", IntervalMs: MaxProbeIntervalMs + 1}, "health.interval_ms", "one hour"},
		{"timeout over interval", HealthCheck{Type: "tcp", IntervalMs: 1000, TimeoutMs: 1001}, "health.timeout_ms", "at most interval_ms (1000)"},
		{"timeout over default interval", HealthCheck{Type: "tcp", TimeoutMs: 5001}, "health.timeout_ms", "(5000)"},
		{"jitter over half", HealthCheck{Type: "tcp", IntervalMs: 1000, JitterMs: 501}, "health.jitter_ms", "half"},
		{"relative path", HealthCheck{Type: "http", Path: "healthz"}, "health.path", `start with "/"`},
		{"path space", HealthCheck{Type: "http", Path: "/a b"}, "health.path", "0x20"},
		{"path control", HealthCheck{Type: "http", Path: "/a\r\n"}, "health.path", "0x0d"},
		{"path non ascii", HealthCheck{Type: "http", Path: "/caf\u00e9"}, "health.path", "visible ASCII"},
		{"path fragment", HealthCheck{Type: "http", Path: "/a#b"}, "health.path", "fragment"},
		{"path bad escape", HealthCheck{Type: "http", Path: "/health%zz"}, "health.path", "two hex digits"},
		{"path cut escape", HealthCheck{Type: "http", Path: "/a%4"}, "health.path", "two hex digits"},
		{"path too long", HealthCheck{Type: "http", Path: "/" + strings.Repeat("a", MaxProbePathLen)}, "health.path", "at most"},
		{"status word", HealthCheck{Type: "http", ExpectedStatuses: []string{"ok"}}, "health.expected_statuses[0]", "not a status code"},
		{"status 600", HealthCheck{Type: "http", ExpectedStatuses: []string{"200", "600"}}, "health.expected_statuses[1]", "not a status code"},
		{"status 099", HealthCheck{Type: "http", ExpectedStatuses: []string{"099"}}, "health.expected_statuses[0]", "not a status code"},
		{"status sign", HealthCheck{Type: "http", ExpectedStatuses: []string{"+20"}}, "health.expected_statuses[0]", "not a status code"},
		{"status range open", HealthCheck{Type: "http", ExpectedStatuses: []string{"200-"}}, "health.expected_statuses[0]", "not a status code"},
		{"status range reversed", HealthCheck{Type: "http", ExpectedStatuses: []string{"299-200"}}, "health.expected_statuses[0]", "empty range"},
		{"status dup", HealthCheck{Type: "http", ExpectedStatuses: []string{"200", "200"}}, "health.expected_statuses[1]", "twice"},
		{"too many statuses", HealthCheck{Type: "http", ExpectedStatuses: make([]string, MaxExpectedStatuses+1)}, "health.expected_statuses", "at most 16"},
		{"unhealthy threshold", HealthCheck{UnhealthyThreshold: 101}, "health.unhealthy_threshold", "1 to 100"},
		{"healthy threshold", HealthCheck{HealthyThreshold: 101}, "health.healthy_threshold", "1 to 100"},
		{"hold", HealthCheck{MinHoldMs: MaxHoldMs + 1}, "health.min_hold_ms", "one hour"},
		{"panic", HealthCheck{PanicThresholdPercent: 101}, "health.panic_threshold_percent", "0 (disabled) to 100"},
		{"slow start", HealthCheck{SlowStartMs: MaxSlowStartMs + 1}, "health.slow_start_ms", "10 minutes"},
		{"expiry with probe", HealthCheck{Type: "tcp", PassiveExpiryMs: 5000}, "health.passive_expiry_ms", "without an active probe"},
		{"expiry too short", HealthCheck{PassiveExpiryMs: 999}, "health.passive_expiry_ms", "from 1000"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cl := validCluster()
			h := tc.h
			cl.Health = &h
			err := cl.Validate()
			if tc.field == "" {
				if err != nil {
					t.Fatalf("Validate(%+v) = %v, want nil", tc.h, err)
				}
				return
			}
			fe, ok := First(err)
			if !ok || fe.Field != tc.field || !strings.Contains(fe.Reason, tc.reason) {
				t.Fatalf("Validate(%+v) = %v, want field %q with reason containing %q", tc.h, err, tc.field, tc.reason)
			}
		})
	}
}

func TestHealthCheckReportsAllProblems(t *testing.T) {
	cl := validCluster()
	cl.Health = &HealthCheck{Type: "tcp", Path: "/", IntervalMs: 50, UnhealthyThreshold: 1000, PanicThresholdPercent: 200}
	got := fmt.Sprint(fieldsOfErr(t, cl.Validate()))
	want := "[health.path health.interval_ms health.unhealthy_threshold health.panic_threshold_percent]"
	if got != want {
		t.Fatalf("fields = %s, want %s", got, want)
	}
}

func TestHealthCheckEffective(t *testing.T) {
	var none *HealthCheck
	if got, want := none.Effective(), (HealthCheck{UnhealthyThreshold: 3, HealthyThreshold: 2, PassiveExpiryMs: 30_000}); !reflect.DeepEqual(got, want) {
		t.Fatalf("nil.Effective() = %+v, want %+v", got, want)
	}
	h := &HealthCheck{Type: "http", IntervalMs: 500}
	got := h.Effective()
	want := HealthCheck{Type: "http", Path: "/", IntervalMs: 500, TimeoutMs: 500, ExpectedStatuses: []string{"200-399"},
		UnhealthyThreshold: 3, HealthyThreshold: 2}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Effective() = %+v, want %+v", got, want)
	}
	got.ExpectedStatuses[0] = "500"
	if DefaultExpectedStatuses[0] != "200-399" {
		t.Fatal("Effective shares its ExpectedStatuses with the default")
	}
	tcp := (&HealthCheck{Type: "tcp"}).Effective()
	if tcp.Path != "" || tcp.ExpectedStatuses != nil || tcp.IntervalMs != 5000 || tcp.TimeoutMs != 1000 || tcp.PassiveExpiryMs != 0 {
		t.Fatalf("tcp Effective() = %+v", tcp)
	}
}

func TestStatusRanges(t *testing.T) {
	h := HealthCheck{ExpectedStatuses: []string{"200", "301-308", "bad"}}
	rs := h.StatusRanges()
	if want := []StatusRange{{200, 200}, {301, 308}}; !reflect.DeepEqual(rs, want) {
		t.Fatalf("StatusRanges() = %v, want %v", rs, want)
	}
	for code, want := range map[int]bool{199: false, 200: true, 201: false, 300: false, 301: true, 308: true, 309: false} {
		got := false
		for _, r := range rs {
			got = got || r.Contains(code)
		}
		if got != want {
			t.Errorf("status %d accepted = %v, want %v", code, got, want)
		}
	}
}

func TestDecodeClusterHealth(t *testing.T) {
	c, err := DecodeCluster([]byte(`{"id":"c","endpoints":[{"address":"a:1"}],
		"health":{"type":"http","path":"/hz","interval_ms":1000,"expected_statuses":["200-299"],"unhealthy_threshold":2}}`))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.Health == nil || c.Health.Path != "/hz" || c.Health.UnhealthyThreshold != 2 {
		t.Fatalf("decoded health = %+v", c.Health)
	}
	_, err = DecodeCluster([]byte(`{"id":"c","endpoints":[{"address":"a:1"}],"health":{"interval":1000}}`))
	if fe, ok := First(err); !ok || fe.Field != "health.interval" || !strings.Contains(fe.Reason, "unknown field") {
		t.Fatalf("unknown health field: %v", err)
	}
	_, err = DecodeCluster([]byte(`{"id":"c","endpoints":[{"address":"a:1"}],"health":{"jitter_ms":0.5}}`))
	if fe, ok := First(err); !ok || fe.Field != "health.jitter_ms" {
		t.Fatalf("fractional jitter: %v", err)
	}
}

func FuzzClusterHealth(f *testing.F) {
	for _, s := range []string{
		`{"id":"c","endpoints":[{"address":"a:1"}],"health":{"type":"http","path":"/","expected_statuses":["200-299","404"]}}`,
		`{"id":"c","endpoints":[{"address":"a:1"}],"health":{"type":"tcp","interval_ms":100,"jitter_ms":50,"timeout_ms":100}}`,
		`{"id":"c","endpoints":[{"address":"a:1"}],"health":{"passive_expiry_ms":1000,"panic_threshold_percent":50}}`,
		`{"health":{"expected_statuses":["5-1","-","599-600"]}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := DecodeCluster(b)
		if err != nil {
			return
		}
		verr := c.Validate()
		e := c.Health.Effective()
		if verr != nil || c.Health == nil {
			return
		}
		// A valid section yields a usable effective configuration.
		if e.UnhealthyThreshold == 0 || e.HealthyThreshold == 0 {
			t.Fatalf("effective thresholds of %+v are zero", e)
		}
		if e.Type != "" && (e.IntervalMs < MinProbeIntervalMs || e.TimeoutMs == 0 || e.TimeoutMs > e.IntervalMs || e.JitterMs > e.IntervalMs/2) {
			t.Fatalf("effective probe timing %+v is out of range", e)
		}
		if e.Type == ProbeHTTP && len(e.StatusRanges()) != len(e.ExpectedStatuses) {
			t.Fatalf("valid expected_statuses %q did not all parse", e.ExpectedStatuses)
		}
	})
}
