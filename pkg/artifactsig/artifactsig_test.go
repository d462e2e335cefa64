package artifactsig

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

const sum = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"

func pubPEM(t testing.TB, pub any) []byte {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

func TestSignVerify(t *testing.T) {
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	pub2, priv2, _ := ed25519.GenerateKey(rand.Reader)
	kr, err := ParsePublicKeys(append(append([]byte("# trusted\n"), pubPEM(t, pub)...), pubPEM(t, pub2)...))
	if err != nil {
		t.Fatal(err)
	}
	if len(kr.Keys()) != 2 || !kr.Enabled() {
		t.Fatalf("keys = %v", kr.Keys())
	}
	sig := Sign(priv2, "debian/12/linux", sum)
	id, err := kr.Verify("debian/12/linux", sum, sig)
	if err != nil || id != KeyID(pub2) {
		t.Fatalf("Verify = %q, %v; want %q", id, err, KeyID(pub2))
	}
	// The signature binds both the name and the digest.
	if _, err := kr.Verify("debian/12/other", sum, sig); !errors.Is(err, ErrBadSig) {
		t.Errorf("other name: %v, want ErrBadSig", err)
	}
	other := "0" + sum[1:]
	if _, err := kr.Verify("debian/12/linux", other, sig); !errors.Is(err, ErrBadSig) {
		t.Errorf("other digest: %v, want ErrBadSig", err)
	}
	if _, err := kr.Verify("debian/12/linux", sum, nil); !errors.Is(err, ErrUnsigned) {
		t.Errorf("unsigned: %v, want ErrUnsigned", err)
	}
	_, stranger, _ := ed25519.GenerateKey(rand.Reader)
	if _, err := kr.Verify("debian/12/linux", sum, Sign(stranger, "debian/12/linux", sum)); !errors.Is(err, ErrBadSig) {
		t.Errorf("untrusted key: %v, want ErrBadSig", err)
	}
	_ = priv
	for _, enc := range [][]byte{sig, []byte(EncodeSignature(sig) + "\n"), []byte(" " + EncodeSignature(sig)[:86] + " ")} {
		got, err := ParseSignature(enc)
		if err != nil || !bytes.Equal(got, sig) {
			t.Errorf("ParseSignature(%q) = %x, %v", enc, got, err)
		}
	}
}

func TestParseKeysRefuses(t *testing.T) {
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	for name, data := range map[string][]byte{
		"empty":       nil,
		"no pem":      []byte("ssh-ed25519 AAAA"),
		"ecdsa":       pubPEM(t, &ec.PublicKey),
		"wrong type":  pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{1}}),
		"garbage der": pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: []byte{1, 2, 3}}),
	} {
		if _, err := ParsePublicKeys(data); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// TestOpenSSLSignatureVerifies checks the documented openssl commands make the
// signature bootchain verifies.
func TestOpenSSLSignatureVerifies(t *testing.T) {
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Skip("no openssl")
	}
	dir := t.TempDir()
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("openssl", args...).CombinedOutput(); err != nil {
			t.Fatalf("openssl %v: %v\n%s", args, err, out)
		}
	}
	key, pubf, msg, sigf := filepath.Join(dir, "k.pem"), filepath.Join(dir, "p.pem"), filepath.Join(dir, "msg"), filepath.Join(dir, "sig")
	run("genpkey", "-algorithm", "ed25519", "-out", key)
	run("pkey", "-in", key, "-pubout", "-out", pubf)
	if err := os.WriteFile(msg, Message("ipxe/ipxe.efi", sum), 0o600); err != nil {
		t.Fatal(err)
	}
	run("pkeyutl", "-sign", "-inkey", key, "-rawin", "-in", msg, "-out", sigf)
	kr, err := LoadPublicKeys(pubf)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile(sigf)
	sig, err := ParseSignature(raw)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kr.Verify("ipxe/ipxe.efi", sum, sig); err != nil {
		t.Fatalf("openssl's signature: %v", err)
	}
	priv, err := LoadPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(Sign(priv, "ipxe/ipxe.efi", sum), sig) {
		t.Error("bootchain's signature differs from openssl's (ed25519 is deterministic)")
	}
}

func FuzzParsePublicKeys(f *testing.F) {
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	f.Add(pubPEM(f, pub))
	f.Add([]byte("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		kr, err := ParsePublicKeys(data)
		if err != nil {
			return
		}
		for _, k := range kr.Keys() {
			if len(k.Pub) != ed25519.PublicKeySize || len(k.ID) != 16 {
				t.Fatalf("accepted key %x id %q", k.Pub, k.ID)
			}
		}
		kr.Verify("a", sum, make([]byte, 64))
	})
}

func FuzzParseSignature(f *testing.F) {
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	sig := Sign(priv, "a", sum)
	f.Add(sig)
	f.Add([]byte(EncodeSignature(sig)))
	f.Add([]byte("not base64 !"))
	f.Fuzz(func(t *testing.T, data []byte) {
		got, err := ParseSignature(data)
		if err == nil && len(got) != ed25519.SignatureSize {
			t.Fatalf("ParseSignature(%q) = %d bytes", data, len(got))
		}
	})
}

func FuzzParsePrivateKey(f *testing.F) {
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	der, _ := x509.MarshalPKCS8PrivateKey(priv)
	f.Add(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
	f.Add([]byte("-----BEGIN PRIVATE KEY-----\n-----END PRIVATE KEY-----\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		k, err := ParsePrivateKey(data)
		if err == nil && len(k) != ed25519.PrivateKeySize {
			t.Fatalf("accepted a %d-byte key", len(k))
		}
	})
}
