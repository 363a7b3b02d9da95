package store

import (
	"encoding/binary"
	"fmt"
	"strings"
)

// Key layout. The one-letter prefixes keep the families in disjoint,
// separately scannable ranges:
//
//	d/<kind>/<id>        → 8B version (BE) | 8B revision (BE) | body
//	m/rev                → 8B global revision (BE)
//	f/<8B version (BE)>  → 8B file size (BE) | 8B xxhash64 of the file (BE)
//	o/<key>              → metadata value
//	s/<8B version (BE)>  → snapshot bytes (the layout before snapshot files;
//	                       moved to files when such a store is opened)
//
// Kinds cannot contain '/', so the first '/' after "d/" ends the kind and the
// rest of the key is the id verbatim (ids may contain '/'). Big-endian
// versions make byte order equal numeric order.
const (
	docPrefix        = "d/"
	snapRecordPrefix = "f/"
	metaPrefix       = "o/"
	legacySnapPrefix = "s/"
	recordHeader     = 16
	snapRecordLen    = 16
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

func snapRecordKey(version uint64) []byte {
	return versionKey(snapRecordPrefix, version)
}

func versionKey(prefix string, version uint64) []byte {
	k := make([]byte, len(prefix)+8)
	copy(k, prefix)
	binary.BigEndian.PutUint64(k[len(prefix):], version)
	return k
}

// parseVersionKey parses a <prefix><8B version> key.
func parseVersionKey(prefix string, key []byte) (uint64, error) {
	if len(key) != len(prefix)+8 || string(key[:len(prefix)]) != prefix {
		return 0, fmt.Errorf("snapshot key %q is not %q followed by 8 bytes", key, prefix)
	}
	return binary.BigEndian.Uint64(key[len(prefix):]), nil
}

// snapRecord is what Pebble holds per stored snapshot: enough to tell the
// complete file from anything else under that name.
type snapRecord struct {
	size, hash uint64
}

func encodeSnapRecord(r snapRecord) []byte {
	v := make([]byte, snapRecordLen)
	binary.BigEndian.PutUint64(v[0:8], r.size)
	binary.BigEndian.PutUint64(v[8:16], r.hash)
	return v
}

func decodeSnapRecord(v []byte) (snapRecord, error) {
	if len(v) != snapRecordLen {
		return snapRecord{}, fmt.Errorf("snapshot record is %d bytes, want %d", len(v), snapRecordLen)
	}
	r := snapRecord{size: binary.BigEndian.Uint64(v[0:8]), hash: binary.BigEndian.Uint64(v[8:16])}
	if r.size == 0 {
		return snapRecord{}, fmt.Errorf("snapshot record has size 0")
	}
	return r, nil
}

func metaKey(key string) []byte {
	return append([]byte(metaPrefix), key...)
}

// prefixEnd returns the smallest key greater than every key with prefix p.
// Trailing 0xff bytes cannot be incremented and are dropped; p is never all
// 0xff since every prefix starts with a family letter.
func prefixEnd(p []byte) []byte {
	end := append([]byte(nil), p...)
	for len(end) > 0 && end[len(end)-1] == 0xff {
		end = end[:len(end)-1]
	}
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
