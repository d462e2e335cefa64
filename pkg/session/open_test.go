package session_test

import (
	"context"
	"testing"
	"time"

	"github.com/bootchain/bootchain/pkg/session"
	"github.com/bootchain/bootchain/pkg/store"
	"github.com/bootchain/bootchain/pkg/store/storetest"
)

// Open gives a machine asking again its current session, and a new one after
// the machine was forgotten (its session deleted in etcd) and came back; that
// new session is then kept, not replaced on every request.
func TestOpenAfterDelete(t *testing.T) {
	e := storetest.Start(t)
	st := e.Client(t)
	r := newRecorder(t, st, "bootapi", nil)
	ctx := context.Background()
	const mac, other = "52:54:00:12:34:60", "52:54:00:12:34:61"
	s1 := r.Open(ctx, mac, session.OpenOptions{})
	if again := r.Open(ctx, mac, session.OpenOptions{}); again != s1 {
		t.Fatalf("Open again: another session %s, want %s", again.TraceID(), s1.TraceID())
	}
	if o := r.Open(ctx, other, session.OpenOptions{}); o.MAC != other || o.TraceID() == s1.TraceID() {
		t.Fatalf("another MAC got this one's session: %s %s", o.MAC, o.TraceID())
	}

	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := r.Flush(wctx); err != nil {
		t.Fatal(err)
	}
	// Once the cache holds the write, the recorder drops its own copy (on a
	// read); the delete then leaves nothing of the machine to keep.
	resp, err := st.Client().Get(wctx, store.Prefix("sessions")+mac)
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("session not in etcd: %v", err)
	}
	if err := r.Cache().WaitRevision(wctx, resp.Header.Revision); err != nil {
		t.Fatal(err)
	}
	r.Get(ctx, mac)
	if _, err := st.Client().Delete(wctx, store.Prefix("sessions")+mac); err != nil {
		t.Fatal(err)
	}
	for {
		if _, ok := r.Get(ctx, mac); !ok {
			break
		}
		select {
		case <-wctx.Done():
			t.Fatal("deleted session still there")
		case <-time.After(10 * time.Millisecond):
		}
	}
	s2 := r.Open(ctx, mac, session.OpenOptions{})
	if s2.TraceID() == s1.TraceID() {
		t.Fatal("deleted session reused")
	}
	if s3 := r.Open(ctx, mac, session.OpenOptions{}); s3.TraceID() != s2.TraceID() {
		t.Fatalf("yet another session opened: %s after %s", s3.TraceID(), s2.TraceID())
	}
}
