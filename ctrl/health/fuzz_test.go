package health

import (
	"strings"
	"testing"
	"time"
)

func FuzzParseSource(f *testing.F) {
	for _, s := range []string{"probe", "external:nagios", "edge:edge-1", "edge:", "external:a b", "probe:x", "", "edge:\xff"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		src, err := ParseSource(s)
		if err != nil {
			return
		}
		if string(src) != s {
			t.Fatalf("ParseSource(%q) = %q", s, src)
		}
		// Accepted sources survive the record round trip.
		r := storedEndpoint{Format: storedFormat, Cluster: "c", Endpoint: "a:1", Since: time.Unix(1, 0), Sources: []storedSource{{Source: src, Revision: 1, At: time.Unix(1, 0)}}}
		body, err := encodeStored(&r)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := decodeStored(docID("c", "a:1"), body); err != nil {
			t.Fatalf("record with source %q does not decode: %v", s, err)
		}
	})
}

func FuzzDecodeRecord(f *testing.F) {
	r := storedEndpoint{Format: storedFormat, Cluster: "api", Endpoint: "10.0.0.1:80", Healthy: true, Since: time.Unix(1700000000, 5).UTC(),
		Reason: "x", OKStreak: 2, Sources: []storedSource{{Source: "edge:e1", Revision: 9, At: time.Unix(1700000001, 0).UTC()}, {Source: "probe", Revision: 3}}}
	good, _ := encodeStored(&r)
	f.Add("api/10.0.0.1:80", good)
	f.Add("api/10.0.0.1:80", []byte(`{"format":1,"cluster":"api","endpoint":"10.0.0.1:80","since":"2030-01-01T00:00:00Z","sources":[{"source":"probe","revision":0}]}`))
	f.Add("x", []byte(`{"format":2}`))
	f.Add("x", []byte(`{} {}`))
	f.Add("x", []byte(`{"since":"99999-01-01T00:00:00Z"}`))
	f.Fuzz(func(t *testing.T, id string, body []byte) {
		r, err := decodeStored(id, body)
		if err != nil {
			if !strings.Contains(err.Error(), "health: stored health") {
				t.Fatalf("error %q does not name the document", err)
			}
			return
		}
		// What decodes restores and re-encodes to an equivalent record.
		cl := &cluster{id: r.Cluster}
		ep := newEndpoint(cl, r.Endpoint)
		ep.restore(&r)
		again, err := encodeStored(ep.stored())
		if err != nil {
			t.Fatalf("re-encoding %+v: %v", r, err)
		}
		if _, err := decodeStored(id, again); err != nil {
			t.Fatalf("re-encoded record does not decode: %v\n%s", err, again)
		}
	})
}
