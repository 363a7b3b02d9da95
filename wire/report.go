package wire

import (
	"encoding/binary"
	"fmt"
)

// Cause is why an edge reported an endpoint's state in a REPORT.
type Cause uint8

// Report causes. A failure names what went wrong; CauseRecovered is the
// only cause of an OK observation: the first success after an ejection.
const (
	CauseRecovered Cause = 0
	CauseConnect   Cause = 1 // the connection could not be opened
	CauseReset     Cause = 2 // the endpoint reset or closed an open connection
	CauseTimeout   Cause = 3 // connect or response timed out
	Cause5xx       Cause = 4 // answered 5xx several times in a row; protocol 4
)

// KnownIn reports whether c exists in a REPORT of protocol version v: a
// peer of an older version refuses the newer causes as malformed.
func (c Cause) KnownIn(v uint8) bool { return c <= CauseTimeout || c == Cause5xx && v >= 4 }

func (c Cause) String() string {
	switch c {
	case CauseRecovered:
		return "recovered"
	case CauseConnect:
		return "connect-failure"
	case CauseReset:
		return "reset"
	case CauseTimeout:
		return "timeout"
	case Cause5xx:
		return "5xx"
	}
	return fmt.Sprintf("cause(%d)", uint8(c))
}

// Limits of a REPORT.
const (
	MaxReportObservations = 1024 // observations in one REPORT
	MaxReportName         = 255  // bytes in a cluster id or endpoint address
)

// Observation is one passive health verdict of an edge on one endpoint of
// one cluster.
type Observation struct {
	Cluster  string // 1..MaxReportName bytes of visible ASCII
	Endpoint string // address as in the snapshot, 1..MaxReportName bytes of visible ASCII
	OK       bool
	Cause    Cause // CauseRecovered iff OK
	// Revision orders this edge's observations of the endpoint; at least 1.
	Revision uint64
	UnixNano int64 // when the edge saw it
}

// Report is a batch of observations (REPORT, edge → ctrl, protocol 3;
// Cause5xx from 4).
type Report struct {
	Observations []Observation
}

func checkReportName(field, s string) error {
	if len(s) == 0 || len(s) > MaxReportName {
		return fmt.Errorf("%w: REPORT %s is %d bytes, want 1..%d", ErrMalformed, field, len(s), MaxReportName)
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x21 || c > 0x7e {
			return fmt.Errorf("%w: REPORT %s byte %d is %#02x, want visible ASCII", ErrMalformed, field, i, c)
		}
	}
	return nil
}

// Validate reports why o cannot be sent in a REPORT of ProtocolVersion, or
// nil.
func (o *Observation) Validate() error { return o.ValidateIn(ProtocolVersion) }

// ValidateIn reports why o cannot be sent in a REPORT of protocol version
// v, or nil.
func (o *Observation) ValidateIn(v uint8) error {
	if err := checkReportName("cluster", o.Cluster); err != nil {
		return err
	}
	if err := checkReportName("endpoint", o.Endpoint); err != nil {
		return err
	}
	if o.Revision == 0 {
		return fmt.Errorf("%w: REPORT observation of %s in %s has revision 0, want at least 1", ErrMalformed, o.Endpoint, o.Cluster)
	}
	if !o.Cause.KnownIn(v) {
		return fmt.Errorf("%w: REPORT observation of %s in %s has %s, unknown in protocol version %d", ErrMalformed, o.Endpoint, o.Cluster, o.Cause, v)
	}
	if o.OK != (o.Cause == CauseRecovered) {
		return fmt.Errorf("%w: REPORT observation of %s in %s is ok=%t with cause %s (only an ok observation is %s)", ErrMalformed, o.Endpoint, o.Cluster, o.OK, o.Cause, CauseRecovered)
	}
	return nil
}

// obsFixed is revision (u64) + unix nanos (i64) + ok (u8) + cause (u8) +
// the two name length bytes.
const obsFixed = 8 + 8 + 1 + 1 + 1 + 1

// A REPORT of one observation with the longest names fits an edge frame,
// so FitReport always takes at least one.
const _ = uint(MaxEdgePayload - (2 + obsFixed + 2*MaxReportName))

