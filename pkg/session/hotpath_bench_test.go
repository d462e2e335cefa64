package session_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/bootchain/bootchain/pkg/session"
	"github.com/bootchain/bootchain/pkg/store/storetest"
)

// BenchmarkHotPaths measures what every DHCP packet and HTTP request costs the
// recorder: continuing a session and a hop folded into a repeat.
func BenchmarkHotPaths(b *testing.B) {
	const machines = 1000
	r, err := session.New(session.Config{Store: storetest.New(b), Service: "bootapi", Site: "lab"})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { r.Run(ctx); close(done) }()
	b.Cleanup(func() { cancel(); <-done })
	if err := r.WaitReady(ctx); err != nil {
		b.Fatal(err)
	}
	macOf := func(i int) string { return fmt.Sprintf("52:54:00:%02x:%02x:%02x", i>>16, (i>>8)&0xff, i&0xff) }
	ipOf := func(i int) string { return fmt.Sprintf("10.9.%d.%d", (i>>8)&0xff, i&0xff) }
	handles := make([]*session.Session, machines)
	for i := range handles {
		handles[i] = r.Open(ctx, macOf(i), session.OpenOptions{IP: ipOf(i)})
		_, h := handles[i].StartHop(ctx, "script")
		h.SetDetail("menu")
		h.End()
	}
	if err := r.Flush(ctx); err != nil {
		b.Fatal(err)
	}
	b.Run("open", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			k := i % machines
			handles[k] = r.Open(ctx, macOf(k), session.OpenOptions{IP: ipOf(k)})
		}
	})
	b.Run("hop-repeat", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			_, h := handles[i%machines].StartHop(ctx, "script")
			h.SetDetail("menu")
			h.End()
		}
	})
	b.Run("repeat", func(b *testing.B) {
		for _, s := range handles {
			_, h := s.StartHop(ctx, "script")
			h.SetDetail("menu")
			h.End()
		}
		now := time.Now()
		for i := 0; i < b.N; i++ {
			if !handles[i%machines].Repeat("script", "menu", 0, now) {
				b.Fatal("not a repeat")
			}
		}
	})
}
