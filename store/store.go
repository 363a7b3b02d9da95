// Package store keeps snapgate's versioned documents (routes, clusters, health)
// and the history of built snapshots.
//
// Store is the contract; it mentions no Pebble types so that a distributed
// backend (etcd) can meet it later. *Pebble is the embedded implementation.
//
// Every document has a per-object Version used for compare-and-swap: on
// create the Revision of that commit, +1 on every put. Starting from the
// revision rather than from 1 keeps versions from repeating across a delete
// and a re-create (a version is never above the revision that wrote it, and
// a re-create comes at a later revision than every version before it), so
// an expected version read before a delete can never match the document
// created after it. Every document also carries the global Revision of the
// commit that wrote it. Each successful Apply produces exactly one new Revision, and the
// whole Apply is durable (fsynced) before it returns; ApplyNoSync leaves the
// fsync to a later Sync, so that concurrent writers can share it.
//
// Beside the documents the store holds a small side table of metadata
// (PutMeta and friends) for operational records such as the last known
// state of each edge: those writes take no revision, so they never cause a
// new snapshot version.
package store

import (
	"errors"
	"fmt"
)

// Doc is one stored document.
type Doc struct {
	Kind, ID string
	Version  uint64 // per object: the creating Revision on create, +1 on every put; 0 in the result of a delete
	Revision uint64 // global revision of the commit that wrote this version
	Body     []byte // opaque to the store (ctrl stores JSON)
}

// Mutation is one change inside an Apply.
//
// Expected: nil = no check; pointer to 0 = must not exist; pointer to n =
// current version must be n. Body nil = delete (a non-nil empty Body is a put
// of an empty document).
type Mutation struct {
	Kind, ID string
	Body     []byte
	Expected *uint64
}

var (
	// ErrNotFound is wrapped by errors for a document or snapshot that does not exist.
	ErrNotFound = errors.New("not found")
	// ErrConflict is matched (errors.Is) by *ConflictError.
	ErrConflict = errors.New("version conflict")
	// ErrClosed is returned by every operation after Close.
	ErrClosed = errors.New("store is closed")
	// ErrInvalid is wrapped by errors for malformed input: a bad kind or id, an
	// empty Apply, a duplicate mutation, empty snapshot data, keep < 1, a bad
	// metadata key or an oversized metadata value.
	ErrInvalid = errors.New("invalid argument")
)

// Meta is one entry of the metadata side table.
type Meta struct {
	Key   string
	Value []byte
}

// ConflictError reports a mutation whose Expected version did not match the
// stored one. Actual is 0 when the document does not exist.
type ConflictError struct {
	Kind, ID string
	Expected uint64
	Actual   uint64
}

func (e *ConflictError) Error() string {
	switch {
	case e.Expected == 0:
		return fmt.Sprintf("%s %q already exists (version %d)", e.Kind, e.ID, e.Actual)
	case e.Actual == 0:
		return fmt.Sprintf("%s %q: expected_version %d is stale (it does not exist)", e.Kind, e.ID, e.Expected)
	default:
		return fmt.Sprintf("%s %q: expected_version %d is stale (current version is %d)", e.Kind, e.ID, e.Expected, e.Actual)
	}
}

// Is makes errors.Is(err, ErrConflict) true for a *ConflictError.
func (e *ConflictError) Is(target error) bool { return target == ErrConflict }

