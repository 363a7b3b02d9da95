package health

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/snapgate/snapgate/store"
)

// Kind is the store kind of the health documents: one per endpoint.
const Kind = "health"

// storedFormat is the version of the record layout below.
const storedFormat = 1

// storedEndpoint is what survives a ctrl crash for one endpoint: its damped state,
// the streaks that resume it, and every source's last accepted revision
// (DESIGN.md P4). The observation history is not kept: it is for operators
// and refills within a few probe intervals.
type storedEndpoint struct {
	Format      int            `json:"format"`
	Cluster     string         `json:"cluster"`
	Endpoint    string         `json:"endpoint"`
	Healthy     bool           `json:"healthy"`
	Since       time.Time      `json:"since"`
	Reason      string         `json:"reason"`
	RecoveredAt time.Time      `json:"recovered_at,omitzero"`
	OKStreak    uint32         `json:"ok_streak,omitempty"`
	FailStreak  uint32         `json:"fail_streak,omitempty"`
	LastFailAt  time.Time      `json:"last_fail_at,omitzero"`
	Last        string         `json:"last,omitempty"`
	Sources     []storedSource `json:"sources,omitempty"`
	Accepted    uint64         `json:"accepted,omitempty"`
	Stale       uint64         `json:"stale,omitempty"`
	Duplicate   uint64         `json:"duplicate,omitempty"`
	Evicted     uint64         `json:"evicted,omitempty"`
}

type storedSource struct {
	Source   Source    `json:"source"`
	Revision uint64    `json:"revision"`
	At       time.Time `json:"at"`
}

// docID is the store id of an endpoint's document: "<cluster>/<address>",
// or "<cluster>/sha256:<hex>" of the address when that would exceed the
// store's id limit (a 253-byte host name). The record itself names the
// endpoint, so the id only has to be unique.
func docID(cluster, addr string) string {
	id := cluster + "/" + addr
	if len(id) <= store.MaxIDLen {
		return id
	}
	sum := sha256.Sum256([]byte(addr))
	return cluster + "/sha256:" + hex.EncodeToString(sum[:])
}

// encodeStored fails only for a time outside years 0..9999, which ctrl's
// clock does not produce.
func encodeStored(r *storedEndpoint) ([]byte, error) {
	b, err := json.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("health: encoding %s %q: %w", Kind, docID(r.Cluster, r.Endpoint), err)
	}
	return b, nil
}

// decodeStored parses a stored document and checks that it is one this
// package wrote for the document id it is stored under.
func decodeStored(id string, body []byte) (storedEndpoint, error) {
	var r storedEndpoint
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		return storedEndpoint{}, fmt.Errorf("health: stored %s %q: %w", Kind, id, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return storedEndpoint{}, fmt.Errorf("health: stored %s %q: data after the record", Kind, id)
	}
	bad := func(why string) error { return fmt.Errorf("health: stored %s %q: %s", Kind, id, why) }
	switch {
	case r.Format != storedFormat:
		return storedEndpoint{}, bad(fmt.Sprintf("format %d, this ctrl reads %d", r.Format, storedFormat))
	case r.Cluster == "" || r.Endpoint == "":
		return storedEndpoint{}, bad("cluster or endpoint is empty")
	case docID(r.Cluster, r.Endpoint) != id:
		return storedEndpoint{}, bad(fmt.Sprintf("names endpoint %q/%q, which is stored under another id", r.Cluster, r.Endpoint))
	case r.Since.IsZero():
		return storedEndpoint{}, bad("since is missing")
	case strings.ContainsAny(r.Reason+r.Last, "\x00\n\r"):
		return storedEndpoint{}, bad("reason contains a line break")
	}
	for i, s := range r.Sources {
		if _, err := ParseSource(string(s.Source)); err != nil {
			return storedEndpoint{}, bad(fmt.Sprintf("sources[%d]: %v", i, err))
		}
		if s.Revision == 0 {
			return storedEndpoint{}, bad(fmt.Sprintf("sources[%d] (%s): revision 0", i, s.Source))
		}
		if i > 0 && r.Sources[i-1].Source >= s.Source {
			return storedEndpoint{}, bad(fmt.Sprintf("sources[%d] (%s) is out of order or repeated", i, s.Source))
		}
	}
	return r, nil
}

// sortedSources lists an endpoint's source marks by source.
func sortedSources(m map[Source]mark) []storedSource {
	out := make([]storedSource, 0, len(m))
	for s, mk := range m {
		out = append(out, storedSource{Source: s, Revision: mk.rev, At: mk.at})
	}
	slices.SortFunc(out, func(a, b storedSource) int { return strings.Compare(string(a.Source), string(b.Source)) })
	return out
}
