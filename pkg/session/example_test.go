package session_test

import (
	"context"
	"fmt"
	"log"
	"os"

	"github.com/bootchain/bootchain/pkg/etcdembed"
	"github.com/bootchain/bootchain/pkg/session"
	"github.com/bootchain/bootchain/pkg/store"
)

// A service opens (or continues) the machine's session for each request and
// records what it did as a hop; another service finds the session by the
// machine's address.
func Example() {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dir, err := os.MkdirTemp("", "session-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	e, err := etcdembed.Start(ctx, etcdembed.Config{Dir: dir, ClientAddr: "127.0.0.1:0", PeerAddr: "127.0.0.1:0", UnsafeNoFsync: true})
	if err != nil {
		log.Fatal(err)
	}
	defer e.Close()
	st, err := store.Open(ctx, store.Config{Endpoints: e.Endpoints()})
	if err != nil {
		log.Fatal(err)
	}
	defer st.Close()

	rec, err := session.New(session.Config{Store: st, Service: "dhcpd", Site: "lab"})
	if err != nil {
		log.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- rec.Run(ctx) }()
	if err := rec.WaitReady(ctx); err != nil {
		log.Fatal(err)
	}

	s := rec.Open(ctx, "52:54:00:12:34:56", session.OpenOptions{IP: "198.18.0.10"})
	_, hop := s.StartHop(ctx, "dhcp.discover")
	hop.SetDetail("offer 198.18.0.10")
	hop.End()

	if err := rec.Flush(ctx); err != nil {
		log.Fatal(err)
	}
	found, _ := rec.FindByIP("198.18.0.10")
	bs, _ := rec.Get(ctx, found.GetMac())
	fmt.Println(bs.GetMac(), bs.GetState(), bs.GetHops()[0].GetName(), bs.GetHops()[0].GetDetail())
	cancel()
	<-done
	// Output: 52:54:00:12:34:56 SESSION_STATE_ACTIVE dhcp.discover offer 198.18.0.10
}
