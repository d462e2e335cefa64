package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestDocumentedCommandLines runs the command lines of the end-to-end helpers
// (test/e2e) as they are written there, and README.md's walk-through as it
// was written before bootctl moved to cobra: single-dash long flags (-mac,
// -profile, -kernel), which older scripts still use. README.md now writes
// --mac; these lines are not read from it.
func TestDocumentedCommandLines(t *testing.T) {
	e := startEnv(t)
	dir := t.TempDir()
	ipxe := filepath.Join(dir, "ipxe")
	if err := os.Mkdir(ipxe, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"undionly.kpxe", "ipxe.efi", "README"} {
		writeFile(t, filepath.Join(ipxe, f), "binary "+f)
	}
	writeFile(t, filepath.Join(dir, "vmlinuz"), "kernel")
	writeFile(t, filepath.Join(dir, "initrd.gz"), "initrd")
	const mac = "52:54:00:12:34:56"
	for _, args := range [][]string{
		{"artifacts", "import-ipxe", "--dir", ipxe},
		{"artifacts", "import-ipxe", "--dir", ipxe}, // again: unchanged, skipped
		{"artifacts", "upload", filepath.Join(dir, "vmlinuz"), "--name", "debian/linux"},
		{"artifacts", "upload", filepath.Join(dir, "initrd.gz"), "--name", "debian/initrd.gz"},
		{"profiles", "create", "debian-12", "-kernel", "debian/linux", "-initrd", "debian/initrd.gz", "-cmdline", "console=ttyS0 hostname={{.Machine.Hostname}}", "-menu", "-description", "Debian 12"},
		{"profiles", "create", "e2e", "-kernel", "debian/linux", "-initrd", "debian/initrd.gz", "-cmdline", "console=ttyS0 panic=1", "-description", "bootchain e2e initrd"},
		{"machines", "register", mac, "-hostname", "node1", "-label", "rack=r12"},
		{"machines", "register", "52:54:00:12:34:57", "-hostname", "e2e", "-action", "local-disk"},
		{"jobs", "create", "-mac", mac, "-profile", "debian-12"},
		{"jobs", "list", "-mac", mac},
		{"sessions"},
		{"-o", "json", "jobs", "list"},
		{"artifacts", "list", "--prefix", "debian/"},
		{"artifacts", "stat", "debian/linux"},
	} {
		e.mustRun(args...)
	}
	out := e.mustRun("-o", "json", "jobs", "create", "-mac", "52:54:00:12:34:57", "-profile", "e2e")
	if !strings.Contains(out, `"id"`) {
		t.Errorf("-o json jobs create: no id (test/e2e reads it):\n%s", out)
	}
	if out := e.mustRun("artifacts", "list"); !strings.Contains(out, "undionly.kpxe") || strings.Contains(out, "README") {
		t.Errorf("import-ipxe stored:\n%s", out)
	}
	e.mustRun("artifacts", "delete", "debian/initrd.gz", "--force", "--sha256", digestOf(t, filepath.Join(dir, "initrd.gz")))

	// The old address flag and variable names still work; the token comes
	// from BOOTCHAIN_TOKEN.
	t.Setenv("BOOTCHAIN_TOKEN", e.token)
	t.Setenv("BOOTCHAIN_BOOTAPI", e.bootapi.GRPCAddr().String())
	var o, se strings.Builder
	if code := run(t.Context(), []string{"machines", "get", mac}, &o, &se); code != 0 {
		t.Errorf("BOOTCHAIN_BOOTAPI: exit %d: %s", code, se.String())
	}
	t.Setenv("BOOTCHAIN_BOOTAPI_ADDR", e.closed)
	if code := run(t.Context(), []string{"-bootapi", e.bootapi.GRPCAddr().String(), "machines", "get", mac}, &o, &se); code != 0 {
		t.Errorf("-bootapi over BOOTCHAIN_BOOTAPI_ADDR: exit %d: %s", code, se.String())
	}
	se.Reset()
	if code := run(t.Context(), []string{"machines", "get", mac}, &o, &se); code != 1 || !strings.Contains(se.String(), "cannot reach bootapi at "+e.closed) {
		t.Errorf("BOOTCHAIN_BOOTAPI_ADDR over BOOTCHAIN_BOOTAPI: exit %d: %s", code, se.String())
	}
}

func digestOf(t *testing.T, path string) string {
	t.Helper()
	d, err := fileSHA256(path)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// TestImportSecureBoot uploads shim and network GRUB from a package root
// under the names the firmware and shim ask for, and names what is missing.
func TestImportSecureBoot(t *testing.T) {
	e := startEnv(t)
	root := t.TempDir()
	if _, _, code := e.run("artifacts", "import-secureboot", "--root", root); code == 0 {
		t.Fatal("import-secureboot succeeded without the packages' files")
	}
	for _, f := range secureBootFiles {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(root, f.path)), 0o755); err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(root, f.path), "binary "+f.name)
	}
	e.mustRun("artifacts", "import-secureboot", "--root", root)
	out := e.mustRun("artifacts", "list")
	for _, n := range []string{"shimx64.efi", "grubx64.efi"} {
		if !strings.Contains(out, n) {
			t.Errorf("import-secureboot stored no %s:\n%s", n, out)
		}
	}
}
