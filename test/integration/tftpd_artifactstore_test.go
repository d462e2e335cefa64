package integration

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/bootchain/bootchain/internal/testkit"
	"github.com/bootchain/bootchain/pkg/auth"
	artifactstorev1 "github.com/bootchain/bootchain/pkg/gen/bootchain/artifactstore/v1"
	"github.com/bootchain/bootchain/pkg/grpcclient"
	"github.com/bootchain/bootchain/pkg/store/storetest"
	"github.com/bootchain/bootchain/pkg/tlsconf"
	"github.com/bootchain/bootchain/services/artifactstore"
	"github.com/bootchain/bootchain/services/tftpd"
	"github.com/pin/tftp/v3"
	"google.golang.org/grpc"
)

// The real artifactstore behind tftpd: served through tftpd, stopped mid-test
// (tftpd serves from its cache), restarted on the same ports (a new upload is
// picked up).
func TestTftpdRidesOutArtifactstoreRestart(t *testing.T) {
	etcd := storetest.Start(t)
	rs := startArtifactstore(t, etcd)

	cfg := tftpd.DefaultConfig()
	cfg.Addr, cfg.GRPC.Addr, cfg.ArtifactStore, cfg.HTTPAddr = "127.0.0.1:0", "127.0.0.1:0", rs.grpcAddr, "-"
	cfg.DataDir, cfg.Store, cfg.Logger = t.TempDir(), etcd.Client(t), discard()
	cfg.ArtifactStoreToken = testkit.Token(t, cfg.Store, auth.RoleService)
	cfg.Timeout, cfg.Retries = 200*time.Millisecond, 5
	cfg.Warm, cfg.RefreshWait = false, 200*time.Millisecond
	srv, err := tftpd.New(cfg)
	if err != nil {
		t.Fatalf("tftpd.New: %v", err)
	}
	testkit.Run(t, "tftpd", srv.Run)
	addr := srv.Addr().String()

	v1 := randomBytes(t, 1<<20+12345)
	rs.upload("ipxe.efi", v1, "")
	if got, err := get(addr, "ipxe.efi", 1468); err != nil || !bytes.Equal(got, v1) {
		t.Fatalf("get ipxe.efi: %d bytes, %v", len(got), err)
	}

	rs.svc.Stop()
	for _, bs := range []int{512, 1468} {
		if got, err := get(addr, "ipxe.efi", bs); err != nil || !bytes.Equal(got, v1) {
			t.Fatalf("with artifactstore down, blksize %d: %d bytes, %v", bs, len(got), err)
		}
	}
	rs.start()
	v2 := randomBytes(t, 123_457)
	v1sum := sha256.Sum256(v1)
	rs.upload("ipxe.efi", v2, hex.EncodeToString(v1sum[:])) // replacing names what it replaces
	testkit.Eventually(t, "the new upload through tftpd", func() bool {
		got, err := get(addr, "ipxe.efi", 1468)
		return err == nil && bytes.Equal(got, v2)
	})
}

// artifactstoreRig is the real artifactstore service, restartable on the same
// gRPC port.
type artifactstoreRig struct {
	t        *testing.T
	cfg      artifactstore.Config
	grpcAddr string
	svc      *testkit.Service
}

func startArtifactstore(t *testing.T, e *storetest.Etcd) *artifactstoreRig {
	t.Helper()
	cfg := artifactstore.DefaultConfig()
	cfg.HTTPAddr, cfg.GRPC.Addr = "127.0.0.1:0", "127.0.0.1:0"
	cfg.Store, cfg.DataDir, cfg.Logger = e.Client(t), t.TempDir(), discard()
	rs := &artifactstoreRig{t: t, cfg: cfg}
	rs.start()
	return rs
}

func (rs *artifactstoreRig) start() {
	rs.t.Helper()
	cfg := rs.cfg
	if rs.grpcAddr != "" {
		cfg.GRPC.Addr = rs.grpcAddr
	}
	srv, err := artifactstore.New(cfg)
	if err != nil {
		rs.t.Fatalf("artifactstore.New: %v", err)
	}
	rs.grpcAddr = srv.GRPCAddr().String()
	rs.svc = testkit.Run(rs.t, "artifactstore", srv.Run)
	testkit.WaitHTTP(rs.t, "http://"+srv.HTTPAddr().String()+"/healthz")
}

func (rs *artifactstoreRig) upload(name string, data []byte, replaces string) {
	rs.t.Helper()
	cc, err := grpcclient.Dial(rs.grpcAddr, tlsconf.Files{}, grpcclient.WithToken(testkit.AdminToken(rs.t, rs.cfg.Store)))
	if err != nil {
		rs.t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), testkit.Wait)
	defer cancel()
	stream, err := artifactstorev1.NewArtifactServiceClient(cc).Upload(ctx, grpc.WaitForReady(true))
	if err != nil {
		rs.t.Fatal(err)
	}
	if err := stream.Send(&artifactstorev1.UploadRequest{Payload: &artifactstorev1.UploadRequest_Header{Header: &artifactstorev1.UploadHeader{Name: name, ReplacesSha256: replaces}}}); err != nil {
		rs.t.Fatal(err)
	}
	for len(data) > 0 {
		n := min(len(data), 1<<20)
		if err := stream.Send(&artifactstorev1.UploadRequest{Payload: &artifactstorev1.UploadRequest_Chunk{Chunk: data[:n]}}); err != nil {
			break // the server ended the stream: CloseAndRecv says why
		}
		data = data[n:]
	}
	if _, err := stream.CloseAndRecv(); err != nil {
		rs.t.Fatalf("upload %s: %v", name, err)
	}
}

// get downloads file from a TFTP server with pin/tftp's client.
func get(addr, file string, blksize int) ([]byte, error) {
	c, err := tftp.NewClient(addr)
	if err != nil {
		return nil, err
	}
	c.SetTimeout(150 * time.Millisecond)
	c.SetRetries(10)
	c.SetBackoff(func(int) time.Duration { return 0 })
	c.SetBlockSize(blksize)
	wt, err := c.Receive(file, "octet")
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	_, err = wt.WriteTo(&buf)
	return buf.Bytes(), err
}

func randomBytes(t testing.TB, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// discard logs nothing unless the tests run with -v.
func discard() *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}
