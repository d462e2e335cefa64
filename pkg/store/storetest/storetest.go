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

// Restart stops e and starts it again on the same data and addresses: etcd
// is unreachable in between, as for a site cut off from the core (pass a
// function to run while it is down). The restarted etcd stops when the test
// ends.
func (e *Etcd) Restart(t testing.TB, whileDown func()) {
	t.Helper()
	client, peer := e.Endpoints()[0], e.PeerAddr()
	e.Etcd.Close()
	if whileDown != nil {
		whileDown()
	}
	n, err := etcdembed.Start(context.Background(), etcdembed.Config{
		Dir: e.Dir, ClientAddr: client, PeerAddr: peer, UnsafeNoFsync: true,
	})
	if err != nil {
		t.Fatalf("embedded etcd restart: %v", err)
	}
	e.Etcd = n
	t.Cleanup(n.Close)
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
