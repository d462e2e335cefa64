package session_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
	"github.com/bootchain/bootchain/pkg/session"
	"github.com/bootchain/bootchain/pkg/store"
	"github.com/bootchain/bootchain/pkg/store/storetest"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// benchSessions puts n sessions straight into etcd (as other replicas would
// have written them) and returns a recorder whose cache holds them all, with
// the IP and traceparent of session i.
func benchSessions(b *testing.B, n int) (r *session.Recorder, ipOf func(int) string, tpOf func(int) string) {
	b.Helper()
	st := storetest.New(b)
	ctx := context.Background()
	ipOf = func(i int) string { return fmt.Sprintf("10.%d.%d.%d", i>>16, (i>>8)&0xff, i&0xff) }
	tidOf := func(i int) trace.TraceID {
		return trace.TraceID{0: 1, 12: byte(i >> 24), 13: byte(i >> 16), 14: byte(i >> 8), 15: byte(i)}
	}
	tpOf = func(i int) string {
		return session.Format(trace.NewSpanContext(trace.SpanContextConfig{TraceID: tidOf(i), SpanID: trace.SpanID{7: 1}, TraceFlags: trace.FlagsSampled}))
	}
	now := timestamppb.Now()
	ops := make([]clientv3.Op, 0, 128)
	flush := func() {
		if _, err := st.Client().Txn(ctx).Then(ops...).Commit(); err != nil {
			b.Fatal(err)
		}
		ops = ops[:0]
	}
	for i := 0; i < n; i++ {
		mac := fmt.Sprintf("52:54:%02x:%02x:%02x:%02x", i>>24, (i>>16)&0xff, (i>>8)&0xff, i&0xff)
		bs := &bootapiv1.BootSession{Mac: mac, Site: "lab", TraceId: tidOf(i).String(), Traceparent: tpOf(i),
			StartTime: now, UpdateTime: now, State: bootapiv1.SessionState_SESSION_STATE_ACTIVE, Ip: ipOf(i)}
		v, err := proto.Marshal(bs)
		if err != nil {
			b.Fatal(err)
		}
		ops = append(ops, clientv3.OpPut(store.Key("sessions", mac), string(v)))
		if len(ops) == cap(ops) {
			flush()
		}
	}
	if len(ops) > 0 {
		flush()
	}
	r, err := session.New(session.Config{Store: st, Service: "tftpd", Site: "lab"})
	if err != nil {
		b.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { r.Run(rctx); close(done) }()
	b.Cleanup(func() { cancel(); <-done })
	wctx, wcancel := context.WithTimeout(ctx, time.Minute)
	defer wcancel()
	if err := r.WaitReady(wctx); err != nil {
		b.Fatal(err)
	}
	if got := r.Cache().Len(); got != n {
		b.Fatalf("cache holds %d sessions, want %d", got, n)
	}
	return r, ipOf, tpOf
}

// BenchmarkFindByIP is the lookup of every TFTP transfer: its cost must not
// grow with the number of sessions.
func BenchmarkFindByIP(b *testing.B) {
	for _, n := range []int{10, 100000} {
		b.Run(fmt.Sprintf("sessions=%d", n), func(b *testing.B) {
			r, ipOf, _ := benchSessions(b, n)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, ok := r.FindByIP(ipOf(i % n)); !ok {
					b.Fatal("not found")
				}
			}
		})
	}
}

// BenchmarkFromTraceparent is the lookup of every artifact download that
// carries only a traceparent.
func BenchmarkFromTraceparent(b *testing.B) {
	for _, n := range []int{10, 100000} {
		b.Run(fmt.Sprintf("sessions=%d", n), func(b *testing.B) {
			r, _, tpOf := benchSessions(b, n)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if s, ok := r.FromTraceparent(tpOf(i%n), ""); !ok || s.MAC == "" {
					b.Fatal("not found")
				}
			}
		})
	}
}
