package session_test

import (
	"context"
	"testing"
	"time"

	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
	"github.com/bootchain/bootchain/pkg/session"
	"github.com/bootchain/bootchain/pkg/store"
	"github.com/bootchain/bootchain/pkg/store/storetest"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// TestFindByIPNewestWins checks which session FindByIP and FromTraceparent
// find when sessions come and go in etcd (written by another replica) and in
// this process: of the sessions with an IP the one updated last, on a tie the
// lower MAC; a session opened here is found before etcd has it.
func TestFindByIPNewestWins(t *testing.T) {
	e := storetest.Start(t)
	st := e.Client(t)
	r := newRecorder(t, st, "tftpd", nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	base := time.Now().Add(-time.Minute)
	const a, b, c = "52:54:00:00:07:01", "52:54:00:00:07:02", "52:54:00:00:07:03"
	tp := map[string]string{
		a: "00-0000000000000000000000000007a001-00f067aa0ba902b7-01",
		b: "00-0000000000000000000000000007a002-00f067aa0ba902b7-01",
	}
	// put writes mac's session as another replica would and waits until the
	// recorder's cache has it.
	put := func(mac, ip string, updated time.Duration) {
		t.Helper()
		sc, err := session.Parse(tp[mac])
		if err != nil {
			t.Fatal(err)
		}
		rev, err := st.Put(ctx, store.Key("sessions", mac), &bootapiv1.BootSession{
			Mac: mac, TraceId: sc.TraceID().String(), Traceparent: tp[mac], Ip: ip,
			State: bootapiv1.SessionState_SESSION_STATE_ACTIVE, UpdateTime: timestamppb.New(base.Add(updated)),
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := r.Cache().WaitRevision(ctx, rev); err != nil {
			t.Fatal(err)
		}
	}
	remove := func(mac string) {
		t.Helper()
		resp, err := st.Client().Delete(ctx, store.Key("sessions", mac))
		if err != nil {
			t.Fatal(err)
		}
		if err := r.Cache().WaitRevision(ctx, resp.Header.Revision); err != nil {
			t.Fatal(err)
		}
	}
	expect := func(step, ip, want string) {
		t.Helper()
		got, ok := r.FindByIP(ip)
		if ok != (want != "") || got.GetMac() != want {
			t.Fatalf("%s: FindByIP(%s) = %q, %v; want %q", step, ip, got.GetMac(), ok, want)
		}
	}
	expectTrace := func(step, mac, want string) {
		t.Helper()
		if s, ok := r.FromTraceparent(tp[mac], ""); !ok || s.MAC != want {
			t.Fatalf("%s: FromTraceparent(%s's) found %q, want %q", step, mac, s.MAC, want)
		}
	}

	put(a, "198.18.7.1", 0)
	put(b, "198.18.7.1", 0)
	expect("a tie", "198.18.7.1", a)
	put(b, "198.18.7.1", time.Second)
	expect("b updated later", "198.18.7.1", b)
	expectTrace("b put", b, b)
	put(b, "198.18.7.2", 2*time.Second)
	expect("b moved: the old address", "198.18.7.1", a)
	expect("b moved: the new address", "198.18.7.2", b)
	remove(a)
	expect("a deleted", "198.18.7.1", "")
	expectTrace("a deleted", a, "")
	expectTrace("b still there", b, b)

	s := r.Open(ctx, c, session.OpenOptions{New: true, IP: "198.18.7.2"})
	expect("c opened here, not yet written", "198.18.7.2", c)
	tp[c] = s.Traceparent()
	expectTrace("c opened here", c, c)
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	expect("c written", "198.18.7.2", c)
	remove(c)
	expect("c deleted", "198.18.7.2", b)
	remove(b)
	expect("all deleted", "198.18.7.2", "")
	expect("no address", "", "")
}
