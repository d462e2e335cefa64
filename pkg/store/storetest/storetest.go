// Package storetest starts a real embedded etcd for tests.
package storetest

import (
	"context"
	"testing"

	"github.com/bootchain/bootchain/pkg/etcdembed"
	"github.com/bootchain/bootchain/pkg/store"
)

// Etcd is an embedded etcd started for one test.
type Etcd struct {
	*etcdembed.Etcd
	Dir string
}

// Start runs an embedded etcd in t.TempDir on free loopback ports; it stops when the
// test ends.
func Start(t testing.TB) *Etcd {
	t.Helper()
	dir := t.TempDir()
	e, err := etcdembed.Start(context.Background(), etcdembed.Config{
		Dir: dir, ClientAddr: "127.0.0.1:0", PeerAddr: "127.0.0.1:0", UnsafeNoFsync: true,
	})
	if err != nil {
		t.Fatalf("embedded etcd: %v", err)
	}
	t.Cleanup(e.Close)
	return &Etcd{Etcd: e, Dir: dir}
}

// Client opens a Store on e, closed when the test ends.
func (e *Etcd) Client(t testing.TB) *store.Store {
	t.Helper()
	st, err := store.Open(context.Background(), store.Config{Endpoints: e.Endpoints()})
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// InProcess returns a Store that calls e in-process (etcdembed.Etcd.Store), as
// the all-in-one launcher's services do.
func (e *Etcd) InProcess(t testing.TB) *store.Store {
	t.Helper()
	st := e.Store(0)
	t.Cleanup(func() { st.Close() })
	return st
}

// New starts an embedded etcd and returns a Store on it.
func New(t testing.TB) *store.Store {
	t.Helper()
	return Start(t).Client(t)
}
