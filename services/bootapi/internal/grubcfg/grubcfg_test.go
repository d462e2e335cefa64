package grubcfg_test

import (
	"flag"
	"github.com/bootchain/bootchain/internal/testkit"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
	"github.com/bootchain/bootchain/pkg/grub"
	"github.com/bootchain/bootchain/services/bootapi/internal/decide"
	"github.com/bootchain/bootchain/services/bootapi/internal/grubcfg"
	"github.com/bootchain/bootchain/services/bootapi/internal/script"
)

var update = flag.Bool("update", false, "rewrite golden files")

func golden(t *testing.T, name, got string) {
	t.Helper()
	testkit.Golden(t, filepath.Join("testdata", name), got, *update)
}

func mustURL(s string) *url.URL {
	u, err := url.Parse(s)
	if err != nil {
		panic(err)
	}
	return u
}

const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

func art(name string) *bootapiv1.ArtifactRef {
	return &bootapiv1.ArtifactRef{Source: &bootapiv1.ArtifactRef_Artifact{Artifact: name}}
}

func newRenderer() *grubcfg.Renderer {
	sr := script.NewRenderer(script.RendererConfig{PublicURL: mustURL("http://198.18.0.1:8080"), ArtifactURL: "http://198.18.0.1:8081"})
	return grubcfg.NewRenderer(grubcfg.Config{Script: sr, MenuTimeout: 5 * time.Second})
}

var (
	machine = &bootapiv1.Machine{Mac: "52:54:00:12:34:56", Hostname: "node1", Labels: map[string]string{"role": "worker"}}
	site    = &bootapiv1.Site{Name: "lab"}
	debian  = &bootapiv1.Profile{Name: "debian-12", Kernel: art("debian/12/linux"), Initrds: []*bootapiv1.ArtifactRef{art("debian/12/initrd.gz@sha256:" + strings.Repeat("cd", 32))},
		Cmdline: "console=ttyS0,115200n8 hostname={{.Machine.Hostname}} role={{.Machine.Labels.role}} auto=true"}
)

