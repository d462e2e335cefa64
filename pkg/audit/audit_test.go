package audit_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bootchain/bootchain/internal/testkit"
	"github.com/bootchain/bootchain/pkg/audit"
	"github.com/bootchain/bootchain/pkg/auth"
	"github.com/bootchain/bootchain/pkg/etcdembed"
	artifactv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/artifactstore/v1"
	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
	tftpdv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/tftpd/v1"
	"github.com/bootchain/bootchain/pkg/grpcclient"
	"github.com/bootchain/bootchain/pkg/grpcserver"
	"github.com/bootchain/bootchain/pkg/store"
	"github.com/bootchain/bootchain/pkg/store/storetest"
	"github.com/bootchain/bootchain/pkg/tlsconf"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
)

func TestMain(m *testing.M) { testkit.VerifyTestMain(m) }

// service is a real gRPC service whose writes go to etcd: tftpd's and
// artifactstore's APIs, implemented for the test.
type service struct {
	tftpdv1.UnimplementedTftpServiceServer
	artifactv1.UnimplementedArtifactServiceServer
	st *store.Store

	mu   sync.Mutex
	revs map[string]int64 // name -> revision of its last write
}

func (s *service) write(ctx context.Context, name string) error {
	if name == "forbidden" {
		return status.Error(codes.PermissionDenied, "site lab: not yours")
	}
	rev, err := s.st.Put(ctx, store.Key("test", name), &tftpdv1.CacheEntry{Name: name})
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.revs[name] = rev
	s.mu.Unlock()
	return nil
}

func (s *service) rev(name string) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.revs[name]
}

// EvictCacheEntry is IDEMPOTENT: a write.
func (s *service) EvictCacheEntry(ctx context.Context, req *tftpdv1.EvictCacheEntryRequest) (*tftpdv1.EvictCacheEntryResponse, error) {
	if err := s.write(ctx, req.GetName()); err != nil {
		return nil, err
	}
	return &tftpdv1.EvictCacheEntryResponse{}, nil
}

// ListCacheEntries is NO_SIDE_EFFECTS: a read.
func (s *service) ListCacheEntries(context.Context, *tftpdv1.ListCacheEntriesRequest) (*tftpdv1.ListCacheEntriesResponse, error) {
	return &tftpdv1.ListCacheEntriesResponse{}, nil
}

// Upload is a client stream whose first message names the artifact.
func (s *service) Upload(stream grpc.ClientStreamingServer[artifactv1.UploadRequest, artifactv1.UploadResponse]) error {
	var name string
	for {
		m, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		if h := m.GetHeader(); h != nil {
			name = h.GetName()
		}
	}
	if err := s.write(stream.Context(), name); err != nil {
		return err
	}
	return stream.SendAndClose(&artifactv1.UploadResponse{})
}

// quiet is the logger of the servers' authenticators.
var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// mint creates a real token named name with role in st, as `bootchain token
// create` would, for a client to present.
func mint(t testing.TB, st *store.Store, name string, role auth.Role) string {
	t.Helper()
	tok, _, err := auth.MintToken(context.Background(), st, auth.TokenSpec{Name: name, Role: role, CreatedBy: "audit_test"})
	if err != nil {
		t.Fatalf("mint %s token: %v", name, err)
	}
	return tok
}

