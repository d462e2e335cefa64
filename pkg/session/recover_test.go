package session

import (
	"context"
	"log/slog"
	"slices"
	"testing"
	"time"

	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
	"github.com/bootchain/bootchain/pkg/store"
	"github.com/bootchain/bootchain/pkg/store/storetest"
)

// A panic while writing one machine's session loses that write only: the
// writer keeps running, Flush returns, and the next sessions are written.
func TestWriterSurvivesPanic(t *testing.T) {
	st := storetest.Start(t).Client(t)
	r, err := New(Config{Store: st, Service: "dhcpd", Site: "lab", Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	const bad, good = "52:54:00:00:00:66", "52:54:00:00:00:07"
	r.testHook = func(macs []string) {
		if slices.Contains(macs, bad) {
			panic("forced by the test")
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { r.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	if err := r.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	fctx, fcancel := context.WithTimeout(ctx, 30*time.Second)
	defer fcancel()

	r.Open(ctx, bad, OpenOptions{New: true})
	if err := r.Flush(fctx); err != nil {
		t.Fatalf("Flush after the panic: %v", err)
	}
	if got := r.Panics.Load(); got != 1 {
		t.Fatalf("Panics = %d, want 1", got)
	}
	r.Open(ctx, good, OpenOptions{New: true})
	if err := r.Flush(fctx); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Get(fctx, store.Key("sessions", good), &bootapiv1.BootSession{}); err != nil {
		t.Fatalf("session after the panic not written: %v", err)
	}
	if _, err := st.Get(fctx, store.Key("sessions", bad), &bootapiv1.BootSession{}); err == nil {
		t.Fatal("the panicked session was written")
	}
}
