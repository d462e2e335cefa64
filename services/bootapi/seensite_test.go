package bootapi_test

import (
	"context"
	"strings"
	"testing"

	"github.com/bootchain/bootchain/internal/testkit"
	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
	"github.com/bootchain/bootchain/pkg/session"
	"github.com/bootchain/bootchain/pkg/store/storetest"
)

// TestUnknownMachineSeenSite: a bootapi shared by sites records an unknown
// machine under the site that saw it, and boots it from that site's
// artifactstore: the site of its lease (an authoritative dhcpd), else the site
// of the dhcpd or tftpd that opened its boot session (a proxy-mode site); its
// own --site only when neither says.
func TestUnknownMachineSeenSite(t *testing.T) {
	st := storetest.New(t)
	h := start(t, st)
	h.seed(t)
	ctx := context.Background()
	for name, s := range map[string]*bootapiv1.Site{
		"rack-b":  {ArtifactUrl: "http://198.18.2.1:8081"},
		"rack-c":  {ArtifactUrl: "http://198.18.3.1:8081", Dhcp: &bootapiv1.SiteDhcp{Mode: bootapiv1.DhcpMode_DHCP_MODE_PROXY}},
		"default": {ArtifactUrl: "http://198.18.1.1:8081", Dhcp: &bootapiv1.SiteDhcp{Mode: bootapiv1.DhcpMode_DHCP_MODE_PROXY}},
	} {
		s.Name, s.DefaultAction, s.DefaultProfile = name, bootapiv1.Action_ACTION_PROFILE, "debian-12"
		if _, err := h.sites.PutSite(ctx, &bootapiv1.PutSiteRequest{Site: s}); err != nil {
			t.Fatal(err)
		}
	}
	boots := func(mac, site, artifactURL string) {
		t.Helper()
		_, body := h.get(t, "/ipxe/v1/config?mac="+mac)
		if !strings.Contains(body, "kernel "+artifactURL+"/artifacts/debian/linux") {
			t.Errorf("%s: script does not boot from %s's artifactstore %s:\n%s", mac, site, artifactURL, body)
		}
		testkit.Eventually(t, mac+" recorded at "+site, func() bool {
			m, err := h.machines.GetMachine(ctx, &bootapiv1.GetMachineRequest{Mac: mac})
			return err == nil && m.GetMachine().GetDiscovered() && m.GetMachine().GetSite() == site
		})
	}

	// Leased by rack-b's dhcpd.
	const leased = "52:54:00:00:0b:01"
	h.leaseAt(t, "rack-b", leased)
	boots(leased, "rack-b", "http://198.18.2.1:8081")

	// No lease (rack-c's dhcpd is a proxy), but its dhcpd opened the session.
	dhcp, err := session.New(session.Config{Store: st, Service: "dhcpd", Site: "rack-c"})
	if err != nil {
		t.Fatal(err)
	}
	testkit.Run(t, "dhcpd sessions", dhcp.Run)
	if err := dhcp.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	const proxied = "52:54:00:00:0c:01"
	s := dhcp.Open(ctx, proxied, session.OpenOptions{New: true, IP: machineIP(proxied)})
	if err := dhcp.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, "bootapi sees the dhcpd session", func() bool {
		r, err := h.sessions.GetSession(ctx, &bootapiv1.GetSessionRequest{Mac: proxied})
		return err == nil && r.GetSession().GetTraceId() == s.TraceID()
	})
	boots(proxied, "rack-c", "http://198.18.3.1:8081")

	// A preview resolves an unknown machine's site the same way.
	const fresh = "52:54:00:00:0b:02"
	h.leaseAt(t, "rack-b", fresh)
	pv, err := h.machines.PreviewMachine(ctx, &bootapiv1.PreviewMachineRequest{Mac: fresh})
	if err != nil || pv.GetSite() != "rack-b" {
		t.Errorf("preview of an unknown machine leased at rack-b: site %q, %v", pv.GetSite(), err)
	}

	// Seen by no site's service: bootapi's own site.
	const stranger = "52:54:00:00:0d:01"
	boots(stranger, "default", "http://198.18.1.1:8081")
}
