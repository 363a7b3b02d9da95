package store

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

func TestMeta(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir)
	mustApply(t, s, put("route", "api", "x", nil))
	if _, err := s.GetMeta("edge/a"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("GetMeta of a missing key: %v, want ErrNotFound", err)
	}
	val := []byte(`{"node_id":"a"}`)
	for _, kv := range [][2]string{{"edge/b", "B"}, {"edge/a", string(val)}, {"edgy", "no"}, {"edge/c", ""}} {
		if err := s.PutMeta(kv[0], []byte(kv[1])); err != nil {
			t.Fatal(err)
		}
	}
	val[0] = 'X' // the store copied the input
	got, err := s.GetMeta("edge/a")
	if err != nil || string(got) != `{"node_id":"a"}` {
		t.Fatalf("GetMeta = %q, %v", got, err)
	}
	list, err := s.ListMeta("edge/")
	if err != nil || fmt.Sprintf("%q", list) != `[{"edge/a" "{\"node_id\":\"a\"}"} {"edge/b" "B"} {"edge/c" ""}]` {
		t.Fatalf("ListMeta(edge/) = %q, %v", list, err)
	}
	if all, err := s.ListMeta(""); err != nil || len(all) != 4 {
		t.Fatalf("ListMeta(\"\") = %q, %v", all, err)
	}
	if none, err := s.ListMeta("zzz"); err != nil || len(none) != 0 {
		t.Fatalf("ListMeta(zzz) = %q, %v", none, err)
	}
	if err := s.DeleteMeta("edge/b"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteMeta("edge/never"); err != nil {
		t.Fatalf("DeleteMeta of a missing key: %v", err)
	}
	// Outside the revisions and the documents.
	rev, docs, err := s.Load()
	if err != nil || rev != 1 || len(docs) != 1 || s.Revision() != 1 {
		t.Fatalf("metadata showed up in the documents: rev %d, docs %+v, %v", rev, docs, err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = openTest(t, dir)
	defer s.Close()
	list, err = s.ListMeta("edge/")
	if err != nil || fmt.Sprintf("%q", list) != `[{"edge/a" "{\"node_id\":\"a\"}"} {"edge/c" ""}]` {
		t.Fatalf("ListMeta after reopen = %q, %v", list, err)
	}
	if s.Revision() != 1 {
		t.Fatalf("Revision after reopen = %d, want 1", s.Revision())
	}
}

func TestMetaValidation(t *testing.T) {
	s := openTemp(t)
	for _, tc := range []struct{ key, inErr string }{
		{"", "metadata key is empty"},
		{"a\nb", "NUL or line break"},
		{"a\x00b", "NUL or line break"},
		{strings.Repeat("k", MaxMetaKeyLen+1), "at most 512"},
	} {
		if err := s.PutMeta(tc.key, nil); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.inErr) {
			t.Errorf("PutMeta(%.20q): %v, want ErrInvalid containing %q", tc.key, err, tc.inErr)
		}
		if _, err := s.GetMeta(tc.key); !errors.Is(err, ErrInvalid) {
			t.Errorf("GetMeta(%.20q): %v, want ErrInvalid", tc.key, err)
		}
		if err := s.DeleteMeta(tc.key); !errors.Is(err, ErrInvalid) {
			t.Errorf("DeleteMeta(%.20q): %v, want ErrInvalid", tc.key, err)
		}
	}
	if err := s.PutMeta("big", make([]byte, MaxMetaValueLen+1)); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "65537 bytes") {
		t.Fatalf("PutMeta of an oversized value: %v", err)
	}
	if err := s.PutMeta("max", make([]byte, MaxMetaValueLen)); err != nil {
		t.Fatalf("PutMeta of a MaxMetaValueLen value: %v", err)
	}
	if _, err := s.ListMeta(strings.Repeat("p", MaxMetaKeyLen+1)); !errors.Is(err, ErrInvalid) {
		t.Fatalf("ListMeta with an oversized prefix: %v", err)
	}
	// A prefix ending in 0xff bytes still bounds its range.
	if err := s.PutMeta("x\xff\xff", []byte("1")); err != nil {
		t.Fatal(err)
	}
	if err := s.PutMeta("y", []byte("2")); err != nil {
		t.Fatal(err)
	}
	if l, err := s.ListMeta("x\xff"); err != nil || len(l) != 1 || l[0].Key != "x\xff\xff" {
		t.Fatalf("ListMeta(x\\xff) = %q, %v", l, err)
	}
}
