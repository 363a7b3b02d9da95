package auth

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/json"
	"errors"
	"github.com/snapgate/snapgate/fbs/jwk"
	"hash"
	"math/big"
	"unicode/utf8"
)

// MaxTokenLen bounds a bearer token; larger ones are rejected unparsed.
const MaxTokenLen = 8 << 10

// Verification failures. Their text is safe to show a client: it names the
// rule, never key material or token contents.
var (
	ErrMalformed     = errors.New("token is not a compact JWS")
	ErrJSONSerial    = errors.New("JSON-serialized JWS is not accepted")
	ErrHeader        = errors.New("token header is invalid")
	ErrAlgNone       = errors.New(`alg "none" is not accepted`)
	ErrForbiddenHdr  = errors.New("token header carries jwk, jku, x5u, x5c or crit")
	ErrUnknownKey    = errors.New("token kid does not name a configured key")
	ErrAlgMismatch   = errors.New("token alg does not match its key")
	ErrAlgNotAllowed = errors.New("token alg is not allowed for this issuer")
	ErrSignature     = errors.New("token signature is invalid")
)

// forbiddenHeaders would let a token name its own key or change how it is
// processed; a gateway with static keys has no use for any of them.
var forbiddenHeaders = []string{"jwk", "jku", "x5u", "x5c", "crit"}

var b64 = base64.RawURLEncoding.Strict()

// jwsParts splits a compact JWS into its three segments. It rejects JSON
// serialization, wrong segment counts and empty header or signature.
func jwsParts(tok []byte) (hdr, payload, sig []byte, err error) {
	if len(tok) == 0 || len(tok) > MaxTokenLen {
		return nil, nil, nil, ErrMalformed
	}
	if tok[0] == '{' {
		return nil, nil, nil, ErrJSONSerial
	}
	d1 := bytes.IndexByte(tok, '.')
	if d1 <= 0 {
		return nil, nil, nil, ErrMalformed
	}
	d2 := bytes.IndexByte(tok[d1+1:], '.')
	if d2 < 0 {
		return nil, nil, nil, ErrMalformed
	}
	d2 += d1 + 1
	if bytes.IndexByte(tok[d2+1:], '.') >= 0 || d2 == len(tok)-1 {
		return nil, nil, nil, ErrMalformed
	}
	return tok[:d1], tok[d1+1 : d2], tok[d2+1:], nil
}

// header is the decoded protected header.
type header struct {
	Alg    string
	Kid    string
	HasKid bool
}

// parseHeader decodes and checks the protected header: strict base64url,
// UTF-8 JSON object without duplicate members, a string alg other than
// none, no forbidden members.
func parseHeader(seg []byte) (header, error) {
	var h header
	raw := make([]byte, b64.DecodedLen(len(seg)))
	n, err := b64.Decode(raw, seg)
	if err != nil {
		return h, ErrHeader
	}
	members, err := decodeObject(raw[:n])
	if err != nil {
		return h, ErrHeader
	}
	for _, name := range forbiddenHeaders {
		if _, ok := members[name]; ok {
			return h, ErrForbiddenHdr
		}
	}
	alg, ok := members["alg"]
	if !ok || json.Unmarshal(alg, &h.Alg) != nil {
		return h, ErrHeader
	}
	if h.Alg == "none" || h.Alg == "" {
		return h, ErrAlgNone
	}
	if kid, ok := members["kid"]; ok {
		if json.Unmarshal(kid, &h.Kid) != nil {
			return h, ErrHeader
		}
		h.HasKid = true
	}
	return h, nil
}

