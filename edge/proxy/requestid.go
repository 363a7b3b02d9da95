package proxy

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"time"

	"github.com/snapgate/snapgate/edge/h1"
)

// maxRequestID bounds an incoming X-Request-Id we keep; longer ones are
// replaced. 128 covers UUIDs, ULIDs and trace ids with room to spare.
const maxRequestID = 128

// initRequestIDs seeds the generator: a random 64-bit prefix per process
// (so two edges, or one edge after a restart, do not repeat ids) followed
// by a counter. Formatting it into the connection's buffer allocates
// nothing, unlike a UUID library.
func (s *Server) initRequestIDs() {
	var seed [8]byte
	if _, err := rand.Read(seed[:]); err != nil {
		// crypto/rand does not fail on Linux; the clock is a fallback
		// that still differs between processes.
		binary.BigEndian.PutUint64(seed[:], uint64(time.Now().UnixNano()))
	}
	hex.Encode(s.ridPfx[:], seed[:])
}

// validRequestID accepts ids made of characters that are safe to copy into
// log lines and headers unquoted: letters, digits and -._:+/=
func validRequestID(v []byte) bool {
	if len(v) == 0 || len(v) > maxRequestID {
		return false
	}
	for _, c := range v {
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case c == '-', c == '.', c == '_', c == ':', c == '+', c == '/', c == '=':
		default:
			return false
		}
	}
	return true
}

func isRequestID(name []byte) bool { return len(name) == 12 && h1.EqualFold(name, "x-request-id") }

// setRequestID keeps the first X-Request-Id of the request when it is
// valid and otherwise generates one; either way the id is copied into the
// connection state, since it is written after the head may be released.
func (s *Server) setRequestID(st *connState) {
	for _, f := range st.req.Fields() {
		if isRequestID(f.Name) {
			if validRequestID(f.Value) {
				st.ridLen = copy(st.rid[:], f.Value)
				return
			}
			break
		}
	}
	s.newRequestID(st)
}

// newRequestID gives the request a generated id: one that sent none (or
// an invalid one), or one refused before its head parsed.
func (s *Server) newRequestID(st *connState) {
	const hexDigits = "0123456789abcdef"
	n := copy(st.rid[:], s.ridPfx[:])
	st.rid[n] = '-'
	n++
	seq := s.ridSeq.Add(1)
	for i := 15; i >= 0; i-- {
		st.rid[n+i] = hexDigits[seq&15]
		seq >>= 4
	}
	st.ridLen = n + 16
}

func (st *connState) requestID() []byte { return st.rid[:st.ridLen] }
