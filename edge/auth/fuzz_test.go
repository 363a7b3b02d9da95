package auth

import (
	"github.com/snapgate/snapgate/fbs/jwk"
	"testing"
	"time"
)

// byteHeaders is a HeaderSource that returns stored []byte values, like the
// proxy's parsed request (a map of strings would allocate per lookup).
type byteHeaders struct{ name, value []byte }

func (h *byteHeaders) Header(name []byte) ([]byte, bool) {
	if string(name) == string(h.name) {
		return h.value, true
	}
	return nil, false
}

// FuzzJWT feeds arbitrary bearer tokens through parsing, verification and
// claim checks: nothing may panic, and nothing unsigned may pass.
func FuzzJWT(f *testing.F) {
	tb := newTable(f, `{"keys":[`+jwkHS("h1")+`]}`)
	good := sign(f, `{"alg":"HS256","kid":"h1"}`, claimsJSON(""), "HS256")
	for _, s := range []string{good, good + "x", "a.b.c", "..", "{}", `{"payload":"x"}`,
		"eyJhbGciOiJub25lIn0.e30.", "eyJhbGciOiJIUzI1NiJ9.e30.AAAA", "eyJhbGciOiJIUzI1NiIsImFsZyI6Im5vbmUifQ.e30.AA"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, tok []byte) {
		c, err := tb.VerifyToken(0, tok, t0)
		if err == nil && string(tok) != good {
			t.Fatalf("accepted a token that was not signed here: %q -> %d", tok, c)
		}
		var d Decision
		tb.Authenticate(0, &byteHeaders{[]byte("authorization"), append([]byte("Bearer "), tok...)}, time.Unix(1_700_000_000, 0), &d)
		if d.Status == 0 && string(tok) != good {
			t.Fatalf("Authenticate admitted %q", tok)
		}
	})
}

// FuzzKeySet: any bytes as a JWK set parse or fail, never panic.
func FuzzKeySet(f *testing.F) {
	f.Add([]byte(`{"keys":[` + jwkHS("h1") + `]}`))
	f.Add([]byte(`{"keys":[` + jwkEC("e1") + `,` + jwkEd("d1") + `]}`))
	f.Add([]byte(`{"keys":[{"kty":"RSA","alg":"RS256","n":"AQAB","e":"AQAB"}]}`))
	f.Fuzz(func(t *testing.T, b []byte) { jwk.ParseKeySet(b) })
}
