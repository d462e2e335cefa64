//go:build linux

package dhcpd_test

import (
	"context"
	"strings"
	"testing"
	"time"

	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
	"github.com/bootchain/bootchain/pkg/store/storetest"
	"github.com/bootchain/bootchain/test/lab"
	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
)

// firmwareRig is an authoritative dhcpd on a lab bridge and an nclient4 client
// behind it.
func firmwareRig(t *testing.T) (*rig, *nclient4.Client) {
	t.Helper()
	l := lab.NewT(t, lab.Config{})
	r := startDHCPD(t, l, storetest.New(t), seed(bootapiv1.DhcpMode_DHCP_MODE_AUTHORITATIVE))
	return r, nclient(t, client(t, l, "c1", ""))
}

// flushedSession writes what dhcpd's recorder holds and reads mac's session back.
func flushedSession(t *testing.T, ctx context.Context, r *rig, mac string) *bootapiv1.BootSession {
	t.Helper()
	if err := r.srv.Sessions().Flush(ctx); err != nil {
		t.Fatal(err)
	}
	bs, ok := r.srv.Sessions().Get(ctx, mac)
	if !ok {
		t.Fatalf("no boot session for %s", mac)
	}
	return bs
}

// TestLabHTTPBootURL: a UEFI HTTP-boot client (option 60 "HTTPClient", arch 16)
// gets an http URL of snponly.efi on the site's artifactstore, option 60
// "HTTPClient" echoed, and the URL carries its session's traceparent so that
// artifactstore records the download as a hop of that boot.
func TestLabHTTPBootURL(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	r, c := firmwareRig(t)
	lease, err := c.Request(ctx,
		dhcpv4.WithOption(dhcpv4.OptClassIdentifier("HTTPClient:Arch:00016:UNDI:003001")),
		dhcpv4.WithOption(dhcpv4.OptClientArch(16)))
	if err != nil {
		t.Fatalf("nclient4 DORA: %v", err)
	}
	bs := flushedSession(t, ctx, r, c.InterfaceAddr().String())
	for name, m := range map[string]*dhcpv4.DHCPv4{"offer": lease.Offer, "ack": lease.ACK} {
		file := dhcpv4.GetString(dhcpv4.OptionBootfileName, m.Options)
		base, tp, found := strings.Cut(file, "?traceparent=")
		if !found || base != "http://198.18.0.1:8081/artifacts/snponly.efi" {
			t.Errorf("%s: boot file %q, want snponly.efi's URL on artifactstore with ?traceparent=", name, file)
		}
		// 00-<trace id>-<span id>-01 of this session.
		if parts := strings.Split(tp, "-"); len(parts) != 4 || parts[1] != bs.GetTraceId() {
			t.Errorf("%s: traceparent %q, want one of trace %s", name, tp, bs.GetTraceId())
		}
		if vc := m.ClassIdentifier(); vc != "HTTPClient" {
			t.Errorf("%s: option 60 %q, want HTTPClient", name, vc)
		}
	}
}

// TestLabRefusedBootProgram: a firmware that downloaded its boot program and then
// starts over with a new DISCOVER never ran it (Secure Boot refused it). That boot
// ends failed at the download's hop, and the retry's exchange joins it instead of
// replacing it with a new session.
func TestLabRefusedBootProgram(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	r, c := firmwareRig(t)
	if _, err := c.Request(ctx, pxeMods...); err != nil {
		t.Fatalf("nclient4 DORA: %v", err)
	}
	mac := c.InterfaceAddr().String()
	sess, ok := r.srv.Sessions().Join(mac)
	if !ok {
		t.Fatal("no active session after the firmware's DHCP")
	}
	// What tftpd records when the firmware fetched snponly.efi.
	_, hop := sess.StartHop(ctx, "tftp")
	hop.SetDetail("snponly.efi")
	hop.SetBytes(173792)
	hop.End()
	if err := r.srv.Sessions().Flush(ctx); err != nil {
		t.Fatal(err)
	}

	if _, err := c.Request(ctx, pxeMods...); err != nil {
		t.Fatalf("second DORA: %v", err)
	}
	bs := flushedSession(t, ctx, r, mac)
	var hops []string
	for _, h := range bs.GetHops() {
		hops = append(hops, h.GetName())
	}
	if bs.GetTraceId() != sess.TraceID() || bs.GetState() != bootapiv1.SessionState_SESSION_STATE_FAILED || bs.GetFailedHop() != "tftp" ||
		!strings.Contains(bs.GetMessage(), "snponly.efi") || !strings.Contains(bs.GetMessage(), "started over") {
		t.Errorf("session %s (first %s) state %v hop %q message %q hops %v; want the first, failed at tftp naming snponly.efi",
			bs.GetTraceId(), sess.TraceID(), bs.GetState(), bs.GetFailedHop(), bs.GetMessage(), hops)
	}
	if n := strings.Count(strings.Join(hops, " "), "dhcp.discover"); n < 2 {
		t.Errorf("hops %v: the retry's DISCOVER is not in the failed boot's session", hops)
	}
}