func TestGolden(t *testing.T) {
	r := newRenderer()
	render := func(d decide.Decision, job *script.Job) string {
		s, err := r.Render(d, "x86_64-efi", tp, job)
		if err != nil {
			t.Fatal(err)
		}
		return s.Head + s.Body
	}
	job := &bootapiv1.Job{Id: "0190f0a1b2c3d4e5f6", Profile: "debian-12"}
	wait, err := grubcfg.Wait(machine.Mac, 2500*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	menu, err := grubcfg.Menu(machine.Mac, "node1", "lab", []grubcfg.MenuItem{{Profile: "rescue", Description: "Rescue shell"}, {Profile: "debian-12", Description: "Debian's installer"}}, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	for name, got := range map[string]string{
		"bootstrap.cfg": grub.Bootstrap(),
		"job.cfg":       render(decide.Decision{Action: decide.Boot, Machine: machine, Site: site, Profile: debian, Job: job}, &script.Job{Token: "abc123"}),
		"profile.cfg":   render(decide.Decision{Action: decide.Boot, Machine: machine, Site: site, Profile: debian}, nil),
		"local.cfg":     render(decide.Decision{Action: decide.LocalDisk, Machine: machine, Site: site, Detail: "default: local disk"}, nil),
		"failure.cfg":   render(decide.Decision{Action: decide.Failure, Machine: machine, Site: site, Message: "profile x is not offered to this machine"}, nil),
		"wait.cfg":      wait,
		"menu.cfg":      menu,
	} {
		t.Run(name, func(t *testing.T) {
			checkConfig(t, got)
			golden(t, name, got)
		})
	}
}

// TestRender: what each decision carries, and how one that cannot be
// rendered fails.
func TestRender(t *testing.T) {
	r := newRenderer()
	job := &bootapiv1.Job{Id: "j1", Profile: "debian-12"}
	for name, tc := range map[string]struct {
		d       decide.Decision
		job     *script.Job
		has     []string
		hasNot  []string
		final   bool
		wantErr bool
	}{
		"profile boot": {
			d:      decide.Decision{Action: decide.Boot, Machine: machine, Site: site, Profile: debian},
			has:    []string{"if linux '(tftp)/artifacts/debian/12/linux'", "'hostname=node1'", "'bootchain.traceparent=" + tp + "'", "if initrd '(tftp)/artifacts/debian/12/initrd.gz@sha256:"},
			hasNot: []string{"bootchain.callback"},
		},
		"job boot carries its callback": {
			d:   decide.Decision{Action: decide.Boot, Machine: machine, Site: site, Profile: debian, Job: job},
			job: &script.Job{Token: "tok"},
			has: []string{"'bootchain.callback=http://198.18.0.1:8080/ipxe/v1/report?job=j1'", "'bootchain.token=tok'", "'bootchain.job=j1'", "# bootchain: job j1, profile debian-12, arch x86_64-efi"},
		},
		"job without a token": {
			d:     decide.Decision{Action: decide.Boot, Machine: machine, Site: site, Profile: debian, Job: job},
			has:   []string{"profile debian-12 cannot be booted", "\nexit\n"},
			final: true, wantErr: true,
		},
		"a URL boot file cannot come over TFTP": {
			d: decide.Decision{Action: decide.Boot, Machine: machine, Site: site, Profile: &bootapiv1.Profile{Name: "web",
				Kernel: &bootapiv1.ArtifactRef{Source: &bootapiv1.ArtifactRef_Url{Url: "http://198.18.0.9/linux"}}}},
			has:   []string{"profile web cannot be booted"},
			final: true, wantErr: true,
		},
		"a broken pin is not rendered": {
			d:      decide.Decision{Action: decide.Boot, Machine: machine, Site: site, Profile: &bootapiv1.Profile{Name: "bad", Kernel: art("debian/linux@sha256:zz")}},
			has:    []string{"profile bad cannot be booted"},
			hasNot: []string{"artifacts/debian/linux"},
			final:  true, wantErr: true,
		},
		"a hostname that would add a parameter": {
			d:      decide.Decision{Action: decide.Boot, Machine: &bootapiv1.Machine{Mac: machine.Mac, Hostname: "x init=/bin/sh"}, Site: site, Profile: debian},
			has:    []string{"profile debian-12 cannot be booted"},
			hasNot: []string{"init=/bin/sh"},
			final:  true, wantErr: true,
		},
		"a quote in the command line": {
			d: decide.Decision{Action: decide.Boot, Machine: machine, Site: site, Profile: &bootapiv1.Profile{Name: "q", Kernel: art("k"),
				Cmdline: `a="b c"`}},
			has:   []string{"profile q cannot be booted"},
			final: true, wantErr: true,
		},
		"sanboot leaves for the next boot option": {
			d: decide.Decision{Action: decide.Sanboot, Machine: machine, Site: site}, has: []string{"\nexit\n"}, final: true,
		},
		"shell": {d: decide.Decision{Action: decide.Shell, Machine: machine, Site: site}, has: []string{"GRUB command line"}, hasNot: []string{"exit"}, final: true},
		"a hostile failure message": {
			d:      decide.Decision{Action: decide.Failure, Machine: machine, Site: site, Message: "x'\nreboot"},
			has:    []string{"cannot boot this machine (see the bootapi log)"},
			hasNot: []string{"\nreboot"},
			final:  true,
		},
	} {
		t.Run(name, func(t *testing.T) {
			s, err := r.Render(tc.d, "x86_64-efi", tp, tc.job)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, want error %v", err, tc.wantErr)
			}
			got := s.Head + s.Body
			checkConfig(t, got)
			for _, h := range tc.has {
				if !strings.Contains(got, h) {
					t.Errorf("config lacks %q:\n%s", h, got)
				}
			}
			for _, h := range tc.hasNot {
				if strings.Contains(got, h) {
					t.Errorf("config has %q:\n%s", h, got)
				}
			}
			if s.Final != tc.final {
				t.Errorf("final = %v, want %v", s.Final, tc.final)
			}
		})
	}
}

// ownExpansions are the only variables bootchain's configs expand.
var ownExpansions = map[string]bool{"${prefix}": true, "${net_default_mac}": true}

// ownCommands are the commands bootchain writes.
var ownCommands = map[string]bool{
	"echo": true, "sleep": true, "exit": true, "boot": true, "linux": true, "initrd": true, "if": true, "fi": true,
	"set": true, "menuentry": true, "}": true, "configfile": true, "source": true, "reboot": true, "then": true,
}

// checkConfig lexes every line: only bootchain's commands, its own
// expansions, and separators only where bootchain puts them.
func checkConfig(t *testing.T, cfg string) {
	t.Helper()
	if !strings.HasSuffix(cfg, "\n") {
		t.Fatalf("config does not end in a newline:\n%s", cfg)
	}
	for _, l := range strings.Split(strings.TrimSuffix(cfg, "\n"), "\n") {
		words, exp, seps, err := grub.Lex(l)
		if err != nil {
			t.Fatalf("%v in\n%s", err, cfg)
		}
		for _, e := range exp {
			if !ownExpansions[e] {
				t.Fatalf("expansion %q in line %q", e, l)
			}
		}
		if len(words) == 0 {
			if len(seps) == 1 && seps[0] == "}" {
				continue
			}
			if len(seps) > 0 {
				t.Fatalf("separators %q in line %q", seps, l)
			}
			continue
		}
		if !ownCommands[words[0]] {
			t.Fatalf("command %q in line %q", words[0], l)
		}
		want := 0
		switch {
		case words[0] == "if":
			want = 1 // "; then"
		case words[0] == "menuentry":
			want = 1 // "{"
		}
		if len(seps) != want {
			t.Fatalf("separators %q in line %q", seps, l)
		}
	}
}
