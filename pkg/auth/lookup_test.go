package auth_test

import (
	"context"
	"testing"

	"github.com/bootchain/bootchain/pkg/auth"
	"github.com/bootchain/bootchain/pkg/store/storetest"
	"google.golang.org/grpc/metadata"
)

// TestFreshTokenBurst: a client that starts with a token minted a moment ago,
// before this server's cache has it, is not refused for sending more calls at
// once than the bound on etcd reads of unknown ids. Without the cache running
// every lookup misses it, as in the first moments after a mint.
func TestFreshTokenBurst(t *testing.T) {
	st := storetest.New(t)
	tok, _, err := auth.MintToken(context.Background(), st, auth.TokenSpec{Name: "ci", Role: auth.RoleOperator, CreatedBy: "test"})
	if err != nil {
		t.Fatal(err)
	}
	a := auth.NewAuthenticator(st, nil)
	ctx := metadata.NewIncomingContext(context.Background(), metadata.Pairs("authorization", "Bearer "+tok))
	for i := range 200 {
		id, err := a.Authenticate(ctx)
		if err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
		if id.Name != "ci" || id.Role != auth.RoleOperator {
			t.Fatalf("call %d: identity %v", i, id)
		}
	}
	// A made-up id is still refused, and costs no memory.
	bad := metadata.NewIncomingContext(context.Background(), metadata.Pairs("authorization", "Bearer bct_0123456789abcdef_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"))
	if _, err := a.Authenticate(bad); err == nil {
		t.Fatal("a made-up token was accepted")
	}
}
