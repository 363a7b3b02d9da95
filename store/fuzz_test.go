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

// FuzzParseVersionKey checks the snapshot key parser against its encoder.
func FuzzParseVersionKey(f *testing.F) {
	f.Add(snapRecordKey(0))
	f.Add(snapRecordKey(42))
	f.Add(versionKey(legacySnapPrefix, 7))
	f.Add([]byte("f/"))
	f.Add([]byte("d/route/xxxxxx"))
	f.Fuzz(func(t *testing.T, key []byte) {
		v, err := parseVersionKey(snapRecordPrefix, key)
		if err != nil {
			return
		}
		if !bytes.Equal(snapRecordKey(v), key) {
			t.Fatalf("parseVersionKey(%q) = %d, which encodes to %q", key, v, snapRecordKey(v))
		}
	})
}

// FuzzDecodeSnapRecord checks the snapshot record decoder (bytes read back
// from Pebble) against its encoder.
func FuzzDecodeSnapRecord(f *testing.F) {
	f.Add(encodeSnapRecord(snapRecord{size: 12 << 20, hash: 0xdeadbeef}))
	f.Add(make([]byte, snapRecordLen))
	f.Add([]byte{1, 2, 3})
	f.Fuzz(func(t *testing.T, raw []byte) {
		r, err := decodeSnapRecord(raw)
		if err != nil {
			return
		}
		if r.size == 0 || !bytes.Equal(encodeSnapRecord(r), raw) {
			t.Fatalf("decodeSnapRecord(%x) = %+v, which encodes to %x", raw, r, encodeSnapRecord(r))
		}
	})
}

// FuzzParseSnapFileName checks the parser of names found in the snapshot
// directory: what it accepts must be exactly what snapFileName produces,
// since open removes accepted names that have no record.
func FuzzParseSnapFileName(f *testing.F) {
	for _, seed := range []string{
		snapFileName(0, 0), snapFileName(42, 0xfeedface), snapFileName(1<<64-1, 1<<64-1),
		"snap-00000000000000000042.sgs", "snap-00000000000000000042-000000000000000A.sgs",
		"snap-99999999999999999999-0000000000000000.sgs", "snap-+0000000000000000042-0000000000000000.sgs",
		"snap-123.tmp", "notes.txt", "",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, name string) {
		v, h, ok := parseSnapFileName(name)
		if ok && snapFileName(v, h) != name {
			t.Fatalf("parseSnapFileName(%q) = %d %x, which names %q", name, v, h, snapFileName(v, h))
		}
	})
}
