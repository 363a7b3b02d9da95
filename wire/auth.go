package wire

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strings"
)

// Stream authentication (docs/stream.md, "Handshake"): both sides prove they
// know a shared secret without sending it. The edge's HELLO carries a fresh
// nonce; ctrl answers CHALLENGE with its own fresh nonce and its proof; the
// edge checks that proof and answers PROOF. Each proof is HMAC-SHA256 keyed
// by the secret over a direction label, the protocol version, the whole
// HELLO (node id, have version, have hash, edge nonce) and ctrl's nonce.
// Fresh nonces from both sides mean a recorded handshake replays into a
// mismatch; the labels mean neither side's proof can be reflected as the
// other's. Without TLS the stream is authenticated but not encrypted.

// ProofSize is the length of an HMAC-SHA256 proof.
const ProofSize = sha256.Size

// MinSecret is the shortest stream secret accepted: 16 bytes is 128 bits if
// the secret is random, which ReadSecretFile cannot check, only encourage.
const MinSecret = 16

// MaxHandshakePayload is the largest payload a frame may carry before the
// peer has proved the secret: the longest of HELLO (with a MaxNodeID id),
// CHALLENGE and PROOF. Both ends read the handshake with it
// (Reader.SetMaxPayload), so a peer that never authenticates cannot make
// the other side read, or allocate for, a snapshot-sized frame.
const MaxHandshakePayload = max(helloFixed+MaxNodeID, NonceSize+ProofSize, ProofSize)

// ErrAuth is wrapped by every handshake failure.
var ErrAuth = errors.New("wire: stream authentication failed")

// Challenge is ctrl's answer to HELLO: its nonce and its proof.
type Challenge struct {
	Nonce [NonceSize]byte
	Proof [ProofSize]byte
}

// Proof is the edge's answer to CHALLENGE.
type Proof struct {
	MAC [ProofSize]byte
}

// AppendChallenge appends the CHALLENGE payload: nonce, proof.
func AppendChallenge(dst []byte, m Challenge) []byte {
	dst = append(dst, m.Nonce[:]...)
	return append(dst, m.Proof[:]...)
}

// DecodeChallenge decodes a CHALLENGE payload strictly.
func DecodeChallenge(p []byte) (Challenge, error) {
	if len(p) != NonceSize+ProofSize {
		return Challenge{}, fmt.Errorf("%w: CHALLENGE is %d bytes, want %d", ErrMalformed, len(p), NonceSize+ProofSize)
	}
	var m Challenge
	copy(m.Nonce[:], p[:NonceSize])
	copy(m.Proof[:], p[NonceSize:])
	return m, nil
}

// AppendProof appends the PROOF payload: the MAC.
func AppendProof(dst []byte, m Proof) []byte { return append(dst, m.MAC[:]...) }

// DecodeProof decodes a PROOF payload strictly.
func DecodeProof(p []byte) (Proof, error) {
	if len(p) != ProofSize {
		return Proof{}, fmt.Errorf("%w: PROOF is %d bytes, want %d", ErrMalformed, len(p), ProofSize)
	}
	var m Proof
	copy(m.MAC[:], p)
	return m, nil
}

// NewNonce returns NonceSize bytes from the operating system's CSPRNG.
func NewNonce() ([NonceSize]byte, error) {
	var n [NonceSize]byte
	if _, err := rand.Read(n[:]); err != nil {
		return n, fmt.Errorf("wire: reading a handshake nonce: %w", err)
	}
	return n, nil
}

// proofVersion is the protocol version byte in the proofs: 2, the version
// that introduced them, whatever the stream's frame version. Binding the
// frame version would not stop an on-path downgrade to 2 (which only turns
// off REPORT): frames after the handshake are not authenticated anyway.
const proofVersion = 2

const (
	labelCtrl = "snapgate stream ctrl proof\x00"
	labelEdge = "snapgate stream edge proof\x00"
)

func proof(label string, secret []byte, h Hello, ctrlNonce [NonceSize]byte) [ProofSize]byte {
	m := hmac.New(sha256.New, secret)
	var b [8]byte
	m.Write([]byte(label))
	m.Write([]byte{proofVersion, byte(len(h.NodeID))})
	m.Write([]byte(h.NodeID))
	binary.BigEndian.PutUint64(b[:], h.HaveVersion)
	m.Write(b[:])
	binary.BigEndian.PutUint64(b[:], h.HaveHash)
	m.Write(b[:])
	m.Write(h.Nonce[:])
	m.Write(ctrlNonce[:])
	var out [ProofSize]byte
	m.Sum(out[:0])
	return out
}

// CtrlProof is the proof ctrl sends in CHALLENGE for the edge's HELLO h.
func CtrlProof(secret []byte, h Hello, ctrlNonce [NonceSize]byte) [ProofSize]byte {
	return proof(labelCtrl, secret, h, ctrlNonce)
}

// EdgeProof is the proof the edge sends in PROOF after ctrl's CHALLENGE.
func EdgeProof(secret []byte, h Hello, ctrlNonce [NonceSize]byte) [ProofSize]byte {
	return proof(labelEdge, secret, h, ctrlNonce)
}

// ProofEqual compares two proofs in constant time.
func ProofEqual(a, b [ProofSize]byte) bool { return hmac.Equal(a[:], b[:]) }

// ReadSecretFile reads a stream secret: the file's content with surrounding
// whitespace trimmed (so `openssl rand -hex 32 > file` works), at least
// MinSecret bytes. The file must not be readable by group or others, as an
// ssh key must not, since anyone who reads it can receive every snapshot.
func ReadSecretFile(path string) ([]byte, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("wire: stream secret file: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("wire: stream secret file %s is not a regular file", path)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("wire: stream secret file %s has mode %04o; it must not be accessible by group or others (chmod 600)", path, perm)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("wire: stream secret file: %w", err)
	}
	s := strings.TrimSpace(string(b))
	if len(s) < MinSecret {
		return nil, fmt.Errorf("wire: stream secret in %s is %d bytes, want at least %d", path, len(s), MinSecret)
	}
	return []byte(s), nil
}
