package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bootchain/bootchain/internal/testkit"
	"github.com/bootchain/bootchain/pkg/auth"
	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
	"github.com/bootchain/bootchain/pkg/store"
)

// TestApply takes a real bootapi from nothing to a fleet file, edits it with
// a second file and --prune, and checks that apply is idempotent and that
// export | apply changes nothing.
func TestApply(t *testing.T) {
	e := startEnv(t)
	waitTokenCached(t, e)
	dir := t.TempDir()
	for name, art := range map[string]string{"vmlinuz": "debian/linux", "initrd.gz": "debian/initrd.gz"} {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(strings.Repeat(name, 100)), 0o644); err != nil {
			t.Fatal(err)
		}
		if art == "debian/linux" {
			e.mustRun("artifacts", "upload", p, "--name", art)
		}
	}
	fleet := filepath.Join("testdata", "apply", "fleet.yaml")

	// The initrd is not uploaded yet: apply names it and writes nothing.
	out, stderr, code := e.run("apply", "-f", fleet)
	if code != 1 || !strings.Contains(stderr, "debian/initrd.gz (profile debian-12 initrds[0])") || strings.Contains(stderr, "debian/linux") {
		t.Fatalf("apply with a missing artifact: exit %d\n%s%s", code, stderr, out)
	}
	if got := e.mustRun("profiles", "list", "-o", "json"); strings.Contains(got, "debian-12") {
		t.Fatalf("apply wrote a profile although an artifact is missing:\n%s", got)
	}
	e.mustRun("artifacts", "upload", filepath.Join(dir, "initrd.gz"), "--name", "debian/initrd.gz")

	// --dry-run shows everything to create and creates nothing.
	golden(t, "apply/dry_run_create", e.mustRun("apply", "-f", fleet, "--dry-run"))
	if got := e.mustRun("sites", "list", "-o", "json"); strings.Contains(got, "lab") {
		t.Fatalf("--dry-run created a site:\n%s", got)
	}
	out = e.mustRun("apply", "-f", fleet)
	if !strings.HasSuffix(out, "applied 6 change(s)\n") {
		t.Errorf("apply:\n%s", out)
	}
	// Dependencies were met in order: the site and machine name the profiles.
	golden(t, "apply/machines_after_create", e.mustRun("machines", "list"))

	// A second apply, and applying what export writes, change nothing.
	noop := "0 to create, 0 to change, 0 to delete, 6 unchanged\n"
	if out := e.mustRun("apply", "-f", fleet, "--prune"); out != noop {
		t.Errorf("second apply is not a no-op:\n%s", out)
	}
	exported := e.mustRun("export")
	golden(t, "apply/export", exported)
	exp := filepath.Join(dir, "export.yaml")
	if err := os.WriteFile(exp, []byte(exported), 0o644); err != nil {
		t.Fatal(err)
	}
	if out := e.mustRun("apply", "-f", exp, "--prune"); out != noop {
		t.Errorf("export | apply is not a no-op:\n%s", out)
	}
	// The same through a pipe: apply -f - reads standard input.
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	go func() { w.WriteString(exported); w.Close() }()
	stdin := os.Stdin
	os.Stdin = r
	out = e.mustRun("apply", "-f", "-", "--prune")
	os.Stdin = stdin
	r.Close()
	if out != noop {
		t.Errorf("export | apply -f - is not a no-op:\n%s", out)
	}
	expJSON := filepath.Join(dir, "export.json")
	if err := os.WriteFile(expJSON, []byte(e.mustRun("export", "-o", "json")), 0o644); err != nil {
		t.Fatal(err)
	}
	if out := e.mustRun("apply", "-f", expJSON); out != noop {
		t.Errorf("export -o json | apply is not a no-op:\n%s", out)
	}

	// The edited file: without --prune nothing is deleted.
	fleet2 := filepath.Join("testdata", "apply", "fleet2.yaml")
	golden(t, "apply/dry_run_change", e.mustRun("apply", "-f", fleet2, "--dry-run"))
	golden(t, "apply/dry_run_prune", e.mustRun("apply", "-f", fleet2, "--dry-run", "--prune"))
	// Deletes run machines first, then sites, then profiles: the other
	// order fails, rescue being node2's profile and edge its site.
	e.mustRun("apply", "-f", fleet2, "--prune")
	golden(t, "apply/export_after_prune", e.mustRun("export"))
	if out := e.mustRun("apply", "-f", fleet2, "--prune"); out != "0 to create, 0 to change, 0 to delete, 3 unchanged\n" {
		t.Errorf("apply --prune again is not a no-op:\n%s", out)
	}

	// A machine lab's dhcpd saw is neither exported nor pruned.
	const seen = "52:54:00:00:00:77"
	if _, err := e.etcd.Client(t).Put(context.Background(), store.Key("machines", seen), &bootapiv1.Machine{Mac: seen, Site: "lab", Discovered: true}); err != nil {
		t.Fatal(err)
	}
	if !testkit.Poll(testkit.Wait, func() bool { return strings.Contains(e.mustRun("machines", "list"), seen) }) {
		t.Fatal("bootapi never listed the discovered machine")
	}
	if out := e.mustRun("apply", "-f", fleet2, "--prune"); out != "0 to create, 0 to change, 0 to delete, 3 unchanged\n" {
		t.Errorf("apply --prune with a discovered machine:\n%s", out)
	}
	if out := e.mustRun("export"); strings.Contains(out, seen) {
		t.Errorf("export wrote a discovered machine:\n%s", out)
	}
	if !strings.Contains(e.mustRun("machines", "list"), seen) {
		t.Error("apply --prune deleted a discovered machine")
	}

	// An operator may not write profiles: apply says which object it was
	// refused and that nothing was applied.
	op := testkit.Token(t, e.etcd.Client(t), auth.RoleOperator, "lab")
	out, stderr, code = e.run("apply", "-f", fleet, "--token", op)
	if code != 1 || !strings.Contains(stderr, "create profile rescue: PermissionDenied") || !strings.Contains(stderr, "(nothing applied)") {
		t.Errorf("apply by lab's operator: exit %d\n%s%s", code, stderr, out)
	}
	if strings.Contains(stderr, op) {
		t.Error("the error holds the token")
	}
}

