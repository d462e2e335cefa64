package lease

import (
	"context"
	"net/netip"
	"testing"

	dhcpdv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/dhcpd/v1"
	"github.com/bootchain/bootchain/pkg/store"
	"github.com/bootchain/bootchain/pkg/store/storetest"
)

// TestReleaseReportsRevision checks that a release, which the batching writer
// commits on its own context, still reports its etcd revision to the caller's
// (the audit log records it).
func TestReleaseReportsRevision(t *testing.T) {
	ctx := context.Background()
	st := storetest.New(t)
	sub := subnet(4)
	a := replica(t, ctx, st, "a", sub)
	c := Client{MAC: "52:54:00:00:00:01"}
	l, err := a.Offer(ctx, c, sub)
	if err != nil {
		t.Fatal(err)
	}
	ip := netip.MustParseAddr(l.GetIp())
	if _, err := a.Bind(ctx, c, ip, sub, nil); err != nil {
		t.Fatal(err)
	}
	rctx, revs := store.WithRevisions(ctx)
	if _, err := a.Release(rctx, ip, ""); err != nil {
		t.Fatal(err)
	}
	rev, err := st.Get(ctx, store.Key("leases", "lab", ip.String()), &dhcpdv1.Lease{})
	if err != nil {
		t.Fatal(err)
	}
	if revs.Last() != rev {
		t.Fatalf("release reported revision %d, the lease is at %d", revs.Last(), rev)
	}
}
