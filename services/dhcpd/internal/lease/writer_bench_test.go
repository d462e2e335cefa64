package lease

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bootchain/bootchain/internal/testkit"
	"github.com/bootchain/bootchain/pkg/etcdembed"
	dhcpdv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/dhcpd/v1"
	"github.com/bootchain/bootchain/pkg/store"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// BenchmarkEtcdWriter measures lease writes per second through EtcdWriter into a
// real, fsyncing embedded etcd, with many concurrent writers (one per DHCP packet
// in flight), as dhcpd does under load.
func BenchmarkEtcdWriter(b *testing.B) {
	for _, bc := range []struct{ writers, batch, clients int }{{1, 128, 512}, {2, 128, 512}, {4, 128, 512}, {8, 128, 512}} {
		b.Run(fmt.Sprintf("writers=%d/batch=%d/clients=%d", bc.writers, bc.batch, bc.clients), func(b *testing.B) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			emb, err := etcdembed.Start(ctx, etcdembed.Config{Dir: b.TempDir(), ClientAddr: "127.0.0.1:0", PeerAddr: "127.0.0.1:0"})
			if err != nil {
				b.Fatal(err)
			}
			defer emb.Close()
			st, err := store.Open(ctx, store.Config{Endpoints: emb.Endpoints()})
			if err != nil {
				b.Fatal(err)
			}
			defer st.Close()
			w := NewEtcdWriter(st, "bench", bc.writers, bc.batch)
			writer := testkit.Run(b, "lease writer", w.Run)
			var next atomic.Uint32
			base := netip.MustParseAddr("10.0.0.0").As4()
			b0 := be32(base)
			now := time.Now()
			b.ResetTimer()
			start := time.Now()
			var wg sync.WaitGroup
			var n atomic.Int64
			for c := 0; c < bc.clients; c++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for n.Add(1) <= int64(b.N) {
						ip := fromU32(b0 + next.Add(1)).String()
						l := &dhcpdv1.Lease{Ip: ip, Mac: "02:00:00:00:00:01", State: dhcpdv1.LeaseState_LEASE_STATE_OFFERED,
							ExpireTime: timestamppb.New(now), UpdateTime: timestamppb.New(now), Site: "bench", Server: "bench", Subnet: "10.0.0.0/8"}
						if r := w.Write(ctx, Write{IP: ip, Lease: l}); r.Err != nil {
							b.Error(r.Err)
							return
						}
					}
				}()
			}
			wg.Wait()
			el := time.Since(start)
			b.StopTimer()
			txns, writes := w.Stats()
			b.ReportMetric(float64(writes)/el.Seconds(), "writes/s")
			b.ReportMetric(float64(writes)/float64(max(txns, 1)), "writes/txn")
			writer.Stop() // before the deferred closes of the store and etcd
		})
	}
}
