package durable

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestWriteFile(t *testing.T) {
	dir := t.TempDir()
	if err := WriteFile(dir, "snap-1.sgs", "snap-", ".tmp", []byte("one")); err != nil {
		t.Fatal(err)
	}
	if err := WriteFile(dir, "snap-1.sgs", "snap-", ".tmp", []byte("two")); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(dir, "snap-1.sgs"))
	if err != nil || !bytes.Equal(got, []byte("two")) {
		t.Fatalf("read back %q, %v", got, err)
	}
	fi, _ := os.Stat(filepath.Join(dir, "snap-1.sgs"))
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, want 0600", fi.Mode().Perm())
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Fatalf("directory holds %d entries, want the file only", len(ents))
	}
	// A failed rename (the target is a non-empty directory) leaves no
	// temporary file behind.
	if err := os.MkdirAll(filepath.Join(dir, "busy", "x"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := WriteFile(dir, "busy", "snap-", ".tmp", []byte("x")); err == nil {
		t.Fatal("renaming over a non-empty directory succeeded")
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 2 {
		t.Fatalf("after a failed write the directory holds %d entries, want 2", len(ents))
	}
	if err := WriteFile(filepath.Join(dir, "missing"), "f", "snap-", ".tmp", nil); err == nil {
		t.Fatal("writing into a missing directory succeeded")
	}
}

func TestStageCommitAbort(t *testing.T) {
	dir := t.TempDir()
	data := []byte("staged")
	tmp, err := Stage(dir, "snap-", ".tmp", data)
	if err != nil {
		t.Fatal(err)
	}
	// Stage copied the bytes: the caller may reuse its buffer.
	copy(data, "reused")
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 || !strings.HasPrefix(ents[0].Name(), "snap-") || !strings.HasSuffix(ents[0].Name(), ".tmp") {
		t.Fatalf("after Stage the directory holds %v, want one snap-*.tmp", ents)
	}
	if err := tmp.Commit("snap-1.sgs"); err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(filepath.Join(dir, "snap-1.sgs")); err != nil || string(got) != "staged" {
		t.Fatalf("committed file holds %q, %v", got, err)
	}
	tmp, err = Stage(dir, "snap-", ".tmp", []byte("dropped"))
	if err != nil {
		t.Fatal(err)
	}
	if err := tmp.Abort(); err != nil {
		t.Fatal(err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 || ents[0].Name() != "snap-1.sgs" {
		t.Fatalf("after Abort the directory holds %v, want only snap-1.sgs", ents)
	}
	if _, err := Stage(filepath.Join(dir, "missing"), "snap-", ".tmp", data); err == nil {
		t.Fatal("staging into a missing directory succeeded")
	}
}