// tokenID is the public id of the token string tok.
func tokenID(t testing.TB, tok string) string {
	t.Helper()
	id, _, err := auth.ParseToken(tok)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

type harness struct {
	st   *store.Store
	log  *audit.Log
	svc  *service
	conn *grpc.ClientConn
}

func start(t *testing.T, st *store.Store, cfg audit.Config) *harness {
	t.Helper()
	cfg.Store = st
	log, err := audit.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	svc := &service{st: st, revs: map[string]int64{}}
	srv, err := grpcserver.New(grpcserver.Config{Addr: "127.0.0.1:0", Auth: auth.NewAuthenticator(st, quiet), Audit: log, StopTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	tftpdv1.RegisterTftpServiceServer(srv.GRPC, svc)
	artifactv1.RegisterArtifactServiceServer(srv.GRPC, svc)
	run := testkit.Run(t, "grpc", srv.Serve)
	t.Cleanup(run.Stop)
	conn, err := grpcclient.Dial(srv.Addr().String(), tlsconf.Files{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &harness{st: st, log: log, svc: svc, conn: conn}
}

// as is a call context that presents the bearer token tok.
func as(tok string) context.Context {
	return metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+tok)
}

// events reads every stored event, oldest first.
func events(t *testing.T, st *store.Store) []*bootapiv1.AuditEvent {
	t.Helper()
	resp, err := st.Client().Get(context.Background(), audit.Prefix, clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	var out []*bootapiv1.AuditEvent
	for _, kv := range resp.Kvs {
		ev := &bootapiv1.AuditEvent{}
		if err := proto.Unmarshal(kv.Value, ev); err != nil {
			t.Fatal(err)
		}
		if kv.Lease == 0 {
			t.Errorf("event %s has no lease", kv.Key)
		}
		out = append(out, ev)
	}
	return out
}

// TestWriteRecorded checks that a write, unary or streamed, answers after one
// event that names who, what, from where, how it ended and the revision the
// write committed at; and that a read records nothing.
func TestWriteRecorded(t *testing.T) {
	h := start(t, storetest.New(t), audit.Config{})
	// tftp.write and artifacts.write are admin's.
	ciBot, uploader := mint(t, h.st, "ci-bot", auth.RoleAdmin), mint(t, h.st, "uploader", auth.RoleAdmin)
	tftp := tftpdv1.NewTftpServiceClient(h.conn)
	if _, err := tftp.ListCacheEntries(as(ciBot), &tftpdv1.ListCacheEntriesRequest{}); err != nil {
		t.Fatal(err)
	}
	if evs := events(t, h.st); len(evs) != 0 {
		t.Fatalf("a read recorded %v", evs)
	}
	if _, err := tftp.EvictCacheEntry(as(ciBot), &tftpdv1.EvictCacheEntryRequest{Name: "vmlinuz"}); err != nil {
		t.Fatal(err)
	}
	// Recorded before the answer: no waiting here.
	evs := events(t, h.st)
	if len(evs) != 1 {
		t.Fatalf("got %d events, want 1: %v", len(evs), evs)
	}
	ev := evs[0]
	want := &bootapiv1.AuditEvent{
		Identity: "token:ci-bot(admin)", Action: "/bootchain.tftpd.v1.TftpService/EvictCacheEntry",
		Resource: "vmlinuz", Outcome: "OK", Revision: h.svc.rev("vmlinuz"),
	}
	if ev.Identity != want.Identity || ev.Action != want.Action || ev.Resource != want.Resource ||
		ev.Outcome != want.Outcome || ev.Revision != want.Revision || want.Revision == 0 {
		t.Errorf("event %v, want %v", ev, want)
	}
	if !strings.HasPrefix(ev.Peer, "127.0.0.1:") || ev.Time == nil {
		t.Errorf("event peer %q time %v", ev.Peer, ev.Time)
	}

	up, err := artifactv1.NewArtifactServiceClient(h.conn).Upload(as(uploader))
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range []*artifactv1.UploadRequest{
		{Payload: &artifactv1.UploadRequest_Header{Header: &artifactv1.UploadHeader{Name: "ipxe.efi"}}},
		{Payload: &artifactv1.UploadRequest_Chunk{Chunk: []byte("MZ")}},
	} {
		if err := up.Send(m); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := up.CloseAndRecv(); err != nil {
		t.Fatal(err)
	}
	evs = events(t, h.st)
	if len(evs) != 2 {
		t.Fatalf("got %d events, want 2: %v", len(evs), evs)
	}
	ev = evs[1]
	if ev.Action != "/bootchain.artifactstore.v1.ArtifactService/Upload" || ev.Resource != "ipxe.efi" ||
		ev.Identity != "token:uploader(admin)" || ev.Revision != h.svc.rev("ipxe.efi") || ev.Outcome != "OK" {
		t.Errorf("upload event %v", ev)
	}
}

// TestDeniedRecorded checks that calls refused by authentication (a read among
// them, which would otherwise not be recorded), one refused by authorization (a
// viewer's write) and one refused by the handler's permission check each record
// one event with the refusal, naming what the caller presented and no secret.
func TestDeniedRecorded(t *testing.T) {
	h := start(t, storetest.New(t), audit.Config{})
	viewer, ciBot := mint(t, h.st, "viewer", auth.RoleViewer), mint(t, h.st, "ci-bot", auth.RoleAdmin)
	tftp := tftpdv1.NewTftpServiceClient(h.conn)
	_, err := tftp.EvictCacheEntry(context.Background(), &tftpdv1.EvictCacheEntryRequest{Name: "vmlinuz"})
	if status.Code(err) != codes.Unauthenticated {
		t.Fatalf("anonymous write: %v", err)
	}
	// A viewer may not write tftp: the authenticator refuses the call before
	// any identity is established, so the event names the token presented.
	_, err = tftp.EvictCacheEntry(as(viewer), &tftpdv1.EvictCacheEntryRequest{Name: "vmlinuz"})
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("viewer write: %v", err)
	}
	// An admin the handler refuses: the event names the authenticated identity.
	_, err = tftp.EvictCacheEntry(as(ciBot), &tftpdv1.EvictCacheEntryRequest{Name: "forbidden"})
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("forbidden write: %v", err)
	}
	// A well-formed token the server does not know: the event names its public
	// id only.
	secret := []byte("0123456789abcdef0123456789abcdef")
	unknown := auth.FormatToken("0123456789abcdef", secret)
	_, err = tftp.ListCacheEntries(as(unknown), &tftpdv1.ListCacheEntriesRequest{})
	if status.Code(err) != codes.Unauthenticated {
		t.Fatalf("unknown token: %v", err)
	}
	evs := events(t, h.st)
	if len(evs) != 4 {
		t.Fatalf("got %d events, want 4: %v", len(evs), evs)
	}
	for _, ev := range evs {
		text := prototext.Format(ev)
		for _, tok := range []string{viewer, ciBot, unknown} {
			if _, sec, _ := strings.Cut(strings.TrimPrefix(tok, "bct_"), "_"); strings.Contains(text, sec) {
				t.Errorf("event %v holds a token's secret", ev)
			}
		}
	}
	if ev := evs[0]; ev.Identity != audit.Anonymous || ev.Outcome != "Unauthenticated" || ev.Resource != "vmlinuz" || ev.Revision != 0 {
		t.Errorf("unauthenticated event %v", ev)
	}
	if ev := evs[1]; ev.Identity != "claimed:token/"+tokenID(t, viewer) || ev.Outcome != "PermissionDenied" ||
		ev.Resource != "vmlinuz" || ev.Revision != 0 || !strings.Contains(ev.Detail, "tftp.write") {
		t.Errorf("viewer's permission-denied event %v", ev)
	}
	if ev := evs[2]; ev.Identity != "token:ci-bot(admin)" || ev.Outcome != "PermissionDenied" || ev.Resource != "forbidden" ||
		ev.Revision != 0 || !strings.Contains(ev.Detail, "not yours") {
		t.Errorf("handler's permission-denied event %v", ev)
	}
	if ev := evs[3]; ev.Identity != "claimed:token/0123456789abcdef" || ev.Outcome != "Unauthenticated" ||
		ev.Action != "/bootchain.tftpd.v1.TftpService/ListCacheEntries" {
		t.Errorf("unknown-token event %v", ev)
	}
	if h.svc.rev("vmlinuz") != 0 {
		t.Errorf("a refused write reached the handler")
	}
}

// TestDeniedBounded checks that refusals, which anyone can cause, fill etcd no
// faster than the configured rate: past the burst they are counted, not written.
func TestDeniedBounded(t *testing.T) {
	h := start(t, storetest.New(t), audit.Config{DeniedBurst: 3, DeniedPerSecond: 0.001})
	tftp := tftpdv1.NewTftpServiceClient(h.conn)
	for range 10 {
		if _, err := tftp.EvictCacheEntry(context.Background(), &tftpdv1.EvictCacheEntryRequest{Name: "x"}); status.Code(err) != codes.Unauthenticated {
			t.Fatalf("anonymous write: %v", err)
		}
	}
	if evs := events(t, h.st); len(evs) != 3 {
		t.Fatalf("got %d events, want 3", len(evs))
	}
}

// TestRetention checks that an event expires with its lease after the retention
// period.
func TestRetention(t *testing.T) {
	st := storetest.New(t)
	log, err := audit.New(audit.Config{Store: st, Retention: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := log.Record(context.Background(), audit.Event{Action: audit.ActionDispatch, Resource: "52:54:00:00:00:01"}); err != nil {
		t.Fatal(err)
	}
	if n := len(events(t, st)); n != 1 {
		t.Fatalf("got %d events, want 1", n)
	}
	testkit.EventuallyWithin(t, 30*time.Second, "the event to expire", func() bool {
		resp, err := st.Client().Get(context.Background(), audit.Prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
		return err == nil && resp.Count == 0
	})
}

// TestConcurrentRecords checks that many concurrent events, more than one
// transaction holds and more than may wait at once, are each written once.
func TestConcurrentRecords(t *testing.T) {
	st := storetest.New(t)
	log, err := audit.New(audit.Config{Store: st, MaxPending: 50})
	if err != nil {
		t.Fatal(err)
	}
	const n = 300
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			errs <- log.Record(context.Background(), audit.Event{Action: "test", Resource: string(rune('a' + i%26))})
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if got := len(events(t, st)); got != n {
		t.Fatalf("got %d events, want %d", got, n)
	}
}

// TestUnauditedWriteIsNotOK checks that a write whose event cannot be written
// is not answered as a clean success: the caller gets Unavailable naming the
// revision the change was applied at.
func TestUnauditedWriteIsNotOK(t *testing.T) {
	st := storetest.New(t)
	dead, err := etcdembed.Start(context.Background(), etcdembed.Config{Dir: t.TempDir(), ClientAddr: "127.0.0.1:0", PeerAddr: "127.0.0.1:0", UnsafeNoFsync: true})
	if err != nil {
		t.Fatal(err)
	}
	closeDead := sync.OnceFunc(dead.Close)
	t.Cleanup(closeDead)
	auditStore, err := store.Open(context.Background(), store.Config{Endpoints: dead.Endpoints(), RequestTimeout: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { auditStore.Close() })
	ciBot := mint(t, st, "ci-bot", auth.RoleAdmin)
	log, err := audit.New(audit.Config{Store: auditStore, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	svc := &service{st: st, revs: map[string]int64{}}
	srv, err := grpcserver.New(grpcserver.Config{Addr: "127.0.0.1:0", Auth: auth.NewAuthenticator(st, quiet), Audit: log, StopTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	tftpdv1.RegisterTftpServiceServer(srv.GRPC, svc)
	run := testkit.Run(t, "grpc", srv.Serve)
	t.Cleanup(run.Stop)
	conn, err := grpcclient.Dial(srv.Addr().String(), tlsconf.Files{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	closeDead() // the audit log's etcd goes away; the state's stays

	_, err = tftpdv1.NewTftpServiceClient(conn).EvictCacheEntry(as(ciBot), &tftpdv1.EvictCacheEntryRequest{Name: "vmlinuz"})
	rev := svc.rev("vmlinuz")
	if status.Code(err) != codes.Unavailable || rev == 0 || !strings.Contains(err.Error(), fmt.Sprintf("revision %d", rev)) {
		t.Fatalf("unaudited write at revision %d answered %v, want Unavailable naming the revision", rev, err)
	}
}

// stallingKV fails the first audit transactions with Unavailable, unapplied,
// as etcd does while it elects a leader.
type stallingKV struct {
	clientv3.KV
	mu    sync.Mutex
	fails int
}

func (k *stallingKV) Txn(ctx context.Context) clientv3.Txn {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.fails > 0 {
		k.fails--
		return failedTxn{}
	}
	return k.KV.Txn(ctx)
}

type failedTxn struct{}

func (t failedTxn) If(...clientv3.Cmp) clientv3.Txn  { return t }
func (t failedTxn) Then(...clientv3.Op) clientv3.Txn { return t }
func (t failedTxn) Else(...clientv3.Op) clientv3.Txn { return t }
func (failedTxn) Commit() (*clientv3.TxnResponse, error) {
	return nil, status.Error(codes.Unavailable, "etcdserver: leader changed")
}

// TestRecordSurvivesElection: an event whose first writes fail while etcd has
// no leader is written by a later try, and Record reports it written.
func TestRecordSurvivesElection(t *testing.T) {
	st := storetest.New(t)
	kv := &stallingKV{KV: st.Client().KV, fails: 3}
	st.Client().KV = kv
	log, err := audit.New(audit.Config{Store: st})
	if err != nil {
		t.Fatal(err)
	}
	if err := log.Record(t.Context(), audit.Event{Action: audit.ActionDispatch, Resource: "52:54:00:00:00:01"}); err != nil {
		t.Fatalf("Record: %v", err)
	}
	if kv.fails != 0 {
		t.Fatalf("%d failures left: the faults did not happen", kv.fails)
	}
	if n := len(events(t, st)); n != 1 {
		t.Fatalf("got %d events, want 1", n)
	}
}
