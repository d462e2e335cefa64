package script_test

import (
	"strings"
	"testing"

	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
	"github.com/bootchain/bootchain/services/bootapi/internal/decide"
	"github.com/bootchain/bootchain/services/bootapi/internal/script"
)

// TestRender renders decisions without a menu (the menu needs the profiles'
// cache, covered by the service's tests): what each carries and how a
// decision that cannot be rendered fails.
func TestRender(t *testing.T) {
	r := script.NewRenderer(script.RendererConfig{PublicURL: mustURL("http://198.18.0.1:8080"), ArtifactURL: "http://198.18.0.1:8081"})
	const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	m := &bootapiv1.Machine{Mac: "52:54:00:12:34:56", Hostname: "node1"}
	site := &bootapiv1.Site{Name: "lab"}
	art := func(name string) *bootapiv1.ArtifactRef {
		return &bootapiv1.ArtifactRef{Source: &bootapiv1.ArtifactRef_Artifact{Artifact: name}}
	}
	debian := &bootapiv1.Profile{Name: "debian", Kernel: art("debian/linux"), Initrds: []*bootapiv1.ArtifactRef{art("debian/initrd.gz")},
		Cmdline: "console=ttyS0 hostname={{.Machine.Hostname}}"}
	job := &bootapiv1.Job{Id: "j1", Profile: "debian"}
	for name, tc := range map[string]struct {
		d       decide.Decision
		job     *script.Job
		has     []string
		hasNot  []string
		final   bool
		wantErr bool
	}{
		"profile boot": {
			d:      decide.Decision{Action: decide.Boot, Machine: m, Site: site, Profile: debian, Detail: "default profile debian"},
			has:    []string{"kernel http://198.18.0.1:8081/artifacts/debian/linux?traceparent=" + tp, "initrd --name initrd.gz", "hostname=node1", "bootchain.traceparent=" + tp},
			hasNot: []string{"bootchain.callback"},
		},
		"job boot carries its callback": {
			d:   decide.Decision{Action: decide.Boot, Machine: m, Site: site, Profile: debian, Job: job},
			job: &script.Job{Token: "tok"},
			has: []string{"bootchain.callback=http://198.18.0.1:8080/ipxe/v1/report?job=j1", "bootchain.token=tok", "bootchain.job=j1", "# bootchain: job j1, profile debian"},
		},
		"pinned artifacts carry their digest": {
			d: decide.Decision{Action: decide.Boot, Machine: m, Site: site, Profile: &bootapiv1.Profile{Name: "pinned",
				Kernel: art("debian/linux@sha256:" + strings.Repeat("ab", 32)), Initrds: []*bootapiv1.ArtifactRef{art("debian/initrd.gz@sha256:" + strings.Repeat("cd", 32))}}},
			has: []string{"kernel http://198.18.0.1:8081/artifacts/debian/linux?traceparent=" + tp + "&sha256=" + strings.Repeat("ab", 32),
				"initrd --name initrd.gz http://198.18.0.1:8081/artifacts/debian/initrd.gz?traceparent=" + tp + "&sha256=" + strings.Repeat("cd", 32)},
			hasNot: []string{"@sha256", "%40"},
		},
		"a broken pin is not rendered": {
			d: decide.Decision{Action: decide.Boot, Machine: m, Site: site, Profile: &bootapiv1.Profile{Name: "bad",
				Kernel: art("debian/linux@sha256:zz")}},
			has:    []string{"profile bad cannot be booted"},
			hasNot: []string{"artifacts/debian/linux"},
			final:  true, wantErr: true,
		},
		"site artifactstore": {
			d:   decide.Decision{Action: decide.Boot, Machine: m, Site: &bootapiv1.Site{Name: "far", ArtifactUrl: "http://10.0.0.9:8081"}, Profile: debian},
			has: []string{"kernel http://10.0.0.9:8081/artifacts/debian/linux"},
		},
		"job without a token": {
			d:     decide.Decision{Action: decide.Boot, Machine: m, Site: site, Profile: debian, Job: job},
			has:   []string{"profile debian cannot be booted", "exit 1"},
			final: true, wantErr: true,
		},
		"cmdline value that would add a parameter": {
			d:      decide.Decision{Action: decide.Boot, Machine: &bootapiv1.Machine{Mac: m.Mac, Hostname: "x init=/bin/sh"}, Site: site, Profile: debian},
			has:    []string{"profile debian cannot be booted"},
			hasNot: []string{"init=/bin/sh"},
			final:  true, wantErr: true,
		},
		"local disk": {
			d:     decide.Decision{Action: decide.LocalDisk, Machine: m, Site: site, Detail: "default: local disk"},
			has:   []string{"# bootchain: machine 52:54:00:12:34:56: default: local disk", "\nexit\n"},
			final: true,
		},
		"sanboot":   {d: decide.Decision{Action: decide.Sanboot, Machine: m, Site: site}, has: []string{"sanboot --no-describe --drive 0x80"}, final: true},
		"shell":     {d: decide.Decision{Action: decide.Shell, Machine: m, Site: site}, has: []string{"\nshell\n"}, final: true},
		"failure":   {d: decide.Decision{Action: decide.Failure, Machine: m, Site: site, Message: "profile x is not offered to this machine"}, has: []string{"echo bootchain: profile x is not offered to this machine"}, final: true},
		"no action": {d: decide.Decision{Machine: m, Site: site}, has: []string{"exit 1"}, final: true, wantErr: true},
	} {
		t.Run(name, func(t *testing.T) {
			s, err := r.Render(tc.d, tp, tc.job)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err %v, want error %v", err, tc.wantErr)
			}
			got := s.Head + s.Body
			for _, w := range tc.has {
				if !strings.Contains(got, w) {
					t.Errorf("script lacks %q:\n%s", w, got)
				}
			}
			for _, w := range tc.hasNot {
				if strings.Contains(got, w) {
					t.Errorf("script has %q:\n%s", w, got)
				}
			}
			if s.Final != tc.final {
				t.Errorf("final %v, want %v", s.Final, tc.final)
			}
		})
	}
}
