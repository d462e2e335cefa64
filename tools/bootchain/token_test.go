package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/bootchain/bootchain/pkg/auth"
	authv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/auth/v1"
	"github.com/bootchain/bootchain/pkg/store/storetest"
)

// TestTokenCreate mints a token straight into etcd, with no server running, and
// revokes it.
func TestTokenCreate(t *testing.T) {
	e := storetest.Start(t)
	st := e.Client(t)
	ep := strings.Join(e.Endpoints(), ",")
	var out, errb bytes.Buffer
	err := tokenCmd(context.Background(), []string{"create", "--etcd-endpoints", ep, "--name", "first-admin", "--role", "admin", "--sites", "a,b", "--ttl", "1h"}, &out, &errb)
	if err != nil {
		t.Fatalf("create: %v (%s)", err, errb.String())
	}
	id, secret, err := auth.ParseToken(strings.TrimSpace(out.String()))
	if err != nil {
		t.Fatalf("printed %q: %v", out.String(), err)
	}
	var rec authv1.Token
	if _, err := st.Get(context.Background(), auth.TokenKey(id), &rec); err != nil {
		t.Fatal(err)
	}
	if rec.GetRole() != "admin" || rec.GetName() != "first-admin" || len(rec.GetSites()) != 2 || rec.GetExpireTime() == nil ||
		!bytes.Equal(rec.GetSecretSha256(), auth.HashSecret(secret)) {
		t.Fatalf("stored %v", &rec)
	}
	if strings.Contains(errb.String(), out.String()[21:40]) {
		t.Fatal("the secret went to stderr")
	}
	for _, bad := range [][]string{
		{"create", "--etcd-endpoints", ep, "--name", "x", "--role", "root"},
		{"create", "--etcd-endpoints", ep, "--name", "", "--role", "admin"},
		{"revoke", "--etcd-endpoints", ep, "--id", "nothex"},
		{"list"},
	} {
		if err := tokenCmd(context.Background(), bad, &out, &errb); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	out.Reset()
	if err := tokenCmd(context.Background(), []string{"revoke", "--etcd-endpoints", ep, "--id", id}, &out, &errb); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Get(context.Background(), auth.TokenKey(id), &rec); err == nil {
		t.Fatal("revoked token still stored")
	}
}
