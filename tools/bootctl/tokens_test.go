package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bootchain/bootchain/internal/testkit"
	"github.com/bootchain/bootchain/pkg/auth"
)

// TestTokens: an admin creates a token, the token works from a file, a viewer
// cannot manage tokens, and a revoked token stops working without a restart.
func TestTokens(t *testing.T) {
	e := startEnv(t)
	secret := strings.TrimSpace(e.mustRun("tokens", "create", "ci-bot", "--role", "viewer", "--sites", "site-a"))
	id, _, err := auth.ParseToken(secret)
	if err != nil {
		t.Fatalf("create printed %q: %v", secret, err)
	}
	list := e.mustRun("tokens", "list")
	if strings.Contains(list, secret[21:]) {
		t.Fatal("list shows a secret")
	}
	golden(t, "commands/tokens_list", scrubTokens(list))

	file := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(file, []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, stderr, code := e.run("--token-file", file, "machines", "list"); code != 0 {
		t.Fatalf("viewer token from a file: exit %d: %s", code, stderr)
	}
	_, stderr, code := e.run("--token-file", file, "tokens", "list")
	if code == 0 || !strings.Contains(stderr, "credentials.read") {
		t.Fatalf("viewer lists tokens: exit %d: %s", code, stderr)
	}
	_, stderr, code = e.run("--token-file", file, "jobs", "create", "--mac", "52:54:00:00:00:01", "--profile", "x")
	if code == 0 || !strings.Contains(stderr, "jobs.write") {
		t.Fatalf("viewer creates a job: exit %d: %s", code, stderr)
	}

	if out := e.mustRun("tokens", "revoke", id); !strings.Contains(out, id) {
		t.Fatalf("revoke: %q", out)
	}
	testkit.Eventually(t, "the revoked token to be refused", func() bool {
		_, stderr, code := e.run("--token-file", file, "machines", "list")
		return code != 0 && strings.Contains(stderr, "revoked")
	})
	if _, stderr, code := e.run("tokens", "revoke", id); code == 0 || !strings.Contains(stderr, "not found") {
		t.Fatalf("revoke twice: exit %d: %s", code, stderr)
	}
	if _, stderr, code := e.run("--token", "", "machines", "list"); code == 0 || !strings.Contains(stderr, "no credential") {
		t.Fatalf("no token: exit %d: %s", code, stderr)
	}
}

// scrubTokens hides the token ids, which change from run to run, and the
// admin token's name, which testkit chose.
func scrubTokens(s string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if f := strings.Fields(l); len(f) > 0 && auth.ValidTokenID(f[0]) {
			l = "TOKEN-ID-16-CHAR" + l[16:]
		}
		out = append(out, l)
	}
	return strings.Join(out, "\n")
}
