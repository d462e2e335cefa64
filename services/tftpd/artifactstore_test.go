package tftpd_test

import (
	"bytes"
	"context"
	"testing"
	"time"

	artifactstorev1 "github.com/bootchain/bootchain/pkg/gen/bootchain/artifactstore/v1"
	"github.com/bootchain/bootchain/pkg/grpcclient"
	"github.com/bootchain/bootchain/pkg/store/storetest"
	"github.com/bootchain/bootchain/pkg/tlsconf"
	"github.com/bootchain/bootchain/services/artifactstore"
	"github.com/bootchain/bootchain/services/tftpd"
)

// realStore is the real artifactstore service, restartable on the same ports.
type realStore struct {
	t        *testing.T
	cfg      artifactstore.Config
	grpcAddr string
	stop     func()
}

func startRealStore(t *testing.T, e *storetest.Etcd) *realStore {
	t.Helper()
	cfg := artifactstore.DefaultConfig()
	cfg.HTTPAddr, cfg.GRPC.Addr = "127.0.0.1:0", "127.0.0.1:0"
	cfg.Store, cfg.DataDir, cfg.Logger = e.Client(t), t.TempDir(), testLogger(t)
	rs := &realStore{t: t, cfg: cfg}
	rs.start()
	t.Cleanup(func() { rs.stop() })
	return rs
}

func (rs *realStore) start() {
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
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	stopped := false
	rs.stop = func() {
		if !stopped {
			stopped = true
			cancel()
			<-done
		}
	}
}

func (rs *realStore) upload(name string, data []byte) {
	rs.t.Helper()
	cc, err := grpcclient.Dial(rs.grpcAddr, tlsconf.Files{})
	if err != nil {
		rs.t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// The server may still be starting: wait for it (bounded by ctx).
	stream, err := artifactstorev1.NewArtifactServiceClient(cc).Upload(ctx, grpcWaitForReady())
	if err != nil {
		rs.t.Fatal(err)
	}
	if err := stream.Send(&artifactstorev1.UploadRequest{Payload: &artifactstorev1.UploadRequest_Header{Header: &artifactstorev1.UploadHeader{Name: name}}}); err != nil {
		rs.t.Fatal(err)
	}
	for len(data) > 0 {
		n := min(len(data), 1<<20)
		if err := stream.Send(&artifactstorev1.UploadRequest{Payload: &artifactstorev1.UploadRequest_Chunk{Chunk: data[:n]}}); err != nil {
			break
		}
		data = data[n:]
	}
	if _, err := stream.CloseAndRecv(); err != nil {
		rs.t.Fatalf("upload %s: %v", name, err)
	}
}

// The real artifactstore: served through tftpd, stopped mid-test (tftpd serves from
// its cache), restarted (a new upload is picked up).
func TestRealArtifactstoreRestart(t *testing.T) {
	etcd := storetest.Start(t)
	rs := startRealStore(t, etcd)
	e := newEnvOn(t, etcd, rs.grpcAddr, func(c *tftpd.Config) { c.RefreshWait = 200 * time.Millisecond })
	efi := ipxeEFI(t)
	rs.upload("ipxe.efi", efi)
	mustGet(t, e.addr(), "ipxe.efi", efi)

	rs.stop()
	for _, bs := range []int{512, 1468} {
		got, _, err := get(e.addr(), "ipxe.efi", bs, true)
		if err != nil || !bytes.Equal(got, efi) {
			t.Fatalf("with artifactstore down, blksize %d: %v", bs, err)
		}
	}
	rs.start()
	v2 := randomBytes(t, 123_457)
	rs.upload("ipxe.efi", v2)
	waitFor(t, "the new upload through tftpd", 20*time.Second, func() bool {
		got, _, err := get(e.addr(), "ipxe.efi", 1468, false)
		return err == nil && bytes.Equal(got, v2)
	})
}
