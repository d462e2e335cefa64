package script_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/bootchain/bootchain/services/bootapi/internal/script"
)

func labelled(n int) script.TemplateData {
	var td script.TemplateData
	td.Machine.MAC, td.Machine.Hostname = "52:54:00:12:34:56", "node1"
	td.Machine.Labels = map[string]string{}
	for i := 0; i < n; i++ {
		td.Machine.Labels[fmt.Sprintf("k%02d", i)] = "v"
	}
	return td
}

// Each template an attacker could store to spin bootapi's CPU or memory is
// refused (before it runs: a refused one would otherwise hang this test).
func TestCmdlineTemplateAttacks(t *testing.T) {
	for name, tmpl := range map[string]string{
		"range over an integer":     `{{range $i := 1000000000000}}{{end}}`,
		"range over a variable":     `{{$n := 1000000000000}}{{range $n}}{{end}}`,
		"range over a pipeline":     `{{range (len .Machine.Labels)}}{{end}}`,
		"range inside range":        `{{range .Machine.Labels}}{{range $.Machine.Labels}}{{range $.Machine.Labels}}{{end}}{{end}}{{end}}`,
		"recursive template":        `{{define "a"}}{{template "a" .}}{{template "a" .}}{{end}}{{template "a" .}}`,
		"block":                     `{{block "b" .}}x{{end}}`,
		"printf width":              `{{printf "%999999999d" 1}}`,
		"printf precision":          `{{printf "%.999999999f" 1.0}}`,
		"printf star":               `{{printf "%*d" 999999999 1}}`,
		"printf computed format":    `{{printf .Machine.Hostname 1}}`,
		"call":                      `{{call .Machine.Labels}}`,
		"output past the bound":     `{{range .Machine.Labels}}` + strings.Repeat("a", 100) + ` {{end}}`,
		"range inside with, nested": `{{range .Machine.Labels}}{{with $.Machine}}{{range .Labels}}{{end}}{{end}}{{end}}`,
	} {
		t.Run(name, func(t *testing.T) {
			_, err := script.Cmdline(tmpl, labelled(64))
			if !errors.Is(err, script.ErrCmdline) {
				t.Fatalf("accepted (err %v)", err)
			}
		})
	}
}

func TestCmdlineTemplatesStillAllowed(t *testing.T) {
	for tmpl, want := range map[string]string{
		`{{range $k, $v := .Machine.Labels}}{{$k}}={{$v}} {{end}}`:                     "k00=v k01=v",
		`h={{printf "%s-%02d" .Machine.Hostname 3}}`:                                   "h=node1-03",
		`{{with .Machine}}{{range .Labels}}{{.}}{{end}}{{end}}`:                        "vv",
		`{{if eq .Machine.Hostname "node1"}}a{{else}}b{{end}} {{len .Machine.Labels}}`: "a 2",
		`{{range $.Machine.Labels}}{{if .}}x{{break}}{{end}}{{end}}`:                   "x",
	} {
		args, err := script.Cmdline(tmpl, labelled(2))
		if err != nil || strings.Join(args, " ") != want {
			t.Errorf("%s: %q, %v; want %q", tmpl, args, err, want)
		}
	}
}

// Rendering stops at its bound of writes with an error.
func TestCmdlineRenderWriteBound(t *testing.T) {
	old := script.CmdlineWrites
	script.CmdlineWrites = 1
	t.Cleanup(func() { script.CmdlineWrites = old })
	_, err := script.Cmdline(`console=ttyS0 x={{.Machine.Hostname}}`, labelled(0))
	if !errors.Is(err, script.ErrCmdline) || !strings.Contains(err.Error(), "more than 1 writes") {
		t.Fatalf("err %v, want the write bound's", err)
	}
}
