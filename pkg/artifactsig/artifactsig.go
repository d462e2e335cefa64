// Package artifactsig signs and verifies artifacts with detached ed25519
// signatures. A signature covers the signing message of an artifact's name and
// sha256 (Message), so it can neither be moved to other content nor to another
// name:
//
//	bootchain-artifact-v1\n<name>\n<sha256 hex>\n
//
// The message is plain text so that `openssl pkeyutl -sign -rawin` can make the
// same signature as `bootctl artifacts sign`. Keys are PEM: public keys PKIX
// ("PUBLIC KEY"), private keys PKCS#8 ("PRIVATE KEY"), as `openssl genpkey
// -algorithm ed25519` writes them.
package artifactsig

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

// Version is the first line of the signing message.
const Version = "bootchain-artifact-v1"

// Errors; compare with errors.Is.
var (
	ErrUnsigned = errors.New("no signature: this artifactstore accepts only signed artifacts")
	ErrBadSig   = errors.New("signature does not verify with any trusted key")
)

// MaxKeyFile bounds a key file (a few hundred keys).
const MaxKeyFile = 1 << 20

// Message is what a signature of the artifact name with content sha256 covers.
func Message(name, sha256 string) []byte {
	return []byte(Version + "\n" + name + "\n" + sha256 + "\n")
}

// Key is one trusted public key.
type Key struct {
	// ID: the first 16 hex digits of the SHA-256 of the PKIX DER encoding.
	ID  string
	Pub ed25519.PublicKey
}

// KeyID is the id of pub.
func KeyID(pub ed25519.PublicKey) string {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return ""
	}
	s := sha256.Sum256(der)
	return hex.EncodeToString(s[:8])
}

// Keyring is a set of trusted keys; the zero value trusts nothing.
type Keyring struct{ keys []Key }

// ParsePublicKeys reads every "PUBLIC KEY" PEM block of data; each must be an
// ed25519 PKIX key, and there must be at least one. Text outside blocks
// (comments) is ignored; another block type is an error.
func ParsePublicKeys(data []byte) (*Keyring, error) {
	if len(data) > MaxKeyFile {
		return nil, fmt.Errorf("key file larger than %d bytes", MaxKeyFile)
	}
	kr := &Keyring{}
	seen := map[string]bool{}
	for n := 1; ; n++ {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			break
		}
		if b.Type != "PUBLIC KEY" {
			return nil, fmt.Errorf("PEM block %d is %q, want PUBLIC KEY (an ed25519 PKIX public key)", n, b.Type)
		}
		k, err := x509.ParsePKIXPublicKey(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("PEM block %d: %w", n, err)
		}
		pub, ok := k.(ed25519.PublicKey)
		if !ok {
			return nil, fmt.Errorf("PEM block %d is a %T key, want ed25519", n, k)
		}
		id := KeyID(pub)
		if !seen[id] {
			seen[id] = true
			kr.keys = append(kr.keys, Key{ID: id, Pub: pub})
		}
	}
	if len(kr.keys) == 0 {
		return nil, errors.New("no PUBLIC KEY PEM block")
	}
	return kr, nil
}

// LoadPublicKeys reads ParsePublicKeys' format from a file.
func LoadPublicKeys(path string) (*Keyring, error) {
	data, err := readBounded(path)
	if err != nil {
		return nil, err
	}
	kr, err := ParsePublicKeys(data)
	if err != nil {
		return nil, fmt.Errorf("signing keys %s: %w", path, err)
	}
	return kr, nil
}

// Keys lists the trusted keys.
func (kr *Keyring) Keys() []Key {
	if kr == nil {
		return nil
	}
	return append([]Key(nil), kr.keys...)
}

// Enabled reports whether kr trusts any key (and so requires signatures).
func (kr *Keyring) Enabled() bool { return kr != nil && len(kr.keys) > 0 }

// Verify checks sig over the signing message of name and sha256 and returns the id
// of the key that made it. ErrUnsigned when sig is empty, ErrBadSig when no trusted
// key verifies it.
func (kr *Keyring) Verify(name, sha256 string, sig []byte) (string, error) {
	if len(sig) == 0 {
		return "", ErrUnsigned
	}
	if len(sig) != ed25519.SignatureSize {
		return "", fmt.Errorf("%w: %d bytes, an ed25519 signature has %d", ErrBadSig, len(sig), ed25519.SignatureSize)
	}
	msg := Message(name, sha256)
	for _, k := range kr.Keys() {
		if ed25519.Verify(k.Pub, msg, sig) {
			return k.ID, nil
		}
	}
	return "", ErrBadSig
}

// ParsePrivateKey reads a PKCS#8 "PRIVATE KEY" PEM block holding an ed25519 key.
func ParsePrivateKey(data []byte) (ed25519.PrivateKey, error) {
	b, _ := pem.Decode(data)
	if b == nil {
		return nil, errors.New("no PEM block (want an ed25519 PKCS#8 PRIVATE KEY, as `openssl genpkey -algorithm ed25519` writes)")
	}
	if b.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("PEM block is %q, want PRIVATE KEY (PKCS#8)", b.Type)
	}
	k, err := x509.ParsePKCS8PrivateKey(b.Bytes)
	if err != nil {
		// x509's message names no key material.
		return nil, fmt.Errorf("private key: %w", err)
	}
	priv, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("private key is a %T, want ed25519", k)
	}
	return priv, nil
}

// LoadPrivateKey reads ParsePrivateKey's format from a file.
func LoadPrivateKey(path string) (ed25519.PrivateKey, error) {
	data, err := readBounded(path)
	if err != nil {
		return nil, err
	}
	k, err := ParsePrivateKey(data)
	if err != nil {
		return nil, fmt.Errorf("signing key %s: %w", path, err)
	}
	return k, nil
}

// Sign signs the signing message of name and sha256.
func Sign(priv ed25519.PrivateKey, name, sha256 string) []byte {
	return ed25519.Sign(priv, Message(name, sha256))
}

// ParseSignature reads a signature file: the 64 raw bytes `openssl pkeyutl
// -sign` writes, or their base64 (standard or URL alphabet, padded or not,
// surrounding white space ignored) as `bootctl artifacts sign` prints.
func ParseSignature(data []byte) ([]byte, error) {
	if len(data) == ed25519.SignatureSize {
		return bytes.Clone(data), nil
	}
	s := strings.TrimSpace(string(data))
	if len(s) > 128 {
		return nil, fmt.Errorf("signature: %d bytes, want 64 raw bytes or their base64", len(data))
	}
	s = strings.TrimRight(s, "=")
	s = strings.NewReplacer("-", "+", "_", "/").Replace(s)
	b, err := base64.RawStdEncoding.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("signature: want 64 raw bytes or their base64: %w", err)
	}
	if len(b) != ed25519.SignatureSize {
		return nil, fmt.Errorf("signature: %d bytes, an ed25519 signature has %d", len(b), ed25519.SignatureSize)
	}
	return b, nil
}

// EncodeSignature is the base64 form ParseSignature reads.
func EncodeSignature(sig []byte) string { return base64.StdEncoding.EncodeToString(sig) }

func readBounded(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxKeyFile+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if len(data) > MaxKeyFile {
		return nil, fmt.Errorf("%s: larger than %d bytes", path, MaxKeyFile)
	}
	return data, nil
}
