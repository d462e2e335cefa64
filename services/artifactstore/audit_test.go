package artifactstore_test

import (
	"context"
	"testing"

	"github.com/bootchain/bootchain/pkg/audit"
	artifactv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/artifactstore/v1"
	"github.com/bootchain/bootchain/pkg/store"
	"github.com/bootchain/bootchain/pkg/store/storetest"
)

// TestAuditUploadAndDelete checks artifactstore's audit wiring: an upload and a
// delete (a streamed and a unary write, through the catalog's own
// transactions) are each in the log with the revision of the catalog write; a
// read is not.
func TestAuditUploadAndDelete(t *testing.T) {
	in := start(t, storetest.Start(t), opts{})
	ctx := context.Background()
	mustUpload(t, in, "debian/linux", []byte("kernel"))
	uploadRev, err := in.st.Get(ctx, store.Key("artifacts", "debian/linux"), &artifactv1.Artifact{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := in.cli.Stat(ctx, &artifactv1.StatRequest{Name: "debian/linux"}); err != nil {
		t.Fatal(err)
	}
	if _, err := in.cli.Delete(ctx, &artifactv1.DeleteRequest{Name: "debian/linux"}); err != nil {
		t.Fatal(err)
	}
	evs, _, err := audit.List(ctx, in.st, audit.Query{})
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 2 {
		t.Fatalf("got %d events, want 2: %v", len(evs), evs)
	}
	del, up := evs[0], evs[1]
	if up.GetAction() != "/bootchain.artifactstore.v1.ArtifactService/Upload" || up.GetResource() != "debian/linux" ||
		up.GetOutcome() != "OK" || up.GetRevision() != uploadRev {
		t.Errorf("upload event %v, want revision %d", up, uploadRev)
	}
	if del.GetAction() != "/bootchain.artifactstore.v1.ArtifactService/Delete" || del.GetResource() != "debian/linux" ||
		del.GetOutcome() != "OK" || del.GetRevision() <= uploadRev {
		t.Errorf("delete event %v, want a revision after %d", del, uploadRev)
	}
}
