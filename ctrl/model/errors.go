package model

import (
	"errors"
	"strings"
)

// FieldError says which field of a document is wrong and why. Field is a
// path in the document's JSON form, e.g. "endpoints[2].address".
type FieldError struct {
	Field  string
	Reason string
}

func (e *FieldError) Error() string {
	if e.Field == "" {
		return e.Reason
	}
	return e.Field + ": " + e.Reason
}

// FieldErrors lists every problem found in one document, in field order, so
// an operator can fix them all in one round trip. errors.As(err, &fe) with a
// *FieldError yields the first one.
type FieldErrors []*FieldError

func (es FieldErrors) Error() string {
	var b strings.Builder
	for i, e := range es {
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(e.Error())
	}
	return b.String()
}

// Unwrap exposes the individual errors to errors.Is/As.
func (es FieldErrors) Unwrap() []error {
	out := make([]error, len(es))
	for i, e := range es {
		out[i] = e
	}
	return out
}

// First returns the first problem of err if err carries any *FieldError.
func First(err error) (*FieldError, bool) {
	var fe *FieldError
	if errors.As(err, &fe) {
		return fe, true
	}
	return nil, false
}

// collector accumulates field errors during validation.
type collector struct{ errs FieldErrors }

func (c *collector) add(field, reason string) {
	c.errs = append(c.errs, &FieldError{Field: field, Reason: reason})
}

func (c *collector) err() error {
	if len(c.errs) == 0 {
		return nil
	}
	return c.errs
}
