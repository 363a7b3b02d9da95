package store

import (
	"bytes"
	"testing"
)

// FuzzParseDocKey feeds arbitrary keys (as read back from disk) to the key
// parser: it must never panic, and whatever it accepts must re-encode to the
// same bytes, since List and Load trust it to name documents.
func FuzzParseDocKey(f *testing.F) {
	for _, seed := range []string{
		"d/route/api", "d/route/a/b", "d/route-a/x", "d/route/", "d//x", "d/route",
		"d/Route/x", "m/rev", "s/\x00\x00\x00\x00\x00\x00\x00\x01", "d/route/a\nb", "",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, key []byte) {
		kind, id, err := parseDocKey(key)
		if err != nil {
			return
		}
		if err := validateKey(kind, id); err != nil {
			t.Fatalf("parseDocKey(%q) accepted invalid %q/%q: %v", key, kind, id, err)
		}
		if got := docKey(kind, id); !bytes.Equal(got, key) {
			t.Fatalf("parseDocKey(%q) = %q/%q, which encodes to %q", key, kind, id, got)
		}
	})
}

// FuzzDecodeRecord checks the document value decoder on arbitrary bytes and
// that encode/decode round-trips.
func FuzzDecodeRecord(f *testing.F) {
	f.Add([]byte{}, uint64(1), uint64(1))
	f.Add(encodeRecord(3, 9, []byte(`{"host":"x"}`)), uint64(3), uint64(9))
	f.Add(make([]byte, 15), uint64(0), uint64(1))
	f.Add(make([]byte, 16), uint64(1<<63), uint64(0))
	f.Fuzz(func(t *testing.T, raw []byte, version, revision uint64) {
		if v, r, body, err := decodeRecord(raw); err == nil {
			if v == 0 || r == 0 || len(body) != len(raw)-recordHeader {
				t.Fatalf("decodeRecord(%x) = %d %d %x", raw, v, r, body)
			}
		}
		if version == 0 || revision == 0 {
			return
		}
		v, r, body, err := decodeRecord(encodeRecord(version, revision, raw))
		if err != nil || v != version || r != revision || !bytes.Equal(body, raw) {
			t.Fatalf("round trip of %d %d %x = %d %d %x %v", version, revision, raw, v, r, body, err)
		}
	})
}

// FuzzParseSnapKey checks the snapshot key parser against its encoder.
func FuzzParseSnapKey(f *testing.F) {
	f.Add(snapKey(0))
	f.Add(snapKey(42))
	f.Add([]byte("s/"))
	f.Add([]byte("d/route/xxxxxx"))
	f.Fuzz(func(t *testing.T, key []byte) {
		v, err := parseSnapKey(key)
		if err != nil {
			return
		}
		if !bytes.Equal(snapKey(v), key) {
			t.Fatalf("parseSnapKey(%q) = %d, which encodes to %q", key, v, snapKey(v))
		}
	})
}