// decodeObject decodes one JSON object into its members, rejecting invalid
// UTF-8, duplicate names (which parsers resolve differently) and trailing data.
func decodeObject(b []byte) (map[string]json.RawMessage, error) {
	if !utf8.Valid(b) {
		return nil, errors.New("invalid UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	tok, err := dec.Token()
	if d, ok := tok.(json.Delim); err != nil || !ok || d != '{' {
		return nil, errors.New("not an object")
	}
	m := make(map[string]json.RawMessage)
	for dec.More() {
		kt, err := dec.Token()
		if err != nil {
			return nil, err
		}
		k, _ := kt.(string)
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, err
		}
		if _, dup := m[k]; dup {
			return nil, errors.New("duplicate member " + k)
		}
		m[k] = v
	}
	if _, err := dec.Token(); err != nil {
		return nil, err
	}
	// Only whitespace may follow (RFC 7515 §5.2: a completely valid JSON
	// object); a second Token call read any invalid byte as "nothing".
	if len(bytes.TrimSpace(b[dec.InputOffset():])) != 0 {
		return nil, errors.New("trailing data")
	}
	return m, nil
}

// VerifyJWS checks a compact JWS against ks and returns its decoded payload
// and the key that verified it. allowed, when non-nil, restricts the
// algorithms further (the issuer's list). The header alg must equal the
// selected key's alg, so neither RS/HS confusion nor a key of another type
// can be used.
func VerifyJWS(tok []byte, ks *jwk.KeySet, allowed func(alg string) bool) ([]byte, *jwk.Key, error) {
	hseg, pseg, sseg, err := jwsParts(tok)
	if err != nil {
		return nil, nil, err
	}
	h, err := parseHeader(hseg)
	if err != nil {
		return nil, nil, err
	}
	key, ok := ks.Lookup([]byte(h.Kid), h.HasKid)
	if !ok {
		return nil, nil, ErrUnknownKey
	}
	if h.Alg != key.Alg {
		return nil, nil, ErrAlgMismatch
	}
	if allowed != nil && !allowed(h.Alg) {
		return nil, nil, ErrAlgNotAllowed
	}
	sig := make([]byte, b64.DecodedLen(len(sseg)))
	n, err := b64.Decode(sig, sseg)
	if err != nil {
		return nil, nil, ErrMalformed
	}
	sig = sig[:n]
	payload := make([]byte, b64.DecodedLen(len(pseg)))
	n, err = b64.Decode(payload, pseg)
	if err != nil {
		return nil, nil, ErrMalformed
	}
	payload = payload[:n]
	if !verifySig(key, tok[:len(hseg)+1+len(pseg)], sig) {
		return nil, nil, ErrSignature
	}
	return payload, key, nil
}

func hashFor(alg string) (crypto.Hash, func() hash.Hash) {
	switch alg[2:] {
	case "384":
		return crypto.SHA384, sha512.New384
	case "512":
		return crypto.SHA512, sha512.New
	}
	return crypto.SHA256, sha256.New
}

func verifySig(k *jwk.Key, input, sig []byte) bool {
	if k.Alg == "EdDSA" {
		return len(sig) == ed25519.SignatureSize && ed25519.Verify(k.Ed, input, sig)
	}
	ch, hf := hashFor(k.Alg)
	switch k.Alg[:2] {
	case "HS":
		m := hmac.New(hf, k.HMAC)
		m.Write(input)
		return hmac.Equal(m.Sum(nil), sig)
	case "RS":
		h := hf()
		h.Write(input)
		return rsa.VerifyPKCS1v15(k.RSA, ch, h.Sum(nil), sig) == nil
	case "PS":
		h := hf()
		h.Write(input)
		// RFC 7518 §3.5: the salt is as long as the hash.
		return rsa.VerifyPSS(k.RSA, ch, h.Sum(nil), sig, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: ch}) == nil
	case "ES":
		size := (k.EC.Curve.Params().BitSize + 7) / 8
		// JWS carries r||s (IEEE P1363), fixed width; DER is not accepted.
		if len(sig) != 2*size {
			return false
		}
		h := hf()
		h.Write(input)
		r := new(big.Int).SetBytes(sig[:size])
		s := new(big.Int).SetBytes(sig[size:])
		return ecdsa.Verify(k.EC, h.Sum(nil), r, s)
	}
	return false
}
