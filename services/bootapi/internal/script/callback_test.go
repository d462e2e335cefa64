package script_test

import (
	"net/netip"
	"strings"
	"testing"

	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
	"github.com/bootchain/bootchain/services/bootapi/internal/decide"
	"github.com/bootchain/bootchain/services/bootapi/internal/script"
	"github.com/bootchain/bootchain/services/bootapi/internal/validate"
)

func jobBoot(site *bootapiv1.Site) decide.Decision {
	art := &bootapiv1.ArtifactRef{Source: &bootapiv1.ArtifactRef_Artifact{Artifact: "debian/linux"}}
	return decide.Decision{Action: decide.Boot, Machine: &bootapiv1.Machine{Mac: "52:54:00:12:34:56"}, Site: site,
		Profile: &bootapiv1.Profile{Name: "debian", Kernel: art}, Job: &bootapiv1.Job{Id: "j1", Profile: "debian"}}
}

// TestCallbackBase: a job's callback goes to the site's callback_url, else the
// configured callback URL (a fleet-level load balancer), else the public URL
// of the replica that rendered it.
func TestCallbackBase(t *testing.T) {
	public := mustURL("http://198.18.0.1:8080")
	fleet := mustURL("https://boot.example.net/bootchain")
	for name, tc := range map[string]struct {
		cfg  script.RendererConfig
		site *bootapiv1.Site
		want string
	}{
		"replica":    {script.RendererConfig{PublicURL: public}, &bootapiv1.Site{Name: "lab"}, "http://198.18.0.1:8080/ipxe/v1/report?job=j1"},
		"fleet":      {script.RendererConfig{PublicURL: public, CallbackURL: fleet}, &bootapiv1.Site{Name: "lab"}, "https://boot.example.net/bootchain/ipxe/v1/report?job=j1"},
		"site first": {script.RendererConfig{PublicURL: public, CallbackURL: fleet}, &bootapiv1.Site{Name: "lab", CallbackUrl: "https://198.18.0.100:8443"}, "https://198.18.0.100:8443/ipxe/v1/report?job=j1"},
	} {
		tc.cfg.ArtifactURL = "http://198.18.0.1:8081"
		s, err := script.NewRenderer(tc.cfg).Render(jobBoot(tc.site), "", &script.Job{Token: "tok"})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !strings.Contains(s.Body, " bootchain.callback="+tc.want+" ") {
			t.Errorf("%s: want callback %s in\n%s", name, tc.want, s.Body)
		}
	}
}

// FuzzCallbackURL: whatever callback_url a site record may hold (validated as
// the API does) renders into one kernel argument, with no expansion or
// separator the script's own lines lack.
func FuzzCallbackURL(f *testing.F) {
	f.Add("https://boot.example.net")
	f.Add("http://198.18.0.1:8080/base/")
	f.Add("http://h/${x} || shell")
	f.Add("https://u:p@h:1/a?b=c#d")
	f.Add("http://[::1]:80/%24%7B")
	f.Fuzz(func(t *testing.T, cb string) {
		if validate.BaseURL("site.callback_url", cb) != nil || cb == "" {
			return
		}
		r := script.NewRenderer(script.RendererConfig{PublicURL: mustURL("http://198.18.0.1:8080"), ArtifactURL: "http://198.18.0.1:8081"})
		s, err := r.Render(jobBoot(&bootapiv1.Site{Name: "lab", CallbackUrl: cb}), "", &script.Job{Token: "tok"})
		if err != nil {
			return
		}
		checkScript(t, s.Body, 9)
		for _, l := range strings.Split(s.Body, "\n") {
			if strings.HasPrefix(l, "kernel ") && strings.Count(l, "bootchain.callback=") != 1 {
				t.Fatalf("kernel line %q", l)
			}
		}
	})
}

// TestForIPv6: a script rendered for an IPv6 client names every URL with an
// IPv4-literal host on bootapi's IPv6 address instead (kernel, callback,
// installer files), and keeps host names.
func TestForIPv6(t *testing.T) {
	r := script.NewRenderer(script.RendererConfig{PublicURL: mustURL("http://198.18.0.1:8080"), ArtifactURL: "http://198.18.0.1:8081"}).
		ForIPv6(netip.MustParseAddr("fd00:bc::1"))
	for name, tc := range map[string]struct {
		site *bootapiv1.Site
		want []string
	}{
		"defaults": {&bootapiv1.Site{Name: "lab"}, []string{"kernel http://[fd00:bc::1]:8081/artifacts/debian/linux", " bootchain.callback=http://[fd00:bc::1]:8080/ipxe/v1/report?job=j1 "}},
		"site URLs": {&bootapiv1.Site{Name: "lab", ArtifactUrl: "http://198.18.0.7:9000", CallbackUrl: "https://boot.example.net"},
			[]string{"kernel http://[fd00:bc::1]:9000/artifacts/debian/linux", " bootchain.callback=https://boot.example.net/ipxe/v1/report?job=j1 "}},
	} {
		s, err := r.Render(jobBoot(tc.site), "", &script.Job{Token: "tok"})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		for _, w := range tc.want {
			if !strings.Contains(s.Body, w) {
				t.Errorf("%s: want %q in\n%s", name, w, s.Body)
			}
		}
		if strings.Contains(s.Body, "198.18.") {
			t.Errorf("%s: an IPv4 URL left in\n%s", name, s.Body)
		}
	}
	// The client's IPv6 address goes on the command line for the installer;
	// an IPv4 renderer, or a link-local address, adds none.
	ip6 := netip.MustParseAddr("fd00:bc::1a5")
	for _, tc := range []struct {
		r    *script.Renderer
		ip   netip.Addr
		want bool
	}{{r, ip6, true}, {r, netip.MustParseAddr("fe80::1"), false}, {r, netip.Addr{}, false},
		{script.NewRenderer(script.RendererConfig{PublicURL: mustURL("http://198.18.0.1:8080"), ArtifactURL: "http://198.18.0.1:8081"}), ip6, false}} {
		s, err := tc.r.Render(jobBoot(&bootapiv1.Site{Name: "lab"}), "", &script.Job{Token: "tok", IP6: tc.ip})
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.Count(s.Body, " bootchain.ip6="); got != 0 && !tc.want || tc.want && !strings.Contains(s.Body, " bootchain.ip6=fd00:bc::1a5") {
			t.Errorf("client %v: bootchain.ip6 in the script: %d, want %v\n%s", tc.ip, got, tc.want, s.Body)
		}
	}
	if got := r.ConfigURL().String(); got != "http://[fd00:bc::1]:8080/ipxe/v1/config" {
		t.Errorf("config URL %s", got)
	}
}