// Store is the versioned document store plus the snapshot history.
// Implementations are safe for concurrent use. Byte slices they return are
// copies the caller owns.
type Store interface {
	// Apply validates every mutation, checks every Expected version and then
	// commits all of them under one new revision, durably, or none of them.
	// A stale Expected returns a *ConflictError; deleting a missing document
	// returns an error wrapping ErrNotFound. For puts the returned Doc is the
	// new version; for deletes it has Version 0 and the new Revision.
	Apply(muts ...Mutation) (rev uint64, docs []Doc, err error)
	// ApplyNoSync is Apply returning before the revision is durable. The
	// revision is committed in order: Get, List, Load, Revision and later
	// Applies see it at once, and it becomes durable with the next Sync
	// (or Apply, or snapshot commit). A crash before that loses it and
	// every revision after it, never a revision without those before it.
	// A caller acknowledges the write only after a Sync that started after
	// ApplyNoSync returned; meanwhile it need hold no lock, which lets
	// concurrent writers share one fsync.
	ApplyNoSync(muts ...Mutation) (rev uint64, docs []Doc, err error)
	// Sync makes every revision committed so far durable. Concurrent
	// calls share fsyncs.
	Sync() error
	// Get returns one document or an error wrapping ErrNotFound.
	Get(kind, id string) (Doc, error)
	// List returns every document of one kind, sorted by ID.
	List(kind string) ([]Doc, error)
	// Load returns every document, sorted by kind then ID, and the revision
	// they are consistent at.
	Load() (rev uint64, docs []Doc, err error)
	// Revision is the revision of the last committed Apply (0 for an empty store).
	Revision() uint64
	// PutSnapshot stores a snapshot durably and then keeps only the `keep`
	// newest versions (keep must be at least 1): StageSnapshot, then Commit.
	PutSnapshot(version uint64, data []byte, keep int) error
	// StageSnapshot is the first half of PutSnapshot: it validates the
	// arguments and copies data into the store, but makes nothing durable
	// and changes nothing readers see. data is not referenced after it
	// returns. The version is stored only by the StagedSnapshot's Commit; a
	// crash before that loses it, and whatever staging left behind is
	// removed when the store next opens.
	StageSnapshot(version uint64, data []byte, keep int) (StagedSnapshot, error)
	// Snapshot returns the bytes of one stored version or an error wrapping ErrNotFound.
	Snapshot(version uint64) ([]byte, error)
	// LatestSnapshot returns the newest stored snapshot or an error wrapping ErrNotFound.
	LatestSnapshot() (version uint64, data []byte, err error)

	// PutMeta sets a metadata entry (see ValidateMetaKey, MaxMetaValueLen).
	// Metadata is outside the revisions: it changes neither Revision nor
	// anything Load returns. A write is atomic but not fsynced: it becomes
	// durable with the next SyncMeta, fsynced write of any kind (every
	// Apply and snapshot commit) or Close, and a crash of the process, not
	// only of the machine, before that may lose it (Pebble holds unsynced
	// log records in the process). Meant for state that is cheap to lose a
	// second of, such as edge status, with a SyncMeta after each batch.
	PutMeta(key string, value []byte) error
	// SyncMeta makes every metadata write so far durable (one fsync).
	SyncMeta() error
	// GetMeta returns one metadata value or an error wrapping ErrNotFound.
	GetMeta(key string) ([]byte, error)
	// ListMeta returns every metadata entry whose key starts with prefix
	// (all of them for ""), sorted by key.
	ListMeta(prefix string) ([]Meta, error)
	// DeleteMeta removes a metadata entry durably: unlike PutMeta it is
	// fsynced before it returns (with every metadata write before it), as
	// a deletion is an operator's decision (forgetting an edge) that a
	// crash must not undo. Deleting a missing key is not an error.
	DeleteMeta(key string) error

	// Close releases the store; later calls return ErrClosed.
	Close() error
}

// StagedSnapshot is a snapshot version staged by Store.StageSnapshot. Call
// Commit or Abort once; it is not safe for concurrent use.
type StagedSnapshot interface {
	// Commit stores the version durably and then keeps only the newest
	// versions, as PutSnapshot does. If it returns an error (ErrClosed
	// after Close) the version is not stored, what was stored stays, and
	// the staged bytes are gone: a second Commit fails.
	Commit() error
	// Abort discards the staged version; after Commit it does nothing.
	Abort() error
}
