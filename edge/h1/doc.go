// Package h1 is a strict, allocation-free HTTP/1.1 message head parser
// (RFC 9112) plus a streaming chunked-body validator.
//
// It works on plain byte slices and knows nothing of the transport, so the
// netpoll proxy and a later crypto/tls server drive the same code. Parsed
// values are sub-slices of the caller's buffer and die with it.
//
// The parser is deliberately stricter than RFC 9112 asks where leniency has
// been used for request smuggling: anything ambiguous is an *Error with a
// status code (400, 414, 431, 501, 505) and the caller must close the
// connection after answering it.
package h1
