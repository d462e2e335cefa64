package main

import (
	"strings"
	"testing"
)

// TestCompletion asks for completions as a shell does (bootctl __complete ...)
// and checks the candidates come from the servers.
func TestCompletion(t *testing.T) {
	e := startEnv(t)
	dir := t.TempDir()
	writeFile(t, dir+"/linux", "kernel")
	e.mustRun("artifacts", "upload", dir+"/linux", "--name", "debian/linux")
	e.mustRun("profiles", "create", "debian-12", "--kernel", "debian/linux", "--description", "Debian 12")
	e.mustRun("sites", "put", "lab")
	e.mustRun("machines", "register", "52:54:00:12:34:56", "--hostname", "node1")
	e.mustRun("jobs", "create", "--mac", "52:54:00:12:34:56", "--profile", "debian-12")
	for name, tc := range map[string]struct {
		line []string
		want string
	}{
		"machine argument":  {[]string{"machines", "get", ""}, "52:54:00:12:34:56\tnode1\n"},
		"mac flag":          {[]string{"jobs", "create", "--mac", "52:54"}, "52:54:00:12:34:56\tnode1\n"},
		"profile flag":      {[]string{"jobs", "create", "--mac", "52:54:00:12:34:56", "--profile", ""}, "debian-12\tDebian 12\n"},
		"profile argument":  {[]string{"profiles", "update", "deb"}, "debian-12\tDebian 12\n"},
		"artifact flag":     {[]string{"profiles", "create", "x", "--kernel", "debian/"}, "debian/linux\t6 B\n"},
		"artifact argument": {[]string{"artifacts", "stat", ""}, "debian/linux\t6 B\n"},
		"site flag":         {[]string{"machines", "list", "--site", ""}, "lab\n"},
		"site argument":     {[]string{"sites", "get", "l"}, "lab\n"},
		"job argument":      {[]string{"jobs", "cancel", ""}, "\t52:54:00:12:34:56 debian-12 pending\n"},
		"state words":       {[]string{"jobs", "list", "--state", "p"}, "pending\n"},
		"action words":      {[]string{"machines", "register", "x", "--action", "lo"}, "local-disk\n"},
		"output words":      {[]string{"machines", "list", "-o", "y"}, "yaml\n"},
		"subcommands":       {[]string{"profiles", "f"}, "fields\t"},
	} {
		t.Run(name, func(t *testing.T) {
			out := e.mustRun(append([]string{"__complete"}, tc.line...)...)
			if !strings.Contains(out, tc.want) {
				t.Errorf("__complete %q:\n%s\nwant %q", tc.line, out, tc.want)
			}
		})
	}
	// A server that is down completes nothing, quickly.
	out := e.mustRun("--bootapi-addr", e.closed, "__complete", "machines", "get", "")
	if strings.Contains(out, "52:54") || !strings.Contains(out, ":5\n") {
		t.Errorf("completion with bootapi down:\n%s", out)
	}
	for shell, want := range map[string]string{"bash": "__start_bootctl", "zsh": "#compdef bootctl", "fish": "complete -c bootctl"} {
		if out := e.mustRun("completion", shell); !strings.Contains(out, want) {
			t.Errorf("completion %s lacks %q", shell, want)
		}
	}
}
