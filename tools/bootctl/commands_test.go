package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCommands runs an operator's session against a real bootapi and
// artifactstore: every kind of object created, listed, shown, updated and
// deleted, each table checked against testdata.
func TestCommands(t *testing.T) {
	e := startEnv(t)
	dir := t.TempDir()
	for name, size := range map[string]int{"vmlinuz": 3000, "initrd.gz": 70000} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(strings.Repeat(name, size/len(name))), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	const mac = "52:54:00:12:34:56"
	steps := []struct {
		golden string // "" when the output is checked otherwise
		args   []string
	}{
		{"artifacts_upload", []string{"artifacts", "upload", filepath.Join(dir, "vmlinuz"), "--name", "debian/linux"}},
		// Flags before the argument, as pflag allows.
		{"", []string{"artifacts", "upload", "--name", "debian/initrd.gz", filepath.Join(dir, "initrd.gz")}},
		{"artifacts_list", []string{"artifacts", "list"}},
		{"artifacts_stat", []string{"artifacts", "stat", "debian/linux"}},
		// The single-dash spellings of the README keep working.
		{"profiles_create", []string{"profiles", "create", "debian-12", "-kernel", "debian/linux", "-initrd", "debian/initrd.gz", "-cmdline", "console=ttyS0 hostname={{.Machine.Hostname}}", "-menu", "-description", "Debian 12"}},
		{"profiles_update", []string{"profiles", "update", "debian-12", "--cmdline", "console=ttyS0 quiet", "--label", "os=debian"}},
		{"", []string{"profiles", "create", "rescue", "--kernel", "https://example.org/rescue/linux"}},
		{"profiles_list", []string{"profiles", "list"}},
		{"profiles_get", []string{"profiles", "get", "debian-12"}},
		{"sites_put", []string{"sites", "put", "lab", "-action", "local-disk", "--bootapi-url", "http://10.0.0.5:8080"}},
		{"sites_update", []string{"sites", "update", "lab", "--action", "menu", "--extra-cmdline", "ip=dhcp"}},
		{"sites_list", []string{"sites", "list"}},
		{"machines_register", []string{"machines", "register", "52-54-00-12-34-56", "-hostname", "node1", "-label", "rack=r12", "--site", "lab"}},
		{"", []string{"machines", "register", "52:54:00:12:34:57", "--hostname", "node2", "--action", "profile", "--profile", "rescue"}},
		{"machines_update", []string{"machines", "update", mac, "--action", "local-disk"}},
		{"machines_list", []string{"machines", "list"}},
		{"machines_list_selector", []string{"machines", "list", "-l", "rack=r12"}},
		{"machines_get", []string{"machines", "get", mac}},
		{"jobs_create", []string{"jobs", "create", "-mac", mac, "-profile", "debian-12"}},
		{"jobs_list", []string{"jobs", "list", "--state", "pending"}},
		{"machines_preview", []string{"machines", "preview", mac, "--arch", "x86_64", "--platform", "pcbios"}},
		{"profiles_update_installer", []string{"profiles", "update", "debian-12", "--preseed", "testdata/installer/preseed.cfg", "--user-data", "testdata/installer/user-data.yaml", "--ssh-key", "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGbc admin@example"}},
		{"machines_preview_preseed", []string{"machines", "preview", mac, "--config", "preseed"}},
		{"machines_preview_all", []string{"machines", "preview", mac, "--config", "all"}},
		{"profiles_fields", []string{"profiles", "fields"}},
	}
	for _, s := range steps {
		out := e.mustRun(s.args...)
		if s.golden != "" {
			golden(t, "commands/"+s.golden, out)
		}
	}

	// -o goes anywhere, and json is protojson of the list.
	var list struct {
		Jobs []struct{ ID, Mac, State string }
	}
	out := e.mustRun("jobs", "list", "-o", "json")
	if err := json.Unmarshal([]byte(out), &list); err != nil || len(list.Jobs) != 1 || list.Jobs[0].State != "JOB_STATE_PENDING" || list.Jobs[0].Mac != mac {
		t.Fatalf("jobs list -o json: %v\n%s", err, out)
	}
	id := list.Jobs[0].ID
	golden(t, "commands/jobs_get", e.mustRun("jobs", "get", id))

	// The machine boots: its job is dispatched and a session recorded.
	e.bootScript(mac)
	golden(t, "commands/sessions", e.mustRun("sessions"))
	out = e.mustRun("trace", mac)
	for _, w := range []string{"Machine:  " + mac, "State:    active", "HOP", "script", "bootapi", "job " + id + " profile debian-12"} {
		if !strings.Contains(out, w) {
			t.Errorf("trace lacks %q:\n%s", w, out)
		}
	}
	if got := e.mustRun("sessions", "get", mac); got != out {
		t.Errorf("sessions get differs from trace:\n%s\n%s", got, out)
	}

	// Deletes, each of a thing nothing else uses.
	e.mustRun("machines", "register", "52:54:00:00:00:99")
	for _, s := range [][]string{
		{"machines", "delete", "52:54:00:00:00:99"},
		{"profiles", "delete", "rescue", "-bootapi", e.bootapi.GRPCAddr().String()}, // the old flag name
		{"sites", "put", "old"}, {"sites", "delete", "old"},
	} {
		if s[0] == "profiles" {
			// rescue is machine 57's default: free it first.
			e.mustRun("machines", "delete", "52:54:00:12:34:57")
		}
		e.mustRun(s...)
	}
	if out := e.mustRun("profiles", "list", "-o", "json"); strings.Contains(out, "rescue") {
		t.Errorf("rescue still listed after delete:\n%s", out)
	}
	var initrd struct{ Artifact struct{ Sha256 string } }
	if err := json.Unmarshal([]byte(e.mustRun("artifacts", "stat", "debian/initrd.gz", "-o", "json")), &initrd); err != nil {
		t.Fatal(err)
	}
	out = e.mustRun("artifacts", "delete", "debian/initrd.gz", "--force", "--sha256", initrd.Artifact.Sha256)
	if !strings.Contains(out, "deleted artifact debian/initrd.gz") || !strings.Contains(out, "profiles still refer to it: debian-12") {
		t.Errorf("artifacts delete --force:\n%s", out)
	}
}
