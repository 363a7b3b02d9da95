package model

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"
)

// DecodeStrict decodes exactly one JSON object from data into v, which must
// be a pointer to a struct. It is stricter than encoding/json, because an
// operator's typo must not be silently dropped or reinterpreted:
//
//   - unknown fields, duplicate fields and case-mismatched names are errors
//     (encoding/json matches names case-insensitively and lets the last
//     duplicate win);
//   - null is accepted only for pointer and array fields;
//   - numbers must be integers within the field's range;
//   - the input must be valid UTF-8 (encoding/json would replace bad bytes);
//   - nothing but whitespace may follow the object.
//
// Every error is a *FieldError whose Field is the JSON path of the problem,
// e.g. "route.endpoints[2].address" (empty for problems with the whole input).
func DecodeStrict(data []byte, v any) error {
	rv := reflect.ValueOf(v)
	if rv.Kind() != reflect.Pointer || rv.IsNil() || rv.Elem().Kind() != reflect.Struct {
		return &FieldError{Reason: fmt.Sprintf("internal: DecodeStrict needs a non-nil pointer to a struct, got %T", v)}
	}
	if !utf8.Valid(data) {
		return &FieldError{Reason: "input is not valid UTF-8"}
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if err := walk(dec, rv.Elem().Type(), ""); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return &FieldError{Reason: fmt.Sprintf("unexpected data after the JSON object at byte %d", dec.InputOffset())}
	}
	// The walk proved that the input has exactly the shape of v, so this
	// cannot fail on anything the walk accepted; the check is belt and braces.
	if err := json.Unmarshal(data, v); err != nil {
		return &FieldError{Reason: "decoding: " + err.Error()}
	}
	return nil
}

func walk(dec *json.Decoder, t reflect.Type, path string) error {
	tok, err := dec.Token()
	if err != nil {
		return syntaxError(dec, path, err)
	}
	if tok == nil {
		// null means "absent" for pointers, and "empty" for arrays because
		// encoding/json writes a nil slice as null; for anything else it is
		// a mistake that encoding/json would silently ignore.
		if t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice {
			return nil
		}
		return &FieldError{Field: path, Reason: "must be " + describe(t) + ", got null"}
	}
	if t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Struct:
		if d, ok := tok.(json.Delim); !ok || d != '{' {
			return typeError(path, t, tok)
		}
		fields, err := fieldsOf(t)
		if err != nil {
			return &FieldError{Field: path, Reason: err.Error()}
		}
		seen := make(map[string]bool, len(fields))
		for dec.More() {
			ktok, err := dec.Token()
			if err != nil {
				return syntaxError(dec, path, err)
			}
			key, _ := ktok.(string) // the decoder guarantees object keys are strings
			child := key
			if path != "" {
				child = path + "." + key
			}
			ft, ok := fields[key]
			if !ok {
				return &FieldError{Field: child, Reason: "unknown field" + suggest(key, fields)}
			}
			if seen[key] {
				return &FieldError{Field: child, Reason: "duplicate field"}
			}
			seen[key] = true
			if err := walk(dec, ft, child); err != nil {
				return err
			}
		}
		if _, err := dec.Token(); err != nil { // the closing '}'
			return syntaxError(dec, path, err)
		}
		return nil
	case reflect.Slice:
		if d, ok := tok.(json.Delim); !ok || d != '[' {
			return typeError(path, t, tok)
		}
		for i := 0; dec.More(); i++ {
			if err := walk(dec, t.Elem(), fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return err
			}
		}
		if _, err := dec.Token(); err != nil { // the closing ']'
			return syntaxError(dec, path, err)
		}
		return nil
	case reflect.String:
		if _, ok := tok.(string); !ok {
			return typeError(path, t, tok)
		}
		return nil
	case reflect.Bool:
		if _, ok := tok.(bool); !ok {
			return typeError(path, t, tok)
		}
		return nil
	case reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uint:
		n, ok := tok.(json.Number)
		if !ok {
			return typeError(path, t, tok)
		}
		if _, err := strconv.ParseUint(string(n), 10, t.Bits()); err != nil {
			return &FieldError{Field: path, Reason: fmt.Sprintf("must be %s, got %s", describe(t), n)}
		}
		return nil
	default:
		return &FieldError{Field: path, Reason: "internal: DecodeStrict does not support Go type " + t.String()}
	}
}

func syntaxError(dec *json.Decoder, path string, err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return &FieldError{Field: path, Reason: "truncated JSON"}
	}
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return &FieldError{Field: path, Reason: fmt.Sprintf("malformed JSON at byte %d: %s", se.Offset, strings.TrimPrefix(se.Error(), "json: "))}
	}
	return &FieldError{Field: path, Reason: fmt.Sprintf("malformed JSON at byte %d: %v", dec.InputOffset(), err)}
}

func typeError(path string, t reflect.Type, tok json.Token) error {
	return &FieldError{Field: path, Reason: "must be " + describe(t) + ", got " + describeToken(tok)}
}

func describe(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Pointer:
		return describe(t.Elem())
	case reflect.Struct:
		return "an object"
	case reflect.Slice:
		return "an array"
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uint:
		return fmt.Sprintf("an integer from 0 to %d", uint64(1)<<t.Bits()-1)
	}
	return t.String()
}

func describeToken(tok json.Token) string {
	switch v := tok.(type) {
	case json.Delim:
		if v == '{' {
			return "an object"
		}
		return "an array"
	case string:
		return "a string"
	case bool:
		return "a boolean"
	case json.Number:
		return "the number " + string(v)
	}
	return "null"
}

// suggest names the known field a mistyped one probably meant, when the only
// difference is letter case (encoding/json would have accepted it silently).
func suggest(key string, fields map[string]reflect.Type) string {
	for name := range fields {
		if strings.EqualFold(name, key) {
			return fmt.Sprintf(" (did you mean %q?)", name)
		}
	}
	return ""
}

var fieldCache sync.Map // reflect.Type -> map[string]reflect.Type

// fieldsOf maps the JSON names of t's fields to their types, the way
// encoding/json names them.
func fieldsOf(t reflect.Type) (map[string]reflect.Type, error) {
	if m, ok := fieldCache.Load(t); ok {
		return m.(map[string]reflect.Type), nil
	}
	m := make(map[string]reflect.Type, t.NumField())
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		if f.Anonymous {
			return nil, fmt.Errorf("internal: DecodeStrict does not support embedded field %s in %s", f.Name, t)
		}
		name := f.Name
		if tag, ok := f.Tag.Lookup("json"); ok {
			if tag == "-" {
				continue
			}
			if n, _, _ := strings.Cut(tag, ","); n != "" {
				name = n
			}
		}
		m[name] = f.Type
	}
	fieldCache.Store(t, m)
	return m, nil
}

// DecodeRoute strictly decodes one route document; it does not validate it.
func DecodeRoute(data []byte) (Route, error) {
	var r Route
	err := DecodeStrict(data, &r)
	return r, err
}

// DecodeCluster strictly decodes one cluster document; it does not validate it.
func DecodeCluster(data []byte) (Cluster, error) {
	var c Cluster
	err := DecodeStrict(data, &c)
	return c, err
}
