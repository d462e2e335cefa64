package httpapi

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"
)

// TestConnDeadlineSlack checks the listener's read deadlines: a later deadline
// within DeadlineSlack of the armed one leaves it where it is, a later one past
// the slack and any earlier one are armed, and an armed deadline still ends a
// blocked read.
func TestConnDeadlineSlack(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	cl, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	nc, err := Listener(l).Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	c := nc.(*ipConn)
	if c.ip != "127.0.0.1" {
		t.Errorf("client address %q", c.ip)
	}

	base := time.Now().Add(time.Hour)
	for _, step := range []struct {
		set, want time.Time
	}{
		{base, base},
		{base.Add(DeadlineSlack / 2), base}, // within the slack: stays
		{base.Add(2 * DeadlineSlack), base.Add(2 * DeadlineSlack)}, // past it: armed
		{base, base}, // earlier: armed
		{time.Time{}, time.Time{}},
		{base, base},
	} {
		if err := c.SetReadDeadline(step.set); err != nil {
			t.Fatal(err)
		}
		if !c.armed.Equal(step.want) {
			t.Fatalf("after SetReadDeadline(%v): armed %v, want %v", step.set, c.armed, step.want)
		}
	}

	// Write deadlines (the server's WriteTimeout) keep the same slack.
	for _, step := range []struct {
		set, want time.Time
	}{
		{base, base},
		{base.Add(DeadlineSlack / 2), base},
		{base.Add(2 * DeadlineSlack), base.Add(2 * DeadlineSlack)},
		{base, base},
		{time.Time{}, time.Time{}},
	} {
		if err := c.SetWriteDeadline(step.set); err != nil {
			t.Fatal(err)
		}
		if !c.armedW.Equal(step.want) {
			t.Fatalf("after SetWriteDeadline(%v): armed %v, want %v", step.set, c.armedW, step.want)
		}
	}
	if c.addr != netip.MustParseAddr("127.0.0.1") {
		t.Errorf("client address key %v", c.addr)
	}

	// An earlier deadline ends a read that would otherwise wait an hour.
	if err := c.SetReadDeadline(time.Now().Add(50 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := c.Read(make([]byte, 1))
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("read ended with %v, want a deadline error", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the armed deadline did not end the read")
	}
}
