// Package netpollx reaches what netpoll (v0.7.2) does not export and the
// edge needs: a connection's fields (its fd operator, its write buffer)
// and its pollers' wait (pollwait.go). Every field is found by reflection
// and checked for its type; where netpoll's layout differs, the lookups
// return nil and callers keep netpoll's own behaviour.
package netpollx

import (
	"reflect"
	"unsafe"

	"github.com/cloudwego/netpoll"
)

var operatorType = reflect.TypeOf((*netpoll.FDOperator)(nil))

// Field points at the field name of the netpoll connection behind c if it
// has type typ, else nil. netpoll's Connection interface exposes neither
// the fd operator nor the write buffer, and the connection type is
// unexported, so the field is found through the value.
func Field(c netpoll.Connection, name string, typ reflect.Type) unsafe.Pointer {
	t := reflect.TypeOf(c)
	if t == nil || t.Kind() != reflect.Pointer || t.Elem().Kind() != reflect.Struct {
		return nil
	}
	f, ok := t.Elem().FieldByName(name)
	if !ok || f.Type != typ {
		return nil
	}
	return unsafe.Add(reflect.ValueOf(c).UnsafePointer(), f.Offset)
}

// Operator is c's fd operator, the record netpoll's poller dispatches c's
// events through; nil if the layout is not the expected one.
func Operator(c netpoll.Connection) *netpoll.FDOperator {
	p := Field(c, "operator", operatorType)
	if p == nil {
		return nil
	}
	return *(**netpoll.FDOperator)(p)
}
