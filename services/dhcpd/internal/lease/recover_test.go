package lease

import (
	"context"
	"errors"
	"testing"

	dhcpdv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/dhcpd/v1"
	"github.com/bootchain/bootchain/pkg/store/storetest"
)

// A panic in a lease transaction fails that batch's writes (the clients
// retransmit); the writer keeps committing.
func TestWriterSurvivesPanic(t *testing.T) {
	st := storetest.New(t)
	ctx, cancel := context.WithCancel(context.Background())
	w := NewEtcdWriter(st, "lab", 2, 128)
	w.testHook = func(wr Write) {
		if wr.IP == "198.18.0.66" {
			panic("forced by the test")
		}
	}
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	defer func() { cancel(); <-done }()
	write := func(ip string) Result {
		return w.Write(ctx, Write{IP: ip, Lease: &dhcpdv1.Lease{Ip: ip, Mac: "52:54:00:00:00:01"}})
	}
	if r := write("198.18.0.66"); !errors.Is(r.Err, ErrPanic) {
		t.Fatalf("write that panicked: %v, want ErrPanic", r.Err)
	}
	if r := write("198.18.0.7"); r.Err != nil {
		t.Fatalf("write after the panic: %v", r.Err)
	}
	if _, err := st.Get(ctx, Key("lab", "198.18.0.7"), &dhcpdv1.Lease{}); err != nil {
		t.Fatalf("lease after the panic not written: %v", err)
	}
	if w.Panics.Load() != 1 {
		t.Fatalf("Panics = %d, want 1", w.Panics.Load())
	}
}
