package testkit

import (
	"context"
	"testing"

	"github.com/bootchain/bootchain/pkg/auth"
	"github.com/bootchain/bootchain/pkg/store"
)

// AdminToken mints an admin bearer token in the test's etcd, for a client that
// calls a service's gRPC API:
//
//	cc, err := grpcclient.Dial(addr, tlsconf.Files{}, grpcclient.WithToken(testkit.AdminToken(t, st)))
//
// Every server authenticates every call, and a token needs no server to mint it.
func AdminToken(t testing.TB, st *store.Store) string {
	t.Helper()
	return Token(t, st, auth.RoleAdmin)
}

// Token mints a token of role, limited to sites when any are given.
func Token(t testing.TB, st *store.Store, role auth.Role, sites ...string) string {
	t.Helper()
	tok, _, err := auth.MintToken(context.Background(), st, auth.TokenSpec{
		Name: "test-" + string(role), Role: role, Sites: sites, CreatedBy: "testkit",
	})
	if err != nil {
		t.Fatalf("mint %s token: %v", role, err)
	}
	return tok
}
