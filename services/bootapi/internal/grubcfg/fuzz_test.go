package grubcfg_test

import (
	"strings"
	"testing"
	"time"

	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
	"github.com/bootchain/bootchain/pkg/grub"
	"github.com/bootchain/bootchain/services/bootapi/internal/decide"
	"github.com/bootchain/bootchain/services/bootapi/internal/grubcfg"
	"github.com/bootchain/bootchain/services/bootapi/internal/script"
)

// FuzzRender drives user-controlled values (hostname, a label, a profile's
// description and name, its cmdline template, a failure message) through
// the whole rendering path and checks that the result, when there is one,
// lexes into bootchain's own commands only, with every value read back as
// the one word it was.
func FuzzRender(f *testing.F) {
	f.Add("node1", "worker", "Debian", "debian-12", "console=ttyS0 hostname={{.Machine.Hostname}}", "msg")
	f.Add("a\nreboot", "${x}", "a'; reboot; '", "p", "{{.Machine.Labels.role}}", "x'\nreboot")
	f.Add("x", "y", "z", "q", "{{range .Machine.Labels}}{{.}} {{end}}", `\'`)
	f.Add("h", `a"b`, "}", "q", `x={{.Machine.Labels.role}}`, "$prefix")
	r := newRenderer()
	f.Fuzz(func(t *testing.T, hostname, label, desc, profile, tmpl, msg string) {
		m := &bootapiv1.Machine{Mac: "52:54:00:12:34:56", Hostname: hostname, Labels: map[string]string{"role": label}}
		p := &bootapiv1.Profile{Name: profile, Kernel: art("k"), Initrds: []*bootapiv1.ArtifactRef{art("i")}, Cmdline: tmpl}
		job := &bootapiv1.Job{Id: "j1", Profile: profile}
		s, err := r.Render(decide.Decision{Action: decide.Boot, Machine: m, Site: site, Profile: p, Job: job}, "x86_64-efi", tp, &script.Job{Token: "t"})
		checkConfig(t, s.Body)
		if err == nil {
			checkBootWords(t, s.Body, hostname)
		}
		menu, err := grubcfg.Menu(m.Mac, hostname, "lab", []grubcfg.MenuItem{{Profile: profile, Description: desc}}, time.Second)
		if err == nil {
			checkConfig(t, menu)
			if !strings.Contains(menu, "'--id' 'p-"+profile+"' {") {
				t.Fatalf("menu lacks profile %q:\n%s", profile, menu)
			}
		}
		fail := grubcfg.Failure(m.Mac, msg)
		checkConfig(t, fail)
		if n := strings.Count(fail, "\n"); n != 4 {
			t.Fatalf("failure config has %d lines:\n%s", n, fail)
		}
	})
}

// checkBootWords: the echo line reads back as one word holding the
// hostname, and the linux line's words are the kernel and checked arguments.
func checkBootWords(t *testing.T, cfg, hostname string) {
	t.Helper()
	for _, l := range strings.Split(cfg, "\n") {
		words, _, _, _ := grub.Lex(strings.TrimLeft(l, "\t"))
		if len(words) == 0 {
			continue
		}
		switch words[0] {
		case "echo":
			if strings.HasPrefix(words[1], "bootchain: booting") && (len(words) != 2 || (hostname != "" && !strings.HasSuffix(words[1], " on "+hostname))) {
				t.Fatalf("echo line %q lexes as %q", l, words)
			}
		case "if":
			if words[1] == "linux" {
				for _, a := range words[3:] {
					if a == "then" {
						break
					}
					if err := grub.CheckKernelArg(a); err != nil {
						t.Fatalf("kernel argument %q: %v", a, err)
					}
				}
			}
		}
	}
}
