package session

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
	"github.com/bootchain/bootchain/pkg/store"
	"github.com/bootchain/bootchain/pkg/store/storetest"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// TestIndexesFollowEveryChange drives a recorder's machines through random
// cache events (put, update with a new IP or trace, delete, and the events of
// a relist, as store.Cache publishes them) and local changes, and checks after
// each that the IP and trace indexes hold exactly what the records say, and
// that FindByIP and FromTraceparent answer as a scan of every record would.
func TestIndexesFollowEveryChange(t *testing.T) {
	r, err := New(Config{Store: storetest.New(t), Service: "tftpd"})
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	macs := []string{"52:54:00:00:00:01", "52:54:00:00:00:02", "52:54:00:00:00:03", "52:54:00:00:00:04", "52:54:00:00:00:05"}
	ips := []string{"", "10.0.0.1", "10.0.0.2", "10.0.0.3"}
	traces := []string{"t1", "t2", "t3", "t4", "t5", "t6"}
	base := time.Unix(1000, 0)
	record := func(mac string) *bootapiv1.BootSession {
		return &bootapiv1.BootSession{
			Mac: mac, Ip: ips[rng.IntN(len(ips))], TraceId: traces[rng.IntN(len(traces))],
			// Few distinct times, so that ties happen.
			UpdateTime: timestamppb.New(base.Add(time.Duration(rng.IntN(3)) * time.Second)),
		}
	}
	etcd := map[string]store.Item[*bootapiv1.BootSession]{} // what the cache holds
	rev := int64(1)
	put := func(mac string) {
		rev++
		it := store.Item[*bootapiv1.BootSession]{Name: mac, Value: record(mac), ModRevision: rev}
		etcd[mac] = it
		r.onCacheEvent(store.Event[*bootapiv1.BootSession]{Item: it})
	}
	del := func(mac string, at int64) {
		it, ok := etcd[mac]
		if !ok {
			return
		}
		delete(etcd, mac)
		it.ModRevision = at
		r.onCacheEvent(store.Event[*bootapiv1.BootSession]{Item: it, Deleted: true})
	}
	steps := map[string]func(mac string){
		"put": put,
		"delete": func(mac string) {
			rev++
			del(mac, rev)
		},
		"relist": func(string) {
			// A new list: some keys changed, some gone, some new, as seen
			// after a broken watch; gone keys carry the list's revision.
			rev++
			listRev := rev
			var gone []string
			for _, mac := range macs {
				switch rng.IntN(3) {
				case 0:
					put(mac)
				case 1:
					gone = append(gone, mac)
				}
			}
			for _, mac := range gone {
				del(mac, listRev)
			}
		},
		"local": func(mac string) {
			sh := r.shard(mac)
			sh.mu.Lock()
			sh.setLocal(mac, sh.get(mac), record(mac))
			sh.mu.Unlock()
		},
		"local written": func(mac string) {
			// The write of the local view was seen by the cache: the next
			// read drops the local view.
			sh := r.shard(mac)
			sh.mu.Lock()
			if m := sh.machines[mac]; m != nil && m.local != nil {
				m.written = m.cachedRev
				sh.current(mac, m)
			}
			sh.mu.Unlock()
		},
		"local not written": func(mac string) {
			sh := r.shard(mac)
			sh.mu.Lock()
			if m := sh.machines[mac]; m != nil {
				sh.setLocal(mac, m, nil)
				sh.forget(mac, m)
			}
			sh.mu.Unlock()
		},
	}
	names := slices.Sorted(maps.Keys(steps))
	for i := range 3000 {
		name, mac := names[rng.IntN(len(names))], macs[rng.IntN(len(macs))]
		steps[name](mac)
		if err := checkIndexes(r, ips, traces); err != nil {
			t.Fatalf("step %d (%s %s): %v", i, name, mac, err)
		}
	}
}

// checkIndexes compares the recorder's indexes and lookups with a scan of
// every machine's records.
func checkIndexes(r *Recorder, ips, traces []string) error {
	wantIP, wantTrace := map[string][]string{}, map[string][]string{}
	type rec struct {
		mac   string
		local bool
		bs    *bootapiv1.BootSession
	}
	var all []rec
	for i := range r.shards {
		for mac, m := range r.shards[i].machines {
			for _, v := range valuesOf(m.cached.GetIp(), m.local.GetIp()) {
				if v != "" {
					wantIP[v] = append(wantIP[v], mac)
				}
			}
			for _, v := range valuesOf(m.cached.GetTraceId(), m.local.GetTraceId()) {
				if v != "" {
					wantTrace[v] = append(wantTrace[v], mac)
				}
			}
			if m.cached != nil {
				all = append(all, rec{mac, false, m.cached})
			}
			if m.local != nil {
				all = append(all, rec{mac, true, m.local})
			}
		}
	}
	contents := func(ix *index) map[string][]string {
		out := map[string][]string{}
		for i := range ix.shards {
			for v, macs := range ix.shards[i].macs {
				out[v] = slices.Sorted(slices.Values(macs))
			}
		}
		return out
	}
	for _, want := range []map[string][]string{wantIP, wantTrace} {
		for v := range want {
			slices.Sort(want[v])
		}
	}
	if d := cmp.Diff(wantIP, contents(&r.byIP)); d != "" {
		return fmt.Errorf("IP index (-want +got):\n%s", d)
	}
	if d := cmp.Diff(wantTrace, contents(&r.byTrace)); d != "" {
		return fmt.Errorf("trace index (-want +got):\n%s", d)
	}
	// Newest update first; on a tie etcd's record before a local one, then
	// the lower MAC.
	slices.SortFunc(all, func(a, b rec) int {
		if c := b.bs.GetUpdateTime().AsTime().Compare(a.bs.GetUpdateTime().AsTime()); c != 0 {
			return c
		}
		if a.local != b.local {
			if a.local {
				return 1
			}
			return -1
		}
		return strings.Compare(a.mac, b.mac)
	})
	for _, ip := range ips {
		var want *bootapiv1.BootSession
		for _, c := range all {
			if ip != "" && c.bs.GetIp() == ip {
				want = c.bs
				break
			}
		}
		got, ok := r.FindByIP(ip)
		if ok != (want != nil) || (ok && (got.GetMac() != want.GetMac() || got.GetTraceId() != want.GetTraceId() || !got.GetUpdateTime().AsTime().Equal(want.GetUpdateTime().AsTime()))) {
			return fmt.Errorf("FindByIP(%q) = %v, want %v", ip, got, want)
		}
	}
	for _, tid := range traces {
		// A local record first, then etcd's, then the lower MAC.
		slices.SortFunc(all, func(a, b rec) int {
			if a.local != b.local {
				if a.local {
					return -1
				}
				return 1
			}
			return strings.Compare(a.mac, b.mac)
		})
		want := ""
		for _, c := range all {
			if c.bs.GetTraceId() == tid {
				want = c.bs.GetMac()
				break
			}
		}
		if got := r.macOfTrace(tid); got != want {
			return fmt.Errorf("session of trace %s: %q, want %q", tid, got, want)
		}
	}
	return nil
}
