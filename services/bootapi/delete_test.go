package bootapi_test

import (
	"context"
	"fmt"
	"testing"

	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
	"github.com/bootchain/bootchain/pkg/store/storetest"
)

// TestDeleteReadsItsOwnWrite: a delete answers once bootapi's own cache has it,
// as every other write does, so deleting a site's last machine and then the site
// succeeds at once, however fast the second call follows.
func TestDeleteReadsItsOwnWrite(t *testing.T) {
	h := start(t, storetest.New(t))
	ctx := context.Background()
	for i := range 20 {
		site := fmt.Sprintf("s%d", i)
		mac := fmt.Sprintf("52:54:00:de:00:%02x", i)
		if _, err := h.sites.PutSite(ctx, &bootapiv1.PutSiteRequest{Site: &bootapiv1.Site{Name: site}}); err != nil {
			t.Fatal(err)
		}
		if _, err := h.machines.RegisterMachine(ctx, &bootapiv1.RegisterMachineRequest{Machine: &bootapiv1.Machine{Mac: mac, Site: site}}); err != nil {
			t.Fatal(err)
		}
		if _, err := h.machines.DeleteMachine(ctx, &bootapiv1.DeleteMachineRequest{Mac: mac}); err != nil {
			t.Fatal(err)
		}
		if _, err := h.sites.DeleteSite(ctx, &bootapiv1.DeleteSiteRequest{Name: site}); err != nil {
			t.Fatalf("round %d: delete the site right after its last machine: %v", i, err)
		}
		if _, err := h.sites.GetSite(ctx, &bootapiv1.GetSiteRequest{Name: site}); err == nil {
			t.Fatalf("round %d: the deleted site is still read", i)
		}
	}
}
