package httpapi

import (
	"errors"
	"net"
	"os"
	"testing"
	"time"
)

// pair is a server-side progressConn and its client, over loopback TCP.
func pair(t *testing.T) (*progressConn, net.Conn) {
	t.Helper()
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	l := ProgressListener(raw, 0, nil)
	client, err := net.Dial("tcp", raw.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	c, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c.(*progressConn), client
}

// The read deadline asked for holds at the next Read: a deadline within
// readSlack after the one armed leaves it, an earlier one or none replaces it.
func TestReadDeadlineArmedOnRead(t *testing.T) {
	c, client := pair(t)
	buf := make([]byte, 16)

	c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if _, err := c.Read(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read past the deadline: %v, want a timeout", err)
	}

	// A busy keep-alive connection: idle timeouts microseconds apart.
	far := time.Now().Add(time.Hour)
	c.SetReadDeadline(far)
	client.Write([]byte("a"))
	if _, err := c.Read(buf); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(far.Add(readSlack / 2))
	client.Write([]byte("b"))
	if _, err := c.Read(buf); err != nil {
		t.Fatal(err)
	}
	if !c.armedR.Equal(far) {
		t.Errorf("deadline re-armed to %v for a move within the slack, want %v kept", c.armedR, far)
	}
	c.SetReadDeadline(far.Add(2 * readSlack))
	client.Write([]byte("c"))
	if _, err := c.Read(buf); err != nil {
		t.Fatal(err)
	}
	if !c.armedR.Equal(far.Add(2 * readSlack)) {
		t.Errorf("deadline %v after a move past the slack, want it re-armed", c.armedR)
	}

	// An earlier deadline is armed at once (the read timeout after an idle one).
	c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if _, err := c.Read(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read past an earlier deadline: %v, want a timeout", err)
	}

	// No deadline: the read waits for the data.
	c.SetReadDeadline(time.Time{})
	go func() {
		time.Sleep(100 * time.Millisecond)
		client.Write([]byte("d"))
	}()
	if n, err := c.Read(buf); err != nil || string(buf[:n]) != "d" {
		t.Fatalf("read without a deadline: %q %v", buf[:n], err)
	}
}
