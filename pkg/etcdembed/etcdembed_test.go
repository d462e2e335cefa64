package etcdembed

import (
	"context"
	"net"
	"strings"
	"testing"
)

// A port picked for etcd can be taken by someone else before etcd binds it;
// Start then picks again instead of failing.
func TestStartRetriesPickedPortInUse(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()

	real := pickPort
	t.Cleanup(func() { pickPort = real })
	calls := 0
	pickPort = func(host string) (string, error) {
		calls++
		if calls == 1 { // the first client port handed out is already taken
			return busy.Addr().String(), nil
		}
		return real(host)
	}

	e, err := Start(context.Background(), Config{
		Dir: t.TempDir(), ClientAddr: "127.0.0.1:0", PeerAddr: "127.0.0.1:0", UnsafeNoFsync: true,
	})
	if err != nil {
		t.Fatalf("Start with a busy picked port: %v", err)
	}
	defer e.Close()
	if calls < 4 {
		t.Fatalf("pickPort called %d times, want a second pick of both ports", calls)
	}
	if ep := e.Endpoints()[0]; ep == busy.Addr().String() {
		t.Fatalf("etcd reports the busy endpoint %s", ep)
	}

	// A fixed port that is in use is the caller's choice: no retry, a clear error.
	calls = 0
	pickPort = func(host string) (string, error) { calls++; return real(host) }
	_, err = Start(context.Background(), Config{
		Dir: t.TempDir(), ClientAddr: busy.Addr().String(), PeerAddr: "127.0.0.1:0", UnsafeNoFsync: true,
	})
	if err == nil || !addrInUse(err) {
		t.Fatalf("fixed busy client port: err = %v, want address in use", err)
	}
	if calls != 1 {
		t.Fatalf("fixed busy client port: pickPort called %d times, want 1 (no retry)", calls)
	}
}

// The embedded etcd has no TLS and no authentication: its listeners stay on
// loopback unless the caller asks otherwise.
func TestListenersStayOnLoopback(t *testing.T) {
	for _, c := range []struct{ client, peer string }{
		{"0.0.0.0:0", "127.0.0.1:0"},
		{":0", "127.0.0.1:0"},
		{"127.0.0.1:0", "198.18.0.1:0"},
		{"[::]:0", "127.0.0.1:0"},
		{"etcd.example:0", "127.0.0.1:0"},
	} {
		_, err := Start(context.Background(), Config{Dir: t.TempDir(), ClientAddr: c.client, PeerAddr: c.peer, UnsafeNoFsync: true})
		if err == nil || !strings.Contains(err.Error(), "not on loopback") {
			t.Errorf("client %s peer %s: %v", c.client, c.peer, err)
		}
		if err := checkLoopback(Config{ClientAddr: c.client, PeerAddr: c.peer, AllowNonLoopback: true}); err != nil {
			t.Errorf("client %s peer %s, allowed: %v", c.client, c.peer, err)
		}
	}
	for _, ok := range []string{"127.0.0.1:2379", "[::1]:2379", "localhost:2379", "127.0.0.53:0"} {
		if err := checkLoopback(Config{ClientAddr: ok, PeerAddr: "127.0.0.1:2380"}); err != nil {
			t.Errorf("%s: %v", ok, err)
		}
	}
}
