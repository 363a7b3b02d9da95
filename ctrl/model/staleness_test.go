package model

import (
	"strings"
	"testing"
)

func TestRouteStalenessValidate(t *testing.T) {
	tests := []struct {
		name   string
		mod    func(*Route)
		field  string // "" = valid
		reason string
	}{
		{"unbounded default", func(r *Route) {}, "", ""},
		{"serve explicit", func(r *Route) { r.OnStale = OnStaleServe }, "", ""},
		{"bounded serve", func(r *Route) { r.MaxStalenessMs = 5000 }, "", ""},
		{"bounded reject", func(r *Route) { r.MaxStalenessMs = MinStalenessBoundMs; r.OnStale = OnStaleReject }, "", ""},
		{"max bound", func(r *Route) { r.MaxStalenessMs = MaxStalenessBoundMs; r.OnStale = OnStaleReject }, "", ""},
		{"header only", func(r *Route) { r.StaleHeader = true }, "", ""},
		{"bound too small", func(r *Route) { r.MaxStalenessMs = MinStalenessBoundMs - 1 }, "max_staleness_ms", "flap"},
		{"bound too large", func(r *Route) { r.MaxStalenessMs = MaxStalenessBoundMs + 1 }, "max_staleness_ms", "one day"},
		{"reject unbounded", func(r *Route) { r.OnStale = OnStaleReject }, "on_stale", "needs \"max_staleness_ms\""},
		{"unknown choice", func(r *Route) { r.MaxStalenessMs = 5000; r.OnStale = "fail" }, "on_stale", `"fail" is not a choice`},
		{"case matters", func(r *Route) { r.MaxStalenessMs = 5000; r.OnStale = "Reject" }, "on_stale", "not a choice"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := validRoute()
			tc.mod(&r)
			err := r.Validate()
			if tc.field == "" {
				if err != nil {
					t.Fatalf("Validate(%+v) = %v, want nil", r, err)
				}
				return
			}
			fe, ok := First(err)
			if !ok || fe.Field != tc.field || !strings.Contains(fe.Reason, tc.reason) {
				t.Fatalf("Validate(%+v) = %v, want field %q with reason containing %q", r, err, tc.field, tc.reason)
			}
		})
	}
}

func TestDecodeStalenessFields(t *testing.T) {
	r, err := DecodeRoute([]byte(`{"id":"r","host":"a.example","prefix":"/","cluster":"c",
		"max_staleness_ms":30000,"on_stale":"reject","stale_header":true}`))
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Validate(); err != nil {
		t.Fatal(err)
	}
	if r.MaxStalenessMs != 30000 || r.OnStale != OnStaleReject || !r.StaleHeader {
		t.Fatalf("decoded %+v", r)
	}
	for _, bad := range []struct{ doc, field string }{
		{`{"id":"r","max_staleness_ms":-1}`, "max_staleness_ms"},
		{`{"id":"r","max_staleness_ms":1.5}`, "max_staleness_ms"},
		{`{"id":"r","max_staleness_ms":4294967296}`, "max_staleness_ms"},
		{`{"id":"r","on_stale":1}`, "on_stale"},
		{`{"id":"r","stale_header":"yes"}`, "stale_header"},
		{`{"id":"r","max_staleness":100}`, "max_staleness"},
	} {
		_, err := DecodeRoute([]byte(bad.doc))
		if fe, ok := First(err); !ok || !strings.HasSuffix(fe.Field, bad.field) {
			t.Errorf("DecodeRoute(%s) = %v, want an error on %q", bad.doc, err, bad.field)
		}
	}
}
