package auth

import (
	"crypto/pbkdf2"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"strconv"
	"strings"
)

// PBKDF2 bounds accepted in a password hash. The floor keeps a weak hash
// from being shipped; the ceiling keeps one login from pinning a CPU.
const (
	MinPBKDF2Iterations = 100_000
	MaxPBKDF2Iterations = 10_000_000
)

type basicUser struct {
	salt, hash []byte
	iterations int
	consumer   int32
}

// parsePHC reads "$pbkdf2-sha256$i=<n>$<salt>$<hash>", salt and hash in
// unpadded standard base64 (the PHC string format's B64).
func parsePHC(s string) (basicUser, error) {
	var u basicUser
	parts := strings.Split(s, "$")
	if len(parts) != 5 || parts[0] != "" || parts[1] != "pbkdf2-sha256" || !strings.HasPrefix(parts[2], "i=") {
		return u, errors.New(`password hash is not "$pbkdf2-sha256$i=<iterations>$<salt>$<hash>"`)
	}
	n, err := strconv.Atoi(parts[2][2:])
	if err != nil || n < MinPBKDF2Iterations || n > MaxPBKDF2Iterations {
		return u, errors.New("password hash iterations must be an integer from 100000 to 10000000")
	}
	enc := base64.RawStdEncoding.Strict()
	if u.salt, err = enc.DecodeString(parts[3]); err != nil || len(u.salt) < 16 {
		return u, errors.New("password hash salt must be at least 16 bytes of unpadded base64")
	}
	if u.hash, err = enc.DecodeString(parts[4]); err != nil || len(u.hash) < 32 {
		return u, errors.New("password hash must be at least 32 bytes of unpadded base64")
	}
	u.iterations = n
	return u, nil
}

func (u *basicUser) check(password []byte) bool {
	got, err := pbkdf2.Key(sha256.New, string(password), u.salt, u.iterations, len(u.hash))
	return err == nil && subtle.ConstantTimeCompare(got, u.hash) == 1
}
