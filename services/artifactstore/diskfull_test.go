package artifactstore_test

import (
	"os"
	"os/exec"
	"strings"
	"testing"

	artifactv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/artifactstore/v1"
	"github.com/bootchain/bootchain/pkg/store/storetest"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestDiskFull uploads into a data dir on a 4 MiB tmpfs: the upload that does not fit
// fails with ResourceExhausted naming the full disk, leaves no temp file, and the
// artifacts stored before are still served whole.
func TestDiskFull(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting a small tmpfs needs root")
	}
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount tmpfs: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", dir).Run() })
	e := storetest.Start(t)
	in := start(t, e, opts{dir: dir})
	small := randBytes(t, 1<<20)
	mustUpload(t, in, "fits", small)

	_, err := upload(t.Context(), in.cli, &artifactv1.UploadHeader{Name: "too-big"}, randBytes(t, 8<<20))
	if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "disk full") {
		t.Fatalf("upload onto a full disk: %v, want ResourceExhausted: disk full", err)
	}
	for _, f := range blobFiles(t, in.dir) {
		if strings.HasPrefix(f, "tmp/") {
			t.Errorf("temp file left behind: %s", f)
		}
	}
	if _, err := in.cli.Stat(t.Context(), &artifactv1.StatRequest{Name: "too-big"}); status.Code(err) != codes.NotFound {
		t.Errorf("stat of the failed upload: %v, want NotFound", err)
	}
	resp, body := httpGet(t, in.base+"/artifacts/fits", nil)
	if resp.StatusCode != 200 || string(body) != string(small) {
		t.Fatalf("artifact stored before the disk filled: %d, %d bytes", resp.StatusCode, len(body))
	}
}
