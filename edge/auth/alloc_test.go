//go:build !race

package auth

import (
	"fmt"
	"testing"
)

func TestAllocsRepeatPaths(t *testing.T) {
	tb := newTable(t, `{"keys":[`+jwkRSA("r1")+`,`+jwkEC("e1")+`]}`)
	tok := sign(t, `{"alg":"RS256","kid":"r1"}`, claimsJSON(""), "RS256")
	for name, h := range map[string]*byteHeaders{
		"api key": {[]byte("x-api-key"), []byte("key-alice")},
		"jwt":     {[]byte("authorization"), []byte("Bearer " + tok)},
		"basic":   {[]byte("authorization"), []byte("Basic YWxpY2U6czNjcmV0")},
	} {
		var d Decision
		tb.Authenticate(0, h, t0, &d) // first sight may allocate (verification)
		if d.Status != 0 {
			t.Fatalf("%s: %+v", name, d)
		}
		if n := testing.AllocsPerRun(200, func() { tb.Authenticate(0, h, t0, &d) }); n != 0 {
			t.Errorf("%s: %v allocs per repeat request, want 0", name, n)
		}
	}
}

func BenchmarkAuthenticate(b *testing.B) {
	tb := newTable(b, `{"keys":[`+jwkRSA("r1")+`]}`)
	tok := sign(b, `{"alg":"RS256","kid":"r1"}`, claimsJSON(""), "RS256")
	for name, h := range map[string]*byteHeaders{
		"APIKey":      {[]byte("x-api-key"), []byte("key-alice")},
		"JWTCached":   {[]byte("authorization"), []byte("Bearer " + tok)},
		"BasicCached": {[]byte("authorization"), []byte("Basic YWxpY2U6czNjcmV0")},
	} {
		b.Run(name, func(b *testing.B) {
			var d Decision
			b.ReportAllocs()
			for b.Loop() {
				tb.Authenticate(0, h, t0, &d)
			}
		})
	}
}

// BenchmarkFirstVerify measures an uncached JWT verification per algorithm.
func BenchmarkFirstVerify(b *testing.B) {
	for _, tc := range []struct{ alg, key string }{
		{"HS256", jwkHS("k")}, {"RS256", jwkRSA("k")}, {"ES256", jwkEC("k")}, {"EdDSA", jwkEd("k")},
	} {
		tb := newTable(b, `{"keys":[`+tc.key+`]}`)
		tok := []byte(sign(b, fmt.Sprintf(`{"alg":%q,"kid":"k"}`, tc.alg), claimsJSON(""), tc.alg))
		b.Run(tc.alg, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := tb.VerifyToken(0, tok, t0); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
