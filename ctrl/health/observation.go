package health

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// Source names who made an observation: SourceProbe (ctrl's own active
// probe), "external:<name>" (a checker reporting over the admin socket) or
// "edge:<node id>" (an edge's passive report). Revisions are ordered per
// endpoint and source, so every observer needs its own Source.
type Source string

// SourceProbe is the source of ctrl's active probes.
const SourceProbe Source = "probe"

const (
	externalPrefix = "external:"
	edgePrefix     = "edge:"
	// MaxSourceNameLen bounds the name after "external:" or "edge:"; it
	// equals the stream's node id limit (wire.MaxNodeID).
	MaxSourceNameLen = 128
	// MaxDetailLen bounds Observation.Detail in bytes.
	MaxDetailLen = 256
)

var (
	// ErrInvalid is wrapped by errors for a malformed observation or source.
	ErrInvalid = errors.New("invalid health observation")
	// ErrUnknownEndpoint is wrapped by errors for an observation or a
	// query naming a cluster or endpoint the tracker does not know.
	ErrUnknownEndpoint = errors.New("unknown endpoint")
	// ErrClosed is returned by every call after Close.
	ErrClosed = errors.New("health tracker is closed")
)

// ExternalSource returns the Source of an external checker called name.
func ExternalSource(name string) (Source, error) {
	if err := checkSourceName(name); err != nil {
		return "", fmt.Errorf("health: external checker name: %w", err)
	}
	return Source(externalPrefix + name), nil
}

// EdgeSource returns the Source of the edge with the given node id.
func EdgeSource(nodeID string) (Source, error) {
	if err := checkSourceName(nodeID); err != nil {
		return "", fmt.Errorf("health: edge node id: %w", err)
	}
	return Source(edgePrefix + nodeID), nil
}

// ParseSource checks that s is "probe", "external:<name>" or
// "edge:<node id>", the name being 1..MaxSourceNameLen bytes of visible ASCII.
func ParseSource(s string) (Source, error) {
	var name string
	switch {
	case s == string(SourceProbe):
		return SourceProbe, nil
	case strings.HasPrefix(s, externalPrefix):
		name = s[len(externalPrefix):]
	case strings.HasPrefix(s, edgePrefix):
		name = s[len(edgePrefix):]
	default:
		return "", fmt.Errorf(`health: source %.40q: want "probe", "external:<name>" or "edge:<node id>": %w`, s, ErrInvalid)
	}
	if err := checkSourceName(name); err != nil {
		return "", fmt.Errorf("health: source %.40q: %w", s, err)
	}
	return Source(s), nil
}

func checkSourceName(name string) error {
	if name == "" || len(name) > MaxSourceNameLen {
		return fmt.Errorf("name is %d bytes, want 1..%d: %w", len(name), MaxSourceNameLen, ErrInvalid)
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; c < 0x21 || c > 0x7e {
			return fmt.Errorf("name byte %d is %#02x, want visible ASCII: %w", i, c, ErrInvalid)
		}
	}
	return nil
}

// Observation is one verdict about one endpoint from one source.
type Observation struct {
	// Cluster and Endpoint identify the endpoint: a cluster id and an
	// address exactly as in model.Endpoint.Address.
	Cluster  string
	Endpoint string
	// OK is the verdict: the endpoint answered as expected.
	OK     bool
	Source Source
	// Revision orders the source's observations of this endpoint: one at
	// or below the last accepted revision is ignored (DESIGN.md P4). It
	// must be at least 1.
	Revision uint64
	// Detail says what was seen, e.g. "connect refused" or "status 503";
	// at most MaxDetailLen bytes, no control characters.
	Detail string
	// At is when the observer saw it; zero means when ctrl received it.
	// Only shown to operators: damping runs on ctrl's clock.
	At time.Time
}

// check validates the shape of o; whether its endpoint exists is checked
// against the tracker.
func (o *Observation) check() error {
	if _, err := ParseSource(string(o.Source)); err != nil {
		return err
	}
	if o.Revision == 0 {
		return fmt.Errorf("health: observation of %q/%q from %s: revision must be at least 1: %w", o.Cluster, o.Endpoint, o.Source, ErrInvalid)
	}
	if len(o.Detail) > MaxDetailLen {
		return fmt.Errorf("health: observation of %q/%q from %s: detail is %d bytes, at most %d: %w", o.Cluster, o.Endpoint, o.Source, len(o.Detail), MaxDetailLen, ErrInvalid)
	}
	for i := 0; i < len(o.Detail); i++ {
		if c := o.Detail[i]; c < 0x20 || c == 0x7f {
			return fmt.Errorf("health: observation of %q/%q from %s: detail byte %d is a control character (%#02x): %w", o.Cluster, o.Endpoint, o.Source, i, c, ErrInvalid)
		}
	}
	return nil
}

// Result says what the tracker did with an observation.
type Result uint8

const (
	// Accepted: the observation was newer than the source's last one and
	// went into the endpoint's damping.
	Accepted Result = iota + 1
	// Stale: its revision was below the source's last accepted one; ignored.
	Stale
	// Duplicate: its revision equalled the source's last accepted one; ignored.
	Duplicate
)

func (r Result) String() string {
	switch r {
	case Accepted:
		return "accepted"
	case Stale:
		return "stale"
	case Duplicate:
		return "duplicate"
	}
	return fmt.Sprintf("Result(%d)", uint8(r))
}

// Outcome is the tracker's answer to one observation.
type Outcome struct {
	Result Result
	// LastRevision is the source's last accepted revision for the endpoint
	// after this observation.
	LastRevision uint64
	// Healthy is the endpoint's damped state after this observation, and
	// Changed whether this observation flipped it.
	Healthy bool
	Changed bool
}
