package session

import (
	"context"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
	"github.com/bootchain/bootchain/pkg/store"
	"github.com/bootchain/bootchain/pkg/store/storetest"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// runRecorder starts a recorder whose etcd calls first see fault (nil: none).
func runRecorder(t *testing.T, fault func() error) (*Recorder, *store.Store) {
	t.Helper()
	st := storetest.Start(t).Client(t)
	r, err := New(Config{Store: st, Service: "tftpd", Site: "lab", Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	r.faultHook = fault
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { r.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	if err := r.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	return r, st
}

// A session and its hop written while etcd elects a leader (its calls fail with
// Unavailable, as etcd's "no leader" does) are written once it has one: the
// writer tries again within its budget instead of losing them.
func TestWriterRetriesThroughElection(t *testing.T) {
	var fails atomic.Int32
	fails.Store(4)
	r, st := runRecorder(t, func() error {
		if fails.Add(-1) >= 0 {
			return status.Error(codes.Unavailable, "etcdserver: no leader")
		}
		return nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const mac = "52:54:00:00:00:31"
	s := r.Open(ctx, mac, OpenOptions{New: true})
	_, h := s.StartHop(ctx, "tftp")
	h.End()
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if got := r.Retries.Load(); got < 4 {
		t.Errorf("Retries = %d, want at least the 4 failed calls", got)
	}
	if _, err := st.Get(ctx, store.Key("sessions", mac), &bootapiv1.BootSession{}); err != nil {
		t.Errorf("session not written after the election: %v", err)
	}
	resp, err := st.Client().Get(ctx, hopPrefix(mac, s.TraceID()), clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	if resp.Count != 1 {
		t.Errorf("%d hops in etcd, want 1", resp.Count)
	}
}

// An error that is not etcd's transient kind is not tried again.
func TestWriterNoRetryOnPermanentError(t *testing.T) {
	r, _ := runRecorder(t, func() error { return status.Error(codes.InvalidArgument, "etcdserver: request is too large") })
	if err := r.retryEtcd(context.Background(), func() error { return nil }); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("retryEtcd = %v, want the InvalidArgument error", err)
	}
	if got := r.Retries.Load(); got != 0 {
		t.Errorf("Retries = %d, want 0", got)
	}
}
