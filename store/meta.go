package store

import (
	"bytes"
	"errors"
	"fmt"
	"strings"

	"github.com/cockroachdb/pebble/v2"
)

const (
	// MaxMetaKeyLen bounds a metadata key in bytes.
	MaxMetaKeyLen = 512
	// MaxMetaValueLen bounds a metadata value: the side table is for small
	// operational records, not documents.
	MaxMetaValueLen = 64 << 10
)

// ValidateMetaKey checks that key is 1..MaxMetaKeyLen bytes with no NUL or
// line break (keys show up in logs).
func ValidateMetaKey(key string) error {
	if key == "" {
		return fmt.Errorf("metadata key is empty: %w", ErrInvalid)
	}
	if len(key) > MaxMetaKeyLen {
		return fmt.Errorf("metadata key %.32q... is %d bytes, at most %d allowed: %w", key, len(key), MaxMetaKeyLen, ErrInvalid)
	}
	if i := strings.IndexAny(key, "\x00\n\r"); i >= 0 {
		return fmt.Errorf("metadata key %q: byte %d is a NUL or line break: %w", key, i, ErrInvalid)
	}
	return nil
}

// Metadata puts skip the fsync (pebble.NoSync) and take no revision: they
// need no ordering against Apply, so they take neither mu nor revKey, and
// they never wait behind a document commit's fsync. The WAL is one ordered
// log, so the next fsynced commit of any kind makes them durable too.
// Deletes are rare operator actions and are fsynced (Store.DeleteMeta);
// pebble group-commits that fsync with any concurrent one.

// PutMeta implements Store.
func (p *Pebble) PutMeta(key string, value []byte) error {
	if err := ValidateMetaKey(key); err != nil {
		return fmt.Errorf("store: put meta: %w", err)
	}
	if len(value) > MaxMetaValueLen {
		return fmt.Errorf("store: put meta %q: value is %d bytes, at most %d allowed: %w", key, len(value), MaxMetaValueLen, ErrInvalid)
	}
	if err := p.enter("put meta"); err != nil {
		return err
	}
	defer p.life.RUnlock()
	if err := p.db.Set(metaKey(key), value, pebble.NoSync); err != nil {
		return fmt.Errorf("store: put meta %q: %w", key, err)
	}
	return nil
}

// SyncMeta implements Store.
func (p *Pebble) SyncMeta() error {
	if err := p.enter("sync meta"); err != nil {
		return err
	}
	defer p.life.RUnlock()
	if err := p.db.LogData(nil, pebble.Sync); err != nil {
		return fmt.Errorf("store: sync meta: %w", err)
	}
	return nil
}

// GetMeta implements Store.
func (p *Pebble) GetMeta(key string) ([]byte, error) {
	if err := ValidateMetaKey(key); err != nil {
		return nil, fmt.Errorf("store: get meta: %w", err)
	}
	if err := p.enter("get meta"); err != nil {
		return nil, err
	}
	defer p.life.RUnlock()
	v, closer, err := p.db.Get(metaKey(key))
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, fmt.Errorf("store: get meta %q: %w", key, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("store: get meta %q: %w", key, err)
	}
	defer closer.Close()
	return bytes.Clone(v), nil
}

// ListMeta implements Store.
func (p *Pebble) ListMeta(prefix string) (entries []Meta, err error) {
	if len(prefix) > MaxMetaKeyLen {
		return nil, fmt.Errorf("store: list meta: prefix is %d bytes, at most %d allowed: %w", len(prefix), MaxMetaKeyLen, ErrInvalid)
	}
	if err := p.enter("list meta"); err != nil {
		return nil, err
	}
	defer p.life.RUnlock()
	lower := metaKey(prefix)
	it, err := p.db.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: prefixEnd(lower)})
	if err != nil {
		return nil, fmt.Errorf("store: list meta %q: %w", prefix, err)
	}
	defer func() {
		if cerr := it.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("store: list meta %q: %w", prefix, cerr)
		}
	}()
	for it.First(); it.Valid(); it.Next() {
		v, err := it.ValueAndErr()
		if err != nil {
			return nil, fmt.Errorf("store: list meta: read %q: %w", it.Key(), err)
		}
		entries = append(entries, Meta{Key: string(it.Key()[len(metaPrefix):]), Value: bytes.Clone(v)})
	}
	return entries, nil
}

// DeleteMeta implements Store.
func (p *Pebble) DeleteMeta(key string) error {
	if err := ValidateMetaKey(key); err != nil {
		return fmt.Errorf("store: delete meta: %w", err)
	}
	if err := p.enter("delete meta"); err != nil {
		return err
	}
	defer p.life.RUnlock()
	if err := p.db.Delete(metaKey(key), pebble.Sync); err != nil {
		return fmt.Errorf("store: delete meta %q: %w", key, err)
	}
	return nil
}