// TestApplyErrors checks that a refused write names the object and the
// field, and that a bad file names the document and entry.
func TestApplyErrors(t *testing.T) {
	e := startEnv(t)
	waitTokenCached(t, e)
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, c := range []struct {
		name, body string
		want       []string
	}{
		{"noprofile", "sites:\n  - name: bad\n    defaultAction: ACTION_PROFILE\n    defaultProfile: nope\n", []string{"create site bad: field site.default_profile: ", "nope"}},
		{"machineprofile", "machines:\n  - mac: 52:54:00:00:00:01\n    defaultAction: ACTION_PROFILE\n    defaultProfile: nope\n", []string{"create machine 52:54:00:00:00:01: ", "nope"}},
		{"unknownkey", "hosts: []\n", []string{`unknown key "hosts"`}},
		{"unknownfield", "---\nsites: []\n---\nsites:\n  - name: x\n    colour: red\n", []string{"document 3: sites[0]", "colour"}},
		{"twice", "profiles:\n  - name: a\n---\nprofiles:\n  - name: a\n", []string{"profile a is declared twice"}},
		{"noname", "machines:\n  - hostname: x\n", []string{"machines[0]: mac is missing"}},
	} {
		out, stderr, code := e.run("apply", "-f", write(c.name+".yaml", c.body))
		if code != 1 {
			t.Errorf("%s: exit %d, want 1\n%s%s", c.name, code, stderr, out)
		}
		for _, w := range c.want {
			if !strings.Contains(stderr, w) {
				t.Errorf("%s: error lacks %q:\n%s", c.name, w, stderr)
			}
		}
	}
	if _, stderr, code := e.run("apply"); code != 2 || !strings.Contains(stderr, "--file is required") {
		t.Errorf("apply without -f: exit %d\n%s", code, stderr)
	}
}

// waitTokenCached waits until bootapi's token cache holds the admin token.
// Until then each call looks the token up in etcd, at most 20 a second, and
// apply makes more calls than that: the test would fail on how fast the cache
// catches up, not on what apply does.
func waitTokenCached(t *testing.T, e *testEnv) {
	t.Helper()
	id, _, err := auth.ParseToken(e.token)
	if err != nil {
		t.Fatal(err)
	}
	if !testkit.Poll(testkit.Wait, func() bool {
		out, _, code := e.run("tokens", "list", "-o", "json")
		return code == 0 && strings.Contains(out, id)
	}) {
		t.Fatal("bootapi never listed the admin token: its token cache is not watching etcd")
	}
}

// TestApplyMinimal checks idempotence where the server fills in what the
// file leaves out: a machine with no site, a site with no settings, a
// profile with only a kernel URL.
func TestApplyMinimal(t *testing.T) {
	e := startEnv(t)
	waitTokenCached(t, e)
	p := filepath.Join(t.TempDir(), "min.yaml")
	body := "profiles: [{name: p, kernel: {url: 'https://example.org/linux'}}]\nsites: [{name: s}]\nmachines: [{mac: '52:54:00:00:00:02'}]\n"
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	if out := e.mustRun("apply", "-f", p); !strings.HasSuffix(out, "applied 3 change(s)\n") {
		t.Fatalf("apply:\n%s", out)
	}
	if out := e.mustRun("apply", "-f", p, "--prune"); out != "0 to create, 0 to change, 0 to delete, 3 unchanged\n" {
		t.Errorf("second apply of a minimal file:\n%s", out)
	}
}
