package store

import (
	"fmt"
	"strings"
)

const (
	// MaxKindLen bounds a kind name; kinds are a short fixed vocabulary
	// ("route", "cluster", "health"), so a long one is a bug, not data.
	MaxKindLen = 64
	// MaxIDLen bounds a document id in bytes.
	MaxIDLen = 256
)

// ValidateKind checks that kind is non-empty, at most MaxKindLen bytes, and
// only [a-z0-9_-]. The alphabet excludes '/', which keeps the key layout
// d/<kind>/<id> unambiguous.
func ValidateKind(kind string) error {
	if kind == "" {
		return fmt.Errorf("kind is empty: %w", ErrInvalid)
	}
	if len(kind) > MaxKindLen {
		return fmt.Errorf("kind %.16q... is %d bytes, at most %d allowed: %w", kind, len(kind), MaxKindLen, ErrInvalid)
	}
	for i := 0; i < len(kind); i++ {
		c := kind[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '_' || c == '-') {
			return fmt.Errorf("kind %q: byte %d (%q) is not one of [a-z0-9_-]: %w", kind, i, c, ErrInvalid)
		}
	}
	return nil
}

// ValidateID checks that id is non-empty, at most MaxIDLen bytes and has no
// NUL or newline (ids show up in line-oriented logs and admin output).
func ValidateID(kind, id string) error {
	if id == "" {
		return fmt.Errorf("%s id is empty: %w", kind, ErrInvalid)
	}
	if len(id) > MaxIDLen {
		return fmt.Errorf("%s id %.32q... is %d bytes, at most %d allowed: %w", kind, id, len(id), MaxIDLen, ErrInvalid)
	}
	if i := strings.IndexAny(id, "\x00\n\r"); i >= 0 {
		return fmt.Errorf("%s id %q: byte %d is a NUL or line break: %w", kind, id, i, ErrInvalid)
	}
	return nil
}

func validateKey(kind, id string) error {
	if err := ValidateKind(kind); err != nil {
		return err
	}
	return ValidateID(kind, id)
}

// validateMutations checks shapes only (no reads): kinds, ids, and that no
// document appears twice, since the Expected of a second mutation on the same
// document would be ambiguous.
func validateMutations(muts []Mutation) error {
	if len(muts) == 0 {
		return fmt.Errorf("store: apply: no mutations: %w", ErrInvalid)
	}
	type docKey struct{ kind, id string }
	var seen map[docKey]int
	if len(muts) > 1 {
		seen = make(map[docKey]int, len(muts))
	}
	for i, m := range muts {
		if err := validateKey(m.Kind, m.ID); err != nil {
			return fmt.Errorf("store: apply: mutation %d: %w", i, err)
		}
		if seen == nil {
			continue
		}
		k := docKey{m.Kind, m.ID}
		if j, dup := seen[k]; dup {
			return fmt.Errorf("store: apply: mutations %d and %d both change %s %q; one apply may change a document once: %w", j, i, m.Kind, m.ID, ErrInvalid)
		}
		seen[k] = i
	}
	return nil
}
