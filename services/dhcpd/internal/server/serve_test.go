package server

import (
	"context"
	"encoding/binary"
	"log/slog"
	"net"
	"testing"
	"time"
)

// TestPacerDeliversBacklogInOrder puts a backlog far above the burst into the
// pacer and checks that every reply reaches a real socket, in order, whether
// requests keep arriving (waking the pacer) or not (its timer does).
func TestPacerDeliversBacklogInOrder(t *testing.T) {
	for _, tc := range []struct {
		name     string
		burst    int
		arrivals bool
	}{{"unpaced", 0, false}, {"paced-timer", 16, false}, {"paced-arrivals", 16, true}} {
		t.Run(tc.name, func(t *testing.T) {
			rx, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
			if err != nil {
				t.Fatal(err)
			}
			defer rx.Close()
			_ = rx.SetReadBuffer(4 << 20)
			tx, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
			if err != nil {
				t.Fatal(err)
			}
			defer tx.Close()
			const n = 400
			out := make(chan *Reply, n)
			dst := rx.LocalAddr().(*net.UDPAddr).AddrPort()
			for i := 0; i < n; i++ {
				b := make([]byte, 300)
				binary.BigEndian.PutUint32(b, uint32(i))
				out <- &Reply{Data: b, Dst: dst}
			}
			close(out)
			var p *pacer
			if tc.burst > 0 {
				p = newPacer(tc.burst, paceHorizon)
			}
			h := New(Config{Logger: slog.New(slog.DiscardHandler)})
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if tc.arrivals {
				go func() {
					for ctx.Err() == nil {
						p.arrived()
						time.Sleep(20 * time.Microsecond)
					}
				}()
			}
			done := make(chan struct{})
			go func() { p.run(ctx, tx, out, h); close(done) }()
			buf := make([]byte, 1500)
			for i := 0; i < n; i++ {
				_ = rx.SetReadDeadline(time.Now().Add(10 * time.Second))
				m, _, err := rx.ReadFromUDPAddrPort(buf)
				if err != nil {
					t.Fatalf("reply %d: %v", i, err)
				}
				if got := binary.BigEndian.Uint32(buf[:m]); got != uint32(i) {
					t.Fatalf("reply %d arrived as number %d", i, got)
				}
			}
			<-done
		})
	}
}
