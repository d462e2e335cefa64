package grpcserver_test

import (
	"context"
	"flag"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bootchain/bootchain/internal/testkit"
	"github.com/bootchain/bootchain/pkg/auth"
	tftpv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/tftpd/v1"
	"github.com/bootchain/bootchain/pkg/grpcclient"
	"github.com/bootchain/bootchain/pkg/grpcserver"
	"github.com/bootchain/bootchain/pkg/store"
	"github.com/bootchain/bootchain/pkg/store/storetest"
	"github.com/bootchain/bootchain/pkg/tlsconf"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

// tftpAdmin is a TftpService whose EvictCacheEntry (tftp.write) counts the
// calls that reached it and whose GetTransferStats (tftp.read) panics.
type tftpAdmin struct {
	tftpv1.UnimplementedTftpServiceServer
	evicts atomic.Int32
}

func (s *tftpAdmin) EvictCacheEntry(ctx context.Context, _ *tftpv1.EvictCacheEntryRequest) (*tftpv1.EvictCacheEntryResponse, error) {
	if _, ok := auth.FromContext(ctx); !ok {
		return nil, status.Error(codes.Internal, "handler got no identity")
	}
	s.evicts.Add(1)
	return &tftpv1.EvictCacheEntryResponse{}, nil
}

func (s *tftpAdmin) GetTransferStats(context.Context, *tftpv1.GetTransferStatsRequest) (*tftpv1.GetTransferStatsResponse, error) {
	panic("boom")
}

func serveTFTP(t *testing.T, st *store.Store) (string, *tftpAdmin) {
	t.Helper()
	s, err := grpcserver.New(grpcserver.Config{Addr: "127.0.0.1:0", StopTimeout: time.Second, Auth: auth.NewAuthenticator(st, nil)})
	if err != nil {
		t.Fatal(err)
	}
	impl := &tftpAdmin{}
	tftpv1.RegisterTftpServiceServer(s.GRPC, impl)
	testkit.Run(t, "grpc", s.Serve)
	return s.Addr().String(), impl
}

func evict(t *testing.T, addr, token string) error {
	t.Helper()
	cc, err := grpcclient.Dial(addr, tlsconf.Files{}, grpcclient.WithToken(token))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err = tftpv1.NewTftpServiceClient(cc).EvictCacheEntry(ctx, &tftpv1.EvictCacheEntryRequest{})
	return err
}

// TestAttacks: each credential an attacker might try fails with the right code, says
// which credential was wrong without echoing a secret, and never reaches the
// handler.
func TestAttacks(t *testing.T) {
	st := storetest.New(t)
	addr, impl := serveTFTP(t, st)
	admin := testkit.AdminToken(t, st)
	if err := evict(t, addr, admin); err != nil {
		t.Fatalf("admin: %v", err)
	}
	reached := impl.evicts.Load()

	garbage := "bct_0123456789abcdef_" + strings.Repeat("A", 43)
	expiredTok, rec, err := auth.NewToken(auth.TokenSpec{Name: "old", Role: auth.RoleAdmin, TTL: time.Hour}, time.Now().Add(-2*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Create(context.Background(), auth.TokenKey(rec.GetId()), rec); err != nil {
		t.Fatal(err)
	}
	_, wrongSecret, _ := auth.ParseToken(admin)
	wrongSecret[0] ^= 1
	adminID, _, _ := auth.ParseToken(admin)
	viewer := testkit.Token(t, st, auth.RoleViewer)
	service := testkit.Token(t, st, auth.RoleService)

	for _, c := range []struct {
		name, token string
		code        codes.Code
		says        string
	}{
		{"no credential", "", codes.Unauthenticated, "no credential"},
		{"not a token", "hunter2-password-that-is-long", codes.Unauthenticated, "malformed bearer token"},
		{"unknown token", garbage, codes.Unauthenticated, "unknown, revoked"},
		{"wrong secret", auth.FormatToken(adminID, wrongSecret), codes.Unauthenticated, "unknown, revoked or wrong secret"},
		{"expired token", expiredTok, codes.Unauthenticated, "expired"},
		{"viewer writes", viewer, codes.PermissionDenied, "needs permission tftp.write, which role viewer does not grant"},
		{"service writes", service, codes.PermissionDenied, "role service"},
	} {
		err := evict(t, addr, c.token)
		if status.Code(err) != c.code || !strings.Contains(err.Error(), c.says) {
			t.Errorf("%s: %v; want %s saying %q", c.name, err, c.code, c.says)
		}
		if c.token != "" && len(c.token) > 20 && strings.Contains(err.Error(), c.token[20:]) {
			t.Errorf("%s: the error echoes the secret: %v", c.name, err)
		}
	}
	if got := impl.evicts.Load(); got != reached {
		t.Fatalf("refused calls reached the handler %d times", got-reached)
	}

	// Revocation takes effect without a restart: the servers watch the tokens.
	if err := auth.RevokeToken(context.Background(), st, adminID); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, "the revoked token to be refused", func() bool {
		return status.Code(evict(t, addr, admin)) == codes.Unauthenticated
	})
}

func TestHealthOpenAndPanicRecovered(t *testing.T) {
	st := storetest.New(t)
	addr, _ := serveTFTP(t, st)
	cc, err := grpcclient.Dial(addr, tlsconf.Files{}, grpcclient.WithToken(testkit.Token(t, st, auth.RoleViewer)))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err = tftpv1.NewTftpServiceClient(cc).GetTransferStats(ctx, &tftpv1.GetTransferStatsRequest{})
	if status.Code(err) != codes.Internal || strings.Contains(err.Error(), "boom") {
		t.Fatalf("panicking handler: %v; want Internal without the panic's text", err)
	}
	// The process survived: health answers, and without any credential.
	plain, err := grpcclient.Dial(addr, tlsconf.Files{})
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	if r, err := healthpb.NewHealthClient(plain).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil || r.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health after a panic, no credential: %v %v", r, err)
	}
}

func TestPlaintextRule(t *testing.T) {
	a := auth.NewAuthenticator(storetest.New(t), nil)
	_, err := grpcserver.New(grpcserver.Config{Addr: ":0", Auth: a})
	if err == nil || !strings.Contains(err.Error(), "insecure-plaintext") {
		t.Fatalf("plaintext on all interfaces: %v; want a refusal naming the flag", err)
	}
	s, err := grpcserver.New(grpcserver.Config{Addr: "[::1]:0", Auth: a})
	if err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	s.Close()

	// The client refuses to put a token on the wire in clear, off loopback.
	tok := grpcclient.WithToken("bct_0123456789abcdef_" + strings.Repeat("A", 43))
	if _, err := grpcclient.Dial("198.18.0.1:9080", tlsconf.Files{}, tok); err == nil || !strings.Contains(err.Error(), "plaintext") {
		t.Fatalf("token in plaintext off loopback: %v", err)
	}
	for _, addr := range []string{"127.0.0.1:9080", "localhost:9080", "[::1]:9080", "dns:///localhost:9080"} {
		cc, err := grpcclient.Dial(addr, tlsconf.Files{}, tok)
		if err != nil {
			t.Errorf("token in plaintext to %s: %v", addr, err)
			continue
		}
		cc.Close()
	}
}

func TestInsecurePlaintextFlag(t *testing.T) {
	var cfg grpcserver.Config
	fs := newFlagSet()
	cfg.AddFlags(fs, "bootapi-grpc-")
	if err := fs.Parse([]string{"--bootapi-grpc-insecure-plaintext"}); err != nil || !cfg.InsecurePlaintext {
		t.Fatalf("flag: %v %v", err, cfg.InsecurePlaintext)
	}
}

func newFlagSet() *flag.FlagSet { return flag.NewFlagSet("t", flag.ContinueOnError) }
