package artifactstore_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bootchain/bootchain/internal/testkit"
	artifactv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/artifactstore/v1"
	"github.com/bootchain/bootchain/pkg/grpcclient"
	"github.com/bootchain/bootchain/pkg/store"
	"github.com/bootchain/bootchain/pkg/store/storetest"
	"github.com/bootchain/bootchain/pkg/tlsconf"
	"github.com/bootchain/bootchain/services/artifactstore"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

const crashChildEnv = "ARTIFACTSTORE_CRASH_CHILD"

// TestCrashChild is the artifactstore process TestCrashMidUpload kills; it does
// nothing in a normal run.
func TestCrashChild(t *testing.T) {
	spec := os.Getenv(crashChildEnv)
	if spec == "" {
		t.Skip("only runs as the child of TestCrashMidUpload")
	}
	endpoint, dir, _ := strings.Cut(spec, ",")
	st, err := store.Open(context.Background(), store.Config{Endpoints: []string{endpoint}})
	if err != nil {
		t.Fatal(err)
	}
	cfg := artifactstore.DefaultConfig()
	cfg.HTTPAddr, cfg.GRPC.Addr, cfg.DataDir, cfg.Store = "127.0.0.1:0", "127.0.0.1:0", dir, st
	srv, err := artifactstore.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Printf("GRPC %s\n", srv.GRPCAddr())
	srv.Run(context.Background()) // until killed
}

// TestCrashMidUpload kills an artifactstore process (SIGKILL) in the middle of an
// upload that replaces an artifact, restarts one on the same data dir, and checks
// that the old content is still what is served, the partial upload is gone from
// disk, and no metadata points at it.
func TestCrashMidUpload(t *testing.T) {
	e := storetest.Start(t)
	dir := t.TempDir()
	first := start(t, e, opts{dir: dir})
	old := mustUpload(t, first, "k", []byte("old kernel"))

	cmd := exec.Command(os.Args[0], "-test.run", "^TestCrashChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashChildEnv+"="+e.Endpoints()[0]+","+dir)
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	sc := bufio.NewScanner(stdout)
	var addr string
	for sc.Scan() {
		if a, ok := strings.CutPrefix(sc.Text(), "GRPC "); ok {
			addr = a
			break
		}
	}
	if addr == "" {
		t.Fatal("child did not start")
	}
	go func() {
		for sc.Scan() {
		}
	}()
	cc, err := grpcclient.Dial(addr, tlsconf.Files{}, grpcclient.WithToken(testkit.AdminToken(t, e.Client(t))))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	stream, err := artifactv1.NewArtifactServiceClient(cc).Upload(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	stream.Send(&artifactv1.UploadRequest{Payload: &artifactv1.UploadRequest_Header{Header: &artifactv1.UploadHeader{Name: "k", ReplacesSha256: old.GetSha256()}}})
	stream.Send(&artifactv1.UploadRequest{Payload: &artifactv1.UploadRequest_Chunk{Chunk: randBytes(t, 1<<20)}})
	tmp := filepath.Join(dir, "tmp")
	testkit.Eventually(t, "the upload's temp file", func() bool {
		ents, _ := os.ReadDir(tmp)
		for _, e := range ents {
			if fi, err := e.Info(); err == nil && fi.Size() > 0 {
				return true
			}
		}
		return false
	})
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	if ents, _ := os.ReadDir(tmp); len(ents) == 0 {
		t.Fatal("the crash left no temp file: the test did not crash mid-upload")
	}

	// A restart on the same data dir removes the partial upload.
	second := start(t, e, opts{dir: dir})
	if ents, _ := os.ReadDir(tmp); len(ents) != 0 {
		t.Errorf("temp files after restart: %v", ents)
	}
	st, err := second.cli.Stat(context.Background(), &artifactv1.StatRequest{Name: "k"})
	if err != nil || st.GetArtifact().GetSha256() != old.GetSha256() {
		t.Fatalf("after crash: %v %v", st, err)
	}
	resp, body := httpGet(t, second.base+"/artifacts/k", nil)
	if resp.StatusCode != 200 || string(body) != "old kernel" {
		t.Errorf("after crash: %d %q", resp.StatusCode, body)
	}
	if _, err := second.cli.Stat(context.Background(), &artifactv1.StatRequest{Name: "other"}); status.Code(err) != codes.NotFound {
		t.Errorf("stat: %v", err)
	}
	if files := blobFiles(t, dir); len(files) != 1 {
		t.Errorf("files on disk: %v", files)
	}
}
