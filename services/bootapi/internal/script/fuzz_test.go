package script_test

import (
	"strings"
	"testing"

	"github.com/bootchain/bootchain/services/bootapi/internal/script"
)

// FuzzRender drives user-controlled values (hostname, labels, description, the
// cmdline template itself) through the whole rendering path and checks that the
// result, when there is one, holds only the lines bootapi writes.
func FuzzRender(f *testing.F) {
	f.Add("node1", "worker", "Debian", "console=ttyS0 hostname={{.Machine.Hostname}}")
	f.Add("a\nshell", "${x}", "a || b", "{{.Machine.Labels.role}}")
	f.Add("x", "y", "z", "{{range .Machine.Labels}}{{.}} {{end}}")
	f.Fuzz(func(t *testing.T, hostname, label, desc, tmpl string) {
		var td script.TemplateData
		td.Machine.MAC, td.Machine.Hostname = "52:54:00:12:34:56", hostname
		td.Machine.Labels = map[string]string{"role": label}
		args, err := script.Cmdline(tmpl, td)
		if err != nil {
			return
		}
		s, err := script.RenderBoot(script.Boot{MAC: td.Machine.MAC, Hostname: hostname, Profile: "p", Kernel: script.File{URL: mustURL("http://h/k")}, Args: args})
		if err == nil {
			checkScript(t, s, 9)
		}
		m, err := script.RenderMenu(script.Menu{MAC: td.Machine.MAC, Hostname: hostname, Items: []script.MenuItem{{Profile: "p", Description: desc, URL: mustURL("http://h/c?profile=p")}}})
		if err == nil {
			checkScript(t, m, 22)
		}
	})
}

func checkScript(t *testing.T, s string, wantLines int) {
	t.Helper()
	lines := strings.Split(strings.TrimSuffix(s, "\n"), "\n")
	if len(lines) != wantLines {
		t.Fatalf("%d lines, want %d:\n%s", len(lines), wantLines, s)
	}
	for _, l := range lines {
		if strings.HasPrefix(l, "#") || strings.HasPrefix(l, ":") {
			continue // bootchain's own comments and labels (comments are checked text)
		}
		for _, tok := range strings.Fields(l) {
			if (tok == "||" || tok == "&&") && !strings.HasSuffix(l, "|| goto failed") && !strings.HasSuffix(l, "|| goto start") && !strings.HasSuffix(l, "|| goto local") {
				t.Fatalf("separator in line %q", l)
			}
		}
		// bootchain's own references are the only expansions allowed.
		own := strings.NewReplacer("${target}", "", "${net0/mac:hexhyp}", "").Replace(l)
		if strings.Contains(own, "${") {
			t.Fatalf("expansion in line %q", l)
		}
	}
}
