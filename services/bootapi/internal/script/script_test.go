package script_test

import (
	"flag"
	"github.com/bootchain/bootchain/internal/testkit"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bootchain/bootchain/services/bootapi/internal/script"
)

var update = flag.Bool("update", false, "rewrite golden files")

func mustURL(s string) *url.URL {
	u, err := url.Parse(s)
	if err != nil {
		panic(err)
	}
	return u
}

func golden(t *testing.T, name, got string) {
	t.Helper()
	testkit.Golden(t, filepath.Join("testdata", name+".ipxe"), got, *update)
}

func TestGolden(t *testing.T) {
	td := script.TemplateData{}
	td.Machine.MAC, td.Machine.Hostname, td.Machine.Site = "52:54:00:12:34:56", "node1", "lab"
	td.Machine.Labels = map[string]string{"role": "worker"}
	td.Profile.Name, td.Job.ID = "debian-12", "0190f0a1b2c3d4e5f6"
	args, err := script.Cmdline(`console=ttyS0,115200n8 hostname={{.Machine.Hostname}} role={{index .Machine.Labels "role"}} {{if .Job.ID}}auto=true{{end}}`, td)
	if err != nil {
		t.Fatal(err)
	}
	tp := "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	boot := script.Boot{
		MAC: "52:54:00:12:34:56", Hostname: "node1", Profile: "debian-12", JobID: "0190f0a1b2c3d4e5f6",
		Kernel:  script.File{URL: mustURL("http://198.18.0.1:8081/artifacts/debian/12/linux?traceparent=" + tp)},
		Initrds: []script.File{{URL: mustURL("http://198.18.0.1:8081/artifacts/debian/12/initrd.gz?traceparent=" + tp), Name: "initrd.gz"}},
		Args:    append(args, "bootchain.callback=http://198.18.0.1:8080/ipxe/v1/report?job=0190f0a1b2c3d4e5f6", "bootchain.token=abc123", "bootchain.traceparent="+tp),
	}
	cases := map[string]func() (string, error){
		"bootstrap": func() (string, error) { return script.Bootstrap(mustURL("http://198.18.0.1:8080/ipxe/v1/config")) },
		"job":       func() (string, error) { return script.RenderBoot(boot) },
		"menu": func() (string, error) {
			return script.RenderMenu(script.Menu{MAC: "52:54:00:12:34:56", Hostname: "node1", Site: "lab", Timeout: 5 * time.Second, Items: []script.MenuItem{
				{Profile: "memtest", Description: "Memory test", URL: mustURL("http://198.18.0.1:8080/ipxe/v1/config?mac=52%3A54%3A00%3A12%3A34%3A56&profile=memtest")},
				{Profile: "debian-12", Description: "Debian 12 installer", URL: mustURL("http://198.18.0.1:8080/ipxe/v1/config?mac=52%3A54%3A00%3A12%3A34%3A56&profile=debian-12")},
			}})
		},
		"local":   func() (string, error) { return script.LocalDisk("52:54:00:12:34:56", false, "default: local disk") },
		"sanboot": func() (string, error) { return script.LocalDisk("52:54:00:12:34:56", true, "default: sanboot") },
		"failure": func() (string, error) { return script.Failure("52:54:00:12:34:56", "profile x cannot be booted"), nil },
	}
	for name, render := range cases {
		t.Run(name, func(t *testing.T) {
			got, err := render()
			if err != nil {
				t.Fatal(err)
			}
			golden(t, name, got)
		})
	}
}

func TestHostileValuesNeverRender(t *testing.T) {
	hostile := []string{"x\nshell", "x init=/bin/sh", "${net0/ip}", "a || shell", "a && reboot", "#x", ":label", "a\rb"}
	for _, h := range hostile {
		var td script.TemplateData
		td.Machine.Hostname = h
		if _, err := script.Cmdline("hostname={{.Machine.Hostname}}", td); err == nil {
			t.Errorf("cmdline with hostname %q rendered", h)
		}
		boot := script.Boot{MAC: "52:54:00:12:34:56", Hostname: "ok", Profile: "p", Kernel: script.File{URL: mustURL("http://h/k")}, Args: []string{h}}
		if _, err := script.RenderBoot(boot); err == nil {
			t.Errorf("boot with argument %q rendered", h)
		}
		// Free text is folded, never breaks a line.
		s, err := script.RenderMenu(script.Menu{MAC: "52:54:00:12:34:56", Hostname: strings.ReplaceAll(h, "${", "$ {")})
		if err == nil && (strings.Contains(s, "\nshell\ngoto") == false) {
			t.Errorf("menu lost its structure for %q", h)
		}
	}
	if got := script.Failure("m", "bad\n${x} || shell"); strings.Contains(got, "${x}") || strings.Contains(got, "\nshell") || strings.Count(got, "\n") != 4 {
		t.Errorf("Failure rendered a hostile message: %q", got)
	}
}

func TestCmdlineTemplateErrors(t *testing.T) {
	for name, tmpl := range map[string]string{
		"parse":    "{{.Machine",
		"too long": strings.Repeat("a ", script.MaxCmdline),
		"bad func": "{{nosuch}}",
	} {
		if _, err := script.Cmdline(tmpl, script.TemplateData{}); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
