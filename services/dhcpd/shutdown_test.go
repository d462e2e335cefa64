package dhcpd_test

import (
	"context"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
	dhcpdv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/dhcpd/v1"
	"github.com/bootchain/bootchain/pkg/store"
	"github.com/bootchain/bootchain/pkg/store/storetest"
	"github.com/bootchain/bootchain/test/lab"
)

// Stopping dhcpd while clients are mid-exchange loses no lease: the sockets stop
// and the answers in flight finish before the lease writer closes, so every
// ACK a client got has its bound lease in etcd, and the writer committed nothing
// after Run returned.
func TestLabStopKeepsEveryAckedLease(t *testing.T) {
	l := lab.NewT(t, lab.Config{})
	st := storetest.New(t)
	r := startDHCPD(t, l, st, seed(bootapiv1.DhcpMode_DHCP_MODE_AUTHORITATIVE))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	type ack struct {
		mac string
		ip  net.IP
	}
	var mu sync.Mutex
	var acks []ack
	var started, wg sync.WaitGroup
	const clients = 4
	started.Add(clients)
	for i := range clients {
		c := nclient(t, client(t, l, fmt.Sprint("s", i), ""))
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; n < 200; n++ {
				if n == 2 {
					started.Done()
				}
				lease, err := c.Request(ctx)
				if err != nil {
					if n < 2 {
						started.Done()
					}
					return // dhcpd stopped
				}
				mu.Lock()
				acks = append(acks, ack{c.InterfaceAddr().String(), lease.ACK.YourIPAddr})
				mu.Unlock()
			}
		}()
	}
	started.Wait()
	r.stop()
	stopped := r.srv.Stats()
	wg.Wait()

	if len(acks) == 0 {
		t.Fatal("no client got an ACK")
	}
	for _, a := range acks {
		got := &dhcpdv1.Lease{}
		if _, err := st.Get(ctx, store.Key("leases", "lab", a.ip.String()), got); err != nil ||
			got.GetMac() != a.mac || got.GetState() != dhcpdv1.LeaseState_LEASE_STATE_BOUND {
			t.Fatalf("ACK of %s to %s: lease in etcd %v, %v", a.ip, a.mac, got, err)
		}
	}
	if after := r.srv.Stats(); after.LeaseWrites != stopped.LeaseWrites || after.LeaseTxns != stopped.LeaseTxns {
		t.Fatalf("lease writes after Run returned: %d/%d txns/writes at stop, %d/%d later",
			stopped.LeaseTxns, stopped.LeaseWrites, after.LeaseTxns, after.LeaseWrites)
	}
}