// FitReport returns how many of obs, from the first, one REPORT payload of
// at most maxPayload bytes carries: no more than MaxReportObservations.
func FitReport(obs []Observation, maxPayload int) int {
	size := 2
	for i, o := range obs {
		size += obsFixed + len(o.Cluster) + len(o.Endpoint)
		if i == MaxReportObservations || size > maxPayload {
			return i
		}
	}
	return len(obs)
}

// AppendReport appends the REPORT payload: count (u16), then per
// observation revision (u64), unix nanos (i64), ok (u8, 0 or 1), cause
// (u8), cluster length (u8), cluster, endpoint length (u8), endpoint. It
// refuses what DecodeReportIn would refuse.
func AppendReport(dst []byte, m Report) ([]byte, error) {
	n := len(m.Observations)
	if n == 0 || n > MaxReportObservations {
		return dst, fmt.Errorf("%w: REPORT has %d observations, want 1..%d", ErrMalformed, n, MaxReportObservations)
	}
	for i := range m.Observations {
		if err := m.Observations[i].Validate(); err != nil {
			return dst, err
		}
	}
	dst = binary.BigEndian.AppendUint16(dst, uint16(n))
	for _, o := range m.Observations {
		dst = binary.BigEndian.AppendUint64(dst, o.Revision)
		dst = binary.BigEndian.AppendUint64(dst, uint64(o.UnixNano))
		ok := byte(0)
		if o.OK {
			ok = 1
		}
		dst = append(dst, ok, byte(o.Cause), byte(len(o.Cluster)))
		dst = append(dst, o.Cluster...)
		dst = append(dst, byte(len(o.Endpoint)))
		dst = append(dst, o.Endpoint...)
	}
	return dst, nil
}

// DecodeReportIn decodes the REPORT payload of a protocol version v frame
// strictly, appending the observations to dst.Observations[:0] so a caller
// can reuse the slice.
func DecodeReportIn(dst Report, p []byte, v uint8) (Report, error) {
	out := Report{Observations: dst.Observations[:0]}
	if len(p) < 2 {
		return out, fmt.Errorf("%w: REPORT is %d bytes, want at least 2", ErrMalformed, len(p))
	}
	n := int(binary.BigEndian.Uint16(p))
	if n == 0 || n > MaxReportObservations {
		return out, fmt.Errorf("%w: REPORT declares %d observations, want 1..%d", ErrMalformed, n, MaxReportObservations)
	}
	p = p[2:]
	for i := 0; i < n; i++ {
		if len(p) < obsFixed {
			return out, fmt.Errorf("%w: REPORT observation %d is truncated (%d bytes left, want at least %d)", ErrMalformed, i, len(p), obsFixed)
		}
		o := Observation{
			Revision: binary.BigEndian.Uint64(p[0:8]),
			UnixNano: int64(binary.BigEndian.Uint64(p[8:16])),
			Cause:    Cause(p[17]),
		}
		switch p[16] {
		case 0:
		case 1:
			o.OK = true
		default:
			return out, fmt.Errorf("%w: REPORT observation %d has ok byte %d, want 0 or 1", ErrMalformed, i, p[16])
		}
		cl := int(p[18])
		p = p[19:]
		if len(p) < cl+1 {
			return out, fmt.Errorf("%w: REPORT observation %d cluster of %d bytes is truncated", ErrMalformed, i, cl)
		}
		o.Cluster = string(p[:cl])
		el := int(p[cl])
		p = p[cl+1:]
		if len(p) < el {
			return out, fmt.Errorf("%w: REPORT observation %d endpoint of %d bytes is truncated", ErrMalformed, i, el)
		}
		o.Endpoint = string(p[:el])
		p = p[el:]
		if err := o.ValidateIn(v); err != nil {
			return out, fmt.Errorf("observation %d: %w", i, err)
		}
		out.Observations = append(out.Observations, o)
	}
	if len(p) != 0 {
		return out, fmt.Errorf("%w: REPORT has %d bytes after its %d observations", ErrMalformed, len(p), n)
	}
	return out, nil
}
