//go:build linux

package fleet

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	dhcpdv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/dhcpd/v1"
	"github.com/bootchain/bootchain/pkg/store"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
)

// startEtcd starts the three members at once (a new cluster needs a quorum to
// answer) and waits until each reports healthy.
func (f *Fleet) startEtcd(ctx context.Context) error {
	var peers []string
	for i, a := range etcdAddrs {
		peers = append(peers, fmt.Sprintf("etcd%d=http://%s:2380", i+1, a))
	}
	// The members' data on tmpfs where there is one, so that the host's disk
	// (other work shares it) plays no part in the test's timings.
	dataRoot := f.dir
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		d, err := os.MkdirTemp("/dev/shm", "bootchain-fleet-etcd-")
		if err != nil {
			return err
		}
		f.cleanup = append(f.cleanup, func() { os.RemoveAll(d) })
		dataRoot = d
	}
	for i, a := range etcdAddrs {
		name := fmt.Sprintf("etcd%d", i+1)
		client, peer := "http://"+a.String()+":2379", "http://"+a.String()+":2380"
		// Restarted on its data dir, a member rejoins: the initial-cluster flags
		// count only for a new data dir.
		p := f.newProc(name, f.Core, f.cfg.EtcdBinary, []string{
			"--name", name, "--data-dir", filepath.Join(dataRoot, name),
			// Twice etcd's defaults (100 ms, 1 s): with 2 cores shared with
			// QEMU under TCG the leader sent 100 ms heartbeats late.
			"--heartbeat-interval", "200", "--election-timeout", "2000",
			"--listen-client-urls", client, "--advertise-client-urls", client,
			"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
			"--initial-cluster", strings.Join(peers, ","), "--initial-cluster-state", "new",
			"--initial-cluster-token", "bootchain-fleet-e2e",
			"--logger", "zap", "--log-outputs", "stderr",
		}, client+"/health")
		f.Etcd = append(f.Etcd, p)
	}
	for _, p := range f.Etcd {
		// Start without waiting: the first member is healthy only once a second
		// one runs.
		r := p.Ready
		p.Ready = ""
		if err := p.Start(ctx); err != nil {
			return err
		}
		p.Ready = r
	}
	wctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	for _, p := range f.Etcd {
		if err := p.WaitReady(wctx); err != nil {
			return fmt.Errorf("%w; log:\n%s", err, tail(p.Log(), 3000))
		}
	}
	var eps []string
	for _, a := range etcdAddrs {
		eps = append(eps, a.String()+":2379")
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints: eps, DialTimeout: 5 * time.Second, Logger: etcdLogger,
		DialOptions: []grpc.DialOption{grpc.WithContextDialer(dialer(f.Core))},
	})
	if err != nil {
		return fmt.Errorf("fleet: etcd client: %w", err)
	}
	f.etcdCli = cli
	// Healthy members can still refuse writes for a moment after the first
	// election: services start once a write goes through.
	return f.EtcdWritable(wctx)
}

// EtcdLeader returns the member that leads the cluster now, asking every running
// member; it waits (bounded by ctx) while there is none, as during an election.
func (f *Fleet) EtcdLeader(ctx context.Context) (*Proc, error) {
	for {
		for i, p := range f.Etcd {
			if !p.Running() {
				continue
			}
			sctx, cancel := context.WithTimeout(ctx, time.Second)
			st, err := f.etcdCli.Status(sctx, etcdAddrs[i].String()+":2379")
			cancel()
			if err == nil && st.Leader != 0 && st.Leader == st.Header.GetMemberId() {
				return p, nil
			}
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("fleet: no etcd leader: %w", ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// EtcdWritable waits until a write through the cluster succeeds (a quorum and a
// leader), bounded by ctx.
func (f *Fleet) EtcdWritable(ctx context.Context) error {
	for {
		wctx, cancel := context.WithTimeout(ctx, time.Second)
		_, err := f.etcdCli.Put(wctx, "/bootchain-e2e/probe", time.Now().Format(time.RFC3339Nano))
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("fleet: etcd not writable: %w (last: %v)", ctx.Err(), err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Leases returns the site's DHCP leases as stored in etcd, by IP.
func (f *Fleet) Leases(ctx context.Context, site string) (map[string]*dhcpdv1.Lease, error) {
	r, err := f.etcdCli.Get(ctx, store.Prefix("leases", site), clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("fleet: leases of %s: %w", site, err)
	}
	out := map[string]*dhcpdv1.Lease{}
	var errs []error
	for _, kv := range r.Kvs {
		l := &dhcpdv1.Lease{}
		if err := proto.Unmarshal(kv.Value, l); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", kv.Key, err))
			continue
		}
		out[l.GetIp()] = l
	}
	return out, errors.Join(errs...)
}
