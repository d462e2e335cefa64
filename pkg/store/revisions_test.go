package store_test

import (
	"context"
	"testing"

	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
	"github.com/bootchain/bootchain/pkg/store"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// TestRevisions checks that the writes made with a context reach its Revisions
// with the revision etcd committed them at, whichever path they take, and that
// reads, failed compare-and-swaps and other contexts' writes do not.
func TestRevisions(t *testing.T) { clients(t, testRevisions) }

func testRevisions(t *testing.T, st *store.Store) {
	key := store.Key("machines", "aa:bb:cc:dd:ee:01")
	ctx, revs := store.WithRevisions(context.Background())

	rev, err := st.Create(ctx, key, &bootapiv1.Machine{Mac: "aa:bb:cc:dd:ee:01"})
	if err != nil {
		t.Fatal(err)
	}
	if revs.Last() != rev || revs.Count() != 1 {
		t.Fatalf("after create: last %d count %d, want %d 1", revs.Last(), revs.Count(), rev)
	}
	// A read, a lost compare-and-swap and another context's write report nothing.
	if _, err := st.Get(ctx, key, &bootapiv1.Machine{}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Create(ctx, key, &bootapiv1.Machine{}); err == nil {
		t.Fatal("second create succeeded")
	}
	if _, err := st.Client().Txn(ctx).Then(clientv3.OpGet(key)).Commit(); err != nil {
		t.Fatal(err)
	}
	other, err := st.Put(context.Background(), store.Key("machines", "aa:bb:cc:dd:ee:02"), &bootapiv1.Machine{})
	if err != nil {
		t.Fatal(err)
	}
	if revs.Last() != rev || revs.Count() != 1 {
		t.Fatalf("after reads: last %d count %d, want %d 1", revs.Last(), revs.Count(), rev)
	}
	// A transaction straight on the client, as handlers' multi-key writes are.
	resp, err := st.Client().Txn(ctx).If(store.Unchanged(key, rev)).Then(clientv3.OpPut(key, "x")).Commit()
	if err != nil || !resp.Succeeded {
		t.Fatalf("txn: %v %v", resp, err)
	}
	if got := revs.Last(); got != resp.Header.Revision || got <= other {
		t.Fatalf("after txn: last %d, want %d (> %d)", got, resp.Header.Revision, other)
	}
	// A failed compare whose Else writes reports the Else's revision.
	resp, err = st.Client().Txn(ctx).If(store.Unchanged(key, 1)).Else(clientv3.OpPut(key, "y")).Commit()
	if err != nil || resp.Succeeded {
		t.Fatalf("txn else: %v %v", resp, err)
	}
	if revs.Last() != resp.Header.Revision {
		t.Fatalf("after else: last %d, want %d", revs.Last(), resp.Header.Revision)
	}
	if err := st.Delete(ctx, key, 0); err != nil {
		t.Fatal(err)
	}
	if revs.Count() != 4 || revs.Last() <= resp.Header.Revision {
		t.Fatalf("after delete: last %d count %d, want > %d, 4", revs.Last(), revs.Count(), resp.Header.Revision)
	}
}
