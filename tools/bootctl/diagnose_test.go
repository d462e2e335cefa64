package main

import (
	"encoding/json"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/bootchain/bootchain/internal/testkit"
)

var initrdURLRE = regexp.MustCompile(`initrd --name \S+ (http://\S+)`)

// TestDiagnose: a job whose initrd was deleted boots for real against bootapi
// and artifactstore; artifactstore answers 404, the job fails at once with the
// diagnosis, and bootctl diagnose says where, why and what next.
func TestDiagnose(t *testing.T) {
	e := startEnv(t)
	dir := t.TempDir()
	for _, name := range []string{"vmlinuz", "initrd.gz"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(strings.Repeat(name, 100)), 0o644); err != nil {
			t.Fatal(err)
		}
		e.mustRun("artifacts", "upload", filepath.Join(dir, name), "--name", "diag/"+name)
	}
	const mac = "52:54:00:12:34:58"
	e.mustRun("profiles", "create", "diag", "--kernel", "diag/vmlinuz", "--initrd", "diag/initrd.gz")
	e.mustRun("machines", "register", mac)
	e.mustRun("jobs", "create", "--mac", mac, "--profile", "diag")
	var initrd struct{ Artifact struct{ Sha256 string } }
	if err := json.Unmarshal([]byte(e.mustRun("artifacts", "stat", "diag/initrd.gz", "-o", "json")), &initrd); err != nil {
		t.Fatal(err)
	}
	e.mustRun("artifacts", "delete", "diag/initrd.gz", "--force", "--sha256", initrd.Artifact.Sha256)

	script := e.bootScript(mac)
	m := initrdURLRE.FindStringSubmatch(script)
	if m == nil {
		t.Fatalf("no initrd in the script:\n%s", script)
	}
	u, err := url.Parse(m[1])
	if err != nil {
		t.Fatal(err)
	}
	u.Host = e.artifact.HTTPAddr().String()
	resp, err := http.Get(u.String())
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("deleted initrd: %d", resp.StatusCode)
	}

	var out string
	// Until bootapi has recorded it, the diagnosis is worked out for the
	// asking and the session may still read active.
	testkit.Eventually(t, "the diagnosis recorded", func() bool {
		out = e.mustRun("diagnose", mac)
		return strings.Contains(out, "artifact_not_found") && strings.Contains(out, "State:      failed")
	})
	t.Logf("bootctl diagnose:\n%s", out)
	for _, want := range []string{"State:      failed", "Hop:        artifact (artifactstore)", "Cause:      artifact diag/initrd.gz answered 404", "Next step:  upload diag/initrd.gz"} {
		if !strings.Contains(out, want) {
			t.Errorf("diagnose lacks %q:\n%s", want, out)
		}
	}
	// The job fails right after the diagnosis is recorded (the diagnosis
	// above may have been worked out for the asking, before that).
	testkit.Eventually(t, "the job failed with the diagnosis", func() bool {
		jobs := e.mustRun("jobs", "list", "--state", "failed")
		return strings.Contains(jobs, mac) && strings.Contains(jobs, "artifact_not_found")
	})
	if js := e.mustRun("diagnose", mac, "-o", "json"); !strings.Contains(js, `"DIAGNOSIS_CLASS_ARTIFACT_NOT_FOUND"`) {
		t.Errorf("diagnose -o json:\n%s", js)
	}
	if _, stderr, code := e.run("diagnose", "52:54:00:00:00:77"); code == 0 || !strings.Contains(stderr, "52:54:00:00:00:77") {
		t.Errorf("a machine without a session: exit %d, %s", code, stderr)
	}
}
