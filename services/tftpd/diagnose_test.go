package tftpd_test

import (
	"bytes"
	"context"
	"testing"

	"github.com/bootchain/bootchain/internal/testkit"
	"github.com/bootchain/bootchain/pkg/diagnose"
)

// The hops a diagnosis reads: a boot file's architecture on its transfer, and
// a request for a file tftpd does not have as a failed hop of the session.
func TestHopsForDiagnosis(t *testing.T) {
	e := newEnv(t)
	efi := ipxeEFI(t)
	e.arts.Put("ipxe.efi", efi)
	rec := e.srv.Sessions()
	if err := rec.WaitReady(context.Background()); err != nil {
		t.Fatal(err)
	}
	const mac = "52:54:00:12:34:57"
	rec.Open(context.Background(), mac, sessionOpenIP("127.0.0.1"))
	if got, _, err := get(e.addr(), "ipxe.efi", 1468, false); err != nil || !bytes.Equal(got, efi) {
		t.Fatalf("ipxe.efi: %v", err)
	}
	if _, _, err := get(e.addr(), "nope.efi", 512, false); err == nil {
		t.Fatal("nope.efi was sent")
	}
	testkit.Eventually(t, "two hops", func() bool {
		bs, ok := rec.Get(t.Context(), mac)
		return ok && len(bs.GetHops()) == 2
	})
	bs, _ := rec.Get(t.Context(), mac)
	sent, missing := bs.GetHops()[0], bs.GetHops()[1]
	if a := sent.GetAttributes(); sent.GetFailed() || a[diagnose.AttrFileArch] != diagnose.ArchEFIX64 {
		t.Errorf("transfer hop %v: want %s=%s", sent, diagnose.AttrFileArch, diagnose.ArchEFIX64)
	}
	if a := missing.GetAttributes(); !missing.GetFailed() || a[diagnose.AttrTFTPOutcome] != diagnose.OutcomeNotFound || a["tftp.file"] != "nope.efi" {
		t.Errorf("not-found hop %v", missing)
	}
}
