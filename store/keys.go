package store

import (
	"encoding/binary"
	"fmt"
	"strings"
)

// Key layout. The one-letter prefixes keep the three families in disjoint,
// separately scannable ranges:
//
//	d/<kind>/<id>        → 8B version (BE) | 8B revision (BE) | body
//	m/rev                → 8B global revision (BE)
//	s/<8B version (BE)>  → snapshot bytes
//
// Kinds cannot contain '/', so the first '/' after "d/" ends the kind and the
// rest of the key is the id verbatim (ids may contain '/'). Big-endian
// versions make byte order equal numeric order, so the newest snapshot is the
// last key of the s/ range.
const (
	docPrefix    = "d/"
	snapPrefix   = "s/"
	recordHeader = 16
)

var revKey = []byte("m/rev")

func docKey(kind, id string) []byte {
	k := make([]byte, 0, len(docPrefix)+len(kind)+1+len(id))
	k = append(k, docPrefix...)
	k = append(k, kind...)
	k = append(k, '/')
	return append(k, id...)
}

// kindPrefix is the key prefix of every document of one kind.
func kindPrefix(kind string) []byte {
	k := make([]byte, 0, len(docPrefix)+len(kind)+1)
	k = append(k, docPrefix...)
	k = append(k, kind...)
	return append(k, '/')
}

// parseDocKey splits a d/<kind>/<id> key. It rejects anything a valid
// docKey could not have produced, so a foreign or corrupt key surfaces as an
// error instead of a document with a bogus kind.
func parseDocKey(key []byte) (kind, id string, err error) {
	s := string(key)
	rest, ok := strings.CutPrefix(s, docPrefix)
	if !ok {
		return "", "", fmt.Errorf("key %q does not start with %q", s, docPrefix)
	}
	kind, id, ok = strings.Cut(rest, "/")
	if !ok {
		return "", "", fmt.Errorf("key %q has no '/' after the kind", s)
	}
	if err := validateKey(kind, id); err != nil {
		return "", "", fmt.Errorf("key %q: %w", s, err)
	}
	return kind, id, nil
}

func snapKey(version uint64) []byte {
	k := make([]byte, len(snapPrefix)+8)
	copy(k, snapPrefix)
	binary.BigEndian.PutUint64(k[len(snapPrefix):], version)
	return k
}

func parseSnapKey(key []byte) (uint64, error) {
	if len(key) != len(snapPrefix)+8 || string(key[:len(snapPrefix)]) != snapPrefix {
		return 0, fmt.Errorf("snapshot key %q is not %q followed by 8 bytes", key, snapPrefix)
	}
	return binary.BigEndian.Uint64(key[len(snapPrefix):]), nil
}

// prefixEnd returns the smallest key greater than every key with prefix p.
// All our prefixes end in '/' (0x2f), so incrementing the last byte never
// overflows.
func prefixEnd(p []byte) []byte {
	end := append([]byte(nil), p...)
	end[len(end)-1]++
	return end
}

func encodeRecord(version, revision uint64, body []byte) []byte {
	v := make([]byte, recordHeader+len(body))
	binary.BigEndian.PutUint64(v[0:8], version)
	binary.BigEndian.PutUint64(v[8:16], revision)
	copy(v[recordHeader:], body)
	return v
}

// decodeRecord parses a document value. body aliases v; callers copy it
// before v's backing memory (a pebble buffer) is released.
func decodeRecord(v []byte) (version, revision uint64, body []byte, err error) {
	if len(v) < recordHeader {
		return 0, 0, nil, fmt.Errorf("record is %d bytes, want at least %d", len(v), recordHeader)
	}
	version = binary.BigEndian.Uint64(v[0:8])
	revision = binary.BigEndian.Uint64(v[8:16])
	if version == 0 || revision == 0 {
		return 0, 0, nil, fmt.Errorf("record has version %d, revision %d; both must be at least 1", version, revision)
	}
	return version, revision, v[recordHeader:], nil
}

func encodeUint64(n uint64) []byte {
	return binary.BigEndian.AppendUint64(make([]byte, 0, 8), n)
}

func decodeUint64(v []byte) (uint64, error) {
	if len(v) != 8 {
		return 0, fmt.Errorf("value is %d bytes, want 8", len(v))
	}
	return binary.BigEndian.Uint64(v), nil
}
