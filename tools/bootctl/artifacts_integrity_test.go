package main

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bootchain/bootchain/pkg/artifactsig"
)

// TestArtifactsReplaceAndSign: replacing needs --replaces with the current digest;
// a signature made by "artifacts sign" verifies; a forced delete needs --sha256.
func TestArtifactsReplaceAndSign(t *testing.T) {
	e := startEnv(t)
	dir := t.TempDir()
	v1, v2 := filepath.Join(dir, "v1"), filepath.Join(dir, "v2")
	os.WriteFile(v1, []byte("kernel one"), 0o644)
	os.WriteFile(v2, []byte("kernel two"), 0o644)
	d1, _ := fileSHA256(v1)
	d2, _ := fileSHA256(v2)
	e.mustRun("artifacts", "upload", v1, "--name", "linux")

	_, stderr, code := e.run("artifacts", "upload", v2, "--name", "linux")
	if code == 0 || !strings.Contains(stderr, d1) || !strings.Contains(stderr, "--replaces") {
		t.Fatalf("replace without --replaces: exit %d\n%s", code, stderr)
	}
	_, stderr, code = e.run("artifacts", "upload", v2, "--name", "linux", "--replaces", d2)
	if code == 0 || !strings.Contains(stderr, d1) {
		t.Fatalf("replace with a stale --replaces: exit %d\n%s", code, stderr)
	}
	if out := e.mustRun("artifacts", "stat", "linux"); !strings.Contains(out, d1) {
		t.Fatalf("refused replaces changed the artifact:\n%s", out)
	}
	e.mustRun("artifacts", "upload", v2, "--name", "linux", "--replaces", d1)

	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	der, _ := x509.MarshalPKCS8PrivateKey(priv)
	key := filepath.Join(dir, "signing.key")
	os.WriteFile(key, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600)
	sig := e.mustRun("artifacts", "sign", v2, "--name", "linux", "--key", key)
	raw, err := artifactsig.ParseSignature([]byte(sig))
	if err != nil || !ed25519.Verify(pub, artifactsig.Message("linux", d2), raw) {
		t.Fatalf("artifacts sign printed %q: %v", sig, err)
	}
	sigFile := filepath.Join(dir, "sig")
	e.mustRun("artifacts", "sign", v2, "--name", "linux", "--key", key, "--out", sigFile)
	// Same content: nothing replaced, the signature is recorded.
	if out := e.mustRun("artifacts", "upload", v2, "--name", "linux", "--signature", sigFile); !strings.Contains(out, "Signed by") {
		t.Errorf("upload --signature:\n%s", out)
	}
	if out := e.mustRun("artifacts", "upload", v2, "--name", "linux", "--sign-key", key); !strings.Contains(out, "Signed by") {
		t.Errorf("upload --sign-key:\n%s", out)
	}

	e.mustRun("profiles", "create", "p", "--kernel", "linux")
	if _, stderr, code := e.run("artifacts", "delete", "linux", "--force"); code == 0 || !strings.Contains(stderr, d2) || !strings.Contains(stderr, "--sha256") {
		t.Fatalf("forced delete without --sha256: exit %d\n%s", code, stderr)
	}
	e.mustRun("artifacts", "delete", "linux", "--force", "--sha256", d2)
}
